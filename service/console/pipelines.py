"""The Pipelines page (I/O): the pipeline document stored in the lease table (its version
and text, as running consumers reload it) and the operator's validating editor, which
stores a new version as ``tideway pipelines put`` does (service/consume/reload.py)."""

from __future__ import annotations

import logging

from aiohttp import web

from service.console.charts import charts_json, pipeline_charts
from service.console.guard import PRINCIPAL
from service.console.page import CONSOLE, render
from service.consume.reload import store_document, stored_document, stored_versions
from service.pipeline.config import PipelineConfigError, load_pipelines
from service.pipeline.engine import DEFAULT_TABLE

log = logging.getLogger(__name__)


async def pipelines(request: web.Request) -> web.StreamResponse:
    """GET; ``?at=<ms>`` loads that stored version into the editor (to store it again)."""
    return await _page(request, stored_now=request.query.get("stored", ""))


async def _page(
    request: web.Request,
    status: int = 200,
    *,
    draft: str | None = None,
    refused: str = "",
    stored_now: str = "",
) -> web.StreamResponse:
    c = request.app[CONSOLE]
    text = await stored_document(c.dynamodb, c.settings.lease_table)
    versions = await stored_versions(c.dynamodb, c.settings.lease_table)
    at = request.query.get("at", "")
    chosen = next((v for v in versions if str(v.stored_at_ms) == at), None)
    if at and chosen is None:
        raise web.HTTPNotFound(text=f"at: no pipeline version stored at {at!r}")
    if draft is None and chosen is not None:
        draft = chosen.document
    version, broken, routes = None, "", []
    if text is not None:
        try:  # the same loader as the consumers: what they would do with it
            loaded = load_pipelines(text)
            version, routes = loaded.version, [(p.name, p.table) for p in loaded.pipelines]
        except PipelineConfigError as exc:
            broken = str(exc)
    charts = pipeline_charts(c.history, c.settings.console_sample_interval)
    rates = {k: v[-1] for k, v in charts[0].lines.items() if v}
    return render(
        request,
        "pipelines.html",
        status=status,
        title="Pipelines",
        page="pipelines",
        stored=text,
        version=version,
        broken=broken,
        versions=versions,
        chosen=chosen,
        draft=(text or "") if draft is None else draft,
        refused=refused,
        stored_now=stored_now,
        table=c.settings.lease_table,
        charts=charts,
        charts_data=charts_json(charts),
        throughput=[(name, t, rates.get(t)) for name, t in routes]
        + [("(lines no pipeline matches)", DEFAULT_TABLE, rates.get(DEFAULT_TABLE))],
    )


async def store_pipelines(request: web.Request) -> web.StreamResponse:
    """POST: validate the edited document and store it as the new version (operators only,
    the guard checked); a document that does not load is refused with its one-line reason."""
    c = request.app[CONSOLE]
    # A browser sends a textarea's lines ending in CRLF; the file a person keeps has LF.
    document = str((await request.post()).get("document", "")).replace("\r\n", "\n")
    try:
        version = await store_document(c.dynamodb, c.settings.lease_table, document)
    except PipelineConfigError as exc:
        return await _page(request, 400, draft=document, refused=str(exc))
    log.info("console: pipeline document %s stored by %s", version, request[PRINCIPAL].subject)
    raise web.HTTPSeeOther(f"{c.settings.console_base_path}/pipelines?stored={version}")
