"""With pipelines, a flush writes several tables; the Glue table of ``logs`` registers only
the partitions of its own files."""

from __future__ import annotations

from service.aws import aws_clients
from service.sink.glue import PartitionCatalog, table_input
from service.sink.plan import FlushObject, FlushPlan
from tests.conftest import Aws


def data(key: str) -> FlushObject:
    return FlushObject(key, b"", 1, key.split("/", 2)[2].rsplit("/", 1)[0])


async def test_the_logs_table_registers_only_partitions_of_files_under_logs(aws: Aws) -> None:
    plan = FlushPlan(
        (
            data("p/logs/dt=2026-11-30/hour=00/service=web/s-1-1-1.parquet"),
            data("p/api/dt=2026-11-30/hour=00/service=api/s-1-1-1.parquet"),
            data("p/logsx/dt=2026-11-30/hour=01/service=api/s-1-1-1.parquet"),
        ),
        rows=3,
        dead_letters=0,
    )
    async with aws_clients("glue") as clients:
        await clients.glue.create_database(DatabaseInput={"Name": "db"})
        location = "s3://b/p/logs"
        await clients.glue.create_table(
            DatabaseName="db", TableInput=table_input("logs", location, ["dt", "hour", "service"])
        )
        await PartitionCatalog(clients.glue, "db", "logs", location).register_plan(plan)
        parts = await clients.glue.get_partitions(DatabaseName="db", TableName="logs")
    assert [p["Values"] for p in parts["Partitions"]] == [["2026-11-30", "00", "web"]]
