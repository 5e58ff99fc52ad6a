"""An OTLP JSON body is parsed in pieces: the GIL (so serve's event loop) is never held
for long by one call, and the lines are the same as a whole parse (issue 15)."""

from __future__ import annotations

import orjson
import pytest

from service.ingest import otlp, otlp_json
from service.ingest.lines import PIECE
from tests.hostile.corpus import heaviest

MIB = 1024 * 1024


def _body() -> bytes:
    (attack,) = [a for a in heaviest() if a.name == "OTLP JSON, object cap"]
    return attack.body


def test_the_largest_otlp_json_body_is_never_parsed_by_one_long_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No single ``orjson.loads`` (one call holds the GIL, so serve's loop, for its whole
    length: 151 ms for this 5 MB body) receives more than a bounded piece of it."""
    body = _body()
    assert len(body) > 4 * MIB
    sizes: list[int] = []
    real_loads = orjson.loads

    def spy(data: bytes | str) -> object:
        sizes.append(len(data))
        return real_loads(data)

    monkeypatch.setattr(orjson, "loads", spy)
    lines = otlp.parse_json(body, 1 << 20).lines
    assert len(lines) == 24_000
    assert len(sizes) > 20, sizes  # the body went through orjson in many pieces
    # A piece is PIECE bytes; a cut that fails to parse widens its window four times.
    assert max(sizes) <= 4 * PIECE + 1024, max(sizes)


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
