"""Scoring the NLU on labelled utterances: what `ivr nlu eval FILE.tsv` prints after a grammar edit.

    rows = read_tsv(Path("tests/data/nlu_heldout_en.tsv"))   # [(utterance, expected intent or "none")]
    report = evaluate(nlu, rows)
    report.accuracy, report.oos_recall, report.per_intent["balance"].f1, report.confused[:5]

A TSV line is `utterance<TAB>expected`, where expected is an intent name or `none` (out of scope);
empty lines and lines starting with `#` are skipped. Metrics:
- accuracy: share of all lines answered right (an out-of-scope line is right when rejected);
- in-scope accuracy: of the lines with an intent, the share that got exactly it;
- out-of-scope recall: of the `none` lines, the share rejected; precision: of everything rejected,
  the share that was really `none`;
- per-intent precision/recall/F1, and the most confused (expected, got) pairs with their counts.
"""

from __future__ import annotations

import html
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ivr.errors import ConfigError
from ivr.nlu.intents import Nlu
from ivr.nlu.types import NONE_INTENT

CONFUSED_SHOWN = 10


@dataclass
class IntentScore:
    support: int = 0  # lines expecting this intent
    predicted: int = 0  # lines answered with it
    right: int = 0

    @property
    def precision(self) -> float:
        return self.right / self.predicted if self.predicted else 0.0

    @property
    def recall(self) -> float:
        return self.right / self.support if self.support else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


@dataclass
class EvalReport:
    lines: int = 0
    accuracy: float = 0.0
    in_scope: int = 0
    in_scope_accuracy: float = 0.0
    top1_accuracy: float = 0.0  # in-scope lines whose best-ranked intent is right, threshold aside
    out_of_scope: int = 0
    oos_recall: float = 0.0
    oos_precision: float = 0.0
    ms_per_utterance: float = 0.0
    ms_p95: float = 0.0
    threshold: float = 0.0
    fusion_weight: float = 0.0  # the embedding model's logits against the n-gram model's (classifier)
    per_intent: dict[str, IntentScore] = field(default_factory=dict)
    confused: list[tuple[str, str, int]] = field(default_factory=list)  # (expected, got, count)
    errors: list[tuple[str, str, str, float]] = field(default_factory=list)  # (text, expected, got, score)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["per_intent"] = {name: {"support": s.support, "predicted": s.predicted, "precision": round(s.precision, 4),
                                    "recall": round(s.recall, 4), "f1": round(s.f1, 4)}
                             for name, s in sorted(self.per_intent.items())}
        out["confused"] = [{"expected": e, "got": g, "count": n} for e, g, n in self.confused]
        out["errors"] = [{"text": t, "expected": e, "got": g, "score": s} for t, e, g, s in self.errors]
        return out


