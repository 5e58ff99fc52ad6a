"""``tideway setup``: create the stream, bucket and lease table (and Glue table) if missing (I/O).

Idempotent: existing resources are left exactly as they are. For local and test endpoints;
production uses deploy/.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from botocore.exceptions import ClientError

from service.aws import aws_clients, error_code
from service.consume.context import (
    extra_columns,
    iceberg_arrow_schema,
    iceberg_properties,
    partition_template,
    pipelines,
)
from service.consume.leases import TTL_ATTRIBUTE
from service.settings import Settings, catalog_locates, logs_location, partition_keys
from service.sink.glue import evolve_table, table_input
from service.sink.iceberg import ensure_table, open_catalog, split_identifier
from service.sink.iceberg import evolve_table as evolve_iceberg_table
from service.sink.iceberg_respec import evolve_spec
from service.sink.iceberg_tables import pipeline_schemas

log = logging.getLogger(__name__)


async def setup(settings: Settings) -> dict[str, str]:
    """Ensure every resource exists; return what was created or found."""
    names = ["kinesis", "s3", "dynamodb"] + (["glue"] if settings.glue_database else [])
    async with aws_clients(*names) as aws:
        report = {
            "stream": await ensure_stream(aws.kinesis, settings.stream, settings.shard_count),
            "bucket": await ensure_bucket(aws.s3, settings.bucket),
            "lease_table": await ensure_lease_table(aws.dynamodb, settings.lease_table),
        }
        if settings.glue_database and settings.glue_table:
            report["glue_table"] = await ensure_glue_table(aws.glue, settings)
        if settings.table_format == "iceberg":
            report["iceberg_table"] = await ensure_iceberg_table(aws.s3, settings)
    log.info("setup done", extra=report)
    return report


async def ensure_glue_table(glue: Any, settings: Settings) -> str:
    """The Glue database and table of DESIGN §4, so Athena can query the layout at once; an
    existing table gets the configured extra columns it lacks appended ("evolved"), and is
    otherwise left as it is."""
    assert settings.glue_database and settings.glue_table
    partition_template(settings)  # a bad template stops here, before any table is made
    try:
        await glue.create_database(DatabaseInput={"Name": settings.glue_database})
    except ClientError as exc:
        if error_code(exc) != "AlreadyExistsException":
            raise
    try:
        await glue.create_table(
            DatabaseName=settings.glue_database,
            TableInput=table_input(
                settings.glue_table,
                logs_location(settings),
                partition_keys(settings.partition_template),
                extra_columns=extra_columns(settings),
            ),
        )
        return "created"
    except ClientError as exc:
        if error_code(exc) != "AlreadyExistsException":
            raise
    evolution = await evolve_table(
        glue, settings.glue_database, settings.glue_table, extra_columns(settings)
    )
    return "evolved" if evolution.added else "exists"


async def ensure_iceberg_table(s3: Any, settings: Settings) -> str:
    """The namespace and table of DESIGN §11 at the consumer's location (or where the
    catalog chooses: TIDEWAY_ICEBERG_TABLE_LOCATION), and one table per pipeline table
    (``namespace.waf`` at ``{prefix}waf``), each if missing; an existing table gains the
    configured columns it lacks and the template's partition spec ("evolved") and is
    otherwise left alone. Returns the default table's state."""
    catalog = await asyncio.to_thread(open_catalog, iceberg_properties(settings, s3))
    base = iceberg_arrow_schema(settings)
    namespace, _ = split_identifier(settings.iceberg_table)
    here = not catalog_locates(settings)
    tables = [(settings.iceberg_table, logs_location(settings), base)] + [
        (f"{namespace}.{name}", f"s3://{settings.bucket}/{settings.prefix}{name}", schema)
        for name, schema in sorted(pipeline_schemas(pipelines(settings), base).items())
    ]
    keys = partition_template(settings).keys
    states = []
    for identifier, location, schema in tables:
        state, table = await asyncio.to_thread(
            ensure_table, catalog, identifier, location if here else None, schema, keys
        )
        added = await asyncio.to_thread(evolve_iceberg_table, table, schema)
        _, respecified = await asyncio.to_thread(evolve_spec, table.refresh(), keys, schema)
        if state == "exists" and (added or respecified):
            state = "evolved"
        states.append(state)
    return states[0]


async def ensure_stream(kinesis: Any, stream: str, shards: int) -> str:
    try:
        await kinesis.create_stream(StreamName=stream, ShardCount=shards)
        state = "created"
    except ClientError as exc:
        if error_code(exc) != "ResourceInUseException":
            raise
        state = "exists"
    for _ in range(300):
        desc = await kinesis.describe_stream_summary(StreamName=stream)
        if desc["StreamDescriptionSummary"]["StreamStatus"] in ("ACTIVE", "UPDATING"):
            return state
        await asyncio.sleep(0.2)
    raise TimeoutError(f"stream {stream} did not become ACTIVE")


async def ensure_bucket(s3: Any, bucket: str) -> str:
    # us-east-1 answers CreateBucket on an existing bucket of ours with success, so ask first.
    try:
        await s3.head_bucket(Bucket=bucket)
        return "exists"
    except ClientError as exc:
        if error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
            raise
    region = s3.meta.region_name
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if region and region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        await s3.create_bucket(**kwargs)
        return "created"
    except ClientError as exc:
        if error_code(exc) != "BucketAlreadyOwnedByYou":  # AlreadyExists: owned by another account
            raise
        return "exists"


async def ensure_lease_table(dynamodb: Any, table: str) -> str:
    try:
        await dynamodb.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": "shard_id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "shard_id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        state = "created"
        await dynamodb.get_waiter("table_exists").wait(
            TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
        )
        # Finished repair claims expire (docs/operations.md "Redrive and replay"); only a
        # table made here is changed, an existing one is left as it is.
        await dynamodb.update_time_to_live(
            TableName=table,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
        )
    except ClientError as exc:
        if error_code(exc) != "ResourceInUseException":
            raise
        state = "exists"
    waiter = dynamodb.get_waiter("table_exists")
    await waiter.wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    return state
