"""The DynamoDB and S3 models answer the real LeaseTable and sink as moto does: the simulation's verdicts
are only as good as its models, so the lease table's own calls are replayed on both."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from service.consume.leases import SHARD_END, LeaseTable
from service.sink.s3 import delete_keys
from tests.conftest import Aws
from tests.sim.dynamodb import DynamoModel
from tests.sim.faults import PROFILES, Injector
from tests.sim.kinesis import KinesisModel
from tests.sim.loop import VirtualTimeLoop
from tests.sim.net import Endpoint, Network, Trace
from tests.sim.s3 import FakeS3, S3Model

TABLE = "sim-conformance"


class _Moto:
    """Async face of a boto3 client (the LeaseTable awaits aiobotocore calls)."""

    def __init__(self, client: Any) -> None:
        self._c = client

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        call = getattr(self._c, name)

        async def invoke(**kw: Any) -> Any:
            resp = dict(call(**kw))
            resp.pop("ResponseMetadata", None)
            resp.pop("ConsumedCapacity", None)
            return resp

        return invoke


class _Model:
    def __init__(self) -> None:
        self.m = DynamoModel(TABLE, "shard_id")
        self.m.events = lambda: (0, 0.0)

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        async def invoke(**kw: Any) -> Any:
            method = getattr(self.m, name)
            if name == "scan":
                return method(None, **kw)
            if name in ("put_item", "update_item", "delete_item"):
                return method("node", **kw)
            return method(**kw)

        return invoke


async def _story(table: LeaseTable) -> list[Any]:
    """Every fenced operation of the lease table, winning and losing."""
    out: list[Any] = []

    async def step(work: Awaitable[Any]) -> Any:
        try:
            result = await work
        except Exception as exc:
            out.append(("error", type(exc).__name__))
            return None
        out.append(("ok", result))
        return result

    await step(table.ensure_shard("s1", ()))
    await step(table.ensure_shard("s1", ("x",)))  # exists: left alone
    await step(table.ensure_shard("s2", ("s1",), "TRIM_HORIZON"))
    leases, _ = await table.scan()
    out.append(("scan", sorted(leases.items())))
    mine = await step(table.acquire(leases["s1"], "w1", start_at_ms=1000))
    await step(table.acquire(leases["s1"], "w2"))  # stale epoch: lost
    await step(table.write_intent("s1", "w1", mine.epoch, 10, 20, nbytes=7, dedupe=b"\x00i"))
    await step(table.write_intent("s1", "w2", mine.epoch, 10, 20))  # not the owner
    await step(table.write_intent("s1", "w1", mine.epoch + 1, 10, 20))  # old epoch
    leases, _ = await table.scan()  # the projection leaves the dedupe states out
    out.append(("scan", sorted(leases.items())))
    await step(table.checkpoint("s1", "w1", mine.epoch, 20, dedupe=b"\x01d\xff"))
    await step(table.heartbeat("w1", 3, 123456, leaving=True))
    await step(table.release("s1", "w1", mine.epoch))
    await step(table.release("s1", "w1", mine.epoch))  # twice: lost
    await step(table.dedupe_states(("s1", "s2", "nope")))
    again = (await table.scan())[0]["s1"]
    await step(table.acquire(again, "w2", start_at_ms=2000))  # start_at already set: kept
    await step(table.checkpoint("s1", "w2", again.epoch + 1, SHARD_END))
    await step(table.acquire((await table.scan())[0]["s1"], "w3"))  # finished: refused
    leases, beats = await table.scan()
    out.append(("scan", sorted(leases.items()), sorted(beats.items())))
    await step(table.remove_worker("w1"))
    out.append(("scan", sorted((await table.scan())[1].items())))
    return out


@pytest.mark.asyncio
async def test_dynamodb_model_answers_the_lease_table_as_moto_does(aws: Aws) -> None:
    client = aws.client("dynamodb")
    client.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "shard_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "shard_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    moto = await _story(LeaseTable(_Moto(client), TABLE))
    model = await _story(LeaseTable(_Model(), TABLE))
    assert model == moto
    assert ("error", "LeaseLostError") in model


def test_kinesis_model_ends_a_closed_shard_and_routes_new_records_to_children() -> None:
    wall = iter(range(1000, 2000))
    kinesis = KinesisModel("s", 1, lambda: float(next(wall)))
    parent, seq = kinesis.put(b"a", "k")
    children = kinesis.split(parent)
    child, later = kinesis.put(b"b", "k")
    assert child in children and later > seq
    it = kinesis.get_shard_iterator(
        StreamName="s", ShardId=parent, ShardIteratorType="TRIM_HORIZON"
    )
    page = kinesis.get_records({}, ShardIterator=it["ShardIterator"])
    assert [r["Data"] for r in page["Records"]] == [b"a"]
    assert "NextShardIterator" not in page and page["MillisBehindLatest"] == 0
    assert sorted(c["ShardId"] for c in page["ChildShards"]) == sorted(children)
    listed = {s["ShardId"]: s for s in kinesis.list_shards()["Shards"]}
    assert listed[parent]["SequenceNumberRange"]["EndingSequenceNumber"] == str(seq)
    assert listed[child]["ParentShardId"] == parent


async def _delete_story(s3: Any, bucket: str) -> list[Any]:
    """The sink's own DeleteObjects (service.sink.s3.delete_keys), then what is left."""
    for key in ("logs/a", "logs/b", "logs/c"):
        await s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    out: list[Any] = []
    await delete_keys(s3, bucket, ["logs/b", "logs/a", "logs/never-written"])
    out.append(sorted(o["Key"] for o in (await s3.list_objects_v2(Bucket=bucket))["Contents"]))
    loud = await s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "logs/c"}, {"Key": "logs/x"}]}
    )
    out.append(sorted(d["Key"] for d in loud["Deleted"]))
    out.append(loud.get("Errors", []))
    out.append((await s3.list_objects_v2(Bucket=bucket)).get("KeyCount"))
    return out


