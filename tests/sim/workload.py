"""The producer model: records with known line ids put straight into the Kinesis model.

Version 2 envelopes (service.envelope, named by producer id, per-producer sequence and
creation time as service/ingest/packer.py seals them) of a few lines, plain NDJSON records
(a producer without identity), and a few corrupt envelopes that must land as dead letters.
Every line's message is its id, so what landed can be matched to what was put, whatever
partition or file it went to.

The producer half of exactly once: an envelope's put may be applied while its answer is
lost (profile ``lost_put``); the producer then re-sends the same bytes with the same
partition key, soon (0.05-2 s), late (5-30 s, ``late_resend``) or very late (60-200 s,
``very_late_resend``), maybe after a reshard (``reshard_after_lost_put``), until one answer
arrives. Each applied copy is a record of
its own (``group`` names the first); the lines are acknowledged once and must land once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from service.envelope import MAGIC, EnvelopeRecord, encode
from tests.sim.kinesis import KinesisModel

SERVICES = ("api", "web")


@dataclass
class PutRecord:
    shard_id: str
    seq: int
    kind: str  # envelope | ndjson | corrupt
    line_ids: list[str]
    group: tuple[str, int] | None = None  # a re-sent copy: the first copy's (shard, seq)


@dataclass
class Workload:
    seed: int
    kinesis: KinesisModel
    records: int = 80
    put: dict[tuple[str, int], PutRecord] = field(default_factory=dict)
    profile: Any = None  # tests.sim.faults.Profile: lost_put, late_resend, ...
    note: Callable[[float, str, str], None] | None = None  # the injector's schedule
    reshard: Callable[[], None] | None = None
    faults_until: float = 0.0

    def __post_init__(self) -> None:
        self.rng = random.Random(f"workload-{self.seed}")
        self._line = 0
        # Its own generator, so the records drawn are the same with or without losses.
        self.producer_rng = random.Random(f"producer-{self.seed}")
        self.producers = [self.producer_rng.randbytes(16) for _ in range(2)]
        self.next_seq = dict.fromkeys(self.producers, 0)
        self.resends: list[asyncio.Task[None]] = []
        self.resent = 0

    def _lines(self, n: int) -> tuple[list[str], bytes]:
        ids, lines = [], []
        for _ in range(n):
            self._line += 1
            line_id = f"line-{self._line:06d}"
            event = self.kinesis.wall() - self.rng.uniform(0, 1.5 * 3600)
            ids.append(line_id)
            lines.append(
                orjson.dumps(
                    {
                        "timestamp": datetime.fromtimestamp(event, UTC).isoformat(),
                        "service": self.rng.choice(SERVICES),
                        "level": self.rng.choice(("info", "warn", "error")),
                        "message": line_id,
                    }
                )
            )
        return ids, b"\n".join(lines)

    def _record(self) -> tuple[str, list[str], bytes]:
        roll = self.rng.random()
        if roll < 0.05:
            return "corrupt", [], MAGIC + bytes(self.rng.randbytes(12))
        ids, payload = self._lines(self.rng.randint(1, 4))
        if roll < 0.7:
            producer = self.producers[self.rng.randrange(len(self.producers))]
            self.next_seq[producer] += 1
            now_us = int(self.kinesis.wall() * 1e6)
            body = EnvelopeRecord(
                payload,
                len(ids),
                now_us,
                source="sim",
                producer_id=producer,
                producer_seq=self.next_seq[producer],
                created_us=now_us,
            )
            return "envelope", ids, encode(body)
        return "ndjson", ids, payload + b"\n"

    def put_one(self) -> None:
        kind, ids, data = self._record()
        key = f"pk-{self.rng.randrange(1 << 30)}"
        sid, seq = self.kinesis.put(data, key)
        self.put[(sid, seq)] = PutRecord(sid, seq, kind, ids)
        if kind == "envelope" and self._answer_lost():
            self._lost((sid, seq), data, key, ids)

    def _answer_lost(self) -> bool:
        p = self.profile
        if p is None or not p.lost_put:
            return False
        loop = asyncio.get_running_loop()
        return loop.time() < self.faults_until and self.producer_rng.random() < p.lost_put

    def _lost(self, first: tuple[str, int], data: bytes, key: str, ids: list[str]) -> None:
        """The put at ``first`` was applied but its answer lost: re-send the same bytes."""
        p, rng = self.profile, self.producer_rng
        late = rng.random() < p.late_resend
        delay = rng.uniform(5.0, 30.0) if late else rng.uniform(0.05, 2.0)
        kind = "producer.late_resend" if late else "producer.resend"
        if p.very_late_resend and late and rng.random() < p.very_late_resend:
            delay = rng.uniform(60.0, 200.0)
            kind = "producer.very_late_resend"
        loop = asyncio.get_running_loop()
        if self.note is not None:
            text = f"producer: answer lost for {first[0]}/{first[1]} ({ids[0]}..), re-send"
            self.note(loop.time(), f"{text} in {delay:.2f}s", "producer.lost_answer")
        if self.reshard is not None and rng.random() < p.reshard_after_lost_put:
            self.reshard()
            if self.note is not None:
                self.note(loop.time(), "producer: reshard before the re-send", "producer.reshard")
        self.resends.append(
            loop.create_task(self._resend(first, data, key, ids, delay=delay, kind=kind))
        )

    async def _resend(
        self,
        first: tuple[str, int],
        data: bytes,
        key: str,
        ids: list[str],
        *,
        delay: float,
        kind: str,
    ) -> None:
        await asyncio.sleep(delay)
        sid, seq = self.kinesis.put(data, key)
        self.resent += 1
        self.put[(sid, seq)] = PutRecord(sid, seq, "envelope", ids, group=first)
        if self.note is not None:
            self.note(asyncio.get_running_loop().time(), f"producer: re-sent as {sid}/{seq}", kind)
        if self._answer_lost():
            self._lost(first, data, key, ids)

    async def run(self, until: float) -> None:
        """Put ``records`` records at random moments before virtual time ``until``."""
        loop = asyncio.get_running_loop()
        left = self.records
        while left > 0:  # bursts, so readers have a backlog when faults strike
            await asyncio.sleep(self.rng.uniform(0, 2 * until * 4 / self.records))
            if loop.time() >= until:
                break
            for _ in range(min(left, self.rng.randint(1, 7))):
                self.put_one()
                left -= 1
        while left > 0:
            self.put_one()
            left -= 1
        while self.resends:  # every put answered at last
            await self.resends.pop(0)
