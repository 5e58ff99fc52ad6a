"""``tideway demo``: the whole path on one machine against the embedded moto server.

Starts moto on loopback, runs setup, serve and consume in this process, ships generated
logs over real HTTP, waits until every line is in S3, reads the Parquet back with
pyarrow.dataset and prints a report; the last line is one JSON object.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp
import orjson
import pyarrow.compute as pc
import pyarrow.dataset as ds
from pyarrow import fs

from service.compaction import run_compaction
from service.consume.runner import consume
from service.errors import SettingsError
from service.ingest.server import serve
from service.local import free_port, moto_server
from service.loggen import log_records
from service.resources import setup
from service.settings import Settings, iceberg_catalog_properties
from service.sink.iceberg import catalog_properties, open_catalog
from service.telemetry.logs import setup_logging

log = logging.getLogger(__name__)
BATCH_LINES = 500
CONCURRENCY = 8


def demo_lines(count: int) -> list[bytes]:
    """Generated lines, each tagged with ``demo_id`` so the report can find every one."""
    # Event times over the last six hours, so they fall inside the event-time window
    # (a fixed date would drift out of it and every line would take its arrival time).
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=6)
    records = log_records(count, base=base)
    return [orjson.dumps({**rec, "demo_id": i}) for i, rec in enumerate(records)]


async def ship(url: str, lines: list[bytes]) -> int:
    """POST the lines as NDJSON (every other batch gzip); return lines acknowledged."""
    gate = asyncio.Semaphore(CONCURRENCY)
    accepted = 0

    async def one(session: aiohttp.ClientSession, index: int, batch: list[bytes]) -> None:
        nonlocal accepted
        body = b"\n".join(batch) + b"\n"
        headers = {"Content-Type": "application/x-ndjson"}
        if index % 2:
            body, headers["Content-Encoding"] = gzip.compress(body, 1), "gzip"
        async with gate:
            for attempt in range(20):
                async with session.post(url, data=body, headers=headers) as resp:
                    answer = await resp.json()
                    if resp.status == 200:
                        accepted += int(answer["accepted"])
                        return
                    if resp.status not in (429, 503):
                        raise RuntimeError(f"ingest refused a batch: {resp.status} {answer}")
                await asyncio.sleep(0.2 * (attempt + 1))
            raise RuntimeError("ingest kept answering 503")

    async with aiohttp.ClientSession() as session, asyncio.TaskGroup() as tg:
        for i in range(0, len(lines), BATCH_LINES):
            tg.create_task(one(session, i // BATCH_LINES, lines[i : i + BATCH_LINES]))
    return accepted


def read_back(endpoint: str, settings: Settings) -> tuple[Any, int, int]:
    """(table, files, bytes) of everything under logs/, read with hive partitioning."""
    url = urlparse(endpoint)
    s3 = fs.S3FileSystem(
        endpoint_override=url.netloc,
        scheme="https" if url.scheme == "https" else "http",
        region="us-east-1",
        access_key="testing",
        secret_key="testing",
    )
    base = f"{settings.bucket}/{settings.prefix}logs"
    infos = [i for i in s3.get_file_info(fs.FileSelector(base, recursive=True)) if i.is_file]
    dataset = ds.dataset(base, filesystem=s3, format="parquet", partitioning="hive")
    return dataset.to_table(), len(infos), sum(i.size for i in infos)


def read_back_iceberg(settings: Settings, s3_endpoint: str) -> tuple[Any, int, int, int]:
    """(table, files, bytes, snapshots) as a pyiceberg scan of the table sees them, with
    ``dt`` and ``hour`` derived from ``timestamp`` for the report."""
    props = catalog_properties(
        iceberg_catalog_properties(settings), s3_endpoint=s3_endpoint, region="us-east-1"
    )
    table = open_catalog(props).load_table(settings.iceberg_table)
    scan = table.scan()
    tasks = list(scan.plan_files())
    rows = scan.to_arrow()
    stamps = rows.column("timestamp")
    rows = rows.append_column("dt", pc.strftime(stamps, "%Y-%m-%d"))
    rows = rows.append_column("hour", pc.strftime(stamps, "%H"))
    size = sum(t.file.file_size_in_bytes for t in tasks)
    return rows, len(tasks), size, len(table.snapshots())


async def run_demo(
    config: Path | None, records: int, stop: asyncio.Event, table_format: str = "hive"
) -> int:
    started = time.monotonic()
    with moto_server() as endpoint, tempfile.TemporaryDirectory() as scratch:
        iceberg: dict[str, Any] = {}
        if table_format == "iceberg":  # an embedded SQLite catalog, the warehouse in moto's S3
            iceberg = {
                "table_format": "iceberg",
                "iceberg_catalog": "sql",
                "iceberg_catalog_uri": f"sqlite:///{scratch}/catalog.db",
            }
        try:
            settings = Settings.load(
                config,
                stream="tideway-demo",
                bucket="tideway-demo",
                flush_max_age=2.0,
                idle_wait=0.25,
                lease_duration=5.0,
                port=free_port(),
                grpc_port=0,  # the demo ships over HTTP; 4317 may be a local collector's
                host="127.0.0.1",
                shard_count=2,
                emf_interval=0.0,  # stdout carries the report; EMF lines would garble it
                **iceberg,
            )
        except SettingsError as exc:
            print(f"tideway demo: {exc}")
            return 2
        setup_logging(settings.log_level if config else "WARNING")
        await setup(settings)
        lines = demo_lines(records)
        consume_settings = settings.model_copy(update={"port": free_port()})
        consume_stop = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            serve_stop = asyncio.Event()
            bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            tg.create_task(serve(settings, serve_stop, bound))
            consumer = tg.create_task(consume(consume_settings, consume_stop))
            port = await bound
            sent = await ship(f"http://127.0.0.1:{port}/ingest", lines)
            serve_stop.set()
            await _wait_landed(consume_settings, sent, stop, deadline=120 + records / 200)
            consume_stop.set()
            await consumer
        note = None
        if iceberg:
            # The demo's lines span the last six hours: compact the closed ones, then read
            # back (the report's lost/duplicated counts are taken after the rewrite).
            done = await run_compaction(settings, older_than=0)
            back = await asyncio.to_thread(read_back_iceberg, settings, endpoint)
            table, files, bytes_out, snapshots = back
            note = (
                f"iceberg: {table.num_rows} rows read back through a pyiceberg scan"
                f" ({snapshots} snapshots); compaction rewrote {done['files_before']} files"
                f" of {done['partitions']} closed partitions into {done['files_after']}"
            )
        else:
            table, files, bytes_out = read_back(endpoint, settings)
    seconds = time.monotonic() - started
    return report(table, lines, sent, files, bytes_out, seconds=seconds, note=note)


async def _wait_landed(
    settings: Settings, expected: int, stop: asyncio.Event, deadline: float
) -> None:
    """Poll the consumer's /metrics until it has written ``expected`` rows (or time runs out)."""
    url = f"http://127.0.0.1:{settings.port}/metrics"
    end = time.monotonic() + deadline
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < end and not stop.is_set():
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as resp:
                    text = await resp.text()
                rows = [
                    ln for ln in text.splitlines() if ln.startswith("tideway_rows_written_total ")
                ]
                if rows and float(rows[0].split()[1]) >= expected:
                    return
            await asyncio.sleep(0.5)


