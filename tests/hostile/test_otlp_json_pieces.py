"""An OTLP JSON body is parsed in pieces: the GIL (so serve's event loop) is never held
for long by one call, and the lines are the same as a whole parse (issue 15)."""

from __future__ import annotations

import sys
import threading
import time

import orjson

from service.ingest import otlp, otlp_json
from tests.hostile.corpus import heaviest


def _body() -> bytes:
    (attack,) = [a for a in heaviest() if a.name == "OTLP JSON, object cap"]
    return attack.body


def _longest_stall(work: object) -> float:
    """The longest gap between ticks of a thread that asks for the GIL every 2 ms."""
    gaps: list[float] = []
    stop = threading.Event()

    def tick() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            time.sleep(0.002)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        work()  # type: ignore[operator]
    finally:
        stop.set()
        ticker.join()
    return max(gaps)


def test_the_largest_otlp_json_body_never_holds_the_gil_for_100_ms() -> None:
    body = _body()
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.001)  # as serve runs (service/ingest/server.py)
    try:
        stall = _longest_stall(lambda: otlp.parse_json(body, 1 << 20))
    finally:
        sys.setswitchinterval(interval)
    assert stall < 0.1, f"a tick waited {stall * 1000:.0f} ms"


def test_pieces_parse_like_a_whole_parse() -> None:
    records = [{"body": {"stringValue": f"m{i}"}} for i in range(3)]
    doc = {
        "resourceLogs": [
            {"scopeLogs": [{"logRecords": records}, {"log_records": [], "x": "logRecords:["}]},
            {"scopeLogs": [{"logRecords": records[:1]}]},
        ],
        "logRecords": [{"nested": {"logRecords": [1, 2]}}],
    }
    body = orjson.dumps(doc, option=orjson.OPT_INDENT_2)
    assert otlp_json.load_in_pieces(body) == doc
    assert otlp.parse_json(body, 1 << 20).lines.nbytes == (
        otlp.normalize(
            otlp.json_format.ParseDict(
                doc, otlp.ExportLogsServiceRequest(), ignore_unknown_fields=True
            ),
            1 << 20,
        ).lines.nbytes
    )
