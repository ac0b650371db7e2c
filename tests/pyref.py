"""Independent reference for the IQ1_KT / IQ2_KT / IQ3_KT / IQ4_KT formats, written
from the format description (docs in /work/shared/notes/kt-formats.md; IQ1_KT from
issue #16's formula), not from the package.  Plain Python + numpy; nothing here imports ``iqkt``.

Contents
--------
- ``trellis_scalar(seed, steps)`` / ``trellis(seeds, steps)``: the integer trellis.
- ``codebook(offset, steps, count)``: table of trellis groups for consecutive indices.
- ``row_size(type, n)``.
- ``dequantize(q, type, n, inference=False)``: bytes -> float32, float order
  ``float32(d * block_scale) * value``.
- ``rel_err`` / ``rel_err_rows``: the (imatrix-)weighted relative squared error.
"""
from __future__ import annotations

import functools

import numpy as np

TYPES = ("iq2_kt", "iq3_kt", "iq4_kt", "iq1_kt")
MULT = 0xCBAC1FED
MASK = 0x3F3F3F3F
M32 = 0xFFFFFFFF
OFFSET = 4096
OFFSET_IQ4_ALT = 4096 + 32768
IQ2_TABLE = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)
BLOCK_BYTES = {"iq2_kt": 68, "iq3_kt": 100, "iq4_kt": 128, "iq1_kt": 56}
INFERENCE_FACTOR = {"iq2_kt": 1.05, "iq3_kt": 1.0, "iq4_kt": 1.0, "iq1_kt": 1.0}


# --------------------------------------------------------------------------- trellis
def trellis_scalar(seed: int, steps: int) -> list[int]:
    """Pure-Python trellis: ``steps`` values from ``seed`` (first value after the
    first multiply)."""
    state = seed & M32
    out = []
    for _ in range(steps):
        state = (state * MULT) & M32
        s = state & MASK
        out.append((s & 0xFF) + ((s >> 8) & 0xFF) + ((s >> 16) & 0xFF) + ((s >> 24) & 0xFF) - 126)
    return out


def trellis(seeds, steps: int) -> np.ndarray:
    """Vectorised trellis: int8 array (len(seeds), steps)."""
    state = np.asarray(seeds, dtype=np.uint64).reshape(-1) & np.uint64(M32)
    out = np.empty((state.size, steps), dtype=np.int8)
    for k in range(steps):
        state = (state * np.uint64(MULT)) & np.uint64(M32)
        s = state & np.uint64(MASK)
        v = (s & np.uint64(0xFF)) + ((s >> np.uint64(8)) & np.uint64(0xFF)) \
            + ((s >> np.uint64(16)) & np.uint64(0xFF)) + ((s >> np.uint64(24)) & np.uint64(0xFF))
        out[:, k] = (v.astype(np.int64) - 126).astype(np.int8)
    return out


@functools.lru_cache(maxsize=None)
def codebook(offset: int, steps: int, count: int) -> np.ndarray:
    """Trellis values for indices 0..count-1 with ``seed = index + offset``."""
    tab = trellis(np.arange(count, dtype=np.uint64) + np.uint64(offset), steps)
    tab.setflags(write=False)
    return tab


# --------------------------------------------------------------------------- sizes
def norm_type(t: str) -> str:
    t = str(t).lower()
    if t not in TYPES:
        raise ValueError(f"unknown type {t!r}")
    return t


