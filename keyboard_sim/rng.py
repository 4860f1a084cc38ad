"""Counter-based random numbers: every draw is a pure function of (record key, position, stream).

A record's key comes from the run seed and a stable hash of the record's id (as kebbie derives a
sentence's seed from its sha256), and each random number from that key, the character position
and a stream number, through the splitmix64 finaliser (Steele, Lea & Flood 2014). So a record's
noise does not depend on which chunk or worker it lands in, or on what came before it, and whole
chunks are drawn at once with numpy instead of one generator per record.
"""

from __future__ import annotations

import hashlib

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_POS = np.uint64(0xD1B54A32D192ED03)
_STREAM = np.uint64(0xABC98388FB8FAC03)
_BITS = 21  # each 64-bit hash yields three 21-bit uniforms
_MASK = np.uint64((1 << _BITS) - 1)
_SCALE = np.float32(1.0 / (1 << _BITS))


def record_key(seed: int, record_id: str) -> int:
    """64-bit key of one record: blake2b of the run seed and the record id."""
    h = hashlib.blake2b(f"{int(seed)}\x1f{record_id}".encode("utf-8", "surrogatepass"),
                        digest_size=8)
    return int.from_bytes(h.digest(), "little")


def record_keys(seed: int, ids: list[str]) -> np.ndarray:
    """Keys of many records as a uint64 array."""
    return np.array([record_key(seed, i) for i in ids], dtype=np.uint64)


def _mix(z: np.ndarray) -> np.ndarray:
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def hash64(keys: np.ndarray, positions: np.ndarray, stream: int) -> np.ndarray:
    """One 64-bit hash per element of (keys, positions) for a stream number."""
    with np.errstate(over="ignore"):
        x = keys ^ (positions.astype(np.uint64) * _POS + np.uint64(stream) * _STREAM)
        return _mix(x)


def uniforms3(keys: np.ndarray, positions: np.ndarray, stream: int):
    """Three independent uniforms in [0, 1) per element (21-bit resolution, float32: exact)."""
    h = hash64(keys, positions, stream)
    a = (h & _MASK).astype(np.float32) * _SCALE
    b = ((h >> np.uint64(_BITS)) & _MASK).astype(np.float32) * _SCALE
    c = ((h >> np.uint64(2 * _BITS)) & _MASK).astype(np.float32) * _SCALE
    return a, b, c


def normals2(keys: np.ndarray, positions: np.ndarray, stream: int):
    """Two independent standard normals per element (Box-Muller), plus a spare uniform."""
    a, b, c = uniforms3(keys, positions, stream)
    # float32 is ample for touch noise and twice as fast for the transcendental functions.
    r = np.sqrt(np.float32(-2.0) * np.log1p(-a))  # 1 - a is in (0, 1]
    theta = np.float32(2.0 * np.pi) * b
    return r * np.cos(theta), r * np.sin(theta), c
