"""Format detection and dispatch for one Kinesis record (pure).

Detection order (docs/formats.md explains why each prefix cannot be confused):

1. envelope       ``F0 54 57 45`` ("\\xf0TWE")
2. KPL aggregate  ``F3 89 9A C2``; each user record goes through steps 1 and 3-9
3. gzip           ``1F 8B``: a CloudWatch Logs subscription payload, else JSON / text
4. zstd           ``28 B5 2F FD``: JSON / text
5. Avro single-object ``C3 01`` + fingerprint
6. Avro Confluent ``00`` + 4-byte schema id
7. JSON object, JSON array of objects, NDJSON
8. raw Avro datum, only with a configured schema and only when it fills the record
9. UTF-8 text, one message per record; anything else is a DecodeError
"""

from __future__ import annotations

import orjson

from service import envelope
from service.decode import avro, cloudwatch, kpl
from service.decode.compression import GZIP_MAGIC, ZSTD_MAGIC, gunzip, unzstd
from service.decode.plain import (
    all_certain_objects,
    decode_json,
    decode_plain,
    decode_text,
    json_value_lines,
    line_status,
    require_checked_objects,
)
from service.decode.types import Decoded, DecoderConfig, LineBatch
from service.errors import DecodeError

KPL_SOURCE = "kpl"
# Failures of the machine, not of the record: the same bytes decode on a retry, so they
# propagate (the worker backs the shard off and replays it) instead of dead-lettering it.
# RecursionError stays a dead letter: the same record nests as deep every time.
TRANSIENT: tuple[type[BaseException], ...] = (MemoryError,)
_FORMAT_SOURCES = frozenset(("json", "text", "avro"))  # replaced by "kpl" inside an aggregate


def decode_record(data: bytes, config: DecoderConfig) -> Decoded:
    """Decode one record into line batches; raise DecodeError (only) when it cannot be read.

    Every batch's payload is exactly ``count`` JSON object lines joined by ``\\n``; a
    Decoded without batches names why in ``skipped``. Same bytes, same result.
    """
    try:
        return _dispatch(data, config, nested=False)
    except DecodeError:
        raise
    except TRANSIENT:
        raise  # the shard backs off and reads the record again; never a dead letter
    except Exception as exc:  # a decoder bug must dead-letter the record, not stop the shard
        raise DecodeError(f"decoder failed: {type(exc).__name__}") from exc


def _dispatch(data: bytes, config: DecoderConfig, *, nested: bool) -> Decoded:
    head = data[:4]
    if head == envelope.MAGIC:
        return _decode_envelope(data)
    if head == kpl.MAGIC:
        if nested:
            raise DecodeError("kpl record nested in a kpl record")
        return _decode_kpl(data, config)
    if head[:2] == GZIP_MAGIC:
        return _decode_gzip(gunzip(data, config.max_decompressed_bytes))
    if head == ZSTD_MAGIC:
        return decode_plain(
            unzstd(data, config.max_decompressed_bytes), source="json", fmt_suffix="+zstd"
        )
    if avro.is_single_object(data):
        return avro.decode_single_object(data, config)
    if avro.is_confluent(data):
        return avro.decode_confluent(data, config)
    decoded = decode_json(data, source="json")
    if decoded is None:
        decoded = avro.decode_raw(data, config) or decode_text(data, source="text")
    return decoded


