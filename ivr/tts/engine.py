"""Text to speech: espeak-ng, driven from one dedicated worker thread.

Two back-ends produce the same voices (espeak-ng at 22050 Hz, resampled to 8 kHz slin):
- "espeak-ng" (what "auto" picks when the command exists): `espeak-ng --stdout` in a
  subprocess per utterance; 20-35 ms per prompt here, deterministic (same text, same bytes),
  no state shared between utterances.
- "pyttsx3": `save_to_file` + `runAndWait` on libespeak-ng in this process; "auto" uses it
  only when the espeak-ng command is missing but the library is there.

Why not pyttsx3 by default: its espeak driver runs libespeak-ng in AUDIO_OUTPUT_RETRIEVAL
mode, where synthesis callbacks arrive on espeak's own thread and mutate pyttsx3's command
queue, busy flag and audio buffer without locks, while the caller polls every 10 ms. Even
with every call confined to one worker thread (as here) we saw, rarely, a render with 0.7 s
of extra audio and one that wrote no file at all; the output also differs run to run
(espeak's noise generator is never reset). A process per utterance has none of that.

Either way all work runs on one worker thread per TtsEngine: libespeak-ng keeps
process-wide state, and one thread bounds the CPU TTS takes from the call pipeline.
The event loop awaits `synthesize()` and never blocks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ivr.audio import pcm
from ivr.errors import EngineError

log = logging.getLogger(__name__)

# espeak-ng voice identifiers (`espeak-ng --voices`) per bridge language
DEFAULT_VOICES = {"en": "gmw/en-us", "ru": "zle/ru", "ko": "ko"}
# words per minute; espeak's own default (175) is a bit fast over a narrow-band phone line
DEFAULT_RATE = 160
DEFAULT_VOLUME = 1.0
DEFAULT_TIMEOUT_S = 30.0
# espeak ends every text with ~350 ms of silence: dead air before the caller's turn. Keep this much.
DEFAULT_TAIL_MS = 120
SILENCE_LEVEL = 100  # RMS (of 32768) below which a 10 ms window counts as silence
ESPEAK_RATE = 22050  # what espeak-ng (and so pyttsx3's save_to_file) writes

INSTALL_FIX = "install espeak-ng (`apt-get install espeak-ng`) and pyttsx3 (`pip install pyttsx3`)"


@dataclass(frozen=True)
class TtsParams:
    """How the engine speaks. `voices` maps a language ("en", "ru", "ko") to an espeak-ng voice."""

    voices: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_VOICES))
    rate: int = DEFAULT_RATE
    volume: float = DEFAULT_VOLUME
    backend: Literal["auto", "pyttsx3", "espeak-ng"] = "auto"  # auto: the espeak-ng command if present
    timeout_s: float = DEFAULT_TIMEOUT_S  # per synthesis; a hung engine raises EngineError
    tail_ms: int | None = DEFAULT_TAIL_MS  # trailing silence kept; None: keep espeak's own


def base_lang(lang: str) -> str:
    """'en-US' / 'en_us' / 'en' -> 'en'."""
    return lang.replace("_", "-").split("-")[0].lower()


class TtsEngine:
    """espeak-ng speech for the bridge: `await engine.synthesize(text, lang) -> bytes` (8 kHz slin).

    Construction is cheap; the engine starts on first use (or `start()`), raising EngineError
    with a fix when espeak-ng or pyttsx3 is missing. Call `close()` when done.
    """

    def __init__(self, params: TtsParams | None = None) -> None:
        self.params = params or TtsParams()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="tts")
        self._lock = threading.RLock()  # guards start-up state below
        self._backend: str | None = None
        self._version: str | None = None
        self._engine: Any = None  # pyttsx3 engine, touched only on the worker thread
        self._voice_ids: set[str] = set()
        self._tmpdir = Path(tempfile.mkdtemp(prefix="ivr-tts-"))
        self._broken: str | None = None  # set when a synthesis timed out: the worker may be stuck

    # ---- identity ---------------------------------------------------------------------------
    @property
    def version(self) -> str:
        """Engine identity for cache keys: espeak-ng version, back-end and rate."""
        if self._version is None and self.backend == "pyttsx3" and shutil.which("espeak-ng") is None:
            self._version = f"libespeak-ng {_library_version()}; pyttsx3; {self._settings()}"
        if self._version is None:
            self._version = f"espeak-ng {espeak_version()}; {self.backend}; {self._settings()}"
        return self._version

    def _settings(self) -> str:
        tail = "" if self.params.tail_ms is None else f"; tail {self.params.tail_ms}"
        return f"rate {self.params.rate}; vol {self.params.volume}{tail}"

    @property
    def backend(self) -> str:
        """The back-end in use ("pyttsx3" or "espeak-ng"); starts the engine if needed."""
        self.start()
        assert self._backend is not None
        return self._backend

    def voice(self, lang: str) -> str:
        """The espeak-ng voice for `lang`, or EngineError if none is configured or installed."""
        code = base_lang(lang)
        voice = self.params.voices.get(code) or self.params.voices.get(lang)
        if not voice:
            raise EngineError(
                f"no TTS voice configured for language {lang!r}",
                fix=f"add it to TtsParams.voices (configured: {', '.join(sorted(self.params.voices))})",
            )
        self.start()
        if voice.split("+")[0].lower() not in self._voice_ids:  # "en-us+f3": a variant of en-us
            raise EngineError(
                f"espeak-ng has no voice {voice!r} (for {lang!r})",
                fix="see `espeak-ng --voices` for installed voices, or install espeak-ng-data",
            )
        return voice

    # ---- life cycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Start the engine now (idempotent): checks espeak-ng, lists voices, initialises pyttsx3."""
        with self._lock:
            if self._backend is not None:
                return
            self._voice_ids = self._run(self._start_in_worker)
            log.info("TTS ready: %s via %s, %d voices", self.version, self._backend, len(self._voice_ids))

    def close(self) -> None:
        """Stop the worker thread and remove temporary files."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self._tmpdir, ignore_errors=True)

    def __enter__(self) -> TtsEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- synthesis --------------------------------------------------------------------------
    async def synthesize(self, text: str, lang: str) -> bytes:
        """Speak `text` in `lang`; returns 8 kHz 16-bit mono slin. Runs on the worker thread."""
        voice = await asyncio.to_thread(self.voice, lang)  # may start the engine: not on the loop
        future = self._submit(self._render_in_worker, text, voice)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.params.timeout_s)
        except TimeoutError:
            raise self._timed_out(text) from None

    def synthesize_sync(self, text: str, lang: str) -> bytes:
        """Blocking `synthesize` for scripts and the CLI (never call it from the event loop)."""
        return self._run(self._render_in_worker, text, self.voice(lang))

    # ---- worker-thread internals ------------------------------------------------------------
    def _submit(self, fn: Any, *args: Any) -> concurrent.futures.Future[Any]:
        if self._broken:
            raise EngineError(self._broken, fix="restart the process; check espeak-ng with `espeak-ng hello`")
        try:
            return self._executor.submit(fn, *args)
        except RuntimeError:
            raise EngineError("the TTS engine is closed", fix="create a new TtsEngine") from None

    def _run(self, fn: Any, *args: Any) -> Any:
        try:
            return self._submit(fn, *args).result(timeout=self.params.timeout_s)
        except concurrent.futures.TimeoutError:
            raise self._timed_out(str(args[0]) if args else fn.__name__) from None

    def _timed_out(self, what: str) -> EngineError:
        self._broken = f"TTS engine did not finish within {self.params.timeout_s:.0f} s ({what[:40]!r})"
        return EngineError(self._broken, fix="check espeak-ng with `espeak-ng hello`; try backend espeak-ng")

    def _start_in_worker(self) -> set[str]:
        have_command = shutil.which("espeak-ng") is not None
        if self.params.backend == "espeak-ng" or (self.params.backend == "auto" and have_command):
            if not have_command:
                raise EngineError("espeak-ng is not installed", fix=INSTALL_FIX)
            self._backend = "espeak-ng"
            return _espeak_voice_ids()
        # pyttsx3 asked for, or "auto" without the command (libespeak-ng may still be there)
        self._engine = _init_pyttsx3(self.params)
        self._backend = "pyttsx3"
        return _espeak_voice_ids() or _pyttsx3_voice_ids(self._engine)

    def _render_in_worker(self, text: str, voice: str) -> bytes:
        text = " ".join(text.split())
        if not text:
            return b""  # pyttsx3 asserts on empty text; silence is the honest answer
        started = time.perf_counter()
        if self._backend == "pyttsx3":
            wav = self._pyttsx3_wav(text, voice)
        else:
            wav = self._espeak_wav(text, voice)
        audio = pcm.read_wav(wav)
        if self.params.tail_ms is not None:
            audio = trim_trailing_silence(audio, self.params.tail_ms)
        log.debug("TTS %r (%s): %.0f ms", text[:40], voice, (time.perf_counter() - started) * 1000)
        return audio

    def _pyttsx3_wav(self, text: str, voice: str) -> bytes:
        engine = self._engine
        path = self._tmpdir / "out.wav"
        path.unlink(missing_ok=True)
        try:
            engine.setProperty("voice", voice)
            engine.save_to_file(text, str(path))
            engine.runAndWait()
            return path.read_bytes()
        except FileNotFoundError:
            raise EngineError(
                f"pyttsx3 wrote no audio for {text[:40]!r}", fix="use TtsParams(backend='espeak-ng')"
            ) from None
        except Exception as exc:  # the driver raises bare RuntimeError/ValueError
            raise EngineError(f"pyttsx3 failed: {exc}", fix="try TtsParams(backend='espeak-ng')") from exc

    def _espeak_wav(self, text: str, voice: str) -> bytes:
        volume = str(max(0, min(200, round(self.params.volume * 100))))
        cmd = ["espeak-ng", "-v", voice, "-s", str(self.params.rate), "-a", volume, "--stdout", text]
        try:
            done = subprocess.run(cmd, capture_output=True, timeout=self.params.timeout_s, check=True)
        except FileNotFoundError:
            raise EngineError("espeak-ng is not installed", fix=INSTALL_FIX) from None
        except subprocess.CalledProcessError as exc:
            message = exc.stderr.decode(errors="replace").strip()
            raise EngineError(f"espeak-ng failed: {message}", fix="check the voice name") from None
        except subprocess.TimeoutExpired:
            raise EngineError("espeak-ng did not finish", fix="check `espeak-ng hello`") from None
        return _fix_stream_wav_header(done.stdout)


# ---- helpers ------------------------------------------------------------------------------
def trim_trailing_silence(audio: bytes, keep_ms: int, level: float = SILENCE_LEVEL) -> bytes:
    """Cut slin audio `keep_ms` after the last 10 ms window louder than `level` (RMS)."""
    window = pcm.SAMPLE_RATE // 100 * pcm.SAMPLE_WIDTH  # 10 ms in bytes
    end = len(audio) - len(audio) % window
    while end > 0 and pcm.rms(audio[end - window : end]) < level:
        end -= window
    if end == 0:
        return audio  # all silence: leave it alone
    keep = end + pcm.SAMPLE_RATE * keep_ms // 1000 * pcm.SAMPLE_WIDTH
    return audio[: min(len(audio), keep)]


_version_cache: str | None = None


def espeak_version() -> str:
    """`espeak-ng --version` as '1.51' (cached), or EngineError if espeak-ng is missing."""
    global _version_cache
    if _version_cache is None:
        try:
            out = subprocess.run(
                ["espeak-ng", "--version"], capture_output=True, text=True, timeout=10, check=True
            ).stdout
        except (FileNotFoundError, subprocess.SubprocessError) as exc:
            raise EngineError(f"espeak-ng is not usable ({exc})", fix=INSTALL_FIX) from None
        # "eSpeak NG text-to-speech: 1.51  Data at: /usr/lib/..."
        _version_cache = out.split(":", 1)[1].split()[0] if ":" in out else out.strip()
    return _version_cache


def _library_version() -> str:
    """libespeak-ng's own version (when only the library, not the command, is installed)."""
    try:
        from pyttsx3.drivers import _espeak

        return (_espeak.Info() or b"?").decode(errors="replace")
    except Exception:  # loading the library failed: start() has already said so
        return "?"


