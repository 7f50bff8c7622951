"""A fake Asterisk caller for benchmarks, fuzz, limit and soak tests: FastAGI + AudioSocket on loopback.

One `fake_call()` does what Asterisk does for a dialplan `AGI(agi://host:port/support?lang=xx)`:
sends the `agi_*` environment block, answers every AGI command (`200 result=...`), and on
`EXEC AudioSocket <uuid>,<host:port>` connects to the AudioSocket server with that UUID and runs
the media: 20 ms frames on a monotonic schedule, silence when the caller says nothing (as Asterisk
does with `transmit_silence=yes`). The caller waits for the greeting to end, speaks its utterance
after a human gap, listens to the reply, then hangs up, and reports what it measured
(`CallerReport`: latency from end of speech to the first non-silent reply frame, reply frame
jitter, the IVR_* variables set on the channel).

The wire codecs are the project's own (ivr.telephony.agi / audiosocket), used from the other side.
Runs as a subprocess too (`python bench/fake_asterisk.py < jobs.json > reports.json`), so the
benchmark's callers do not share the server's event loop or CPU accounting.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
import time
import uuid as uuidlib
import wave
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/fake_asterisk.py` from anywhere
    sys.path.insert(0, str(ROOT))

from ivr.audio.pcm import FRAME_BYTES, FRAME_MS  # noqa: E402
from ivr.telephony.agi import parse_environment  # noqa: E402
from ivr.telephony.audiosocket import (  # noqa: E402
    KIND_AUDIO,
    AudioIn,
    AudioSocketParser,
    HangupIn,
    encode,
    encode_audio,
    encode_hangup,
    encode_uuid,
)

FRAME_S = FRAME_MS / 1000
SILENCE = b"\x00" * FRAME_BYTES
# a reply frame counts as sound when a sample exceeds this (keep-alive and padding are exact zeros)
NON_SILENT_PEAK = 100
# no frame from the server for this long: nothing is being played (only idle keep-alives)
PLAYBACK_END_GAP_S = 0.25
# no sound from the server for this long: the prompt has ended (the server may send a steady
# 20 ms silence clock between prompts, or only a keep-alive every 0.5 s)
PROMPT_END_QUIET_S = 0.8
# inter-arrival gap of playback frames above this counts as a late (or dropped) frame
LATE_GAP_S = 0.040
# a caller's speech ends at the last frame louder than this share of its loudest frame
SPEECH_END_SHARE = 0.05
AGI_OK = b"200 result=0\n"
OVERSIZED_AT_FRAME = 50  # misbehave="oversized_frame": 1 s into the media
OVERSIZED_PAYLOAD = 0xFFFF


@dataclass
class CallerScript:
    """What one fake caller does."""

    pcm: bytes  # the utterance, 8 kHz slin (with its lead/trail silence)
    lang: str = "ko"
    flow: str = "support"
    caller_id: str = "+15550100"
    channel: str = "Local/bench-1"
    # the caller speaks this long after the greeting's last sound (at least PROMPT_END_QUIET_S)
    gap_s: float = 0.3
    listen_s: float = 1.5  # how long to listen to the reply before hanging up (0: until it ends)
    hangup_after_s: float | None = None  # hang up this long after the media starts, whatever happens
    max_call_s: float = 120.0  # give up (and hang up) after this long
    speak: bool = True  # False: stay silent (no-input path)
    # misbehave like a broken or hostile peer: "" (no), "no_audiosocket" (EXEC fails: nothing connects),
    # "garbage_reply" (answer AGI commands with junk), "oversized_frame" (a frame over the cap mid-call)
    misbehave: str = ""


@dataclass
class CallerReport:
    """What one fake caller measured."""

    channel: str
    ok: bool = False  # the call reached the reply (or the scripted hang-up) without error
    error: str = ""
    commands: list[str] = field(default_factory=list)  # AGI verbs in order
    variables: dict[str, str] = field(default_factory=dict)  # SET VARIABLE name -> value
    audiosocket: bool = False  # the media connection was made
    greeting_s: float = 0.0  # first greeting frame -> greeting end
    speech_s: float = 0.0  # utterance length (whole fixture)
    latency_ms: float | None = None  # end of speech -> first non-silent reply frame
    reply_frames: int = 0
    playback_frames: int = 0  # all paced prompt frames received (greeting + reply)
    late_frames: int = 0  # playback inter-arrival gaps > LATE_GAP_S
    max_gap_ms: float = 0.0
    send_lag_max_ms: float = 0.0  # how late our own 20 ms sends were (client overload check)
    hung_up_by: str = ""  # "caller" | "server"
    duration_s: float = 0.0  # media connection time


def speech_end_offset_s(pcm: bytes) -> float:
    """Where speech ends in an utterance: the end of its last frame above SPEECH_END_SHARE of the peak RMS."""
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float64)
    n = len(samples) // (FRAME_BYTES // 2)
    if n == 0:
        return 0.0
    rms = np.sqrt(np.mean(samples[: n * (FRAME_BYTES // 2)].reshape(n, -1) ** 2, axis=1))
    loud = np.nonzero(rms > rms.max() * SPEECH_END_SHARE)[0]
    return float((loud[-1] + 1) * FRAME_S) if len(loud) else 0.0


def environment_block(script: CallerScript, port: int, uniqueid: str) -> bytes:
    """The agi_* block Asterisk sends for AGI(agi://127.0.0.1:port/<flow>?lang=xx)."""
    net_script = f"{script.flow}?lang={script.lang}"
    env = {
        "agi_network": "yes",
        "agi_network_script": net_script,
        "agi_request": f"agi://127.0.0.1:{port}/{net_script}",
        "agi_channel": script.channel,
        "agi_language": script.lang,
        "agi_type": "Local",
        "agi_uniqueid": uniqueid,
        "agi_version": "22.0.0",
        "agi_callerid": script.caller_id,
        "agi_calleridname": "Bench",
        "agi_context": "ivr",
        "agi_extension": "s",
        "agi_priority": "1",
        "agi_accountcode": "",
        "agi_threadid": "1",
    }
    block = "".join(f"{key}: {value}\n" for key, value in env.items()).encode()
    parse_environment(block)  # our own codec must accept what we send
    return block + b"\n"


def _peak(pcm: bytes) -> int:
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2")
    return int(np.abs(samples.astype(np.int32)).max()) if len(samples) else 0


class _Media:
    """The caller's side of one AudioSocket connection (sender and receiver share this state)."""

    def __init__(self, script: CallerScript, report: CallerReport) -> None:
        self.script = script
        self.report = report
        self.utterance = [script.pcm[i : i + FRAME_BYTES].ljust(FRAME_BYTES, b"\x00")
                          for i in range(0, len(script.pcm), FRAME_BYTES)]
        self.speech_end_frame = round(speech_end_offset_s(script.pcm) / FRAME_S)
        self.phase = "greeting"  # greeting -> speaking -> awaiting -> reply -> done
        self.last_frame_at: float | None = None
        self.last_loud_at: float | None = None
        self.greeting_start: float | None = None
        self.speech_end_at: float | None = None
        self.reply_start: float | None = None
        self._spoken = 0  # utterance frames sent so far
        self.done = asyncio.Event()

    def on_frame(self, pcm: bytes, now: float) -> None:
        report = self.report
        loud = _peak(pcm) > NON_SILENT_PEAK
        if self.last_frame_at is not None:
            gap = now - self.last_frame_at
            if gap < PLAYBACK_END_GAP_S:  # within one prompt's playback
                report.playback_frames += 1
                report.max_gap_ms = max(report.max_gap_ms, gap * 1000)
                if gap > LATE_GAP_S:
                    report.late_frames += 1
        self.last_frame_at = now
        if loud:
            self.last_loud_at = now
        if self.phase == "greeting" and loud and self.greeting_start is None:
            self.greeting_start = now
        elif self.phase == "awaiting" and loud:
            self.phase = "reply"
            self.reply_start = now
            assert self.speech_end_at is not None
            report.latency_ms = (now - self.speech_end_at) * 1000
        if self.phase == "reply":
            report.reply_frames += 1

    def tick(self, now: float) -> bytes:
        """The frame to send in the slot starting now; advances the caller's script."""
        script = self.script
        if self.phase == "greeting" and self.greeting_start is not None and self.last_loud_at is not None:
            if now - self.last_loud_at >= max(PROMPT_END_QUIET_S, script.gap_s):
                self.report.greeting_s = self.last_loud_at - self.greeting_start
                self.phase = "speaking" if script.speak else "awaiting"
                if not script.speak:
                    self.speech_end_at = now
        if self.phase == "speaking":
            index = self._spoken
            self._spoken += 1
            if index == self.speech_end_frame:
                self.speech_end_at = now  # the previous frame (sent 20 ms ago) ended the speech
            if index < len(self.utterance):
                return self.utterance[index]
            if self.speech_end_at is None:
                self.speech_end_at = now
            self.phase = "awaiting"
        if self.phase == "reply" and self.reply_start is not None and self.last_loud_at is not None:
            if (script.listen_s and now - self.reply_start >= script.listen_s) or \
                    now - self.last_loud_at >= PROMPT_END_QUIET_S:
                self.phase = "done"
                self.done.set()
        return SILENCE


async def _run_media(host: str, port: int, call_uuid: uuidlib.UUID, script: CallerScript,
                     report: CallerReport, media_factory: Callable[..., Any] | None = None) -> None:
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection(host, port)
    report.audiosocket = True
    media = (media_factory or _Media)(script, report)
    writer.write(encode_uuid(call_uuid))
    started = loop.time()

    async def receive() -> None:
        parser = AudioSocketParser()
        while True:
            data = await reader.read(4096)
            if not data:
                break
            for message in parser.feed(data):
                if isinstance(message, AudioIn):
                    media.on_frame(message.pcm, loop.time())
                elif isinstance(message, HangupIn):
                    report.hung_up_by = report.hung_up_by or "server"
                    return

    async def send() -> None:
        index = 0
        while not media.done.is_set():
            due = started + index * FRAME_S
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                report.send_lag_max_ms = max(report.send_lag_max_ms, -delay * 1000)
            now = loop.time()
            if script.hangup_after_s is not None and now - started >= script.hangup_after_s:
                break
            if now - started >= script.max_call_s:
                report.error = report.error or "max_call_s reached"
                break
            if script.misbehave == "oversized_frame" and index == OVERSIZED_AT_FRAME:
                writer.write(encode(KIND_AUDIO, b"\x01" * OVERSIZED_PAYLOAD))
            else:
                writer.write(encode_audio(media.tick(now)))
            await writer.drain()
            index += 1
        report.hung_up_by = report.hung_up_by or "caller"
        writer.write(encode_hangup())
        await writer.drain()

    receiver = asyncio.create_task(receive())
    sender = asyncio.create_task(send())
    try:
        await asyncio.wait({receiver, sender}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        sender.cancel()
        receiver.cancel()
        await asyncio.gather(sender, receiver, return_exceptions=True)
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass
    report.duration_s = loop.time() - started
    report.ok = not report.error and (media.phase == "done" or script.hangup_after_s is not None
                                      or report.hung_up_by == "server")


async def fake_call(agi_host: str, agi_port: int, script: CallerScript, *,
                    source_host: str | None = None, uniqueid: str | None = None,
                    media_factory: Callable[..., Any] | None = None,
                    report: CallerReport | None = None) -> CallerReport:
    """Place one call on the FastAGI server and run it to the end; never raises for peer errors.

    `media_factory(script, report)` replaces the one-utterance caller (bench/traffic.py's
    conversations); `report` may be a CallerReport subclass it fills."""
    report = report or CallerReport(channel=script.channel, speech_s=len(script.pcm) / 2 / 8000)
    uniqueid = uniqueid or f"{time.time():.6f}"
    local = (source_host, 0) if source_host else None
    try:
        reader, writer = await asyncio.open_connection(agi_host, agi_port, local_addr=local)
    except OSError as exc:
        report.error = f"AGI connect: {exc}"
        return report
    caller_gone = False
    try:
        writer.write(environment_block(script, agi_port, uniqueid))
        await writer.drain()
        while True:
            line = await asyncio.wait_for(reader.readline(), script.max_call_s)
            if not line:
                break  # the server ended the AGI session: the dialplan goes on
            words = shlex.split(line.decode("utf-8", errors="replace").strip())
            if not words:
                continue
            verb = " ".join(words[:2]) if words[0] in ("SET", "GET") else words[0]
            report.commands.append(verb)
            if script.misbehave == "garbage_reply":
                writer.write(b"\x00\xffgarbage 999 result\n")
            elif caller_gone:
                writer.write(b"511 Command Not Permitted on a dead channel or intercept routine\n")
            elif verb == "SET VARIABLE" and len(words) >= 4:
                report.variables[words[2]] = words[3]
                writer.write(b"200 result=1\n")
            elif verb == "EXEC" and len(words) >= 3 and words[1].lower() == "audiosocket":
                call_uuid, _, target = words[2].partition(",")
                host, _, port = target.rpartition(":")
                if script.misbehave == "no_audiosocket":  # as AudioSocket() does when it cannot connect
                    writer.write(b"200 result=-1\n")
                    await writer.drain()
                    continue
                try:
                    await _run_media(host, int(port), uuidlib.UUID(call_uuid), script, report, media_factory)
                except (OSError, ValueError) as exc:
                    report.error = f"AudioSocket: {exc}"
                    writer.write(b"200 result=-1\n")
                else:
                    if report.hung_up_by == "caller":
                        caller_gone = True
                        writer.write(b"HANGUP\n200 result=-1\n")
                    else:
                        writer.write(AGI_OK)
            else:
                writer.write(AGI_OK)
            await writer.drain()
    except (TimeoutError, ConnectionError, OSError) as exc:
        report.error = report.error or f"AGI: {type(exc).__name__} {exc}"
        report.ok = False
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass
    return report


# ------------------------------------------------------------------------------------ subprocess mode


async def _run_jobs(jobs: dict) -> list[dict]:
    """jobs: {"host", "port", "calls": [{script fields, "pcm_file": path}], "stagger_s"}."""
    cache: dict[str, bytes] = {}

    def load(path: str) -> bytes:
        if path not in cache:
            with wave.open(path, "rb") as wav:
                cache[path] = wav.readframes(wav.getnframes())
        return cache[path]

    async def one(i: int, spec: dict) -> CallerReport:
        await asyncio.sleep(i * jobs.get("stagger_s", 0.0))
        spec = dict(spec)
        pcm = load(spec.pop("pcm_file"))
        return await fake_call(jobs["host"], jobs["port"], CallerScript(pcm=pcm, **spec), uniqueid=f"bench.{i}")

    reports = await asyncio.gather(*(one(i, spec) for i, spec in enumerate(jobs["calls"])))
    return [asdict(r) for r in reports]


def main() -> int:
    jobs = json.load(sys.stdin)
    print(json.dumps(asyncio.run(_run_jobs(jobs))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
