"""``tideway redrive`` against moto: dead letters that today's settings decode land once in
the table, the rest stay with today's reason, whatever runs at once or dies midway."""

from __future__ import annotations

import asyncio
import signal

import pytest

from service.aws import aws_clients
from service.consume.leases import LeaseTable
from service.errors import TidewayError
from service.repair.redrive import redrive
from service.settings import Settings
from tests.conftest import (
    Aws,
    drain,
    lineage_counts,
    object_keys,
    read_dead_letters,
    read_table,
)
from tests.repair.support import (
    SMALL_LIMIT,
    big_envelope,
    big_record,
    dead_letter_object,
    garbage_record,
    put_records,
    tideway_process,
)

SMALL = b'{"message": "small", "service": "api"}'


async def dead_lettered(aws: Aws, settings: Settings) -> Settings:
    """Three big records, two small ones and one garbage record, consumed under a small
    decoder limit: 2 rows land, 4 records are dead letters. Returns settings with a short
    lease (claims of killed runs expire quickly)."""
    records = [big_record("a"), SMALL, big_record("b"), garbage_record(), SMALL, big_record("c")]
    put_records(aws, settings, records)
    await drain(settings, max_decompressed_bytes=SMALL_LIMIT)
    assert read_table(aws, settings).num_rows == 2
    assert len(read_dead_letters(aws, settings)) == 4
    return settings.model_copy(update={"lease_duration": 2.0})


def assert_landed_once(aws: Aws, settings: Settings) -> None:
    """Every line of the big records is in the table exactly once; only the garbage record
    is still a dead letter, with the reason today's decoders give."""
    table = read_table(aws, settings)
    counts = lineage_counts(table)
    assert table.num_rows == 2 + 3 * 40
    assert set(counts.values()) == {1}
    messages = table.column("message").to_pylist()
    assert sum(m.startswith("b-") for m in messages) == 40
    dead = read_dead_letters(aws, settings)
    assert [d["reason"] for d in dead] == ["record is neither a known format nor UTF-8 text"]


async def test_redrive_lands_what_now_decodes_once_and_keeps_the_rest(
    aws: Aws, ready: Settings
) -> None:
    """A dead-letter object whose flush the consumer has not checkpointed (an intent is
    open at or below its range) waits; once checkpointed it is redriven. A rerun lands
    nothing new and leaves the record that still fails as it was."""
    settings = await dead_lettered(aws, ready)
    keys = object_keys(aws, settings.bucket, "dead-letter/")
    async with aws_clients("dynamodb") as clients:
        table = LeaseTable(clients.dynamodb, settings.lease_table)
        leases, _ = await table.scan()
        shard = sorted(leases)[0]
        lease = await table.acquire(leases[shard], "a-consumer")
        await table.write_intent(shard, "a-consumer", lease.epoch, 1, 1 << 40)
        partial = await redrive(settings)
        assert partial.skipped_unsettled == 1
        assert lease.checkpoint is not None
        await table.checkpoint(shard, "a-consumer", lease.epoch, lease.checkpoint)
    rest = await redrive(settings)
    assert partial.landed + rest.landed == 120
    assert (rest.still_dead, rest.skipped_unsettled) == (1, 0)
    assert_landed_once(aws, settings)
    again = await redrive(settings)
    assert (again.landed, again.still_dead) == (0, 1)  # the garbage record, left as it was
    assert_landed_once(aws, settings)
    gone = [k for k in keys if k not in object_keys(aws, settings.bucket, "dead-letter/")]
    typo = "dead-letter/dt=2026-12-01/no-such-object.ndjson.gz"
    named = await redrive(settings, keys=[*gone, typo])
    assert (named.skipped_already_done, named.missing) == (1, 1)


async def test_two_redrives_at_once_land_each_row_once(aws: Aws, ready: Settings) -> None:
    settings = await dead_lettered(aws, ready)
    first, second = await asyncio.gather(redrive(settings), redrive(settings))
    assert first.landed + second.landed == 120
    assert first.objects + first.skipped_already_done >= 1
    assert second.objects + second.skipped_already_done >= 1
    assert_landed_once(aws, settings)


async def test_redrives_killed_midway_and_rerun_land_each_row_once(
    aws: Aws, ready: Settings
) -> None:
    """Two runs are killed (SIGKILL): one after uploading the rows of one object, before
    rewriting it; one after rewriting the other object, before giving its claim up. The
    rerun takes both stale claims over and finishes them: each row lands once."""
    settings = await dead_lettered(aws, ready)
    first, second = object_keys(aws, settings.bucket, "dead-letter/")  # one per shard
    runs = [
        tideway_process(aws, settings, "redrive", "--keys", key, "--crash-after", step)
        for key, step in ((first, "upload"), (second, "rewrite"))
    ]
    for run in runs:
        _, err = run.communicate(timeout=60)
        assert run.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert len(read_table(aws, settings)) > 2  # the upload landed before the kill
    report = await redrive(settings)
    assert report.skipped_already_done == 1  # the rewritten object: only its release was left
    assert_landed_once(aws, settings)


async def test_redrive_refuses_a_key_outside_the_dead_letter_prefix(
    aws: Aws, ready: Settings
) -> None:
    with pytest.raises(TidewayError, match=r"^logs/x.parquet is not a dead-letter object \("):
        await redrive(ready, keys=["logs/x.parquet"])


async def test_envelope_copies_both_dead_lettered_land_once(aws: Aws, ready: Settings) -> None:
    """A producer re-sent an envelope (a lost answer) and a consumer too old for envelope v2
    dead-lettered both copies, in two flushes of the shard. Redriven by today's code, the
    envelope's lines land once: the later copy is a duplicate, as the live consumer drops
    it; a rerun lands nothing."""
    copy, other = big_envelope("resent", producer_seq=5), big_envelope("other", producer_seq=6)
    shard, s3 = "shardId-000000000000", aws.client("s3")
    for first, records in ((7, [(7, copy), (8, other)]), (12, [(12, copy)])):
        last = records[-1][0]
        key = f"dead-letter/dt=2026-12-01/{ready.stream}-{shard}-{first}-{last}.ndjson.gz"
        s3.put_object(Bucket=ready.bucket, Key=key, Body=dead_letter_object(shard, records))
    report = await redrive(ready)
    assert (report.landed, report.still_dead) == (80, 0)
    assert report.duplicates == 1
    table = read_table(aws, ready)
    messages = table.column("message").to_pylist()
    assert len(messages) == len(set(messages)) == 80
    assert set(table.column("kinesis_sequence_number").to_pylist()) == {"7", "8"}
    assert read_dead_letters(aws, ready) == []
    again = await redrive(ready)
    assert (again.landed, again.objects) == (0, 0)
    assert read_table(aws, ready).num_rows == 80
