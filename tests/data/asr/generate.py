"""Regenerate the small test WAVs of this folder (8 kHz 16-bit mono slin) with espeak-ng.

Run: python3 tests/data/asr/generate.py  (needs espeak-ng; output is deterministic for a given
espeak-ng version: 1.51 on Debian 12 made the committed files).
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from ivr.audio.pcm import read_wav, silence, write_wav

HERE = Path(__file__).resolve().parent
PAD_MS = 300  # silence either side, like a caller's pause around an answer

# file stem -> (espeak-ng voice, text)
UTTERANCES = {
    "ko_sangdamwon_yeongyeol": ("ko", "상담원 연결"),  # "connect me to an agent" (in grammar)
    "ko_aniyo": ("ko", "아니요"),  # "no" (in grammar)
    "ko_oog_weather": ("ko", "오늘 날씨가 정말 좋네요"),  # "the weather is really nice today"
    "ko_oog_hana_dul_set": ("ko", "하나 둘 셋"),  # "one two three"
    "ko_oog_music": ("ko", "음악을 틀어 주세요"),  # "please play some music"
    "en_check_balance": ("en-us", "I would like to check my balance please"),
}
# single words, joined with pauses by the tests (no padding)
WORDS = {"ko_word_sangdamwon": ("ko", "상담원"), "ko_word_yeongyeol": ("ko", "연결")}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        for stem, (voice, text) in UTTERANCES.items():
            subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), text], check=True)
            pcm = silence(PAD_MS) + read_wav(raw) + silence(PAD_MS)
            write_wav(HERE / f"{stem}.wav", pcm)
            print(f"{stem}.wav: {text}")
        for stem, (voice, text) in WORDS.items():
            subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), text], check=True)
            write_wav(HERE / f"{stem}.wav", read_wav(raw))
            print(f"{stem}.wav: {text}")
        # a 16 kHz file (wrong rate for strict readers) and a corrupt one (RIFF header, junk body)
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(raw), "thank you for calling"], check=True)
        write_wav(HERE / "en_16k.wav", read_wav(raw, target_rate=16000), rate=16000)
        (HERE / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + b"\xff" * 40)


if __name__ == "__main__":
    main()
