"""The pipeline document stored in the lease table, picked up by running consumers (I/O).

``tideway pipelines put FILE`` validates a document and stores it in the item
``config#pipelines`` of the lease table (and, for the history the console shows, in an
item of its own, ``config#pipelines#<ms>#<version>``). With ``TIDEWAY_PIPELINES_RELOAD`` (seconds) set, a
consumer reads that item at start (a bad one fails the start, in one line) and every that
many seconds in its worker round; a changed document that loads is used by every flush
planned after it, one that does not is refused in one logged line and the last good one
stays. A flush already planned keeps its document: the intent pins it (docs/pipelines.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.aws import aws_clients
from service.consume.leases import CONFIG_PREFIX
from service.errors import SettingsError
from service.pipeline.config import PipelineConfigError, load_pipelines
from service.pipeline.engine import Pipelines
from service.settings import Settings

log = logging.getLogger(__name__)
PIPELINES_KEY = CONFIG_PREFIX + "pipelines"
VERSIONS_PREFIX = PIPELINES_KEY + "#"  # config#pipelines#<ms>#<version>: every version stored


async def stored_document(dynamodb: Any, table: str) -> str | None:
    """The stored pipeline document (consistent read); None when none was stored."""
    item = await dynamodb.get_item(
        TableName=table, Key={"shard_id": {"S": PIPELINES_KEY}}, ConsistentRead=True
    )
    document = item.get("Item", {}).get("document", {}).get("S")
    return None if document is None else str(document)


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """One document ever stored, kept in its own item beside the current one."""

    stored_at_ms: int
    version: str
    document: str


async def store_document(dynamodb: Any, table: str, document: str) -> str:
    """Validate ``document`` (PipelineConfigError, one line) and store it, as the current
    document and as an item of its own under VERSIONS_PREFIX (the history); its version."""
    pipelines = load_pipelines(document)
    stored_at = int(time.time() * 1000)
    history = f"{VERSIONS_PREFIX}{stored_at:013d}#{pipelines.version}"
    for key in (PIPELINES_KEY, history):  # the current one first: it is what consumers read
        await dynamodb.put_item(
            TableName=table,
            Item={
                "shard_id": {"S": key},
                "document": {"S": document},
                "version": {"S": pipelines.version},
                "stored_at": {"N": str(stored_at)},
            },
        )
    return pipelines.version


async def stored_versions(dynamodb: Any, table: str) -> list[StoredVersion]:
    """Every stored document, newest first (one Scan of the lease table, page by page)."""
    kwargs: dict[str, Any] = {
        "TableName": table,
        "ConsistentRead": True,
        "FilterExpression": "begins_with(shard_id, :p)",
        "ExpressionAttributeValues": {":p": {"S": VERSIONS_PREFIX}},
    }
    found: list[StoredVersion] = []
    while True:
        page = await dynamodb.scan(**kwargs)
        found.extend(
            StoredVersion(int(i["stored_at"]["N"]), i["version"]["S"], i["document"]["S"])
            for i in page.get("Items", [])
        )
        if "LastEvaluatedKey" not in page:
            return sorted(found, key=lambda v: -v.stored_at_ms)
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


async def pipelines_command(settings: Settings, action: str, path: Path | None) -> str:
    """``tideway pipelines put FILE`` (validate, store, answer the version) or ``show``
    (the stored document); PipelineConfigError or SettingsError in one line."""
    async with aws_clients("dynamodb") as aws:
        if action == "show":
            text = await stored_document(aws.dynamodb, settings.lease_table)
            return "(no stored pipeline document)" if text is None else text
        if path is None:
            raise SettingsError("tideway pipelines put: give the document's file")
        try:
            document = await asyncio.to_thread(path.read_text, encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"tideway pipelines put: {path}: {exc}") from None
        version = await store_document(aws.dynamodb, settings.lease_table, document)
        return f"stored pipeline document version {version}"


class LivePipelines:
    """The pipelines flushes plan with: the stored document's once read, else ``fallback``
    (TIDEWAY_PIPELINES, or none)."""

    def __init__(
        self, dynamodb: Any, table: str, interval: float, fallback: Pipelines | None
    ) -> None:
        self._ddb, self._table, self.interval = dynamodb, table, interval
        self.current = fallback
        self._seen: str | None = None
        self._due = 0.0

    async def start(self) -> None:
        """Read the stored document; SettingsError (one line) when it does not load."""
        text = await stored_document(self._ddb, self._table)
        if text is None:
            return
        try:
            self.current = load_pipelines(text)
        except PipelineConfigError as exc:
            raise SettingsError(
                f"stored pipeline document (lease table {self._table}) is invalid: {exc}"
            ) from None
        self._seen = text

    async def refresh_if_due(self, now: float) -> None:
        """Read the stored document when ``interval`` has passed (loop time ``now``); adopt
        a changed one that loads, refuse (logged once) one that does not."""
        if now < self._due:
            return
        self._due = now + self.interval
        text = await stored_document(self._ddb, self._table)
        if text is None or text == self._seen:
            return
        self._seen = text
        try:
            pipelines = load_pipelines(text)
        except PipelineConfigError as exc:
            refused = str(exc)
        else:
            self.current = pipelines
            log.info("pipelines reloaded", extra={"version": pipelines.version})
            return
        kept = None if self.current is None else self.current.version
        log.error(  # one line, not a traceback: the document is the user's to fix
            "pipeline document refused; keeping the last good one",
            extra={"error": refused, "version": kept},
        )
