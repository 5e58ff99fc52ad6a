"""The partition template as an Iceberg partition spec (pure), and the value transforms a
template key may name: ``{tenant:truncate[4]}``, ``{user_id:bucket[16]}``.

Each template key that is a column maps to a spec field: ``{service}`` and ``{tenant}`` to
``identity``, ``{col:truncate[W]}`` to ``truncate[W]``, ``{col:bucket[N]}`` to ``bucket[N]``;
the time fields to ``hour(timestamp)`` (a file never spans an hour, sink/iceberg_rows.py).
Attribute paths (``{attributes.env}``) and lineage columns (``{log_group}``) get no spec
field: they only shape the object keys. Values are transformed by pyiceberg's own transforms (Iceberg's definitions:
murmur3 for bucket, code points for truncate), so the Hive path and the Iceberg partition
of a row agree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pyiceberg.transforms import (
    BucketTransform,
    HourTransform,
    IdentityTransform,
    Transform,
    TruncateTransform,
)
from pyiceberg.types import IcebergType, IntegerType, LongType, StringType

from service.sink.template import ATTRIBUTES, TRANSFORM, split_key

HOUR_FIELD = "timestamp_hour"
# Lineage columns are joined to a file's rows after its partition is cut (sink/lineage.py),
# so the guard's overflow cannot make them uniform: they shape object keys only.
LINEAGE_KEYS = frozenset(("source", "log_group", "log_stream", "kinesis_shard_id"))
_SOURCE_TYPES: dict[pa.DataType, IcebergType] = {
    pa.string(): StringType(),
    pa.large_string(): StringType(),
    pa.int32(): IntegerType(),
    pa.int64(): LongType(),
}


@dataclass(frozen=True, slots=True)
class SpecField:
    """One field of the table's partition spec: its source column, transform and name."""

    source: str
    transform: Transform[Any, Any]
    name: str


def transform_of(text: str | None) -> Transform[Any, Any]:
    """The pyiceberg transform a key names (identity when none)."""
    if text is None:
        return IdentityTransform()
    match = TRANSFORM.match(text)
    assert match is not None  # split_key checked it
    kind, width = match.group(1), int(match.group(2))
    return TruncateTransform(width) if kind == "truncate" else BucketTransform(width)


def value_transform(key: str, arrow_type: pa.DataType) -> Callable[[Any], Any] | None:
    """The function a key applies to each value before it is escaped into the path; None
    for a key without a transform. Raises ValueError for a column type it cannot take."""
    _, text = split_key(key)
    if text is None:
        return None
    source = _SOURCE_TYPES.get(arrow_type)
    if source is None:
        raise ValueError(
            f"partition_template field {{{key}}}: {text} takes a string or integer column, "
            f"not {arrow_type}"
        )
    fn: Callable[[Any], Any] = transform_of(text).transform(source)
    return fn


def spec_fields(keys: tuple[str, ...]) -> list[SpecField]:
    """The partition spec of a template's keys (``PartitionTemplate.keys``)."""
    fields = [SpecField("timestamp", HourTransform(), HOUR_FIELD)]
    for key in keys:
        column, text = split_key(key)
        if key.startswith(ATTRIBUTES) or column in LINEAGE_KEYS:
            continue
        transform = transform_of(text)
        suffix = "" if text is None else "_" + text.partition("[")[0]
        fields.append(SpecField(column, transform, f"{column}{suffix}"))
    return fields
