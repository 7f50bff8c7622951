"""What arrives from the caller's side of a line, whatever carries it.

The AudioSocket session, the simulated line of `ivr demo`/`ivr replay` and the local sound
device all yield these, so the call pipeline has one input type.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class AudioIn:
    """20 ms of the caller's audio: 320 bytes of 8 kHz slin."""

    pcm: bytes


@dataclass(frozen=True)
class DtmfIn:
    """A key the caller pressed."""

    digit: str


@dataclass(frozen=True)
class HangupIn:
    """The caller's side ended."""


LineEvent = AudioIn | DtmfIn | HangupIn


class Line(Protocol):
    """A full-duplex audio line to one caller."""

    def events(self) -> AsyncIterator[LineEvent]:
        """Inbound events in order; ends after hang-up."""

    async def play(self, pcm: bytes) -> bool:
        """Play slin audio paced in real time; False if `stop_playback` cut it short."""

    def stop_playback(self) -> None:
        """Stop what is playing within one frame (barge-in)."""