def _espeak_voice_ids() -> set[str]:
    """Voice identifiers and language codes that `espeak-ng -v` accepts."""
    try:
        out = subprocess.run(["espeak-ng", "--voices"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (FileNotFoundError, subprocess.SubprocessError):
        return set()
    ids: set[str] = set()
    # Pty Language       Age/Gender VoiceName          File                 Other Languages
    for line in out.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 5:
            ids.update({cols[1].lower(), cols[4].lower()})
    return ids


def _pyttsx3_voice_ids(engine: Any) -> set[str]:
    ids: set[str] = set()
    for voice in engine.getProperty("voices"):
        ids.add(voice.id.lower())
        ids.update(lang.lower() for lang in voice.languages or ())
    return ids


def _init_pyttsx3(params: TtsParams) -> Any:
    try:
        import pyttsx3
        import pyttsx3.drivers.espeak as espeak_driver
    except Exception as exc:  # ImportError, or OSError when libespeak-ng is missing
        raise EngineError(f"pyttsx3 with the espeak driver cannot be loaded ({exc})", fix=INSTALL_FIX) from exc
    # The driver prints "Audio saved to ..." after every save_to_file; silence it for this
    # module only (a module global shadows the builtin), not sys.stdout for the whole process.
    espeak_driver.print = lambda *args, **kwargs: None  # type: ignore[attr-defined]
    try:
        engine = pyttsx3.init("espeak")
        engine.setProperty("rate", params.rate)
        engine.setProperty("volume", params.volume)
    except Exception as exc:
        raise EngineError(f"pyttsx3 failed to initialise espeak-ng ({exc})", fix=INSTALL_FIX) from exc
    return engine


def _fix_stream_wav_header(wav: bytes) -> bytes:
    """espeak-ng --stdout writes 0x7fffffff sizes (it streams); patch them so `wave` reads exactly."""
    if len(wav) < 44 or wav[:4] != b"RIFF":
        raise EngineError("espeak-ng wrote no WAV audio", fix="check `espeak-ng --stdout hello | file -`")
    data_at = wav.find(b"data", 12)
    if data_at < 0:
        raise EngineError("espeak-ng wrote a WAV without a data chunk", fix="check the espeak-ng install")
    size = len(wav) - (data_at + 8)
    size -= size % 2
    return (
        wav[:4]
        + (data_at + size).to_bytes(4, "little")
        + wav[8 : data_at + 4]
        + size.to_bytes(4, "little")
        + wav[data_at + 8 : data_at + 8 + size]
    )
