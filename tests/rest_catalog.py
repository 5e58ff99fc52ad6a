"""A small Iceberg REST catalog for tests: the REST protocol's table and namespace routes
that pyiceberg's RestCatalog calls, served over HTTP on loopback, with pyiceberg's own
request and response models, and pyiceberg's SQL catalog (SQLite) behind them for storage
and compare-and-swap commits (a requirement that no longer holds answers 409, as a real
REST catalog does).

Like Amazon S3 Tables it chooses every table's location itself, in its own warehouse
bucket (a fresh ``{warehouse}/{namespace}/{name}-{random}``), and refuses a create that
names a location (400). No views, renames, drops, credentials vending, auth or paging.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote

import orjson
from pyiceberg.catalog.rest import CreateTableRequest, TableResponse
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    NoSuchNamespaceError,
    NoSuchTableError,
    TableAlreadyExistsError,
)
from pyiceberg.table import CommitTableRequest
from pyiceberg.table.metadata import new_table_metadata
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

ERRORS: dict[type[Exception], int] = {
    NoSuchTableError: 404,
    NoSuchNamespaceError: 404,
    TableAlreadyExistsError: 409,
    NamespaceAlreadyExistsError: 409,
    CommitFailedException: 409,
}


class _Named:
    """What SqlCatalog.commit_table reads of the table it is given: its identifier."""

    def __init__(self, identifier: tuple[str, ...]) -> None:
        self._identifier = identifier

    def name(self) -> tuple[str, ...]:
        return self._identifier


class RestCatalogServer:
    """The routes, over ``sql`` (a SqlCatalog whose FileIO reaches the warehouse)."""

    def __init__(self, sql: SqlCatalog, warehouse: str) -> None:
        self.sql, self.warehouse = sql, warehouse.rstrip("/")
        self._lock = threading.Lock()  # one request at a time: SQLite, and simple to reason

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        with self._lock:
            try:
                status, body = self.route(request.method, request.path, request.get_data())
            except tuple(ERRORS) as exc:
                status = ERRORS[type(exc)]
                body = {"error": {"message": str(exc), "type": type(exc).__name__, "code": status}}
        data = b"" if body is None else orjson.dumps(body)
        return Response(data, status, content_type="application/json")(environ, start_response)

    def route(self, method: str, path: str, data: bytes) -> tuple[int, Any]:
        parts = [unquote(p) for p in path.strip("/").split("/")][1:]  # after "v1"
        if parts == ["config"]:
            return 200, {"defaults": {}, "overrides": {}}
        if parts == ["namespaces"] and method == "POST":
            doc = orjson.loads(data)
            self.sql.create_namespace(tuple(doc["namespace"]), doc.get("properties", {}))
            return 200, {"namespace": doc["namespace"], "properties": doc.get("properties", {})}
        if parts[:1] == ["namespaces"] and len(parts) == 2:
            props = self.sql.load_namespace_properties(parts[1])
            return (
                (204, None)
                if method == "HEAD"
                else (200, {"namespace": [parts[1]], "properties": props})
            )
        if parts[:1] == ["namespaces"] and parts[2:] == ["tables"]:
            if method == "POST":
                doc = orjson.loads(data)  # pyiceberg leaves out the fields it has none of
                for field in ("location", "partition-spec", "write-order"):
                    doc.setdefault(field, None)
                return self.create(parts[1], CreateTableRequest.model_validate(doc))
            names = self.sql.list_tables(parts[1])
            return 200, {"identifiers": [{"namespace": list(n[:-1]), "name": n[-1]} for n in names]}
        if parts[:1] == ["namespaces"] and parts[2:3] == ["tables"] and len(parts) == 4:
            identifier = (parts[1], parts[3])
            if method == "POST":
                commit = CommitTableRequest.model_validate_json(data)
                done = self.sql.commit_table(
                    _Named(identifier), commit.requirements, commit.updates
                )  # type: ignore[arg-type]
                return 200, orjson.loads(done.model_dump_json(by_alias=True))
            table = self.sql.load_table(identifier)
            if method == "HEAD":
                return 204, None
            return 200, self.response(table.metadata_location, table.metadata)
        return 400, {
            "error": {
                "message": f"not served: {method} {path}",
                "type": "BadRequestException",
                "code": 400,
            }
        }

    def create(self, namespace: str, request: CreateTableRequest) -> tuple[int, Any]:
        if request.location:
            return 400, {
                "error": {
                    "message": "this catalog chooses table locations",
                    "type": "BadRequestException",
                    "code": 400,
                }
            }
        identifier = (namespace, request.name)
        if self.sql.table_exists(identifier):
            raise TableAlreadyExistsError(f"{namespace}.{request.name}")
        location = f"{self.warehouse}/{namespace}/{request.name}-{uuid.uuid4().hex[:12]}"
        if request.stage_create:  # created by the commit that follows (assert-create)
            metadata = new_table_metadata(
                request.table_schema,
                request.partition_spec,  # type: ignore[arg-type]
                request.write_order,  # type: ignore[arg-type]
                location,
                request.properties,
            )
            return 200, self.response(None, metadata)
        table = self.sql.create_table(
            identifier,
            request.table_schema,
            location=location,
            partition_spec=request.partition_spec,  # type: ignore[arg-type]
            sort_order=request.write_order,  # type: ignore[arg-type]
            properties=request.properties,
        )
        return 200, self.response(table.metadata_location, table.metadata)

    @staticmethod
    def response(location: str | None, metadata: Any) -> Any:
        made = TableResponse(**{"metadata-location": location, "metadata": metadata})
        return orjson.loads(made.model_dump_json(by_alias=True))


@contextmanager
def rest_catalog(sql: SqlCatalog, warehouse: str) -> Iterator[str]:
    """Serve a REST catalog over ``sql`` on loopback; yields its URI."""
    server = make_server("127.0.0.1", 0, RestCatalogServer(sql, warehouse), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()
