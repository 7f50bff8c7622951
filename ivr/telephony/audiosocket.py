"""AudioSocket: a pure codec over bytes, a per-call session with paced playback, and a server.

Wire format (Asterisk res_audiosocket): 1 byte kind, 2 bytes big-endian payload length, payload.
Kinds: 0x00 hang-up, 0x01 call UUID (16 bytes), 0x03 DTMF digit (1 ASCII byte),
0x10 audio (8 kHz 16-bit signed linear mono, 320 bytes = 20 ms), 0xff error (1 byte code).

Asterisk's AudioSocket application ends the connection after 2000 ms with no frame in either
direction, so an idle session sends a silence frame every `idle_keepalive_s` (see README).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import uuid as uuidlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ivr.audio.pcm import FRAME_BYTES, FRAME_MS
from ivr.errors import ProtocolError
from ivr.frames import AudioIn, DtmfIn, HangupIn  # shared with the simulated line and the device
from ivr.telephony.peers import PeerAllowList
from ivr.telephony.streams import WRITE_TIMEOUT_S, WriteStalled, close_writer, drain

log = logging.getLogger(__name__)

KIND_HANGUP = 0x00
KIND_UUID = 0x01
KIND_DTMF = 0x03
KIND_AUDIO = 0x10
KIND_ERROR = 0xFF
KINDS = {KIND_HANGUP: "hangup", KIND_UUID: "uuid", KIND_DTMF: "dtmf", KIND_AUDIO: "audio", KIND_ERROR: "error"}

HEADER = struct.Struct(">BH")
# 20 ms of slin is 320 bytes; Asterisk may send larger frames for other rates or after a stall,
# but nothing legitimate comes near this. A bigger length means a desynchronised or hostile peer.
DEFAULT_MAX_PAYLOAD = 8192

ERROR_CODES = {0x00: "none", 0x01: "hangup", 0x02: "frame forwarding", 0x04: "memory"}


# -------------------------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class UuidIn:
    """The call UUID Asterisk sends first (kind 0x01)."""

    uuid: uuidlib.UUID


@dataclass(frozen=True)
class ErrorIn:
    """Asterisk reported an error (kind 0xff); `code` as in ERROR_CODES."""

    code: int

    @property
    def reason(self) -> str:
        return ERROR_CODES.get(self.code, f"unknown 0x{self.code:02x}")


Message = HangupIn | UuidIn | DtmfIn | AudioIn | ErrorIn
__all__ = ["AudioIn", "DtmfIn", "HangupIn"]  # re-exported: callers may import them from here


def encode(kind: int, payload: bytes = b"") -> bytes:
    """One message: header + payload."""
    if len(payload) > 0xFFFF:
        raise ProtocolError(f"AudioSocket payload of {len(payload)} bytes does not fit the 16-bit length")
    return HEADER.pack(kind, len(payload)) + payload


def encode_message(message: Message) -> bytes:
    """Serialize a typed message (the inverse of `AudioSocketParser`)."""
    if isinstance(message, AudioIn):
        return encode(KIND_AUDIO, message.pcm)
    if isinstance(message, DtmfIn):
        return encode(KIND_DTMF, message.digit.encode("ascii"))
    if isinstance(message, UuidIn):
        return encode(KIND_UUID, message.uuid.bytes)
    if isinstance(message, ErrorIn):
        return encode(KIND_ERROR, bytes([message.code]))
    return encode(KIND_HANGUP)


def encode_audio(pcm: bytes) -> bytes:
    return encode(KIND_AUDIO, pcm)


def encode_hangup() -> bytes:
    return encode(KIND_HANGUP)


def encode_uuid(value: uuidlib.UUID) -> bytes:
    return encode(KIND_UUID, value.bytes)


def _decode(kind: int, payload: bytes) -> Message:
    if kind == KIND_AUDIO:
        return AudioIn(payload)
    if kind == KIND_HANGUP:
        return HangupIn()
    if kind == KIND_UUID:
        if len(payload) != 16:
            raise ProtocolError(f"AudioSocket UUID payload must be 16 bytes, got {len(payload)}")
        return UuidIn(uuidlib.UUID(bytes=payload))
    if kind == KIND_DTMF:
        if len(payload) != 1:
            raise ProtocolError(f"AudioSocket DTMF payload must be 1 byte, got {len(payload)}")
        return DtmfIn(chr(payload[0]))
    if kind == KIND_ERROR:
        return ErrorIn(payload[0] if payload else 0)
    raise ProtocolError(f"AudioSocket message kind 0x{kind:02x} is unknown")


class AudioSocketParser:
    """Incremental (sans-io) parser: `feed(bytes)` returns the complete messages so far.

    Handles messages split across reads at any byte; a length above `max_payload` raises
    ProtocolError before any of the payload is buffered.
    """

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        out: list[Message] = []
        while len(self._buffer) >= HEADER.size:
            kind, length = HEADER.unpack_from(self._buffer)
            if kind not in KINDS:
                raise ProtocolError(f"AudioSocket message kind 0x{kind:02x} is unknown")
            if length > self.max_payload:
                raise ProtocolError(
                    f"AudioSocket {KINDS[kind]} payload of {length} bytes exceeds the cap of "
                    f"{self.max_payload} bytes",
                    fix="check that the peer is Asterisk's AudioSocket (slin, 20 ms frames)",
                )
            end = HEADER.size + length
            if len(self._buffer) < end:
                break
            payload = bytes(self._buffer[HEADER.size : end])
            del self._buffer[:end]
            out.append(_decode(kind, payload))
        return out


# --------------------------------------------------------------------------------------------- session


@dataclass
class AudioSocketParams:
    frame_bytes: int = FRAME_BYTES
    frame_s: float = FRAME_MS / 1000
    # while nothing plays, send one silence frame this often (Asterisk drops the socket after 2 s idle)
    idle_keepalive_s: float = 0.5
    # inbound audio kept while the consumer is busy; beyond this the oldest frames are dropped
    max_queued_frames: int = 1500  # 30 s
    max_payload: int = DEFAULT_MAX_PAYLOAD
    # a frame sent later than this after its slot counts as late (bench figure)
    late_after_s: float = 0.010
    # Asterisk taking none of our audio for this long means it is stuck: the call ends (fail-open)
    write_timeout_s: float = WRITE_TIMEOUT_S


@dataclass
class AudioSocketStats:
    frames_in: int = 0
    frames_out: int = 0
    late_frames: int = 0
    max_lateness_s: float = 0.0
    dropped_in: int = 0
    keepalives: int = 0


class AudioSocketSession:
    """One call's media connection.

    Inbound: `events()` yields AudioIn / DtmfIn / HangupIn in order, except that DTMF and hang-up
    overtake audio still queued. Outbound: `play(pcm)` sends 20 ms frames on a monotonic-clock
    schedule; `stop_playback()` ends it before the next frame (barge-in).
    """

    def __init__(
        self,
        call_uuid: uuidlib.UUID,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        parser: AudioSocketParser,
        params: AudioSocketParams | None = None,
    ) -> None:
        self.uuid = call_uuid
        self.params = params or AudioSocketParams()
        self.stats = AudioSocketStats()
        self._reader = reader
        self._writer = writer
        self._parser = parser
        self._audio: deque[AudioIn] = deque()
        self._control: deque[DtmfIn | HangupIn] = deque()
        self._wake = asyncio.Event()
        self._ended = False  # no more inbound messages will come
        self._closed = False
        self._playing = False
        self._stop = asyncio.Event()
        self._last_sent = asyncio.get_running_loop().time()
        self._tasks = [
            asyncio.create_task(self._read_loop(), name=f"audiosocket-read-{call_uuid}"),
            asyncio.create_task(self._keepalive_loop(), name=f"audiosocket-keepalive-{call_uuid}"),
        ]
        self.error: ErrorIn | None = None
        self.stalled = False  # Asterisk stopped reading our audio: the call was ended from our side

    # inbound ------------------------------------------------------------------------------------

    def _push(self, message: Message) -> None:
        if isinstance(message, AudioIn):
            self.stats.frames_in += 1
            if len(self._audio) >= self.params.max_queued_frames:
                self._audio.popleft()
                self.stats.dropped_in += 1
            self._audio.append(message)
        elif isinstance(message, DtmfIn):
            self._control.append(message)
        elif isinstance(message, HangupIn):
            self._control.append(message)
            self._ended = True
        elif isinstance(message, ErrorIn):
            log.warning("AudioSocket %s: Asterisk reported error %s", self.uuid, message.reason)
            self.error = message
        self._wake.set()

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self._reader.read(4096)
                if not data:
                    break
                for message in self._parser.feed(data):
                    self._push(message)
                    if isinstance(message, HangupIn):
                        return
        except ProtocolError as exc:
            log.warning("AudioSocket %s: %s", self.uuid, exc)
        except (ConnectionError, OSError):
            pass
        finally:
            if not self._ended:
                self._push(HangupIn())
            self._stop.set()

    async def events(self) -> AsyncIterator[AudioIn | DtmfIn | HangupIn]:
        """Inbound messages; ends after HangupIn (or EOF, reported as HangupIn)."""
        while True:
            if self._control:
                message = self._control.popleft()
                yield message
                if isinstance(message, HangupIn):
                    return
                continue
            if self._audio:
                yield self._audio.popleft()
                continue
            if self._ended:
                return
            self._wake.clear()
            await self._wake.wait()

    # outbound -----------------------------------------------------------------------------------

    @property
    def is_playing(self) -> bool:
        return self._playing

    @property
    def is_open(self) -> bool:
        return not self._closed and not self._ended

    def stop_playback(self) -> None:
        """Stop the current `play()` before its next frame (barge-in)."""
        self._stop.set()

    def _send(self, data: bytes) -> bool:
        if self._closed or self._writer.is_closing():
            return False
        self._writer.write(data)
        self._last_sent = asyncio.get_running_loop().time()
        return True

    async def _drain(self) -> bool:
        """Wait (bounded) until the peer takes what we wrote; False if the connection is gone."""
        try:
            await drain(self._writer, self.params.write_timeout_s)
        except WriteStalled as exc:
            self._on_stall(exc)
            return False
        except (ConnectionError, OSError):
            return False
        return True

    def _on_stall(self, exc: WriteStalled) -> None:
        if not self.stalled:
            log.warning("AudioSocket %s: %s; ending the call (fail-open to the dialplan)", self.uuid, exc)
        self.stalled = True
        self._stop.set()
        if not self._ended:
            self._push(HangupIn())  # the conversation sees the end of the line and stops

    async def play(self, pcm: bytes) -> bool:
        """Send `pcm` as paced 20 ms frames; True if all of it was sent, False if stopped or hung up.

        Frame i goes out at start + i * 20 ms on the loop's monotonic clock, so scheduling jitter
        does not accumulate; a frame sent more than `late_after_s` after its slot counts as late.
        """
        if self._playing:
            raise RuntimeError("AudioSocketSession.play() is already running for this call")
        self._playing = True
        self._stop.clear()
        if self._ended:
            self._stop.set()
        loop = asyncio.get_running_loop()
        size = self.params.frame_bytes
        try:
            start = loop.time()
            for index, offset in enumerate(range(0, len(pcm), size)):
                frame = pcm[offset : offset + size]
                if len(frame) < size:
                    frame += b"\x00" * (size - len(frame))
                due = start + index * self.params.frame_s
                delay = due - loop.time()
                if delay > 0:
                    # a plain sleep, then the stop check: a stop (barge-in) still sends no further frame,
                    # and a wait_for(stop) per frame cost a task and a cancellation (docs/performance.md)
                    await asyncio.sleep(delay)
                if self._stop.is_set():
                    return False
                lateness = loop.time() - due
                if lateness > self.params.late_after_s:
                    self.stats.late_frames += 1
                    self.stats.max_lateness_s = max(self.stats.max_lateness_s, lateness)
                if not self._send(encode_audio(frame)):
                    return False
                self.stats.frames_out += 1
                if not await self._drain():
                    return False
            # wait out the last frame's slot so back-to-back play() calls stay on the 20 ms grid
            remaining = start + ((len(pcm) + size - 1) // size) * self.params.frame_s - loop.time()
            if remaining > 0:
                try:
                    await asyncio.wait_for(self._stop.wait(), remaining)
                except TimeoutError:
                    pass
            return not self._stop.is_set()
        finally:
            self._playing = False

    async def _keepalive_loop(self) -> None:
        loop = asyncio.get_running_loop()
        silence = encode_audio(b"\x00" * self.params.frame_bytes)
        interval = self.params.idle_keepalive_s
        if interval <= 0:
            return
        # On a monotonic grid continuing from the last frame sent, so idle_keepalive_s = 0.02 gives
        # a steady 20 ms media clock (as `ivr serve` uses) that lines up with play()'s frames.
        due = self._last_sent + interval
        try:
            while not self._closed and not self._ended:
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                now = loop.time()
                if self._playing or now - self._last_sent < interval * 0.9:
                    due = max(self._last_sent + interval, now + interval / 4)  # something else was sent
                    continue
                if self._send(silence):
                    self.stats.keepalives += 1
                    if not await self._drain():
                        return
                due += interval
                if due < now:  # fell behind (a busy loop): resynchronise rather than burst
                    due = now + interval
        except (ConnectionError, OSError):
            pass

    async def close(self) -> None:
        """Send the hang-up message and close: Asterisk's AudioSocket() returns, the dialplan goes on."""
        if self._closed:
            return
        self.stop_playback()
        try:
            if self._send(encode_hangup()):
                await self._drain()
        except (ConnectionError, OSError):
            pass
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await close_writer(self._writer, self.params.write_timeout_s)
        self._ended = True
        self._wake.set()


