"""The executor of flow hooks: RunHook -> HookDone. Synchronous; the call pipeline runs it in a thread.

Two kinds of hook, named by `RunHook.name`:

- `python:package.module.function` — called as `function(params, context) -> dict`.
  `params` are the hook's rendered params (+ caller_id, lang); `context` is a mapping with at least
  caller_id, lang, call_id, and whatever the process adds (the demo operator adds its DB path).
- `http://...` / `https://...` — a webhook: POST of JSON `{"params": ..., "context": ...}`, the answer
  must be a JSON object. Timeout from the hook's `timeout_s` (default 5 s).

Failures never raise: they come back as `HookDone(error=...)` so the flow can take its `on_error`
path (or hand the call to the live line) instead of dropping the call.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from ivr.dialog.events import HookDone, RunHook

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0
MAX_RESPONSE_BYTES = 1_000_000
# context values that are not JSON (paths, objects) are sent to webhooks as strings or dropped
_JSON_TYPES = (str, int, float, bool, type(None))

_cache: dict[str, Callable[..., Any]] = {}


def resolve_python_hook(name: str) -> Callable[..., Any]:
    """The function behind `python:package.module.function`; raises ImportError/AttributeError."""
    target = name.removeprefix("python:")
    if target in _cache:
        return _cache[target]
    module_name, _, func_name = target.rpartition(".")
    if not module_name:
        raise ImportError(f"{name!r}: write python:package.module.function")
    func = getattr(importlib.import_module(module_name), func_name)
    if not callable(func):
        raise AttributeError(f"{name!r} is not a function")
    _cache[target] = func
    return func


def run_hook(action: RunHook, context: Mapping[str, Any] | None = None) -> HookDone:
    """Run one hook and report its result (or error) as a HookDone event."""
    context = dict(context or {})
    params = dict(action.params)
    timeout_s = float(params.pop("timeout_s", context.get("timeout_s", DEFAULT_TIMEOUT_S)))
    started = time.perf_counter()
    try:
        if action.name.startswith("python:"):
            result = resolve_python_hook(action.name)(params, context)
        elif action.name.startswith(("http://", "https://")):
            result = _post(action.name, params, context, timeout_s)
        else:
            return HookDone(action.name, error=f"unknown hook kind {action.name!r} (python:... or http(s)://...)")
        if result is None:
            result = {}
        if not isinstance(result, Mapping):
            return HookDone(action.name, error=f"hook returned {type(result).__name__}, expected a dict")
        return HookDone(action.name, result=dict(result))
    except Exception as exc:  # noqa: BLE001 - a hook failure must not end the call
        log.warning("hook %s failed after %.0f ms: %s", action.name, (time.perf_counter() - started) * 1000, exc)
        return HookDone(action.name, error=f"{type(exc).__name__}: {exc}")


def _post(url: str, params: Mapping[str, Any], context: Mapping[str, Any], timeout_s: float) -> Any:
    body = json.dumps({
        "params": params,
        "context": {k: v for k, v in context.items() if isinstance(v, _JSON_TYPES)},
    }).encode()
    request = urllib.request.Request(
        url, data=body, method="POST",
        headers={"Content-Type": "application/json", "Accept": "application/json", "User-Agent": "ivr-hooks/1"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - URL from the flow
            raw = response.read(MAX_RESPONSE_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"webhook answered HTTP {exc.code}") from None
    except (urllib.error.URLError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RuntimeError(f"webhook unreachable: {reason}") from None
    if len(raw) > MAX_RESPONSE_BYTES:
        raise RuntimeError("webhook answer is larger than 1 MB")
    try:
        return json.loads(raw or b"{}")
    except json.JSONDecodeError:
        raise RuntimeError("webhook answer is not JSON") from None
