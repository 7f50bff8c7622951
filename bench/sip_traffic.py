"""SIP callers for `bench/traffic.py --asterisk`: each conversation as one SIPp call into the sandbox.

The fake-channel callers of bench/traffic.py listen and react (they speak a pause after the prompt
ends). SIPp cannot: it plays a pcap of the caller's RTP on a fixed timeline. So each call's timeline
is planned before the load starts, from a dry run of the same conversation on the simulated line
(ivr/testing/simline.py, the real pipeline on an audio clock): how long the greeting and each reply
play. The caller then speaks its turn `pause_s` after the planned end of the prompt (or
BARGE_IN_AFTER_S after its start, for a barge-in), counting REPLY_WAIT_S from its end of speech to
the start of the reply. A reply later than planned is talked over, as an impatient caller would.

What the caller heard is read off the loopback interface (ivr/testing/sipcaller.LoopbackCapture,
kernel receive times): per turn, the time from the RTP packet in which the caller's speech ended
to the first loud RTP packet Asterisk sent back. A turn whose end of speech fell while the
assistant was still audible (an earlier reply still playing) is counted as talked over and left
out of the latencies: its "first reply sound" would be the old prompt.

    python bench/sip_traffic.py < jobs.json > reports.json     (the callers' child process)
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from ivr.audio import g711  # noqa: E402
from ivr.audio.pcm import FRAME_BYTES, FRAME_MS  # noqa: E402
from ivr.telephony.rtp import PT_PCMA, PT_PCMU  # noqa: E402
from ivr.testing.sipcaller import (  # noqa: E402
    HeardCall,
    LoopbackCapture,
    Pause,
    Segment,
    Speak,
    caller_packets,
    scenario_xml,
    sipp_command,
    write_pcap,
)

FRAME_S = FRAME_MS / 1000
# planned: the caller's first RTP packet -> first sound of the greeting. The bridge answers the channel
# itself and plays at once, so the greeting is under way by the time SIPp has the 200 OK and starts its
# pcap: 15-25 ms measured here (the first runs planned 0.5 s)
LEAD_S = 0.02
REPLY_WAIT_S = 1.0  # planned: caller's end of speech -> first sound of the reply (endpointing + compute)
BARGE_IN_AFTER_S = 1.0  # as bench/traffic.py: a barge-in starts this long into the prompt
LISTEN_LAST_S = 2.0  # as bench/traffic.py: the last reply is heard this long, then the caller hangs up
OVERLAP_S = 0.1  # the assistant audible this close before the caller's end of speech: talked over
REPLY_TIMEOUT_S = 15.0  # as bench/traffic.py: no reply this long after speaking counts as none
NON_SILENT_PEAK = 100  # as bench/fake_asterisk.py: a reply packet is sound above this sample peak
PLAYBACK_END_GAP_S = 0.25  # as bench/fake_asterisk.py: a longer gap ends a playback
LATE_GAP_S = 0.040  # as bench/fake_asterisk.py: a playback packet this late after the previous one
DEFAULT_PROMPT_S = 3.0  # a prompt the dry run did not reach (planning only)
CALLER_ID = "+15550100"  # as the fake channels: the demo subscriber of the manifest's calls
SIPP_SLACK_S = 60.0  # SIPp's own time limit: the planned call length plus this
# the dialled number picks the call's language (the sandbox's [from-sip] otherwise sends every call
# to [ivr] in IVR_LANG); Asterisk merges this [from-sip] with the shipped one
LANG_DIALPLAN = "\n".join(
    f"[from-sip]\nexten => {lang},1,Set(IVR_LANG={lang})\n same => n,Goto(ivr,s,1)" for lang in ("en", "ko"))


# ------------------------------------------------------------------------------------- the timeline


@dataclass(frozen=True)
class PlannedTurn:
    pcm: bytes  # the utterance, 8 kHz slin
    speech_end_s: float  # where speech ends inside it (bench.fake_asterisk.speech_end_offset_s)
    barge_in: bool = False
    pause_s: float = 0.5  # think time after the prompt ends


@dataclass
class CallPlan:
    """What the caller sends, and where in that stream each turn's speech ends."""

    script: list[Segment]
    speech_end_packet: list[int]  # index of the caller's RTP packet sent as each turn's speech ended
    length_s: float

    @property
    def speech_end_s(self) -> list[float]:
        return [i * FRAME_S for i in self.speech_end_packet]


def _frames(seconds: float) -> int:
    return max(0, round(seconds / FRAME_S))