# ---------------------------------------------------------------------------------------------- server


class AudioSocketServer:
    """Accept Asterisk's AudioSocket connections and hand each to whoever `expect()`ed its UUID."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9092,
        *,
        allowed_peers: list[str] | None = None,
        first_message_timeout_s: float = 5.0,
        params: AudioSocketParams | None = None,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.peers = PeerAllowList(allowed_peers) if allowed_peers is not None else None
        self.first_message_timeout_s = first_message_timeout_s
        self.params = params or AudioSocketParams()
        self._waiting: dict[uuidlib.UUID, asyncio.Future[AudioSocketSession]] = {}
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_connect, self.host, self.requested_port)

    @property
    def port(self) -> int:
        assert self._server is not None, "AudioSocketServer.start() first"
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            # close() stops accepting; not wait_closed(): from Python 3.12 it also waits for every
            # call in progress to end, which is the drain's job (with its own time limit)
            self._server.close()
        for future in self._waiting.values():
            future.cancel()

    def expect(self, call_uuid: uuidlib.UUID) -> asyncio.Future[AudioSocketSession]:
        """Register interest in `call_uuid`; the future resolves when Asterisk connects with it."""
        future: asyncio.Future[AudioSocketSession] = asyncio.get_running_loop().create_future()
        self._waiting[call_uuid] = future
        future.add_done_callback(lambda _f: self._waiting.pop(call_uuid, None))
        return future

    async def wait_for(self, call_uuid: uuidlib.UUID, timeout: float) -> AudioSocketSession:
        """`expect(call_uuid)` and wait up to `timeout` s (asyncio.TimeoutError after)."""
        return await asyncio.wait_for(self.expect(call_uuid), timeout)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        host = peer[0] if peer else ""
        if self.peers is not None and not self.peers.allows(host):
            log.warning("AudioSocket: refused connection from %s (not in server.allowed_peers)", host)
            writer.close()
            return
        parser = AudioSocketParser(self.params.max_payload)
        first: list[Message] = []
        try:
            async with asyncio.timeout(self.first_message_timeout_s):
                while not first:
                    data = await reader.read(4096)
                    if not data:
                        break
                    first = parser.feed(data)
        except (TimeoutError, ProtocolError, ConnectionError, OSError) as exc:
            log.warning("AudioSocket: %s: no valid UUID message (%s)", host, exc or "timeout")
            writer.close()
            return
        if not first or not isinstance(first[0], UuidIn):
            log.warning("AudioSocket: %s did not start with a UUID message", host)
            writer.close()
            return
        call_uuid = first[0].uuid
        future = self._waiting.get(call_uuid)
        if future is None or future.done():
            log.warning("AudioSocket: nobody expects call %s; closing", call_uuid)
            writer.write(encode_hangup())
            writer.close()
            return
        session = AudioSocketSession(call_uuid, reader, writer, parser, self.params)
        for message in first[1:]:
            session._push(message)
        future.set_result(session)
