"""The TTS engine on the real espeak-ng (pyttsx3 driver and the espeak-ng command)."""

from __future__ import annotations

import asyncio
import re
import threading

import pytest

from ivr.audio import pcm
from ivr.errors import EngineError
from ivr.tts import engine as engine_module
from ivr.tts.engine import TtsEngine, TtsParams, base_lang, trim_trailing_silence

TEXTS = {
    "en": "Your balance is twelve dollars.",
    "ru": "Ваш баланс двенадцать рублей.",
    "ko": "잔액은 만 원입니다.",
}


@pytest.fixture(scope="module")
def tts():
    with TtsEngine() as engine:
        yield engine


@pytest.mark.parametrize("lang", ["en", "ru", "ko"])
def test_each_language_speaks_8khz_slin(tts, lang):
    audio = asyncio.run(tts.synthesize(TEXTS[lang], lang))
    assert len(audio) % pcm.SAMPLE_WIDTH == 0
    assert 0.8 < pcm.duration_s(audio) < 6.0  # a short sentence, not silence, not garbage
    assert pcm.rms(audio) > 500  # speech energy, not digital silence
    frames = pcm.frames(audio)
    assert all(len(f) == pcm.FRAME_BYTES for f in frames)


def test_version_names_espeak_and_settings(tts):
    assert re.match(r"espeak-ng \d+\.\d+.*; espeak-ng; rate 160; vol 1\.0; tail 120$", tts.version)
    assert tts.backend == "espeak-ng"  # "auto" with the espeak-ng command installed


def test_command_backend_is_deterministic(tts):
    """Same text, same bytes: what makes the prompt cache and audio fixtures reproducible."""
    assert tts.synthesize_sync(TEXTS["en"], "en") == tts.synthesize_sync(TEXTS["en"], "en")


def test_language_aliases_pick_the_same_voice(tts):
    assert base_lang("en-US") == "en" and base_lang("ko_KR") == "ko"
    assert tts.voice("en-US") == tts.voice("en") == "gmw/en-us"
    assert tts.synthesize_sync("hello", "en-us") == tts.synthesize_sync("hello", "en")


def test_blank_text_is_silence_not_an_error(tts):
    assert tts.synthesize_sync("   ", "en") == b""


def test_concurrent_requests_are_serialised_on_one_worker(tts):
    """asyncio tasks and threads all funnel through one worker, and each gets its own audio."""
    texts = [
        "One.",
        "One two three.",
        "One two three four five six.",
        "One two three four five six seven eight nine ten.",
        "Please hold while I connect you to the next available operator right now.",
    ]
    reference = [tts.synthesize_sync(t, "en") for t in texts]
    durations = [pcm.duration_s(a) for a in reference]
    assert sorted(durations) == durations and durations[-1] > 2 * durations[1]

    async def many() -> list[bytes]:
        return await asyncio.gather(*(tts.synthesize(t, "en") for t in texts))

    from_threads: dict[int, bytes] = {}
    workers: set[str] = set()
    render = tts._render_in_worker

    def spy(text: str, voice: str) -> bytes:
        workers.add(threading.current_thread().name)
        return render(text, voice)

    tts._render_in_worker = spy  # type: ignore[method-assign]
    try:

        def in_thread(i: int) -> None:
            from_threads[i] = tts.synthesize_sync(texts[i], "en")

        threads = [threading.Thread(target=in_thread, args=(i,)) for i in range(len(texts))]
        for t in threads:
            t.start()
        from_tasks = asyncio.run(many())
        for t in threads:
            t.join()
    finally:
        del tts._render_in_worker
    assert len(workers) == 1 and next(iter(workers)).startswith("tts")
    assert from_tasks == reference
    assert [from_threads[i] for i in range(len(texts))] == reference


def test_pyttsx3_backend_speaks(tts):
    """The in-process pyttsx3 back-end (used when only libespeak-ng is installed) says the same text.

    Its length varies a little from run to run (see the module docstring), so compare loosely.
    """
    with TtsEngine(TtsParams(backend="pyttsx3")) as inproc:
        assert inproc.backend == "pyttsx3" and "; pyttsx3;" in inproc.version
        audio = asyncio.run(inproc.synthesize(TEXTS["en"], "en"))
    reference = tts.synthesize_sync(TEXTS["en"], "en")
    assert pcm.rms(audio) > 500
    assert 0.7 < pcm.duration_s(audio) / pcm.duration_s(reference) < 1.5