def plan_call(turns: list[PlannedTurn], prompts_s: list[float], *, lead_s: float = LEAD_S,
              reply_wait_s: float = REPLY_WAIT_S, barge_in_after_s: float = BARGE_IN_AFTER_S,
              listen_last_s: float = LISTEN_LAST_S) -> CallPlan:
    """The caller's timeline, in 20 ms packets from the answer. `prompts_s[k]` is how long the
    assistant talks before turn k (the greeting first), `prompts_s[len(turns)]` the last reply."""
    if len(prompts_s) != len(turns) + 1:
        raise ValueError(f"{len(turns)} turns need {len(turns) + 1} prompt lengths, got {len(prompts_s)}")
    script: list[Segment] = []
    ends: list[int] = []
    cursor = 0  # packets planned so far
    prompt_start = _frames(lead_s)
    for turn, prompt_s in zip(turns, prompts_s, strict=False):
        offset = barge_in_after_s if turn.barge_in else prompt_s + turn.pause_s
        speak_at = max(cursor, prompt_start + _frames(offset))
        if speak_at > cursor:
            script.append(Pause((speak_at - cursor) * FRAME_MS))
        script.append(Speak(turn.pcm))
        ends.append(speak_at + _frames(turn.speech_end_s))
        cursor = speak_at + math.ceil(len(turn.pcm) / FRAME_BYTES)
        prompt_start = ends[-1] + _frames(reply_wait_s)
    end = max(cursor, prompt_start + _frames(min(prompts_s[-1], listen_last_s)))
    if end > cursor:
        script.append(Pause((end - cursor) * FRAME_MS))
    return CallPlan(script, ends, end * FRAME_S)


async def prompt_lengths(services: Any, lang: str, turns: list[PlannedTurn], *, caller_id: str) -> list[float]:
    """Dry run of the conversation on the simulated line: how long the greeting and each reply
    play (seconds). Fewer lengths than turns + 1 when the call ended early (e.g. a hand-off)."""
    from ivr.testing.replay import run_call
    from ivr.testing.simline import CallerTurn

    caller = [CallerTurn(pcm=t.pcm, barge_in_after_ms=int(BARGE_IN_AFTER_S * 1000) if t.barge_in else None)
              for t in turns]
    result, _ = await run_call(services, lang, caller, caller_id=caller_id)
    spoken = [t for t in result.turns if not t.no_input and not t.dtmf]
    texts = [t.prompt for t in spoken] + ([spoken[-1].reply] if spoken else [])
    return [len(services.prompts.get_sync(text, lang)) / (2 * 8000) if text else 0.0 for text in texts]


def write_call(workdir: Path, tag: str, plan: CallPlan, *, caller: str) -> Path:
    """The call's pcap and SIPp scenario (u-law, as the shipped trunk offers first); returns the scenario."""
    pcap = workdir / f"{tag}.pcap"
    write_pcap(pcap, caller_packets(plan.script, "ulaw"))
    scenario = workdir / f"{tag}.xml"
    scenario.write_text(scenario_xml("ulaw", pcap, listen_s=plan.length_s, caller=caller, caller_name=tag))
    return scenario


