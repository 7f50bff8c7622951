"""The prompt cache over the real TTS engine, on temporary prompt files and the shipped ones."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from ivr.audio import pcm
from ivr.config import PROJECT_ROOT
from ivr.errors import ConfigError, EngineError
from ivr.tts.cache import CacheParams, PromptCache, is_fixed, load_prompts
from ivr.tts.engine import TtsEngine, TtsParams

PROMPTS_EN = """\
welcome: "Welcome to Demo Mobile."
bye: "Thank you for calling. Goodbye."
balance_is: "Your balance is {balance_text}."
"""


@pytest.fixture(scope="module")
def tts():
    with TtsEngine() as engine:
        yield engine


@pytest.fixture
def prompts_dir(tmp_path):
    (tmp_path / "en.yaml").write_text(PROMPTS_EN, encoding="utf-8")
    (tmp_path / "ko.yaml").write_text('hello: "안녕하세요."\n', encoding="utf-8")
    return tmp_path


class CountingEngine:
    """The real engine, counting how often it is asked to speak (to tell hits from renders)."""

    def __init__(self, engine: TtsEngine) -> None:
        self.engine, self.calls = engine, 0
        self.version = engine.version

    def voice(self, lang: str) -> str:
        return self.engine.voice(lang)

    async def synthesize(self, text: str, lang: str) -> bytes:
        self.calls += 1
        return await self.engine.synthesize(text, lang)

    def synthesize_sync(self, text: str, lang: str) -> bytes:
        self.calls += 1
        return self.engine.synthesize_sync(text, lang)


def test_build_renders_fixed_prompts_once(prompts_dir, tts):
    engine = CountingEngine(tts)
    cache = PromptCache(prompts_dir, engine)  # type: ignore[arg-type]
    stats = cache.build("en")
    assert (stats.prompts, stats.rendered, stats.cached, stats.skipped) == (2, 2, 0, 1)
    assert engine.calls == 2 and len(stats.render_ms) == 2
    files = sorted((prompts_dir / "cache" / "en").glob("*.slin"))
    assert [f.stem for f in files] == sorted(
        [cache.key("Welcome to Demo Mobile.", "en"), cache.key("Thank you for calling. Goodbye.", "en")]
    )
    assert stats.audio_bytes == sum(f.stat().st_size for f in files)
    index = json.loads((prompts_dir / "cache" / "en" / "index.json").read_text())
    assert {meta["prompt_id"] for meta in index.values()} == {"welcome", "bye"}
    assert all(meta["voice"] == "gmw/en-us" and meta["engine"] == tts.version for meta in index.values())

    again = PromptCache(prompts_dir, engine).build("en")  # type: ignore[arg-type]
    assert (again.rendered, again.cached) == (0, 2) and engine.calls == 2


def test_get_reads_built_prompts_from_disk_without_the_engine(prompts_dir, tts):
    PromptCache(prompts_dir, tts).build("en")
    engine = CountingEngine(tts)
    fresh = PromptCache(prompts_dir, engine)  # type: ignore[arg-type]
    audio = asyncio.run(fresh.get("Welcome to Demo Mobile.", "en"))
    assert engine.calls == 0 and fresh.hits == 1
    assert 0.5 < pcm.duration_s(audio) < 4 and pcm.rms(audio) > 500


def test_dynamic_text_renders_once_and_stays_off_disk(prompts_dir, tts):
    engine = CountingEngine(tts)
    cache = PromptCache(prompts_dir, engine)  # type: ignore[arg-type]
    text = "Your balance is 4 dollars and 20 cents."

    async def twice() -> tuple[bytes, bytes]:
        return await cache.get(text, "en"), await cache.get(text, "en-US")

    first, second = asyncio.run(twice())
    assert first == second and engine.calls == 1 and (cache.misses, cache.hits) == (1, 1)
    assert not list((prompts_dir / "cache").rglob("*.slin"))  # caller data never piles up on disk


def test_concurrent_misses_render_once(prompts_dir, tts):
    engine = CountingEngine(tts)
    cache = PromptCache(prompts_dir, engine)  # type: ignore[arg-type]

    async def together() -> list[bytes]:
        return await asyncio.gather(*(cache.get("You have 3 new messages.", "en") for _ in range(5)))

    results = asyncio.run(together())
    assert engine.calls == 1 and all(r == results[0] for r in results)


def test_memory_is_bounded_lru(prompts_dir, tts):
    cache = PromptCache(prompts_dir, tts, CacheParams(memory_bytes=60_000))

    async def fill() -> None:
        for n in range(8):
            await cache.get(f"Your code is {n}.", "en")

    asyncio.run(fill())
    assert 0 < cache.memory_bytes <= 60_000


def test_changing_the_voice_settings_changes_the_keys(prompts_dir, tts):
    cache = PromptCache(prompts_dir, tts)
    cache.build("en")
    with TtsEngine(TtsParams(rate=130)) as slower:
        other = PromptCache(prompts_dir, slower)
        assert other.key("Welcome to Demo Mobile.", "en") != cache.key("Welcome to Demo Mobile.", "en")
        stats = other.build("en")  # new keys: re-rendered, the old audio pruned
        assert (stats.rendered, stats.removed) == (2, 2)
        assert {e.engine for e in other.entries("en")} == {slower.version}


def test_edited_prompt_is_rerendered_and_stale_audio_pruned(prompts_dir, tts):
    cache = PromptCache(prompts_dir, tts)
    cache.build("en")
    (prompts_dir / "en.yaml").write_text(PROMPTS_EN.replace("Goodbye.", "Have a nice day."), encoding="utf-8")
    stats = PromptCache(prompts_dir, tts).build("en")
    assert (stats.rendered, stats.cached, stats.removed) == (1, 1, 1)
    texts = {e.text for e in PromptCache(prompts_dir, tts).entries("en")}
    assert texts == {"Welcome to Demo Mobile.", "Thank you for calling. Have a nice day."}


def test_languages_and_listing(prompts_dir, tts):
    cache = PromptCache(prompts_dir, tts)
    assert cache.prompt_langs() == ["en", "ko"]
    cache.build("ko")
    (entry,) = cache.entries()
    assert (entry.lang, entry.prompt_id, entry.voice) == ("ko", "hello", "ko") and entry.duration_ms > 300


def test_engine_failure_reaches_the_caller(prompts_dir):
    with TtsEngine(TtsParams(voices={"en": "gmw/en-us"})) as engine:
        cache = PromptCache(prompts_dir, engine)
        with pytest.raises(EngineError, match="no TTS voice configured for language 'de'"):
            asyncio.run(cache.get("Hallo", "de"))


@pytest.mark.parametrize(
    ("content", "message"),
    [("welcome: [unclosed", "invalid YAML"), ("- a\n- b\n", "expected a mapping"), ("n: 5\n", "not text")],
)
def test_bad_prompt_files_name_the_problem(tmp_path, content, message):
    (tmp_path / "en.yaml").write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_prompts(tmp_path, "en")


def test_placeholders_decide_what_is_fixed():
    assert is_fixed("Welcome.") and not is_fixed("Your balance is {balance_text}.")


def test_shipped_prompts_build(tmp_path, tts):
    """Every fixed English prompt the flows ship renders to speech."""
    shipped = PROJECT_ROOT / "prompts" / "en.yaml"
    shutil.copy(shipped, tmp_path / "en.yaml")
    prompts = load_prompts(tmp_path, "en")
    fixed = {pid: text for pid, text in prompts.items() if is_fixed(text)}
    stats = PromptCache(tmp_path, tts).build("en")
    assert stats.prompts == len(fixed) and stats.skipped == len(prompts) - len(fixed)
    assert stats.rendered + stats.cached == len(fixed)
    for path in Path(tmp_path / "cache" / "en").glob("*.slin"):
        assert pcm.duration_s(path.read_bytes()) > 0.3


def test_built_prompts_still_play_when_the_engine_is_gone(prompts_dir, tts, monkeypatch, tmp_path):
    """espeak-ng removed after `ivr prompts build`: fixed prompts still play, new text fails clearly."""
    from ivr.tts import engine as engine_module

    with TtsEngine(TtsParams(backend="espeak-ng")) as working:
        PromptCache(prompts_dir, working).build("en")
    monkeypatch.setenv("PATH", str(tmp_path))  # no espeak-ng any more
    monkeypatch.setattr(engine_module, "_version_cache", None)
    with TtsEngine(TtsParams(backend="espeak-ng")) as broken:
        cache = PromptCache(prompts_dir, broken)
        audio = asyncio.run(cache.get("Thank you for calling. Goodbye.", "en"))
        assert pcm.duration_s(audio) > 1.0
        with pytest.raises(EngineError, match="espeak-ng"):
            asyncio.run(cache.get("Your balance is 5 dollars.", "en"))


def test_prompts_command_builds_and_lists(prompts_dir, tmp_path, capsys):
    import argparse

    from ivr.commands import prompts as prompts_command

    config = prompts_dir / "ivr.yaml"  # not a language: ignored by build
    # no knowledge base here (its answers would be built too): an empty faq directory
    config.write_text(f"paths:\n  prompts: {prompts_dir}\n  faq: {tmp_path / 'no-faq'}\n", encoding="utf-8")
    build = argparse.Namespace(config=str(config), prompts_command="build", lang=None, keep_stale=False)
    assert prompts_command.run(build) == 0
    out = capsys.readouterr().out
    assert "ivr prompts build" in out and "en" in out and "ko" in out
    assert len(list((prompts_dir / "cache").rglob("*.slin"))) == 3  # 2 fixed en + 1 ko
    listing = argparse.Namespace(config=str(config), prompts_command="list", lang=["en"])
    assert prompts_command.run(listing) == 0
    out = capsys.readouterr().out
    assert "welcome" in out and "bye" in out and "hello" not in out and "2 prompts" in out


def test_fixed_prompt_rendered_on_demand_is_kept_on_disk(prompts_dir, tts):
    """Without `ivr prompts build`, a flow's fixed prompt is rendered once and then read from disk."""
    cache = PromptCache(prompts_dir, tts)
    asyncio.run(cache.get("Welcome to  Demo Mobile.", "en"))  # same text, other spacing
    asyncio.run(cache.get("Your balance is 7 dollars.", "en"))  # dynamic: memory only
    (entry,) = cache.entries("en")
    assert entry.prompt_id == "welcome"
    engine = CountingEngine(tts)
    asyncio.run(PromptCache(prompts_dir, engine).get("Welcome to Demo Mobile.", "en"))  # type: ignore[arg-type]
    assert engine.calls == 0


