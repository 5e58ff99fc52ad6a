// Draws the charts a page carries in <script type="application/json" id="charts-data">
// (service/console/charts.py) with uPlot (static/vendor/, see its LICENSE). No inline
// script: the page's Content-Security-Policy allows only scripts served by the console.
(function () {
  "use strict";
  var block = document.getElementById("charts-data");
  if (!block || typeof uPlot === "undefined") return;
  var colors = ["#0b5cad", "#d9480f", "#2b8a3e", "#862e9c", "#e67700", "#495057", "#c2255c"];
  JSON.parse(block.textContent).forEach(function (c) {
    var box = document.getElementById("chart-" + c.id);
    if (!box || c.x.length === 0) return;
    var data = [c.x].concat(c.series.map(function (s) { return s.values; }));
    var series = [{}].concat(c.series.map(function (s, i) {
      return { label: s.label, stroke: colors[i % colors.length], width: 1.5 };
    }));
    var width = Math.max(320, (box.clientWidth || 460) - 4);
    var scales = c.range ? { x: { time: true, range: function () { return c.range; } } } : {};
    new uPlot({ width: width, height: 180, series: series, scales: scales,
                axes: [{}, { label: c.unit, size: 64 }] }, data, box);
    var drawn = 0;
    c.series.forEach(function (s) {
      s.values.forEach(function (v) { if (v !== null) drawn += 1; });
    });
    box.setAttribute("data-drawn", String(drawn));  // what the browser test reads
  });
})();
