"""AMI (Asterisk Manager Interface) on the `asterisk-ami` package, wrapped for asyncio.

`asterisk-ami` is synchronous and runs a listener thread; every blocking call here goes through
`asyncio.to_thread`, and events are handed to the event loop with `call_soon_threadsafe`.

Used for: events into the call record (Hangup, QueueCallerJoin/Leave/Abandon, AgentConnect...),
QueueStatus (the expected wait announced to callers), and Originate (test calls).
The login secret comes from settings/env (`AmiSettings.resolved_secret`) and is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from asterisk.ami import AMIClient, SimpleAction

from ivr.config import AmiSettings
from ivr.errors import IvrError

log = logging.getLogger(__name__)

# events forwarded to `on_event` by default: what a call record and the queue view need
DEFAULT_EVENTS = frozenset({
    "Hangup", "QueueCallerJoin", "QueueCallerLeave", "QueueCallerAbandon",
    "AgentCalled", "AgentConnect", "AgentComplete", "OriginateResponse", "UserEvent",
})
DEFAULT_ACTION_TIMEOUT_S = 5.0
# A login gets longer than other actions, and a second try on a fresh connection: a CI run once saw
# Asterisk accept the TCP connection yet leave the login unanswered for 5 s (not reproduced since),
# and a tester's `ivr call` should not fail on one slow moment of a busy box.
DEFAULT_LOGIN_TIMEOUT_S = 10.0
LOGIN_ATTEMPTS = 2
# A manager that stops reading (hung, or SIGSTOPped) fills the socket's send buffer; with no timeout on the
# socket (the idle reader needs none) a send would then block forever. The kernel's send timeout
# (SO_SNDTIMEO) bounds sends alone: after this long the action fails with AmiError.
SEND_TIMEOUT_S = 5.0
# asterisk/manager.conf ships this secret so that the file is complete; a manager that accepts it
# lets anyone on the host log in as the bridge's user
PLACEHOLDER_SECRET = "change-me"


class AmiError(IvrError):
    """AMI is unreachable, refused the login, or an action failed."""


@dataclass(frozen=True)
class AmiEvent:
    """One AMI event: `name` (``Hangup``), its fields, and channel variables (manager.conf channelvars)."""

    name: str
    fields: dict[str, str]
    variables: dict[str, str] = field(default_factory=dict)
    # DestChanVariable: the other channel of a two-channel event (e.g. the agent's in AgentConnect)
    dest_variables: dict[str, str] = field(default_factory=dict)

    def get(self, key: str, default: str = "") -> str:
        return self.fields.get(key, default)


EventCallback = Callable[[AmiEvent], Awaitable[None] | None]


@dataclass(frozen=True)
class QueueStatus:
    """A queue as QueueStatus reports it."""

    queue: str
    calls: int = 0
    holdtime_s: float = 0.0  # Asterisk's rolling average hold time
    talktime_s: float = 0.0
    members: int = 0  # logged-in members
    available: int = 0  # logged in, not paused, not busy
    waits_s: tuple[float, ...] = ()  # how long each waiting caller has waited

    def expected_wait_s(self) -> float:
        """Rough wait for a caller joining now: 0 if an agent is free, else the average hold time
        scaled by the callers ahead per logged-in agent (with no agent logged in: the hold time
        times the callers ahead, since someone must log in first)."""
        if self.available > self.calls:
            return 0.0
        return self.holdtime_s * (self.calls + 1) / max(self.members, 1)


_C_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}


def unescape_variable(value: str) -> str:
    """Undo the C-style escaping Asterisk applies to ChanVariable values (\\" -> ", \\\\ -> \\)."""
    if "\\" not in value:
        return value
    out, chars = [], iter(value)
    for char in chars:
        if char == "\\":
            nxt = next(chars, "")
            out.append(_C_ESCAPES.get(nxt, nxt))
        else:
            out.append(char)
    return "".join(out)


def _to_event(raw: Any) -> AmiEvent:
    fields: dict[str, str] = {}
    variables: dict[str, str] = {}
    dest_variables: dict[str, str] = {}
    for key, value in raw.keys.items():
        if isinstance(value, dict):  # ChanVariable and friends, parsed into {name: value} by the library
            target = dest_variables if key.startswith("Dest") else variables
            target.update({name: unescape_variable(val) for name, val in value.items()})
        else:
            fields[key] = value
    return AmiEvent(raw.name, fields, variables, dest_variables)


class _Client(AMIClient):
    """The library's client with these fixes: no read timeout on the listener socket (an idle AMI
    would otherwise kill the listener thread after `timeout` s), set *before* the listener starts
    (the library starts it first, so its first read could still carry the timeout), and a send
    timeout instead (SEND_TIMEOUT_S); whole writes (sendall); the listener's fate is kept
    (`reader_error`) for the error message; and a close that wakes it."""

    reader_error: BaseException | None = None

    def connect(self) -> None:
        self._socket = socket.create_connection((self._address, self._port), timeout=self._timeout)
        self._socket.settimeout(None)
        whole = int(SEND_TIMEOUT_S)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                                struct.pack("ll", whole, int((SEND_TIMEOUT_S - whole) * 1_000_000)))
        self.finished = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="ami-reader", daemon=True)
        self._thread.start()

    def send(self, pack: Any) -> None:
        # the library's send() writes once and ignores a partial write (a long action cut short)
        self._socket.sendall(bytearray(str(pack) + "\r\n", self.encoding))

    def _listen(self) -> None:
        try:
            self.listen()
        except Exception as exc:  # before the greeting the library raises outside its own handler
            self._note_end(exc)
            self.finished.set()

    def _fire_on_disconnect(self, **kwargs: Any) -> None:
        self._note_end(kwargs.get("error"))
        super()._fire_on_disconnect(**kwargs)

    def _note_end(self, error: BaseException | None) -> None:
        if self.reader_error is None and error is not None:
            # the library's reader meets a closed socket as the end of its packet generator
            self.reader_error = ConnectionError("closed by Asterisk") if isinstance(error, StopIteration) else error

    @property
    def banner_seen(self) -> bool:
        return self._ami_version is not None

    def disconnect(self) -> None:
        if self.finished is not None:
            self.finished.set()
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                self._socket.close()
        if self._thread is not None:
            self._thread.join(1.0)


class AmiClient:
    """An asyncio AMI session: `await connect()`, actions, events to `on_event`, `await close()`."""

    def __init__(
        self,
        settings: AmiSettings,
        on_event: EventCallback | None = None,
        *,
        events: frozenset[str] | None = DEFAULT_EVENTS,
        action_timeout_s: float = DEFAULT_ACTION_TIMEOUT_S,
        login_timeout_s: float = DEFAULT_LOGIN_TIMEOUT_S,
    ) -> None:
        self.settings = settings
        self.on_event = on_event
        self.events = events  # None: forward every event
        self.action_timeout_s = action_timeout_s
        self.login_timeout_s = login_timeout_s
        self._client: _Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: list[tuple[Callable[[AmiEvent], bool], asyncio.Future[AmiEvent]]] = []
        self._collectors: dict[str, list[AmiEvent]] = {}
        self.connected = False

    @property
    def where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    async def connect(self) -> None:
        """Connect and log in; AmiError (with the fix) if unreachable, refused or unanswered."""
        secret = self.settings.resolved_secret()
        self._loop = asyncio.get_running_loop()
        for attempt in range(1, LOGIN_ATTEMPTS + 1):
            client, response, waited = await self._login_once(secret)
            if response is not None and not response.is_error():
                break
            # read what the reader saw before our own disconnect ends it
            silence = self._unanswered(client, waited) if response is None else ""
            await asyncio.to_thread(client.disconnect)
            if response is not None:  # Asterisk said no: trying again would not change its mind
                raise AmiError(
                    f"AMI at {self.where} refused the login of user {self.settings.username!r}: "
                    f"{response.keys.get('Message', 'no reason given')}",
                    fix="check the user in manager.conf and IVR_AMI_SECRET / ami.secret_file (same secret)",
                )
            if attempt < LOGIN_ATTEMPTS:
                log.warning("%s; trying once more on a new connection", silence)
                continue
            raise AmiError(
                f"{silence} ({LOGIN_ATTEMPTS} tries)",
                fix="check that Asterisk is responsive (`asterisk -rx 'manager show connected'`) "
                    "and that ami.port is its manager port, not another service",
            )
        client._timeout = self.action_timeout_s  # the library waits this long for every later response
        self._client = client
        self.connected = True
        log.info("AMI: logged in to %s as %s", self.where, self.settings.username)
        if secret == PLACEHOLDER_SECRET:
            log.warning("AMI at %s accepted the shipped placeholder secret for user %r: set a secret of "
                        "your own in manager.conf and in IVR_AMI_SECRET / ami.secret_file",
                        self.where, self.settings.username)

    async def _login_once(self, secret: str) -> tuple[_Client, Any, float]:
        """One connection and Login action: (client, the response or None if none came, seconds waited)."""
        client = _Client(address=self.settings.host, port=self.settings.port, timeout=self.login_timeout_s)
        client.add_event_listener(self._on_library_event)
        client.add_listener(on_disconnect=self._on_library_disconnect)
        started = time.monotonic()
        try:
            future = await asyncio.to_thread(client.login, self.settings.username, secret)
            response = await asyncio.to_thread(lambda: future.response)
        except OSError as exc:
            raise AmiError(
                f"AMI at {self.where} is unreachable ({exc.strerror or exc})",
                fix="check that Asterisk runs and manager.conf [general] enabled/port/bindaddr match ami.host/port",
            ) from None
        return client, response, time.monotonic() - started

    def _unanswered(self, client: _Client, waited: float) -> str:
        """What we know about a login that got no answer: did Asterisk greet us, did the reader stop."""
        if not client.banner_seen:
            what = "accepted the connection but sent no Asterisk Call Manager greeting"
        else:
            what = "greeted us but did not answer the login"
        if client.reader_error is not None:
            what += f"; the connection ended ({client.reader_error!r})"
        return f"AMI at {self.where} {what} within {waited:.1f} s (user {self.settings.username!r})"

    async def close(self) -> None:
        client, self._client = self._client, None
        self.connected = False
        if client is not None:
            with contextlib.suppress(Exception):  # off the loop: a manager that stopped reading blocks a send
                future = await asyncio.to_thread(client.send_action, SimpleAction("Logoff"))
                await asyncio.to_thread(lambda: future.response)
            await asyncio.to_thread(client.disconnect)

    async def run_forever(self, retry_s: float = 5.0) -> None:
        """Stay logged in until cancelled: reconnect `retry_s` after a failure or a lost connection.

        For the long-running bridge, where Asterisk may restart under it; events keep flowing to
        `on_event` after each reconnect. A refused login is retried too (ops may be fixing it).
        """
        reported = ""
        try:
            while True:
                if not self.connected:
                    if self._client is not None:
                        await self.close()
                    try:
                        await self.connect()
                        reported = ""
                    except AmiError as exc:
                        if str(exc) != reported:  # say it once, not every retry
                            log.warning("AMI: %s; retrying every %.0f s", exc, retry_s)
                            reported = str(exc)
                await asyncio.sleep(retry_s if not self.connected else min(retry_s, 1.0))
        finally:
            await self.close()

    async def __aenter__(self) -> AmiClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # events (called in the library's thread) ------------------------------------------------------

    def _on_library_event(self, event: Any, source: Any = None, **_: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._dispatch, _to_event(event))

    def _on_library_disconnect(self, source: Any = None, error: Any = None, **_: Any) -> None:
        self.connected = False
        if error is not None and self._client is not None:
            log.warning("AMI: connection to %s lost (%s)", self.where, type(error).__name__)

    def _dispatch(self, event: AmiEvent) -> None:
        action_id = event.get("ActionID")
        if action_id and action_id in self._collectors:
            self._collectors[action_id].append(event)
        for waiter in list(self._waiters):
            predicate, future = waiter
            if not future.done() and predicate(event):
                future.set_result(event)
        if self.on_event is not None and (self.events is None or event.name in self.events):
            try:
                result = self.on_event(event)
                if inspect.isawaitable(result):
                    asyncio.ensure_future(result)
            except Exception:
                log.exception("AMI: event callback failed on %s", event.name)

    async def wait_event(self, predicate: Callable[[AmiEvent], bool], timeout: float) -> AmiEvent:
        """The next event for which `predicate` is true (asyncio.TimeoutError after `timeout` s).

        Register before triggering what causes the event, e.g. with `expect_event()`.
        """
        return await asyncio.wait_for(self.expect_event(predicate), timeout)

    def expect_event(self, predicate: Callable[[AmiEvent], bool]) -> asyncio.Future[AmiEvent]:
        """A future for the next event matching `predicate`; registered at once."""
        future: asyncio.Future[AmiEvent] = asyncio.get_running_loop().create_future()
        waiter = (predicate, future)
        self._waiters.append(waiter)
        future.add_done_callback(lambda _f: self._waiters.remove(waiter))
        return future

    # actions ----------------------------------------------------------------------------------------

    async def action(self, name: str, variables: dict[str, str] | None = None, **keys: Any) -> dict[str, str]:
        """Send an action and return its response fields; AmiError if Asterisk answers Error."""
        if self._client is None:
            raise AmiError("AMI is not connected", fix="await AmiClient.connect() first")
        action = SimpleAction(name, **{k: str(v) for k, v in keys.items()})
        if variables:
            action.variables = {k: str(v) for k, v in variables.items()}
        client = self._client
        try:
            future = await asyncio.to_thread(client.send_action, action)
        except BlockingIOError as exc:  # SO_SNDTIMEO expired: the send buffer stayed full
            raise AmiError(
                f"AMI action {name} could not be sent to {self.where} within {SEND_TIMEOUT_S:g} s ({exc}): "
                "the manager stopped reading",
                fix="check that Asterisk is responsive (`asterisk -rx 'manager show connected'`)",
            ) from None
        except OSError as exc:  # reset, broken pipe: the connection is gone
            raise AmiError(f"AMI action {name} could not be sent to {self.where}: the connection was lost ({exc})",
                           fix="check that Asterisk is running (`asterisk -rx 'core show uptime'`)") from None
        response = await asyncio.to_thread(lambda: future.response)
        if response is None:
            raise AmiError(f"AMI action {name} got no response within {self.action_timeout_s:.0f} s")
        if response.is_error():
            raise AmiError(f"AMI action {name} failed: {response.keys.get('Message', '')}",
                           fix="check the action's arguments and the AMI user's write classes")
        return dict(response.keys)

    async def _collect(self, name: str, complete: str, timeout: float, **keys: Any) -> list[AmiEvent]:
        """Run a list action (events ending with `complete`) and return its events."""
        assert self._client is not None
        action_id = f"ivr-{id(keys)}-{asyncio.get_running_loop().time():.6f}"
        self._collectors[action_id] = []
        done = self.expect_event(lambda e: e.name == complete and e.get("ActionID") == action_id)
        try:
            await self.action(name, ActionID=action_id, **keys)
            await asyncio.wait_for(done, timeout)
            return self._collectors[action_id]
        finally:
            done.cancel()
            self._collectors.pop(action_id, None)

    async def queue_status(self, queue: str, timeout: float = DEFAULT_ACTION_TIMEOUT_S) -> QueueStatus:
        """The queue's calls, members and average hold time (AMI QueueStatus)."""
        events = await self._collect("QueueStatus", "QueueStatusComplete", timeout, Queue=queue)
        params = next((e for e in events if e.name == "QueueParams" and e.get("Queue") == queue), None)
        if params is None:
            raise AmiError(f"queue {queue!r} is not configured in Asterisk", fix="add it to queues.conf")
        members = [e for e in events if e.name == "QueueMember" and e.get("Queue") == queue]
        # Status 1 = AST_DEVICE_NOT_INUSE; 4/5 = invalid/unavailable (not logged in)
        logged_in = [m for m in members if m.get("Status") not in ("4", "5")]
        available = [m for m in logged_in if m.get("Status") == "1" and m.get("Paused", "0") == "0"]
        waits = tuple(float(e.get("Wait", "0") or 0) for e in events if e.name == "QueueEntry")
        return QueueStatus(
            queue=queue,
            calls=int(params.get("Calls", "0") or 0),
            holdtime_s=float(params.get("Holdtime", "0") or 0),
            talktime_s=float(params.get("TalkTime", "0") or 0),
            members=len(logged_in),
            available=len(available),
            waits_s=waits,
        )

    async def expected_wait_s(self, queue: str) -> float:
        return (await self.queue_status(queue)).expected_wait_s()

    async def originate(
        self,
        channel: str,
        context: str,
        exten: str = "s",
        priority: int = 1,
        *,
        variables: dict[str, str] | None = None,
        caller_id: str | None = None,
        channel_id: str | None = None,
        other_channel_id: str | None = None,
        timeout_ms: int = 30000,
    ) -> dict[str, str]:
        """Originate `channel` and send it to `context,exten,priority` (asynchronously: the result
        arrives as an OriginateResponse event). For a test call:
        ``originate("Local/s@ivr-test-caller/n", "ivr", variables={...})``.
        `channel_id`/`other_channel_id` fix the Uniqueid of the two halves (to follow their events).
        """
        keys: dict[str, Any] = {
            "Channel": channel, "Context": context, "Exten": exten, "Priority": priority,
            "Async": "true", "Timeout": timeout_ms,
        }
        if caller_id:
            keys["CallerID"] = caller_id
        if channel_id:
            keys["ChannelId"] = channel_id
        if other_channel_id:
            keys["OtherChannelId"] = other_channel_id
        return await self.action("Originate", variables=variables, **keys)