def report(
    table: Any,
    lines: list[bytes],
    sent: int,
    files: int,
    bytes_out: int,
    *,
    seconds: float,
    note: str | None = None,
) -> int:
    ids = Counter(orjson.loads(a)["demo_id"] for a in table.column("attributes").to_pylist() if a)
    lineage = Counter(
        zip(
            *(
                table.column(c).to_pylist()
                for c in ("kinesis_shard_id", "kinesis_sequence_number", "kinesis_sub_sequence")
            ),
            strict=True,
        )
    )
    lost = sum(1 for i in range(len(lines)) if i not in ids)
    duplicated = sum(c - 1 for c in ids.values() if c > 1) + sum(
        c - 1 for c in lineage.values() if c > 1
    )
    services = Counter(table.column("service").to_pylist())
    partitions = len(
        set(zip(table.column("dt").to_pylist(), table.column("hour").to_pylist(), strict=True))
    )
    levels = Counter(pc.fill_null(table.column("severity_text"), "-").to_pylist())
    bytes_in = sum(len(line) + 1 for line in lines)
    print("Tideway demo: HTTP -> Kinesis -> Parquet on S3 (moto on loopback)")
    print(
        f"  sent {sent} lines ({bytes_in / 1e6:.1f} MB NDJSON), landed {table.num_rows} rows in {files} files "
        f"({bytes_out / 1e6:.2f} MB Parquet, {bytes_in / max(1, bytes_out):.1f}x smaller)"
    )
    print(
        f"  lost {lost}, duplicated {duplicated}; {partitions} hour partitions; services {dict(sorted(services.items()))}"
    )
    print(f"  levels {dict(levels.most_common(6))}; {seconds:.1f} s")
    if note is not None:
        print(f"  {note}")
    print(
        json.dumps(
            {
                "sent": sent,
                "landed": table.num_rows,
                "lost": lost,
                "duplicated": duplicated,
                "files": files,
                "bytes_in": bytes_in,
                "bytes_out": bytes_out,
                "seconds": round(seconds, 2),
                "table_format": "hive" if note is None else "iceberg",
            }
        )
    )
    return 0 if lost == 0 and duplicated == 0 and sent == len(lines) else 1
