"""The only place that builds AWS clients: aiobotocore on the standard chain.

Endpoint, region and credentials come from AWS_ENDPOINT_URL, AWS_REGION and the usual
credential providers; Tideway has no endpoint setting of its own (DESIGN §1).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

# Our own retries are bounded and jittered per call site (STYLE 8); botocore's standard
# mode still absorbs a transient connection error or two.
_CONFIG = AioConfig(
    retries={"max_attempts": 3, "mode": "standard"},
    connect_timeout=5,
    read_timeout=30,
    max_pool_connections=64,
    tcp_keepalive=True,
)


@dataclass
class AwsClients:
    """Clients sharing one session; a service not opened is None."""

    kinesis: Any = None
    s3: Any = None
    dynamodb: Any = None
    glue: Any = None
    cloudwatch: Any = None
    # The session the clients were built from: its credentials are theirs (refreshed by
    # botocore when due), for a caller that signs its own requests (ingest/kinesis_put.py).
    session: Any = None


@asynccontextmanager
async def aws_clients(*names: str) -> AsyncIterator[AwsClients]:
    """Open a client for each of ``names`` (kinesis, s3, dynamodb, glue); close all on exit."""
    session = get_session()
    region = session.get_config_variable("region") or _standard_region()
    clients = AwsClients(session=session)
    async with AsyncExitStack() as stack:
        for name in names:
            client = await stack.enter_async_context(
                session.create_client(name, region_name=region, config=_CONFIG)
            )
            setattr(clients, name, client)
        yield clients


def region() -> str | None:
    """The region clients are built for (AWS_REGION, else botocore's own chain)."""
    return get_session().get_config_variable("region") or _standard_region()


def _standard_region() -> str | None:
    # AWS_REGION is the region variable of every other AWS SDK (and what ECS sets);
    # botocore reads only AWS_DEFAULT_REGION, so fall back to it here, the one client factory.
    return os.environ.get("AWS_REGION") or None


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError, else the exception's type name."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if code:
            return str(code)
    return type(exc).__name__
