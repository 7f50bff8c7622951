"""Shared fixtures for every area's tests.

`sandbox`: one real Asterisk 22 (ivr.testing.sandbox) per test session, started by the project's own
code and stopped at the end. Its dialplan dials the bridge at 127.0.0.1:`sandbox.info.agi_port`;
a test starts its own `Bridge` on that port (see tests/test_telephony_asterisk.py). Tests that
use it are marked `asterisk` automatically. Needs root and the cached rootfs (or mmdebstrap to
build it, about 30 s once); without root they are skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from ivr.testing.sandbox import ROOTFS, Sandbox, _free_port


def _sandbox_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the sandbox Asterisk needs root (chroot, mount namespace)"
    if not (ROOTFS / "usr/sbin/asterisk").exists() and shutil.which("mmdebstrap") is None:
        return "no sandbox rootfs and no mmdebstrap to build it (apt-get install mmdebstrap)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "sandbox" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.asterisk)


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """A running sandbox Asterisk for this test session (several sessions may run at once)."""
    reason = _sandbox_unavailable()
    if reason:
        pytest.skip(reason)
    instance = Sandbox.start(agi_port=_free_port())
    try:
        yield instance
    finally:
        instance.stop()


# CI (.ci/run) sets IVR_NO_SKIPS=1: there every real component is installed, so a skipped test means
# a missing Asterisk, PostgreSQL, model or sound package, and the run must fail instead of passing
# without having exercised it. On a developer's machine skips stay skips.
NO_SKIPS_ENV = "IVR_NO_SKIPS"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not os.environ.get(NO_SKIPS_ENV) or exitstatus != pytest.ExitCode.OK:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped:
        reasons = sorted({str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
                          for report in skipped})
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(f"{NO_SKIPS_ENV} is set and {len(skipped)} test(s) were skipped: "
                                + "; ".join(reasons), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
