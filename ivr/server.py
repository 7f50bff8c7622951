"""`ivr serve`: the assistant behind Asterisk.

FastAGI + AudioSocket (ivr/telephony/bridge.py) carry each call to a `CallSession`; the metrics
and health endpoint, the flow hot-reload watcher and (optionally) the AMI event listener run
beside them. SIGTERM/SIGINT stop accepting calls and let the calls in progress finish.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from ivr.audio.pcm import FRAME_MS
from ivr.call import CallSession
from ivr.config import LANGUAGES, Settings
from ivr.errors import IvrError
from ivr.services import CallServices
from ivr.telephony.ami import AmiEvent
from ivr.telephony.audiosocket import AudioSocketParams
from ivr.telephony.bridge import (
    ROUTE_END,
    ROUTE_QUEUE,
    Bridge,
    BridgeParams,
    CallHandler,
    HandOff,
    TelephonyCall,
    serve_bridge,
)

if TYPE_CHECKING:
    from ivr.storage.records import CallStore

log = logging.getLogger(__name__)


def bridge_params(settings: Settings) -> BridgeParams:
    """The bridge as `ivr serve` runs it.

    A call past `server.max_call_s` is handed to the live queue by the conversation itself
    (reason max_call_length); the bridge cuts it to the DTMF menu only `BRIDGE_GRACE_S` later.

    While the assistant is silent it still sends a silence frame every 20 ms (not just a sparse
    keep-alive): the caller's channel then carries a steady media clock, as from a phone, so
    Asterisk applications on it (WaitForSilence, MixMonitor, talk detection) see real time pass.
    """
    params = BridgeParams.from_settings(settings)
    params.audio = AudioSocketParams(idle_keepalive_s=FRAME_MS / 1000)
    # the call's own max_call_s fires first and hands the caller to the live queue; the bridge's
    # limit is the backstop for a call that cannot even do that
    params.max_call_s = settings.server.max_call_s + BRIDGE_GRACE_S
    return params


# AMI events kept in the call record, and the fields of theirs worth keeping
RECORDED_AMI_EVENTS = {
    "Hangup": ("Cause", "Cause-txt"),
    "QueueCallerJoin": ("Queue", "Position", "Count"),
    "QueueCallerLeave": ("Queue", "Position"),
    "QueueCallerAbandon": ("Queue", "Position", "OriginalPosition", "HoldTime"),
    "AgentConnect": ("Queue", "HoldTime", "MemberName"),
    "AgentComplete": ("Queue", "HoldTime", "TalkTime", "Reason"),
}
CAUSE_NORMAL_CLEARING = 16  # Q.850
RECENT_CALLS = 10_000  # calls whose late AMI events (queue, hang-up) are still recorded
EXPECTED_WAIT_TIMEOUT_S = 1.0  # a hand-off never waits longer than this for QueueStatus
BRIDGE_GRACE_S = 10.0  # the bridge waits this much past a call's max_call_s before cutting it
STATUS_STARTING = "starting"  # /healthz until every engine and prompt is loaded


class AmiLink:
    """The bridge's AMI side: call events into the call records, the queue's expected wait.

    Call records are keyed by the Uniqueid of the channel that ran AGI(), so the events of that
    channel (its queue join, its hang-up after the agent) land in the record of the call.

    Hang-up cause: chan_pjsip gives a caller's plain BYE (no Reason header) no cause, and Asterisk
    then reports Cause 0 "Unknown". A BYE is normal call clearing (Q.850 cause 16, RFC 3398), so
    when the channel's own driver asked for the hang-up (HangupRequest with no cause) and Asterisk
    knows no better, the record says 16 and where that came from. A BYE with a Reason header
    (res_pjsip_rfc3326) and every other cause are recorded as Asterisk reports them.
    """

    def __init__(self, services: CallServices) -> None:
        from ivr.telephony.ami import DEFAULT_EVENTS, AmiClient

        self.services = services
        self.client = AmiClient(services.settings.ami, on_event=self.on_event,
                                events=DEFAULT_EVENTS | {"HangupRequest"})
        self._recent: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._far_end_hung_up: set[str] = set()

    def remember(self, call_id: str) -> None:
        self._recent[call_id] = None
        while len(self._recent) > RECENT_CALLS:
            self._recent.popitem(last=False)

    def on_event(self, event: AmiEvent) -> None:
        call_id = event.get("Uniqueid")
        if call_id not in self._recent or self.services.records is None:
            return
        if event.name == "HangupRequest":
            if not event.get("Cause") and event.get("Channel").startswith("PJSIP/"):
                self._far_end_hung_up.add(call_id)  # the SIP peer's BYE/CANCEL, queued by chan_pjsip
            return
        keep = RECORDED_AMI_EVENTS.get(event.name)
        if keep is None:
            return
        data = {key: event.get(key) for key in keep if event.get(key)}
        if event.name == "Hangup":
            far_end = call_id in self._far_end_hung_up
            self._far_end_hung_up.discard(call_id)
            if far_end and data.get("Cause", "0") == "0":
                data.update({"Cause": str(CAUSE_NORMAL_CLEARING), "Cause-txt": "Normal Clearing",
                             "Cause-source": "SIP BYE without a Reason header (RFC 3398: cause 16)"})
        self.services.records.add_event(call_id, f"ami.{event.name}", data)

    async def expected_wait_s(self, queue: str) -> float | None:
        """The queue's expected wait, or None if AMI is down or slow (the hand-off goes on)."""
        if not self.client.connected:
            return None
        try:
            status = await asyncio.wait_for(self.client.queue_status(queue), EXPECTED_WAIT_TIMEOUT_S)
        except (TimeoutError, IvrError) as exc:
            log.warning("AMI: no queue status for %s: %s", queue, exc)
            return None
        return status.expected_wait_s()


