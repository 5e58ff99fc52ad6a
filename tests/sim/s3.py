"""An in-process S3 bucket model that remembers every write, so a rewrite with other bytes
is caught the moment it happens, and refuses a request that arrives more than its
signature's validity after it was signed (SigV4: 15 minutes after X-Amz-Date, scaled
to the simulation's lease in node.SIGNATURE_VALIDITY)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.sim.faults import client_error
from tests.sim.net import Endpoint, Network


@dataclass
class ObjectWrite:
    index: int  # position in the global order of model events
    node: str
    key: str
    etag: str


@dataclass
class S3Model:
    bucket: str
    objects: dict[str, bytes] = field(default_factory=dict)
    first_written: dict[str, int] = field(default_factory=dict)
    writes: list[ObjectWrite] = field(default_factory=list)
    rewrites: list[str] = field(default_factory=list)  # keys rewritten with other bytes
    uploads: dict[str, tuple[str, dict[int, bytes]]] = field(default_factory=dict)
    upload_count: int = 0
    deletes: list[ObjectWrite] = field(default_factory=list)  # etag "" when there was none
    events: Any = None  # () -> (next global event index, virtual time)
    # Seconds after signing (the call's start) past which a request is refused on arrival.
    signature_validity: float = float("inf")
    expired_requests: list[str] = field(default_factory=list)

    def _bucket(self, kw: dict[str, Any], op: str) -> None:
        if kw["Bucket"] != self.bucket:
            raise client_error("NoSuchBucket", 404, op)

    def _store(self, node: str, key: str, body: bytes) -> str:
        etag = hashlib.md5(body).hexdigest()
        old = self.objects.get(key)
        if old is not None and old != body:
            self.rewrites.append(f"{key} rewritten by {node} with other bytes")
        self.objects[key] = body
        index, _ = self.events()
        self.first_written.setdefault(key, index)
        self.writes.append(ObjectWrite(index, node, key, etag))
        return f'"{etag}"'

    def put_object(self, node: str, **kw: Any) -> dict[str, Any]:
        self._bucket(kw, "PutObject")
        return {"ETag": self._store(node, kw["Key"], bytes(kw["Body"]))}

    def create_multipart_upload(self, **kw: Any) -> dict[str, Any]:
        self._bucket(kw, "CreateMultipartUpload")
        self.upload_count += 1
        upload_id = f"upload-{self.upload_count}"  # never reused, as S3's are unique
        self.uploads[upload_id] = (kw["Key"], {})
        return {"UploadId": upload_id, "Key": kw["Key"], "Bucket": self.bucket}

    def upload_part(self, **kw: Any) -> dict[str, Any]:
        _key, parts = self._upload(kw, "UploadPart")
        body = bytes(kw["Body"])
        parts[int(kw["PartNumber"])] = body
        return {"ETag": f'"{hashlib.md5(body).hexdigest()}"'}

    def complete_multipart_upload(self, node: str, **kw: Any) -> dict[str, Any]:
        key, parts = self._upload(kw, "CompleteMultipartUpload")
        numbers = [p["PartNumber"] for p in kw["MultipartUpload"]["Parts"]]
        body = b"".join(parts[n] for n in numbers)
        del self.uploads[kw["UploadId"]]
        return {"ETag": self._store(node, key, body), "Key": key}

    def abort_multipart_upload(self, **kw: Any) -> dict[str, Any]:
        self._upload(kw, "AbortMultipartUpload")
        del self.uploads[kw["UploadId"]]
        return {}

    def _upload(self, kw: dict[str, Any], op: str) -> tuple[str, dict[int, bytes]]:
        self._bucket(kw, op)
        if kw["UploadId"] not in self.uploads:
            raise client_error("NoSuchUpload", 404, op)
        return self.uploads[kw["UploadId"]]

    def delete_objects(self, node: str, refuse: Callable[[str], bool], **kw: Any) -> dict[str, Any]:
        """S3's DeleteObjects: up to 1,000 keys; a missing key counts as deleted; a key
        ``refuse`` names is answered in ``Errors`` (S3 may refuse single keys, 200 overall)."""
        self._bucket(kw, "DeleteObjects")
        wanted = [o["Key"] for o in kw["Delete"]["Objects"]]
        if not wanted or len(wanted) > 1000:
            raise client_error("MalformedXML", 400, "DeleteObjects")
        deleted, errors = [], []
        for key in wanted:
            if refuse(key):
                errors.append({"Key": key, "Code": "InternalError", "Message": "sim"})
                continue
            body = self.objects.pop(key, None)
            # Gone: a later write of the key is a first write again, not a rewrite.
            self.first_written.pop(key, None)
            index, _ = self.events()
            etag = "" if body is None else hashlib.md5(body).hexdigest()
            self.deletes.append(ObjectWrite(index, node, key, etag))
            deleted.append({"Key": key})
        resp: dict[str, Any] = {"Errors": errors} if errors else {}
        if not kw["Delete"].get("Quiet"):
            resp["Deleted"] = deleted
        return resp

    def list_objects_v2(self, **kw: Any) -> dict[str, Any]:
        self._bucket(kw, "ListObjectsV2")
        keys = sorted(k for k in self.objects if k.startswith(kw.get("Prefix", "")))
        after = kw.get("ContinuationToken") or kw.get("StartAfter")
        if after:
            keys = [k for k in keys if k > after]
        limit = int(kw.get("MaxKeys", 1000))
        page = keys[:limit]
        resp: dict[str, Any] = {
            "Contents": [{"Key": k, "Size": len(self.objects[k])} for k in page],
            "KeyCount": len(page),
            "IsTruncated": len(keys) > limit,
        }
        if len(keys) > limit:
            resp["NextContinuationToken"] = page[-1]
        return resp

    def get_object(self, **kw: Any) -> dict[str, Any]:
        self._bucket(kw, "GetObject")
        body = self.objects.get(kw["Key"])
        if body is None:
            raise client_error("NoSuchKey", 404, "GetObject")
        wanted = kw.get("Range")
        if wanted is not None:  # "bytes=first-last", inclusive, as S3 takes it
            first, _, last = wanted.removeprefix("bytes=").partition("-")
            if not first:
                raise NotImplementedError(f"suffix range not modelled: {wanted}")
            body = body[int(first) : int(last) + 1]
        return {"Body": StreamingBody(body), "ContentLength": len(body)}

    def head_object(self, **kw: Any) -> dict[str, Any]:
        self._bucket(kw, "HeadObject")
        body = self.objects.get(kw["Key"])
        if body is None:
            raise client_error("404", 404, "HeadObject")
        return {"ContentLength": len(body), "ETag": f'"{hashlib.md5(body).hexdigest()}"'}


class StreamingBody:
    """aiobotocore's response body: ``await body.read()``, also an async context manager."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def read(self, amt: int | None = None) -> bytes:
        data, self._data = (
            (self._data, b"") if amt is None else (self._data[:amt], self._data[amt:])
        )
        return data

    async def __aenter__(self) -> StreamingBody:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def __repr__(self) -> str:
        return f"StreamingBody({hashlib.md5(self._data).hexdigest()})"


