"""``tideway status`` as text (pure): the shard view as a plain table, or JSON."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from service.console.shards import ShardView, format_lag, format_rate, format_time

_HEADERS = (
    "SHARD",
    "OWNER",
    "EPOCH",
    "CHECKPOINT",
    "INTENT",
    "LAG",
    "LAST FLUSH",
    "LINES/S",
    "STATE",
    "PARENTS",
    "CHILDREN",
)


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def status_text(view: ShardView, *, title: str = "") -> str:
    """A summary line, the workers and one line per shard, in columns."""
    s = view.summary()
    lines = [title] if title else []
    lines.append(
        f"{s['shards']} shards: {s['reading']} reading, {s['open_intents']} open intent, "
        f"{s['unowned']} unowned, {s['finished']} finished; {s['workers']} workers; "
        f"max lag {format_lag(s['max_lag_ms'])}"
    )
    if view.workers:
        lines.append("")
        lines.extend(
            _table(
                [("WORKER", "SHARDS", "BEATS", "LAG", "LEAVING")]
                + [
                    (
                        w.worker_id,
                        str(w.shards),
                        str(w.beats),
                        format_lag(w.lag_ms),
                        "yes" if w.leaving else "",
                    )
                    for w in view.workers
                ]
            )
        )
    lines.append("")
    body = [
        (
            r.shard_id,
            r.owner or "-",
            str(r.epoch),
            r.checkpoint or "-",
            f"{r.intent[0]}..{r.intent[1]}" if r.intent else "-",
            format_lag(r.lag_ms),
            format_time(r.last_flush_ms),
            format_rate(r.lines_per_s),
            r.state,
            ",".join(r.parents) or "-",
            ",".join(r.children) or "-",
        )
        for r in view.shards
    ]
    lines.extend(_table([_HEADERS, *body]))
    return "\n".join(lines) + "\n"


def status_json(view: ShardView) -> str:
    return orjson.dumps(view.as_json(), option=orjson.OPT_INDENT_2).decode() + "\n"