def conversation_handler(services: CallServices, ami: AmiLink | None = None) -> CallHandler:
    """The bridge's per-call handler: run the conversation, turn its result into a hand-off."""

    async def handle(call: TelephonyCall) -> HandOff | None:
        # the call record is keyed by Asterisk's Uniqueid, so AMI events and records meet
        session = CallSession(services, call.audio, lang=call.lang, flow=call.flow, caller_id=call.caller_id,
                              channel=call.channel, call_id=call.uniqueid or None)
        if ami is not None:
            ami.remember(session.call_id)
        result = await session.run()
        if result.route == "hangup":
            return None  # the caller left: nothing to hand over
        if not result.handed_off:
            return HandOff(route=ROUTE_END, intent=result.intent, reason=result.reason)
        variables = {"CALL_ID": result.call_id, **result.variables}
        wait_s = await ami.expected_wait_s(result.route) if ami is not None else None
        if wait_s is not None:
            variables["EXPECTED_WAIT_S"] = str(round(wait_s))
            services.record_event(session, "expected_wait", {"queue": result.route, "seconds": round(wait_s)})
        handoff = HandOff(route=ROUTE_QUEUE, queue=result.route, intent=result.intent, summary=result.summary,
                          reason=result.reason, variables=variables)
        return handoff.redacted() if services.settings.server.redact_handoff else handoff

    return handle


