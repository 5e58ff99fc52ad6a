"""Lines through ``tideway serve`` for the fault suite: the same face as ``fleet.Producer``
(``put``, ``start``, ``join``, ``stop``, ``sent``, ``tips``), but every line is POSTed over
HTTP to real serve subprocesses, and a line counts as sent only once its request was
answered 200 (the promise starts there)."""

from __future__ import annotations

import signal
import subprocess
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from service.local import free_port
from service.settings import Settings
from tests.conftest import Aws
from tests.fleet import LINES_PER_RECORD, TIDEWAY, Background, wait_until


class ServeProducer(Background):
    """``serves`` serve processes (one worker each) on loopback, fed by a client thread that
    sends ``batch`` requests at once, LINES_PER_RECORD lines each, round robin."""

    join_timeout = 180.0

    def __init__(
        self,
        aws: Aws,
        settings: Settings,
        logs: Path,
        *,
        tag: str = "r",
        batch: int = 10,
        interval: float = 0.1,
        serves: int = 2,
        endpoint: str | None = None,
        **env: str,
    ) -> None:
        self.aws, self.stream, self.tag = aws, settings.stream, tag
        self.batch, self.interval = batch, interval
        self.sent: list[str] = []
        self.refused: list[str] = []  # lines of requests not answered 200: may land or not
        self._tips: dict[str, int] | None = None
        self._n = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(batch)
        self._procs: list[subprocess.Popen[bytes]] = []
        self.urls: list[str] = []
        for i in range(serves):
            port = free_port()
            proc_env = aws.env(
                TIDEWAY_STREAM=settings.stream,
                TIDEWAY_BUCKET=settings.bucket,
                TIDEWAY_LEASE_TABLE=settings.lease_table,
                TIDEWAY_HOST="127.0.0.1",
                TIDEWAY_PORT=str(port),
                TIDEWAY_GRPC_PORT="0",
                TIDEWAY_WORKERS="1",
                # Small records: several per PutRecords call, more hand-offs between them.
                TIDEWAY_RECORD_TARGET_BYTES="2048",
                AWS_ENDPOINT_URL=endpoint or aws.endpoint,
                **env,
            )
            with (logs / f"serve{i}.log").open("ab") as out:
                self._procs.append(
                    subprocess.Popen(
                        [TIDEWAY, "serve"], env=proc_env, stdout=out, stderr=subprocess.STDOUT
                    )
                )
            self.urls.append(f"http://127.0.0.1:{port}")

    def __enter__(self) -> ServeProducer:
        for url, proc in zip(self.urls, self._procs, strict=True):
            wait_until(lambda u=url, p=proc: _ready(u, p), 60, f"serve {url}", every=0.2)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(120)
        self._pool.shutdown()
        for proc in self._procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self._procs:
            proc.wait(60)

    def _post(self, n: int) -> None:
        uids = [f"{self.tag}-{n}-{j}" for j in range(LINES_PER_RECORD)]
        now = datetime.now().astimezone().isoformat()
        body = b"\n".join(
            orjson.dumps({"timestamp": now, "service": "faults", "message": u}) for u in uids
        )
        request = urllib.request.Request(
            self.urls[n % len(self.urls)] + "/ingest",
            data=body,
            headers={"Content-Type": "application/x-ndjson"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as resp:
                resp.read()
                ok = resp.status == 200
        except (OSError, urllib.error.URLError):
            ok = False
        with self._lock:
            (self.sent if ok else self.refused).extend(uids)

    def put(self, records: int) -> None:
        """Send ``records`` requests now, ``batch`` at a time; returns once all answered."""
        for start in range(0, records, self.batch):
            numbers = []
            for _ in range(min(self.batch, records - start)):
                self._n += 1
                numbers.append(self._n)
            list(self._pool.map(self._post, numbers))
            self._tips = None

    @property
    def tips(self) -> dict[str, int]:
        """The highest sequence number on each shard that holds records (read from the
        stream: serve does not say where its records went)."""
        if self._tips is None:
            self._tips = stream_tips(self.aws, self.stream)
        return self._tips


def _ready(url: str, proc: subprocess.Popen[bytes]) -> bool:
    assert proc.poll() is None, f"serve exited {proc.returncode}"
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def stream_tips(aws: Aws, stream: str) -> dict[str, int]:
    """Shard id -> last sequence number, for every shard with a record (moto: small streams)."""
    kinesis = aws.client("kinesis")
    tips: dict[str, int] = {}
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        sid = shard["ShardId"]
        it: Any = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=sid, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while it:
            page = kinesis.get_records(ShardIterator=it, Limit=10_000)
            if not page["Records"]:
                break
            tips[sid] = max(tips.get(sid, 0), *(int(r["SequenceNumber"]) for r in page["Records"]))
            it = page.get("NextShardIterator")
    return tips
