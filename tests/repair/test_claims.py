"""Repair claims in the lease table: finished ones expire through the table's TTL, one in
progress never does (its heartbeat keeps moving the expiry), and a lost answer to the
claim's own take or release is not mistaken for another run's move."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from service.aws import aws_clients
from service.consume.leases import TTL_ATTRIBUTE
from service.repair.claims import CLAIM_TTL, ClaimTable, text
from service.settings import Settings
from tests.conftest import Aws
from tests.faultproxy import FaultProxy, Rule


def expires_in(item: dict[str, Any]) -> float:
    return float(text(item, TTL_ATTRIBUTE) or 0) - time.time()


async def test_setup_makes_the_lease_table_expire_items_by_their_ttl_attribute(
    aws: Aws, ready: Settings
) -> None:
    ttl = aws.client("dynamodb").describe_time_to_live(TableName=ready.lease_table)
    described = ttl["TimeToLiveDescription"]
    assert (described["TimeToLiveStatus"], described["AttributeName"]) == ("ENABLED", TTL_ATTRIBUTE)


async def test_a_claim_expires_only_ttl_after_its_last_write(aws: Aws, ready: Settings) -> None:
    """Taken, beating and released, the claim's expiry stays CLAIM_TTL (30 days) ahead of
    its last write: no claim in progress can expire under the operator."""
    async with aws_clients("dynamodb") as clients:
        claims = ClaimTable(clients.dynamodb, ready.lease_table, "run-1", lease_duration=1.0)
        key = ClaimTable.item_key("redrive", "dead-letter/dt=2026-12-01/x.ndjson.gz")
        claim = await claims.take(key)
        assert CLAIM_TTL - 60 < expires_in(claim.item) <= CLAIM_TTL
        async with claims.holding(claim):
            before = await claims.get(key)
            await asyncio.sleep(0.5)  # a few heartbeats
            beating = await claims.get(key)
        assert before is not None and beating is not None
        assert int(text(beating, "beats") or 0) > int(text(before, "beats") or 0)
        assert expires_in(beating) >= expires_in(before) - 1
        await claims.update(claim, {"done": {"S": "deleted"}}, release=True)
        released = await claims.get(key)
    assert released is not None and "owner" not in released
    assert CLAIM_TTL - 60 < expires_in(released) <= CLAIM_TTL


def lost_update(marker: bytes) -> Rule:
    """The first UpdateItem whose body holds ``marker`` takes effect; its answer is lost."""
    return Rule(lambda t, body: t.endswith(".UpdateItem") and marker in body, "lost_answer", 1)


async def test_a_claim_whose_take_or_release_answer_was_lost_is_still_ours_then_free(
    aws: Aws, ready: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """botocore resends a take and a release whose answers were lost; each resend finds the
    condition false (it is done). The take is still this run's claim (epoch 1, not a
    takeover of itself a lease later) and the release is not a lost claim."""
    key = ClaimTable.item_key("replay", "side/", "shardId-000000000000")
    with FaultProxy(aws.endpoint) as proxy:
        take = proxy.add(lost_update(b"attribute_not_exists(#o)"))
        release = proxy.add(lost_update(b"REMOVE #o"))
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", proxy.url)
        async with aws_clients("dynamodb") as clients:
            claims = ClaimTable(clients.dynamodb, ready.lease_table, "run-1", lease_duration=2.0)
            claim = await claims.take(key)
            assert claim.epoch == 1
            await claims.renew(claim)
            assert claims.fresh(claim)
            await claims.update(claim, {"finished": {"BOOL": True}}, release=True)
            item = await claims.get(key)
    assert (take.hits, release.hits) == (1, 1)
    assert item is not None and "owner" not in item and "finished" in item
