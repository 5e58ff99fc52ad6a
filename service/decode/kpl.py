"""KPL aggregated records (pure): magic, protobuf ``AggregatedRecord``, MD5 trailer.

Wire format (amazon-kinesis-producer ``aggregation-format.md``)::

    F3 89 9A C2 | protobuf AggregatedRecord | MD5(protobuf bytes), 16 bytes

    message AggregatedRecord {
      repeated string partition_key_table     = 1;
      repeated string explicit_hash_key_table = 2;
      repeated Record records                 = 3;
    }
    message Record {
      required uint64 partition_key_index     = 1;
      optional uint64 explicit_hash_key_index = 2;
      required bytes  data                    = 3;
      repeated Tag    tags                    = 4;
    }
    message Tag { required string key = 1; optional string value = 2; }

The message class is built from a descriptor at import (no generated code) and parsed by
the ``protobuf`` runtime's C core (upb). Measured on 50 KB aggregates of loggen lines, it
takes 0.2 us per user record against 1.0 us for a hand-written wire parser (whose
per-field loop runs in Python), MD5 included 99 us against 205 us per aggregate.
Partition and hash key indexes are not checked against their tables: the consumer does
not route by them, and the MD5 already proves the bytes are what the producer wrote.
"""

from __future__ import annotations

import hashlib
from typing import Any

# No stubs ship for protobuf and pyproject.toml is not ours to extend; the surface used is tiny.
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
)
from google.protobuf.message import DecodeError as ProtobufDecodeError

from service.errors import DecodeError

MAGIC = b"\xf3\x89\x9a\xc2"
_DIGEST = 16


def _aggregated_record_class() -> Any:
    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="tideway/kpl_aggregation.proto", package="tideway.kpl", syntax="proto2"
    )
    aggregated = proto.message_type.add(name="AggregatedRecord")
    record = proto.message_type.add(name="Record")
    tag = proto.message_type.add(name="Tag")
    for message, name, number, label, kind, type_name in (
        (aggregated, "partition_key_table", 1, field.LABEL_REPEATED, field.TYPE_STRING, ""),
        (aggregated, "explicit_hash_key_table", 2, field.LABEL_REPEATED, field.TYPE_STRING, ""),
        (aggregated, "records", 3, field.LABEL_REPEATED, field.TYPE_MESSAGE, ".tideway.kpl.Record"),
        (record, "partition_key_index", 1, field.LABEL_REQUIRED, field.TYPE_UINT64, ""),
        (record, "explicit_hash_key_index", 2, field.LABEL_OPTIONAL, field.TYPE_UINT64, ""),
        (record, "data", 3, field.LABEL_REQUIRED, field.TYPE_BYTES, ""),
        (record, "tags", 4, field.LABEL_REPEATED, field.TYPE_MESSAGE, ".tideway.kpl.Tag"),
        (tag, "key", 1, field.LABEL_REQUIRED, field.TYPE_STRING, ""),
        (tag, "value", 2, field.LABEL_OPTIONAL, field.TYPE_STRING, ""),
    ):
        added = message.field.add(name=name, number=number, label=label, type=kind)
        if type_name:
            added.type_name = type_name
    pool = descriptor_pool.DescriptorPool()  # private pool: never clashes with other protos
    pool.Add(proto)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tideway.kpl.AggregatedRecord")
    )


_AggregatedRecord = _aggregated_record_class()


def is_aggregated(data: bytes) -> bool:
    """True when ``data`` starts with the KPL magic (it may still be corrupt)."""
    return data[:4] == MAGIC


def user_records(data: bytes) -> list[bytes]:
    """The ``data`` of every user record, in order; raise DecodeError on any defect."""
    if len(data) < len(MAGIC) + _DIGEST:
        raise DecodeError("kpl record truncated")
    message = data[len(MAGIC) : -_DIGEST]
    if hashlib.md5(message, usedforsecurity=False).digest() != data[-_DIGEST:]:
        raise DecodeError("kpl md5 mismatch")
    aggregated = _AggregatedRecord()
    try:
        aggregated.ParseFromString(message)
    except ProtobufDecodeError:
        raise DecodeError("kpl protobuf malformed") from None
    if not aggregated.IsInitialized():  # checks required fields in C, for every record
        raise DecodeError("kpl user record misses a required field")
    return [record.data for record in aggregated.records]