def test_a_recording_replaces_the_synthetic_voice(prompts_dir, tts):
    """prompts/recorded/<lang>/<prompt_id>.wav (a real Asterisk recording here) wins over TTS."""
    source = Path("/usr/share/asterisk/sounds/en/vm-goodbye.wav")
    if not source.exists():
        pytest.skip("asterisk-core-sounds-en-wav is not installed")
    folder = prompts_dir / "recorded" / "en"
    folder.mkdir(parents=True)
    shutil.copy(source, folder / "bye.wav")
    engine = CountingEngine(tts)
    cache = PromptCache(prompts_dir, engine)  # type: ignore[arg-type]
    audio = asyncio.run(cache.get("Thank you for calling. Goodbye.", "en"))
    assert audio == pcm.read_wav(source) and engine.calls == 0
    asyncio.run(cache.get("Welcome to Demo Mobile.", "en"))  # no recording: spoken
    assert engine.calls == 1
    (folder / "bye.wav").write_bytes(b"not a wav")  # a broken recording falls back to TTS
    cache = PromptCache(prompts_dir, engine)  # type: ignore[arg-type]
    spoken = asyncio.run(cache.get("Thank you for calling. Goodbye.", "en"))
    assert spoken != audio and engine.calls == 2


def test_memory_hits_skip_the_threads_but_a_new_recording_still_wins(prompts_dir, tts, monkeypatch):
    """Mid-call, a prompt already in memory is served on the event loop (no `to_thread` hop that
    would queue behind ASR jobs); a recording dropped in while running is still picked up."""
    source = Path("/usr/share/asterisk/sounds/en/vm-goodbye.wav")
    if not source.exists():
        pytest.skip("asterisk-core-sounds-en-wav is not installed")
    cache = PromptCache(prompts_dir, tts)
    first = asyncio.run(cache.get("Thank you for calling. Goodbye.", "en"))
    hops = []
    real_to_thread = asyncio.to_thread

    async def counting_to_thread(func, *args, **kwargs):
        hops.append(func)
        return await real_to_thread(func, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", counting_to_thread)
    again = asyncio.run(cache.get("Thank you for calling. Goodbye.", "en"))
    assert again == first and hops == []
    folder = prompts_dir / "recorded" / "en"
    folder.mkdir(parents=True)
    shutil.copy(source, folder / "bye.wav")
    recorded = asyncio.run(cache.get("Thank you for calling. Goodbye.", "en"))
    assert recorded == pcm.read_wav(source) != first
