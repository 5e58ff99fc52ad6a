"""Bad requests get a precise answer, and every accepted line still lands (issue 3)."""

from __future__ import annotations

import gzip

import aiohttp
import orjson

from service.settings import Settings
from tests.conftest import Aws, Server, drain, read_table


async def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as s, s.post(url, data=body, headers=headers) as resp:
        return resp.status, await resp.json()


NDJSON = {"Content-Type": "application/x-ndjson"}


async def test_invalid_lines_are_reported_by_number_and_valid_lines_land(
    aws: Aws, ready: Settings, server: Server
) -> None:
    body = b"\n".join(
        [
            b'{"message": "one"}',
            b'{"message": "two"',
            b"[1, 2]",
            b"",
            b'{"message": "five", "level": "info"}',
            b'"just a string"',
            b'{"message": "caf\xe9"}',
            b"{}",
        ]
    )
    status, answer = await post(server.url + "/ingest", body, NDJSON)
    assert status == 200
    assert answer["accepted"] == 2 and answer["rejected"] == 5
    errors = {e["line"]: e["reason"] for e in answer["errors"]}  # type: ignore[union-attr]
    assert set(errors) == {2, 3, 6, 7, 8}
    assert errors[2].startswith("invalid JSON")
    assert errors[3] == "line is a JSON list, not an object"
    assert errors[6] == "line is a JSON str, not an object"
    assert errors[7] == "invalid UTF-8"
    assert errors[8] == "line is an empty JSON object"
    await drain(ready)
    assert sorted(read_table(aws, ready).column("message").to_pylist()) == ["five", "one"]


async def test_all_lines_invalid_is_400(ready: Settings, server: Server) -> None:
    status, answer = await post(server.url + "/ingest", b"nope\n{bad", NDJSON)
    assert status == 400 and answer["accepted"] == 0 and answer["rejected"] == 2


async def test_empty_body_is_400(ready: Settings, server: Server) -> None:
    assert await post(server.url + "/ingest", b"", NDJSON) == (
        400,
        {"error": "empty body: send at least one log line"},
    )
    assert (await post(server.url + "/ingest", b"\n \n", NDJSON))[0] == 400


async def test_wrong_content_type_is_415_naming_the_accepted_ones(
    ready: Settings, server: Server
) -> None:
    status, answer = await post(
        server.url + "/ingest", b"<log/>", {"Content-Type": "application/xml"}
    )
    assert status == 415
    assert "application/x-ndjson" in str(answer["error"])


async def test_bad_gzip_is_400_and_unknown_encoding_415(ready: Settings, server: Server) -> None:
    status, answer = await post(
        server.url + "/ingest", b"\x1f\x8bnot gzip", {**NDJSON, "Content-Encoding": "gzip"}
    )
    assert status == 400 and str(answer["error"]).startswith("body is not valid gzip")
    truncated = gzip.compress(b'{"message": "x"}\n' * 100)[:-12]
    status, answer = await post(
        server.url + "/ingest", truncated, {**NDJSON, "Content-Encoding": "gzip"}
    )
    assert status == 400 and "truncated" in str(answer["error"])
    status, answer = await post(server.url + "/ingest", b"x", {**NDJSON, "Content-Encoding": "br"})
    assert status == 415


async def test_gzip_bomb_is_refused_with_413(ready: Settings, server: Server) -> None:
    bomb = gzip.compress(b" " * (80 * 1024 * 1024), 9)  # 80 MiB of spaces in ~80 KB
    status, answer = await post(
        server.url + "/ingest", bomb, {**NDJSON, "Content-Encoding": "gzip"}
    )
    assert status == 413
    assert "decompress" in str(
        answer["error"]
    )  # the ratio or the size limit, whichever trips first


async def test_line_over_the_limit_is_rejected_alone(
    aws: Aws, ready: Settings, server: Server
) -> None:
    big = orjson.dumps({"message": "x" * (ready.max_line_bytes + 10)})
    status, answer = await post(server.url + "/ingest", big + b'\n{"message": "ok"}', NDJSON)
    assert status == 200 and answer["accepted"] == 1
    assert "exceeds the 1048576 byte limit" in str(answer["errors"])