async def run_server(settings: Settings, *, services: CallServices | None = None,
                     started: Callable[[Bridge], None] | None = None) -> None:
    """Serve calls until cancelled or signalled."""
    from ivr.metrics import IvrMetrics, MetricsServer

    check_can_listen(settings)  # a busy port is said at once, not after the models have loaded
    services = services or CallServices.create(settings, with_metrics=True)
    errors = services.registry.reload()
    if errors:
        log.error("serving with %d flow problem(s); run `ivr check`", len(errors))
    await _check_voice(services)
    background = [asyncio.create_task(services.registry.watch(), name="flow-watch")]
    store = services.records.store if services.records is not None else None
    if store is not None:  # records left `active` past max_call_s are closed as bridge_lost
        from ivr.storage.reaper import reap_forever, reap_lost_calls

        await asyncio.to_thread(reap_lost_calls, store, settings.server.max_call_s)
        background.append(asyncio.create_task(reap_forever(store, settings.server.max_call_s), name="reaper"))
    ami = AmiLink(services) if settings.ami.enabled else None
    if ami is not None:
        background.append(asyncio.create_task(ami.client.run_forever(), name="ami"))
    metrics_server = None
    # /metrics and /healthz serve a Prometheus registry: the process-wide one CallServices.create gives
    metrics = services.metrics if isinstance(services.metrics, IvrMetrics) else None
    if metrics is not None:
        # /healthz answers 503 "starting" while the models load, so a balancer waits for this node
        metrics.status = STATUS_STARTING
        metrics_server = MetricsServer(metrics, settings.server.host, settings.server.health_port)
        await metrics_server.start()
    warm_from = time.perf_counter()
    warmed = await services.warm_up(settings.server.warm_langs)
    log.info("warm start in %.1f s (%s): no call waits for a model or a prompt to load",
             time.perf_counter() - warm_from,
             ", ".join(f"{lang}: prompts {t['prompts_s']:.1f} s, asr {t['asr_s']:.1f} s" for lang, t in warmed.items()))

    from ivr.storage.records import utcnow

    leased_from = utcnow()  # records of this node from before now are left over from its last run

    def on_started(bridge: Bridge) -> None:
        services.node = bridge.node
        if metrics is not None:
            metrics.node = bridge.node
            if metrics.status == STATUS_STARTING:
                metrics.status = "ok"
        if services.records is not None:
            background.append(asyncio.create_task(
                _keep_node_lease(services.records.store, bridge.node, settings.server.node_lease_s, leased_from),
                name="node-lease"))
        if started is not None:
            started(bridge)

    serving = asyncio.create_task(
        serve_bridge(settings, conversation_handler(services, ami), params=bridge_params(settings),
                     started=on_started),
        name="bridge",
    )
    loop = asyncio.get_running_loop()

    def stop() -> None:
        # /healthz says 503 "draining" while calls in progress finish, so a balancer stops sending more
        if metrics is not None:
            metrics.status = "draining"
        serving.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop)
    try:
        await serving
    except asyncio.CancelledError:
        pass
    finally:
        if metrics is not None:
            metrics.status = "draining"
        for task in background:
            task.cancel()
        if metrics_server is not None:
            await metrics_server.stop()
        services.close()
        log.info("ivr serve: stopped")


def check_can_listen(settings: Settings) -> None:
    """Bind each configured port for a moment (as the listeners will, SO_REUSEADDR): ConfigError
    naming the setting to change if one cannot be taken. Port 0 (any free port) always can."""
    import socket

    from ivr.errors import listen_error

    server = settings.server
    ports = (("FastAGI", server.agi_port, "server.agi_port (--agi-port)"),
             ("AudioSocket", server.audiosocket_port, "server.audiosocket_port (--audiosocket-port)"),
             ("/healthz and /metrics", server.health_port, "server.health_port (--health-port)"))
    for what, port, setting in ports:
        if not port:
            continue
        try:
            family, kind, proto, _name, address = socket.getaddrinfo(
                server.host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
        except OSError as exc:
            raise listen_error(exc, what, server.host, port, setting) from None


async def _keep_node_lease(store: CallStore, node: str, lease_s: float, started_at: datetime) -> None:
    """Close what this node's last run left active, then keep its lease on the shared records and
    close the calls of nodes whose lease ran out (ivr/storage/nodes.py)."""
    from ivr.storage.nodes import NodeLease

    lease = NodeLease(store, node, lease_s, started_at)
    await asyncio.to_thread(lease.beat)
    await asyncio.to_thread(lease.close_own_leftovers)
    await lease.run()


async def _check_voice(services: CallServices) -> None:
    """Say at start-up, not at the first call, when prompts cannot be spoken (calls then go to the live line)."""
    engine = getattr(services.prompts, "engine", None)
    if engine is None:
        return
    for lang in LANGUAGES:
        try:
            await asyncio.to_thread(engine.voice, lang)
        except IvrError as exc:
            log.error("no TTS voice for %r: %s; its calls go to the live line where a prompt is neither "
                      "recorded nor cached (`ivr prompts build` renders them ahead)", lang, exc)
