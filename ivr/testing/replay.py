"""Replay recorded caller audio through the whole pipeline and judge it against expectations.

Each single-utterance fixture becomes a one-turn call: the assistant greets, the simulated caller
says the recording, and the turn's transcript, intent and entities are checked. Each multi-turn
call of the manifest runs turn by turn and is checked per turn and on its final route. Nothing
is mocked: VAD, ASR, NLU, dialog, hooks and TTS are the ones `ivr serve` uses; only the phone
line is simulated (ivr/testing/simline.py), on an audio clock so a long run takes seconds per call.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from rapidfuzz.distance import Levenshtein

from ivr.audio.pcm import read_wav
from ivr.call import CallResult, CallSession, TurnLog
from ivr.errors import IvrError
from ivr.services import CallServices
from ivr.testing.fixtures import Call, Fixture, Turn
from ivr.testing.simline import CallerTurn, SimulatedLine

PASS, FAIL, SKIP = "pass", "fail", "skip"


# ---- scoring ----------------------------------------------------------------------------------
def normalize(text: str) -> list[str]:
    """Lower-case words without punctuation, as WER is usually scored."""
    return re.findall(r"[\w']+", text.lower())


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edit distance in words, reference length): sum both over a corpus for its WER."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    return Levenshtein.distance(ref, hyp), len(ref)


def entities_match(expected: dict[str, Any], got: dict[str, Any]) -> bool:
    """Every expected entity is present with an equal value (numbers compared as numbers)."""
    for key, want in expected.items():
        have = got.get(key)
        if isinstance(want, (int, float)) and isinstance(have, (int, float)):
            if abs(float(want) - float(have)) > 1e-9:
                return False
        elif str(have) != str(want):
            return False
    return True


# ---- results ----------------------------------------------------------------------------------
@dataclass
class Check:
    name: str  # transcript | intent | entities | say_contains | route
    verdict: str
    expected: Any = None
    got: Any = None


@dataclass
class FixtureResult:
    """One replayed recording (or one turn of a call)."""

    file: str
    lang: str
    text: str = ""
    intent: str = ""
    score: float = 0.0
    entities: dict[str, Any] = field(default_factory=dict)
    confidence: float = 0.0
    latency_ms: float = 0.0
    asr_ms: float = 0.0
    reply: str = ""
    call: str = ""  # the manifest call this turn belongs to, "" for a single fixture
    engine: str = ""
    errors: int = 0  # word errors against the transcript
    ref_words: int = 0
    checks: list[Check] = field(default_factory=list)
    reason: str = ""  # why skipped / failed outright

    @property
    def verdict(self) -> str:
        verdicts = {c.verdict for c in self.checks}
        if self.reason and not self.checks:
            return SKIP if self.reason.startswith("skip") else FAIL
        return FAIL if FAIL in verdicts else PASS if verdicts else SKIP

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["verdict"] = self.verdict
        out["score"] = round(self.score, 3)
        out["latency_ms"] = round(self.latency_ms, 1)
        out["asr_ms"] = round(self.asr_ms, 1)
        return out


@dataclass
class Totals:
    fixtures: int = 0
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    wer: float | None = None
    intent_accuracy: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    skipped_reasons: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, results: Iterable[FixtureResult]) -> Totals:
        tally = Tally()
        for r in results:
            tally.add(r)
        return tally.totals()


class Tally:
    """Totals built one result at a time, so a replay of any number of files keeps no results: only
    counts and one float per timed result (for the latency percentiles)."""

    def __init__(self) -> None:
        self._totals = Totals()
        self._errors = self._ref_words = self._intents = self._intents_ok = 0
        self._latencies: list[float] = []

    def add(self, r: FixtureResult) -> None:
        totals = self._totals
        totals.fixtures += 1
        verdict = r.verdict
        if verdict == PASS:
            totals.passed += 1
        elif verdict == FAIL:
            totals.failed += 1
        else:
            totals.skipped += 1
            totals.skipped_reasons[r.reason] = totals.skipped_reasons.get(r.reason, 0) + 1
            return
        self._errors += r.errors
        self._ref_words += r.ref_words
        intents = [c for c in r.checks if c.name == "intent"]
        self._intents += len(intents)
        self._intents_ok += sum(c.verdict == PASS for c in intents)
        if r.latency_ms > 0:
            self._latencies.append(r.latency_ms)

    def totals(self) -> Totals:
        totals = replace(self._totals, skipped_reasons=dict(self._totals.skipped_reasons))
        if self._ref_words:
            totals.wer = self._errors / self._ref_words
        if self._intents:
            totals.intent_accuracy = self._intents_ok / self._intents
        latencies = sorted(self._latencies)
        if latencies:
            totals.latency_p50_ms = statistics.median(latencies)
            totals.latency_p95_ms = latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))]
        return totals


# ---- running ----------------------------------------------------------------------------------
async def run_call(
    services: CallServices,
    lang: str,
    turns: list[CallerTurn],
    *,
    flow: str = "support",
    caller_id: str = "",
    realtime: bool = False,
    call_time: datetime | None = None,
    on_turn: Callable[[TurnLog], None] | None = None,
    on_say: Callable[[str], None] | None = None,
) -> tuple[CallResult, SimulatedLine]:
    """One simulated call through the real pipeline, placed at `call_time` (None: services' clock)."""
    line = SimulatedLine(turns, realtime=realtime)
    session = CallSession(services, line, lang=lang, flow=flow, caller_id=caller_id,
                          on_turn=on_turn, on_say=on_say, call_time=call_time)
    line.attach(lambda: session.awaiting_caller)
    try:
        result = await session.run()
    finally:
        line.close()
    return result, line


def _turn_result(file: str, lang: str, log: TurnLog | None, engine: str, call: str = "") -> FixtureResult:
    result = FixtureResult(file=file, lang=lang, call=call, engine=engine)
    if log is not None:
        result.text, result.intent, result.score = log.transcript, log.intent, log.score
        result.entities, result.confidence = dict(log.entities), log.confidence
        result.latency_ms, result.asr_ms, result.reply = log.latency_ms, log.asr_ms, log.reply
    return result


def _check_turn(result: FixtureResult, transcript: str | None, intent: str | None,
                entities: dict[str, Any] | None, say_contains: list[str] | None = None) -> None:
    if transcript:
        result.errors, result.ref_words = word_errors(transcript, result.text)
        # the transcript is informative (WER); the verdict rests on what was understood
    if intent is not None:
        result.checks.append(Check("intent", PASS if result.intent == intent else FAIL, intent, result.intent))
    if entities:
        ok = entities_match(entities, result.entities)
        result.checks.append(Check("entities", PASS if ok else FAIL, entities, result.entities))
    for needle in say_contains or []:
        ok = needle.lower() in result.reply.lower()
        result.checks.append(Check("say_contains", PASS if ok else FAIL, needle, result.reply))


def _skip_reason(services: CallServices, lang: str) -> str:
    if services.asr_engine(lang) is None:
        return f"skip: no speech model for {lang!r} (see `ivr models list`)"
    return ""


async def replay_fixture(services: CallServices, fixture: Fixture,
                         call_time: datetime | None = None) -> FixtureResult:
    """A single recording as the caller's first turn of a call (at `call_time`, else the fixture's)."""
    skip = _skip_reason(services, fixture.lang)
    if skip:
        return FixtureResult(file=fixture.file, lang=fixture.lang, reason=skip)
    try:
        pcm = read_wav(fixture.path, max_s=services.settings.asr.max_audio_s)
    except IvrError as exc:
        return FixtureResult(file=fixture.file, lang=fixture.lang, reason=str(exc))
    call, _ = await run_call(services, fixture.lang, [CallerTurn(pcm=pcm, label=fixture.file)],
                             call_time=call_time or fixture.call_time)
    first = call.turns[0] if call.turns else None
    result = _turn_result(fixture.file, fixture.lang, first, call.engine)
    if fixture.no_input:
        got = bool(first and first.no_input) or first is None
        result.checks.append(Check("no_input", PASS if got else FAIL, True, got))
        return result
    if first is None or first.no_input:
        result.reason = "no speech detected in the recording"
    _check_turn(result, fixture.transcript, fixture.intent, fixture.entities)
    if not result.checks:  # nothing was judged: say why, rather than an empty skip
        expected = "only a transcript is expected" if fixture.transcript else "no expectations"
        heard = f"; {result.reason}" if result.reason else ""
        result.reason = (f"skip: {expected} (no intent or entities to judge: put the file in a manifest "
                         f"with them){heard}")
    return result


BARGE_IN_AFTER_MS = 3000  # a barge-in turn starts this far into the assistant's talking (as [ivr-test-turns])


def caller_turns(call: Call) -> list[CallerTurn]:
    out = []
    for turn in call.turns:
        pcm = read_wav(turn.path) if turn.file else b""
        out.append(CallerTurn(pcm=pcm, dtmf=turn.dtmf or "", label=turn.file or f"dtmf {turn.dtmf}",
                              barge_in_after_ms=BARGE_IN_AFTER_MS if turn.barge_in else None))
    return out


async def replay_call(services: CallServices, call: Call, fixture_of: Callable[[str], Fixture | None],
                      *, realtime: bool = False, call_time: datetime | None = None) -> list[FixtureResult]:
    """A multi-turn call: one result per caller turn plus one for the route (at `call_time`, else the call's)."""
    skip = _skip_reason(services, call.lang)
    if skip and any(t.file for t in call.turns):
        return [FixtureResult(file=call.name, lang=call.lang, call=call.name, reason=skip)]
    result, _ = await run_call(services, call.lang, caller_turns(call), flow=call.flow,
                               caller_id=call.caller, realtime=realtime, call_time=call_time or call.call_time)
    out = []
    for i, turn in enumerate(call.turns):
        log = result.turns[i] if i < len(result.turns) else None
        label = turn.file or f"dtmf:{turn.dtmf}"
        r = _turn_result(label, call.lang, log, result.engine, call=call.name)
        fixture = fixture_of(turn.file) if turn.file else None
        _check_turn(r, fixture.transcript if fixture else None, _expected(turn, fixture, "intent"),
                    _expected(turn, fixture, "entities"), turn.say_contains)
        if log is None:
            r.checks.append(Check("turn", FAIL, "a turn", "the call ended before this turn"))
        elif turn.dtmf and len(turn.dtmf) == 1:  # the key reached the assistant as this turn (not lost)
            r.checks.append(Check("dtmf", PASS if log.dtmf == turn.dtmf else FAIL, turn.dtmf, log.dtmf))
        out.append(r)
    route = FixtureResult(file=f"{call.name}:route", lang=call.lang, call=call.name, engine=result.engine)
    route.checks.append(Check("route", PASS if result.route == call.route else FAIL, call.route,
                              f"{result.route} ({result.reason})"))
    out.append(route)
    return out


def _expected(turn: Turn, fixture: Fixture | None, what: str) -> Any:
    own = getattr(turn, what)
    if own is not None:
        return own
    return getattr(fixture, what) if fixture else None


def wav_fixture(path: Path, lang: str) -> Fixture:
    """A bare WAV given on the command line: replayed without expectations."""
    return Fixture(file=path.name, lang=lang, transcript="", intent=None, source="command line",
                   path=path)


async def replay_iter(services: CallServices, fixtures: Iterable[Fixture], calls: Iterable[Call],
                      fixture_of: Callable[[str], Fixture | None],
                      call_time: datetime | None = None) -> AsyncIterator[FixtureResult]:
    """Every fixture, then every call, one result at a time as each is judged (nothing is kept);
    `call_time` (e.g. `ivr replay --now`) overrides the manifest's."""
    for fixture in fixtures:
        yield await replay_fixture(services, fixture, call_time)
    for call in calls:
        for r in await replay_call(services, call, fixture_of, call_time=call_time):
            yield r


async def replay_all(services: CallServices, fixtures: list[Fixture], calls: list[Call],
                     fixture_of: Callable[[str], Fixture | None],
                     progress: Callable[[FixtureResult], None] | None = None,
                     call_time: datetime | None = None) -> list[FixtureResult]:
    """`replay_iter` collected in a list (tests, small manifests)."""
    results: list[FixtureResult] = []
    async for r in replay_iter(services, fixtures, calls, fixture_of, call_time):
        results.append(r)
        if progress:
            progress(r)
    return results
