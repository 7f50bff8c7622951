"""`ivr sandbox up|status|down` end to end (own named instance, beside the session's)."""

from __future__ import annotations

import argparse
import os

import pytest

from ivr.commands import sandbox as command
from ivr.testing.sandbox import STATE_DIR, Sandbox, load_info

pytestmark = pytest.mark.asterisk


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sandbox", *argv])
    code = args.func(args)
    return code, capsys.readouterr().out


def test_up_status_down(capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import _sandbox_unavailable

    if _sandbox_unavailable():
        pytest.skip(_sandbox_unavailable())
    name = f"cli{os.getpid()}"  # unique: other test sessions may run this test at the same time
    try:
        code, out = _run(capsys, "up", "--name", name, "--agi-port", "4999", "--audiosocket-port", "4998")
        assert code == 0
        assert f"sandbox {name}: Asterisk ready" in out and "agi://127.0.0.1:4999" in out
        info = load_info(name)
        assert info is not None and f"AMI: 127.0.0.1:{info.ami_port}" in out
        # the printed command runs a bridge that Asterisk can reach on both ports
        assert "IVR_AGI_PORT=4999 IVR_AUDIOSOCKET_PORT=4998 ivr serve" in out
        assert f"sip:127.0.0.1:{info.sip_port}" in out and info.sip_port > 0
        assert "Asterisk 22" in Sandbox.attach(name).cli("core show version")
        code, out = _run(capsys, "status")
        assert code == 0 and f"{name}: running pid {info.pid}" in out
        code, out = _run(capsys, "down", "--name", name)
        assert code == 0 and f"sandbox {name} stopped" in out
        assert not (STATE_DIR / f"{name}.json").exists()
        assert not Sandbox(info, "").host_path("").exists()
        code, out = _run(capsys, "down", "--name", name)
        assert code == 1 and f"no sandbox named '{name}'" in out
    finally:
        leftover = load_info(name)
        if leftover is not None:
            Sandbox(leftover, "").stop()