@pytest.mark.asyncio
async def test_s3_model_deletes_objects_as_moto_does(aws: Aws) -> None:
    client = aws.client("s3")
    client.create_bucket(Bucket="sim-conformance")
    model = S3Model("sim-conformance", events=lambda: (0, 0.0))

    class _ModelClient:
        async def put_object(self, **kw: Any) -> Any:
            return model.put_object("node", **kw)

        async def delete_objects(self, **kw: Any) -> Any:
            return model.delete_objects("node", lambda key: False, **kw)

        async def list_objects_v2(self, **kw: Any) -> Any:
            return model.list_objects_v2(**kw)

    moto = await _delete_story(_Moto(client), "sim-conformance")
    assert await _delete_story(_ModelClient(), "sim-conformance") == moto
    assert moto[0] == ["logs/c"] and moto[-1] == 0
    deleted = ["logs/a", "logs/b", "logs/never-written", "logs/c", "logs/x"]
    assert [d.key for d in model.deletes] == deleted


@pytest.mark.asyncio
async def test_s3_model_serves_ranged_gets_as_moto_does(aws: Aws) -> None:
    """The elected committer reads footers by ``Range: bytes=a-b`` (sink/footers.py)."""
    client = aws.client("s3")
    client.create_bucket(Bucket="sim-ranges")
    model = S3Model("sim-ranges", events=lambda: (0, 0.0))
    body = bytes(range(256)) * 4
    client.put_object(Bucket="sim-ranges", Key="k", Body=body)
    model.put_object("node", Bucket="sim-ranges", Key="k", Body=body)
    for first, last in ((0, 0), (1000, 1023), (900, 5000), (17, 300)):
        wanted = f"bytes={first}-{last}"
        moto = client.get_object(Bucket="sim-ranges", Key="k", Range=wanted)["Body"].read()
        ours = model.get_object(Bucket="sim-ranges", Key="k", Range=wanted)
        assert await ours["Body"].read() == moto == body[first : last + 1]


@pytest.mark.parametrize(("pause", "landed"), [(9.0, True), (11.0, False)])
def test_s3_model_refuses_an_upload_that_arrives_after_its_signature_expired(
    pause: float, landed: bool
) -> None:
    """As S3 refuses a SigV4 request 15 minutes after its X-Amz-Date: a node paused between
    signing (the call's start) and sending lands its PutObject only within the validity."""
    loop = VirtualTimeLoop()
    net = Network(loop, Injector(0, PROFILES["calm"]), Trace())
    zombie = Endpoint("zombie", pause_countdown=1, pause_length=pause)
    model = S3Model("b", events=lambda: (0, loop.time()), signature_validity=10.0)

    async def put() -> str:
        try:
            await FakeS3(model, net, zombie).put_object(Bucket="b", Key="k", Body=b"late")
        except ClientError as exc:
            return str(exc.response["Error"]["Code"])
        return "ok"

    try:
        answer = loop.run_until_complete(put())
    finally:
        loop.close()
    assert answer == ("ok" if landed else "RequestTimeTooSkewed")
    assert ("k" in model.objects) is landed
