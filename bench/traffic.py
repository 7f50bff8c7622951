"""Realistic traffic through the real server: Poisson arrivals, multi-turn conversations.

    python bench/traffic.py [--rates 0.2,0.5,1,2] [--duration 60] [--engine vosk|whisper|both]
                            [--json out.json] [--html out.html] [--seed 1] [--asterisk]

The server is what `ivr serve` runs (bench/harness.py: Bridge, FastAGI + AudioSocket on loopback,
records in a temporary SQLite file). The callers are fake Asterisk channels (bench/fake_asterisk.py)
in a child process. Per offered load (calls per second), calls arrive as a Poisson process for
`--duration` seconds; each plays one conversation of the fixture manifest (audio_fixtures/
manifest.yaml: its `calls:`, plus one call per intent fixture made of that utterance and a
goodbye), with a human pause (0.3-1.5 s) before each answer, and about one caller in five
barging in over the greeting. Vosk serves the Korean calls, Whisper the English ones (the models
installed here); Russian has no model and is left out.

Per load it reports: mean and peak concurrent calls; turn latency p50/p95/p99 as the caller hears
it (end of its speech -> first reply sound) and split into endpointing (that minus the server's
compute), ASR queue, ASR decode, NLU, dialog and prompt (the server's turn records); CPU per call
(server process CPU / call-seconds), peak RSS, and paced reply frames that came late (> 40 ms gap,
seen by the callers; > 10 ms, the server's own pacing); intents right (replied turns whose intent is the
fixture's: what load shedding costs in understanding) and what the Korean second opinion did with the
turns Vosk rejected (decoded in time, slot busy, late). Then the load at which the compute p95
(decision -> first reply frame) and the heard p95 cross 1 s. A table on the terminal, JSON, and an
HTML page with the latency-vs-concurrency plot.

With `--asterisk` (root, SIPp) the same arrivals and conversations (same seed: same calls) are
real SIP calls: one SIPp per call into the sandbox Asterisk (ivr/testing/sandbox.py, the shipped
pjsip.conf trunk on loopback, G.711 u-law), which hands them to the same server over FastAGI +
AudioSocket. The callers' RTP is planned ahead (bench/sip_traffic.py: a dry run gives the prompt
lengths), and what they heard is read off the loopback interface. Added figures: Asterisk's CPU per
call, and turns left out because the caller's end of speech fell while the assistant still talked.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import random
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.fake_asterisk import (  # noqa: E402
    LATE_GAP_S,
    NON_SILENT_PEAK,
    PLAYBACK_END_GAP_S,
    PROMPT_END_QUIET_S,
    SILENCE,
    CallerReport,
    CallerScript,
    _peak,
    fake_call,
    speech_end_offset_s,
)
from bench.sip_traffic import LEAD_S  # noqa: E402
from ivr.audio.pcm import FRAME_BYTES  # noqa: E402

ENGINE_LANG = {"vosk": "ko", "whisper": "en"}
DEFAULT_RATES = "0.2,0.5,1,2"
BARGE_IN_SHARE = 0.2  # callers who talk over the greeting
BARGE_IN_AFTER_S = 1.0  # ...this long after it starts
PAUSE_S = (0.3, 1.5)  # think time before each answer
REPLY_TIMEOUT_S = 15.0  # no reply this long after speaking: the caller gives up
LISTEN_LAST_S = 2.0  # the last reply is heard this long, then the caller hangs up
CROSSING_MS = 1000.0


# ------------------------------------------------------------------------------------------ the caller


@dataclass
class ConversationScript(CallerScript):
    """The caller's turns: {"pcm_file", "barge_in", "pause_s"} each."""

    turns: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ConversationReport(CallerReport):
    """A CallerReport with one latency per spoken turn (None: no reply came)."""

    turn_latency_ms: list[float | None] = field(default_factory=list)
    started_at: float = 0.0  # seconds since the load level began


