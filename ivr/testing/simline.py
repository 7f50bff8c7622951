"""A simulated caller on a simulated line: `ivr demo` and `ivr replay` run whole calls with it.

The caller speaks recorded turns on cue: after the assistant's prompt ends and it is listening
(plus a short human gap), or part-way into a prompt for barge-in turns. The line is full duplex
like AudioSocket: while the assistant plays, each outbound 20 ms frame is matched by one inbound
frame, so barge-in happens at the same audio time as on a phone.

`realtime=False` (the default for replay) runs on an audio clock instead of the wall clock: the
line only advances while the assistant listens or plays, so a two-minute call replays in
seconds and the endpointer sees exactly the frames a phone would have delivered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from ivr.audio.pcm import FRAME_BYTES, FRAME_MS, frames, silence
from ivr.frames import AudioIn, DtmfIn, HangupIn, LineEvent

HUMAN_GAP_MS = 300  # callers start answering about 200-500 ms after a prompt ends
MAX_IDLE_MS = 30_000  # after its last turn the caller waits at most this long for the call to end
# How far the caller may run ahead of the assistant's reader. One frame keeps the two in lockstep,
# so "is a prompt playing?" has the same answer for both, as on a real line.
QUEUE_FRAMES = 1


@dataclass(frozen=True)
class CallerTurn:
    """One thing the caller does: say `pcm` (8 kHz slin) or press `dtmf` keys."""

    pcm: bytes = b""
    dtmf: str = ""
    barge_in_after_ms: int | None = None  # speak this long after a prompt starts instead of after it ends
    label: str = ""


class SimulatedLine:
    """Implements ivr.frames.Line for a scripted caller."""

    def __init__(self, turns: list[CallerTurn], *, realtime: bool = False, gap_ms: int = HUMAN_GAP_MS,
                 max_idle_ms: int = MAX_IDLE_MS) -> None:
        self.turns = list(turns)
        self.realtime = realtime
        self.heard = bytearray()  # everything the assistant played to the caller
        self.barged = 0  # prompts cut short by the caller
        self.cut_at: list[int] = []  # len(heard) at each cut: how much the caller heard by then
        self._gap_frames = max(1, gap_ms // FRAME_MS)
        self._max_idle_frames = max_idle_ms // FRAME_MS
        self._queue: asyncio.Queue[LineEvent] = asyncio.Queue(maxsize=QUEUE_FRAMES)
        self._cue: Callable[[], bool] = lambda: False
        self._playing = False
        self._stop = False
        self._closed = False
        self._turn = 0
        self._waited = 0  # eligible frames counted towards the current turn's cue
        self._utterance: list[bytes] = []
        self._idle_after_script = 0
        # the assistant has acted on the caller's latest turn (stopped waiting for it at least once):
        # until then the caller is still mid-turn, and silence after a recording that ends right
        # where the speech ends is what lets the endpointer end that utterance
        self._answered = True
        self._next_tick = 0.0
        self._pump: asyncio.Task[None] | None = None

    def attach(self, cue: Callable[[], bool]) -> None:
        """`cue()` is true while the assistant waits for the caller (CallSession.awaiting_caller)."""
        self._cue = cue

    # ---- Line ---------------------------------------------------------------------------------
    async def events(self) -> AsyncIterator[LineEvent]:
        self._pump = asyncio.create_task(self._run_pump(), name="simulated-caller")
        try:
            while True:
                item = await self._queue.get()
                yield item
                if isinstance(item, HangupIn):
                    return
        finally:
            self.close()

    async def play(self, pcm: bytes) -> bool:
        self._stop = False
        self._playing = True
        try:
            for frame in frames(pcm):
                if self._stop or self._closed:
                    if self._stop:
                        self.barged += 1
                        self.cut_at.append(len(self.heard))
                    return False
                self.heard += frame
                await self._tick()  # full duplex: one caller frame per played frame
            return True
        finally:
            self._playing = False

    def stop_playback(self) -> None:
        if self._playing:
            self._stop = True

    def close(self) -> None:
        self._closed = True
        if self._pump and not self._pump.done():
            self._pump.cancel()

    @property
    def finished_script(self) -> bool:
        return self._turn >= len(self.turns) and not self._utterance

    # ---- the caller's clock -------------------------------------------------------------------
    async def _run_pump(self) -> None:
        """Advances the line while the assistant is not playing (play() ticks while it is)."""
        while not self._closed:
            if self._playing or not self._is_listening():
                self._answered = True  # the assistant is deciding or replying: the caller's turn is over
            if self._playing or (not self.realtime and not self._is_listening() and not self._utterance):
                await asyncio.sleep(0.001)
                continue
            if self.finished_script:
                # done talking: once the assistant waits for more (or too long passes), hang up
                self._idle_after_script += 1
                self._waited = self._waited + 1 if self._is_listening() and self._answered else 0
                if self._waited > self._gap_frames or self._idle_after_script > self._max_idle_frames:
                    await self._queue.put(HangupIn())
                    return
            await self._tick()

    async def _tick(self) -> None:
        for item in self._next_events():
            await self._queue.put(item)
        if self.realtime:
            now = time.monotonic()
            self._next_tick = max(self._next_tick + FRAME_MS / 1000, now)
            await asyncio.sleep(self._next_tick - now)
        else:
            await asyncio.sleep(0)

    def _is_listening(self) -> bool:
        return self._cue()

    def _next_events(self) -> list[LineEvent]:
        """What the caller sends during the next 20 ms."""
        if self._utterance:
            return [AudioIn(self._utterance.pop(0))]
        if self._turn < len(self.turns):
            turn = self.turns[self._turn]
            if turn.barge_in_after_ms is not None:
                cued = self._playing
                needed = max(1, turn.barge_in_after_ms // FRAME_MS)
            else:
                cued = self._is_listening() and not self._playing
                needed = self._gap_frames
            self._waited = self._waited + 1 if cued else 0 if turn.barge_in_after_ms is None else self._waited
            if self._waited >= needed:
                self._turn += 1
                self._waited = 0
                self._answered = False
                if turn.dtmf:
                    return [*(DtmfIn(d) for d in turn.dtmf), AudioIn(silence(FRAME_MS))]
                self._utterance = frames(turn.pcm)
                return [AudioIn(self._utterance.pop(0))] if self._utterance else [AudioIn(silence(FRAME_MS))]
        return [AudioIn(b"\x00" * FRAME_BYTES)]