def _decode_envelope(data: bytes) -> Decoded:
    env = envelope.parse(data)
    # One pass of the C scanner over the lines counts them and vouches for each (orjson
    # for the lines it is unsure of: benchmarks/decoders.py, tideway_envelope); the
    # envelope's own count check then costs no second pass.
    status = line_status(env.payload) if env.payload else b""
    envelope.check_line_count(env.line_count, len(status))
    if not env.line_count:
        return Decoded(
            "envelope",
            skipped="envelope holds no lines",
            producer_id=env.producer_id,
            producer_seq=env.producer_seq,
            created_us=env.created_us,
        )
    # Our own producer wrote these lines, but the contract holds for any bytes.
    require_checked_objects(env.payload, status, "envelope")
    batch = LineBatch(
        payload=env.payload,
        count=env.line_count,
        source=env.source,
        service=env.service,
        observed_us=env.received_us,
        traceparent=env.traceparent,
    )
    return Decoded(
        "envelope",
        (batch,),
        producer_id=env.producer_id,
        producer_seq=env.producer_seq,
        created_us=env.created_us,
    )


def _decode_gzip(content: bytes) -> Decoded:
    stripped = content.strip()
    if stripped[:1] == b"{" and b'"messageType"' in stripped:
        try:
            value = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            value = None
        if cloudwatch.is_subscription_payload(value):
            return cloudwatch.decode_subscription(value)
        if value is not None:
            decoded = json_value_lines(value, stripped, source="json", fmt_suffix="+gzip")
            if decoded is not None:
                return decoded
    return decode_plain(content, source="json", fmt_suffix="+gzip")


def _decode_kpl(data: bytes, config: DecoderConfig) -> Decoded:
    records = kpl.user_records(data)
    if not records:
        return Decoded("kpl", skipped="kpl record holds no user records")
    fast = _kpl_json_objects(records)
    if fast is not None:
        return Decoded("kpl", (fast,))
    batches = _merged_batches(records, config)
    if not batches:
        return Decoded("kpl", skipped="kpl user records hold no lines")
    return Decoded("kpl", batches)


def _kpl_json_objects(records: list[bytes]) -> LineBatch | None:
    """One batch when every user record is one single-line JSON object (the common case)."""
    payload = b"\n".join(records)
    if payload.count(b"\n") != len(records) - 1:
        return None
    if all_certain_objects(payload):
        return LineBatch(payload, len(records), source=KPL_SOURCE)
    try:
        objects = list(map(orjson.loads, records))  # the loop runs in C
    except orjson.JSONDecodeError:
        return None
    if set(map(type, objects)) != {dict}:
        return None
    return LineBatch(payload, len(records), source=KPL_SOURCE)


# A text user record's line is an ``orjson.dumps`` result holding ~4 KB until freed
# (100k one-byte user records peaked at +392 MB when all were held for one join).
_PAYLOADS_PER_JOIN = 1024


def _merged_batches(records: list[bytes], config: DecoderConfig) -> tuple[LineBatch, ...]:
    # Per-user-record dispatch: each may be another format. Consecutive batches with the
    # same metadata are merged so the writer sees few, large batches, in record order.
    merged: list[tuple[tuple[str, str, str, str, int, str], list[bytes], int]] = []
    for record in records:
        try:
            decoded = _dispatch(record, config, nested=True)
        except DecodeError as exc:
            raise DecodeError(f"kpl user record: {exc.reason}") from None
        for batch in decoded.batches:
            source = KPL_SOURCE if batch.source in _FORMAT_SOURCES else batch.source
            key = (
                source,
                batch.service,
                batch.log_group,
                batch.log_stream,
                batch.observed_us,
                batch.traceparent,
            )
            if merged and merged[-1][0] == key:
                payloads = merged[-1][1]
                payloads.append(batch.payload)
                if len(payloads) >= _PAYLOADS_PER_JOIN:  # frees each orjson result's ~4 KB
                    payloads[:] = [b"\n".join(payloads)]
                merged[-1] = (key, merged[-1][1], merged[-1][2] + batch.count)
            else:
                merged.append((key, [batch.payload], batch.count))
    return tuple(
        LineBatch(
            b"\n".join(payloads),
            count,
            source=key[0],
            service=key[1],
            log_group=key[2],
            log_stream=key[3],
            observed_us=key[4],
            traceparent=key[5],
        )
        for key, payloads, count in merged
    )
