"""The wiring from settings to a shard's context: what every shard consumer of one worker
shares (clients, layout, mapping, decoders, flush policy, start position)."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pyiceberg.exceptions import NoSuchTableError

from service.consume.buffer import FlushPolicy
from service.consume.committer_lease import CommitterLeases
from service.consume.handoff import DEADLINE_LEASES, HandoffMode
from service.consume.leases import LeaseTable
from service.consume.reader import Position, wall_time
from service.consume.reload import LivePipelines
from service.decode import DecoderConfig
from service.decode.avro import load_config, load_schema
from service.errors import DecodeError, SettingsError
from service.pipeline.config import PipelineConfigError, load_pipelines
from service.pipeline.cost import routing_cost
from service.pipeline.engine import DEFAULT_TABLE, Pipelines
from service.schema import extra_fields, table_schema
from service.settings import (
    Settings,
    catalog_locates,
    iceberg_catalog_properties,
    partition_keys,
)
from service.sink.glue import PartitionCatalog
from service.sink.iceberg import catalog_properties, open_catalog
from service.sink.iceberg_spec import value_transform
from service.sink.iceberg_tables import TableRouter, pipeline_schemas
from service.sink.opened import OpenedPartitions
from service.sink.partition import PartitionTemplate
from service.sink.placement import Placement
from service.sink.plan import ARROW_TO_PARQUET, FlushPlan, Layout, plan_flush
from service.sink.rules import FieldMapping
from service.sink.template import ATTRIBUTES, split_key
from service.telemetry.iceberg import IcebergMetrics
from service.telemetry.metrics import ConsumerMetrics


@dataclass(frozen=True, slots=True)
class ShardContext:
    """Everything a shard consumer needs, built once per worker."""

    kinesis: Any
    s3: Any
    bucket: str
    stream: str
    leases: LeaseTable
    layout: Layout
    mapping: FieldMapping
    decoders: DecoderConfig
    policy: FlushPolicy
    worker_id: str
    start: Position
    metrics: ConsumerMetrics
    idle_wait: float = 1.0
    catalog: PartitionCatalog | None = None  # Glue registration when configured
    table: TableRouter | None = None  # Iceberg commits when TIDEWAY_TABLE_FORMAT=iceberg
    # Wall clock (epoch seconds) for what is written as data, never to judge liveness; the
    # simulation injects its own. Monotonic time is always the event loop's.
    wall_clock: Callable[[], float] = wall_time
    # The pure flush planner (records -> objects); tests pass one that raises to stand for
    # an input the mapping or encoder cannot handle (no such input is known today).
    planner: Callable[..., FlushPlan] = plan_flush
    live: LivePipelines | None = None  # the stored pipeline document, reloaded (reload.py)
    # TIDEWAY_ICEBERG_COMMITTER=elected: flushes are handed to the table's elected committer
    # (consume/handoff.py); None: each worker commits its own (group commit).
    handoff: HandoffMode | None = None

    def own_layout(self, opened: OpenedPartitions) -> Layout:
        """This process's layout for a new flush: the live pipelines when reloaded."""
        if self.live is None:
            return dataclasses.replace(self.layout, opened=opened)
        return dataclasses.replace(self.layout, opened=opened, pipelines=self.live.current)

    def placement(self) -> Placement:
        """Where the layout's keys are stored: in Tideway's bucket, apart from the Iceberg
        tables a catalog placed elsewhere (sink/placement.py) that are open now."""
        if self.table is None:
            return Placement(self.bucket, self.layout.prefix)
        return self.table.placement

    def routing(self) -> tuple[int, int]:
        """What this process's pipelines hold in a flush, per decoded byte and per line
        (a new buffer is charged for it: service.pipeline.cost)."""
        live = self.layout.pipelines if self.live is None else self.live.current
        return routing_cost(live)


def decoder_config(settings: Settings) -> DecoderConfig:
    """The decoders' configuration; raises SettingsError (one line) for a bad Avro schema."""
    if settings.avro_schema is None and settings.avro_schema_dir is None:
        return DecoderConfig(max_decompressed_bytes=settings.max_decompressed_bytes)
    try:
        return load_config(
            settings.avro_schema,
            settings.avro_schema_dir,
            max_decompressed_bytes=settings.max_decompressed_bytes,
        )
    except DecodeError as exc:
        name = "TIDEWAY_AVRO_SCHEMA" if settings.avro_schema else "TIDEWAY_AVRO_SCHEMA_DIR"
        raise SettingsError(f"setting {name} is invalid: {exc.reason}") from None


def extra_columns(settings: Settings) -> tuple[pa.Field[Any], ...]:
    """The typed columns of TIDEWAY_EXTRA_COLUMNS (none when unset); raise SettingsError
    (one line) for a missing or bad .avsc, a non-record schema, an unsupported type or a
    name taken by a canonical column or partition key."""
    path = settings.extra_columns
    if path is None:
        return ()
    name = "TIDEWAY_EXTRA_COLUMNS"
    try:
        return extra_fields(load_schema(path, name), partition_keys(settings.partition_template))
    except DecodeError as exc:
        raise SettingsError(f"setting {name} is invalid: {exc.reason}") from None
    except ValueError as exc:
        raise SettingsError(f"setting {name} is invalid: {path}: {exc}") from None


