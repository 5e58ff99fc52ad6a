"""Envelope, JSON, NDJSON, gzip, zstd and text records, and the decompression bounds."""

from __future__ import annotations

import gzip
import zlib

import orjson
import pytest
import zstandard

from service import envelope
from service.decode import DecoderConfig, decode_record
from service.errors import DecodeError
from service.loggen import ndjson_lines
from tests.builders import assert_contract, ndjson

CONFIG = DecoderConfig()


def _envelope(payload: bytes, count: int, **kw: str) -> bytes:
    return envelope.encode(envelope.EnvelopeRecord(payload, count, 1_700_000_000_000_000, **kw))


def test_envelope_keeps_source_service_traceparent_and_receive_time() -> None:
    lines = ndjson_lines(70)
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    record = _envelope(b"\n".join(lines), 70, source="http", service="checkout", traceparent=trace)
    decoded = decode_record(record, CONFIG)
    assert decoded.format == "envelope"
    (batch,) = decoded.batches
    assert (batch.source, batch.service, batch.traceparent) == ("http", "checkout", trace)
    assert batch.observed_us == 1_700_000_000_000_000
    assert batch.payload == b"\n".join(lines)
    assert len(assert_contract(decoded)) == 70


def test_envelope_whose_lines_are_not_json_objects_is_rejected() -> None:
    with pytest.raises(DecodeError, match="envelope line is not a JSON object"):
        decode_record(_envelope(b'{"a":1}\n[1]', 2), CONFIG)
    with pytest.raises(DecodeError, match="envelope line is not JSON"):
        decode_record(_envelope(b'{"a":1}\nnope', 2), CONFIG)


def test_envelope_with_no_lines_is_skipped() -> None:
    assert decode_record(_envelope(b"", 0), CONFIG).skipped == "envelope holds no lines"


def test_corrupt_envelope_keeps_the_envelope_reason() -> None:
    record = _envelope(b'{"a":1}', 1)
    with pytest.raises(DecodeError, match="envelope"):
        decode_record(record[:-2], CONFIG)


def test_json_object_is_one_line_passed_through() -> None:
    decoded = decode_record(b'  {"a": 1, "b": "x"}\r\n', CONFIG)
    assert decoded.format == "json"
    assert decoded.batches[0].payload == b'{"a": 1, "b": "x"}'


def test_pretty_printed_json_object_becomes_one_line() -> None:
    decoded = decode_record(b'{\n  "a": 1,\n  "b": [1,\n 2]\n}\n', CONFIG)
    assert decoded.format == "json"
    assert assert_contract(decoded) == [{"a": 1, "b": [1, 2]}]


def test_json_array_of_objects_yields_one_line_per_object() -> None:
    decoded = decode_record(b'[{"a":1},\n {"a":2}, {"a":3}]', CONFIG)
    assert decoded.format == "json"
    assert assert_contract(decoded) == [{"a": 1}, {"a": 2}, {"a": 3}]


def test_empty_json_array_is_skipped() -> None:
    assert decode_record(b"[]", CONFIG).skipped == "json array is empty"


def test_json_array_of_scalars_is_text() -> None:
    assert assert_contract(decode_record(b"[1, 2]", CONFIG)) == [{"message": "[1, 2]"}]


def test_ndjson_with_blank_lines_and_crlf_yields_every_object() -> None:
    decoded = decode_record(b'{"a":1}\r\n\r\n{"a":2}\n  \n{"a":3}\n', CONFIG)
    assert decoded.format == "ndjson"
    assert assert_contract(decoded) == [{"a": 1}, {"a": 2}, {"a": 3}]


def test_ndjson_with_one_bad_line_is_one_text_message() -> None:
    body = b'{"a":1}\nnot json\n{"a":2}'
    assert assert_contract(decode_record(body, CONFIG)) == [{"message": body.decode()}]


@pytest.mark.parametrize(
    ("compress", "fmt"),
    [(gzip.compress, "ndjson+gzip"), (zstandard.ZstdCompressor().compress, "ndjson+zstd")],
)
def test_compressed_ndjson_yields_every_line(compress: object, fmt: str) -> None:
    body = ndjson(500)
    decoded = decode_record(compress(body), CONFIG)  # type: ignore[operator]
    assert decoded.format == fmt
    assert decoded.batches[0].payload == body
    assert decoded.line_count == 500


def test_streamed_zstd_without_content_size_decodes() -> None:
    body = ndjson(200)
    stream = zstandard.ZstdCompressor().compressobj()
    record = stream.compress(body) + stream.flush()
    assert zstandard.frame_content_size(record) == -1
    assert decode_record(record, CONFIG).line_count == 200


def test_concatenated_gzip_members_and_zstd_frames_decode_as_one_body() -> None:
    assert (
        decode_record(gzip.compress(b'{"a":1}\n') + gzip.compress(b'{"a":2}'), CONFIG).line_count
        == 2
    )
    z = zstandard.ZstdCompressor()
    assert decode_record(z.compress(b'{"a":1}\n') + z.compress(b'{"a":2}'), CONFIG).line_count == 2


