"""Scoring used by `ivr replay`: WER, entity matching, totals."""

from ivr.testing.replay import FAIL, PASS, SKIP, Check, FixtureResult, Totals, entities_match, normalize, word_errors


def test_normalize_drops_case_and_punctuation():
    assert normalize("How much money is left, on my account?") == [
        "how", "much", "money", "is", "left", "on", "my", "account"]


def test_word_errors_counts_substitutions_insertions_deletions():
    assert word_errors("what is my balance", "what is my balance") == (0, 4)
    assert word_errors("what is my balance", "what was my balance") == (1, 4)
    assert word_errors("what is my balance", "what is balance") == (1, 4)
    assert word_errors("what is my balance", "so what is my balance now") == (2, 4)


def test_entities_match_compares_numbers_as_numbers_and_allows_extras():
    assert entities_match({"amount": 50}, {"amount": 50.0, "currency": "USD"})
    assert entities_match({"phone": "5550123"}, {"phone": "5550123"})
    assert not entities_match({"amount": 50}, {"amount": 15})
    assert not entities_match({"gb": 2}, {})


def _result(verdicts, latency=0.0, errors=0, ref=0, reason=""):
    r = FixtureResult(file="f.wav", lang="en", latency_ms=latency, errors=errors, ref_words=ref, reason=reason)
    r.checks = [Check("intent", v) for v in verdicts]
    return r


def test_totals_aggregate_wer_accuracy_and_latency_percentiles():
    results = [
        _result([PASS], latency=100, errors=1, ref=4),
        _result([FAIL], latency=300, errors=3, ref=6),
        _result([PASS], latency=200, errors=0, ref=10),
        _result([], reason="skip: no speech model for 'ru'"),
    ]
    totals = Totals.of(results)
    assert (totals.passed, totals.failed, totals.skipped) == (2, 1, 1)
    assert totals.wer == 4 / 20
    assert totals.intent_accuracy == 2 / 3
    assert totals.latency_p50_ms == 200
    assert totals.latency_p95_ms == 300
    assert totals.skipped_reasons == {"skip: no speech model for 'ru'": 1}
    assert results[3].verdict == SKIP
