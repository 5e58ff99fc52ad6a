"""Repair claims in the lease table: finished ones expire through the table's TTL, one in
progress never does (its heartbeat keeps moving the expiry), and a lost answer to the
claim's own take or release is not mistaken for another run's move."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from service.aws import aws_clients
from service.consume.leases import TTL_ATTRIBUTE
from service.repair.claims import CLAIM_TTL, ClaimTable, text
from service.settings import Settings
from tests.conftest import Aws


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
