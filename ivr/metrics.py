"""Prometheus metrics for `ivr serve`, and the tiny HTTP server for /metrics and /healthz.

All metrics live on a private CollectorRegistry (not prometheus_client's global one), so
tests and several bridges in one process do not collide. The pipeline uses the module-level
`METRICS` (an `IvrMetrics`) through its helper methods:

    METRICS.call_started(); METRICS.observe_turn(latency_s=0.42, asr_s=0.1, confidence=0.9)
    METRICS.handoff("caller_asked"); METRICS.call_ended(route="support")

`MetricsServer(METRICS, host, port)` is an asyncio HTTP/1.1 server answering
GET /metrics (Prometheus text format) and GET /healthz (JSON: status, node, calls_active, uptime_s).
With several nodes (`ivr serve` on many machines behind one Asterisk) every sample carries a
`node` label, so one Prometheus (or one person with curl) tells the nodes apart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric

from ivr.errors import listen_error
from ivr.outcomes import CONTAINED, OUTCOMES
from ivr.telephony.streams import drain

log = logging.getLogger(__name__)

NAMESPACE = "ivr"
# seconds; a voice turn should answer within ~1 s, so resolution is finest below that
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
STAGES = ("asr", "nlu", "dialog", "tts")
READ_TIMEOUT_S = 5.0
MAX_REQUEST_BYTES = 8192


class IvrMetrics:
    """The bridge's metrics on their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.started = time.monotonic()
        self.status = "ok"  # "draining" during a graceful shutdown
        self.node = ""  # this node's name (settings server.node): a label on every sample
        r = self.registry
        self.calls_active = Gauge("calls_active", "Calls in progress", namespace=NAMESPACE, registry=r)
        self.calls_total = Counter(
            "calls", "Calls ended, by route ('' = not handed off)", ["route"], namespace=NAMESPACE, registry=r
        )
        self.outcomes_total = Counter(
            "call_outcomes", "Calls ended, by outcome: contained | transferred | abandoned | failed",
            ["outcome"], namespace=NAMESPACE, registry=r,
        )
        for name in OUTCOMES:  # every outcome shows from the start, so rates never divide by a missing series
            self.outcomes_total.labels(outcome=name)
        self.containment = Gauge(
            "containment_ratio", "Contained / ended calls since this process started", namespace=NAMESPACE, registry=r
        )
        self.turns_total = Counter("turns", "Dialog turns", namespace=NAMESPACE, registry=r)
        self.turn_latency = Histogram(
            "turn_latency_seconds",
            "End of caller speech to first audio out",
            namespace=NAMESPACE,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_latency = Histogram(
            "stage_latency_seconds",
            "Time per pipeline stage",
            ["stage"],
            namespace=NAMESPACE,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.asr_confidence = Histogram(
            "asr_confidence",
            "Confidence of final ASR results",
            namespace=NAMESPACE,
            buckets=CONFIDENCE_BUCKETS,
            registry=r,
        )
        self.handoffs_total = Counter(
            "handoffs", "Calls handed to the live line, by reason", ["reason"], namespace=NAMESPACE, registry=r
        )
        self.errors_total = Counter("errors", "Errors, by kind", ["kind"], namespace=NAMESPACE, registry=r)
        self.barge_ins_total = Counter(
            "barge_ins", "Prompts interrupted by the caller", namespace=NAMESPACE, registry=r
        )
        # one label value per knowledge-base entry (faq/<lang>/*.yaml): bounded by the files
        self.kb_answers_total = Counter(
            "kb_answers", "Answers given from the knowledge base, by entry", ["entry"], namespace=NAMESPACE,
            registry=r,
        )

    # ---- helpers the pipeline calls ---------------------------------------------------------
    def call_started(self) -> None:
        self.calls_active.inc()

    def call_ended(self, route: str = "", outcome: str = CONTAINED) -> None:
        """A call finished; `route` is the queue it was handed to ('' if not handed off), `outcome`
        how it ended (ivr/outcomes.py)."""
        self.calls_active.dec()
        self.calls_total.labels(route=route).inc()
        self.outcomes_total.labels(outcome=outcome).inc()
        counts = {name: self.registry.get_sample_value(f"{NAMESPACE}_call_outcomes_total", {"outcome": name}) or 0.0
                  for name in OUTCOMES}
        self.containment.set(counts[CONTAINED] / max(sum(counts.values()), 1.0))

    def observe_turn(
        self,
        latency_s: float | None = None,
        *,
        asr_s: float | None = None,
        nlu_s: float | None = None,
        dialog_s: float | None = None,
        tts_s: float | None = None,
        confidence: float | None = None,
    ) -> None:
        """Count one turn and record whatever timings and ASR confidence it has."""
        self.turns_total.inc()
        if latency_s is not None:
            self.turn_latency.observe(latency_s)
        for stage, value in zip(STAGES, (asr_s, nlu_s, dialog_s, tts_s), strict=True):
            if value is not None:
                self.stage_latency.labels(stage=stage).observe(value)
        if confidence is not None:
            self.asr_confidence.observe(confidence)

    def handoff(self, reason: str) -> None:
        self.handoffs_total.labels(reason=reason).inc()

    def error(self, kind: str) -> None:
        self.errors_total.labels(kind=kind).inc()

    def barge_in(self) -> None:
        self.barge_ins_total.inc()

    def kb_answer(self, entry: str) -> None:
        self.kb_answers_total.labels(entry=entry).inc()

    # ---- exposition -------------------------------------------------------------------------
    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(_NodeLabelled(self.registry, self.node) if self.node else self.registry)

    def health(self) -> dict[str, object]:
        return {
            "status": self.status,
            "node": self.node,
            "calls_active": int(self.registry.get_sample_value(f"{NAMESPACE}_calls_active") or 0),
            "uptime_s": round(time.monotonic() - self.started, 1),
        }


class _NodeLabelled:
    """A registry's metrics with `node="<name>"` added to every sample (a constant label).

    prometheus_client has no constant labels; adding the label at exposition keeps every
    `.labels(...)` call in the pipeline unaware of which node it runs on."""

    def __init__(self, registry: CollectorRegistry, node: str) -> None:
        self.registry = registry
        self.node = node

    def collect(self) -> Iterator[Metric]:
        for metric in self.registry.collect():
            labelled = Metric(metric.name, metric.documentation, metric.type, metric.unit)
            labelled.samples = [s._replace(labels={**s.labels, "node": self.node}) for s in metric.samples]
            yield labelled


METRICS = IvrMetrics()


@dataclass
class MetricsServer:
    """GET /metrics and /healthz over HTTP on `host:port` (port 0: pick a free one, see `.port`)."""

    metrics: IvrMetrics
    host: str = "127.0.0.1"
    port: int = 8089
    _server: asyncio.Server | None = None

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)
        except OSError as exc:
            raise listen_error(exc, "/healthz and /metrics", self.host, self.port,
                               "server.health_port (--health-port)") from None
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> MetricsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
            status, ctype, body = self._respond(head[:MAX_REQUEST_BYTES])
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            writer.close()
            return
        header = (
            f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        try:
            writer.write(header.encode("ascii") + body)
            await drain(writer)  # bounded: a scraper that stops reading is dropped (WriteStalled)
        except ConnectionError:
            pass
        finally:
            writer.close()

    def _respond(self, head: bytes) -> tuple[str, str, bytes]:
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(parts) != 3:
            return "400 Bad Request", "text/plain", b"bad request\n"
        method, target = parts[0], parts[1].split("?", 1)[0]
        if method != "GET":
            return "405 Method Not Allowed", "text/plain", b"GET only\n"
        if target == "/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, self.metrics.exposition()
        if target == "/healthz":
            health = self.metrics.health()
            code = "200 OK" if health["status"] == "ok" else "503 Service Unavailable"
            return code, "application/json", json.dumps(health).encode()
        return "404 Not Found", "text/plain", b"try /metrics or /healthz\n"
