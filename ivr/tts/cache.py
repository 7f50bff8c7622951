"""Prompt cache: speech rendered once, read many times.

Layout under `prompts_dir` (the repository's prompts/ by default):

    prompts/<lang>.yaml                 prompt_id: "text with {placeholders}"  (owned by the flows)
    prompts/cache/<lang>/<key>.slin     8 kHz slin audio, key = sha256(text, voice, engine version)
    prompts/cache/<lang>/index.json     key -> {text, prompt_id, voice, engine, bytes, ms}
    prompts/recorded/<lang>/<id>.wav    optional human recording of a fixed prompt: played instead of TTS

The knowledge base's answers (faq/<lang>/*.yaml, prompt ids `faq.<id>`) are fixed prompts too when the
cache is given `knowledge_dir`: built, stored and replaceable by recordings like the flow's own.

"Fixed" prompts (no placeholders) are rendered by `ivr prompts build` and stored on disk.
Texts with filled placeholders (amounts, numbers) come through `get()` at run time: a miss
renders and keeps the audio in a bounded in-memory LRU only, because such texts are
unbounded in number and may carry caller data that must not pile up on disk.
A change of voice, rate or espeak-ng version changes the key, so stale audio is never played.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ivr.audio import pcm
from ivr.config import LANGUAGES, PROJECT_ROOT
from ivr.errors import AudioError, ConfigError, EngineError
from ivr.tts.engine import TtsEngine, base_lang

log = logging.getLogger(__name__)

DEFAULT_PROMPTS_DIR = PROJECT_ROOT / "prompts"
CACHE_SUBDIR = "cache"
RECORDED_SUBDIR = "recorded"  # prompts/recorded/<lang>/<prompt_id>.wav: human recordings win over TTS
INDEX_FILE = "index.json"
AUDIO_SUFFIX = ".slin"
DEFAULT_MEMORY_BYTES = 32 * 1024 * 1024  # ~35 minutes of 8 kHz slin
PLACEHOLDER = re.compile(r"\{[^{}]*\}")
LANG_FILE = re.compile(r"^[a-z]{2}(?:[-_][A-Za-z]{2,4})?$")  # en.yaml, pt-BR.yaml; not ivr.yaml

KNOWN_KEYS = 10_000  # (lang, text) -> key entries kept for the no-thread memory-hit path

@dataclass(frozen=True)
class CacheParams:
    memory_bytes: int = DEFAULT_MEMORY_BYTES  # LRU bound on audio kept in memory


@dataclass
class BuildStats:
    """What `PromptCache.build` did for one language."""

    lang: str
    prompts: int = 0  # fixed prompts in prompts/<lang>.yaml
    rendered: int = 0
    cached: int = 0  # already on disk with the current key
    skipped: int = 0  # prompts with placeholders (rendered at run time)
    removed: int = 0  # stale files (old keys) deleted
    audio_bytes: int = 0
    seconds: float = 0.0
    render_ms: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class CacheEntry:
    key: str
    lang: str
    text: str
    prompt_id: str
    voice: str
    engine: str
    bytes: int
    duration_ms: int


def is_fixed(text: str) -> bool:
    """True when the prompt text has no `{placeholder}` to fill at run time."""
    return PLACEHOLDER.search(text) is None


def load_prompts(prompts_dir: str | Path, lang: str) -> dict[str, str]:
    """Read prompts/<lang>.yaml (a flat mapping prompt_id -> text); {} if the file does not exist."""
    path = Path(prompts_dir) / f"{lang}.yaml"
    if not path.exists():
        return {}
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}", fix="fix the line shown") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping prompt_id: text", fix="see prompts/en.yaml")
    bad = [str(k) for k, v in raw.items() if not isinstance(v, str)]
    if bad:
        raise ConfigError(f"{path}: prompts {', '.join(bad)} are not text", fix="quote each prompt text")
    return {str(k): v for k, v in raw.items()}


class PromptCache:
    """Rendered prompts on disk plus an in-memory LRU, in front of a TtsEngine.

    `await cache.get(text, lang)` returns 8 kHz slin for the full text (placeholders already
    filled): from memory, else from disk, else rendered by the engine (EngineError if it
    cannot; the caller then falls back to recorded prompts or the live line).
    """

    def __init__(
        self,
        prompts_dir: str | Path = DEFAULT_PROMPTS_DIR,
        engine: TtsEngine | None = None,
        params: CacheParams | None = None,
        knowledge_dir: str | Path | None = None,
    ) -> None:
        self.prompts_dir = Path(prompts_dir)
        self.knowledge_dir = Path(knowledge_dir) if knowledge_dir is not None else None
        self.cache_dir = self.prompts_dir / CACHE_SUBDIR
        self.engine = engine or TtsEngine()
        self.params = params or CacheParams()
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        self._memory_bytes = 0
        self._indexes: dict[str, dict[str, dict[str, Any]]] = {}
        self._lock = threading.Lock()  # memory LRU and index files
        self._inflight: dict[str, asyncio.Future[bytes]] = {}
        self._keys: OrderedDict[tuple[str, str], str] = OrderedDict()  # (lang, text) -> key, for memory hits
        self.hits = 0
        self.misses = 0
        self._fixed: dict[str, dict[str, str]] = {}  # lang -> normalised fixed text -> prompt_id

    def close(self) -> None:
        """Stop the TTS engine's worker (at the end of the process)."""
        self.engine.close()

    # ---- keys and lookups -------------------------------------------------------------------
    def key(self, text: str, lang: str) -> str:
        """sha256 of (text, voice, engine version): the cache identity of one rendering."""
        blob = json.dumps([" ".join(text.split()), self.engine.voice(lang), self.engine.version])
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    async def get(self, text: str, lang: str) -> bytes:
        """Audio for `text` in `lang`: a recording of that flow prompt if there is one, else cached
        or rendered speech (a miss of a dynamic text is kept in memory, not on disk)."""
        lang = base_lang(lang)
        audio = self._memory_hit(text, lang)
        if audio is not None:  # the common case mid-call: no thread hop, no queueing behind ASR jobs
            return audio
        recorded = await asyncio.to_thread(self.recorded, text, lang)
        if recorded is not None:
            return recorded
        try:
            key = await asyncio.to_thread(self.key, text, lang)
        except EngineError:
            # no engine (espeak-ng gone, voice missing): audio rendered earlier still plays
            audio = await asyncio.to_thread(self.rendered_earlier, text, lang)
            if audio is None:
                raise
            return audio
        self._known_key(text, lang, key)
        audio = await asyncio.to_thread(self._lookup, key, lang)
        if audio is not None:
            return audio
        # one rendering per key even when several calls ask at once
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            audio = await self.engine.synthesize(text, lang)
            self._remember(key, audio)
            prompt_id = self._fixed_prompt_id(text, lang)
            if prompt_id is not None:  # a flow prompt `ivr prompts build` had not rendered yet
                try:
                    await asyncio.to_thread(self._store, key, lang, text, prompt_id, audio)
                except OSError as exc:  # read-only install: the call still gets its audio
                    log.warning("cannot keep prompt %r in %s: %s", prompt_id, self.cache_dir, exc)
            future.set_result(audio)
            return audio
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it, nobody else must
            raise
        finally:
            self._inflight.pop(key, None)

    def _known_key(self, text: str, lang: str, key: str) -> None:
        with self._lock:
            self._keys[(lang, " ".join(text.split()))] = key
            while len(self._keys) > KNOWN_KEYS:
                self._keys.popitem(last=False)

    def _memory_hit(self, text: str, lang: str) -> bytes | None:
        """Audio already in memory for a text whose key is known, unless a recording now exists
        for it (one stat: a recording added while running still wins)."""
        normalized = " ".join(text.split())
        with self._lock:
            key = self._keys.get((lang, normalized))
        if key is None:
            return None
        prompt_id = self._fixed.get(lang, {}).get(normalized)
        if prompt_id is not None and (self.prompts_dir / RECORDED_SUBDIR / lang / f"{prompt_id}.wav").exists():
            return None
        return self._from_memory(key)

    def get_sync(self, text: str, lang: str, *, persist: bool = False, prompt_id: str = "") -> bytes:
        """Blocking get for the CLI and scripts; `persist` also stores a miss on disk."""
        lang = base_lang(lang)
        key = self.key(text, lang)
        audio = self._lookup(key, lang)
        if audio is None:
            audio = self.engine.synthesize_sync(text, lang)
            self._remember(key, audio)
            if persist:
                self._store(key, lang, text, prompt_id, audio)
        return audio

    def _fixed_prompt_id(self, text: str, lang: str) -> str | None:
        """The prompt id if `text` is a fixed prompt of prompts/<lang>.yaml (those may go to disk)."""
        if lang not in self._fixed:
            try:
                prompts = self.fixed_sources(lang)
            except ConfigError:
                prompts = {}  # a broken prompt file is reported by `ivr check`, not mid-call
            self._fixed[lang] = {" ".join(t.split()): pid for pid, t in prompts.items() if is_fixed(t)}
        return self._fixed[lang].get(" ".join(text.split()))

    def fixed_sources(self, lang: str) -> dict[str, str]:
        """prompt id -> text of prompts/<lang>.yaml plus the knowledge base's answers (faq.<id>)."""
        prompts = load_prompts(self.prompts_dir, lang)
        if self.knowledge_dir is not None:
            from ivr.nlu.knowledge import load_knowledge

            problems: list[str] = []  # a broken file is reported by `ivr check`; the good entries still count
            prompts.update(load_knowledge(lang, self.knowledge_dir, problems).prompts())
        return prompts

    def recorded(self, text: str, lang: str) -> bytes | None:
        """A human recording of this fixed flow prompt, prompts/recorded/<lang>/<prompt_id>.wav
        (any rate; converted to 8 kHz slin), or None."""
        prompt_id = self._fixed_prompt_id(text, lang)
        if prompt_id is None:
            return None
        path = self.prompts_dir / RECORDED_SUBDIR / lang / f"{prompt_id}.wav"
        try:
            stamp = path.stat().st_mtime_ns
        except FileNotFoundError:
            return None
        key = f"recorded:{lang}:{prompt_id}:{stamp}"  # a replaced file is read again
        audio = self._from_memory(key)
        if audio is not None:
            return audio
        try:
            audio = pcm.read_wav(path)
        except AudioError as exc:  # a bad recording must not silence the prompt: speak it instead
            log.error("recorded prompt unusable, using TTS: %s", exc)
            return None
        self._remember(key, audio)
        return audio

    def rendered_earlier(self, text: str, lang: str) -> bytes | None:
        """Audio on disk for exactly this text, whatever voice/engine made it (fallback when the
        engine cannot start); None if there is none."""
        wanted = " ".join(text.split())
        with self._lock:
            keys = [
                k
                for k, meta in self._index(base_lang(lang)).items()
                if " ".join(str(meta.get("text", "")).split()) == wanted
            ]
        for key in keys:
            try:
                audio = (self.cache_dir / base_lang(lang) / f"{key}{AUDIO_SUFFIX}").read_bytes()
            except FileNotFoundError:
                continue
            log.warning("TTS unavailable: playing the earlier rendering of %r", text[:40])
            return audio
        return None

    def _from_memory(self, key: str) -> bytes | None:
        """The LRU entry for `key` (counted as a hit and made most recent), or None."""
        with self._lock:
            audio = self._memory.get(key)
            if audio is not None:
                self._memory.move_to_end(key)
                self.hits += 1
            return audio

    def _lookup(self, key: str, lang: str) -> bytes | None:
        audio = self._from_memory(key)
        if audio is not None:
            return audio
        path = self.cache_dir / lang / f"{key}{AUDIO_SUFFIX}"
        try:
            audio = path.read_bytes()
        except FileNotFoundError:
            with self._lock:
                self.misses += 1
            return None
        self._remember(key, audio)
        with self._lock:
            self.hits += 1
        return audio

    def _remember(self, key: str, audio: bytes) -> None:
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                return
            self._memory[key] = audio
            self._memory_bytes += len(audio)
            while self._memory_bytes > self.params.memory_bytes and len(self._memory) > 1:
                _, dropped = self._memory.popitem(last=False)
                self._memory_bytes -= len(dropped)

    @property
    def memory_bytes(self) -> int:
        """Audio bytes currently held in the in-memory LRU."""
        return self._memory_bytes

    # ---- disk -------------------------------------------------------------------------------
    def _index(self, lang: str) -> dict[str, dict[str, Any]]:
        if lang not in self._indexes:
            path = self.cache_dir / lang / INDEX_FILE
            try:
                self._indexes[lang] = json.loads(path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                self._indexes[lang] = {}
            except (json.JSONDecodeError, UnicodeDecodeError):
                log.warning("%s is corrupt; rebuilding it", path)
                self._indexes[lang] = {}
        return self._indexes[lang]

    def _write_index(self, lang: str) -> None:
        path = self.cache_dir / lang / INDEX_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._index(lang), indent=1, ensure_ascii=False, sort_keys=True))
        os.replace(tmp, path)  # atomic: a reader never sees half an index

    def _store(self, key: str, lang: str, text: str, prompt_id: str, audio: bytes) -> None:
        folder = self.cache_dir / lang
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{key}.tmp"
        tmp.write_bytes(audio)
        os.replace(tmp, folder / f"{key}{AUDIO_SUFFIX}")
        with self._lock:
            self._index(lang)[key] = {
                "text": text,
                "prompt_id": prompt_id,
                "voice": self.engine.voice(lang),
                "engine": self.engine.version,
                "bytes": len(audio),
                "ms": len(audio) * 1000 // 16000,
            }
            self._write_index(lang)

    def entries(self, lang: str | None = None) -> list[CacheEntry]:
        """What is rendered on disk, per language (all languages found if `lang` is None)."""
        langs = [base_lang(lang)] if lang else self._disk_langs()
        out = []
        for code in langs:
            for key, meta in sorted(self._index(code).items(), key=lambda kv: kv[1].get("prompt_id", "")):
                out.append(
                    CacheEntry(
                        key=key,
                        lang=code,
                        text=meta.get("text", ""),
                        prompt_id=meta.get("prompt_id", ""),
                        voice=meta.get("voice", ""),
                        engine=meta.get("engine", ""),
                        bytes=int(meta.get("bytes", 0)),
                        duration_ms=int(meta.get("ms", 0)),
                    )
                )
        return out

    def _disk_langs(self) -> list[str]:
        if not self.cache_dir.is_dir():
            return []
        return sorted(p.name for p in self.cache_dir.iterdir() if p.is_dir())

    def prompt_langs(self) -> list[str]:
        """Languages with a prompts/<lang>.yaml file."""
        found = {p.stem for p in self.prompts_dir.glob("*.yaml") if LANG_FILE.match(p.stem)}
        return [lang for lang in LANGUAGES if lang in found] + sorted(found - set(LANGUAGES))

    # ---- build ------------------------------------------------------------------------------
    def build(self, lang: str, *, prune: bool = True) -> BuildStats:
        """Render every fixed prompt of prompts/<lang>.yaml that is not on disk with its current key.

        With `prune`, audio files whose key no longer matches a fixed prompt are deleted.
        """
        lang = base_lang(lang)
        started = time.perf_counter()
        stats = BuildStats(lang=lang)
        wanted: set[str] = set()
        for prompt_id, text in self.fixed_sources(lang).items():
            if not is_fixed(text):
                stats.skipped += 1
                continue
            stats.prompts += 1
            key = self.key(text, lang)
            wanted.add(key)
            path = self.cache_dir / lang / f"{key}{AUDIO_SUFFIX}"
            if path.exists() and key in self._index(lang):
                stats.cached += 1
                stats.audio_bytes += path.stat().st_size
                continue
            t0 = time.perf_counter()
            audio = self.engine.synthesize_sync(text, lang)
            stats.render_ms.append((time.perf_counter() - t0) * 1000)
            self._store(key, lang, text, prompt_id, audio)
            self._remember(key, audio)
            stats.rendered += 1
            stats.audio_bytes += len(audio)
        if prune:
            stats.removed = self._prune(lang, wanted)
        stats.seconds = time.perf_counter() - started
        return stats

    def _prune(self, lang: str, keep: set[str]) -> int:
        folder = self.cache_dir / lang
        if not folder.is_dir():
            return 0
        removed = 0
        for path in folder.glob(f"*{AUDIO_SUFFIX}"):
            if path.stem not in keep:
                path.unlink()
                removed += 1
        with self._lock:
            index = self._index(lang)
            for key in [k for k in index if k not in keep]:
                del index[key]
            self._write_index(lang)
        return removed
