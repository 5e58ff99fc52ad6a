"""The producer model: records with known line ids put straight into the Kinesis model.

Envelopes (service.envelope) of a few lines, plain NDJSON records, and a few corrupt
envelopes that must land as dead letters. Every line's message is its id, so what landed
can be matched to what was put, whatever partition or file it went to.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime

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


@dataclass
class Workload:
    seed: int
    kinesis: KinesisModel
    records: int = 80
    put: dict[tuple[str, int], PutRecord] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(f"workload-{self.seed}")
        self._line = 0

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
            body = EnvelopeRecord(payload, len(ids), int(self.kinesis.wall() * 1e6), source="sim")
            return "envelope", ids, encode(body)
        return "ndjson", ids, payload + b"\n"

    def put_one(self) -> None:
        kind, ids, data = self._record()
        sid, seq = self.kinesis.put(data, f"pk-{self.rng.randrange(1 << 30)}")
        self.put[(sid, seq)] = PutRecord(sid, seq, kind, ids)

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