class SipLoad:
    """The parent's side: plans and writes each call of a load level (pcap + scenario), reads
    Asterisk's CPU time. The calls themselves are placed by the child process (`run_callers`)."""

    def __init__(self, sandbox: Any, services: Any, workdir: Path, *, caller_id: str = CALLER_ID) -> None:
        self.sandbox = sandbox
        self.services = services
        self.workdir = workdir
        self.caller_id = caller_id
        self._prompts: dict[tuple[Any, ...], list[float]] = {}  # one dry run per conversation and barge-ins
        workdir.mkdir(parents=True, exist_ok=True)

    async def prepare(self, calls: list[dict[str, Any]]) -> dict[str, Any]:
        """bench/traffic.py's calls ({"at_s", "lang", "tag", "turns": [{"pcm_file", "barge_in", "pause_s"}]})
        -> the child's jobs."""
        from bench.fake_asterisk import speech_end_offset_s
        from ivr.audio.pcm import read_wav

        jobs = []
        for call in calls:
            turns = []
            for turn in call["turns"]:
                pcm = read_wav(turn["pcm_file"])
                turns.append(PlannedTurn(pcm, speech_end_offset_s(pcm), bool(turn["barge_in"]), turn["pause_s"]))
            key = (call["lang"], tuple((t["pcm_file"], bool(t["barge_in"])) for t in call["turns"]))
            if key not in self._prompts:
                self._prompts[key] = await prompt_lengths(self.services, call["lang"], turns, caller_id=self.caller_id)
            prompts = self._prompts[key]
            # the dry run ended the call after fewer turns (a hand-off): the caller stops there too,
            # or its next turn would be "answered" by the queue's music on hold
            n = max(1, min(len(turns), len(prompts) - 1))
            prompts = (prompts + [DEFAULT_PROMPT_S] * (n + 1))[: n + 1]
            plan = plan_call(turns[:n], prompts)
            scenario = write_call(self.workdir, call["tag"], plan, caller=self.caller_id)
            jobs.append({"tag": call["tag"], "at_s": call["at_s"], "lang": call["lang"], "scenario": str(scenario),
                         "length_s": plan.length_s, "speech_end_packet": plan.speech_end_packet})
        return {"sip_port": self.sandbox.info.sip_port, "calls": jobs}

    def asterisk_cpu_s(self) -> float:
        """User + system CPU seconds of the sandbox's Asterisk (all its threads) so far."""
        import os

        try:
            fields = Path(f"/proc/{self.sandbox.info.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # stat fields 14, 15


# ---------------------------------------------------------------------------------- what was heard


@dataclass
class HeardTurns:
    latency_ms: list[float | None]  # per planned turn; None: no reply (or talked over: see overlapped)
    overlapped: int  # turns whose end of speech fell while the assistant was still audible
    playback_frames: int
    late_frames: int
    greeting_after_s: float | None = None  # caller's first packet -> first loud packet back (the plan: LEAD_S)


def _loud(payload: bytes, payload_type: int) -> bool:
    pcm = g711.decode(payload, "ulaw" if payload_type == PT_PCMU else "alaw")
    return bool(len(pcm)) and int(np.abs(np.frombuffer(pcm, "<i2").astype(np.int32)).max()) > NON_SILENT_PEAK


def heard_turns(call: HeardCall, speech_end_packet: list[int]) -> HeardTurns:
    """Per turn: caller's end of speech (the time its packet was on the wire) -> first loud packet back."""
    sent = sorted(t for t, _ in call.sent)
    received = sorted(((at, p) for at, p in zip(call.rtp_at, call.rtp, strict=True)
                       if p.payload_type in (PT_PCMU, PT_PCMA)), key=lambda item: item[0])
    loud = [at for at, p in received if _loud(p.payload, p.payload_type)]
    playback = late = 0
    for (a, _), (b, _) in zip(received, received[1:], strict=False):
        if b - a < PLAYBACK_END_GAP_S:
            playback += 1
            late += b - a > LATE_GAP_S
    if not sent:
        return HeardTurns([None] * len(speech_end_packet), 0, playback, late)
    greeting_after_s = loud[0] - sent[0] if loud else None
    ends = [sent[i] if i < len(sent) else sent[0] + i * FRAME_S for i in speech_end_packet]
    latencies: list[float | None] = []
    overlapped = 0
    for k, end in enumerate(ends):
        limit = min(end + REPLY_TIMEOUT_S, ends[k + 1] if k + 1 < len(ends) else math.inf)
        if any(end - OVERLAP_S <= at <= end for at in loud):
            overlapped += 1
            latencies.append(None)
            continue
        reply = next((at for at in loud if end < at <= limit), None)
        latencies.append(None if reply is None else (reply - end) * 1000)
    return HeardTurns(latencies, overlapped, playback, late, greeting_after_s)


# --------------------------------------------------------------------------------- the child process


def run_callers(jobs: dict[str, Any]) -> list[dict[str, Any]]:
    """Start one SIPp per call at its arrival time, hear them all, return one report per call."""
    sip_port = jobs["sip_port"]
    calls = sorted(jobs["calls"], key=lambda c: c["at_s"])
    began = time.monotonic()
    running: dict[int, subprocess.Popen[bytes]] = {}
    started: dict[int, float] = {}
    ended: dict[int, tuple[float, int]] = {}
    with LoopbackCapture(sip_port) as capture:
        pending = list(enumerate(calls))
        while pending or running:
            now = time.monotonic() - began
            while pending and pending[0][1]["at_s"] <= now:
                i, call = pending.pop(0)
                scenario = Path(call["scenario"])
                command = sipp_command(sip_port, scenario, scenario.with_suffix(".errors"), dialled=call["lang"],
                                       timeout_s=call["length_s"] + SIPP_SLACK_S)
                running[i] = subprocess.Popen(command, cwd=scenario.parent, stdin=subprocess.DEVNULL,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                started[i] = time.monotonic() - began
            for i, process in list(running.items()):
                if process.poll() is not None:
                    ended[i] = (time.monotonic() - began, process.returncode)
                    del running[i]
            time.sleep(0.02)
    by_name = {c.caller_name: c for c in capture.calls.values() if c.media_port}
    reports = []
    for i, call in enumerate(calls):
        end_s, returncode = ended[i]
        heard = by_name.get(call["tag"])
        report: dict[str, Any] = {
            "tag": call["tag"], "channel": "", "ok": False, "error": "", "started_at": started[i],
            "duration_s": end_s - started[i], "turn_latency_ms": [], "overlapped": 0, "late_frames": 0,
            "playback_frames": 0, "hung_up_by": "", "sipp_exit": returncode, "greeting_after_s": None,
        }
        if heard is None or not heard.answered:
            report["error"] = f"{'not answered' if heard else 'no SIP call seen'} (sipp exit {returncode})"
        else:
            turns = heard_turns(heard, call["speech_end_packet"])
            report.update(turn_latency_ms=turns.latency_ms, overlapped=turns.overlapped,
                          late_frames=turns.late_frames, playback_frames=turns.playback_frames,
                          hung_up_by="server" if heard.bye_from_asterisk else "caller",
                          greeting_after_s=turns.greeting_after_s)
            missing = sum(x is None for x in turns.latency_ms) - turns.overlapped
            report["error"] = (f"sipp exit {returncode}" if returncode else "no reply" if missing else "")
            report["ok"] = not report["error"]
        reports.append(report)
    return reports


if __name__ == "__main__":
    print(json.dumps(run_callers(json.load(sys.stdin))))
