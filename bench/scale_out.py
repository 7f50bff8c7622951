"""Capacity of 1 node against 2 nodes, each pinned to one core, in one run: does it scale linearly?

    python bench/scale_out.py [--rates1 0.05,0.1,0.2] [--rates2 0.1,0.2,0.4] [--duration 45]
                              [--engine whisper|vosk] [--p95-ms 2500] [--json out.json]

Each node is a real `ivr serve` process (`taskset -c <core>`, its own loopback address, records in its
own SQLite file). The callers are bench/traffic.py's fake Asterisk channels (one child process per
node): Poisson arrivals for `--duration` seconds per offered load, multi-turn conversations from the
fixture manifest with human pauses and some barge-in. Calls alternate over the nodes, as the shipped
dialplan's round robin spreads them. Vosk serves Korean calls, Whisper English ones.

Per configuration and offered load: calls, mean concurrent calls, turn latency as the caller hears it
(end of its speech -> first reply sound) p50/p95, turns with no reply. Then, per configuration, the
capacity at `--p95-ms` (the offered load where the heard p95 reaches it, interpolated between the
measured loads), and the ratio 2 nodes / 1 node. Also the pairs "2 nodes at twice the load of 1 node".
The machine load (uptime) is printed with the figures: the cores are shared with whatever else runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.harness import percentile  # noqa: E402
from bench.traffic import ENGINE_LANG, PAUSE_S, conversations  # noqa: E402

TRAFFIC = ROOT / "bench" / "traffic.py"
START_TIMEOUT_S = 120.0
BARGE_IN_SHARE = 0.2


@dataclass
class Node:
    name: str
    host: str
    core: int
    agi_port: int
    process: subprocess.Popen[str]


@dataclass
class Point:
    nodes: int
    rate: float
    calls: int
    ok: int
    concurrent_mean: float
    turns: int
    no_reply: int
    heard_p50_ms: float | None
    heard_p95_ms: float | None
    loadavg_1m: float
    node_cpu_s: float  # CPU time (user + system) the nodes used during this load
    cpu_s_per_call: float  # node_cpu_s / calls: what one call costs, however busy the machine is


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def start_node(index: int, core: int, workdir: Path, call_time: str) -> Node:
    import yaml

    name, host = f"bench-{index}", f"127.0.0.{10 + index}"
    data = workdir / name
    data.mkdir(parents=True, exist_ok=True)
    agi_port = _free_port(host)
    config = {
        "server": {"node": name, "host": host, "agi_port": agi_port, "audiosocket_port": _free_port(host),
                   "health_port": _free_port(host), "allowed_peers": ["127.0.0.0/8"], "max_calls": 500,
                   "warm_langs": ["en", "ko"]},
        "asr": {"engine": {"en": "whisper", "ko": "vosk"}},
        "storage": {"url": f"sqlite:///{data / 'calls.sqlite3'}"},
        "paths": {"data": str(data)},
        "call_time": call_time,
    }
    (data / "ivr.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "IVR_CONFIG": str(data / "ivr.yaml"), "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(["taskset", "-c", str(core), sys.executable, "-m", "ivr.cli", "serve"],
                               stdout=subprocess.PIPE, stderr=(data / "serve.log").open("w"), text=True, env=env)
    return Node(name, host, core, agi_port, process)


def wait_ready(node: Node) -> None:
    assert node.process.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    line = node.process.stdout.readline()  # printed once it listens (after loading its speech model)
    if f"node {node.name}" not in line or time.monotonic() > deadline:
        raise SystemExit(f"{node.name} did not start: {line!r}")


def stop_nodes(nodes: list[Node]) -> None:
    for node in nodes:
        node.process.terminate()
    for node in nodes:
        try:
            node.process.wait(30)
        except subprocess.TimeoutExpired:
            node.process.kill()


def plan_calls(rate: float, duration_s: float, pool: list[dict[str, Any]], rng: random.Random,
               tag: str) -> list[dict[str, Any]]:
    calls, t = [], rng.expovariate(rate)
    while t < duration_s:
        conv = rng.choice(pool)
        turns = [{"pcm_file": str(ROOT / "audio_fixtures" / turn["file"]),
                  "barge_in": turn["barge_in"] or (k == 0 and rng.random() < BARGE_IN_SHARE),
                  "pause_s": rng.uniform(*PAUSE_S)} for k, turn in enumerate(conv["turns"])]
        calls.append({"at_s": t, "lang": conv["lang"], "channel": f"Local/scale-{tag}-{len(calls)}", "turns": turns})
        t += rng.expovariate(rate)
    return calls


async def _client(node: Node, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    proc = await asyncio.create_subprocess_exec(sys.executable, str(TRAFFIC), "--client",
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate(json.dumps({"host": node.host, "port": node.agi_port, "calls": calls}).encode())
    return json.loads(out) if proc.returncode == 0 else []


def node_cpu_s(nodes: list[Node]) -> float:
    """CPU seconds (user + system) the node processes have used so far (/proc/<pid>/stat)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for node in nodes:
        fields = Path(f"/proc/{node.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


async def run_point(nodes: list[Node], rate: float, duration_s: float, pool: list[dict[str, Any]],
                    rng: random.Random) -> Point:
    calls = plan_calls(rate, duration_s, pool, rng, f"{len(nodes)}-{rate}")
    cpu_before = node_cpu_s(nodes)
    # round robin, as the dialplan spreads calls: call k goes to node k mod n
    shares = [calls[i::len(nodes)] for i in range(len(nodes))]
    reports = [r for part in await asyncio.gather(*(_client(n, s) for n, s in zip(nodes, shares, strict=True)))
               for r in part]
    cpu = node_cpu_s(nodes) - cpu_before
    heard = [ms for r in reports for ms in r["turn_latency_ms"] if ms is not None]
    spans = [(r["started_at"], r["started_at"] + r["duration_s"]) for r in reports]
    grid = [sum(1 for a, b in spans if a <= t < b) for t in range(int(duration_s))]
    return Point(
        nodes=len(nodes), rate=rate, calls=len(reports),
        ok=sum(1 for r in reports if r["ok"] or (r["hung_up_by"] == "server" and not r["error"])),
        concurrent_mean=sum(grid) / max(1, len(grid)), turns=len(heard),
        no_reply=sum(1 for r in reports for ms in r["turn_latency_ms"] if ms is None),
        heard_p50_ms=percentile(heard, 50), heard_p95_ms=percentile(heard, 95), loadavg_1m=os.getloadavg()[0],
        node_cpu_s=cpu, cpu_s_per_call=cpu / max(1, len(reports)),
    )


def capacity(points: list[Point], p95_ms: float) -> tuple[float | None, bool]:
    """(offered load in calls/s where the heard p95 reaches `p95_ms`, interpolated between the measured
    loads; reached). (None, True): above it already at the lowest load; (highest load, False): never reached."""
    pts = sorted((p.rate, p.heard_p95_ms) for p in points if p.heard_p95_ms is not None)
    if not pts or pts[0][1] > p95_ms:
        return None, True
    for (r0, l0), (r1, l1) in zip(pts, pts[1:], strict=False):
        if l1 > p95_ms:
            return r0 + (r1 - r0) * (p95_ms - l0) / (l1 - l0), True
    return pts[-1][0], False


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    from ivr.testing.fixtures import load_manifest

    pool = conversations([args.engine])
    call_time = load_manifest().call_time
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="ivr-scale-out-"))
    points: list[Point] = []
    for n, rates in ((1, args.rates1), (2, args.rates2)):
        nodes = [start_node(i, core=i, workdir=workdir, call_time=call_time) for i in range(n)]
        try:
            for node in nodes:
                wait_ready(node)
            for node in nodes:  # warm-up: one call each (prompt cache), outside the figures
                await _client(node, plan_calls(1.0, 0.5, pool[:1], random.Random(0), f"warm-{node.name}")[:1])
            for rate in rates:
                print(f"{n} node(s), offered {rate} calls/s for {args.duration:.0f} s "
                      f"(load average {os.getloadavg()[0]:.1f})...", flush=True)
                point = await run_point(nodes, rate, args.duration, pool, rng)
                print(f"  {point.calls} calls, {point.concurrent_mean:.1f} concurrent, heard p95 "
                      f"{point.heard_p95_ms or 0:.0f} ms, {point.no_reply} without reply", flush=True)
                points.append(point)
        finally:
            stop_nodes(nodes)
    return {"points": points}


