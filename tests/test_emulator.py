"""The embedded emulator keeps the per-call atomicity Kinesis and DynamoDB promise: the
fault suite (two serve processes, a consumer fleet) depends on it, and so does the demo.
moto alone loses concurrently put records and lets two conditional updates both win."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import Aws


@pytest.fixture
def switch_often() -> Iterator[None]:
    """Thread switches every microsecond: a race that needs one switch mid-call shows up
    in a few hundred calls instead of one in a fault-suite run."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def _threads(count: int, work: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=work, args=(t,)) for t in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_concurrent_put_records_keep_every_acknowledged_record(
    aws: Aws, switch_often: None
) -> None:
    if aws.kind != "moto":
        pytest.skip("checks the embedded moto server")
    aws.client("kinesis").create_stream(StreamName="race", ShardCount=1)
    aws.client("kinesis").get_waiter("stream_exists").wait(StreamName="race")
    acked: list[bytes] = []
    lock = threading.Lock()

    def put(t: int) -> None:
        kinesis = aws.client("kinesis")
        for i in range(40):
            data = [f"{t}-{i}-{j}".encode() for j in range(5)]
            resp = kinesis.put_records(
                StreamName="race", Records=[{"Data": d, "PartitionKey": "k"} for d in data]
            )
            with lock:
                acked.extend(
                    d for d, r in zip(data, resp["Records"], strict=True) if "ErrorCode" not in r
                )

    _threads(6, put)
    kinesis = aws.client("kinesis")
    shard = kinesis.list_shards(StreamName="race")["Shards"][0]["ShardId"]
    it = kinesis.get_shard_iterator(
        StreamName="race", ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    stored: list[bytes] = []
    while it:
        page = kinesis.get_records(ShardIterator=it, Limit=10_000)
        if not page["Records"]:
            break
        stored.extend(r["Data"] for r in page["Records"])
        it = page.get("NextShardIterator")
    assert len(acked) == 6 * 40 * 5
    assert sorted(stored) == sorted(acked)


def test_one_conditional_update_wins_each_item(aws: Aws, switch_often: None) -> None:
    if aws.kind != "moto":
        pytest.skip("checks the embedded moto server")
    ddb = aws.client("dynamodb")
    ddb.create_table(
        TableName="race",
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    wins: list[int] = []
    lock = threading.Lock()

    def claim(t: int) -> None:
        client = aws.client("dynamodb")
        for i in range(100):
            try:
                client.update_item(
                    TableName="race",
                    Key={"k": {"S": f"lease-{i}"}},
                    UpdateExpression="SET owner_id = :me",
                    ConditionExpression="attribute_not_exists(owner_id)",
                    ExpressionAttributeValues={":me": {"S": str(t)}},
                )
            except client.exceptions.ConditionalCheckFailedException:
                continue
            with lock:
                wins.append(i)

    _threads(8, claim)
    assert sorted(wins) == list(range(100))
