"""/ingest reads what agents really send (issue 16): NDJSON labelled application/json
(Fluent Bit < 3.0 json_lines, syslog-ng http()) and bodies without a useful label (no
Content-Type, or libcurl's default application/x-www-form-urlencoded) are read by shape."""

from __future__ import annotations

import aiohttp
import orjson

from service.ingest.lines import body_shape
from service.settings import Settings
from tests.conftest import Aws, Server, drain, read_table

MIXED = b'{"message": "one"}\n{"message": "two"\n\n{"message": "three"}\n[1]\n'


async def _post(url: str, body: bytes, ctype: str | None) -> tuple[int, dict[str, object]]:
    headers = {} if ctype is None else {"Content-Type": ctype}
    async with (
        aiohttp.ClientSession() as s,
        s.post(url, data=body, headers=headers, skip_auto_headers=["Content-Type"]) as resp,
    ):
        return resp.status, await resp.json()


async def test_ndjson_labelled_application_json_gets_the_per_line_answer_of_ndjson(
    server: Server,
) -> None:
    as_ndjson = await _post(server.url + "/ingest", MIXED, "application/x-ndjson")
    as_json = await _post(server.url + "/ingest", MIXED, "application/json")
    assert (
        as_json
        == as_ndjson
        == (
            200,
            {
                "accepted": 2,
                "rejected": 2,
                "errors": [
                    {"line": 2, "reason": as_ndjson[1]["errors"][0]["reason"]},  # type: ignore[index]
                    {"line": 5, "reason": "line is a JSON list, not an object"},
                ],
            },
        )
    )


async def test_one_pretty_printed_json_object_is_still_one_line(server: Server) -> None:
    body = orjson.dumps({"message": "pretty", "n": 1}, option=orjson.OPT_INDENT_2)
    assert await _post(server.url + "/ingest", body, "application/json") == (
        200,
        {"accepted": 1, "rejected": 0, "errors": []},
    )


async def test_unlabelled_bodies_are_sniffed_json_ndjson_or_text(
    aws: Aws, ready: Settings, server: Server
) -> None:
    sent = []
    for ctype in (None, "application/x-www-form-urlencoded"):
        tag = "none" if ctype is None else "form"
        ndjson = [f"{tag} ndjson 1", f"{tag} ndjson 2"]
        array = [f"{tag} array 1", f"{tag} array 2"]
        text = [f"[INFO] {tag} text 1", f"{{not json}} {tag} text 2"]
        bodies = (
            b"\n".join(orjson.dumps({"message": m}) for m in ndjson) + b"\n",
            orjson.dumps([{"message": m} for m in array]),
            "\n".join(text).encode() + b"\n",
        )
        for body in bodies:
            status, answer = await _post(server.url + "/ingest", body, ctype)
            assert (status, answer["accepted"], answer["rejected"]) == (200, 2, 0), body
        sent += ndjson + array + text
    await drain(ready)
    assert sorted(r["message"] for r in read_table(aws, ready).to_pylist()) == sorted(sent)


async def test_a_content_type_ingest_cannot_read_is_still_415(server: Server) -> None:
    status, answer = await _post(server.url + "/ingest", b"<log/>", "application/xml")
    assert status == 415 and "application/x-ndjson" in str(answer["error"])


def test_the_shape_is_decided_from_at_most_one_line_limit_of_the_body() -> None:
    line = b'{"message": "' + b"x" * 100 + b'"}'
    big = b"\n".join([line] * 1000)  # 100 KB of NDJSON, 1 KB line limit
    assert body_shape(big, 1024, declared_json=True) == "ndjson"
    assert body_shape(big, 1024, declared_json=False) == "ndjson"
    assert body_shape(b"[" + b",".join([line] * 1000) + b"]", 1024, False) == "json"
    assert body_shape(b"x" * 5000 + b"\n" + line, 1024, False) == "text"
    assert body_shape(b"{" + b"x" * 5000 + b"\n" + line, 1024, False) == "text"
    assert body_shape(b"  " + line + b"\n", 1024, declared_json=True) == "json"
