"""Fuzzing decode_record: any bytes in -> a Decoded obeying the contract, or a DecodeError.

"decoder failed: ..." is the catch-all for exceptions a decoder did not anticipate; it
keeps a shard running, but here it counts as a bug, so these tests reject it too.
Mutations are applied both to the wire bytes and, for checksummed or compressed formats,
beneath the checksum or compression (then re-sealed), so the inner parsers are reached.
"""

from __future__ import annotations

import gzip

import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.decode import Decoded, DecoderConfig, decode_record
from service.errors import DecodeError
from tests.builders import (
    CONFIG,
    INNER,
    RESEAL,
    SEEDS,
    SMALL_LIMIT,
    assert_contract,
    kpl_records,
)

FUZZ = settings(
    max_examples=4000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def check(data: bytes, config: DecoderConfig = CONFIG) -> Decoded | None:
    """The property: a contract-abiding Decoded or a DecodeError that is not a decoder bug."""
    try:
        decoded = decode_record(data, config)
    except DecodeError as exc:
        assert exc.reason and not exc.reason.startswith("decoder failed"), exc.reason
        assert len(exc.reason) < 120 and "\n" not in exc.reason
        return None
    assert_contract(decoded)
    assert decode_record(data, config) == decoded  # deterministic
    return decoded


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(("flip", "truncate", "insert", "overwrite", "delete")))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "overwrite" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
    return bytes(data)


def test_every_seed_decodes_cleanly() -> None:
    for name, seed in SEEDS.items():
        decoded = check(seed)
        assert decoded is not None, name
    assert check(SEEDS["cloudwatch_control"]).skipped  # type: ignore[union-attr]


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    check(data)


MAGICS = [
    b"\xf0TWE\x01\x01",
    b"\xf3\x89\x9a\xc2",
    b"\x1f\x8b",
    b"\x28\xb5\x2f\xfd",
    b"\xc3\x01",
    b"\x00\x00\x00\x00\x07",
    b"\x00\x00\x00\x00\x08",
    b"{",
    b"[",
]


@FUZZ
@given(st.sampled_from(MAGICS), st.binary(max_size=512))
def test_random_bytes_behind_each_magic_decode_or_raise(magic: bytes, rest: bytes) -> None:
    check(magic + rest)


@FUZZ
@given(st.sampled_from(sorted(SEEDS)).flatmap(lambda name: mutated(SEEDS[name])))
def test_mutated_records_of_every_format_decode_or_raise(data: bytes) -> None:
    check(data)
    check(data, SMALL_LIMIT)


@FUZZ
@given(st.sampled_from(sorted(RESEAL)).flatmap(lambda k: st.tuples(st.just(k), mutated(INNER[k]))))
def test_mutations_beneath_checksums_and_compression_decode_or_raise(
    case: tuple[str, bytes],
) -> None:
    kind, body = case
    try:
        record = RESEAL[kind](body)
    except ValueError:  # the envelope encoder refuses some bodies: nothing to decode
        return
    check(record)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(sorted(SEEDS)), min_size=1, max_size=8))
def test_kpl_of_any_seed_mix_counts_lines_exactly(names: list[str]) -> None:
    users = [SEEDS[n] for n in names]
    (record,) = kpl_records(users)
    decoded = check(record)
    if any(n.startswith("kpl") for n in names):
        assert decoded is None  # nested aggregation is refused
        return
    assert decoded is not None
    expected = 0
    for user in users:
        inner = decode_record(user, CONFIG)
        expected += inner.line_count
    assert decoded.line_count == expected


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.dictionaries(
            st.text(max_size=8), st.one_of(st.none(), st.integers(-(2**63), 2**64 - 1), st.text())
        ),
        max_size=6,
    ),
    st.sampled_from(("\n", "\r\n", "\n\n")),
    st.sampled_from((b"", b"gzip", b"zstd")),
)
def test_ndjson_round_trips_every_object(
    objects: list[dict[str, object]], sep: str, compression: bytes
) -> None:
    import orjson

    body = sep.join(orjson.dumps(o).decode() for o in objects).encode()
    if compression == b"gzip":
        body = gzip.compress(body)
    elif compression == b"zstd":
        body = zstandard.ZstdCompressor().compress(body)
    decoded = check(body)
    assert decoded is not None
    if objects:
        assert assert_contract(decoded) == objects
    else:
        assert decoded.skipped
