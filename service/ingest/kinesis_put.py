"""PutRecords without botocore's per-record machinery (I/O).

Through aiobotocore one PutRecords call of 25 envelope records (~23 KB each) cost ~9 ms of
CPU on the serve loop, ~1.1 µs of Tideway's ~2.7 µs a line: ``json.dumps`` escaping every
base64 character in Python's ASCII encoder (~3.7 ms), validating, serializing and parsing
each entry by walking its shape, and ~2 ms of hooks, endpoint rules and user agent per call
whatever its size. That fixed part is also why N serve workers, each filling calls with 1/N
of the records, cost more CPU a line than one (issue 16).

``KinesisPutRecords`` sends the same request: AWS JSON 1.1 to the aiobotocore client's own
endpoint and region, signed by botocore's SigV4 signer with the session's (refreshable)
credentials, the body built by orjson, the answer read by orjson. It answers as the
aiobotocore client does: the parsed body on 200, a ``ClientError`` carrying the AWS error
code and HTTP status otherwise, so the producer's retry rules are unchanged. botocore's own
retries (standard mode, 3 attempts) are not repeated here: the producer retries every
failed entry, jittered, until ``TIDEWAY_PUT_DEADLINE``.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import aiohttp
import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import ClientError, NoCredentialsError

_TARGET = "Kinesis_20131202.PutRecords"
_CONTENT_TYPE = "application/x-amz-json-1.1"
_AGENT = "tideway-serve"
# As service/aws.py configures the aiobotocore clients.
_TIMEOUT = aiohttp.ClientTimeout(sock_connect=5, sock_read=30)
_POOL = 64


class KinesisPutRecords:
    """Async context manager: ``put_records`` with the arguments and answers of the
    aiobotocore Kinesis client's, over an HTTP session of its own."""

    def __init__(self, kinesis: Any, session: Any) -> None:
        self._url: str = kinesis.meta.endpoint_url
        self._region: str = kinesis.meta.region_name
        self._session = session  # the aiobotocore session the client was built from
        self._credentials: Any = None
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> KinesisPutRecords:
        # The client's own credentials object (the session caches it), refreshable.
        self._credentials = await self._session.get_credentials()
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=_POOL, keepalive_timeout=60),
            timeout=_TIMEOUT,
            skip_auto_headers=("User-Agent", "Content-Type"),
            trust_env=True,  # HTTPS_PROXY / NO_PROXY, as botocore honours them
        )
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._http is not None:
            await self._http.close()

    async def put_records(
        self, *, StreamName: str, Records: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        """One PutRecords call; the answer's ``Records`` line up with ``Records``.

        Raises ``ClientError`` for an AWS error answer (code, message, HTTP status),
        ``NoCredentialsError`` without credentials, aiohttp and OS errors for transport."""
        assert self._http is not None, "used outside its async with"
        body = put_records_body(StreamName, Records)
        headers = await self._signed_headers(body)
        async with self._http.post(self._url, data=body, headers=headers) as resp:
            status, raw = resp.status, await resp.read()
            request_id = resp.headers.get("x-amzn-RequestId", "")
            error_type = resp.headers.get("x-amzn-ErrorType", "")
        if status == 200:
            answer: dict[str, Any] = orjson.loads(raw)
            return answer
        raise ClientError(error_response(status, raw, error_type, request_id), "PutRecords")

    async def _signed_headers(self, body: bytes) -> dict[str, str]:
        if self._credentials is None:
            raise NoCredentialsError()
        frozen = await self._credentials.get_frozen_credentials()
        request = AWSRequest(
            method="POST",
            url=self._url,
            data=body,
            # SigV4 signs every header but User-Agent (botocore's own rule).
            headers={"Content-Type": _CONTENT_TYPE, "X-Amz-Target": _TARGET, "User-Agent": _AGENT},
        )
        SigV4Auth(frozen, "kinesis", self._region).add_auth(request)
        return dict(request.headers.items())


def put_records_body(stream: str, records: Sequence[Mapping[str, Any]]) -> bytes:
    """The AWS JSON 1.1 body of PutRecords: each ``Data`` base64, keys as given."""
    entries = []
    for rec in records:  # a loop over records (~25 a call), not lines
        entry = dict(rec)
        entry["Data"] = binascii.b2a_base64(rec["Data"], newline=False).decode("ascii")
        entries.append(entry)
    return orjson.dumps({"StreamName": stream, "Records": entries})


def error_response(status: int, body: bytes, error_type: str, request_id: str) -> dict[str, Any]:
    """botocore's error dict for an AWS JSON error answer: the code from the body's
    ``__type`` (or the ``x-amzn-ErrorType`` header), without its namespace; the HTTP status
    as the code when neither says (a proxy's 502)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    code = str(doc.get("__type") or error_type.partition(":")[0] or status)
    message = str(doc.get("message") or doc.get("Message") or "")
    return {
        "Error": {"Code": code.rpartition("#")[2], "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": request_id},
    }