def partition_template(settings: Settings) -> PartitionTemplate:
    """The Hive partition template; raise SettingsError (one line) for a bad one or a key
    that is neither a column, an extra column nor an ``attributes.`` path."""
    name = "TIDEWAY_PARTITION_TEMPLATE"
    try:
        template = PartitionTemplate(settings.partition_template)
    except ValueError as exc:
        raise SettingsError(f"setting {name} is invalid: {exc}") from None
    schema = table_schema(extra_columns(settings), service=True)
    for key in template.keys:
        column, _ = split_key(key)
        if not key.startswith(ATTRIBUTES) and column not in schema.names:
            raise SettingsError(
                f"setting {name} is invalid: {{{key}}} is neither a column nor an extra "
                f"column (TIDEWAY_EXTRA_COLUMNS); for an attribute use {{attributes.{key}}}"
            )
        if column in schema.names:
            try:
                value_transform(key, schema.field(column).type)
            except ValueError as exc:
                raise SettingsError(f"setting {name} is invalid: {exc}") from None
    return template


def iceberg_properties(settings: Settings, s3: Any) -> dict[str, str]:
    """The catalog's properties, its FileIO reaching S3 where ``s3`` (our client) does."""
    return catalog_properties(
        iceberg_catalog_properties(settings),
        s3_endpoint=s3.meta.endpoint_url,
        region=s3.meta.region_name,
    )


def iceberg_arrow_schema(settings: Settings) -> pa.Schema:
    """The Iceberg table's columns: DESIGN §4's, ``service``, then the extra typed ones."""
    return table_schema(extra_columns(settings), service=True)


async def table_committer(
    settings: Settings, s3: Any, seed: int, metrics: IcebergMetrics | None = None
) -> TableRouter:
    """The committer of TIDEWAY_ICEBERG_TABLE and of each table the pipelines route to
    (created if missing, where TIDEWAY_ICEBERG_TABLE_LOCATION says), each table's partition
    spec made the template's; raises SettingsError (one line) when the default table is
    missing."""
    identifier = settings.iceberg_table
    document = pipelines(settings)
    catalog = await asyncio.to_thread(open_catalog, iceberg_properties(settings, s3))
    router = TableRouter(
        catalog,
        identifier,
        stream=settings.stream,
        bucket=settings.bucket,
        prefix=settings.prefix,
        schema=iceberg_arrow_schema(settings),
        rng=random.Random(seed),
        schemas=pipeline_schemas(document, iceberg_arrow_schema(settings)),
        keys=partition_template(settings).keys,
        on_commit=None if metrics is None else metrics.observe_commit,
        catalog_locates=catalog_locates(settings),
    )
    try:
        await router.open(DEFAULT_TABLE, create=False)
    except NoSuchTableError:
        raise SettingsError(
            f"setting TIDEWAY_ICEBERG_TABLE is invalid: no table {identifier} in the catalog;"
            " create it with tideway setup (or deploy/)"
        ) from None
    for table in sorted(pipeline_schemas(document, iceberg_arrow_schema(settings))):
        await router.open(table)
    return router


def handoff_mode(
    settings: Settings, dynamodb: Any, metrics: IcebergMetrics | None = None
) -> HandoffMode | None:
    """How owners reach the elected committer (None in worker mode or without Iceberg):
    a round every ``min(1 s, lease / 5)``, the owner's fallback after DEADLINE_LEASES."""
    if settings.table_format != "iceberg" or settings.iceberg_committer != "elected":
        return None
    return HandoffMode(
        CommitterLeases(dynamodb, settings.lease_table),
        interval=min(1.0, settings.lease_duration / 5),
        deadline=DEADLINE_LEASES * settings.lease_duration,
        observe=None if metrics is None else metrics.observe_handoff,
    )


def pipelines(settings: Settings) -> Pipelines | None:
    """The pipelines of TIDEWAY_PIPELINES (none when unset); raise SettingsError (one line
    naming the pipeline, step and field) for a document that does not load."""
    path = settings.pipelines
    if path is None:
        return None
    try:
        return load_pipelines(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"setting TIDEWAY_PIPELINES is invalid: {path}: {exc}") from None
    except PipelineConfigError as exc:
        raise SettingsError(f"setting TIDEWAY_PIPELINES is invalid: {path}: {exc}") from None


def shard_context(
    settings: Settings, kinesis: object, s3: object, dynamodb: object, worker_id: str
) -> ShardContext:
    """The context of every shard consumer of one worker; raises SettingsError."""
    start = Position(
        settings.start_position,
        timestamp=settings.start_timestamp if settings.start_position == "AT_TIMESTAMP" else None,
    )
    return ShardContext(
        kinesis=kinesis,
        s3=s3,
        bucket=settings.bucket,
        stream=settings.stream,
        leases=LeaseTable(dynamodb, settings.lease_table),
        layout=Layout(
            settings.stream,
            settings.prefix,
            partition_template(settings),
            settings.max_partitions_per_flush,
            settings.file_target_bytes,
            service_column=settings.table_format == "iceberg",
            pipelines=pipelines(settings),
        ),
        mapping=FieldMapping(
            max_past_us=int(settings.event_time_max_past * 1e6),
            max_future_us=int(settings.event_time_max_future * 1e6),
            extra_columns=extra_columns(settings),
        ),
        decoders=decoder_config(settings),
        policy=FlushPolicy(settings.file_target_bytes * ARROW_TO_PARQUET, settings.flush_max_age),
        worker_id=worker_id,
        start=start,
        metrics=ConsumerMetrics(),
        idle_wait=settings.idle_wait,
    )