def read_tsv(path: Path) -> list[tuple[str, str]]:
    """(utterance, expected) pairs; ConfigError naming the line for a malformed one."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc})",
                          fix="give a UTF-8 TSV file: utterance<TAB>intent") from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise ConfigError(f"{path}:{number}: expected 'utterance<TAB>intent' (or 'none'), got {line[:60]!r}",
                              fix="separate the utterance and the expected intent with one tab")
        rows.append((parts[0].strip(), parts[1].strip()))
    if not rows:
        raise ConfigError(f"{path}: no lines to evaluate", fix="add lines 'utterance<TAB>intent'")
    return rows


def evaluate(nlu: Nlu, rows: Sequence[tuple[str, str]]) -> EvalReport:
    """Run every utterance through `nlu` and score the answers (module docstring)."""
    unknown = sorted({want for _, want in rows if want != NONE_INTENT and want not in nlu.grammar.intents})
    if unknown:
        raise ConfigError(f"expected intents not in the {nlu.lang} grammar: {', '.join(unknown[:10])}",
                          fix="fix the TSV's intent names (or use 'none' for out-of-scope lines)")
    nlu.train()  # training is not part of the time per utterance
    report = EvalReport(lines=len(rows), threshold=round(nlu.threshold, 4),
                        fusion_weight=nlu.classifier.model.fusion_weight)
    times: list[float] = []
    confused: Counter[tuple[str, str]] = Counter()
    right = in_right = oos_right = rejected = top1_right = 0
    for text, want in rows:
        started = time.perf_counter()
        u = nlu.understand(text)
        times.append((time.perf_counter() - started) * 1000)
        got = u.intent
        top1_right += want != NONE_INTENT and bool(u.ranking) and u.ranking[0][0] == want
        for name in {want, got} - {NONE_INTENT}:
            report.per_intent.setdefault(name, IntentScore())
        if want != NONE_INTENT:
            report.per_intent[want].support += 1
        if got != NONE_INTENT:
            report.per_intent[got].predicted += 1
        rejected += got == NONE_INTENT
        if got == want:
            right += 1
            if want == NONE_INTENT:
                oos_right += 1
            else:
                in_right += 1
                report.per_intent[want].right += 1
        else:
            confused[(want, got)] += 1
            report.errors.append((text, want, got, round(u.score, 3)))
    report.in_scope = sum(1 for _, want in rows if want != NONE_INTENT)
    report.out_of_scope = len(rows) - report.in_scope
    report.accuracy = round(right / len(rows), 4)
    report.in_scope_accuracy = round(in_right / report.in_scope, 4) if report.in_scope else 0.0
    report.top1_accuracy = round(top1_right / report.in_scope, 4) if report.in_scope else 0.0
    report.oos_recall = round(oos_right / report.out_of_scope, 4) if report.out_of_scope else 0.0
    report.oos_precision = round(oos_right / rejected, 4) if rejected else 0.0
    times.sort()
    report.ms_per_utterance = round(sum(times) / len(times), 2)
    report.ms_p95 = round(times[min(len(times) - 1, int(0.95 * len(times)))], 2)
    report.confused = [(e, g, n) for (e, g), n in confused.most_common(CONFUSED_SHOWN)]
    return report


def render_html(report: EvalReport, title: str) -> str:
    """A self-contained HTML page of the report (summary, confused pairs, per-intent table, errors)."""
    esc = html.escape
    summary = [("lines", report.lines), ("accuracy", f"{report.accuracy:.1%}"),
               ("in-scope accuracy", f"{report.in_scope_accuracy:.1%} of {report.in_scope}"),
               ("out-of-scope recall", f"{report.oos_recall:.1%} of {report.out_of_scope}"),
               ("out-of-scope precision", f"{report.oos_precision:.1%}"), ("threshold", report.threshold),
               ("fusion weight (embeddings : n-grams)", report.fusion_weight),
               ("ms per utterance", f"{report.ms_per_utterance} (p95 {report.ms_p95})")]
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in summary)
    confused = "".join(f"<tr><td>{esc(e)}</td><td>{esc(g)}</td><td>{n}</td></tr>" for e, g, n in report.confused)
    intents = "".join(
        f"<tr><td>{esc(name)}</td><td>{s.support}</td><td>{s.precision:.2f}</td><td>{s.recall:.2f}</td>"
        f"<td>{s.f1:.2f}</td></tr>" for name, s in sorted(report.per_intent.items(), key=lambda p: p[1].f1))
    errors = "".join(f"<tr><td>{esc(t)}</td><td>{esc(e)}</td><td>{esc(g)}</td><td>{s:.2f}</td></tr>"
                     for t, e, g, s in report.errors)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:2em}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}</style></head><body>
<h1>{esc(title)}</h1><table>{rows}</table>
<h2>Most confused (expected &rarr; got)</h2>
<table><tr><th>expected</th><th>got</th><th>count</th></tr>{confused}</table>
<h2>Per intent (worst F1 first)</h2>
<table><tr><th>intent</th><th>lines</th><th>precision</th><th>recall</th><th>F1</th></tr>{intents}</table>
<h2>Errors</h2><table><tr><th>utterance</th><th>expected</th><th>got</th><th>score</th></tr>{errors}</table>
</body></html>
"""
