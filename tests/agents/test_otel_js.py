"""A second OTLP implementation: the OpenTelemetry JS SDK's log exporters (OTLP/HTTP JSON and
protobuf, from the npm lock in tests/agents/js, installed by `make agents`) against `serve`'s
/v1/logs; every record lands once with its attributes, severity and resource."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from service.settings import Settings
from tests.agents.agent_support import KEY, NODE_MODULES, node_binary, require, with_key
from tests.conftest import Aws, drain, read_table
from tests.ingest_support import serving

SCRIPT = Path(__file__).parent / "js" / "emit-logs.cjs"
RECORDS = 300
LEVELS = (("INFO", 9), ("WARN", 13), ("ERROR", 17))


async def _emit(url: str, protocol: str, compression: str, run: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        node_binary(),
        str(SCRIPT),
        url,
        protocol,
        str(RECORDS),
        run,
        KEY,
        compression,
        env={"NODE_PATH": str(NODE_MODULES), "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(errors="replace")


@pytest.mark.parametrize(
    ("protocol", "compression"), [("json", "none"), ("proto", "gzip"), ("proto", "none")]
)
async def test_opentelemetry_js_log_exporter_lands_every_record_once(
    aws: Aws, ready: Settings, protocol: str, compression: str
) -> None:
    require(NODE_MODULES / "@opentelemetry" / "sdk-logs", "the OpenTelemetry JS SDK")
    run = f"js-{protocol}-{compression}"
    async with serving(with_key(ready), create=False) as url:
        code, output = await _emit(url, protocol, compression, run)
        assert code == 0, output
    await drain(ready)
    rows = read_table(aws, ready).to_pylist()
    by_n: dict[int, list[dict[str, object]]] = {}
    for row in rows:
        attributes = orjson.loads(str(row["attributes"]))
        by_n.setdefault(attributes["record.n"], []).append({**row, "attrs": attributes})
    assert sorted(by_n) == list(range(RECORDS))
    assert all(len(found) == 1 for found in by_n.values())
    for n, (row,) in by_n.items():
        assert row["message"] == f"{run} record {n}"
        assert (row["service"], row["host"], row["source"]) == ("js-orders", "js-host-1", "otlp")
        assert (row["severity_text"], row["severity_number"]) == LEVELS[n % 3]
        attrs = row["attrs"]
        assert isinstance(attrs, dict)
        assert (attrs["run.id"], attrs["http.route"], attrs["ok"]) == (run, "/api/cart", n % 2 == 0)