def conditions() -> dict[str, Any]:
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "uptime": uptime,
            "cpus": os.cpu_count(), "python": sys.version.split()[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates1", default="0.05,0.1,0.2", help="offered loads for 1 node, calls/s")
    parser.add_argument("--rates2", default="0.1,0.2,0.4", help="offered loads for 2 nodes, calls/s")
    parser.add_argument("--duration", type=float, default=45.0, help="seconds of arrivals per load (default 45)")
    parser.add_argument("--engine", choices=sorted(ENGINE_LANG), default="whisper")
    parser.add_argument("--p95-ms", type=float, default=2500.0, help="the heard-latency p95 capacity is read at")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    args.rates1 = [float(r) for r in args.rates1.split(",")]
    args.rates2 = [float(r) for r in args.rates2.split(",")]
    before = conditions()
    result = asyncio.run(bench(args))
    after = conditions()
    points: list[Point] = result["points"]
    print(f"\n{args.engine}, each node pinned to one core (taskset); before: {before['uptime']}; "
          f"after: {after['uptime']}")
    print("| nodes | offered calls/s | calls | concurrent (mean) | turns | no reply | heard p50 ms | heard p95 ms "
          "| node CPU s/call | load |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for p in points:
        print(f"| {p.nodes} | {p.rate} | {p.calls} | {p.concurrent_mean:.1f} | {p.turns} | {p.no_reply} | "
              f"{p.heard_p50_ms or 0:.0f} | {p.heard_p95_ms or 0:.0f} | {p.cpu_s_per_call:.2f} | {p.loadavg_1m:.1f} |")
    for n in (1, 2):
        mine = [p for p in points if p.nodes == n]
        if mine:
            per_call = sum(p.node_cpu_s for p in mine) / max(1, sum(p.calls for p in mine))
            print(f"{n} node(s): {per_call:.2f} CPU s per call over {sum(p.calls for p in mine)} calls "
                  f"-> at most {n / per_call:.2f} calls/s on {n} core(s) at 100 % busy")
    caps = {n: capacity([p for p in points if p.nodes == n], args.p95_ms) for n in (1, 2)}
    for n, (cap, reached) in caps.items():
        shown = "none (above it at the lowest load)" if cap is None else \
            f"{cap:.3f} calls/s" if reached else f">= {cap:.3f} calls/s (not reached at the highest load)"
        print(f"capacity of {n} node(s) at heard p95 <= {args.p95_ms:.0f} ms: {shown}")
    (one, one_reached), (two, _two_reached) = caps[1], caps[2]
    if one and two:
        bound = "" if one_reached else " (1 node's capacity not reached: a lower bound on neither)"
        print(f"ratio 2 nodes / 1 node: {two / one:.2f} (goal >= 1.8){bound}")
    for p1 in (p for p in points if p.nodes == 1):
        p2 = next((p for p in points if p.nodes == 2 and abs(p.rate - 2 * p1.rate) < 1e-9), None)
        if p2 is not None and p1.heard_p95_ms and p2.heard_p95_ms:
            print(f"  1 node at {p1.rate} calls/s: p95 {p1.heard_p95_ms:.0f} ms; 2 nodes at {p2.rate}: "
                  f"p95 {p2.heard_p95_ms:.0f} ms")
    if args.json:
        args.json.write_text(json.dumps({"before": before, "after": after, "engine": args.engine,
                                         "duration_s": args.duration, "p95_ms": args.p95_ms,
                                         "capacity": caps, "points": [asdict(p) for p in points]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
