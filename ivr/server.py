"""`ivr serve`: the assistant behind Asterisk.

FastAGI + AudioSocket (ivr/telephony/bridge.py) carry each call to a `CallSession`; the metrics
and health endpoint, the flow hot-reload watcher and (optionally) the AMI event listener run
beside them. SIGTERM/SIGINT stop accepting calls and let the calls in progress finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

from ivr.audio.pcm import FRAME_MS
from ivr.call import CallSession
from ivr.config import Settings
from ivr.services import CallServices
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

log = logging.getLogger(__name__)


def bridge_params(settings: Settings) -> BridgeParams:
    """The bridge as `ivr serve` runs it.

    While the assistant is silent it still sends a silence frame every 20 ms (not just a sparse
    keep-alive): the caller's channel then carries a steady media clock, as from a phone, so
    Asterisk applications on it (WaitForSilence, MixMonitor, talk detection) see real time pass.
    """
    params = BridgeParams.from_settings(settings)
    params.audio = AudioSocketParams(idle_keepalive_s=FRAME_MS / 1000)
    return params


def conversation_handler(services: CallServices) -> CallHandler:
    """The bridge's per-call handler: run the conversation, turn its result into a hand-off."""

    async def handle(call: TelephonyCall) -> HandOff | None:
        # the call record is keyed by Asterisk's Uniqueid, so AMI events and records meet
        session = CallSession(services, call.audio, lang=call.lang, flow=call.flow, caller_id=call.caller_id,
                              channel=call.channel, call_id=call.uniqueid or None)
        result = await session.run()
        if result.route == "hangup":
            return None  # the caller left: nothing to hand over
        if not result.handed_off:
            return HandOff(route=ROUTE_END, intent=result.intent, reason=result.reason)
        return HandOff(route=ROUTE_QUEUE, queue=result.route, intent=result.intent, summary=result.summary,
                       reason=result.reason, variables={"CALL_ID": result.call_id, **result.variables})

    return handle


async def run_server(settings: Settings, *, services: CallServices | None = None,
                     started: Callable[[Bridge], None] | None = None) -> None:
    """Serve calls until cancelled or signalled."""
    from ivr.metrics import MetricsServer

    services = services or CallServices.create(settings, with_metrics=True)
    errors = services.registry.reload()
    if errors:
        log.error("serving with %d flow problem(s); run `ivr check`", len(errors))
    background = [asyncio.create_task(services.registry.watch(), name="flow-watch")]
    metrics_server = None
    if services.metrics is not None:
        metrics_server = MetricsServer(services.metrics, settings.server.host, settings.server.health_port)
        await metrics_server.start()
    serving = asyncio.create_task(
        serve_bridge(settings, conversation_handler(services), params=bridge_params(settings), started=started),
        name="bridge",
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, serving.cancel)
    try:
        await serving
    except asyncio.CancelledError:
        pass
    finally:
        if services.metrics is not None:
            services.metrics.status = "draining"
        for task in background:
            task.cancel()
        if metrics_server is not None:
            await metrics_server.stop()
        services.close()
        log.info("ivr serve: stopped")
