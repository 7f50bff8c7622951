"""Asterisk's recorded prompts (Debian asterisk-core-sounds-<lang>-wav) and the packages' own transcripts
(asterisk-core-sounds-<lang>: core-sounds-<lang>.txt.gz): real voices with reference text written by
nobody here, for scoring speech recognition (tests/test_asr_whisper*.py, tests/test_asr_moonshine.py,
bench/whisper_window.py)."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

# the transcripts write key names as symbols
SYMBOLS = {"#": " pound ", "*": " star "}
# the English voice's recordings (asterisk-core-sounds-en-wav)
EN_SOUNDS = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
# 20 English prompts for a recogniser's WER (tests/test_asr_whisper.py, tests/test_asr_moonshine.py): every 11th
# of the 238 with a plain transcript of 2-14 words (no digits, no [tones])
EN_WER_PROMPTS = (
    "agent-incorrect", "call-forwarding", "conf-getchannel", "conf-muted", "conf-thereare",
    "confbridge-conf-end", "confbridge-invalid", "confbridge-mute-in", "confbridge-rest-list-vol-in",
    "dictate/enter_filename", "dir-nomore", "from-unknown-caller", "letters/ascii40", "pbx-invalidpark",
    "privacy-thankyou", "simul-call-limit-reached", "to-extension", "vm-duration", "vm-login", "vm-nomore",
)


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
