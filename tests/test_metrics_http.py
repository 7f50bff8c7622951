"""Prometheus metrics scraped over real HTTP on loopback, parsed with prometheus_client's parser."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ivr.metrics import METRICS, IvrMetrics, MetricsServer


def _get(port: int, path: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def _samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def _scrape(metrics: IvrMetrics, *paths: str) -> list[tuple[int, str, bytes]]:
    async with MetricsServer(metrics, "127.0.0.1", 0) as server:
        assert server.port > 0
        return [await asyncio.to_thread(_get, server.port, path) for path in paths]


def test_scrape_after_two_calls():
    m = IvrMetrics()
    m.call_started()
    m.call_started()
    m.observe_turn(0.42, asr_s=0.31, nlu_s=0.004, dialog_s=0.001, tts_s=0.02, confidence=0.87)
    m.observe_turn(None, confidence=None)  # a no-input turn: counted, no timings
    m.barge_in()
    m.handoff("caller_asked")
    m.call_ended(route="support")
    m.error("asr")

    (status, ctype, body), (hstatus, htype, hbody) = asyncio.run(_scrape(m, "/metrics", "/healthz"))
    assert status == 200 and ctype.startswith("text/plain")
    s = _samples(body)
    assert s[("ivr_calls_active", ())] == 1
    assert s[("ivr_calls_total", (("route", "support"),))] == 1
    assert s[("ivr_turns_total", ())] == 2
    assert s[("ivr_turn_latency_seconds_count", ())] == 1
    assert s[("ivr_turn_latency_seconds_sum", ())] == pytest.approx(0.42)
    assert s[("ivr_turn_latency_seconds_bucket", (("le", "0.5"),))] == 1
    assert s[("ivr_turn_latency_seconds_bucket", (("le", "0.3"),))] == 0
    for stage, value in (("asr", 0.31), ("nlu", 0.004), ("dialog", 0.001), ("tts", 0.02)):
        assert s[("ivr_stage_latency_seconds_sum", (("stage", stage),))] == pytest.approx(value)
    assert s[("ivr_asr_confidence_count", ())] == 1
    assert s[("ivr_asr_confidence_bucket", (("le", "0.9"),))] == 1
    assert s[("ivr_handoffs_total", (("reason", "caller_asked"),))] == 1
    assert s[("ivr_errors_total", (("kind", "asr"),))] == 1
    assert s[("ivr_barge_ins_total", ())] == 1

    assert hstatus == 200 and htype == "application/json"
    health = json.loads(hbody)
    assert health["status"] == "ok" and health["calls_active"] == 1 and health["uptime_s"] >= 0


def test_draining_is_unhealthy_and_unknown_paths_404():
    m = IvrMetrics()
    m.status = "draining"
    (hstatus, _, hbody), (nstatus, _, _) = asyncio.run(_scrape(m, "/healthz", "/nope"))
    assert hstatus == 503 and json.loads(hbody)["status"] == "draining"
    assert nstatus == 404


def test_registries_are_private():
    a, b = IvrMetrics(), IvrMetrics()
    a.call_started()
    assert b.registry.get_sample_value("ivr_calls_active") == 0
    assert METRICS.registry is not a.registry


def test_malformed_request_gets_400():
    async def raw() -> bytes:
        async with MetricsServer(IvrMetrics(), "127.0.0.1", 0) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"HELLO\r\n\r\n")
            await writer.drain()
            data = await reader.read()
            writer.close()
            return data

    assert asyncio.run(raw()).startswith(b"HTTP/1.1 400")
