"""The NLU on the transcripts of the recorded test audio (audio_fixtures/manifest.yaml, labelled by
the fixtures' author): every transcript with an intent label gets that intent."""

from __future__ import annotations

import pytest
import yaml

from ivr.config import PathSettings
from ivr.nlu.intents import Nlu
from ivr.nlu.knowledge import load_with_knowledge

PATHS = PathSettings()
MANIFEST = PATHS.fixtures / "manifest.yaml"


def _labelled() -> list[tuple[str, str, str]]:
    if not MANIFEST.exists():
        return []
    data = yaml.safe_load(MANIFEST.read_text(encoding="utf-8")) or {}
    return [(f["lang"], f["transcript"], f["intent"]) for f in data.get("fixtures", [])
            if f.get("transcript") and f.get("intent")]


CASES = _labelled()


@pytest.fixture(scope="module")
def nlu() -> dict[str, Nlu]:
    # with the knowledge base merged in, as in calls: its questions compete with the flow's intents
    return {lang: Nlu(load_with_knowledge(lang, PATHS.grammars, PATHS.faq)[0]) for lang in ("en", "ru", "ko")}


@pytest.mark.skipif(not CASES, reason="no labelled fixtures in audio_fixtures/manifest.yaml")
@pytest.mark.parametrize(("lang", "transcript", "intent"), CASES)
def test_fixture_transcripts(nlu: dict[str, Nlu], lang: str, transcript: str, intent: str) -> None:
    u = nlu[lang].understand(transcript)
    assert u.intent == intent, (u.intent, u.score, u.ranking)
