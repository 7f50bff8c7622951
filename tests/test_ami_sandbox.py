"""The AMI client against the sandbox Asterisk, logged in as the least-privilege `ivr` user of
asterisk/manager.conf (read = call,agent; write = originate,reporting)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from ivr.config import AmiSettings
from ivr.telephony.ami import AmiClient, AmiError, AmiEvent, QueueStatus
from ivr.testing.sandbox import Sandbox, _free_port

pytestmark = pytest.mark.asterisk


def test_login_refused_names_user_and_fix_without_leaking_secret(
    sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    settings = AmiSettings.model_validate({**sandbox.ami_settings().model_dump(), "secret": "wrong-secret-123"})

    async def main() -> None:
        await AmiClient(settings).connect()

    caplog.set_level(logging.DEBUG)
    with pytest.raises(AmiError) as caught:
        asyncio.run(main())
    assert str(caught.value) == (
        f"AMI at 127.0.0.1:{sandbox.ami_port} refused the login of user 'ivr': Authentication failed "
        "(fix: check the user in manager.conf and IVR_AMI_SECRET / ami.secret_file (same secret))"
    )
    assert "wrong-secret-123" not in caplog.text and sandbox.ami_secret not in caplog.text
    assert "wrong-secret-123" not in repr(settings)  # pydantic SecretStr


def test_unreachable_ami_says_so() -> None:
    settings = AmiSettings(enabled=True, port=_free_port(), secret="x")
    with pytest.raises(AmiError, match=r"^AMI at 127\.0\.0\.1:\d+ is unreachable \(Connection refused\)"):
        asyncio.run(AmiClient(settings).connect())


def test_a_login_delayed_by_a_stalled_asterisk_succeeds_on_the_second_try(
    sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    """Asterisk frozen (SIGSTOP) for 3 s while we log in with 2 s per try: the kernel still accepts the
    connections, the first try hears nothing (not even the greeting: Asterisk's session thread sends
    it), the second is answered once Asterisk runs again."""
    caplog.set_level(logging.WARNING, logger="ivr.telephony.ami")

    async def main() -> float:
        os.kill(sandbox.info.pid, signal.SIGSTOP)
        started = time.monotonic()  # before the timer starts: the thaw cannot come earlier than 3 s from here
        thaw = threading.Timer(3.0, os.kill, (sandbox.info.pid, signal.SIGCONT))
        thaw.start()
        try:
            async with AmiClient(sandbox.ami_settings(), login_timeout_s=2.0) as ami:
                assert ami.connected
                return time.monotonic() - started
        finally:
            thaw.join()
            os.kill(sandbox.info.pid, signal.SIGCONT)

    took = asyncio.run(main())
    assert took >= 3.0, took  # answered only after the thaw (the second try: the warning below); no upper
    # bound on a busy machine, where the thawed Asterisk may take a while to answer
    assert (f"AMI at 127.0.0.1:{sandbox.ami_port} accepted the connection but sent no Asterisk Call Manager greeting "
            "within 2.") in caplog.text
    assert "trying once more on a new connection" in caplog.text


@contextmanager
def _silent_manager(greeting: bytes, *, accept_login: bool = False) -> Iterator[int]:
    """A TCP port that accepts, sends `greeting`, then never answers (what the client sees of a hung
    manager); with `accept_login` it first answers the Login action with Success, then reads nothing
    more (a manager that stopped reading). The port is yielded."""
    server = socket.create_server(("127.0.0.1", 0))
    peers: list[socket.socket] = []

    def log_in(peer: socket.socket) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += peer.recv(4096)
        action_id = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                         if line.lower().startswith(b"actionid:"))
        peer.sendall(b"Response: Success\r\nActionID: " + action_id + b"\r\nMessage: Authentication accepted\r\n\r\n")

    def serve() -> None:
        while True:
            try:
                peer, _ = server.accept()
            except OSError:
                return
            peers.append(peer)
            peer.sendall(greeting)
            if accept_login:
                log_in(peer)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()
        for peer in peers:
            peer.close()


@pytest.mark.parametrize(("greeting", "said"), [
    (b"Asterisk Call Manager/9.0.0\r\n", "greeted us but did not answer the login"),
    (b"", "accepted the connection but sent no Asterisk Call Manager greeting"),
], ids=["greets, then silent", "no greeting"])
def test_an_unanswered_login_says_what_was_seen_after_two_tries(greeting: bytes, said: str) -> None:
    with _silent_manager(greeting) as port:
        settings = AmiSettings(enabled=True, port=port, secret="x")
        started = time.monotonic()
        with pytest.raises(AmiError) as caught:
            asyncio.run(AmiClient(settings, login_timeout_s=0.5).connect())
    assert 1.0 <= time.monotonic() - started < 3.0
    assert str(caught.value).startswith(f"AMI at 127.0.0.1:{port} {said} within 0.")
    assert "(user 'ivr') (2 tries) (fix: check that Asterisk is responsive" in str(caught.value)


def test_an_action_to_a_manager_that_stopped_reading_fails_instead_of_hanging(monkeypatch: pytest.MonkeyPatch) -> None:
    """A manager that logs us in, then never reads again: once the socket buffers are full a send used to
    block forever (no socket timeout, for the idle reader); now the action fails after SEND_TIMEOUT_S, and
    closing the client does not hang either."""
    from ivr.telephony import ami as ami_module

    monkeypatch.setattr(ami_module, "SEND_TIMEOUT_S", 0.5)

    async def main(port: int) -> float:
        client = AmiClient(AmiSettings(enabled=True, port=port, secret="x"), login_timeout_s=2.0)
        await client.connect()
        started = time.monotonic()
        with pytest.raises(AmiError, match="could not be sent .* the manager stopped reading"):
            await client.action("UserEvent", UserEvent="big", Body="x" * 64_000_000)  # more than the buffers hold
        took = time.monotonic() - started
        await asyncio.wait_for(client.close(), 10)
        return took

    with _silent_manager(b"Asterisk Call Manager/9.0.0\r\n", accept_login=True) as port:
        took = asyncio.run(main(port))
    assert took < 10, took  # not forever (0.5 s per blocked write once the buffers are full)


def test_a_manager_that_accepts_the_shipped_placeholder_secret_is_warned_about(
    sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="ivr.telephony.ami")
    weak = Sandbox.start(agi_port=_free_port(), ami_secret="change-me")  # as asterisk/manager.conf ships it
    try:
        async def main() -> None:
            async with AmiClient(weak.ami_settings()) as ami:
                assert ami.connected
            async with AmiClient(sandbox.ami_settings()) as ami:  # a secret of its own: no warning
                assert ami.connected

        asyncio.run(main())
    finally:
        weak.stop()
    warnings = [r.getMessage() for r in caplog.records if "placeholder secret" in r.getMessage()]
    assert warnings == [f"AMI at 127.0.0.1:{weak.ami_port} accepted the shipped placeholder secret for user "
                        "'ivr': set a secret of your own in manager.conf and in IVR_AMI_SECRET / ami.secret_file"]


def test_queue_status_and_unknown_queue(sandbox: Sandbox) -> None:
    async def main() -> QueueStatus:
        async with AmiClient(sandbox.ami_settings()) as ami:
            with pytest.raises(AmiError, match="queue 'nope' is not configured"):
                await ami.queue_status("nope")
            return await ami.queue_status("support")

    status = asyncio.run(main())
    assert status.queue == "support" and status.members == 0
    assert status.expected_wait_s() == 0.0 if status.available > status.calls else status.expected_wait_s() >= 0


def test_expected_wait_estimate() -> None:
    assert QueueStatus("q", calls=0, holdtime_s=60, members=2, available=1).expected_wait_s() == 0.0
    assert QueueStatus("q", calls=3, holdtime_s=60, members=2, available=0).expected_wait_s() == 120.0
    assert QueueStatus("q", calls=1, holdtime_s=30, members=0, available=0).expected_wait_s() == 60.0


def test_events_reach_the_callback_for_call_records(sandbox: Sandbox) -> None:
    """Originate a test call (no bridge on this port: fail-open to the queue) and collect the
    events a call record needs, through the callback, in order."""
    events: list[AmiEvent] = []

    async def main() -> str:
        async with AmiClient(sandbox.ami_settings(), events.append) as ami:
            call = await sandbox.originate_test_call(
                ami, [], wait_s=2.5, delay_s=0.2, variables={"IVR_AGI": f"agi://127.0.0.1:{_free_port()}"})
            await call.wait_ended(20)
            await asyncio.sleep(0.3)
            return call.ivr_uniqueid

    ivr_side = asyncio.run(main())
    mine = [e.name for e in events if e.get("Uniqueid") == ivr_side]
    assert "QueueCallerJoin" in mine and "Hangup" in mine
    assert mine.index("QueueCallerJoin") < mine.index("Hangup")
    assert all(e.name in {"Hangup", "QueueCallerJoin", "QueueCallerLeave", "QueueCallerAbandon",
                          "OriginateResponse"} for e in events if e.get("Uniqueid") == ivr_side)


def test_run_forever_reconnects_when_asterisk_comes_and_goes() -> None:
    """The bridge's AMI session survives Asterisk starting late and going away (own instance)."""
    from conftest import _sandbox_unavailable

    if _sandbox_unavailable():
        pytest.skip(_sandbox_unavailable())
    port = _free_port()

    async def main() -> list[bool]:
        states = []
        instance = None
        try:
            # the sandbox makes its secret at start; until then the client retries with a placeholder
            settings = AmiSettings(enabled=True, port=port, secret="placeholder")
            client = AmiClient(settings)
            task = asyncio.create_task(client.run_forever(retry_s=0.2))
            await asyncio.sleep(0.5)
            states.append(client.connected)  # nothing listens yet
            instance = await asyncio.to_thread(Sandbox.start, ami_port=port, agi_port=_free_port())
            client.settings = instance.ami_settings()
            for _ in range(50):
                if client.connected:
                    break
                await asyncio.sleep(0.1)
            states.append(client.connected)
            await asyncio.to_thread(instance.stop)
            instance = None
            for _ in range(50):
                if not client.connected:
                    break
                await asyncio.sleep(0.1)
            states.append(client.connected)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            if instance is not None:
                instance.stop()
        return states

    assert asyncio.run(main()) == [False, True, False]
