"""With a Glue table configured, setup defines it and each flush registers its partitions."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson

from service.ingest.server import serve
from service.resources import setup
from service.settings import Settings
from tests.conftest import Aws, drain, read_table


async def test_setup_defines_the_table_and_flushes_register_partitions(
    aws: Aws, settings: Settings
) -> None:
    glued = settings.model_copy(update={"glue_database": "logsdb", "glue_table": "events"})
    report = await setup(glued)
    assert report["glue_table"] == "created"
    assert (await setup(glued))["glue_table"] == "exists"
    glue = aws.client("glue")
    table = glue.get_table(DatabaseName="logsdb", Name="events")["Table"]
    assert [k["Name"] for k in table["PartitionKeys"]] == ["dt", "hour", "service"]
    assert table["StorageDescriptor"]["Location"].rstrip("/") == f"s3://{glued.bucket}/logs"
    assert "kinesis_sequence_number" in [c["Name"] for c in table["StorageDescriptor"]["Columns"]]

    stop = asyncio.Event()
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(glued, stop, bound))
    port = await bound
    lines = [{"message": f"m{i}", "service": ("a", "b")[i % 2]} for i in range(20)]
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"http://127.0.0.1:{port}/ingest",
            data=b"\n".join(map(orjson.dumps, lines)),
            headers={"Content-Type": "application/x-ndjson"},
        ) as resp,
    ):
        assert resp.status == 200
    stop.set()
    await task
    await drain(glued)

    parts = glue.get_partitions(DatabaseName="logsdb", TableName="events")["Partitions"]
    services = sorted(p["Values"][2] for p in parts)
    assert services == ["a", "b"]
    assert all(
        p["StorageDescriptor"]["Location"].startswith(f"s3://{glued.bucket}/logs/dt=")
        for p in parts
    )
    assert read_table(aws, glued).num_rows == 20
