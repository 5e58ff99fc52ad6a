"""Running compiled pipelines over a flush's table: match, parse, transform, redact, drop,
sample, route (pure, columnar; DESIGN §12).

``Pipelines.routes`` splits a table into one table per destination. Every row goes to the
first pipeline whose ``match`` holds, or to the default table; inside a pipeline only
``drop`` and ``sample`` remove rows, and each output row carries its input position, so the
caller can re-attach what it keeps aside (the rows' lineage). Same table + same document ->
same output, row for row (sampling hashes the lineage key, never draws at random).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from service.pipeline.condition import Condition
from service.pipeline.declared import declare
from service.pipeline.parsers.base import one_chunk
from service.pipeline.transform import PARSE_ERROR, Step

DEFAULT_TABLE = "logs"
VERSION_COLUMN = "pipeline_version"
# The records' Kinesis arrival times, a working column the writer adds for parsers that
# read them (an RFC 3164 stamp's year) and removes before anything is written.
ARRIVAL_COLUMN = "_arrival"
# Columns no step may change: the lineage (re-attached by the writer from the records), the
# partition inputs, and the writer's working columns.
LINEAGE_COLUMNS = frozenset(
    (
        "observed_timestamp",
        "source",
        "log_group",
        "log_stream",
        "kinesis_shard_id",
        "kinesis_sequence_number",
        "kinesis_sub_sequence",
    )
)
FIXED_COLUMNS = LINEAGE_COLUMNS | {
    "timestamp",
    "service",
    "attributes",
    "_hour",
    "_service",
    ARRIVAL_COLUMN,
}
# Canonical text columns that set and hash may rewrite (they stay strings).
TEXT_COLUMNS = frozenset(("severity_text", "host", "message", "trace_id", "span_id"))
# Names a parsed field cannot take: the writer's working columns, hive partition keys (a
# reader would see them twice) and the columns pipelines add.
_TAKEN = frozenset(("_hour", "_service", "dt", "hour", VERSION_COLUMN, PARSE_ERROR))
NOT_REDACTED = LINEAGE_COLUMNS | {"service", "_service", VERSION_COLUMN, ARRIVAL_COLUMN}


class ParseResult(Protocol):
    """What a parser returns (``service.pipeline.parsers``)."""

    @property
    def columns(self) -> Mapping[str, pa.Array[Any]]: ...

    @property
    def error(self) -> pa.Array[Any]: ...


Parser = Callable[["pa.Array[Any]"], ParseResult]
Redactor = Callable[["pa.Array[Any]", Sequence[str]], "pa.Array[Any]"]


@dataclass(frozen=True, slots=True)
class Pipeline:
    name: str
    table: str
    match: Condition | None = None
    parse: Parser | None = None
    steps: tuple[Step, ...] = ()
    redact: tuple[str, ...] = ()
    drop: Condition | None = None
    sample: int = 1
    columns: tuple[tuple[str, str], ...] = ()  # declared types (service.pipeline.declared)

    def run(self, table: pa.Table, redactor: Redactor | None) -> tuple[pa.Table, Any]:
        """The pipeline's output for its matched rows, and the mask of the rows it keeps."""
        if self.parse is not None:
            table = _parsed(table, self.parse)
        for step in self.steps:
            table = step.run(table)
        if self.redact and redactor is not None:
            for i, name in enumerate(table.schema.names):
                column = table.column(i)
                if name not in NOT_REDACTED and pa.types.is_string(column.type):
                    redacted = redactor(one_chunk(column), self.redact)
                    table = table.set_column(i, name, redacted)
        if self.columns:
            table = declare(table, self.columns)
        keep = np.ones(table.num_rows, dtype=bool)
        if self.drop is not None:
            keep &= ~self.drop.mask(table).to_numpy(zero_copy_only=False)
        if self.sample > 1:
            keep &= sampled(table, self.sample)
        if keep.all():  # nothing dropped: no copy of every column
            return table, keep
        return table.filter(pa.array(keep)), keep