def test_unknown_language_says_how_to_fix(tts):
    with pytest.raises(EngineError, match="no TTS voice configured for language 'de'") as info:
        asyncio.run(tts.synthesize("Hallo", "de"))
    assert "TtsParams.voices" in str(info.value)


def test_missing_voice_says_how_to_fix():
    with TtsEngine(TtsParams(voices={"en": "no-such-voice"})) as engine:
        with pytest.raises(EngineError, match="espeak-ng has no voice 'no-such-voice'") as info:
            engine.synthesize_sync("hello", "en")
    assert "espeak-ng --voices" in str(info.value)


def test_missing_espeak_ng_is_a_clear_engine_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no espeak-ng on PATH
    monkeypatch.setattr(engine_module, "_version_cache", None)
    with TtsEngine(TtsParams(backend="espeak-ng")) as engine:
        with pytest.raises(EngineError, match="espeak-ng is not installed") as info:
            asyncio.run(engine.synthesize("hello", "en"))
        assert "apt-get install espeak-ng" in str(info.value)
        with pytest.raises(EngineError, match="espeak-ng is not installed"):
            _ = engine.version


def test_closed_engine_refuses_work():
    engine = TtsEngine()
    engine.synthesize_sync("hi", "en")
    engine.close()
    with pytest.raises(EngineError, match="closed"):
        engine.synthesize_sync("hi", "en")


def _wer(ref: str, hyp: str) -> float:
    from rapidfuzz.distance import Levenshtein

    def words(text: str) -> list[str]:
        return re.findall(r"[a-z0-9']+", text.lower().replace("12", "twelve"))

    return Levenshtein.distance(words(ref), words(hyp)) / len(words(ref))


@pytest.mark.slow
def test_whisper_understands_the_english_voice(tts):
    """What the caller hears is intelligible: Whisper tiny.en transcribes the 8 kHz prompts back.

    Measured: WER about 0.3-0.4 over these prompts (espeak's robotic voice at 8 kHz is hard
    for the tiny model; people understand it better). The bound catches broken audio
    (wrong rate, clipping, silence), which gives WER near 1.
    """
    whisper = pytest.importorskip("ivr.asr.whisper")
    if not whisper.whisper_available():
        pytest.skip("faster-whisper with the bundled tiny.en weights is not installed")
    asr = whisper.WhisperEngine()
    prompts = [
        "Welcome to Demo Mobile.",
        "How can I help you?",
        "Thank you for calling. Goodbye.",
        "Your balance is twelve dollars.",
        "Sorry, I did not get that.",
        "Let me put you through to an operator who can help. Please hold.",
    ]
    errors = [_wer(p, asr.transcribe(tts.synthesize_sync(p, "en"))[0]) for p in prompts]
    assert sum(errors) / len(errors) < 0.5, errors


def test_trailing_silence_is_trimmed_to_the_tail():
    import numpy as np

    t = np.arange(8000) / 8000
    tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes()  # 1 s
    trimmed = trim_trailing_silence(tone + pcm.silence(400), keep_ms=120)
    assert len(trimmed) == len(tone) + len(pcm.silence(120))
    assert trim_trailing_silence(pcm.silence(300), keep_ms=120) == pcm.silence(300)
    assert trim_trailing_silence(tone, keep_ms=120) == tone


def test_prompts_end_without_dead_air(tts):
    with TtsEngine(TtsParams(tail_ms=None)) as untrimmed:
        raw = untrimmed.synthesize_sync(TEXTS["en"], "en")
    trimmed = tts.synthesize_sync(TEXTS["en"], "en")
    assert raw.startswith(trimmed)
    assert 0.15 < pcm.duration_s(raw) - pcm.duration_s(trimmed) < 0.4  # espeak's ~350 ms end pause
    assert pcm.rms(trimmed[-pcm.FRAME_BYTES * 5 :]) < pcm.rms(trimmed)  # the tail is quiet
