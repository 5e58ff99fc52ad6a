"""The envelope record round-trips and rejects every defect with a precise reason."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service import envelope
from service.decode import DecoderConfig, decode_record
from service.envelope import ContentType, EnvelopeRecord
from service.errors import EnvelopeError

objects = st.dictionaries(
    st.text(min_size=1, max_size=8),
    st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
    min_size=1,
    max_size=4,
)


@given(
    lines=st.lists(objects, min_size=1, max_size=30),
    source=st.text(max_size=30),
    service=st.text(max_size=30),
    received=st.integers(min_value=0, max_value=2**62),
)
@settings(max_examples=150, deadline=None)
def test_encode_then_decode_gives_back_the_record(
    lines: list[dict[str, object]], source: str, service: str, received: int
) -> None:
    payload = b"\n".join(orjson.dumps(x) for x in lines)
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    rec = EnvelopeRecord(payload, len(lines), received, ContentType.OTLP, source, service, tp)
    data = envelope.encode(rec)
    assert envelope.is_envelope(data)
    assert envelope.decode(data) == rec


def _sample() -> bytes:
    return envelope.encode(EnvelopeRecord(b'{"a":1}\n{"b":2}', 2, 123, source="http"))


def test_truncated_envelope_is_refused() -> None:
    data = _sample()
    for cut in (3, 10, 22, len(data) - 1):
        with pytest.raises(EnvelopeError, match=r"truncated|bad magic|not valid zstd"):
            envelope.decode(data[:cut])


def test_wrong_line_count_is_refused() -> None:
    data = envelope.encode(EnvelopeRecord(b'{"a":1}', 5, 0))
    with pytest.raises(EnvelopeError, match="declares 5 lines but holds 1"):
        envelope.decode(data)


def test_unknown_version_and_trailing_bytes_are_refused() -> None:
    data = bytearray(_sample())
    data[4] = 9
    with pytest.raises(EnvelopeError, match="unsupported envelope version 9"):
        envelope.decode(bytes(data))
    with pytest.raises(EnvelopeError, match="trailing"):
        envelope.decode(_sample() + b"x")


def test_corrupt_payload_fails_the_zstd_checksum() -> None:
    data = bytearray(_sample())
    data[-6] ^= 0xFF
    with pytest.raises(EnvelopeError):
        envelope.decode(bytes(data))


def test_magic_is_never_valid_utf8_nor_another_format_prefix() -> None:
    with pytest.raises(UnicodeDecodeError):
        envelope.MAGIC.decode()
    for other in (
        b"\xf3\x89\x9a\xc2",
        b"\x1f\x8b",
        b"\x28\xb5\x2f\xfd",
        b"\xc3\x01",
        b"\x00",
        b"{",
        b"[",
    ):
        assert not envelope.MAGIC.startswith(other)


@given(
    lines=st.lists(objects, min_size=1, max_size=10),
    producer=st.binary(min_size=16, max_size=16),
    seq=st.integers(0, 2**64 - 1),
    created=st.integers(-(2**63), 2**63 - 1),
    source=st.text(max_size=30),
)
@settings(max_examples=150, deadline=None)
def test_version_2_round_trips_the_producer_identity(
    lines: list[dict[str, object]], producer: bytes, seq: int, created: int, source: str
) -> None:
    payload = b"\n".join(orjson.dumps(x) for x in lines)
    rec = EnvelopeRecord(
        payload,
        len(lines),
        7,
        source=source,
        producer_id=producer,
        producer_seq=seq,
        created_us=created,
    )
    data = envelope.encode(rec)
    assert data[4] == 2
    assert data[21:37] == producer
    assert envelope.decode(data) == rec


def test_version_1_still_decodes_without_an_identity() -> None:
    data = _sample()
    assert data[4] == 1
    decoded = envelope.decode(data)
    assert (decoded.producer_id, decoded.producer_seq, decoded.created_us) == (b"", 0, 0)


def test_a_producer_id_of_another_length_is_refused_at_encode() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        envelope.encode(EnvelopeRecord(b'{"a":1}', 1, 0, producer_id=b"short"))


def test_a_version_2_header_cut_in_the_identity_is_refused() -> None:
    data = envelope.encode(
        EnvelopeRecord(b'{"a":1}', 1, 0, producer_id=bytes(range(16)), producer_seq=3)
    )
    for cut in (22, 30, 44):
        with pytest.raises(EnvelopeError, match="truncated in producer identity"):
            envelope.decode(data[:cut])


def test_decode_record_exposes_the_identity_of_an_envelope_only() -> None:
    rec = EnvelopeRecord(
        b'{"a":1}', 1, 5, producer_id=b"p" * 16, producer_seq=41, created_us=1_700_000_000
    )
    decoded = decode_record(envelope.encode(rec), DecoderConfig())
    assert (decoded.producer_id, decoded.producer_seq, decoded.created_us) == (
        b"p" * 16,
        41,
        1_700_000_000,
    )
    assert decoded.line_count == 1
    plain = decode_record(b'{"a":1}', DecoderConfig())
    assert plain.producer_id == b""


def test_parse_leaves_the_line_count_to_check_line_count() -> None:
    data = envelope.encode(EnvelopeRecord(b'{"a":1}', 5, 0))
    record = envelope.parse(data)
    assert (record.payload, record.line_count) == (b'{"a":1}', 5)
    with pytest.raises(EnvelopeError, match="declares 5 lines but holds 1"):
        envelope.check_line_count(record.line_count, 1)


def test_an_envelope_whose_line_count_is_wrong_is_a_dead_letter_with_that_reason() -> None:
    for payload, declared, held in ((b'{"a":1}', 5, 1), (b"", 1, 0), (b'{"a":1}\n{"b":2}', 0, 2)):
        data = envelope.encode(EnvelopeRecord(payload, declared, 0))
        with pytest.raises(EnvelopeError, match=f"declares {declared} lines but holds {held}"):
            decode_record(data, DecoderConfig())


def test_envelopes_decoded_in_several_threads_at_once_keep_their_own_payloads() -> None:
    payloads = [b"\n".join(orjson.dumps({"n": n, "i": i}) for i in range(50)) for n in range(64)]
    datas = [envelope.encode(EnvelopeRecord(p, 50, n)) for n, p in enumerate(payloads)]
    with ThreadPoolExecutor(4) as pool:
        decoded = list(pool.map(envelope.decode, datas * 4))
    assert [d.payload for d in decoded] == payloads * 4
