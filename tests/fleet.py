"""Helpers for fleet and fault tests: ``tideway consume`` subprocesses, a steady producer of
envelope records with one unique id per line, and the exactly-once check on S3."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from service.envelope import EnvelopeError, EnvelopeRecord, encode
from service.envelope import decode as decode_envelope
from service.local import free_port
from service.settings import Settings
from tests.conftest import Aws, lineage_counts, read_dead_letters, read_table

TIDEWAY = str(Path(sys.executable).with_name("tideway"))
LINES_PER_RECORD = 4


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def events(self) -> list[dict[str, Any]]:
        """The worker's structured log lines (one JSON object each)."""
        out = []
        for raw in self.log_path.read_bytes().splitlines():
            if raw.startswith(b"{"):
                try:
                    out.append(orjson.loads(raw))
                except orjson.JSONDecodeError:
                    continue  # a line cut by SIGKILL
        return out


class Fleet:
    """Consumer subprocesses sharing one stream, bucket and lease table."""

    def __init__(
        self, aws: Aws, settings: Settings, logs: Path, *, endpoint: str | None = None, **env: str
    ) -> None:
        self.aws = aws
        self.settings = settings
        self.logs = logs
        self.endpoint = endpoint or aws.endpoint
        self.env = {
            "TIDEWAY_STREAM": settings.stream,
            "TIDEWAY_BUCKET": settings.bucket,
            "TIDEWAY_PREFIX": settings.prefix,
            "TIDEWAY_LEASE_TABLE": settings.lease_table,
            "TIDEWAY_LEASE_DURATION": "2",
            "TIDEWAY_FLUSH_MAX_AGE": "1",
            "TIDEWAY_IDLE_WAIT": "0.1",
            "TIDEWAY_HOST": "127.0.0.1",
            **env,
        }
        self.workers: dict[str, Worker] = {}
        self.retired: list[Worker] = []
        self._n = 0

    def start(
        self, name: str | None = None, *, endpoint: str | None = None, wait: bool = True
    ) -> Worker:
        """Start a worker; with ``wait``, return once its /readyz answers 200 (a first
        lease round done), so a signal sent next finds its handlers installed."""
        self._n += 1
        name = name or f"w{self._n}"
        port = free_port()
        log_path = self.logs / f"{name}.log"
        env = self.aws.env(
            **self.env,
            TIDEWAY_WORKER_ID=name,
            TIDEWAY_PORT=str(port),
            AWS_ENDPOINT_URL=endpoint or self.endpoint,
        )
        with log_path.open("ab") as out:
            proc = subprocess.Popen(
                [TIDEWAY, "consume"], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        worker = Worker(name, proc, log_path, port)
        self.workers[name] = worker
        if wait:
            # Generous: a process start (imports, catalog) took 60 s at a load average of 12
            # on 2 cores; never a measure of anything.
            wait_until(lambda: worker_ready(worker), 180, f"{name} to be ready", every=0.2)
        return worker

    def signal(self, worker: Worker, sig: signal.Signals) -> float:
        """Send ``sig``; return the wall-clock time it was sent."""
        sent = time.time()
        worker.proc.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            self._retire(worker, 60 if sig is signal.SIGTERM else 10)
        return sent

    def _retire(self, worker: Worker, timeout: float) -> None:
        code = worker.proc.wait(timeout)
        assert code in (0, -signal.SIGKILL), f"{worker.name} exited {code}"
        self.workers.pop(worker.name, None)
        self.retired.append(worker)

    def stop_all(self) -> None:
        for worker in list(self.workers.values()):
            worker.proc.send_signal(signal.SIGCONT)
            worker.proc.send_signal(signal.SIGTERM)
        for worker in list(self.workers.values()):
            self._retire(worker, 60)

    def all_workers(self) -> list[Worker]:
        return [*self.retired, *self.workers.values()]

    def events(self, message: str) -> list[dict[str, Any]]:
        """Every log event with ``message`` from every worker, each tagged with ``worker``."""
        out = []
        for worker in self.all_workers():
            out.extend(
                {**e, "worker": worker.name} for e in worker.events() if e.get("message") == message
            )
        return sorted(out, key=lambda e: e["time"])

    def close(self) -> None:
        for worker in self.workers.values():
            if worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait(10)

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def worker_ready(worker: Worker) -> bool:
    assert worker.proc.poll() is None, f"{worker.name} exited {worker.proc.returncode}"
    try:
        with urllib.request.urlopen(worker.url + "/readyz", timeout=2) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def log_time(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()


class Background:
    """``start(n)``: ``put`` ``n`` in the background from a thread, ``batch`` at a time every
    ``interval`` seconds; ``join`` waits for it, ``stop`` ends it early (both producers)."""

    batch: int
    interval: float
    _stop: threading.Event
    _thread: threading.Thread | None
    join_timeout = 120.0

    def put(self, n: int) -> None:
        raise NotImplementedError

    def start(self, records: int) -> None:
        self._stop.clear()

        def run() -> None:
            left = records
            while left > 0 and not self._stop.is_set():
                n = min(self.batch, left)
                self.put(n)
                left -= n
                time.sleep(self.interval)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(self.join_timeout if timeout is None else timeout)
            assert not self._thread.is_alive(), "producer did not finish"

    def stop(self) -> None:
        self._stop.set()
        self.join()


@dataclass
class Producer(Background):
    """Puts envelope records (LINES_PER_RECORD lines, each with a unique ``message`` id)
    from a thread; remembers every id sent and the highest sequence number per shard."""

    aws: Aws
    stream: str
    tag: str = "r"
    batch: int = 10  # records per PutRecords call
    interval: float = 0.1
    sent: list[str] = field(default_factory=list)
    tips: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _n: int = 0

    def put(self, records: int) -> None:
        """Put ``records`` records now (synchronously)."""
        kinesis = self.aws.client("kinesis")
        for start in range(0, records, self.batch):
            entries, ids = [], []
            for _ in range(min(self.batch, records - start)):
                self._n += 1
                uids = [f"{self.tag}-{self._n}-{j}" for j in range(LINES_PER_RECORD)]
                now = datetime.now().astimezone().isoformat()
                payload = b"\n".join(
                    orjson.dumps({"timestamp": now, "service": "faults", "message": u})
                    for u in uids
                )
                rec = EnvelopeRecord(payload, len(uids), time.time_ns() // 1000, source="faults")
                entries.append({"Data": encode(rec), "PartitionKey": f"pk-{self._n}"})
                ids.extend(uids)
            resp = kinesis.put_records(StreamName=self.stream, Records=entries)
            assert resp.get("FailedRecordCount", 0) == 0
            for r in resp["Records"]:
                seq = int(r["SequenceNumber"])
                self.tips[r["ShardId"]] = max(self.tips.get(r["ShardId"], 0), seq)
            self.sent.extend(ids)


def leases(aws: Aws, settings: Settings) -> dict[str, dict[str, Any]]:
    """The lease table as plain values: shard id -> {owner, epoch, checkpoint, intent}."""
    ddb = aws.client("dynamodb")
    out: dict[str, dict[str, Any]] = {}
    for page in ddb.get_paginator("scan").paginate(
        TableName=settings.lease_table, ConsistentRead=True
    ):
        for item in page["Items"]:
            sid = item["shard_id"]["S"]
            if sid.startswith(("worker#", "committer#")):
                continue
            out[sid] = {
                "owner": item.get("owner", {}).get("S"),
                "epoch": int(item.get("epoch", {"N": "0"})["N"]),
                "checkpoint": item.get("checkpoint", {}).get("S"),
                "intent": item.get("intent_last", {}).get("S"),
            }
    return out


def caught_up(aws: Aws, settings: Settings, tips: dict[str, int]) -> bool:
    """Every shard's checkpoint covers the last record put to it, with no open intent."""
    table = leases(aws, settings)
    for shard, tip in tips.items():
        lease = table.get(shard)
        if lease is None or lease["intent"] is not None:
            return False
        cp = lease["checkpoint"]
        if cp != "SHARD_END" and (cp is None or not cp.isdigit() or int(cp) < tip):
            return False
    return True


def wait_until(predicate: Any, timeout: float, what: str, every: float = 0.5) -> float:
    """Poll ``predicate`` until true; return the seconds it took (never asserted on)."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)
    return time.monotonic() - start


@dataclass
class Landed:
    sent: int
    rows: int
    lost: int
    duplicated: int
    lineage_duplicated: int
    dead_letters: int


def landed(aws: Aws, settings: Settings, sent: list[str]) -> Landed:
    """Compare the ids sent with the rows in the table (by id and by lineage key)."""
    table = read_table(aws, settings)
    messages = table.column("message").to_pylist() if table.num_rows else []
    counts: dict[str, int] = {}
    for m in messages:
        counts[m] = counts.get(m, 0) + 1
    want = set(sent)
    lineage = lineage_counts(table) if table.num_rows else {}
    return Landed(
        sent=len(sent),
        rows=table.num_rows,
        lost=len(want - set(counts)),
        duplicated=sum(c - 1 for c in counts.values()) + len(set(counts) - want),
        lineage_duplicated=sum(c - 1 for c in lineage.values()),
        dead_letters=len(read_dead_letters(aws, settings)),
    )


def assert_exactly_once(aws: Aws, settings: Settings, sent: list[str]) -> Landed:
    got = landed(aws, settings, sent)
    ok = (got.lost, got.duplicated, got.lineage_duplicated, got.dead_letters) == (0, 0, 0, 0)
    assert ok, f"{got}\n{where_lost(aws, settings, sent)}"
    assert got.rows == got.sent
    return got


def where_lost(aws: Aws, settings: Settings, sent: list[str]) -> str:
    """Where each lost line is in the stream (shard, sequence number, envelope identity)
    beside that shard's lease, or that it never reached the stream: tells a serve loss
    from a consume loss when the check fails."""
    table = read_table(aws, settings)
    have = set(table.column("message").to_pylist()) if table.num_rows else set()
    lost = set(sent) - have
    if not lost:
        return ""
    found: dict[str, str] = {}
    for sid, shard in _moto_stream(settings.stream).shards.items():
        for seq, rec in shard.records.items():
            try:
                env = decode_envelope(base64.b64decode(rec.data))
            except EnvelopeError:  # not ours: other producers in the stream
                continue
            for line in env.payload.splitlines():
                uid = orjson.loads(line).get("message")
                if uid in lost:
                    found[uid] = (
                        f"{sid} seq={seq} producer={env.producer_id.hex()[:8]}"
                        f"/{env.producer_seq} lines={env.line_count}"
                    )
    table_leases = leases(aws, settings)
    out = [f"lost {len(lost)}: {len(found)} in the stream, {len(lost) - len(found)} not"]
    out += [f"  {uid}: {found.get(uid, 'NOT IN STREAM')}" for uid in sorted(lost)]
    out += [f"  lease {sid}: {lease}" for sid, lease in sorted(table_leases.items())]
    return "\n".join(out)


def report(name: str, **values: Any) -> None:
    """Append one JSON line to the fault-suite report (TIDEWAY_FAULT_REPORT, if set)."""
    line = orjson.dumps({"scenario": name, **values}).decode()
    print(line)
    path = os.environ.get("TIDEWAY_FAULT_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


def report_run(
    name: str,
    sent: list[str],
    got: Landed,
    trials: int = 1,
    takeovers: list[float] | None = None,
    **extra: Any,
) -> None:
    """``report`` of one fault scenario: what was sent and what landed, the takeover times
    (signal to the new owner's first checkpoint) if any, then its own figures."""
    timing = {}
    if takeovers:
        timing = {
            "takeovers": len(takeovers),
            "takeover_p50": round(percentile(takeovers, 0.5), 2),
            "takeover_max": round(max(takeovers), 2),
        }
    report(
        name,
        records=len(sent) // LINES_PER_RECORD,
        lines=len(sent),
        trials=trials,
        lost=got.lost,
        duplicated=got.duplicated,
        **timing,
        **extra,
    )


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def takeover_times(fleet: Fleet, victim: str, at: float, shards: list[str]) -> list[float]:
    """Seconds from signalling ``victim`` (at ``at``) to each of ``shards`` being acquired
    by another worker, as the acquirers logged it."""
    first: dict[str, float] = {}
    for e in fleet.events("lease acquired"):
        if e["shard_id"] in shards and e["worker"] != victim and log_time(e) >= at:
            first.setdefault(e["shard_id"], log_time(e) - at)
    return list(first.values())


def checkpoint_times(fleet: Fleet, victim: str, at: float, shards: list[str]) -> list[float]:
    """Seconds from signalling ``victim`` (at ``at``) to each of ``shards``' first checkpoint
    by another worker (its first ``flushed`` line: logged once the checkpoint is written)."""
    first: dict[str, float] = {}
    for e in fleet.events("flushed"):
        if e["shard_id"] in shards and e["worker"] != victim and log_time(e) >= at:
            first.setdefault(e["shard_id"], log_time(e) - at)
    return list(first.values())


def committer_of(aws: Aws, settings: Settings) -> str | None:
    """The worker holding the Iceberg table's commits (the item ``committer#{table}``)."""
    item = (
        aws.client("dynamodb")
        .get_item(
            TableName=settings.lease_table,
            Key={"shard_id": {"S": f"committer#{settings.iceberg_table}"}},
            ConsistentRead=True,
        )
        .get("Item", {})
    )
    owner: str | None = item.get("owner", {}).get("S")
    return owner


def shards_of(aws: Aws, settings: Settings, owner: str) -> list[str]:
    return [s for s, lease in leases(aws, settings).items() if lease["owner"] == owner]


def _moto_stream(stream: str) -> Any:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.kinesis.models import kinesis_backends

    return kinesis_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].streams[stream]


def drop_merge_copies(stream: str, child: str) -> None:
    """Work around a moto quirk in-process: MergeShards copies both parents' records into
    the child (Kinesis does not; the parents keep them). Call right after the merge."""
    from collections import OrderedDict

    _moto_stream(stream).shards[child].records = OrderedDict()


def route_writes_to_open_shards(stream: str) -> None:
    """Work around a moto quirk in-process: PutRecords goes to the first shard whose hash
    range matches, closed or not, so after a reshard every write lands on a closed parent.
    Ordering open shards first makes writes after the reshard land on the children, as on
    Kinesis. Call only while nothing is producing."""
    s = _moto_stream(stream)
    s.shards = dict(sorted(s.shards.items(), key=lambda kv: not kv[1].is_open))
