"""One exception hierarchy for the whole package; every error carries a reason a person can act on."""

from __future__ import annotations


class TidewayError(Exception):
    """Base of every error Tideway raises on purpose."""


class SettingsError(TidewayError):
    """A setting is missing or invalid; the message is one line naming it and the fix."""


class MissingExtraError(TidewayError):
    """An optional part of Tideway is not installed; the message is the one line that says which."""


class DecodeError(TidewayError):
    """A Kinesis record (or an ingest line) could not be decoded; ``reason`` is short and stable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EnvelopeError(DecodeError):
    """Bytes start with the envelope magic but are not a valid envelope."""


class RequestError(TidewayError):
    """An HTTP request is refused as a whole; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class OverloadedError(TidewayError):
    """The ingest tier cannot take more work now; the client should retry after ``retry_after`` s."""

    def __init__(self, reason: str, retry_after: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class LeaseLostError(TidewayError):
    """A fenced write failed: another worker owns the shard now; stop touching it."""


class KinesisUnavailableError(TidewayError):
    """Kinesis did not accept the records before the deadline."""


class ServeWorkerError(TidewayError):
    """A serve worker keeps dying as it starts; the message names it and its last exit code."""


class ListenError(TidewayError):
    """A port serve must listen on cannot be bound; the message names the setting."""


class ConsoleAuthError(TidewayError):
    """The console refuses a request's credentials; ``reason`` says which check failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
