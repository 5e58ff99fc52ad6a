"""Format detection and dispatch for one Kinesis record (pure)."""

from __future__ import annotations

import orjson

from service import envelope
from service.decode.types import DecoderConfig, Decoded, LineBatch
from service.errors import DecodeError


def decode_record(data: bytes, config: DecoderConfig) -> Decoded:
    """Decode one record into line batches; raise DecodeError (only) when it cannot be read."""
    try:
        return _dispatch(data, config)
    except DecodeError:
        raise
    except Exception as exc:  # a decoder bug must dead-letter the record, not stop the shard
        raise DecodeError(f"decoder failed: {type(exc).__name__}: {exc}") from exc


def _dispatch(data: bytes, config: DecoderConfig) -> Decoded:
    if envelope.is_envelope(data):
        env = envelope.decode(data)
        batch = LineBatch(
            payload=env.payload,
            count=env.line_count,
            source=env.source,
            service=env.service,
            observed_us=env.received_us,
            traceparent=env.traceparent,
        )
        return Decoded("envelope", (batch,) if env.line_count else ())
    return decode_plain(data)


def decode_plain(data: bytes) -> Decoded:
    """JSON object, JSON array, NDJSON, else UTF-8 text (one message per record)."""
    stripped = data.strip()
    if stripped[:1] in (b"{", b"["):
        lines = json_lines(stripped)
        if lines is not None:
            return Decoded("json", (LineBatch(b"\n".join(lines), len(lines), source="json"),))
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise DecodeError("record is neither a known binary format nor UTF-8 text") from None
    line = orjson.dumps({"message": text.rstrip("\r\n")})
    return Decoded("text", (LineBatch(line, 1, source="text"),))


def json_lines(data: bytes) -> list[bytes] | None:
    """Objects of a JSON object, array of objects, or NDJSON; None when it is not such JSON."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        value = None
    if isinstance(value, dict):
        return [data if b"\n" not in data else orjson.dumps(value)]
    if isinstance(value, list):
        if not all(isinstance(v, dict) for v in value):
            return None
        return [orjson.dumps(v) for v in value]
    out: list[bytes] = []
    for raw in data.split(b"\n"):  # NDJSON: per-line parse is the only way to validate
        line = raw.strip()
        if not line:
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(obj, dict):
            return None
        out.append(line)
    return out or None
