"""The bridge: one FastAGI session + one AudioSocket connection per call, and the hand-off.

For each AGI request (the dialplan's `AGI(agi://host:4573/<flow>?lang=xx)`):
  1. ANSWER, then `EXEC AudioSocket <uuid>,<host>:<port>` and wait for Asterisk to connect with
     that UUID (`server.audiosocket_connect_timeout_s`);
  2. run `handler(TelephonyCall)` (the conversation) for at most `server.max_call_s`;
  3. end the AudioSocket (Asterisk's AudioSocket() returns), set IVR_ROUTE / IVR_INTENT /
     IVR_SUMMARY / IVR_REASON (+ IVR_QUEUE and any extra IVR_* variables) and end the AGI session,
     so the dialplan continues (asterisk/extensions.conf: Queue() or the DTMF menu).

Several nodes (asterisk/extensions.conf, docs/scaling.md): the first thing a node does with a call it
takes is SET VARIABLE IVR_NODE <its name>. A node that is draining or full answers without setting it
(or refuses the connection: the listener closes when draining starts), and the dialplan tries the next
node at once; a call whose IVR_NODE is set belongs to that node, whatever happens to it.

Fail-open: whatever goes wrong on our side (no AudioSocket connection, handler exception or
timeout, overload, shutdown) the call goes back to the dialplan with IVR_ROUTE=dtmf_menu and
IVR_REASON saying why; never silence, never a hang-up. If the bridge is down altogether, the
dialplan sees AGISTATUS=FAILURE and does the same on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ivr.config import Settings
from ivr.errors import listen_error
from ivr.telephony.agi import (
    AgiError,
    AgiHangup,
    AgiServer,
    AgiServerParams,
    AgiSession,
    flatten,
    safe_variable_name,
    truncate_escaped,
)
from ivr.telephony.audiosocket import AudioSocketParams, AudioSocketServer, AudioSocketSession

log = logging.getLogger(__name__)

ROUTE_QUEUE = "queue"
ROUTE_DTMF_MENU = "dtmf_menu"
ROUTE_END = "end"
# longest value we set, escaped: AGI lines are read into a 2048-byte buffer, leave room for the command
MAX_VALUE_BYTES = 1500
# The dialplan's TIMEOUT(absolute) guard for a call we run: past our own timers (max_call_s, the
# AudioSocket EXEC's max_call_s + 60), so it only fires if this process is frozen mid-call.
DIALPLAN_GUARD_SLACK_S = 90.0
EXEC_RETURN_TIMEOUT_S = 5.0  # after we hang up the AudioSocket, Asterisk's EXEC returns at once


@dataclass
class HandOff:
    """Where the call goes when the assistant is done, and what it learned.

    `route`: "queue" (live line), "dtmf_menu" (push buttons) or "end" (served, hang up).
    `variables`: extra channel variables; names without the IVR_ prefix get it.
    """

    route: str = ROUTE_QUEUE
    intent: str = ""
    summary: str = ""
    reason: str = "handoff"
    queue: str = ""
    variables: dict[str, str] = field(default_factory=dict)

    def redacted(self) -> HandOff:
        """This hand-off with card, phone and account numbers masked in the summary and the slot
        values (`server.redact_handoff`: for sites where agents must not see raw numbers)."""
        from ivr.redact import redact

        variables = {name: redact(str(value)) if name.removeprefix("IVR_").startswith("SLOT_") else value
                     for name, value in self.variables.items()}
        return replace(self, summary=redact(self.summary), variables=variables)

    def channel_variables(self) -> dict[str, str]:
        """Everything to SET on the channel, in the order to send it, as safe single-line values.

        IVR_ROUTE, IVR_REASON and IVR_QUEUE come first: if anything later fails, the dialplan still
        knows where the call goes and why. Extra names are made safe (``account-id`` ->
        ``IVR_ACCOUNT_ID``) and cannot replace those; each value is bounded after escaping."""
        core = {"IVR_ROUTE": self.route, "IVR_REASON": self.reason}
        if self.queue:
            core["IVR_QUEUE"] = self.queue
        core.update({"IVR_INTENT": self.intent, "IVR_SUMMARY": self.summary})
        out = dict(core)
        for key, value in self.variables.items():
            safe = safe_variable_name(key.removeprefix("IVR_"))
            name = f"IVR_{safe}"
            if not safe or name in core:
                log.warning("hand-off: variable %r skipped (%s)", key,
                            "no usable name" if not safe else f"would replace {name}")
                continue
            try:
                out[name] = str(value)
            except Exception as exc:  # a hostile hook value: its __str__ must not stop the hand-off
                log.warning("hand-off: variable %s skipped: its value cannot be turned into text (%s)", name, exc)
        return {name: truncate_escaped(flatten(value), MAX_VALUE_BYTES) for name, value in out.items()}


@dataclass
class TelephonyCall:
    """One call as the conversation handler sees it."""

    flow: str  # the FastAGI script path: agi://host:4573/<flow>
    query: dict[str, str]  # its parameters, e.g. {"lang": "en"}
    lang: str
    caller_id: str
    caller_name: str
    channel: str
    uniqueid: str
    call_uuid: uuid.UUID
    agi: AgiSession
    audio: AudioSocketSession


CallHandler = Callable[[TelephonyCall], Awaitable[HandOff | None]]


@dataclass
class BridgeParams:
    host: str = "127.0.0.1"
    agi_port: int = 4573
    audiosocket_port: int = 9092
    audiosocket_advertise: str = ""  # host[:port] Asterisk dials; default host:audiosocket_port
    allowed_peers: list[str] = field(default_factory=lambda: ["127.0.0.1", "::1"])
    first_message_timeout_s: float = 5.0
    audiosocket_connect_timeout_s: float = 5.0
    max_calls: int = 100
    max_call_s: float = 1800.0
    # the dialplan's guard on a call we run is max_call_s + this (see DIALPLAN_GUARD_SLACK_S)
    dialplan_guard_slack_s: float = DIALPLAN_GUARD_SLACK_S
    drain_timeout_s: float = 30.0  # graceful shutdown: how long calls in progress may finish
    fail_open_route: str = ROUTE_DTMF_MENU
    default_lang: str = "en"
    audio: AudioSocketParams = field(default_factory=AudioSocketParams)
    node: str = ""  # this node's name in IVR_NODE, metrics and records; empty: hostname:host:agi_port

    @classmethod
    def from_settings(cls, settings: Settings) -> BridgeParams:
        server = settings.server
        return cls(
            host=server.host, agi_port=server.agi_port, audiosocket_port=server.audiosocket_port,
            audiosocket_advertise=server.audiosocket_advertise, allowed_peers=list(server.allowed_peers),
            first_message_timeout_s=server.first_message_timeout_s,
            audiosocket_connect_timeout_s=server.audiosocket_connect_timeout_s,
            max_calls=server.max_calls, max_call_s=server.max_call_s, default_lang=settings.default_lang,
            node=server.node, drain_timeout_s=server.drain_timeout_s,
        )


class Bridge:
    """The FastAGI and AudioSocket servers plus the per-call logic. `await start()`, `await stop()`."""

    def __init__(self, params: BridgeParams, handler: CallHandler) -> None:
        self.params = params
        self.handler = handler
        self.audiosocket = AudioSocketServer(
            params.host, params.audiosocket_port, allowed_peers=params.allowed_peers,
            first_message_timeout_s=params.first_message_timeout_s, params=params.audio,
        )
        self.agi = AgiServer(
            AgiServerParams(params.host, params.agi_port, params.allowed_peers, params.first_message_timeout_s),
            default=self.handle_call,
        )
        self._handler_tasks: set[asyncio.Future[HandOff | None]] = set()
        self.calls_active = 0
        self.calls_total = 0
        self.draining = False  # set by stop(): calls still arriving are passed to the next node
        self.outcomes: list[tuple[str, HandOff]] = []  # (uniqueid, what we set) for the last calls

    async def start(self) -> None:
        """Listen on both ports; a port that cannot be taken is a ConfigError naming its setting."""
        try:
            await self.audiosocket.start()
        except OSError as exc:
            raise listen_error(exc, "AudioSocket", self.params.host, self.params.audiosocket_port,
                               "server.audiosocket_port (--audiosocket-port)") from None
        try:
            await self.agi.start()
        except OSError as exc:
            await self.audiosocket.stop()
            raise listen_error(exc, "FastAGI", self.params.host, self.params.agi_port,
                               "server.agi_port (--agi-port)") from None
        log.info("bridge: FastAGI on %s:%d, AudioSocket on %s:%d", self.params.host, self.agi.port,
                 self.params.host, self.audiosocket.port)

    @property
    def agi_port(self) -> int:
        return self.agi.port

    @property
    def audiosocket_port(self) -> int:
        return self.audiosocket.port

    @property
    def node(self) -> str:
        return self.params.node or f"{socket.gethostname()}:{self.params.host}:{self.agi.port}"

    @property
    def advertise(self) -> str:
        adv = self.params.audiosocket_advertise
        if not adv:
            host = self.params.host if self.params.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
            return f"{host}:{self.audiosocket.port}"
        return adv if ":" in adv else f"{adv}:{self.audiosocket.port}"

    async def stop(self, drain_timeout_s: float | None = None) -> None:
        """Stop accepting calls; let calls in progress finish for up to `drain_timeout_s`, then
        cut their conversations short (they still go back to the dialplan, fail-open)."""
        timeout = self.params.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
        self.draining = True
        await self.agi.stop_accepting()
        calls = set(self.agi.active)
        if calls:
            log.info("bridge: waiting up to %.0f s for %d call(s) in progress", timeout, len(calls))
            _done, pending = await asyncio.wait(calls, timeout=timeout)
            if pending:
                for task in list(self._handler_tasks):
                    task.cancel()
                await asyncio.wait(pending, timeout=EXEC_RETURN_TIMEOUT_S + 2)
        await self.audiosocket.stop()

    # per call ------------------------------------------------------------------------------------

    async def handle_call(self, agi: AgiSession) -> None:
        """The AGI handler for every flow."""
        request = agi.request
        self.calls_total += 1
        refusal = "draining" if self.draining else "overload" if self.calls_active >= self.params.max_calls else ""
        if refusal:
            # IVR_NODE stays unset: the dialplan tries the next node, or (none left) opens the menu
            log.warning("bridge: %s (%d calls in progress): %s is passed on", refusal, self.calls_active,
                        request.channel)
            await self._finish(agi, HandOff(route=self.params.fail_open_route, reason=refusal))
            return
        self.calls_active += 1
        try:
            outcome = await self._converse(agi)
            if outcome is not None and not agi.hung_up:
                await self._finish(agi, outcome)
        finally:
            self.calls_active -= 1

    async def _converse(self, agi: AgiSession) -> HandOff | None:
        """Run the conversation; return what to hand off (None: the caller hung up)."""
        request = agi.request
        call_uuid = uuid.uuid4()
        expected = self.audiosocket.expect(call_uuid)
        exec_task: asyncio.Task[int] | None = None
        audio: AudioSocketSession | None = None
        fail = HandOff(route=self.params.fail_open_route, reason="error")
        try:
            await agi.answer()
            # the call is ours from here: the dialplan no longer passes it to another node
            await agi.set_variable("IVR_NODE", self.node)
            # The dialplan gave us IVR_START_GUARD_S to start (a frozen bridge loses the call to the
            # menu); now that we are running it, the guard becomes the call's whole length.
            guard_s = math.ceil(self.params.max_call_s + self.params.dialplan_guard_slack_s)
            await agi.set_variable("TIMEOUT(absolute)", str(guard_s))
            exec_task = asyncio.create_task(
                agi.exec("AudioSocket", f"{call_uuid},{self.advertise}", timeout=self.params.max_call_s + 60))
            first: set[asyncio.Future[Any]] = {expected, exec_task}
            await asyncio.wait(first, timeout=self.params.audiosocket_connect_timeout_s,
                               return_when=asyncio.FIRST_COMPLETED)
            if not expected.done():
                log.error("bridge: Asterisk did not connect AudioSocket for %s within %.1f s (dialled %s)",
                          request.channel, self.params.audiosocket_connect_timeout_s, self.advertise)
                fail.reason = "audiosocket_unreachable"
                return fail
            audio = expected.result()
            call = TelephonyCall(
                flow=request.flow, query=request.query,
                lang=request.query.get("lang") or self.params.default_lang,
                caller_id=request.callerid, caller_name=request.calleridname, channel=request.channel,
                uniqueid=request.uniqueid, call_uuid=call_uuid, agi=agi, audio=audio,
            )
            task: asyncio.Future[HandOff | None] = asyncio.ensure_future(self.handler(call))
            self._handler_tasks.add(task)
            try:
                result = await asyncio.wait_for(task, self.params.max_call_s)
            except TimeoutError:
                log.error("bridge: call %s reached max_call_s (%.0f s)", request.channel, self.params.max_call_s)
                fail.reason = "timeout"
                return fail
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # the call itself is being cancelled, not just the conversation
                fail.reason = "shutdown"
                return fail
            finally:
                self._handler_tasks.discard(task)
            if audio.stalled:  # Asterisk stopped taking our audio; the AGI leg may still be fine
                log.error("bridge: call %s ended: Asterisk stopped reading its audio; failing open to %s",
                          request.channel, fail.route)
                fail.reason = "audio_stalled"
                return fail
            if result is None:
                return None if (agi.hung_up or not audio.is_open) else HandOff(route=ROUTE_END, reason="completed")
            return result
        except AgiHangup:
            return None
        except AgiError as exc:
            log.error("bridge: AGI failed on %s: %s", request.channel, exc)
            return fail
        except Exception:
            log.exception("bridge: call handler failed on %s (flow %r); failing open to %s",
                          request.channel, request.flow, fail.route)
            return fail
        finally:
            expected.cancel()
            if audio is not None:
                await audio.close()
            if exec_task is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(exec_task), EXEC_RETURN_TIMEOUT_S)
                if not exec_task.done():
                    # Asterisk never answered EXEC: the AGI stream is stuck, so no hand-off variables;
                    # closing the session leaves IVR_ROUTE empty and the dialplan opens the menu
                    exec_task.cancel()
                    agi.hung_up = True

    async def _finish(self, agi: AgiSession, outcome: HandOff) -> None:
        """Set the IVR_* variables; the AGI server then closes the session and the dialplan goes on.

        One variable that fails is logged and skipped: the rest (route and reason first) still go.
        Only a caller who hung up, or a stream out of step, ends the hand-off early."""
        self.outcomes = (self.outcomes + [(agi.request.uniqueid, outcome)])[-100:]
        channel = agi.request.channel
        try:
            variables = outcome.channel_variables()
        except Exception:
            log.exception("bridge: hand-off of %s could not be prepared; sending route and reason only", channel)
            variables = {"IVR_ROUTE": str(outcome.route), "IVR_REASON": str(outcome.reason)}
        skipped = []
        for name, value in variables.items():
            try:
                await agi.set_variable(name, value)
            except AgiHangup:
                log.info("bridge: %s hung up before the hand-off (%s not set)", channel, name)
                return
            except Exception as exc:  # any type: one bad variable must not cost the others
                log.error("bridge: hand-off of %s: could not set %s: %s", channel, name, exc)
                skipped.append(name)
                if agi.hung_up:  # the stream is out of step (no reply, stalled): nothing more can go
                    return
        if skipped:
            log.warning("bridge: hand-off of %s went without %s", channel, ", ".join(skipped))
        try:
            await agi.verbose(f"IVR: route={outcome.route} intent={outcome.intent} reason={outcome.reason}")
        except Exception as exc:
            log.info("bridge: %s: hand-off note not written to Asterisk's log: %s", channel, exc)


async def serve_bridge(
    settings: Settings,
    handler: CallHandler,
    *,
    params: BridgeParams | None = None,
    started: Callable[[Bridge], None] | None = None,
) -> None:
    """Run the FastAGI and AudioSocket servers until cancelled, then shut down gracefully.

    `started(bridge)` is called once both servers listen (ports are then known).
    """
    bridge = Bridge(params or BridgeParams.from_settings(settings), handler)
    await bridge.start()
    if started is not None:
        started(bridge)
    try:
        await asyncio.Event().wait()  # until cancelled
    finally:
        await asyncio.shield(bridge.stop())