@dataclass(frozen=True, slots=True)
class Route:
    """The rows one destination table gets: ``rows`` are their positions in the input, in
    the order of ``columns``' rows."""

    table: str
    rows: np.ndarray[Any, np.dtype[np.int64]]
    columns: pa.Table


@dataclass(frozen=True, eq=False)
class Pipelines:
    """A loaded document: its text (pinned in flush plans), version and pipelines."""

    document: str
    pipelines: tuple[Pipeline, ...]
    redactor: Redactor | None = None
    version: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha256(self.document.encode()).hexdigest()[:12]
        object.__setattr__(self, "version", digest)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pipelines) and other.document == self.document

    def __hash__(self) -> int:
        return hash(self.document)

    def lineage_read(self) -> frozenset[str]:
        """The lineage columns ``route`` reads (conditions, sampling): no step writes or
        redacts one, so a caller may leave the others out of the table it routes."""
        read: set[str] = set()
        for pipeline in self.pipelines:
            for condition in (pipeline.match, pipeline.drop):
                read |= set() if condition is None else condition.columns()
            if pipeline.sample > 1:
                read |= {"kinesis_shard_id", "kinesis_sequence_number", "kinesis_sub_sequence"}
        return frozenset(read & LINEAGE_COLUMNS)

    def reads_arrival(self) -> bool:
        """Whether ``route`` reads the working column ``_arrival`` (a parser that
        ``reads_arrival``, or a condition naming it): the caller adds it only then, else
        every route would take and drop a column nothing reads."""
        for pipeline in self.pipelines:
            if getattr(pipeline.parse, "reads_arrival", False):
                return True
            for condition in (pipeline.match, pipeline.drop):
                if condition is not None and ARRIVAL_COLUMN in condition.columns():
                    return True
        return False

    def routes(self, table: pa.Table, order: np.ndarray[Any, Any] | None = None) -> Iterator[Route]:
        """``table`` split by destination, in order of first appearance in the document
        (the default table last); tables several pipelines write are merged. Each
        destination's rows come in input order, or in ``order`` (a permutation of the rows:
        the writer's partition order, so its gathers become slices); a row's output never
        depends on the rows beside it, so the order changes where rows are, not what.

        Every row's pipeline is chosen first (the conditions read ``table`` only), then one
        destination is made at a time, when the caller asks for it: a caller that writes
        and lets go of each before the next holds one destination's columns beside the
        flush, not all of them, and the next one's take reuses their memory."""
        remaining = np.ones(table.num_rows, dtype=bool)
        chosen: dict[str, list[tuple[Pipeline | None, np.ndarray[Any, Any]]]] = {}
        for pipeline in self.pipelines:
            if not remaining.any():
                break
            matched = remaining.copy()
            if pipeline.match is not None:
                matched &= pipeline.match.mask(table).to_numpy(zero_copy_only=False)
            if not matched.any():
                continue
            remaining &= ~matched
            chosen.setdefault(pipeline.table, []).append((pipeline, matched))
        if remaining.any():
            chosen.setdefault(DEFAULT_TABLE, []).append((None, remaining))
        pick = _Picker(table, order)
        while chosen:
            name = next(iter(chosen))
            parts = [self._output(pipeline, mask, pick) for pipeline, mask in chosen.pop(name)]
            made = pick.merged(name, parts) if _rows(parts) else None
            del parts
            if made is not None:
                yield made
            del made  # before the next destination is made

    def _output(
        self, pipeline: Pipeline | None, mask: np.ndarray[Any, Any], pick: _Picker
    ) -> tuple[np.ndarray[Any, Any], pa.Table]:
        """The rows ``pipeline`` keeps of those in ``mask``, and its output for them (None:
        the default table's rows, as they are)."""
        rows, part = pick(mask)
        if pipeline is None:
            return rows, part
        out, keep = pipeline.run(part, self.redactor)
        version = pa.repeat(pa.scalar(self.version), out.num_rows)
        return rows[keep], out.append_column(VERSION_COLUMN, version)


