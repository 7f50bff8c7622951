"""Korean speech understanding on a development set kept apart from the replay fixtures.

    python3 bench/ko_devset.py [--json out.json] [--keep DIR]

The replay fixtures (audio_fixtures/ko) are the test of Korean understanding; a change tuned on them
would be tuned on the test. This set is for screening such changes first: espeak-ng syntheses (two voices:
`ko` at 130 words per minute, `ko+f3` at 160) of every intent phrase of grammars/ko/support.yaml that is
not a fixture transcript, and of the out-of-scope sentences in bench/data/ko_dev/out_of_scope.txt (never in
the classifier's out-of-domain data). The audio is made by scripts/make_fixtures.py from a manifest written
here, then heard through the whole pipeline at the main menu by `ivr replay --lang ko --json`; printed are
right / wrong / rejected intents for the in-grammar utterances and rejected / accepted for the
out-of-scope ones. A wrong intent misroutes the caller; a rejection re-prompts.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ivr.nlu.classifier import ood_sentences  # noqa: E402
from ivr.nlu.grammar import load_grammar  # noqa: E402
from ivr.testing.fixtures import load_manifest  # noqa: E402

OUT_OF_SCOPE = ROOT / "bench/data/ko_dev/out_of_scope.txt"
VOICES = (("a", "ko", 130), ("b", "ko+f3", 160))


def manifest() -> dict[str, Any]:
    """The development set as a fixture manifest (scripts/make_fixtures.py's recipes)."""
    grammar = load_grammar("ko", ROOT / "grammars")
    replay = load_manifest(check_files=False)
    taken = {f.transcript for f in replay.fixtures if f.lang == "ko"}
    oos = [line.strip() for line in OUT_OF_SCOPE.read_text(encoding="utf-8").splitlines()
           if line.strip() and not line.startswith("#")]
    overlap = set(oos) & (set(ood_sentences("ko")) | taken)
    if overlap:
        raise SystemExit(f"{OUT_OF_SCOPE}: sentences also used elsewhere: {sorted(overlap)}")
    rows: list[dict[str, Any]] = []

    def add(name: str, text: str, intent: str) -> None:
        for tag, voice, rate in VOICES:
            rows.append({"file": f"ko/{name}{tag}.wav", "lang": "ko", "transcript": text, "intent": intent,
                         "source": f"espeak-ng {voice}", "recipe": {"tts": voice, "rate": rate, "pitch": 50}})

    phrases = [(intent, phrase) for intent, spec in grammar.intents.items() for phrase in spec.phrases
               if phrase not in taken]
    for n, (intent, phrase) in enumerate(phrases, 1):
        add(f"in_{n:02d}", phrase, intent)
    for n, text in enumerate(oos, 1):
        add(f"oos_{n:02d}", text, "none")
    return {"espeak_ng_version": replay.espeak_ng_version, "call_time": replay.call_time, "fixtures": rows,
            "calls": []}


def score(lines: list[dict[str, Any]]) -> dict[str, int]:
    counts: collections.Counter[str] = collections.Counter()
    for row in lines:
        for check in row.get("checks", []):
            if check["name"] != "intent":
                continue
            expected, got = check["expected"], check["got"]
            if expected == "none":
                counts["oos_rejected" if got == "none" else "oos_accepted"] += 1
            else:
                counts["right" if got == expected else "rejected" if got == "none" else "wrong"] += 1
    return dict(counts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the counts and every utterance's result here")
    parser.add_argument("--keep", type=Path, help="make the audio here and keep it (default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "manifest.yaml"
        path.write_text(yaml.safe_dump(manifest(), allow_unicode=True, sort_keys=False), encoding="utf-8")
        made = subprocess.run([sys.executable, str(ROOT / "scripts/make_fixtures.py"), "--manifest", str(path)],
                              capture_output=True, text=True)
        if made.returncode:
            raise SystemExit(f"scripts/make_fixtures.py failed (exit {made.returncode}): {made.stderr[-2000:]}")
        done = subprocess.run([sys.executable, "-m", "ivr.cli", "replay", "--lang", "ko", "--json", str(path)],
                              capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    results = [row for row in lines if "checks" in row]
    if not results:
        raise SystemExit(f"ivr replay gave no result (exit {done.returncode}): {done.stderr[-2000:]}")
    counts = score(results)
    in_grammar = sum(counts.get(k, 0) for k in ("right", "wrong", "rejected"))
    oos = counts.get("oos_rejected", 0) + counts.get("oos_accepted", 0)
    voices = ", ".join(f"{voice} at {rate} wpm" for _, voice, rate in VOICES)
    print(f"Korean development set: {in_grammar} in-grammar utterances, {oos} out of scope (espeak-ng {voices}); "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"  in grammar: right {counts.get('right', 0)}, wrong {counts.get('wrong', 0)}, "
          f"rejected {counts.get('rejected', 0)}")
    print(f"  out of scope: rejected {counts.get('oos_rejected', 0)}, accepted {counts.get('oos_accepted', 0)}")
    if args.json:
        args.json.write_text(json.dumps({"counts": counts, "results": results}, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
