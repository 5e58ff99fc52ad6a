"""The in-memory S3 stand-in for pyiceberg: a FileIO (``py-io-impl``) that keeps the table's
metadata, manifest lists and manifests in a dict, so the consume benchmark's ``iceberg``
variant commits through the real pyiceberg code (metadata JSON, Avro manifests, the SQL
catalog's compare-and-swap) without a network. Data files never pass through it: the
consumer uploads them through its own S3 client (the benchmark's MemoryS3) and the committer
builds their DataFiles from the bytes in memory."""

from __future__ import annotations

import io
from typing import Any

from pyiceberg.io import FileIO, InputFile, InputStream, OutputFile, OutputStream

OBJECTS: dict[str, bytes] = {}  # location -> bytes, shared by every FileIO of the process


class _Written(io.BytesIO):
    def __init__(self, location: str) -> None:
        super().__init__()
        self.location = location

    def close(self) -> None:
        if not self.closed:
            OBJECTS[self.location] = self.getvalue()
        super().close()


class MemoryInputFile(InputFile):
    def __len__(self) -> int:
        return len(OBJECTS[self.location])

    def exists(self) -> bool:
        return self.location in OBJECTS

    def open(self, seekable: bool = True) -> InputStream:
        try:
            return io.BytesIO(OBJECTS[self.location])  # type: ignore[return-value]
        except KeyError:
            raise FileNotFoundError(self.location) from None


class MemoryOutputFile(OutputFile):
    def __len__(self) -> int:
        return len(OBJECTS[self.location])

    def exists(self) -> bool:
        return self.location in OBJECTS

    def to_input_file(self) -> InputFile:
        return MemoryInputFile(self.location)

    def create(self, overwrite: bool = False) -> OutputStream:
        if not overwrite and self.exists():
            raise FileExistsError(self.location)
        return _Written(self.location)  # type: ignore[return-value]


class MemoryFileIO(FileIO):
    def new_input(self, location: str) -> InputFile:
        return MemoryInputFile(location)

    def new_output(self, location: str) -> OutputFile:
        return MemoryOutputFile(location)

    def delete(self, location: Any) -> None:
        path = location if isinstance(location, str) else location.location
        OBJECTS.pop(path, None)
