"""``tideway replay --into NAMESPACE.TABLE`` with TIDEWAY_TABLE_FORMAT=iceberg: the side
Iceberg table a replay commits to (I/O around the consumer's own table and commit code).

The side table is made like the live one (``tideway setup``'s ``ensure_iceberg_table``: the
live table's columns and partition spec), at ``{prefix}replay/{table}/logs``, and each of
the replay's flushes is committed through the consumer's ``TableRouter`` under the
shard's watermark in that table (docs/tables.md), so a rebuilt intent whose files are in
the table already is not committed twice.
"""

from __future__ import annotations

import zlib
from typing import Any

from service.consume.context import table_committer
from service.errors import TidewayError
from service.resources import ensure_iceberg_table
from service.settings import Settings
from service.sink.iceberg_tables import TableRouter


def names_table(into: str) -> bool:
    """``--into`` names an Iceberg table (``namespace.table``), not a key prefix."""
    namespace, dot, name = into.partition(".")
    return "/" not in into and bool(dot and namespace and name)


def check_table(settings: Settings, into: str) -> None:
    """TidewayError (one line) for a side table that cannot be replayed into."""
    if settings.table_format != "iceberg":
        raise TidewayError(
            f"replay: --into {into} names a table, but TIDEWAY_TABLE_FORMAT is"
            f" {settings.table_format}; give a key prefix such as 'backfill/'"
        )
    if into == settings.iceberg_table:
        raise TidewayError(
            f"replay: --into {into} is TIDEWAY_ICEBERG_TABLE, the live table; choose a side table"
        )


def side_settings(settings: Settings, into: str) -> Settings:
    """The settings of the side table: its files under ``{prefix}replay/{into}/``."""
    prefix = f"{settings.prefix}replay/{into}/"
    return settings.model_copy(update={"prefix": prefix, "iceberg_table": into})


async def side_table(settings: Settings, into: str, s3: Any) -> tuple[str, TableRouter]:
    """Create the side table if missing; its files' key prefix and its committer."""
    side = side_settings(settings, into)
    await ensure_iceberg_table(s3, side)
    return side.prefix, await table_committer(side, s3, zlib.crc32(into.encode()))
