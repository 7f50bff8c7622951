"""Asterisk's recorded prompts (Debian asterisk-core-sounds-<lang>-wav) and the packages' own transcripts
(asterisk-core-sounds-<lang>: core-sounds-<lang>.txt.gz): real voices with reference text written by
nobody here, for scoring speech recognition (tests/test_asr_whisper*.py, bench/whisper_window.py)."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

# the transcripts write key names as symbols
SYMBOLS = {"#": " pound ", "*": " star "}


def transcripts_file(lang: str) -> Path:
    return Path(f"/usr/share/doc/asterisk-core-sounds-{lang}/core-sounds-{lang}.txt.gz")


def transcripts(path: Path) -> dict[str, str]:
    """Prompt name (e.g. ``vm-intro``, ``digits/5``) -> its transcript; `;` lines are comments."""
    out = {}
    with gzip.open(path, "rt", errors="replace") as handle:
        for line in handle:
            if ":" in line and not line.startswith(";"):
                name, text = line.split(":", 1)
                out[name.strip()] = text.strip()
    return out


def words_of(text: str) -> list[str]:
    """A transcript (the package's or a recogniser's) as the lower-case words WER is counted on."""
    for symbol, word in SYMBOLS.items():
        text = text.replace(symbol, word)
    return re.sub(r"[^\w\s']", " ", text.lower().replace("-", " ")).split()
