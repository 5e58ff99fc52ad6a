"""Prometheus metrics of Iceberg commits (DESIGN §6, §11; docs/telemetry.md), registered
beside the consumer's own. Telemetry sits below the sink: it reads a commit's outcome by its
shape (the sink's ``CommitStats`` fits), never its type. No labels: totals per worker."""

from __future__ import annotations

from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

COMMIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
FLUSH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
# How a handed-off flush got into the table (consume/handoff.py): by the elected committer
# with this owner's objects, by another attempt of the range, or by the owner itself after
# the deadline. A closed set.
HANDOFF_OUTCOMES = ("added", "present", "fallback")


class CommitOutcome(Protocol):
    """One batch's commit, as the committer reports it."""

    @property
    def commits(self) -> int: ...
    @property
    def lost_races(self) -> int: ...
    @property
    def files(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    @property
    def columns_added(self) -> int: ...
    @property
    def files_converted(self) -> int: ...
    @property
    def seconds(self) -> float: ...
    @property
    def given_up(self) -> int: ...
    @property
    def flushes(self) -> int: ...


class IcebergMetrics:
    """Counters of every table's commits made by this worker."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.commits = Counter(
            "tideway_iceberg_commits", "Snapshots added to Iceberg tables", registry=r
        )
        self.conflicts = Counter(
            "tideway_iceberg_commit_conflicts",
            "Commits refused because the table moved (each re-read and retried)",
            registry=r,
        )
        self.given_up = Counter(
            "tideway_iceberg_commits_given_up",
            "Batches that lost every retry (their flushes are replayed from the intent)",
            registry=r,
        )
        self.files = Counter(
            "tideway_iceberg_files_committed", "Data files added to Iceberg tables", registry=r
        )
        self.bytes = Counter(
            "tideway_iceberg_bytes_committed", "Bytes of the data files added", registry=r
        )
        self.columns_added = Counter(
            "tideway_iceberg_columns_added", "Columns Iceberg tables gained (evolution)", registry=r
        )
        self.files_converted = Counter(
            "tideway_iceberg_files_converted",
            "Files committed as a copy converted to the table's column types",
            registry=r,
        )
        self.seconds = Histogram(
            "tideway_iceberg_commit_duration_seconds",
            "From a batch's first commit attempt to the one that landed",
            buckets=COMMIT_BUCKETS,
            registry=r,
        )

        self.flushes_per_snapshot = Histogram(
            "tideway_iceberg_flushes_per_snapshot",
            "Flushes (one shard's range each) a snapshot added",
            buckets=FLUSH_BUCKETS,
            registry=r,
        )
        self.handoffs = Counter(
            "tideway_iceberg_handoffs",
            "Flushes handed to the elected committer, by how they got into the table",
            ["outcome"],
            registry=r,
        )
        for outcome in HANDOFF_OUTCOMES:
            self.handoffs.labels(outcome)
        self.handoff_wait = Histogram(
            "tideway_iceberg_handoff_wait_seconds",
            "From a flush's hand-off to its owner seeing it in the table",
            buckets=COMMIT_BUCKETS,
            registry=r,
        )
        self.committer_held = Gauge(
            "tideway_iceberg_committer_held",
            "1 while this worker is the elected committer of its tables",
            registry=r,
            multiprocess_mode="max",
        )

    def observe_handoff(self, outcome: str, seconds: float) -> None:
        """One handed-off flush's outcome (HANDOFF_OUTCOMES) and its owner's wait."""
        self.handoffs.labels(outcome if outcome in HANDOFF_OUTCOMES else "fallback").inc()
        self.handoff_wait.observe(seconds)

    def observe_held(self, held: bool) -> None:
        self.committer_held.set(1 if held else 0)

    def observe_commit(self, outcome: CommitOutcome) -> None:
        """Count one batch's outcome (called from the committer's thread)."""
        self.conflicts.inc(outcome.lost_races)
        self.given_up.inc(outcome.given_up)
        if not outcome.commits:
            return
        self.commits.inc(outcome.commits)
        self.files.inc(outcome.files)
        self.bytes.inc(outcome.bytes)
        self.columns_added.inc(outcome.columns_added)
        self.files_converted.inc(outcome.files_converted)
        self.seconds.observe(outcome.seconds)
        self.flushes_per_snapshot.observe(outcome.flushes / outcome.commits)