class _Picker:
    """A mask's rows of a table, in input order or in a given order of the rows."""

    def __init__(self, table: pa.Table, order: np.ndarray[Any, Any] | None) -> None:
        self.table, self.order = table, order

    def __call__(self, mask: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], pa.Table]:
        """The rows where ``mask`` holds (input positions) and their table, in the order."""
        if self.order is None:
            return np.flatnonzero(mask), self.table.filter(pa.array(mask))
        rows = self.order[mask[self.order]]  # one take in place of the filter
        return rows, self.table.take(pa.array(rows, pa.int64()))

    def merged(self, name: str, parts: list[tuple[np.ndarray[Any, Any], pa.Table]]) -> Route:
        """One destination's parts as one table, its rows in the order."""
        if len(parts) == 1:
            return Route(name, parts[0][0].astype(np.int64), parts[0][1])
        rows = np.concatenate([r for r, _ in parts]).astype(np.int64)
        table = pa.concat_tables([t for _, t in parts], promote_options="permissive")
        key = rows
        if self.order is not None:  # each row's place in ``order``
            rank = np.empty(len(self.order), dtype=np.int64)
            rank[self.order] = np.arange(len(self.order), dtype=np.int64)
            key = rank[rows]
        at = np.argsort(key, kind="stable")
        return Route(name, rows[at], table.take(at))


def sampled(table: pa.Table, n: int) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """True for about 1 row in ``n``, chosen by a hash of the row's lineage key (shard,
    sequence number, sub-sequence): a replay of the same records keeps the same rows."""
    shards: Any = pc.dictionary_encode(table.column("kinesis_shard_id").combine_chunks())
    shard_keys = np.array(
        [
            int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little")
            for s in shards.dictionary.to_pylist()  # per distinct shard: one or two a flush
        ],
        dtype=np.uint64,
    )
    seq = table.column("kinesis_sequence_number").combine_chunks()
    low = pc.cast(pc.utf8_slice_codeunits(seq, -18), pa.uint64()).to_numpy(zero_copy_only=False)
    sub = table.column("kinesis_sub_sequence").to_numpy().astype(np.uint64)
    with np.errstate(over="ignore"):
        mixed = shard_keys[shards.indices.to_numpy()] ^ _mix(low) ^ _mix(sub + np.uint64(1))
        chosen: np.ndarray[Any, np.dtype[np.bool_]] = _mix(mixed) % np.uint64(n) == 0
    return chosen


def _mix(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """splitmix64's finaliser: every input bit reaches every output bit."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    out: np.ndarray[Any, Any] = x ^ (x >> np.uint64(31))
    return out


def _parsed(table: pa.Table, parser: Parser) -> pa.Table:
    """The table with the parsed fields as columns (``<name>_parsed`` where the name is
    taken) and ``parse_error``; an unparsed line keeps its raw message."""
    message = one_chunk(table.column("message"))
    if getattr(parser, "reads_arrival", False) and ARRIVAL_COLUMN in table.column_names:
        result = parser(message, one_chunk(table.column(ARRIVAL_COLUMN)))  # type: ignore[call-arg]
    else:
        result = parser(message)
    names = set(table.schema.names)  # not column_names per field: it makes a Field a column
    for name, values in result.columns.items():
        column = name
        while column in names or column in _TAKEN:
            column = f"{column}_parsed"
        table = table.append_column(column, values)
        names.add(column)
    return table.append_column(PARSE_ERROR, pc.cast(result.error, pa.string()))


def _rows(parts: list[tuple[np.ndarray[Any, Any], pa.Table]]) -> int:
    return sum(len(rows) for rows, _ in parts)
