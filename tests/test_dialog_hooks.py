"""The hook executor (Python hooks and HTTP webhooks against a real local HTTP server) and the
runtime on a small inline flow: purity, hook errors, confirmation, keys, business hours."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from ivr.dialog import events as ev
from ivr.dialog.flow import parse_flow
from ivr.dialog.hooks import run_hook
from ivr.dialog.runtime import DialogRuntime
from ivr.nlu.grammar import SourceMap
from ivr.nlu.types import Understanding


# ---- a real webhook server ---------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)  # type: ignore[attr-defined]
        if self.path == "/fail":
            self.send_response(500)
            self.end_headers()
            return
        if self.path == "/slow":
            threading.Event().wait(1.0)
        payload = b"not json" if self.path == "/garbage" else json.dumps(
            {"outcome": "ok", "echo": body["params"].get("amount"), "who": body["context"].get("caller_id")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    server = HTTPServer(("127.0.0.1", 0), _Handler)
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", server.requests  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


def test_http_webhook_round_trip(webhook: tuple[str, list[dict[str, Any]]]) -> None:
    url, requests = webhook
    done = run_hook(ev.RunHook(f"{url}/topup", {"amount": 50, "timeout_s": 2}), {"caller_id": "+1555", "x": object()})
    assert done == ev.HookDone(f"{url}/topup", {"outcome": "ok", "echo": 50, "who": "+1555"})
    assert requests[0] == {"params": {"amount": 50}, "context": {"caller_id": "+1555"}}


@pytest.mark.parametrize(("path", "message"), [("/fail", "HTTP 500"), ("/garbage", "not JSON"),
                                               ("/slow", "unreachable")])
def test_http_webhook_failures_become_errors(webhook: tuple[str, list[dict[str, Any]]], path: str,
                                             message: str) -> None:
    url, _ = webhook
    done = run_hook(ev.RunHook(url + path, {"timeout_s": 0.3}), {})
    assert done.result == {} and done.error is not None and message in done.error


def test_unreachable_webhook() -> None:
    done = run_hook(ev.RunHook("http://127.0.0.1:9/none", {"timeout_s": 0.5}), {})
    assert done.error and "unreachable" in done.error


def test_python_hook_errors_never_raise() -> None:
    missing = run_hook(ev.RunHook("python:ivr.demo_operator.hooks.no_such_hook"), {})
    assert missing.error and "AttributeError" in missing.error
    no_db = run_hook(ev.RunHook("python:ivr.demo_operator.hooks.balance"), {})
    assert no_db.error and "demo_db" in no_db.error


def test_demo_hook_creates_and_seeds_the_db(tmp_path: Path) -> None:
    context = {"demo_db": str(tmp_path / "sub" / "demo.sqlite3"), "lang": "ru"}
    done = run_hook(ev.RunHook("python:ivr.demo_operator.hooks.balance", {"caller_id": "+7 916 000-00-02"}), context)
    assert done.error is None
    assert done.result["balance_text"] == "1200 рублей" and done.result["name"] == "Анна Смирнова"


# ---- the runtime on an inline flow -------------------------------------------------------------
FLOW = {
    "flow": "mini",
    "start": "menu",
    "business_hours": {"days": {"mon-fri": "09:00-17:00"}},
    "globals": {"operator": "agent", "repeat": "@repeat"},
    "global_dtmf": {"0": "operator"},
    "escalation": {"no_input": ["reprompt", "transfer"], "no_match": ["hint", "hangup"]},
    "states": {
        "menu": {"say": "hello", "hint": "keys", "on": {"balance": "lookup"}, "dtmf": {"1": "balance"}},
        "lookup": {"hook": {"call": "http://127.0.0.1:9/x", "returns": ["amount"]}, "next": "told",
                   "on_error": "sorry"},
        "told": {"say": "told", "confirm": {"yes": "menu", "no": "bye"}},
        "sorry": {"say": "sorry", "next": "agent"},
        "agent": {"say": "hold", "transfer": {"reason": "caller_asked"}, "when_closed": "closed"},
        "closed": {"say": "closed", "hangup": "after_hours"},
        "bye": {"say": "bye", "hangup": "completed"},
    },
}
PROMPTS = {"hello": "Hello.", "keys": "Press 1.", "told": "You have {amount}. Again?", "sorry": "Oops.",
           "hold": "Hold on.", "closed": "We are closed.", "bye": "Bye.", "no_input": "Hm?", "no_match": "What?",
           "transferring": "Transferring.", "goodbye": "Goodbye."}


@pytest.fixture
def runtime() -> DialogRuntime:
    flow, errors = parse_flow(json.loads(json.dumps(FLOW)), SourceMap("mini.yaml"))
    assert errors == [] and flow is not None
    return DialogRuntime(flow, "en", prompts=PROMPTS)


def heard(intent: str, **entities: Any) -> ev.Heard:
    return ev.Heard(Understanding(text=intent, intent=intent, score=0.9, entities=entities))


def texts(step: Any) -> list[str]:
    return [a.text for a in step.actions if isinstance(a, ev.Say)]


def test_runtime_is_pure(runtime: DialogRuntime) -> None:
    start = runtime.start(ev.CallStarted(caller_id="1", now_iso="2026-11-23T10:00:00"))
    a = runtime.handle(start.state, heard("balance"))
    b = runtime.handle(start.state, heard("balance"))
    assert a == b  # same state + same event -> same step; the old state is untouched
    assert start.state.node == "menu" and a.state.node == "lookup"
    with pytest.raises(AttributeError):
        start.state.node = "x"  # type: ignore[misc]


def test_hook_result_fills_prompt_and_error_takes_on_error(runtime: DialogRuntime) -> None:
    s = runtime.start(ev.CallStarted(now_iso="2026-11-23T10:00:00")).state
    step = runtime.handle(s, ev.Pressed("1"))
    assert step.actions == (ev.RunHook("http://127.0.0.1:9/x", {"caller_id": "", "lang": "en", "timeout_s": 5.0}),)
    assert runtime.handle(step.state, heard("yes")).actions == ()  # caller input while the hook runs: ignored
    ok = runtime.handle(step.state, ev.HookDone("http://127.0.0.1:9/x", {"amount": 7}))
    assert texts(ok) == ["You have 7. Again?"]
    failed = runtime.handle(step.state, ev.HookDone("http://127.0.0.1:9/x", error="boom"))
    assert texts(failed) == ["Oops.", "Hold on."]
    transfer = failed.actions[-1]
    assert isinstance(transfer, ev.Transfer) and transfer.reason == "caller_asked"
    assert "hook_error=boom" in transfer.summary


def test_confirmation_by_voice_entity_and_key(runtime: DialogRuntime) -> None:
    s = runtime.start(ev.CallStarted(now_iso="2026-11-23T10:00:00")).state
    s = runtime.handle(s, ev.Pressed("1")).state
    told = runtime.handle(s, ev.HookDone("x", {"amount": 7})).state
    # intent "none" but the yes/no entity says no
    by_entity = runtime.handle(told, ev.Heard(Understanding("nah mate", "none", 0.3, {"yes_no": "no"})))
    assert isinstance(by_entity.actions[-1], ev.Hangup) and by_entity.state.ended
    by_key = runtime.handle(told, ev.Pressed("1"))
    assert by_key.state.node == "menu"


def test_state_escalation_steps(runtime: DialogRuntime) -> None:
    s = runtime.start(ev.CallStarted(now_iso="2026-11-23T10:00:00")).state
    first = runtime.handle(s, heard("none"))
    assert texts(first) == ["What?", "Press 1."]  # step 1 of no_match here is the hint
    second = runtime.handle(first.state, heard("none"))
    assert texts(second) == ["Goodbye."] and second.actions[-1] == ev.Hangup("no_match")
    silent = runtime.handle(runtime.handle(s, ev.NoInput()).state, ev.NoInput())
    assert isinstance(silent.actions[-1], ev.Transfer) and silent.actions[-1].reason == "no_input"


def test_business_hours_redirect(runtime: DialogRuntime) -> None:
    closed = runtime.start(ev.CallStarted(now_iso="2026-11-23T18:30:00"))  # Monday evening
    step = runtime.handle(closed.state, heard("operator"))
    assert texts(step) == ["We are closed."] and step.actions[-1] == ev.Hangup("after_hours")
    open_ = runtime.start(ev.CallStarted(now_iso="2026-11-23T09:00:00"))
    assert isinstance(runtime.handle(open_.state, ev.Pressed("0")).actions[-1], ev.Transfer)


def test_business_hours_are_the_centres_local_time() -> None:
    """With `timezone`, a call's time is converted first: 06:30 UTC is 09:30 in Moscow (open),
    and 15:00 UTC is 18:00 there (closed), whatever zone the server runs in."""
    raw = json.loads(json.dumps(FLOW))
    raw["business_hours"]["timezone"] = "Europe/Moscow"
    flow, errors = parse_flow(raw, SourceMap("mini.yaml"))
    assert not errors and flow is not None
    zoned = DialogRuntime(flow, "en", prompts=PROMPTS)
    assert zoned.start(ev.CallStarted(now_iso="2026-11-23T06:30:00+00:00")).state.open
    assert not zoned.start(ev.CallStarted(now_iso="2026-11-23T15:00:00+00:00")).state.open
    # a time without an offset is already the centre's local time
    assert not zoned.start(ev.CallStarted(now_iso="2026-11-23T06:30:00")).state.open


def test_an_unknown_time_zone_is_an_error_naming_it() -> None:
    raw = json.loads(json.dumps(FLOW))
    raw["business_hours"]["timezone"] = "Mars/Olympus"
    _, errors = parse_flow(raw, SourceMap("mini.yaml"))
    assert any("unknown time zone 'Mars/Olympus'" in str(e) for e in errors), errors


def test_listen_action(runtime: DialogRuntime) -> None:
    listen = runtime.start(ev.CallStarted()).actions[-1]
    assert listen == ev.Listen(state="menu", phrases=None, expected_intents=("balance",),
                               dtmf={"0": "operator", "1": "balance"})


def test_hung_up_ends_quietly(runtime: DialogRuntime) -> None:
    step = runtime.handle(runtime.start(ev.CallStarted()).state, ev.HungUp())
    assert step.state.ended and step.actions == ()
    assert runtime.handle(step.state, heard("balance")).actions == ()