class FakeS3:
    """The aiobotocore S3 client calls the sink makes, for one node."""

    def __init__(self, model: S3Model, net: Network, node: Endpoint) -> None:
        self._m, self._net, self._node = model, net, node

    def _signed(self, op: str, apply: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
        """``apply``, refused as S3 refuses a request whose signature is too old: signed now
        (botocore signs just before sending), applied when it arrives (after any pause)."""
        signed = self._net.loop.time()

        def arrive() -> dict[str, Any]:
            late = self._net.loop.time() - signed
            if late > self._m.signature_validity:
                self._m.expired_requests.append(f"{self._node.name} {op} signed {late:.1f}s ago")
                raise client_error("RequestTimeTooSkewed", 403, op)
            return apply()

        return arrive

    async def _call(
        self, op: str, apply: Callable[[], dict[str, Any]], kw: dict[str, Any], *, write: bool
    ) -> dict[str, Any]:
        arrive = self._signed(op, apply)
        return await self._net.call(
            self._node, "s3", op, arrive, write=write, key=kw.get("Key", "")
        )

    async def put_object(self, **kw: Any) -> dict[str, Any]:
        return await self._call(
            "put_object", lambda: self._m.put_object(self._node.name, **kw), kw, write=True
        )

    async def create_multipart_upload(self, **kw: Any) -> dict[str, Any]:
        return await self._call(
            "create_multipart_upload", lambda: self._m.create_multipart_upload(**kw), kw, write=True
        )

    async def upload_part(self, **kw: Any) -> dict[str, Any]:
        return await self._call("upload_part", lambda: self._m.upload_part(**kw), kw, write=True)

    async def complete_multipart_upload(self, **kw: Any) -> dict[str, Any]:
        return await self._call(
            "complete_multipart_upload",
            lambda: self._m.complete_multipart_upload(self._node.name, **kw),
            kw,
            write=True,
        )

    async def abort_multipart_upload(self, **kw: Any) -> dict[str, Any]:
        return await self._call(
            "abort_multipart_upload", lambda: self._m.abort_multipart_upload(**kw), kw, write=True
        )

    async def delete_objects(self, **kw: Any) -> dict[str, Any]:
        keys = [o["Key"] for o in kw["Delete"]["Objects"]]
        injector = self._net.injector
        refuse = injector.delete_refusals(self._node.name, self._net.loop.time())
        return await self._net.call(
            self._node,
            "s3",
            "delete_objects",
            self._signed(
                "delete_objects", lambda: self._m.delete_objects(self._node.name, refuse, **kw)
            ),
            write=True,
            key=f"{len(keys)} keys from {keys[0] if keys else ''}",
        )

    async def list_objects_v2(self, **kw: Any) -> dict[str, Any]:
        return await self._call(
            "list_objects_v2", lambda: self._m.list_objects_v2(**kw), kw, write=False
        )

    async def get_object(self, **kw: Any) -> dict[str, Any]:
        return await self._call("get_object", lambda: self._m.get_object(**kw), kw, write=False)

    async def head_object(self, **kw: Any) -> dict[str, Any]:
        return await self._call("head_object", lambda: self._m.head_object(**kw), kw, write=False)
