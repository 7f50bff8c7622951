"""The local sound device as a `Line` (ivr/frames.py), for `ivr talk`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from ivr.frames import AudioIn, LineEvent


class DeviceLine:
    """Microphone frames in, speaker out; the device layer (ivr/audio/device.py) does the I/O."""

    def __init__(
        self,
        audio_in: AsyncIterator[bytes],
        play: Callable[[bytes], Awaitable[None]],
        stop_playback: Callable[[], None],
    ) -> None:
        self._audio_in = audio_in
        self._play = play
        self._stop_playback = stop_playback
        self._stopped = False

    async def events(self) -> AsyncIterator[LineEvent]:
        async for frame in self._audio_in:
            yield AudioIn(frame)

    async def play(self, pcm: bytes) -> bool:
        self._stopped = False
        await self._play(pcm)
        return not self._stopped

    def stop_playback(self) -> None:
        self._stopped = True
        self._stop_playback()
