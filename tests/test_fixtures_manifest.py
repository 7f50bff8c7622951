"""The shipped caller-audio fixtures and their manifest: files, format, coverage, and clear errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from ivr.audio.pcm import FRAME_BYTES, SAMPLE_RATE, duration_s, frames, read_wav, rms, write_wav
from ivr.config import LANGUAGES, PROJECT_ROOT
from ivr.errors import ConfigError
from ivr.testing.fixtures import BARGE_IN_TAG, NO_INPUT_TAG, REAL_VOICE_TAG, Manifest, load_manifest

DEMO_INTENTS = (
    "balance top_up tariff_info tariff_change data_addon share_data roaming internet_setup "
    "block_sim operator yes no repeat goodbye"
).split()
SPEECH_LEVEL = 300.0  # RMS of a 20 ms frame above which we count it as speech (espeak-ng peaks ~10000)
MIN_BARGE_IN_SPEECH_S = 2.5


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    return load_manifest()


def speech_seconds(pcm: bytes) -> float:
    """Seconds between the first and the last loud 20 ms frame."""
    loud = [i for i, f in enumerate(frames(pcm, pad=False)) if rms(f) > SPEECH_LEVEL]
    return (loud[-1] - loud[0] + 1) * FRAME_BYTES / (2 * SAMPLE_RATE) if loud else 0.0


# ---- the shipped files ------------------------------------------------------------------------------
def test_every_file_exists_and_is_8khz_mono_16bit(manifest: Manifest) -> None:
    assert len(manifest.fixtures) >= 3 * 15
    for fixture in manifest.fixtures:
        assert fixture.path.is_file(), fixture.file
        audio = read_wav(fixture.path, target_rate=None)  # AudioError unless 8000 Hz 16-bit mono
        assert 1.0 <= duration_s(audio) <= 12.0, fixture.file


def test_speech_where_expected_and_silence_in_no_input_files(manifest: Manifest) -> None:
    for fixture in manifest.fixtures:
        audio = read_wav(fixture.path, target_rate=None)
        if fixture.no_input:
            assert fixture.transcript == "" and fixture.intent == "none"
            assert speech_seconds(audio) == 0.0, fixture.file
            assert rms(audio) > 0, f"{fixture.file}: a noise floor, not digital silence"
        else:
            assert fixture.transcript, fixture.file
            assert 0.2 <= speech_seconds(audio) <= duration_s(audio), fixture.file
            # leading silence: the endpointer sees the start of speech
            assert rms(audio[: FRAME_BYTES * 5]) < SPEECH_LEVEL, fixture.file


@pytest.mark.parametrize("lang", LANGUAGES)
def test_each_language_covers_every_intent_and_special_case(manifest: Manifest, lang: str) -> None:
    mine = manifest.for_lang(lang)
    assert 15 <= len(mine.fixtures) <= 30
    assert {f.lang for f in mine.fixtures} == {lang}
    intents = {f.intent for f in mine.fixtures}
    assert set(DEMO_INTENTS) <= intents, set(DEMO_INTENTS) - intents
    assert "none" in {f.intent for f in mine.fixtures if not f.no_input}, "an out-of-scope utterance"
    assert mine.tagged(NO_INPUT_TAG)
    long = mine.tagged(BARGE_IN_TAG)
    assert long and all(
        speech_seconds(read_wav(f.path, target_rate=None)) >= MIN_BARGE_IN_SPEECH_S for f in long
    )


def test_english_long_utterance_is_about_four_seconds(manifest: Manifest) -> None:
    (long,) = manifest.for_lang("en").tagged(BARGE_IN_TAG)
    assert 3.5 <= speech_seconds(read_wav(long.path, target_rate=None)) <= 6.0


def test_amounts_and_phone_numbers_carry_entities(manifest: Manifest) -> None:
    for lang in ("en", "ru"):
        mine = manifest.for_lang(lang)
        top_up = [f for f in mine.fixtures if f.intent == "top_up" and f.entities]
        assert any(f.entities.get("amount") == 50 for f in top_up), lang
        share = [f for f in mine.fixtures if f.intent == "share_data"]
        assert any(f.entities.get("gigabytes") and f.entities.get("phone") for f in share), lang


def test_real_voices_are_credited(manifest: Manifest) -> None:
    real = manifest.tagged(REAL_VOICE_TAG)
    assert {f.lang for f in real} == {"en", "ru"}
    for fixture in real:
        assert "CC-BY" in fixture.source and "asterisk-core-sounds" in fixture.source
    readme = (PROJECT_ROOT / "audio_fixtures" / "README.md").read_text()
    assert "Allison Smith" in readme and "CC-BY-SA 3.0" in readme and "Maxim Topal" in readme


def test_required_calls(manifest: Manifest) -> None:
    calls = {c.name: c for c in manifest.calls}
    en = calls["en_balance_then_goodbye"]
    assert [t.intent for t in en.turns] == ["balance", "goodbye"] and en.route == "completed"
    ko = calls["ko_operator_handoff"]
    assert ko.lang == "ko" and ko.turns[-1].intent == "operator" and ko.route == "support"
    barge = calls["en_barge_in"]
    assert barge.turns[0].barge_in and BARGE_IN_TAG in manifest.fixture(barge.turns[0].file or "").tags
    ru = calls["ru_balance_then_goodbye"]
    assert [t.intent for t in ru.turns] == ["balance", "goodbye"]
    for call in manifest.calls:
        for turn in call.turns:
            assert turn.dtmf or turn.path.is_file()


@pytest.mark.parametrize("lang", LANGUAGES)
def test_intents_exist_in_the_grammar(manifest: Manifest, lang: str) -> None:
    from ivr.nlu.knowledge import load_with_knowledge

    # the grammar's intents and the knowledge base's (faq.<id>), as a call understands them
    grammar, _ = load_with_knowledge(lang, PROJECT_ROOT / "grammars", PROJECT_ROOT / "faq")
    known = set(grammar.intents) | {"none"}
    used = {f.intent for f in manifest.for_lang(lang).fixtures if f.intent is not None}
    assert used <= known, used - known


def test_korean_transcripts_are_grammar_phrases(manifest: Manifest) -> None:
    """The Korean recognizer is grammar-restricted: in-scope utterances must be grammar phrases."""
    from ivr.nlu.intents import Nlu

    nlu = Nlu.load("ko", PROJECT_ROOT / "grammars")
    for fixture in manifest.for_lang("ko").fixtures:
        if fixture.intent not in (None, "none"):
            assert fixture.transcript in nlu.phrases([fixture.intent]), fixture.file


# ---- API ------------------------------------------------------------------------------------------
def test_paths_resolve_and_turns_inherit_expectations(manifest: Manifest) -> None:
    fixture = manifest.fixture("en/balance_1.wav")
    assert fixture.path == PROJECT_ROOT / "audio_fixtures" / "en" / "balance_1.wav"
    call = next(c for c in manifest.calls if c.name == "en_top_up_confirmed")
    assert call.turns[0].path == manifest.fixture("en/top_up_1.wav").path
    assert call.turns[0].entities == {"amount": 50, "currency": "USD"}
    with pytest.raises(KeyError):
        manifest.fixture("en/nope.wav")
    assert load_manifest(PROJECT_ROOT / "audio_fixtures").fixtures == manifest.fixtures  # folder accepted


# ---- errors -------------------------------------------------------------------------------------
def write_manifest(tmp_path: Path, body: str, wavs: tuple[str, ...] = ("en/a.wav",)) -> Path:
    for name in wavs:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        write_wav(tmp_path / name, np.zeros(8000, dtype="<i2").tobytes())
    path = tmp_path / "manifest.yaml"
    path.write_text(textwrap.dedent(body))
    return path


GOOD_ENTRY = """\
fixtures:
  - file: en/a.wav
    lang: en
    transcript: "hello"
    intent: none
    source: test
