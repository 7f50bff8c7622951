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


def listen_error(exc: OSError, what: str, host: str, port: int, setting: str) -> ConfigError:
    """A listener that cannot bind, said as the one setting to change: `setting` names the port's
    (``server.agi_port (--agi-port)``); an unusable address points at ``server.host``."""
    import errno
    import socket

    where = f"{what} cannot listen on {host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(f"{where}: the port is in use (another `ivr serve`, or another program)",
                           fix=f"stop it (`ss -ltnp 'sport = :{port}'` shows who), or set {setting}")
    if exc.errno == errno.EACCES:
        return ConfigError(f"{where}: permission denied (ports below 1024 need root)",
                           fix=f"set {setting} to 1024 or above")
    if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) or isinstance(exc, socket.gaierror):
        return ConfigError(f"{where}: {host!r} is not an address of this machine",
                           fix="set server.host (--host) to one of its addresses, or 0.0.0.0")
    return ConfigError(f"{where}: {exc.strerror or exc}", fix=f"check server.host and {setting}")
