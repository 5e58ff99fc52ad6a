"""Pipelines through the real consumer against moto: lines posted to serve land in one table
per pipeline and the rest in logs; a bad document stops ``tideway consume`` in one line."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow.dataset as ds
import pytest

from service.errors import SettingsError
from service.settings import Settings
from tests.conftest import Aws, Server, drain, object_keys, s3fs
from tests.ingest_support import post_body as post
from tests.pipeline_support import ROUTES


def read(aws: Aws, settings: Settings, table: str) -> list[dict[str, object]]:
    base = f"{settings.bucket}/{settings.prefix}{table}"
    dataset = ds.dataset(base, filesystem=s3fs(aws), format="parquet", partitioning="hive")
    return sorted(dataset.to_table().to_pylist(), key=lambda r: str(r["message"]))


async def test_lines_land_in_their_pipelines_tables_and_the_rest_in_logs(
    aws: Aws, ready: Settings, server: Server, tmp_path: Path
) -> None:
    path = tmp_path / "pipelines.toml"
    path.write_text(ROUTES)
    lines = [
        {"service": "api", "level": "error", "message": "boom"},
        {"service": "web", "message": "upstream", "status": 503},
        {"service": "api", "message": "GET /", "host": "h1"},
        {"service": "api", "message": "health ok"},
        {"service": "web", "message": "page"},
    ]
    body = b"\n".join(map(orjson.dumps, lines))
    assert (await post(server.url + "/ingest", body, "application/x-ndjson"))[0] == 200
    await drain(ready, pipelines=path)
    tops = {k.split("/")[0] for k in object_keys(aws, ready.bucket)}
    assert tops == {"errors", "api", "logs"}
    errors = read(aws, ready, "errors")
    assert [(r["message"], r["team"]) for r in errors] == [("boom", "core"), ("upstream", "core")]
    api = read(aws, ready, "api")
    assert [r["message"] for r in api] == ["GET /"]
    assert api[0]["host"] not in ("h1", None) and len(str(api[0]["host"])) == 64
    assert {r["pipeline_version"] for r in errors + api} == {errors[0]["pipeline_version"]}
    assert [r["message"] for r in read(aws, ready, "logs")] == ["page"]


async def test_a_bad_document_stops_consume_with_one_line(ready: Settings, tmp_path: Path) -> None:
    path = tmp_path / "pipelines.toml"
    path.write_text('[[pipeline]]\nname = "waf"\ndrop = "severity_number <"\n')
    with pytest.raises(SettingsError) as err:
        await drain(ready, pipelines=path)
    assert str(err.value) == (
        f"setting TIDEWAY_PIPELINES is invalid: {path}: "
        "pipeline 'waf', step 'drop', field 'drop': the condition ends too early"
    )  # the CLI prints it as ``tideway: <line>`` and exits 2 (tests/test_settings.py)


PARSED = """
[[pipeline]]
name = "waf"
match = 'service == "waf"'
parse = "json"
redact = ["email"]
table = "waf"
"""


async def test_parsed_and_redacted_lines_land_typed_in_their_table(
    aws: Aws, ready: Settings, server: Server, tmp_path: Path
) -> None:
    pytest.importorskip("service.pipeline.parsers")  # the parsers branch; wired at its merge
    pytest.importorskip("service.pipeline.redact")
    path = tmp_path / "pipelines.toml"
    path.write_text(PARSED)
    inner = orjson.dumps({"action": "BLOCK", "client": "ann@example.com"}).decode()
    lines = [
        {"service": "waf", "message": inner},
        {"service": "waf", "message": "not json"},
        {"service": "web", "message": "mail bob@example.org"},
    ]
    body = b"\n".join(map(orjson.dumps, lines))
    assert (await post(server.url + "/ingest", body, "application/x-ndjson"))[0] == 200
    await drain(ready, pipelines=path)
    waf = read(aws, ready, "waf")
    parsed = [r for r in waf if r["parse_error"] is None]
    unparsed = [r for r in waf if r["parse_error"] is not None]
    assert [(r["action"], r["client"]) for r in parsed] == [("BLOCK", "[REDACTED:email]")]
    assert "ann@example.com" not in str(waf)
    assert [(r["message"], r["action"]) for r in unparsed] == [("not json", None)]
    assert [r["message"] for r in read(aws, ready, "logs")] == ["mail bob@example.org"]
