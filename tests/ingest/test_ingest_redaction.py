"""TIDEWAY_INGEST_REDACT: serve redacts before Kinesis, so a secret is never stored anywhere."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service import envelope
from service.cli import main
from service.errors import SettingsError
from service.ingest.lineblock import LineBlock
from service.ingest.redaction import ingest_detectors, redact_lines
from service.settings import Settings
from tests.conftest import Aws, drain, read_table
from tests.ingest_support import post, serving, stream_records

CARD = "4111 1111 1111 1111"
EMAIL = "alice@example.com"
KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SECRETS = (CARD, CARD.replace(" ", ""), EMAIL, KEY_ID, SECRET, "alice@")
DETECTORS = ("email", "credit_card", "aws_key")


def _values(lines: object) -> list[object]:
    return [orjson.loads(line) for line in lines]  # type: ignore[attr-defined]


def test_lines_with_nothing_to_redact_come_back_as_they_were_without_a_copy() -> None:
    block = LineBlock.of([b'{"message":"GET /health 200"}', b'{"n":12,"ok":true}'])
    assert redact_lines(block, DETECTORS) is block


def test_each_secret_is_redacted_where_it_is_and_every_line_stays_json() -> None:
    lines = [
        orjson.dumps({"message": f"paid with {CARD} by {EMAIL}"}),
        orjson.dumps({"user": {"mail": EMAIL, "tags": ["a", KEY_ID]}}),
        b'{"card":4111111111111111,"n":3}',  # a card written as a JSON number
        b'{"message":"from alice\\u0040example.com"}',  # an escape hides it from the raw text
        b'{"message":"line\\n4111111111111111"}',
        orjson.dumps({"aws_secret_access_key": SECRET}),
        b'{"message":"tab\\tstays"}',
        b'{"message":"plain"}',
    ]
    out = redact_lines(lines, DETECTORS)
    values = _values(out)
    assert values[0] == {"message": "paid with [REDACTED:credit_card] by [REDACTED:email]"}
    assert values[1] == {"user": {"mail": "[REDACTED:email]", "tags": ["a", "[REDACTED:aws_key]"]}}
    assert values[2] == {"card": "[REDACTED:credit_card]", "n": 3}
    assert values[3] == {"message": "from [REDACTED:email]"}
    assert values[4] == {"message": "line\n[REDACTED:credit_card]"}
    assert values[5] == {"aws_secret_access_key": "[REDACTED:aws_key]"}
    assert list(out)[6:] == lines[6:]  # nothing found: the bytes as sent
    assert not any(s.encode() in line for line in out for s in SECRETS)


def test_only_the_chosen_detectors_run() -> None:
    out = redact_lines([orjson.dumps({"message": f"{EMAIL} {CARD}"})], ["email"])
    assert _values(out) == [{"message": f"[REDACTED:email] {CARD}"}]


def test_an_unknown_detector_is_one_line_naming_the_setting() -> None:
    assert ingest_detectors(" email, ipv4 ,email") == ("email", "ipv4")
    assert ingest_detectors("") == ()
    with pytest.raises(
        SettingsError,
        match=r"^setting TIDEWAY_INGEST_REDACT is invalid: unknown detector 'phone' \(known: .*email",
    ):
        ingest_detectors("email,phone")


def test_serve_refuses_to_start_with_an_unknown_detector(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TIDEWAY_STREAM", "s")
    monkeypatch.setenv("TIDEWAY_BUCKET", "bucket-b")
    monkeypatch.setenv("TIDEWAY_INGEST_REDACT", "email,ssn")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "TIDEWAY_INGEST_REDACT" in err[0] and "'ssn'" in err[0]


async def test_a_secret_sent_to_serve_is_in_neither_kinesis_nor_s3(
    aws: Aws, settings: Settings
) -> None:
    redacting = settings.model_copy(update={"ingest_redact": ",".join(DETECTORS)})
    ndjson = b"\n".join(
        [
            orjson.dumps({"message": f"order by {EMAIL} card {CARD}", "service": "shop"}),
            orjson.dumps({"message": "login", "aws": {"key": KEY_ID}, "service": "shop"}),
            b'{"message":"escaped alice\\u0040example.com","card":4111111111111111}',
            orjson.dumps({"message": "nothing here", "service": "shop"}),
        ]
    )
    async with serving(redacting) as url, aiohttp.ClientSession() as session:
        status, answer, _ = await post(session, url + "/ingest", ndjson)
        assert (status, answer["accepted"]) == (200, 4)
        text = f"{EMAIL} set aws_secret_access_key={SECRET}\n".encode()
        status, answer, _ = await post(session, url + "/ingest", text, "text/plain")
        assert (status, answer["accepted"]) == (200, 1)
    payloads = [
        envelope.decode(data).payload
        for records in stream_records(aws, settings.stream).values()
        for data in records
    ]
    assert sum(p.count(b"\n") + 1 for p in payloads) == 5
    assert not any(s.encode() in p for p in payloads for s in SECRETS)
    await drain(settings)
    table = read_table(aws, settings)
    assert table.num_rows == 5
    stored = " ".join(str(v) for name in table.column_names for v in table.column(name).to_pylist())
    assert "[REDACTED:email]" in stored and "[REDACTED:credit_card]" in stored
    assert "nothing here" in stored
    assert not any(s in stored for s in SECRETS)
    assert pa.types.is_string(table.schema.field("message").type)


SECRET_VALUES = st.sampled_from(
    [CARD, "4012-8888-8888-1881", EMAIL, KEY_ID, "bob@mail.example.org"]
)
FILLER = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6)
TEXTS = st.builds(lambda a, s, b: f"{a} {s} {b}", FILLER, SECRET_VALUES, FILLER) | FILLER
JSON_VALUES = st.recursive(
    TEXTS | st.integers(-(2**63), 2**63 - 1) | st.booleans() | st.none(),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.dictionaries(st.text(max_size=4), JSON_VALUES, max_size=4), min_size=1, max_size=6)
)
def test_any_lines_stay_json_objects_and_keep_no_detected_value(
    objects: list[dict[str, Any]],
) -> None:
    lines = [orjson.dumps(o) for o in objects]
    out = list(redact_lines(LineBlock.of(lines), DETECTORS))
    assert len(out) == len(lines)
    for line in out:
        assert isinstance(orjson.loads(line), dict)
        decoded = orjson.dumps(orjson.loads(line)).decode()
        assert not any(s in decoded for s in (CARD, "4012-8888-8888-1881", EMAIL, KEY_ID))