class ConversationMedia:
    """The caller's side of a multi-turn call; same interface as fake_asterisk._Media."""

    def __init__(self, script: ConversationScript, report: ConversationReport) -> None:
        self.script = script
        self.report = report
        self.turns = script.turns
        self.index = 0
        self.phase = "prompt"  # prompt (hearing the assistant) -> speaking -> awaiting -> prompt ... -> done
        self.heard_sound = False
        self.prompt_started: float | None = None
        self.last_loud_at: float | None = None
        self.last_frame_at: float | None = None
        self.speak_at: float | None = None
        self.frames: list[bytes] = []
        self.sent = 0
        self.speech_end_frame = 0
        self.speech_end_at: float | None = None
        self.reply_deadline = 0.0
        self.done = asyncio.Event()

    def _load_turn(self) -> None:
        pcm = _read(self.turns[self.index]["pcm_file"])
        self.frames = [pcm[i : i + FRAME_BYTES].ljust(FRAME_BYTES, b"\x00") for i in range(0, len(pcm), FRAME_BYTES)]
        self.speech_end_frame = round(speech_end_offset_s(pcm) / 0.02)
        self.sent = 0

    def on_frame(self, pcm: bytes, now: float) -> None:
        report = self.report
        if self.last_frame_at is not None:
            gap = now - self.last_frame_at
            if gap < PLAYBACK_END_GAP_S:
                report.playback_frames += 1
                report.max_gap_ms = max(report.max_gap_ms, gap * 1000)
                if gap > LATE_GAP_S:
                    report.late_frames += 1
        self.last_frame_at = now
        if _peak(pcm) <= NON_SILENT_PEAK:
            return
        self.last_loud_at = now
        if self.prompt_started is None:
            self.prompt_started = now
        if self.phase == "awaiting":
            assert self.speech_end_at is not None
            report.turn_latency_ms.append((now - self.speech_end_at) * 1000)
            self.index += 1
            self.phase = "prompt"
            self.prompt_started = now

    def tick(self, now: float) -> bytes:
        if self.phase == "prompt":
            if self.index >= len(self.turns):  # the last reply: listen a while, then hang up
                if self.prompt_started is not None and now - self.prompt_started >= LISTEN_LAST_S:
                    self._finish()
                return SILENCE
            turn = self.turns[self.index]
            if self.speak_at is None and self.prompt_started is not None:
                if turn.get("barge_in") and now - self.prompt_started >= BARGE_IN_AFTER_S:
                    self.speak_at = now
                elif self.last_loud_at is not None and now - self.last_loud_at >= PROMPT_END_QUIET_S:
                    self.speak_at = now + turn.get("pause_s", 0.5)
            if self.speak_at is not None and now >= self.speak_at:
                self.speak_at = None
                self._load_turn()
                self.phase = "speaking"
        if self.phase == "speaking":
            index = self.sent
            self.sent += 1
            if index == self.speech_end_frame:
                self.speech_end_at = now
            if index < len(self.frames):
                return self.frames[index]
            if self.speech_end_at is None:
                self.speech_end_at = now
            self.phase = "awaiting"
            self.reply_deadline = now + REPLY_TIMEOUT_S
        if self.phase == "awaiting" and now >= self.reply_deadline:
            self.report.turn_latency_ms.append(None)
            self.report.error = self.report.error or "no reply"
            self._finish()
        return SILENCE

    def _finish(self) -> None:
        self.phase = "done"
        self.done.set()


_AUDIO: dict[str, bytes] = {}


def _read(path: str) -> bytes:
    if path not in _AUDIO:
        from ivr.audio.pcm import read_wav

        _AUDIO[path] = read_wav(path)
    return _AUDIO[path]


