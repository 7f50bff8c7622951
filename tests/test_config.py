"""Settings from the environment, and the time a call is placed at (`call_time`, the manifest's, `--now`).

Business hours decide routes, so replay verdicts and end-to-end tests pin the time instead of
depending on the hour they run at.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import pytest

from ivr.config import PROJECT_ROOT, Settings, load_settings
from ivr.errors import ConfigError
from ivr.testing.fixtures import load_manifest


def test_call_time_from_the_environment_reaches_every_call() -> None:
    settings = load_settings(env={"IVR_CALL_TIME": "2026-11-23T21:30:00"})
    assert settings.call_time == datetime(2026, 11, 23, 21, 30)
    assert settings.call_start_iso() == "2026-11-23T21:30:00"
    assert settings.call_start_iso(datetime(2026, 11, 24, 9, 0)) == "2026-11-24T09:00:00"  # --now wins


def test_without_call_time_the_clock_is_used() -> None:
    now = datetime.fromisoformat(Settings().call_start_iso())
    assert now.tzinfo is not None  # local time with its offset, so a flow's timezone can convert it
    assert abs((now - datetime.now().astimezone()).total_seconds()) < 5


def test_a_bad_call_time_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="call_time: Input should be a valid datetime"):
        load_settings(env={"IVR_CALL_TIME": "monday morning"})


def test_manifest_call_time_is_inherited_unless_a_call_sets_its_own(tmp_path: Path) -> None:
    (tmp_path / "a.wav").write_bytes(b"")
    (tmp_path / "manifest.yaml").write_text(textwrap.dedent("""\
        call_time: "2026-11-23T10:00:00"
        fixtures:
          - {file: a.wav, lang: en, transcript: hello, intent: none, source: test}
        calls:
          - {name: day, lang: en, turns: [{dtmf: "0"}], route: support}
          - {name: night, lang: en, call_time: "2026-11-23T22:00:00", turns: [{dtmf: "0"}], route: support-afterhours}
        """))
    manifest = load_manifest(tmp_path)
    assert manifest.fixtures[0].call_time == datetime(2026, 11, 23, 10, 0)
    assert [c.call_time for c in manifest.calls] == [datetime(2026, 11, 23, 10, 0), datetime(2026, 11, 23, 22, 0)]


def test_the_shipped_manifest_places_its_calls_inside_business_hours() -> None:
    from ivr.dialog.registry import FlowRegistry

    manifest = load_manifest()
    registry = FlowRegistry(Settings())
    for call in manifest.calls:
        assert call.call_time is not None, call.name
        assert registry.get(call.flow, call.lang).flow.is_open(call.call_time), call.name


def test_now_flag_rejects_a_malformed_time() -> None:
    done = subprocess.run([sys.executable, "-m", "ivr.cli", "replay", "--now", "tomorrow"],
                          capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60)
    assert done.returncode == 2
    assert "'tomorrow' is not an ISO 8601 time; write e.g. 2026-11-23T10:00" in done.stderr


def test_ami_can_be_enabled_from_the_environment() -> None:
    """`ivr sandbox up` prints IVR_AMI_ENABLED=1 ... ivr serve: that must switch AMI on."""
    assert load_settings(env={"IVR_AMI_ENABLED": "1"}).ami.enabled is True
    assert load_settings(env={"IVR_AMI_ENABLED": "false"}).ami.enabled is False


def test_a_host_name_in_allowed_peers_is_a_config_error_naming_it(tmp_path: Path) -> None:
    """Peers are matched by address: a name there used to refuse every call without a word at start."""
    config = tmp_path / "ivr.yaml"
    config.write_text("server:\n  allowed_peers: [10.1.0.0/16, pbx.local]\n")
    with pytest.raises(ConfigError, match=r"server\.allowed_peers: .*'pbx\.local' is not an IP address or network"):
        load_settings(config, env={})
    config.write_text("server:\n  allowed_peers: [10.1.0.0/16, '::1']\n")
    assert load_settings(config, env={}).server.allowed_peers == ["10.1.0.0/16", "::1"]


def test_a_vosk_chunk_that_splits_an_output_frame_is_refused_when_the_settings_are_read() -> None:
    """Not at the first call's engine build: the error names the setting and a value that works."""
    with pytest.raises(ConfigError, match=r"asr\.vosk_frames_per_chunk: .*50 is not a multiple of 3.*use e\.g\. 51"):
        load_settings(env={"IVR_VOSK_FRAMES_PER_CHUNK": "50"})
    assert load_settings(env={"IVR_VOSK_FRAMES_PER_CHUNK": "0"}).asr.vosk_frames_per_chunk == 0  # the model's own
    assert load_settings(env={}).asr.vosk_frames_per_chunk == 51