def row_size(t: str, n: int) -> int:
    t = norm_type(t)
    if n <= 0 or n % 256:
        raise ValueError("n must be a positive multiple of 256")
    return 4 + BLOCK_BYTES[t] * (n // 256)


# --------------------------------------------------------------------------- decoders
def _split(q, t: str, n: int):
    q = np.ascontiguousarray(np.asarray(q, dtype=np.uint8))
    rs = row_size(t, n)
    q = q.reshape(-1, rs)
    rows = q.shape[0]
    d = q[:, :4].copy().view("<f4").reshape(rows).astype(np.float32)
    blocks = q[:, 4:].reshape(rows, n // 256, BLOCK_BYTES[t])
    return d, blocks, rows


def _nibble_scales(sc4: np.ndarray) -> np.ndarray:
    """scales[4] bytes -> 8 nibble codes: block b<4 low nibble of scales[b],
    block b>=4 high nibble of scales[b-4].  sc4: (..., 4) uint8 -> (..., 8)."""
    lo = sc4 & 0x0F
    hi = sc4 >> 4
    return np.concatenate([lo, hi], axis=-1).astype(np.int64)


def _mul_f32(d: np.ndarray, s: np.ndarray) -> np.ndarray:
    """float32(d * s) with d float32 (rows,) and s integer (rows, nsb, 8)."""
    return (d[:, None, None] * s.astype(np.float32)).astype(np.float32)


def dequantize(q, t: str, n: int, inference: bool = False) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        return _dequantize(q, t, n, inference)


def _dequantize(q, t: str, n: int, inference: bool) -> np.ndarray:
    t = norm_type(t)
    d, blk, rows = _split(q, t, n)
    nsb = n // 256
    if inference and t == "iq2_kt":
        d = (d * np.float32(1.05)).astype(np.float32)  # only ~1.05x is specified
    if t in ("iq2_kt", "iq3_kt"):
        idx = blk[..., 4:68].copy().view("<u2").astype(np.int64)  # (rows, nsb, 32)
        vals = codebook(OFFSET, 8, 65536)[idx]                    # (rows, nsb, 32, 8)
        vals = vals.reshape(rows, nsb, 8, 32).astype(np.float32)  # block b = groups 4b..4b+3
        scale = _scales(d, blk, t)                                # (rows, nsb, 8)
        if t == "iq2_kt":
            out = scale[..., None] * vals
        else:
            qh = blk[..., 68:100].astype(np.int64)                # (rows, nsb, 32): position p
            b = np.arange(8)[:, None]
            neg = ((qh[:, :, None, :] >> b) & 1).astype(bool)     # (rows, nsb, 8, 32)
            mag = scale[..., None] * np.abs(vals)
            out = np.where(neg, -mag, mag)
    elif t == "iq1_kt":
        sh = blk[..., 0:8].astype(np.int64)                       # (rows, nsb, 8)
        ql = blk[..., 8:40].astype(np.int64)                      # (rows, nsb, 32)
        qh = blk[..., 40:56].astype(np.int64)                     # (rows, nsb, 16)
        j = np.arange(32)
        ib, ig = j // 4, j % 4
        idx = (ql | ((qh[..., j % 16] << (8 - 4 * (j // 16))) & 0xF00)
               | ((sh[..., ib] << (8 - ig)) & 0x1000))            # (rows, nsb, 32)
        vals = codebook(OFFSET, 8, 8192)[idx].reshape(rows, nsb, 8, 32).astype(np.float32)
        out = _scales(d, blk, t)[..., None] * vals
    else:
        w = blk[..., 0:32].copy().view("<u4").astype(np.int64)   # (rows, nsb, 8)
        ql = blk[..., 32:96].astype(np.int64)                     # (rows, nsb, 64)
        qh = blk[..., 96:128].astype(np.int64)                    # (rows, nsb, 32)
        qh_nib = np.concatenate([qh & 0x0F, qh >> 4], axis=-1)   # (rows, nsb, 64): jj<32 low, jj>=32 high
        j = np.arange(8)
        hi3 = (w[..., :, None] >> (8 + 3 * j)) & 7               # (rows, nsb, 8 blocks, 8 groups)
        idx = ql.reshape(rows, nsb, 8, 8) | (qh_nib.reshape(rows, nsb, 8, 8) << 8) | (hi3 << 12)
        flag = (w & 1).astype(bool)                               # (rows, nsb, 8)
        v0 = codebook(OFFSET, 4, 32768)[idx]                      # (rows, nsb, 8, 8, 4)
        v1 = codebook(OFFSET_IQ4_ALT, 4, 32768)[idx]
        vals = np.where(flag[..., None, None], v1, v0).astype(np.float32)
        scale = _scales(d, blk, t)
        out = scale[..., None, None] * vals.reshape(rows, nsb, 8, 8, 4)
    return np.ascontiguousarray(out.astype(np.float32).reshape(rows, n))


def _scales(d: np.ndarray, blk: np.ndarray, t: str) -> np.ndarray:
    """float32(d * block scale value): (rows, nsb, 8)."""
    if t == "iq2_kt":
        return _mul_f32(d, np.asarray(IQ2_TABLE, dtype=np.int64)[_nibble_scales(blk[..., 0:4])])
    if t == "iq3_kt":
        return _mul_f32(d, _nibble_scales(blk[..., 0:4]))
    if t == "iq1_kt":
        return _mul_f32(d, np.asarray(IQ2_TABLE, dtype=np.int64)[blk[..., 0:8].astype(np.int64) & 15])
    w = blk[..., 0:32].copy().view("<u4").astype(np.int64)
    return _mul_f32(d, ((w & 0xFF) >> 1) - 64)


def block_scales(q, t: str, n: int, inference: bool = False) -> np.ndarray:
    """Float scale of every 32-weight block (weight = scale * trellis value):
    (rows, n // 32) float32."""
    t = norm_type(t)
    d, blk, rows = _split(q, t, n)
    if inference and t == "iq2_kt":
        d = (d * np.float32(1.05)).astype(np.float32)
    return _scales(d, blk, t).reshape(rows, n // 32)


def dequantize_scalar(q, t: str, n: int) -> np.ndarray:
    """Slow, loop-based decoder written independently of ``dequantize`` (used to
    cross-check the vectorised one on a few rows)."""
    import struct

    t = norm_type(t)
    rs = row_size(t, n)
    q = bytes(np.asarray(q, dtype=np.uint8).reshape(-1))
    rows = len(q) // rs
    out = np.zeros((rows, n), dtype=np.float32)
    f32 = np.float32
    for r in range(rows):
        row = q[r * rs:(r + 1) * rs]
        (d,) = struct.unpack("<f", row[:4])
        d = f32(d)
        for sb in range(n // 256):
            b0 = 4 + sb * BLOCK_BYTES[t]
            bb = row[b0:b0 + BLOCK_BYTES[t]]
            base = sb * 256
            if t in ("iq2_kt", "iq3_kt"):
                for g in range(32):
                    blk = g // 4
                    code = (bb[blk % 4] >> (4 * (blk // 4))) & 15
                    (index,) = struct.unpack("<H", bb[4 + 2 * g:6 + 2 * g])
                    vals = trellis_scalar(index + OFFSET, 8)
                    if t == "iq2_kt":
                        s = f32(d * f32(IQ2_TABLE[code]))
                        for k in range(8):
                            out[r, base + 8 * g + k] = s * f32(vals[k])
                    else:
                        s = f32(d * f32(code))
                        for k in range(8):
                            p = (8 * g + k) % 32
                            m = s * f32(abs(vals[k]))
                            out[r, base + 8 * g + k] = -m if (bb[68 + p] >> blk) & 1 else m
            elif t == "iq1_kt":
                sh, ql, qh = bb[0:8], bb[8:40], bb[40:56]
                for ib in range(8):
                    s = f32(d * f32(IQ2_TABLE[sh[ib] & 15]))
                    for ig in range(4):
                        jg = 4 * ib + ig
                        hi4 = (qh[jg % 16] & 15) if jg < 16 else (qh[jg % 16] >> 4)
                        index = ql[jg] + 256 * hi4 + 4096 * ((sh[ib] >> (4 + ig)) & 1)
                        vals = trellis_scalar(index + OFFSET, 8)
                        for k in range(8):
                            out[r, base + 32 * ib + 8 * ig + k] = s * f32(vals[k])
            else:
                words = struct.unpack("<8I", bb[:32])
                for blk in range(8):
                    w = words[blk]
                    ls = ((w & 0xFF) >> 1) - 64
                    off = OFFSET_IQ4_ALT if (w & 1) else OFFSET
                    s = f32(d * f32(ls))
                    for j in range(8):
                        jj = 8 * blk + j
                        nib = (bb[96 + jj] & 15) if jj < 32 else (bb[96 + jj - 32] >> 4)
                        index = bb[32 + jj] | (nib << 8) | (((w >> (8 + 3 * j)) & 7) << 12)
                        vals = trellis_scalar(index + off, 4)
                        for k in range(4):
                            out[r, base + 32 * blk + 4 * j + k] = s * f32(vals[k])
    return out


def row_scales(q, t: str, n: int) -> np.ndarray:
    d, _, _ = _split(q, t, n)
    return d


# --------------------------------------------------------------------------- quality metric
def _weights(x: np.ndarray, imatrix) -> np.ndarray:
    if imatrix is None:
        return np.ones(x.shape[-1], dtype=np.float64)
    return np.asarray(imatrix, dtype=np.float64).reshape(-1)


def err_terms(x, y, imatrix=None):
    """Per-row numerator Σ w (x-y)² and denominator Σ w x² (float64)."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    y = np.atleast_2d(np.asarray(y, dtype=np.float64))
    w = _weights(x, imatrix)
    num = ((x - y) ** 2 * w).sum(axis=1)
    den = (x ** 2 * w).sum(axis=1)
    return num, den


def rel_err(x, y, imatrix=None) -> float:
    """Σ_rows Σ_j w_j (x-y)² / Σ_rows Σ_j w_j x²; 0 when both are 0."""
    num, den = err_terms(x, y, imatrix)
    N, D = float(num.sum()), float(den.sum())
    if D == 0.0:
        return 0.0 if N == 0.0 else float("inf")
    return N / D


def rel_err_rows(x, y, imatrix=None) -> np.ndarray:
    """Per-row relative error (0 for a row with zero denominator and numerator)."""
    num, den = err_terms(x, y, imatrix)
    out = np.zeros_like(num)
    nz = den > 0
    out[nz] = num[nz] / den[nz]
    out[~nz & (num > 0)] = np.inf
    return out


def mul_mat_exact(q, t: str, n: int, v) -> np.ndarray:
    """float64 product of the inference weights with v (K,) or (B, K)."""
    t = norm_type(t)
    w = dequantize(q, t, n).astype(np.float64) * INFERENCE_FACTOR[t]
    v = np.asarray(v, dtype=np.float64)
    return v @ w.T if v.ndim == 2 else w @ v


def int8_activations(v) -> np.ndarray:
    """The reference's per-32 int8 activation scheme, as float64 values: each
    block of 32 gets d = amax / 127 (float32) and values round(x / d) in
    [-127, 127] (half away from zero), so x ~ d * q."""
    v = np.atleast_2d(np.asarray(v, dtype=np.float32))
    blocks = v.reshape(v.shape[0], -1, 32)
    d = (np.abs(blocks).max(axis=2, keepdims=True) / np.float32(127)).astype(np.float64)
    safe = np.where(d > 0, d, 1.0)
    r = blocks.astype(np.float64) / safe
    qv = np.clip(np.sign(r) * np.floor(np.abs(r) + 0.5), -127, 127)
    return (qv * d).reshape(v.shape)


def mul_mat_int8_model(q, t: str, n: int, v) -> np.ndarray:
    """float64 product of the inference weights with v's per-32 int8 model
    (int8_activations): what an exact-integer int8 kernel should give."""
    t = norm_type(t)
    w = dequantize(q, t, n).astype(np.float64) * INFERENCE_FACTOR[t]
    va = int8_activations(v)
    return va @ w.T if np.ndim(v) == 2 else (va @ w.T)[0]


def rel_l2(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    nb = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / nb) if nb > 0 else float(np.linalg.norm(a - b))


def int8_error_bound(q, t: str, n: int, v, exact=None) -> float:
    """The accuracy bound of precision="int8": the per-32 int8 model's relative
    L2 error against the exact product, plus float-rounding slack (the kernel
    may round a value the model puts on a tie the other way, and sums in float)."""
    if exact is None:
        exact = mul_mat_exact(q, t, n, v)
    return rel_l2(mul_mat_int8_model(q, t, n, v), exact) * (1 + 1e-3) + 1e-6


def summation_order_ratio(got, ref, q, t, n, v, prec="int16"):
    """Largest |got - ref| over outputs, in units of a rounding bound.

    Every variant computes each block's integer dot exactly, in int32 lane
    partials of at most 8 weights, and then sums float(partial) * scale over
    at most m = n/4 partials in an order of its own (vector lanes).  A partial
    is bounded by sum over its weights of (|value| + 252) * |x16| (the -126 bias
    of the trellis values may be applied per lane), so each result is within
    gamma_{m+1} * M of the exact one, with M = sum_k (|w_k| + 252 |s_k|) |x_k|
    (s_k: the scale of k's block) and gamma_j = j * 2^-24; two variants differ by
    at most twice that.  A row whose terms cancel can legitimately differ by much
    more than 1e-5 of its small result, but never by more than this bound."""
    w = dequantize(q, t, n, inference=True).astype(np.float64)
    s = np.repeat(np.abs(block_scales(q, t, n, inference=True).astype(np.float64)), 32, axis=1)
    v = np.atleast_2d(np.asarray(v, dtype=np.float64))
    mag = np.abs(v) @ (np.abs(w) + 252 * s).T
    # activations are x quantized per 32: |s * xq| <= |x| + s / 2, s = amax / 8000 (int16) or / 127 (int8)
    slack = 1.001 if prec != "int8" else 1.01
    bound = 2 * (n // 4 + 1) * 2.0**-24 * mag * slack
    diff = np.abs(np.atleast_2d(np.asarray(got, np.float64)) - np.atleast_2d(np.asarray(ref, np.float64)))
    return float((diff / np.maximum(bound, 1e-300)).max())
