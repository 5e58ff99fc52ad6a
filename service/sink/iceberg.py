"""Iceberg tables (DESIGN §11): the catalog, the table ``tideway setup`` creates, and the data
files of a flush as the table records them (I/O, blocking: callers run it in a thread).

The files themselves are the consumer's own deterministic Parquet objects (sink/plan.py,
with ``service`` as a column), written under the intent protocol; committing them is
sink/iceberg_commit.py. docs/tables.md tells the whole protocol.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError, TableAlreadyExistsError
from pyiceberg.io.fileformat import DataFileStatistics
from pyiceberg.io.pyarrow import (
    compute_statistics_plan,
    data_file_statistics_from_parquet_metadata,
    parquet_path_to_id_mapping,
)
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
from pyiceberg.partitioning import PartitionSpec, partition_record_value
from pyiceberg.schema import Schema
from pyiceberg.table import Table, TableProperties
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.typedef import Record

from service.sink.iceberg_spec import spec_fields

CATALOG_NAME = "tideway"
# Every table Tideway creates. Commit retries are ours (iceberg_commit.py): pyiceberg's own
# retry re-bases an append onto a newer snapshot without re-reading the watermarks that make
# the commit idempotent, so it must never run (checked again before every commit).
TABLE_PROPERTIES: dict[str, str] = {
    "format-version": "2",
    TableProperties.COMMIT_NUM_RETRIES: "0",
    "write.parquet.compression-codec": "zstd",
    # Partition values are read from column bounds: never truncate the service name.
    "write.metadata.metrics.column.service": "full",
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "100",
}


def catalog_properties(
    base: Mapping[str, str], *, s3_endpoint: str | None, region: str | None
) -> dict[str, str]:
    """pyiceberg catalog properties: the configured ones, with S3 (and Glue) reached through
    the same endpoint and region as Tideway's own clients (AWS_ENDPOINT_URL, AWS_REGION)."""
    props = dict(base)
    if s3_endpoint:
        props.setdefault("s3.endpoint", s3_endpoint)
    if region:
        # Without a region pyarrow asks real S3 where the bucket is, even for an emulator.
        props.setdefault("s3.region", region)
        props.setdefault("glue.region", region)
        props.setdefault("client.region", region)
    return props


def open_catalog(properties: Mapping[str, str]) -> Catalog:
    """The catalog the properties name (glue, rest, sql)."""
    return load_catalog(CATALOG_NAME, **properties)


def split_identifier(identifier: str) -> tuple[str, str]:
    namespace, _, name = identifier.partition(".")
    return namespace, name


def ensure_table(
    catalog: Catalog,
    identifier: str,
    location: str | None,
    schema: pa.Schema,
    keys: tuple[str, ...] = ("service",),
) -> tuple[str, Table]:
    """Create the namespace and the table (columns ``schema``, at ``location``, or where the
    catalog chooses when None (S3 Tables), partitioned
    by the spec of the template's ``keys``: ``hour(timestamp), identity(service)`` by
    default, sink/iceberg_spec.py) if missing; an existing table is left as it is. Returns
    ("created" | "exists", the table)."""
    namespace, _ = split_identifier(identifier)
    # Look before creating: a consumer's role may read and create tables of its database
    # but not create databases (deploy/, PipelineTables), so it never asks for one needlessly.
    if catalog.table_exists(identifier):
        return "exists", catalog.load_table(identifier)
    if not catalog.namespace_exists(namespace):
        with contextlib.suppress(NamespaceAlreadyExistsError):
            catalog.create_namespace(namespace)
    fields = spec_fields(keys)
    # Partition values are read from column bounds: keep them whole, never truncated.
    full = {f"write.metadata.metrics.column.{f.source}": "full" for f in fields[1:]}
    tx = catalog.create_table_transaction(
        identifier, schema=schema, location=location, properties={**TABLE_PROPERTIES, **full}
    )
    with tx.update_spec() as spec:
        for field in fields:
            spec.add_field(field.source, field.transform, field.name)
    # Our files carry no Parquet field ids: readers resolve columns by name.
    mapping = tx.table_metadata.schema().name_mapping.model_dump_json()
    tx.set_properties({TableProperties.DEFAULT_NAME_MAPPING: mapping})
    try:
        tx.commit_transaction()
    except TableAlreadyExistsError:  # another process created it meanwhile
        return "exists", catalog.load_table(identifier)
    return "created", catalog.load_table(identifier)


