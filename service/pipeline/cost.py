"""What running a document's pipelines holds during a flush, beside the flush itself (pure).

The consumer's memory budget is a hard bound (DESIGN §5), so a flush is charged for what
routing really holds: the table joined with its lineage (strings per row), each
pipeline's matched rows, parsed columns and redacted copies, and every destination's
table at once. Measured with ru_maxrss around plan_flush of 100,000 lines, against the
same flush without pipelines (docs/pipelines.md "Memory"): lines of ~425 bytes holding
JSON in ``message`` cost 1.3 more bytes per decoded byte with a ``match`` only, 1.55 with
``kv``, 1.7 with a ``regex`` parser, 1.35 with ``redact``, 4.45 with ``json``; lines of
~37 bytes cost ~260 more bytes per line routed, ~430 parsed by ``json``. A row goes
through one pipeline, so the dearest pipeline of the document decides.
"""

from __future__ import annotations

import tomllib
from functools import lru_cache

from service.pipeline.engine import Pipelines

ROUTING_PER_BYTE = 2  # the joined table, matched rows, columnar parsers, redaction
ROUTING_PER_LINE = 256  # lineage strings per row, pipeline_version, offsets
# Parsers that decode each line into Python objects (orjson): a dict per line, alive while
# the pipeline's columns are built.
OBJECT_PARSERS = frozenset(("json", "cloudtrail", "aws_waf"))
OBJECTS_PER_BYTE = 3
OBJECTS_PER_LINE = 192


def routing_cost(pipelines: Pipelines | None) -> tuple[int, int]:
    """(bytes per decoded byte, bytes per line) a flush holds for ``pipelines`` beyond its
    own working set; (0, 0) without pipelines."""
    if pipelines is None:
        return 0, 0
    return _cost(pipelines.document)


@lru_cache(maxsize=16)  # a worker sees one document at a time, a few across reloads
def _cost(document: str) -> tuple[int, int]:
    parsers = [p.get("parse") for p in tomllib.loads(document).get("pipeline", [])]
    if any(isinstance(name, str) and name in OBJECT_PARSERS for name in parsers):
        return ROUTING_PER_BYTE + OBJECTS_PER_BYTE, ROUTING_PER_LINE + OBJECTS_PER_LINE
    return ROUTING_PER_BYTE, ROUTING_PER_LINE
