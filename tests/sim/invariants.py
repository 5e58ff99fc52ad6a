"""What must hold after every schedule, checked against the models (not the consumer's
own view): every record put lands exactly once, checkpoints are never ahead of S3,
objects are never rewritten with other bytes, fenced fields are written only by the
owner, and no healthy worker has its leases taken."""

from __future__ import annotations

import gzip
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

import orjson

from service.sink.parquet import decode_parquet
from tests.sim import node as adapter

if TYPE_CHECKING:
    from tests.sim.world import Simulation

Lineage = tuple[str, int]  # (shard, sequence number) of a Kinesis record


def _landed(
    sim: Simulation,
) -> tuple[dict[str, list[tuple[Lineage, int, int]]], dict[Lineage, list[int]]]:
    """Rows by line id -> [(record, sub-sequence, first write index)], dead letters by record."""
    rows: dict[str, list[tuple[Lineage, int, int]]] = defaultdict(list)
    dead: dict[Lineage, list[int]] = defaultdict(list)
    data = _table_files(sim) if sim.settings.table_format == "iceberg" else None
    for key, body in sorted(sim.s3.objects.items()):
        index = sim.s3.first_written[key]
        if key.endswith(".parquet") and (data is None or key in data):
            table = decode_parquet(
                body,
                [
                    "message",
                    "kinesis_shard_id",
                    "kinesis_sequence_number",
                    "kinesis_sub_sequence",
                ],
            ).to_pydict()
            for msg, sid, seq, sub in zip(
                table["message"],
                table["kinesis_shard_id"],
                table["kinesis_sequence_number"],
                table["kinesis_sub_sequence"],
                strict=True,
            ):
                rows[msg].append(((sid, int(seq)), sub, index))
        elif key.endswith(".ndjson.gz"):
            for line in gzip.decompress(body).splitlines():
                d = orjson.loads(line)
                dead[(d["kinesis_shard_id"], int(d["kinesis_sequence_number"]))].append(index)
    return rows, dead


def _table_files(sim: Simulation) -> set[str]:
    """The keys of the data files the Iceberg table's current snapshot holds (a scan's
    plan): with a table, a row is landed when its file is in the table, whatever else S3
    holds (uploads of a flush another owner committed)."""
    table = adapter.open_iceberg(sim.settings).load_table(sim.settings.iceberg_table)
    prefix = f"s3://{sim.settings.bucket}/"
    return {t.file.file_path.removeprefix(prefix) for t in table.scan().plan_files()}


def check(sim: Simulation) -> list[str]:
    out: list[str] = [f"S3 object {r}" for r in sim.s3.rewrites]
    if sim.settings.table_format == "iceberg":
        missing = sorted(_table_files(sim) - set(sim.s3.objects))
        if missing:
            out.append(f"the table names {len(missing)} files S3 lacks, e.g. {missing[0]}")
    rows, dead = _landed(sim)
    put = sim.workload.put
    # A re-sent envelope's copies form one group, named by its first copy: its lines were
    # acknowledged once and must land once, from any copy.
    groups: dict[Lineage, list[Lineage]] = defaultdict(list)
    for lineage, rec in sorted(put.items()):
        groups[rec.group or lineage].append(lineage)
    expected = {line: rec for rec in put.values() for line in rec.line_ids}
    # When each record was wholly in S3 (global event index), or None; a copy dropped as
    # already landed counts as written when its group was.
    landed_at: dict[Lineage, int | None] = {}
    lost: list[str] = []
    dup: list[str] = []
    for lineage, copies in sorted(groups.items()):
        rec = put[lineage]
        if rec.kind == "corrupt":
            letters = dead.get(lineage, [])
            if len(letters) != 1:
                (lost if not letters else dup).append(f"dead letter {lineage} x{len(letters)}")
            landed_at[lineage] = min(letters) if letters else None
            continue
        when: int | None = -1
        for line in rec.line_ids:
            hits = rows.get(line, [])
            if len(hits) != 1:
                copied = f" ({len(copies)} copies put)" if len(copies) > 1 else ""
                (lost if not hits else dup).append(f"{line} of {lineage} x{len(hits)}{copied}")
            wrong = [h for h in hits if h[0] not in copies]
            if wrong:
                out.append(f"{line} landed with lineage {wrong[0][0]}, put as {copies}")
            first = min((h[2] for h in hits), default=None)
            when = None if first is None or when is None else max(when, first)
        for copy in copies:
            landed_at[copy] = when
    if lost:
        out.append(f"LOST {len(lost)}: {lost[:5]}")
    if dup:
        out.append(f"DUPLICATED {len(dup)}: {dup[:5]}")
    unknown = sorted(set(rows) - set(expected))
    if unknown:
        out.append(f"rows nobody put: {unknown[:5]}")
    keys = Counter((r[0][0], r[0][1], r[1]) for hits in rows.values() for r in hits)
    repeated = [k for k, n in keys.items() if n > 1]
    if repeated:
        out.append(f"lineage key not unique: {len(repeated)} keys, e.g. {repeated[0]}")
    out += _checkpoints(sim, landed_at)
    out += _fencing(sim)
    return out


