"""Moonshine tiny (English) on onnxruntime: the call path's English decoder under load.

Whisper's encoder pays for a fixed window (20 s at least on the call path, 30 s for a short turn;
ivr/asr/whisper_batch.py) whatever the speech; Moonshine's encoder follows the audio, so a 3 s turn
costs ~60 ms of one core against ~205 ms for tiny.en on 20 s, a 1.5 s one ~30 ms against ~490 ms on
30 s. On the 547 recorded Asterisk prompts of `bench/whisper_window.py` it was as often right as tiny.en
on 30 s for turns of 2-9 s and as on 20 s for shorter ones, but it has no prompt for the domain's words
and understood fewer of the replay fixtures' free-form requests; so it decodes the turns the ASR queue
made too late for Whisper (WhisperParams.moonshine, WhisperEngine.late_by_queue). A grammar turn is
snapped onto its phrases afterwards, as Whisper's is.

Weights: the tiny-en ONNX Runtime files (MIT) inside the PyPI package `moonshine-voice` 0.1.0 (later
versions download them at run time; this module uses only the files, not the package's code). The
exported decoder attends to at most 384 encoder frames (~9.2 s of audio); longer turns go to Whisper.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import threading
import time
from pathlib import Path

import numpy as np

from ivr.asr.whisper_decoding import repetitive
from ivr.errors import EngineError

log = logging.getLogger(__name__)

PACKAGE = "moonshine_voice"  # the import name of moonshine-voice==0.1.0 (found, never imported)
MODEL_SUBDIR = "assets/tiny-en"
RATE = 16000
# the exported decoder fails beyond 384 encoder frames (~9.2 s): turns up to this go to Moonshine
MAX_TURN_S = 9.0
# Moonshine's own budget for greedy decoding: ~6.5 tokens per second of audio, and a few for the end
TOKENS_PER_S = 6.5
EXTRA_TOKENS = 5
BOS, EOS = 1, 2
HEADS, HEAD_DIM = 8, 36  # tiny's decoder: the shape of its key/value cache

_MODEL: MoonshineModel | None = None
_MODEL_LOCK = threading.Lock()


def model_dir() -> Path | None:
    """The bundled tiny-en directory of the installed `moonshine-voice` package, or None."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_SUBDIR
    return path if (path / "encoder_model.ort").is_file() else None


def load() -> MoonshineModel | None:
    """The process's Moonshine model (loaded once), or None when the package is not installed."""
    global _MODEL
    with _MODEL_LOCK:
        if _MODEL is None:
            path = model_dir()
            if path is None:
                return None
            _MODEL = MoonshineModel(path)
        return _MODEL


def read_tokens(path: Path) -> list[bytes]:
    """The vocabulary of Moonshine's `tokenizer.bin`: each token a length byte, then its bytes (SentencePiece
    pieces, U+2581 for a space; ids 3-258 are single raw bytes)."""
    data = path.read_bytes()
    tokens: list[bytes] = []
    at = 0
    while at < len(data):
        size = data[at]
        tokens.append(data[at + 1 : at + 1 + size])
        at += 1 + size
    if at != len(data):
        raise EngineError(f"{path}: not a Moonshine tokenizer (a token runs past the end)",
                          fix="reinstall moonshine-voice==0.1.0")
    return tokens


class MoonshineModel:
    """Encoder and decoder sessions (one thread each; the ASR pool runs one decode per core, and
    onnxruntime sessions take concurrent `run` calls)."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        started = time.monotonic()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            self._encoder = ort.InferenceSession(str(path / "encoder_model.ort"), options,
                                                 providers=["CPUExecutionProvider"])
            self._decoder = ort.InferenceSession(str(path / "decoder_model_merged.ort"), options,
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:  # a damaged install
            raise EngineError(f"cannot load the Moonshine model in {path} ({type(exc).__name__}: {exc})",
                              fix="reinstall moonshine-voice==0.1.0, or set asr.moonshine: off") from exc
        self._tokens = read_tokens(path / "tokenizer.bin")
        self._past = [i.name for i in self._decoder.get_inputs() if i.name.startswith("past_key_values")]
        self._outputs = [o.name for o in self._decoder.get_outputs()]
        log.info("loaded Moonshine tiny-en in %.1f s", time.monotonic() - started)

    def transcribe(self, audio: np.ndarray) -> tuple[str, float]:
        """(text, confidence) of 16 kHz float audio: greedy decoding; confidence is the mean token
        probability; ('', 0.0) for nothing or a repetition loop."""
        if len(audio) / RATE > MAX_TURN_S:
            raise EngineError(f"{len(audio) / RATE:.1f} s is longer than Moonshine decodes ({MAX_TURN_S:g} s)",
                              fix="decode it with Whisper")
        x = np.ascontiguousarray(audio, dtype=np.float32)[None, :]
        hidden = self._encoder.run(None, {"input_values": x, "attention_mask": np.ones(x.shape, np.int64)})[0]
        mask = np.ones((1, hidden.shape[1]), np.int64)
        cache = {name: np.zeros((1, HEADS, 0, HEAD_DIM), np.float32) for name in self._past}
        ids: list[int] = []
        logprobs: list[float] = []
        token = BOS
        for step in range(int(len(audio) / RATE * TOKENS_PER_S) + EXTRA_TOKENS):
            outs = self._decoder.run(None, {
                "input_ids": np.array([[token]], np.int64), "encoder_hidden_states": hidden,
                "encoder_attention_mask": mask, "use_cache_branch": np.array([step > 0]), **cache,
            })
            logits = outs[0][0, -1].astype(np.float64)
            token = int(logits.argmax())
            top = logits[token]
            logprobs.append(-math.log(float(np.exp(logits - top).sum())))  # log-softmax of the argmax
            # the cross-attention keys/values come from the first step; later steps return them unchanged
            for name, value in zip(self._outputs[1:], outs[1:], strict=True):
                past = name.replace("present", "past_key_values")
                if step == 0 or ".decoder." in name:
                    cache[past] = value
            if token == EOS:
                break
            ids.append(token)
        text = self.detokenize(ids)
        if not text or repetitive(text):
            return "", 0.0
        confidence = math.exp(sum(logprobs) / len(logprobs))
        return text, round(min(1.0, max(0.0, confidence)), 3)

    def detokenize(self, ids: list[int]) -> str:
        data = b"".join(self._tokens[i] for i in ids if 0 <= i < len(self._tokens) and i not in (BOS, EOS))
        return data.decode("utf-8", "replace").replace("\u2581", " ").strip()