async def _client(jobs: dict[str, Any]) -> list[dict[str, Any]]:
    """Child process: place the calls at their arrival times; returns the reports."""
    began = time.monotonic()

    async def one(i: int, spec: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(max(0.0, spec["at_s"] - (time.monotonic() - began)))
        script = ConversationScript(pcm=b"", lang=spec["lang"], channel=spec["channel"], max_call_s=300.0,
                                    turns=spec["turns"])
        report = ConversationReport(channel=spec["channel"], started_at=time.monotonic() - began)
        # the uniqueid is the record's call id: unique across levels (and the warm-up)
        await fake_call(jobs["host"], jobs["port"], script, uniqueid=f"traffic.{spec['tag']}",
                        media_factory=ConversationMedia, report=report)
        if report.hung_up_by == "server" and not report.error:
            report.ok = True  # a hand-off or goodbye ended the call: a normal end
        return asdict(report)

    return list(await asyncio.gather(*(one(i, spec) for i, spec in enumerate(jobs["calls"]))))


# ------------------------------------------------------------------------------------------ the load


def conversations(engines: list[str]) -> list[dict[str, Any]]:
    """The manifest's calls and one call per intent fixture (+ goodbye), for the engines' languages."""
    from ivr.testing.fixtures import load_manifest

    manifest = load_manifest()
    langs = {ENGINE_LANG[e] for e in engines}
    intent_of = {f.file: f.intent for f in manifest.fixtures}
    out: list[dict[str, Any]] = []
    for call in manifest.calls:
        if call.lang in langs and all(t.file for t in call.turns):
            out.append({"name": call.name, "lang": call.lang,
                        "turns": [{"file": t.file, "barge_in": t.barge_in,
                                   "intent": t.intent if t.intent is not None else intent_of.get(t.file or "")}
                                  for t in call.turns]})
    for lang in sorted(langs):
        goodbye = next((f.file for f in manifest.for_lang(lang) if f.intent == "goodbye"), None)
        for fixture in manifest.for_lang(lang):
            if fixture.no_input or not fixture.intent or fixture.intent in ("goodbye", "yes", "no"):
                continue
            turns = [{"file": fixture.file, "barge_in": False, "intent": fixture.intent}]
            if goodbye:
                turns.append({"file": goodbye, "barge_in": False, "intent": "goodbye"})
            out.append({"name": f"{lang}_{Path(fixture.file).stem}", "lang": lang, "turns": turns})
    return out


def arrivals(rate: float, duration_s: float, rng: random.Random) -> list[float]:
    times, t = [], rng.expovariate(rate)
    while t < duration_s:
        times.append(t)
        t += rng.expovariate(rate)
    return times


@dataclass
class LoadResult:
    rate: float
    calls: int
    ok: int
    errors: dict[str, int]
    concurrent_mean: float
    concurrent_peak: int
    turns: int
    heard_ms: dict[str, float | None]  # p50/p95/p99, end of speech -> first reply sound (caller)
    split_ms: dict[str, dict[str, float | None]]  # stage -> p50/p95/p99
    no_reply: int
    cpu_per_call: float
    rss_peak_mb: float
    late_client: int
    playback_client: int
    late_server: int
    frames_server: int
    asr_batches: int
    asr_batched_finals: int
    asr_max_batch: int
    asr_refused: int
    loadavg_1m: float
    mode: str = "fake"  # fake (fake Asterisk channels) | asterisk (SIPp callers through the sandbox)
    talked_over: int = 0  # SIP turns left out: their end of speech fell while the assistant was audible
    asterisk_cpu_per_call: float | None = None  # Asterisk CPU / call-seconds (SIP mode)
    greeting_after_ms: float | None = None  # SIP: caller's first RTP packet -> first greeting sound, median
    callers_cpu_per_call: float = 0.0  # the callers' processes (fake channels, or SIPp + the capture) / call-seconds
    asr_early: int = 0  # finals started during the trailing silence (Whisper), of which discarded: resumed speech
    asr_early_discarded: int = 0
    # turns Vosk's grammar rejected, by what the second opinion did (ivr/asr/second_opinion.py): "whisper" decoded
    # in time, "busy" every slot taken, "late" no decode could be done by the time the answer was due
    second_opinion: dict[str, int] = field(default_factory=dict)
    decoded_by: dict[str, int] = field(default_factory=dict)  # finals by model (Whisper's: whisper, moonshine)
    intents_right: int = 0  # replied turns whose intent is the fixture's (of those whose fixture names one)
    intents_checked: int = 0


def _pcts(values: list[float]) -> dict[str, float | None]:
    from bench.harness import percentile

    return {f"p{q}": percentile(values, q) for q in (50, 95, 99)}


def plan_calls(rate: float, duration_s: float, pool: list[dict[str, Any]], rng: random.Random,
               tag: str) -> list[dict[str, Any]]:
    """The load level's calls: arrival time, conversation, barge-ins and pauses (the same for both modes)."""
    calls = []
    for i, at in enumerate(arrivals(rate, duration_s, rng)):
        conv = rng.choice(pool)
        turns = []
        for k, turn in enumerate(conv["turns"]):
            barge = turn["barge_in"] or (k == 0 and rng.random() < BARGE_IN_SHARE)
            turns.append({"pcm_file": str(ROOT / "audio_fixtures" / turn["file"]), "barge_in": barge,
                          "pause_s": rng.uniform(*PAUSE_S), "intent": turn["intent"]})
        calls.append({"at_s": at, "lang": conv["lang"], "channel": f"Local/traffic-{tag}-{i}", "turns": turns,
                      "tag": f"t{tag}-{i}"})
    return calls


def _children_cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def _child(script: Path, args: list[str], jobs: dict[str, Any]) -> list[dict[str, Any]]:
    """Run the callers in a child process (not in the server's process, loop or CPU account)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate(json.dumps(jobs).encode())
    return json.loads(out) if proc.returncode == 0 else []


async def run_load(server: Any, services: Any, rate: float, duration_s: float, pool: list[dict[str, Any]],
                   rng: random.Random, tag: str, sip: Any = None) -> LoadResult:
    from bench.harness import RssSampler, cpu_seconds, decoded_by

    calls = plan_calls(rate, duration_s, pool, rng, tag)
    jobs: dict[str, Any] = await sip.prepare(calls) if sip is not None else {}  # dry runs: before the figures
    stats = services.asr.stats
    before = (stats.batches, stats.batched_finals, stats.rejected, stats.early_finals, stats.early_discarded)
    stats.max_batch = 0
    opinions_before = _second_opinions(services, {c["lang"] for c in calls})
    decoded_before = decoded_by(services, {c["lang"] for c in calls})
    cpu_before, callers_before = cpu_seconds(), _children_cpu_s()
    asterisk_before = sip.asterisk_cpu_s() if sip is not None else 0.0
    with RssSampler() as sampler:
        if sip is None:
            reports = await _child(Path(__file__), ["--client"],
                                   {"host": "127.0.0.1", "port": server.agi_port, "calls": calls})
        else:
            reports = await _child(ROOT / "bench" / "sip_traffic.py", [], jobs)
    cpu = cpu_seconds() - cpu_before
    callers_cpu = _children_cpu_s() - callers_before  # the callers' child (and its SIPp processes), reaped
    asterisk_cpu = sip.asterisk_cpu_s() - asterisk_before if sip is not None else None
    if sip is not None:  # the server knows a SIP call by its channel; the caller by its display name
        channels = {name: channel for channel, name in server.taps.caller_names.items()}
        for report in reports:
            report["channel"] = channels.get(report["tag"], f"unseen/{report['tag']}")
    call_seconds = sum(r["duration_s"] for r in reports) or 1.0
    # concurrency on a 1 s grid over the arrival window
    spans = [(r["started_at"], r["started_at"] + r["duration_s"]) for r in reports]
    grid = [sum(1 for a, b in spans if a <= t < b) for t in range(int(duration_s))]
    heard: list[float] = []
    split: dict[str, list[float]] = {k: [] for k in
                                     ("endpointing", "asr_queue", "asr_decode", "nlu", "dialog", "prompt", "compute")}
    no_reply = right = checked = 0
    # the planned turns by the report's name for the call: its channel (fake channels) or tag (SIP callers)
    planned = {**{c["channel"]: c["turns"] for c in calls}, **{c["tag"]: c["turns"] for c in calls}}
    talked_over = sum(r.get("overlapped", 0) for r in reports)
    for report in reports:
        server_turns = [t for t in server.taps.turns.get(report["channel"], []) if not t.no_input and not t.dtmf]
        for k, latency in enumerate(report["turn_latency_ms"]):
            if latency is None:
                no_reply += 1
                continue
            heard.append(latency)
            if k < len(server_turns):
                t = server_turns[k]
                script = planned.get(report.get("tag") or report["channel"], [])
                expected = script[k]["intent"] if k < len(script) else None
                if expected is not None:
                    checked += 1
                    right += t.intent == expected
                if t.latency_ms:
                    split["endpointing"].append(max(0.0, latency - t.latency_ms))
                    split["compute"].append(t.latency_ms)
                split["asr_queue"].append(max(0.0, t.asr_ms - t.asr_decode_ms))
                split["asr_decode"].append(t.asr_decode_ms)
                split["nlu"].append(t.nlu_ms)
                split["dialog"].append(t.dialog_ms)
                split["prompt"].append(t.tts_ms)
    audio = [server.taps.audio[r["channel"]] for r in reports if r["channel"] in server.taps.audio]
    errors: dict[str, int] = {}
    for r in reports:
        if r["error"]:
            errors[r["error"][:60]] = errors.get(r["error"][:60], 0) + 1
    return LoadResult(
        rate=rate, calls=len(reports), ok=sum(r["ok"] for r in reports), errors=errors,
        concurrent_mean=sum(grid) / max(1, len(grid)), concurrent_peak=max(grid, default=0),
        turns=len(heard), heard_ms=_pcts(heard), split_ms={k: _pcts(v) for k, v in split.items()},
        no_reply=no_reply - talked_over, cpu_per_call=cpu / call_seconds, rss_peak_mb=sampler.peak / 2**20,
        late_client=sum(r["late_frames"] for r in reports), playback_client=sum(r["playback_frames"] for r in reports),
        late_server=sum(a.late_frames for a in audio), frames_server=sum(a.frames_out for a in audio),
        asr_batches=stats.batches - before[0], asr_batched_finals=stats.batched_finals - before[1],
        asr_max_batch=stats.max_batch, asr_refused=stats.rejected - before[2], loadavg_1m=os.getloadavg()[0],
        mode="fake" if sip is None else "asterisk", talked_over=talked_over,
        asterisk_cpu_per_call=None if asterisk_cpu is None else asterisk_cpu / call_seconds,
        callers_cpu_per_call=callers_cpu / call_seconds,
        greeting_after_ms=_pcts([r["greeting_after_s"] * 1000 for r in reports
                                 if r.get("greeting_after_s") is not None])["p50"],
        asr_early=stats.early_finals - before[3], asr_early_discarded=stats.early_discarded - before[4],
        second_opinion=dict(_second_opinions(services, {c["lang"] for c in calls}) - opinions_before),
        decoded_by=dict(decoded_by(services, {c["lang"] for c in calls}) - decoded_before),
        intents_right=right, intents_checked=checked,
    )


def _second_opinions(services: Any, langs: set[str]) -> Counter[str]:
    """The second opinion's outcomes so far (`SecondOpinionEngine.outcomes`) over these languages' engines."""
    from ivr.asr.second_opinion import SecondOpinionEngine

    total: Counter[str] = Counter()
    for lang in langs:
        engine = services.asr_engine(lang)
        if isinstance(engine, SecondOpinionEngine):
            total += engine.outcomes
    return total


async def bench(engines: list[str], rates: list[float], duration_s: float, seed: int,
                asterisk: bool = False) -> list[LoadResult]:
    from bench.harness import InProcessServer, bench_settings, temp_data_dir
    from ivr.services import CallServices

    pool = conversations(engines)
    data = temp_data_dir("ivr-traffic-")
    settings = bench_settings(data, max_calls=500)
    sandbox = None
    if asterisk:
        from bench.sip_traffic import LANG_DIALPLAN
        from ivr.testing.sandbox import Sandbox, _free_port

        settings.server.agi_port = _free_port()  # the sandbox's dialplan dials the server here
        sandbox = Sandbox.start(agi_port=settings.server.agi_port, extra_dialplan=LANG_DIALPLAN)
    services = CallServices.create(settings, with_records=True, engine_override={"en": "whisper", "ko": "vosk"})
    rng = random.Random(seed)
    results = []
    try:
        async with InProcessServer(settings, services) as server:
            sip = None
            if sandbox is not None:
                from bench.sip_traffic import SipLoad

                sip = SipLoad(sandbox, services, data / "sip")
            # warm-up: one short call per language (model load, prompt cache), outside the figures
            for lang in sorted({c["lang"] for c in pool}):
                conv = next(c for c in pool if c["lang"] == lang)
                turn = {"pcm_file": str(ROOT / "audio_fixtures" / conv["turns"][0]["file"]), "pause_s": 0.3,
                        "barge_in": False}
                warm = {"at_s": 0.0, "lang": lang, "channel": f"Local/warm-{lang}", "turns": [turn],
                        "tag": f"warm-{lang}"}
                if sip is None:
                    await _client({"host": "127.0.0.1", "port": server.agi_port, "calls": [warm]})
                else:
                    warmed = await _child(ROOT / "bench" / "sip_traffic.py", [], await sip.prepare([warm]))
                    if not warmed or warmed[0]["error"]:
                        print(f"warm-up SIP call ({lang}): {warmed[0]['error'] if warmed else 'no report'}")
            for rate in rates:
                print(f"offered load {rate} calls/s for {duration_s:.0f} s "
                      f"(load average {os.getloadavg()[0]:.1f})...", flush=True)
                result = await run_load(server, services, rate, duration_s, pool, rng, f"{rate}", sip)
                print(f"  {result.calls} calls, {result.concurrent_mean:.1f} concurrent on average, "
                      f"compute p95 {_f(result.split_ms['compute']['p95'])} ms, "
                      f"heard p95 {_f(result.heard_ms['p95'])} ms, intents right {result.intents_right} of "
                      f"{result.intents_checked}, early finals {result.asr_early} "
                      f"({result.asr_early_discarded} dropped: speech resumed)"
                      + (", second opinion " + ", ".join(f"{k} {n}" for k, n in sorted(result.second_opinion.items()))
                         if result.second_opinion else "")
                      + (", finals decoded by " + ", ".join(f"{k} {n}" for k, n in sorted(result.decoded_by.items()))
                         if result.decoded_by else ""), flush=True)
                results.append(result)
    finally:
        services.close()
        if sandbox is not None:
            sandbox.stop()
    return results


def _f(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def crossing(results: list[LoadResult], pick: Any) -> str:
    """The first load whose p95 is over 1 s, with the mean concurrent calls there."""
    for r in results:
        value = pick(r)
        if value is not None and value > CROSSING_MS:
            return f"{r.rate} calls/s ({r.concurrent_mean:.0f} concurrent calls on average): p95 {value:.0f} ms"
    return "not reached at the loads tried"


def _callers(results: list[LoadResult]) -> str:
    if results and results[0].mode == "asterisk":
        return "SIPp callers through the sandbox Asterisk"
    return "fake Asterisk channels"


def print_table(results: list[LoadResult], cond: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ivr serve under Poisson traffic, {_callers(results)} - {cond['date']}, "
                        f"{cond['cores']} cores, {cond['cpu']}")
    columns = ["calls/s", "calls ok", "concurrent mean/peak", "turns", "heard p50/p95/p99",
               "endpointing p50/p95", "ASR queue p50/p95/p99", "ASR decode p50/p95/p99", "NLU p95", "dialog p95",
               "prompt p95", "compute p50/p95/p99", "CPU %core/call", "RSS peak MB", "late client", "late server",
               "batches (finals, max)", "refused", "load 1m"]
    for column in columns:
        table.add_column(column, justify="right")
    for r in results:
        s = r.split_ms

        def three(d: dict[str, float | None]) -> str:
            return f"{_f(d['p50'])}/{_f(d['p95'])}/{_f(d['p99'])}"

        table.add_row(
            f"{r.rate}", f"{r.ok}/{r.calls}", f"{r.concurrent_mean:.1f}/{r.concurrent_peak}", str(r.turns),
            three(r.heard_ms), f"{_f(s['endpointing']['p50'])}/{_f(s['endpointing']['p95'])}",
            three(s["asr_queue"]), three(s["asr_decode"]), _f(s["nlu"]["p95"], 1), _f(s["dialog"]["p95"], 1),
            _f(s["prompt"]["p95"], 1), three(s["compute"]), f"{r.cpu_per_call * 100:.1f}", f"{r.rss_peak_mb:.0f}",
            f"{r.late_client}/{r.playback_client}", f"{r.late_server}/{r.frames_server}",
            f"{r.asr_batches} ({r.asr_batched_finals}, {r.asr_max_batch})", str(r.asr_refused), f"{r.loadavg_1m:.1f}",
        )
    console = Console(width=260)
    console.print(table)
    console.print("heard: caller's end of speech -> first reply sound (includes the end-of-speech silence); "
                  "endpointing: heard - compute; compute: server decision -> first reply frame handed to the socket. "
                  "load 1m: machine load average (the machine is shared with other jobs).")
    console.print(f"compute p95 crosses 1 s at: {crossing(results, lambda r: r.split_ms['compute']['p95'])}")
    console.print(f"heard p95 crosses 1 s at: {crossing(results, lambda r: r.heard_ms['p95'])}")
    for r in results:
        console.print(f"{r.rate} calls/s: the callers' own processes used {r.callers_cpu_per_call * 100:.1f} %core "
                      "per call (same two cores as the server)")
        if r.mode == "asterisk":
            console.print(f"{r.rate} calls/s: Asterisk CPU {(r.asterisk_cpu_per_call or 0) * 100:.1f} %core/call; "
                          f"{r.talked_over} turns talked over (left out), {r.no_reply} without a reply; "
                          f"greeting heard {_f(r.greeting_after_ms)} ms after the caller's first packet "
                          f"(median; the plan assumes {LEAD_S * 1000:.0f})")
        if r.errors:
            console.print(f"[yellow]{r.rate} calls/s: caller errors {r.errors}")


def write_html(path: Path, results: list[LoadResult], cond: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    x = [r.concurrent_mean for r in results]
    for label, pick in [("compute p95", lambda r: r.split_ms["compute"]["p95"]),
                        ("compute p50", lambda r: r.split_ms["compute"]["p50"]),
                        ("heard p95 (incl. end-of-speech silence)", lambda r: r.heard_ms["p95"]),
                        ("ASR queue p95", lambda r: r.split_ms["asr_queue"]["p95"])]:
        ax.plot(x, [pick(r) or 0 for r in results], marker="o", label=label)
    ax.axhline(CROSSING_MS, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("concurrent calls (mean over the load level)")
    ax.set_ylabel("ms")
    ax.set_title("Turn latency vs concurrent calls (Poisson arrivals)")
    ax.legend()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    image = base64.b64encode(buf.getvalue()).decode()
    rows = "".join(
        f"<tr><td>{r.rate}</td><td>{r.calls}</td><td>{r.concurrent_mean:.1f}</td><td>{r.concurrent_peak}</td>"
        f"<td>{_f(r.heard_ms['p95'])}</td><td>{_f(r.split_ms['compute']['p50'])}</td>"
        f"<td>{_f(r.split_ms['compute']['p95'])}</td><td>{_f(r.split_ms['compute']['p99'])}</td>"
        f"<td>{_f(r.split_ms['asr_queue']['p95'])}</td><td>{_f(r.split_ms['asr_decode']['p95'])}</td>"
        f"<td>{r.cpu_per_call * 100:.1f}</td><td>{r.rss_peak_mb:.0f}</td><td>{r.loadavg_1m:.1f}</td></tr>"
        for r in results)
    path.write_text(
        "<!doctype html><meta charset=utf-8><title>ivr traffic benchmark</title>"
        f"<h1>ivr serve under Poisson traffic, {_callers(results)}</h1>"
        f"<p>{cond['date']}, {cond['cores']} cores, {cond['cpu']}, "
        f"Python {cond['python']}. The machine was shared with other jobs: see the load column.</p>"
        f"<img src='data:image/png;base64,{image}'>"
        "<table border=1 cellpadding=4><tr><th>calls/s</th><th>calls</th><th>concurrent mean</th><th>peak</th>"
        "<th>heard p95</th><th>compute p50</th><th>p95</th><th>p99</th><th>ASR queue p95</th>"
        "<th>ASR decode p95</th><th>CPU %core/call</th><th>RSS MB</th><th>load 1m</th></tr>"
        f"{rows}</table>")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default=DEFAULT_RATES, help="offered loads, calls per second (default 0.2,0.5,1,2)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of arrivals per load (default 60)")
    parser.add_argument("--engine", choices=["vosk", "whisper", "both"], default="both")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--asterisk", action="store_true",
                        help="real SIP calls (SIPp) through the sandbox Asterisk (root; see bench/sip_traffic.py)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--html", type=Path)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)  # the callers' child process
    args = parser.parse_args(argv)
    if args.client:
        print(json.dumps(asyncio.run(_client(json.load(sys.stdin)))))
        return 0
    import logging

    from bench.concurrency import conditions

    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    engines = ["vosk", "whisper"] if args.engine == "both" else [args.engine]
    cond = conditions()
    results = asyncio.run(bench(engines, [float(r) for r in args.rates.split(",")], args.duration, args.seed,
                                args.asterisk))
    cond["loadavg_end"] = os.getloadavg()[0]
    print_table(results, cond)
    if args.json:
        args.json.write_text(json.dumps({"conditions": cond, "engines": engines, "duration_s": args.duration,
                                         "mode": "asterisk" if args.asterisk else "fake",
                                         "results": [asdict(r) for r in results]}, indent=1))
    if args.html:
        write_html(args.html, results, cond)
    return 0


if __name__ == "__main__":
    sys.exit(main())
