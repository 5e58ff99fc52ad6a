"""The lean PutRecords client answers as the aiobotocore client does, against the AWS
emulator: records land on the shards its answer names, errors carry the same code and
status."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from service.aws import aws_clients
from service.ingest.kinesis_put import KinesisPutRecords, error_response
from service.settings import Settings
from tests.conftest import Aws
from tests.ingest_support import stream_records

# Two hash keys, one at each end of the hash space: the two shards of the test stream.
_LOW, _HIGH = str(1), str(2**128 - 2)


async def test_records_land_on_the_shards_the_answer_names(aws: Aws, ready: Settings) -> None:
    records = [
        {"Data": b"low \x00\xff", "PartitionKey": "a", "ExplicitHashKey": _LOW},
        {"Data": b"high" * 3000, "PartitionKey": "b", "ExplicitHashKey": _HIGH},
    ]
    async with aws_clients("kinesis") as clients:
        async with KinesisPutRecords(clients.kinesis, clients.session) as lean:
            answer = await lean.put_records(StreamName=ready.stream, Records=records)
        direct = await clients.kinesis.put_records(StreamName=ready.stream, Records=records)
    assert answer["FailedRecordCount"] == 0
    lean_shards = [entry["ShardId"] for entry in answer["Records"]]
    assert lean_shards == [entry["ShardId"] for entry in direct["Records"]]
    assert lean_shards[0] != lean_shards[1]
    stored = stream_records(aws, ready.stream)
    for record, shard in zip(records, lean_shards, strict=True):
        assert stored[shard].count(record["Data"]) == 2  # once by each client


async def test_a_missing_stream_is_the_same_client_error(ready: Settings) -> None:
    records = [{"Data": b"x", "PartitionKey": "a", "ExplicitHashKey": _LOW}]
    async with aws_clients("kinesis") as clients:
        async with KinesisPutRecords(clients.kinesis, clients.session) as lean:
            with pytest.raises(ClientError) as ours:
                await lean.put_records(StreamName="no-such-stream", Records=records)
        with pytest.raises(ClientError) as botocore:
            await clients.kinesis.put_records(StreamName="no-such-stream", Records=records)
    for exc in (ours.value, botocore.value):
        assert exc.response["Error"]["Code"] == "ResourceNotFoundException"
        assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert ours.value.operation_name == "PutRecords"


def test_error_codes_are_read_as_botocore_reads_them() -> None:
    body = b'{"__type": "com.amazonaws.kinesis#ProvisionedThroughputExceededException",'
    body += b' "message": "slow down"}'
    error = error_response(400, body, "", "r1")
    assert error["Error"] == {
        "Code": "ProvisionedThroughputExceededException",
        "Message": "slow down",
    }
    assert error["ResponseMetadata"] == {"HTTPStatusCode": 400, "RequestId": "r1"}
    header_only = error_response(400, b"", "ThrottlingException:http://internal.amazon.com", "")
    assert header_only["Error"]["Code"] == "ThrottlingException"
    proxy = error_response(502, b"<html>Bad Gateway</html>", "", "")
    assert proxy["Error"]["Code"] == "502"
    assert proxy["ResponseMetadata"]["HTTPStatusCode"] == 502
