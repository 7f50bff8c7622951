"""One exception tree for the whole bridge.

Every error a user can meet says what went wrong and how to fix it: the message is
the product. Catch `IvrError` at process edges (CLI, per-call task) and fail open.
"""

from __future__ import annotations


class IvrError(Exception):
    """Base of every error raised on purpose by this package."""

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        self.fix = fix
        super().__init__(f"{message} (fix: {fix})" if fix else message)


class ConfigError(IvrError):
    """A configuration, flow, grammar or prompt file is missing or invalid."""


class ProtocolError(IvrError):
    """Bytes from a peer (AGI, AudioSocket, AMI) do not follow the protocol."""


class AudioError(IvrError):
    """Audio cannot be read or is in a format we cannot use."""


class ModelNotFoundError(IvrError):
    """A speech model (ASR) is not installed and cannot be fetched."""


class EngineError(IvrError):
    """A speech engine (ASR or TTS) failed at run time."""


class StorageError(IvrError):
    """The call record store cannot be reached or written."""