def _checkpoints(sim: Simulation, landed_at: dict[Lineage, int | None]) -> list[str]:
    out = []
    by_shard: dict[str, list[int]] = defaultdict(list)
    for sid, seq in sim.workload.put:
        by_shard[sid].append(seq)
    last: dict[str, str] = {}
    for index, t, node, key, before, after in sim.dynamo.writes:
        cp = _s(after, adapter.CHECKPOINT)
        if after is None or cp is None or cp == _s(before, adapter.CHECKPOINT):
            continue
        shard = sim.kinesis.shards.get(key)
        if shard is None:
            continue
        if cp == adapter.SHARD_END:
            covered = by_shard[key]
            if not shard.closed:
                out.append(f"{t:.3f} {node} checkpointed SHARD_END on open {key}")
        elif cp.isdigit():
            covered = [seq for seq in by_shard[key] if seq <= int(cp)]
            prev = last.get(key)
            if prev == adapter.SHARD_END or (prev and prev.isdigit() and int(prev) > int(cp)):
                out.append(f"{t:.3f} {node} moved the checkpoint of {key} back: {prev} -> {cp}")
        else:
            continue
        last[key] = cp
        missing = [s for s in covered if (landed_at.get((key, s)) or 10**12) > index]
        if missing:
            out.append(
                f"{t:.3f} {node} checkpointed {key} at {cp} ahead of S3:"
                f" {len(missing)} records not yet written (first {missing[0]})"
            )
    return out


def _fencing(sim: Simulation) -> list[str]:
    out = []
    lease = adapter.LEASE_DURATION
    for _index, t, node, key, before, after in sim.dynamo.writes:
        if before is None or after is None or key.startswith(adapter.WORKER_PREFIX):
            continue
        owner_before, owner_after = _s(before, adapter.OWNER), _s(after, adapter.OWNER)
        changed = [f for f in adapter.FENCED_FIELDS if _s(before, f) != _s(after, f)]
        if changed and not (owner_before == node == owner_after):
            out.append(f"{t:.3f} {node} wrote {changed} of {key} owned by {owner_before}")
        if owner_before and owner_after == node and owner_before != node:
            victim = sim.endpoints.get(owner_before)
            if victim is not None and _healthy(sim, owner_before, t, 2 * lease):
                out.append(
                    f"{t:.3f} {node} took {key} from {owner_before}, alive and healthy"
                    f" (skew {victim.clock.skew:+.1f}s vs {sim.endpoints[node].clock.skew:+.1f}s)"
                )
    return out


def _healthy(sim: Simulation, name: str, t: float, window: float) -> bool:
    """Not crashed, not paused, not stopping, and no fault injected on its calls lately."""
    member = sim.members[name]
    if member.endpoint.dead or member.stopping_at is not None:
        return False
    return t - sim.injector.last_fault.get(name, -1e9) > window


def _s(item: dict[str, Any] | None, name: str) -> str | None:
    if not item or name not in item:
        return None
    value = item[name]
    return str(value.get("S", value.get("N")))