def test_truncated_gzip_is_rejected_with_reason() -> None:
    record = gzip.compress(ndjson(50))
    with pytest.raises(DecodeError) as err:
        decode_record(record[:-8], CONFIG)
    assert err.value.reason == "gzip stream truncated"


def test_truncated_zstd_is_rejected_with_reason() -> None:
    record = zstandard.ZstdCompressor().compress(ndjson(50))
    with pytest.raises(DecodeError) as err:
        decode_record(record[:-5], CONFIG)
    assert err.value.reason == "zstd stream truncated"


def test_gzip_with_trailing_garbage_is_rejected() -> None:
    with pytest.raises(DecodeError, match="gzip trailing garbage"):
        decode_record(gzip.compress(b'{"a":1}') + b"junk", CONFIG)


def test_gzip_bomb_is_refused_before_allocation() -> None:
    bomb = gzip.compress(b"{" + b" " * (20 * 1024 * 1024) + b"}", compresslevel=9)
    small = DecoderConfig(max_decompressed_bytes=1024 * 1024)
    with pytest.raises(DecodeError, match="decompressed size over limit"):
        decode_record(bomb, small)


def test_zstd_frame_declaring_a_huge_size_is_refused_before_allocation() -> None:
    # A real 1 KiB frame whose header claims 2**40 bytes (8-byte content size field).
    honest = zstandard.ZstdCompressor(write_content_size=True).compress(b"x" * 1024)
    params = zstandard.get_frame_parameters(honest)
    assert params.content_size == 1024
    descriptor = honest[4]
    fcs_flag = descriptor >> 6
    header_len = {1: 2, 2: 4, 3: 8}.get(fcs_flag, 1)
    start = 4 + 1 + (0 if descriptor & 0x20 else 1)
    forged = (
        honest[:4]
        + bytes([(descriptor & 0x3F) | 0xC0])
        + honest[5:start]
        + (2**40).to_bytes(8, "little")
        + honest[start + header_len :]
    )
    assert zstandard.frame_content_size(forged) == 2**40
    with pytest.raises(DecodeError, match="zstd frame header invalid"):
        decode_record(forged, CONFIG)


def test_zstd_bomb_of_rle_blocks_is_refused() -> None:
    bomb = zstandard.ZstdCompressor(level=19).compress(b"\x00" * (16 * 1024 * 1024))
    with pytest.raises(DecodeError, match="decompressed size over limit"):
        decode_record(bomb, DecoderConfig(max_decompressed_bytes=1024 * 1024))


def test_corrupt_deflate_data_is_rejected() -> None:
    raw = zlib.compress(b"x" * 100)
    bad = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + raw[2:8] + b"\xff" * 20
    with pytest.raises(DecodeError, match="gzip"):
        decode_record(bad, CONFIG)


def test_invalid_utf8_json_is_rejected_with_reason() -> None:
    with pytest.raises(DecodeError) as err:
        decode_record(b'{"message": "caf\xe9"}', CONFIG)
    assert err.value.reason == "record is neither a known format nor UTF-8 text"


def test_gzip_text_is_one_message() -> None:
    decoded = decode_record(gzip.compress("héllo\nwörld\n".encode()), CONFIG)
    assert decoded.format == "text+gzip"
    assert assert_contract(decoded) == [{"message": "héllo\nwörld"}]


def test_utf8_text_is_one_message_per_record() -> None:
    decoded = decode_record(b"2026-11-20 06:00:00 INFO started\n", CONFIG)
    assert decoded.format == "text"
    assert decoded.batches[0].source == "text"
    assert assert_contract(decoded) == [{"message": "2026-11-20 06:00:00 INFO started"}]


def test_blank_record_is_skipped() -> None:
    assert decode_record(b" \r\n", CONFIG).skipped == "record is blank"
    assert decode_record(b"", CONFIG).skipped == "record is blank"


def test_json_line_with_unicode_escapes_and_nested_values_survives() -> None:
    obj = {"msg": 'line1\nline2 \u2028 "quoted"', "n": [1, {"x": None}]}
    decoded = decode_record(orjson.dumps(obj), CONFIG)
    assert assert_contract(decoded) == [obj]


def test_a_1_mib_json_array_record_decodes_in_memory_proportional_to_its_bytes() -> None:
    """Issue 15: each element's serialised line once held ~4 KB until the whole array was
    joined (a 1 MiB array of 131k small objects peaked at 574 MB in decode)."""
    import tracemalloc

    from service.decode import DecoderConfig, decode_record

    data = b"[" + b",".join([b'{"a":1}'] * (1 << 17)) + b"]"
    tracemalloc.start()
    try:
        decoded = decode_record(data, DecoderConfig())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert decoded.line_count == 1 << 17
    assert decoded.batches[0].payload == b"\n".join([b'{"a":1}'] * (1 << 17))
    assert peak < 64 * len(data), f"{peak / 1e6:.0f} MB for a {len(data) / 1e6:.1f} MB record"
