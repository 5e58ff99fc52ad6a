"""The pipeline document stored in the lease table: consumers read it at start (a bad one
fails the start in one line) and pick up a changed one without a restart; a document that
does not load is refused in one logged line and the last good one stays."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import orjson
import pytest

from service.aws import aws_clients
from service.cli import _parser
from service.consume.reload import (
    PIPELINES_KEY,
    LivePipelines,
    pipelines_command,
    store_document,
)
from service.consume.runner import consume
from service.errors import SettingsError
from service.pipeline.config import PipelineConfigError, load_pipelines
from service.settings import Settings
from tests.conftest import Aws, Server, object_keys
from tests.ingest_support import post_body as post
from tests.pipeline_support import ROUTES

BAD = '[[pipeline]]\nname = "x"\nmatch = "a =="\n'


async def put_raw(settings: Settings, document: str) -> None:
    """Store a document without the validation ``tideway pipelines put`` does."""
    async with aws_clients("dynamodb") as aws:
        await aws.dynamodb.put_item(
            TableName=settings.lease_table,
            Item={"shard_id": {"S": PIPELINES_KEY}, "document": {"S": document}},
        )


async def test_a_changed_document_is_adopted_and_a_bad_one_refused_keeping_the_last(
    ready: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    async with aws_clients("dynamodb") as aws:
        live = LivePipelines(aws.dynamodb, ready.lease_table, 5.0, fallback=None)
        await live.start()
        assert live.current is None  # nothing stored: the fallback (TIDEWAY_PIPELINES)
        first = await store_document(aws.dynamodb, ready.lease_table, ROUTES)
        await live.refresh_if_due(1.0)
        assert live.current is not None and live.current.version == first
        await put_raw(ready, BAD)
        with caplog.at_level(logging.ERROR, logger="service.consume.reload"):
            await live.refresh_if_due(2.0)  # read at most every interval (5 s): not yet
            await live.refresh_if_due(6.0)
            await live.refresh_if_due(11.0)  # the same bad text is refused once
        assert live.current.version == first
        refused = [r for r in caplog.records if "refused" in r.getMessage()]
        assert len(refused) == 1
        assert refused[0].error == (
            "pipeline 'x', step 'match', field 'match': the condition ends too early"
        )
        second = await store_document(aws.dynamodb, ready.lease_table, ROUTES + "\n# v2\n")
        await live.refresh_if_due(16.0)
        assert live.current.version == second != first
        with pytest.raises(PipelineConfigError):
            await store_document(aws.dynamodb, ready.lease_table, BAD)


async def test_a_bad_stored_document_fails_the_start_in_one_line(ready: Settings) -> None:
    await put_raw(ready, BAD)
    async with aws_clients("dynamodb") as aws:
        live = LivePipelines(aws.dynamodb, ready.lease_table, 1.0, fallback=None)
        with pytest.raises(SettingsError) as err:
            await live.start()
    assert str(err.value) == (
        f"stored pipeline document (lease table {ready.lease_table}) is invalid: "
        "pipeline 'x', step 'match', field 'match': the condition ends too early"
    )


async def test_the_command_stores_a_valid_document_and_shows_it(
    ready: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "p.toml"
    path.write_text(ROUTES)
    answer = await pipelines_command(ready, "put", path)
    assert answer == f"stored pipeline document version {load_pipelines(ROUTES).version}"
    assert await pipelines_command(ready, "show", None) == ROUTES
    path.write_text(BAD)
    with pytest.raises(PipelineConfigError, match="field 'match'"):
        await pipelines_command(ready, "put", path)
    assert await pipelines_command(ready, "show", None) == ROUTES
    assert _parser().parse_args(["pipelines", "put", str(path)]).file == path


async def wait_for_table(aws: Aws, bucket: str, table: str) -> None:
    async with asyncio.timeout(60):
        while not object_keys(aws, bucket, f"{table}/"):
            await asyncio.sleep(0.2)


async def test_a_running_consumer_picks_up_a_stored_document_without_a_restart(
    aws: Aws, ready: Settings, server: Server
) -> None:
    stop = asyncio.Event()
    run = ready.model_copy(update={"port": None, "pipelines_reload": 0.2})
    task = asyncio.create_task(consume(run, stop))
    try:
        line = orjson.dumps({"service": "api", "message": "before"})
        assert (await post(server.url + "/ingest", line, "application/x-ndjson"))[0] == 200
        await wait_for_table(aws, ready.bucket, "logs")
        async with aws_clients("dynamodb") as clients:
            await store_document(clients.dynamodb, ready.lease_table, ROUTES)
        await asyncio.sleep(1.0)  # a few reload intervals and worker rounds
        line = orjson.dumps({"service": "api", "message": "after"})
        assert (await post(server.url + "/ingest", line, "application/x-ndjson"))[0] == 200
        await wait_for_table(aws, ready.bucket, "api")
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
