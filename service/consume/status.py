"""The consumer's HTTP port (I/O): /healthz, /readyz, /metrics and /status (JSON: leases, lag)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.consume.sequence import Checkpoint, checkpoint_to_wire
from service.consume.worker import ConsumerWorker


def _wire(checkpoint: Checkpoint | None) -> str | None:
    # Sequence numbers are strings in JSON as on every wire: they exceed a double's 53 bits.
    return None if checkpoint is None else checkpoint_to_wire(checkpoint)


WORKER: web.AppKey[ConsumerWorker] = web.AppKey("worker", ConsumerWorker)


def status_view(worker: ConsumerWorker) -> dict[str, Any]:
    """The /status document: this worker, the fleet as of its last round, every shard."""
    st = worker.state
    running = worker.running
    owners: dict[str, int] = {}
    shards: dict[str, dict[str, Any]] = {}
    for sid in sorted(set(st.leases) | set(st.shards)):
        lease = st.leases.get(sid)
        info = st.shards.get(sid)
        view: dict[str, Any] = {
            "owner": lease.owner if lease else None,
            "epoch": lease.epoch if lease else None,
            "checkpoint": _wire(lease.checkpoint if lease else None),
            "intent": [_wire(lease.intent_first), _wire(lease.intent_last)]
            if lease and lease.intent_last is not None
            else None,
            "parents": list(lease.parents if lease else info.parents if info else ()),
            "closed": info.closed if info else None,
            "finished": lease.finished if lease else False,
            "assigned_to": st.assignment.get(sid),
        }
        if lease and lease.owner:
            owners[lease.owner] = owners.get(lease.owner, 0) + 1
        consumer = running.get(sid)
        if consumer is not None:
            reader = consumer.reader
            view["here"] = {
                "epoch": consumer.epoch,
                "millis_behind": consumer.millis_behind,
                "last_read": _wire(reader.last_sequence if reader else None),
                "checkpoint": _wire(consumer.checkpoint),
                "buffered_records": len(consumer.buffer.records) + len(consumer.buffer.dead),
                "buffered_bytes": consumer.buffer.size,
                "read_errors": dict(reader.errors) if reader else {},
            }
        shards[sid] = view
    return {
        "worker_id": st.worker_id,
        "leaving": st.leaving,
        "ready": worker.ready.is_set(),
        "live_workers": st.live_workers,
        "leaving_workers": st.leaving_workers,
        "lag_ms": worker.lag_ms,
        "owned": sorted(running),
        "leases_by_owner": dict(sorted(owners.items())),
        "rounds": st.rounds,
        "failed_rounds": st.failed_rounds,
        "last_error": st.last_error,
        "shards": shards,
        "time": datetime.now().astimezone().isoformat(),
    }


async def _status(request: web.Request) -> web.StreamResponse:
    return web.json_response(status_view(request.app[WORKER]))


async def _health(request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "ok"})


async def _ready(request: web.Request) -> web.StreamResponse:
    worker = request.app[WORKER]
    # Not ready before the first good round, while leaving (SIGTERM), or once the last
    # round failed (DynamoDB or Kinesis unreachable).
    ok = worker.ready.is_set() and not worker.state.leaving and not worker.state.last_round_failed
    return web.json_response({"ready": ok}, status=200 if ok else 503)


async def _metrics(request: web.Request) -> web.StreamResponse:
    registry = request.app[WORKER].ctx.metrics.registry
    return web.Response(
        body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def status_app(worker: ConsumerWorker) -> web.Application:
    app = web.Application()
    app[WORKER] = worker
    app.router.add_get("/healthz", _health)
    app.router.add_get("/readyz", _ready)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/status", _status)
    return app
