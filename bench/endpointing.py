"""Endpointing quality and delay: Silero against energy on the same audio, in one run.

    python bench/endpointing.py [--json out.json]

False speech: each sound of bench/line_signals.py (noise bursts, DTMF, ringback, busy tone, music on
hold, all made with sox after a quiet lead) fed as a caller's line; counted are utterances started
(a false barge-in over a prompt, or a turn of nothing) and 20 ms frames the detector called speech.

Missed speech and delay: every speech fixture of the manifest after 1 s of quiet line, clean, and
with pink noise at 10 dB SNR over the whole line (lead included, as on a noisy line); counted are
utterances not found (no start, or split), and the
end-of-speech decision's delay past the configured silence, measured from the end of the last
frame of the clean fixture louder than the speech floor (so the reference is the same for both
detectors and for the noisy copies). Goal: within the silence + 60 ms.
The replay waits for Silero's worker thread, so its decisions are those of a live call whose
worker keeps up (one window later than running the network inline, when a frame completes one).

With --noises, Silero also under pink, brown and white noise and music on hold at 10, 5 and 2 dB SNR: ends
within the goal, utterances cut in two (the first end of speech came before the fixture's last loud frame),
and ends more than the ASR's 300 ms of trailing silence early (the recognizer may miss a last fragment).

Also the CPU per 20 ms frame of each detector: on the feeding thread (the event loop's share in a
call) and on the other threads (Silero's worker); and a live run: `--live-calls` detectors fed
one frame each every 20 ms of wall clock for `--live-seconds`, as the event loop feeds 50 calls
(each call: a speech fixture, then 2 s of quiet line, over and over): event-loop CPU per frame,
worker CPU per frame, and frames the worker was too far behind for.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.harness import percentile  # noqa: E402
from bench.line_signals import line_signals, mix_at_snr, quiet_line, without_lead  # noqa: E402
from ivr.audio.pcm import FRAME_MS, frames, read_wav, rms  # noqa: E402
from ivr.audio.vad import Endpointer, EndpointParams, EnergyDetector, SpeechEnded, SpeechStarted  # noqa: E402
from ivr.call import ASR_TRAILING_SILENCE_MS  # noqa: E402
from ivr.testing.fixtures import load_manifest  # noqa: E402

PARAMS = EndpointParams(no_input_ms=0)
LEAD_MS = 1000
GOAL_EXTRA_MS = 60


KINDS = ("energy", "silero")


def detector(kind: str, pool: Any, *, wait: bool = True) -> Any:
    if kind == "energy":
        return EnergyDetector(PARAMS)
    from ivr.audio.silero import SileroDetector

    # wait: decides as a live call whose worker keeps up
    return SileroDetector(pool, PARAMS, wait=wait)


def live(kind: str, pool: Any, fixtures: list[bytes], calls: int, seconds: float) -> dict[str, float]:
    """`calls` detectors fed in real time, round robin, one frame each per 20 ms, as the event loop does."""
    streams = [frames(fixtures[n % len(fixtures)] + quiet_line(2.0, seed=n)) for n in range(calls)]
    detectors = [detector(kind, pool, wait=False) for _ in range(calls)]
    endpointers = [Endpointer(PARAMS, d) for d in detectors]
    behind_before = getattr(pool, "behind_frames", 0)
    rounds = int(seconds * 1000 / FRAME_MS)
    started, started_all, wall = time.thread_time(), time.process_time(), time.monotonic()
    for r in range(rounds):
        for endpointer, stream in zip(endpointers, streams, strict=True):
            endpointer.feed(stream[r % len(stream)])
            if endpointer.state == "done":
                endpointer.reset()
        delay = wall + (r + 1) * FRAME_MS / 1000 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    loop = time.thread_time() - started
    others = time.process_time() - started_all - loop
    for d in detectors:
        if hasattr(d, "close"):
            d.close()
    n = rounds * calls
    return {"calls": calls, "seconds": seconds, "loop_us_per_frame": loop / n * 1e6,
            "other_threads_us_per_frame": others / n * 1e6,
            "loop_share_of_a_core": loop / seconds, "behind_frames": pool.behind_frames - behind_before,
            "frames": n}


def feed(kind: str, pool: Any, pcm: bytes) -> tuple[list[tuple[int, Any]], int, float, float]:
    """(events with their clock, frames called speech, CPU seconds on this thread, on the others)."""
    det = detector(kind, pool)
    endpointer = Endpointer(PARAMS, det)
    events: list[tuple[int, Any]] = []
    speech_frames = 0
    started, started_all = time.thread_time(), time.process_time()
    for i, frame in enumerate(frames(pcm)):
        was = endpointer.state
        events += [((i + 1) * FRAME_MS, e) for e in endpointer.feed(frame)]
        speech_frames += was == "speaking"
        if endpointer.state == "done":
            endpointer.reset()
    cpu = time.thread_time() - started
    others = time.process_time() - started_all - cpu
    if hasattr(det, "close"):
        det.close()
    return events, speech_frames, cpu, others


def voiced_end_ms(pcm: bytes, lead_ms: int) -> int:
    """End of the last frame of `pcm` loud enough to be speech (the speech floor), on a clock with `lead_ms` of
    line before it: the reference end of speech, the same for every detector and every noisy copy."""
    loud = [i for i, frame in enumerate(frames(pcm)) if rms(frame) >= PARAMS.min_speech_rms]
    return lead_ms + (loud[-1] + 1) * FRAME_MS


NOISES = ("pink_noise_-20dBFS", "brown_noise_-12dBFS", "white_noise_-25dBFS", "music_on_hold")
SNRS_DB = (10.0, 5.0, 2.0)


def under_noise(pool: Any, fixtures: list[tuple[str, bytes]], signals: dict[str, bytes]) -> dict[str, Any]:
    """Silero, every fixture under each sound of NOISES at each SNR: ends within the goal, utterances split."""
    out: dict[str, Any] = {}
    references = [(pcm, voiced_end_ms(pcm, LEAD_MS)) for _, pcm in fixtures]
    for noise in NOISES:
        sound = without_lead(signals[noise])
        for snr in SNRS_DB:
            within = split = early = lost = 0
            for pcm, voiced_end in references:
                stream = mix_at_snr(quiet_line(LEAD_MS / 1000) + pcm + quiet_line(2.0, seed=2), sound, snr)
                events, _, _, _ = feed("silero", pool, stream)
                ends = [e.at_ms for _, e in events if isinstance(e, SpeechEnded)]
                if not ends:  # never found, or never ended
                    lost += 1
                    continue
                if ends[0] < voiced_end:  # cut while the caller was still talking
                    split += 1
                    continue
                delay = ends[0] - voiced_end - PARAMS.end_silence_ms
                within += delay <= GOAL_EXTRA_MS
                early += delay < -ASR_TRAILING_SILENCE_MS
            out[f"{noise} {snr:.0f} dB"] = {"within_goal": within, "split": split, "early_over_asr_silence": early,
                                              "not_found": lost, "utterances": len(fixtures)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--live-calls", type=int, default=50)
    parser.add_argument("--live-seconds", type=float, default=4.0)
    parser.add_argument("--noises", action="store_true",
                        help=f"also Silero under {', '.join(NOISES)} at {SNRS_DB} dB SNR (a few minutes)")
    args = parser.parse_args(argv)
    from ivr.audio.silero import SileroPool

    pool = SileroPool()
    load_start = os.getloadavg()
    signals = line_signals()
    fixtures = [(f.file, read_wav(f.path)) for f in load_manifest().fixtures if not f.no_input]
    pink = without_lead(signals["pink_noise_-20dBFS"])
    out: dict[str, Any] = {"load_start": load_start, "detectors": {}}
    for kind in KINDS:
        row: dict[str, Any] = {"false_starts": {}, "false_speech_frames": {}}
        cpu = others = 0.0
        nframes = 0
        for name, pcm in signals.items():
            events, speech_frames, used, used_elsewhere = feed(kind, pool, pcm)
            row["false_starts"][name] = sum(isinstance(e, SpeechStarted) for _, e in events)
            row["false_speech_frames"][name] = speech_frames
            cpu += used
            others += used_elsewhere
            nframes += len(pcm) // 320
        for label, noisy in (("clean", False), ("pink 10 dB", True)):
            missed, delays = [], []
            for name, pcm in fixtures:
                voiced_end = voiced_end_ms(pcm, LEAD_MS)
                body = pcm + quiet_line(2.0, seed=2)
                stream = quiet_line(LEAD_MS / 1000) + body
                if noisy:  # a noisy line is noisy before the caller speaks too
                    stream = mix_at_snr(stream, pink, 10.0)
                events, _, used, used_elsewhere = feed(kind, pool, stream)
                cpu += used
                others += used_elsewhere
                nframes += len(stream) // 320
                starts = [t for t, e in events if isinstance(e, SpeechStarted)]
                ends = [e for _, e in events if isinstance(e, SpeechEnded)]
                if len(starts) != 1 or not ends:
                    missed.append(name)
                    continue
                delays.append(ends[0].at_ms - voiced_end - PARAMS.end_silence_ms)
            row[label] = {"utterances": len(fixtures), "missed": missed,
                          "delay_p50_ms": percentile(delays, 50), "delay_p95_ms": percentile(delays, 95),
                          "delay_max_ms": max(delays) if delays else None,
                          "delay_min_ms": min(delays) if delays else None,
                          # ended before the ASR heard all of it: the final is decoded 300 ms into the silence
                          "early_over_asr_silence": sum(d < -ASR_TRAILING_SILENCE_MS for d in delays),
                          "within_goal": sum(d <= GOAL_EXTRA_MS for d in delays)}
        row["cpu_us_per_frame"] = cpu / max(1, nframes) * 1e6
        row["other_threads_cpu_us_per_frame"] = others / max(1, nframes) * 1e6
        row["live"] = live(kind, pool, [pcm for _, pcm in fixtures], args.live_calls, args.live_seconds)
        out["detectors"][kind] = row
    out["load_end"] = os.getloadavg()
    print(f"load average at start {load_start}, at end {out['load_end']} (shared machine)")
    names = list(signals)
    print(f"\nfalse utterance starts per sound ({' / '.join(KINDS)}): {PARAMS.end_silence_ms} ms end silence")
    rows = [out["detectors"][kind] for kind in KINDS]
    for name in names:
        print(f"  {name:22} starts {' / '.join(str(r['false_starts'][name]) for r in rows):12} "
              f"speech frames {' / '.join(str(r['false_speech_frames'][name]) for r in rows)}")
    for kind, row in out["detectors"].items():
        print(f"\n{kind}: CPU per 20 ms frame {row['cpu_us_per_frame']:.0f} us on the feeding thread (the event "
              f"loop in a call), {row['other_threads_cpu_us_per_frame']:.0f} us on other threads (Silero's worker)")
        lv = row["live"]
        print(f"  live, {lv['calls']} calls for {lv['seconds']:.0f} s in real time: event loop "
              f"{lv['loop_us_per_frame']:.1f} us per frame ({lv['loop_share_of_a_core']:.3f} of a core), worker "
              f"{lv['other_threads_us_per_frame']:.1f} us per frame; frames judged by energy because the worker "
              f"was behind: {lv['behind_frames']}/{lv['frames']}")
        for label in ("clean", "pink 10 dB"):
            r = row[label]
            print(f"  {label:11} missed {len(r['missed'])}/{r['utterances']} {r['missed'][:4]}  end-of-speech "
                  f"delay past the silence p50 {r['delay_p50_ms']} p95 {r['delay_p95_ms']} max {r['delay_max_ms']} ms; "
                  f"within +{GOAL_EXTRA_MS} ms: {r['within_goal']}/{r['utterances'] - len(r['missed'])}; earliest "
                  f"{r['delay_min_ms']} ms, over {ASR_TRAILING_SILENCE_MS} ms early: {r['early_over_asr_silence']}")
    if args.noises:
        out["silero_under_noise"] = under_noise(pool, fixtures, signals)
        print(f"\nsilero under noise ({len(fixtures)} fixtures each): ends within +{GOAL_EXTRA_MS} ms / utterances cut "
              f"in two (the first end came while the caller talked) / ends over {ASR_TRAILING_SILENCE_MS} ms early")
        for label, r in out["silero_under_noise"].items():
            print(f"  {label:26} within {r['within_goal']:3}  split {r['split']:2}  "
                  f"early {r['early_over_asr_silence']:2}  not found {r['not_found']}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
