"""How many feature frames Vosk's acoustic network computes at once (Kaldi's `--frames-per-chunk`).

Vosk reads the option from the model's own `conf/model.conf` and nowhere else; Kaldi's default is 20 frames
(200 ms of audio). The network's matrix products at 20 frames are small, so most of their time is packing the
matrices (perf: `sgemm_incopy` 23 % of a decode, the multiply itself 9 %). Larger chunks do the same sums in
fewer, larger products: over the 21 Korean fixtures in 100 ms pieces, 1218 ms of CPU at the model's 20 frames
against 868 ms at 51 and 800 at 75-99 (2026-12-05, 2-core AMD EPYC VM). Audio is fed as it arrives either way;
a chunk not yet full waits for more audio or for the end of the segment, so the close of a segment does the
rest (its cost: 11 ms mean at 20 frames, 10 at 51, 13-14 at 75-99).

A model directory may be read-only (inside an installed package), so the option goes into an overlay: a
directory of links to the model's parts with its own `conf/model.conf` (the model's lines plus the chunk
size), under the models directory's `.chunking/`, made once and reused.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

from ivr.errors import ConfigError

log = logging.getLogger(__name__)

OPTION = "--frames-per-chunk"
# 29 % less CPU than the model's 20 (figures above) and the same understanding: Korean development set right 28,
# wrong 9, rejected 51 of 88 and 39 of 40 out of scope rejected, Korean replay 22 of 30 (WER 40.4 %), with 20 and
# with 51 alike; 75-99 save a little more but the close of a segment costs more (it is on the answer's path)
DEFAULT_FRAMES_PER_CHUNK = 51
# the network's output is every third frame (`--frame-subsampling-factor=3` in the Vosk models): a chunk of a
# multiple of 3 frames ends on an output frame
SUBSAMPLING = 3


def chunk_size_problem(frames: int) -> tuple[str, str] | None:
    """Why Vosk cannot compute `frames` frames at a time, and the fix; None when it can (0: the model's own)."""
    if frames % SUBSAMPLING == 0:
        return None
    return (f"{frames} is not a multiple of {SUBSAMPLING} (Vosk's network outputs every third frame)",
            f"use e.g. {frames - frames % SUBSAMPLING + SUBSAMPLING}, or 0 for the model's own")


def chunked_model_dir(model_dir: Path, frames: int, cache_dir: Path) -> Path:
    """`model_dir` as Vosk should load it to compute `frames` frames at a time (0: the model's own setting).
    A model without conf/model.conf (the old layout, whose options are built into Vosk) is used as it is."""
    if frames <= 0:
        return model_dir
    problem = chunk_size_problem(frames)
    if problem is not None:
        raise ConfigError(f"asr.vosk_frames_per_chunk = {problem[0]}", fix=problem[1])
    conf = model_dir / "conf" / "model.conf"
    if not conf.is_file():
        log.warning("Vosk model %s has no conf/model.conf: its chunk size stays Vosk's built-in one", model_dir)
        return model_dir
    lines = [line for line in conf.read_text(encoding="utf-8").splitlines()
             if not line.strip().startswith(OPTION)]
    text = "\n".join([*lines, f"{OPTION}={frames}", ""])
    resolved = model_dir.resolve()
    tag = hashlib.sha256(f"{resolved}\n{text}".encode()).hexdigest()[:16]
    overlay = cache_dir / f"{resolved.name}-{frames}-{tag}"
    if (overlay / "conf" / "model.conf").is_file():
        return overlay
    staging = cache_dir / f".{overlay.name}.{os.getpid()}"
    try:
        (staging / "conf").mkdir(parents=True, exist_ok=True)
        for part in resolved.iterdir():
            if part.name != "conf":
                _link(part, staging / part.name)
        for part in (resolved / "conf").iterdir():
            if part.name != "model.conf":
                _link(part, staging / "conf" / part.name)
        (staging / "conf" / "model.conf").write_text(text, encoding="utf-8")
        staging.rename(overlay)  # whole or not at all: a process that finds it finds every part
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if (overlay / "conf" / "model.conf").is_file():  # another process made it first
            return overlay
        log.warning("cannot write the Vosk chunk-size overlay in %s (%s): the model's own chunk size is used",
                    cache_dir, exc)
        return model_dir
    return overlay


def _link(target: Path, link: Path) -> None:
    if not link.is_symlink():
        link.symlink_to(target)
