"""`ivr replay` streams: results go to the outputs as they are judged, so memory stays flat over any
number of files; a recording with nothing to judge says so.

Memory is measured with tracemalloc over thousands of tiny generated WAV files in a language whose
speech model is switched off (Russian, keys only: each file is judged at once, so the test measures the
replay's own bookkeeping, not the speech pipeline's time).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from ivr.audio.pcm import silence, write_wav
from ivr.commands.replay import stream_replay
from ivr.config import Settings
from ivr.services import CallServices
from ivr.testing.replay import replay_all, wav_fixture

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "audio_fixtures"
FEW, MANY = 200, 2000
# what 1800 more files may add to the peak: the progress bar's speed samples (at most 1000) take
# ~120 KB; a result kept per file would take ~0.5 KB each (0.8 MB more)
GROWTH_BOUND = 256 * 1024


def _args(tmp_path: Path, tag: str) -> argparse.Namespace:
    return argparse.Namespace(json=False, junit=str(tmp_path / f"{tag}.xml"), html=str(tmp_path / f"{tag}.html"),
                              now=None)


class CollectingGarbage(list):  # type: ignore[type-arg]
    """The fixtures, with a full garbage collection every 100 taken: the peak then measures what the
    replay keeps, not cyclic garbage that Python's collector frees on its own schedule."""

    def __iter__(self):  # type: ignore[no-untyped-def]
        for index, item in enumerate(super().__iter__()):
            if index % 100 == 0:
                gc.collect()
            yield item


async def _peak(services: CallServices, files: list[Path], run: str, tmp_path: Path) -> tuple[int, object]:
    fixtures = CollectingGarbage(wav_fixture(path, "ru") for path in files)  # the input: not the replay's
    gc.collect()
    tracemalloc.start()
    try:
        if run == "stream":
            out: object = await stream_replay(services, fixtures, [], {}, _args(tmp_path, str(len(files))))
        else:
            out = await replay_all(services, fixtures, [], lambda _f: None)
        return tracemalloc.get_traced_memory()[1], out
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def wavs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("wavs")
    paths = [folder / f"utterance-{i:05d}.wav" for i in range(MANY)]
    for path in paths:
        write_wav(path, silence(100))
    return paths


@pytest.mark.slow
def test_replay_memory_stays_flat_over_thousands_of_files(wavs: list[Path], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings()
    settings.paths.data = tmp_path / "data"
    services = CallServices.create(settings, with_records=False)
    services._engines["ru"] = None  # keys only: no speech model
    with open(os.devnull, "w") as devnull:
        monkeypatch.setattr(sys, "stdout", devnull)  # the verdict table: written, not kept anywhere
        asyncio.run(_peak(services, wavs[:10], "stream", tmp_path))  # warm-up: imports, the no-model check
        few, _ = asyncio.run(_peak(services, wavs[:FEW], "stream", tmp_path))
        many, totals = asyncio.run(_peak(services, wavs, "stream", tmp_path))
        collected_few, _ = asyncio.run(_peak(services, wavs[:FEW], "collect", tmp_path))
        collected_many, _ = asyncio.run(_peak(services, wavs, "collect", tmp_path))
        monkeypatch.undo()
    services.close()
    assert totals.fixtures == MANY and totals.skipped == MANY  # type: ignore[attr-defined]
    print(f"peak traced memory: streaming {FEW} files {few / 1e6:.2f} MB, {MANY} files {many / 1e6:.2f} MB; "
          f"collecting {collected_few / 1e6:.2f} / {collected_many / 1e6:.2f} MB")
    assert collected_many - collected_few > GROWTH_BOUND  # the bound tells the two apart
    assert many - few < GROWTH_BOUND
    # the reports hold every result all the same
    junit = (tmp_path / f"{MANY}.xml").read_text()
    assert junit.count("<testcase ") == MANY and f'tests="{MANY}"' in junit
    assert (tmp_path / f"{MANY}.html").read_text().count("<tr class='skip'>") == MANY


def test_a_bare_recording_is_transcribed_and_says_why_it_is_not_judged(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ivr.cli", "replay", "--lang", "ko", "--json", str(FIXTURES / "ko/roaming_1.wav")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "IVR_DATA_DIR": str(tmp_path / "data")})
    assert done.returncode == 0, done.stderr
    result, totals = (json.loads(line) for line in done.stdout.splitlines())
    assert result["verdict"] == "skip" and result["text"]  # heard and transcribed
    assert result["reason"].startswith("skip: no expectations (no intent or entities to judge")
    assert totals["totals"]["skipped_reasons"] == {result["reason"]: 1}
    assert f"skipped 1: {result['reason']}" in " ".join(done.stderr.split())