def evolve_table(table: Table, schema: pa.Schema) -> tuple[str, ...]:
    """Add the columns of ``schema`` that ``table`` lacks (union by name); a column the
    table types otherwise keeps the table's type (its files keep their meaning). Returns the
    names added."""
    have = {f.name for f in table.schema().fields}
    added = [f.with_nullable(True) for f in schema if f.name not in have]
    if added:
        with table.update_schema() as update:
            update.union_by_name(pa.schema(added))
    return tuple(f.name for f in added)


StatsPlan = tuple[Any, dict[str, int]]  # pyiceberg's statistics plan, Parquet path -> id


def stats_plan(metadata: TableMetadata) -> StatsPlan:
    """What ``data_file`` derives from the table's schema and properties alone: compute it
    once per commit, not once per file (a schema walk costs about as much as the footer)."""
    schema = metadata.schema()
    return compute_statistics_plan(schema, metadata.properties), parquet_path_to_id_mapping(schema)


def data_file(
    metadata: TableMetadata,
    path: str,
    body: bytes | int,
    *,
    plan: StatsPlan | None = None,
    footer: pq.FileMetaData | None = None,
    content: Callable[[], bytes] | None = None,
) -> DataFile:
    """The table's record of one of our Parquet objects (``path``: its s3:// URL), from its
    bytes in memory or its size and footer: column bounds and counts from the footer,
    partition from the bounds (a file holds one hour and one service,
    sink/iceberg_rows.py). Raises ValueError when the file spans partitions. ``plan``:
    ``stats_plan(metadata)``, if already computed; ``footer``: the file's Parquet footer,
    if already read (required when ``body`` is only the size); ``content``: reads the
    bytes when only the size is in memory (the elected committer's files), called only
    when the bounds cannot prove a bucket partition."""
    if footer is None:
        if isinstance(body, int):
            raise ValueError(f"{path}: a data file from its size needs its footer")
        footer = pq.read_metadata(pa.BufferReader(body))
    schema = metadata.schema()
    stats_columns, mapping = plan or stats_plan(metadata)
    stats = data_file_statistics_from_parquet_metadata(
        parquet_metadata=footer, stats_columns=stats_columns, parquet_column_mapping=mapping
    )
    fields: dict[str, Any] = stats.to_serialized_dict()
    return DataFile.from_args(
        content=DataFileContent.DATA,
        file_path=path,
        file_format=FileFormat.PARQUET,
        partition=partition_of(stats, metadata.spec(), schema, content or body),
        file_size_in_bytes=body if isinstance(body, int) else len(body),
        sort_order_id=None,
        spec_id=metadata.default_spec_id,
        equality_ids=None,
        key_metadata=None,
        **fields,
    )


class SpansPartitions(ValueError):
    """A file's rows are in more than one partition of the spec (it was cut by another
    partition template: sink/iceberg_respec.py fits it first)."""


def partition_of(
    stats: DataFileStatistics,
    spec: PartitionSpec,
    schema: Schema,
    body: bytes | int | Callable[[], bytes] | None = None,
) -> Record:
    """The partition of a file holding one partition of ``spec``: each field's transform of
    its source column's lowest value; null when the column is null throughout. Raises
    SpansPartitions unless every row has that value: proven from the bounds (an order-
    keeping transform of the lowest and highest value agree, never nulls beside values),
    else, for a transform that does not keep order (bucket), from the column's distinct
    values read from ``body`` (the bytes, or a callable reading them; None or a size: not
    readable, so such a file is refused)."""
    values: list[Any] = []
    for field in spec.fields:
        aggregate = stats.column_aggregates.get(field.source_id)
        if aggregate is None or aggregate.current_min is None:
            values.append(None)
            continue
        column = schema.find_field(field.source_id)
        transform = field.transform.transform(column.field_type)
        lowest = transform(partition_record_value(field, aggregate.current_min, schema))
        if stats.null_value_counts.get(field.source_id, 0):
            raise SpansPartitions(f"a file spans partitions of {field.name}: {lowest} and null")
        highest = transform(partition_record_value(field, aggregate.current_max, schema))
        if highest != lowest and not field.transform.preserves_order and body is not None:
            if isinstance(body, int):
                raise SpansPartitions(
                    f"a file may span partitions of {field.name} and its bytes are not at hand"
                )
            if callable(body):
                body = body()
            distinct = pc.unique(pq.read_table(pa.BufferReader(body), columns=[column.name])[0])
            highest = (
                lowest if {transform(v) for v in distinct.to_pylist()} == {lowest} else highest
            )
        if highest != lowest:
            raise SpansPartitions(f"a file spans partitions of {field.name}: {lowest}..{highest}")
        values.append(lowest)
    return Record(*values)
