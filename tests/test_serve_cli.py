"""`ivr serve` as ops run it: listeners up, /healthz and /metrics answer, SIGTERM stops it cleanly."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_starts_reports_health_and_stops_on_sigterm(tmp_path: Path) -> None:
    health = _free_port()
    env = {**os.environ, "IVR_DATA_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ivr.cli", "-v", "serve", "--agi-port", "0", "--audiosocket-port", "0",
         "--health-port", str(health)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        line = proc.stdout.readline()  # printed once both listeners are up
        match = re.search(r"agi://127\.0\.0\.1:(\d+)/<flow>\?lang=xx, AudioSocket 127\.0\.0\.1:(\d+)", line)
        assert match, line
        agi_port = int(match[1])
        with socket.create_connection(("127.0.0.1", agi_port), timeout=5):
            pass  # FastAGI accepts
        with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=5) as reply:
            health_reply = json.loads(reply.read())
            node = f"{socket.gethostname()}:127.0.0.1:{agi_port}"  # the default name: host and listener
            assert health_reply | {"uptime_s": 0} == {"status": "ok", "node": node, "calls_active": 0, "uptime_s": 0}
        with urllib.request.urlopen(f"http://127.0.0.1:{health}/metrics", timeout=5) as reply:
            assert f'ivr_calls_active{{node="{node}"}} 0.0'.encode() in reply.read()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert "ivr serve: stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_healthz_says_draining_while_a_call_in_progress_finishes(tmp_path: Path) -> None:
    """SIGTERM with a call on the line: /healthz answers 503 "draining" until that call ends, then the
    process exits 0 (a load balancer stops sending calls, the caller is not cut off)."""
    health = _free_port()
    env = {**os.environ, "IVR_DATA_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ivr.cli", "serve", "--agi-port", "0", "--audiosocket-port", "0",
         "--health-port", str(health)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        match = re.search(r"agi://127\.0\.0\.1:(\d+)/", proc.stdout.readline())
        assert match
        agi = socket.create_connection(("127.0.0.1", int(match[1])), timeout=10)
        agi.sendall(b"agi_network: yes\nagi_network_script: support?lang=en\nagi_channel: Local/s-0001\n"
                    b"agi_uniqueid: 1700000000.1\nagi_callerid: 15550100\n\n")
        reader = agi.makefile("rb")
        assert reader.readline().startswith(b"ANSWER")  # the call is in progress
        proc.send_signal(signal.SIGTERM)
        status = None
        for _ in range(50):  # the signal is handled asynchronously
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=2)
            except urllib.error.HTTPError as exc:
                status = (exc.code, json.loads(exc.read())["status"])
                break
            threading.Event().wait(0.1)
        assert status == (503, "draining")
        assert proc.poll() is None  # still serving the call
        agi.close()  # the caller hangs up: the drain ends
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
