"""G.711 u-law and a-law (ITU-T G.711), the codecs of SIP trunks, to and from 8 kHz slin.

The bridge itself never sees G.711 (Asterisk transcodes to slin for AudioSocket); the SIP test
caller needs it to speak fixtures into a trunk and to decode what it hears back. Tables are built
once from the standard's segment rules, so encode and decode are table look-ups. Decoding is
bit-exact; encoding picks the code that decodes nearest to the sample (rounding, where the
reference encoder truncates: at most one step apart, never a louder error).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Law = Literal["ulaw", "alaw"]
ULAW_BIAS = 0x84
ULAW_CLIP = 32635


def _ulaw_decode_table() -> np.ndarray:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS
    return np.where(codes & 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_decode_table() -> np.ndarray:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(codes & 0x80, magnitude, -magnitude).astype(np.int16)


def _encode_table(decode: np.ndarray) -> np.ndarray:
    """For each 16-bit sample, the code whose decoded value is nearest (what the segment rules give)."""
    order = np.argsort(decode.astype(np.int32), kind="stable")
    values = decode[order].astype(np.int32)
    samples = np.arange(-32768, 32768, dtype=np.int32)
    right = np.clip(np.searchsorted(values, samples), 1, len(values) - 1)
    left = right - 1
    nearest = np.where(samples - values[left] <= values[right] - samples, left, right)
    return order[nearest].astype(np.uint8)


_DECODE = {"ulaw": _ulaw_decode_table(), "alaw": _alaw_decode_table()}
_ENCODE = {law: _encode_table(table) for law, table in _DECODE.items()}


def encode(pcm: bytes, law: Law) -> bytes:
    """8 kHz slin (16-bit little-endian) -> one G.711 byte per sample."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.int32) + 32768
    return _ENCODE[law][samples].tobytes()


def decode(data: bytes, law: Law) -> bytes:
    """G.711 bytes -> 8 kHz slin (16-bit little-endian)."""
    return _DECODE[law][np.frombuffer(data, dtype=np.uint8)].astype("<i2").tobytes()