"""


def load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_manifest(path)
    return str(info.value)


def test_minimal_manifest_loads(tmp_path: Path) -> None:
    loaded = load_manifest(write_manifest(tmp_path, GOOD_ENTRY))
    assert loaded.fixtures[0].path == tmp_path / "en" / "a.wav" and loaded.calls == []


def test_unknown_field_names_line_and_entry(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, GOOD_ENTRY + "    intnet: balance\n")
    message = load_error(path)
    assert f"{path}:7: fixtures[0] (en/a.wav): intnet: Extra inputs are not permitted" in message


def test_missing_file_names_line(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, GOOD_ENTRY.replace("en/a.wav", "en/b.wav"))
    assert f"{path}:2: fixtures[0] (en/b.wav): file {tmp_path / 'en' / 'b.wav'} does not exist" in load_error(path)
    assert load_manifest(path, check_files=False).fixtures[0].file == "en/b.wav"


def test_bare_yes_is_explained(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, GOOD_ENTRY.replace("intent: none", "intent: yes"))
    message = load_error(path)
    assert f"{path}:5: fixtures[0] (en/a.wav): intent:" in message and 'quote the intent, e.g. intent: "yes"' in message


def test_unknown_language_and_missing_field(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, GOOD_ENTRY.replace("lang: en", "lang: fr").replace("    source: test\n", ""))
    message = load_error(path)
    assert "fixtures[0] (en/a.wav): lang: Value error, unknown language 'fr'" in message
    assert "fixtures[0] (en/a.wav): source: Field required" in message


def test_call_errors(tmp_path: Path) -> None:
    body = GOOD_ENTRY + textwrap.dedent(
        """\
        calls:
          - name: c1
            lang: ko
            turns:
              - file: en/a.wav
              - file: en/zzz.wav
            route: completed
          - name: c2
            lang: en
            turns:
              - {file: en/a.wav, dtmf: "1"}
            route: completed
        """
    )
    path = write_manifest(tmp_path, body)
    message = load_error(path)
    assert "calls[1] (c2): turns.0: Value error, a turn needs exactly one of `file` or `dtmf`" in message
    fixed = write_manifest(tmp_path, body.replace('{file: en/a.wav, dtmf: "1"}', '{dtmf: "1"}'))
    message = load_error(fixed)
    assert f"{fixed}:11: calls[0] (c1) turn 1: en/a.wav is en, the call is ko" in message
    assert f"{fixed}:12: calls[0] (c1) turn 2: en/zzz.wav is not listed under `fixtures`" in message


def test_invalid_yaml_and_escape_attempts(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, "fixtures:\n  - file: [unclosed\n")
    assert f"{path}:3: invalid YAML" in load_error(path)
    path = write_manifest(tmp_path, GOOD_ENTRY.replace("en/a.wav", "../a.wav"))
    assert "must be a path inside audio_fixtures/" in load_error(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_manifest(tmp_path / "nope.yaml")
