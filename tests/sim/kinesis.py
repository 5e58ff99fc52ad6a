"""An in-process Kinesis Data Streams model with the answers real Kinesis may give.

Unlike moto (DESIGN §8) it ends a closed shard's iterator (NextShardIterator absent,
ChildShards named), and reshards move new writes to the children at once. Sequence numbers
are large integers that grow across the stream, compared as integers, sent as strings.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.sim.faults import client_error
from tests.sim.net import Endpoint, Network

MAX_HASH = 2**128 - 1
FIRST_SEQUENCE = 49_600_000_000_000_000_000_000_000_000_000_000_000_000_000  # 56 digits
ITERATOR_TTL = 300.0  # seconds: Kinesis expires a shard iterator after five minutes


@dataclass
class StoredRecord:
    seq: int
    data: bytes
    partition_key: str
    arrival: float  # true wall clock, seconds


@dataclass
class ModelShard:
    shard_id: str
    lo: int
    hi: int
    parents: tuple[str, ...] = ()
    records: list[StoredRecord] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    starting: int = 0
    ending: int | None = None  # set when closed by a reshard

    @property
    def closed(self) -> bool:
        return self.ending is not None


class KinesisModel:
    def __init__(self, stream: str, shard_count: int, wall: Any) -> None:
        self.stream = stream
        self.wall = wall  # () -> true wall clock seconds
        self.shards: dict[str, ModelShard] = {}
        self._seq = FIRST_SEQUENCE
        self._iterators: dict[str, tuple[str, int, float]] = {}
        self._listed: tuple[tuple[int, int], dict[str, Any]] | None = None
        self.late_pages = 0  # GetRecords pages cut before their shard closed, seen after
        step = (MAX_HASH + 1) // shard_count
        for i in range(shard_count):
            hi = MAX_HASH if i == shard_count - 1 else (i + 1) * step - 1
            self._new_shard(i * step, hi, ())

    def _next_seq(self) -> int:
        self._seq += 1_000_003  # gaps, as real sequence numbers have
        return self._seq

    def _new_shard(self, lo: int, hi: int, parents: tuple[str, ...]) -> ModelShard:
        sid = f"shardId-{len(self.shards):012d}"
        shard = ModelShard(sid, lo, hi, parents, starting=self._seq + 1)
        self.shards[sid] = shard
        return shard

    def open_shards(self) -> list[ModelShard]:
        return [s for s in self.shards.values() if not s.closed]

    # -- writes (the producer model; no faults) -----------------------------------------
    def put(self, data: bytes, partition_key: str) -> tuple[str, int]:
        h = int.from_bytes(hashlib.md5(partition_key.encode()).digest(), "big")
        shard = next(s for s in self.open_shards() if s.lo <= h <= s.hi)
        seq = self._next_seq()
        shard.records.append(StoredRecord(seq, data, partition_key, self.wall()))
        shard.seqs.append(seq)
        return shard.shard_id, seq

    def _close(self, shard: ModelShard) -> None:
        shard.ending = shard.seqs[-1] if shard.seqs else shard.starting

    def split(self, shard_id: str) -> list[str]:
        parent = self.shards[shard_id]
        mid = (parent.lo + parent.hi) // 2
        self._close(parent)
        a = self._new_shard(parent.lo, mid, (shard_id,))
        b = self._new_shard(mid + 1, parent.hi, (shard_id,))
        return [a.shard_id, b.shard_id]

    def merge(self, first: str, second: str) -> str:
        a, b = self.shards[first], self.shards[second]
        self._close(a)
        self._close(b)
        return self._new_shard(min(a.lo, b.lo), max(a.hi, b.hi), (first, second)).shard_id

    def adjacent_open_pairs(self) -> list[tuple[str, str]]:
        opened = sorted(self.open_shards(), key=lambda s: s.lo)
        return [(a.shard_id, b.shard_id) for a, b in itertools.pairwise(opened)]

    # -- API ------------------------------------------------------------------------------
    def list_shards(self) -> dict[str, Any]:
        key = (len(self.shards), sum(s.closed for s in self.shards.values()))
        if self._listed is None or self._listed[0] != key:
            self._listed = (key, self._list_shards())
        return {"Shards": [dict(s) for s in self._listed[1]["Shards"]]}

    def _list_shards(self) -> dict[str, Any]:
        out = []
        for s in self.shards.values():
            item: dict[str, Any] = {
                "ShardId": s.shard_id,
                "HashKeyRange": {"StartingHashKey": str(s.lo), "EndingHashKey": str(s.hi)},
                "SequenceNumberRange": {"StartingSequenceNumber": str(s.starting)},
            }
            if s.parents:
                item["ParentShardId"] = s.parents[0]
            if len(s.parents) > 1:
                item["AdjacentParentShardId"] = s.parents[1]
            if s.ending is not None:
                item["SequenceNumberRange"]["EndingSequenceNumber"] = str(s.ending)
            out.append(item)
        return {"Shards": out}

    def _shard(self, stream: str, shard_id: str, op: str) -> ModelShard:
        if stream != self.stream or shard_id not in self.shards:
            raise client_error("ResourceNotFoundException", 400, op, f"{shard_id} not found")
        return self.shards[shard_id]

    def get_shard_iterator(self, **kw: Any) -> dict[str, Any]:
        shard = self._shard(kw["StreamName"], kw["ShardId"], "GetShardIterator")
        kind = kw["ShardIteratorType"]
        if kind == "TRIM_HORIZON":
            index = 0
        elif kind == "LATEST":
            index = len(shard.seqs)
        elif kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
            seq = int(kw["StartingSequenceNumber"])
            if kind == "AT_SEQUENCE_NUMBER":
                index = bisect.bisect_left(shard.seqs, seq)
            else:
                index = bisect.bisect_right(shard.seqs, seq)
        elif kind == "AT_TIMESTAMP":
            ts = kw["Timestamp"].timestamp()
            index = next(
                (i for i, r in enumerate(shard.records) if r.arrival >= ts), len(shard.records)
            )
        else:
            raise client_error("InvalidArgumentException", 400, "GetShardIterator", kind)
        return {"ShardIterator": self._iterator(shard.shard_id, index)}

    def iterator_shard(self, token: str) -> str:
        return self._iterators[token][0]

    def _iterator(self, shard_id: str, index: int) -> str:
        token = f"it-{len(self._iterators)}-{shard_id}-{index}"
        self._iterators[token] = (shard_id, index, self.wall())
        return token

    def get_records(self, page: dict[str, Any], **kw: Any) -> dict[str, Any]:
        token = kw["ShardIterator"]
        if token not in self._iterators:
            raise client_error("InvalidArgumentException", 400, "GetRecords", "bad iterator")
        shard_id, index, issued = self._iterators[token]
        if page.get("expired") or self.wall() - issued > ITERATOR_TTL:
            raise client_error("ExpiredIteratorException", 400, "GetRecords", "expired")
        shard = self.shards[shard_id]
        limit = int(kw.get("Limit", 10000))
        if page.get("empty"):
            limit = 0
        elif page.get("short"):
            limit = min(limit, page["short"])
        chosen = shard.records[index : index + limit]
        end = index + len(chosen)
        resp: dict[str, Any] = {
            "Records": [
                {
                    "SequenceNumber": str(r.seq),
                    "ApproximateArrivalTimestamp": datetime.fromtimestamp(r.arrival, UTC),
                    "Data": r.data,
                    "PartitionKey": r.partition_key,
                }
                for r in chosen
            ]
        }
        behind = 0
        if end < len(shard.records):  # honest: records follow, so the lag is at least 1 ms
            behind = max(1, int((self.wall() - shard.records[end].arrival) * 1000))
        if not page.get("missing_lag"):
            resp["MillisBehindLatest"] = behind
        if shard.closed and end >= len(shard.records):
            resp["ChildShards"] = [
                {"ShardId": c.shard_id, "ParentShards": list(c.parents)}
                for c in self.shards.values()
                if shard_id in c.parents
            ]
        else:
            resp["NextShardIterator"] = self._iterator(shard_id, end)
        return resp


class FakeKinesis:
    """The aiobotocore Kinesis client calls the consumer makes, for one node."""

    def __init__(self, model: KinesisModel, net: Network, node: Endpoint) -> None:
        self._m, self._net, self._node = model, net, node

    async def list_shards(self, **kw: Any) -> dict[str, Any]:
        return await self._net.call(
            self._node, "kinesis", "list_shards", self._m.list_shards, write=False
        )

    async def get_shard_iterator(self, **kw: Any) -> dict[str, Any]:
        key = f"{kw['ShardId']} {kw['ShardIteratorType']} {kw.get('StartingSequenceNumber', '')}"
        return await self._net.call(
            self._node,
            "kinesis",
            "get_shard_iterator",
            lambda: self._m.get_shard_iterator(**kw),
            write=False,
            key=key,
        )

    async def get_records(self, **kw: Any) -> dict[str, Any]:
        injector = self._net.injector

        def apply() -> dict[str, Any]:
            page = injector.page()
            for name in page:
                text = f"{self._node.name} get_records {kw['ShardIterator']} {name}"
                injector.note(self._net.loop.time(), text, f"kinesis.{name}", self._node.name)
            return self._m.get_records(page, **kw)

        resp = await self._net.call(
            self._node, "kinesis", "get_records", apply, write=False, key=kw["ShardIterator"]
        )
        shard = self._m.shards[self._m.iterator_shard(kw["ShardIterator"])]
        if shard.closed and "NextShardIterator" in resp:
            # Cut while the shard was open, delivered after it closed (issue 14 item 2c).
            self._m.late_pages += 1
        return resp

    async def put_records(self, **kw: Any) -> dict[str, Any]:
        def apply() -> dict[str, Any]:
            out = []
            for r in kw["Records"]:
                sid, seq = self._m.put(r["Data"], r["PartitionKey"])
                out.append({"ShardId": sid, "SequenceNumber": str(seq)})
            return {"FailedRecordCount": 0, "Records": out}

        return await self._net.call(self._node, "kinesis", "put_records", apply, write=True)
