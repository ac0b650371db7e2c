"""Vectorised numpy quantizers for ggml's K-quants (Q2_K ... Q6_K) and IQ4_NL / IQ4_XS.

The gguf package can decode these types but not encode them, and no maintained PyPI library
encodes them without a large native build, so iqkt writes them itself. The byte layouts are
the inverse of the layouts the gguf package's dequantizers read (the tests check every type
against that independent decoder); the fitting is ours: per group of 16 or 32 weights, try a
few scales around the range-filling one, round, solve the (weighted) least-squares scale (and
offset) for those levels, keep the best; then quantize the group scales to the format's
integer scales and round the weights again against the final scales.

`quantize(x, type, imatrix=None)` -> uint8 (rows, row_bytes); rows must hold whole blocks.
`dequantize` is not here: the gguf package's decoder is the reference.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

__all__ = ["TYPES", "quantize", "row_size", "block_size", "bits_per_weight"]

QK_K = 256
# IQ4_NL's 16 non-linear levels (a fact of the format, shared by IQ4_XS).
IQ4_LEVELS = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113],
                      dtype=np.float32)


@dataclass(frozen=True)
class _Traits:
    block: int      # weights per block
    nbytes: int     # bytes per block
    group: int      # weights sharing one fitted scale


# One table of format facts (block size, block bytes, scale group).
_TRAITS = {
    "q2_k": _Traits(QK_K, 84, 16),
    "q3_k": _Traits(QK_K, 110, 16),
    "q4_k": _Traits(QK_K, 144, 32),
    "q5_k": _Traits(QK_K, 176, 32),
    "q6_k": _Traits(QK_K, 210, 16),
    "iq4_nl": _Traits(32, 18, 32),
    "iq4_xs": _Traits(QK_K, 136, 32),
}
TYPES = tuple(_TRAITS)


def block_size(t: str) -> int:
    return _TRAITS[t].block


def row_size(t: str, n: int) -> int:
    tr = _TRAITS[t]
    if n % tr.block:
        raise ValueError(f"{t} rows must be a multiple of {tr.block} weights, not {n}")
    return n // tr.block * tr.nbytes


def bits_per_weight(t: str) -> float:
    tr = _TRAITS[t]
    return 8.0 * tr.nbytes / tr.block


# ----------------------------------------------------------------------------------------------
# Fitting one scale (and offset) per group. x, w: (..., g); reductions over the last axis.
# ----------------------------------------------------------------------------------------------

def _sum(a):
    return a.sum(axis=-1, dtype=np.float32)


def _fit_symmetric(x, w, lo: int, hi: int, tries=range(-8, 9), step=0.1):
    """Scale s per group for levels q in [lo, hi] (x ~ s*q), best weighted error over the tried
    inverse scales. The largest |x| is mapped towards `lo` (the longer side; s may be negative)."""
    idx = np.abs(x).argmax(axis=-1)[..., None]
    vmax = np.take_along_axis(x, idx, axis=-1)[..., 0]
    safe = np.where(vmax == 0, 1, vmax)
    best_s = np.zeros(vmax.shape, np.float32)
    best_gain = np.full(vmax.shape, -1.0, np.float32)
    for t in tries:
        iscale = (lo - t * step * np.sign(lo)) / safe
        q = np.clip(np.rint(x * iscale[..., None]), lo, hi)
        wq = w * q
        sxq = _sum(wq * x)
        sqq = _sum(wq * q)
        ok = sqq > 0
        gain = np.where(ok, sxq * sxq / np.where(ok, sqq, 1), 0)  # error = sum w x^2 - gain
        better = gain > best_gain
        best_gain = np.where(better, gain, best_gain)
        best_s = np.where(better, np.where(ok, sxq / np.where(ok, sqq, 1), 0), best_s)
    return np.where(vmax == 0, 0, best_s).astype(np.float32)


def _fit_affine(x, w, nmax: int, tries=range(-6, 13), step=0.1):
    """(s, m) per group with s >= 0, m >= 0 for x ~ s*q - m, q in [0, nmax]: levels from each
    tried inverse scale, then the weighted least-squares s and m for them (m clipped at 0, as
    the formats store the minimum's magnitude only)."""
    xmin = np.minimum(x.min(axis=-1), 0)
    xmax = x.max(axis=-1)
    rng = xmax - xmin
    safe = np.where(rng > 0, rng, 1)
    sw = _sum(w)
    best_s = np.zeros(xmax.shape, np.float32)
    best_m = -xmin.astype(np.float32)
    best_err = np.full(xmax.shape, np.inf, np.float32)
    for t in tries:
        iscale = (nmax + t * step) / safe
        q = np.clip(np.rint((x - xmin[..., None]) * iscale[..., None]), 0, nmax)
        wq = w * q
        sq, sqq, sx, sqx = _sum(wq), _sum(wq * q), _sum(w * x), _sum(wq * x)
        det = sw * sqq - sq * sq
        okd = det > 0
        det = np.where(okd, det, 1)
        s = np.where(okd, (sw * sqx - sq * sx) / det, 0)
        b = np.where(okd, (sqq * sx - sq * sqx) / det, xmin)
        pos = b > 0  # the offset must be <= 0: refit the scale alone
        s = np.where(pos, np.where(sqq > 0, sqx / np.where(sqq > 0, sqq, 1), 0), s)
        b = np.where(pos, 0, b)
        s = np.maximum(s, 0)
        r = s[..., None] * q + b[..., None] - x
        err = _sum(w * r * r)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_s = np.where(better, s, best_s)
        best_m = np.where(better, -b, best_m)
    return best_s.astype(np.float32), best_m.astype(np.float32)


def _fit_levels(x, w, levels: np.ndarray = IQ4_LEVELS, tries=range(-7, 8), step=1.0):
    """Scale per group for the IQ4 level table (x ~ s*levels[k]); the largest |x| is mapped
    near the table's first (largest-magnitude) level."""
    idx = np.abs(x).argmax(axis=-1)[..., None]
    vmax = np.take_along_axis(x, idx, axis=-1)[..., 0]
    safe = np.where(vmax == 0, 1, vmax)
    best_s = np.zeros(vmax.shape, np.float32)
    best_gain = np.full(vmax.shape, -1.0, np.float32)
    for t in tries:
        iscale = (levels[0] + t * step) / safe
        q = levels[_nearest_iq4(x * iscale[..., None])]
        wq = w * q
        sxq, sqq = _sum(wq * x), _sum(wq * q)
        ok = sqq > 0
        gain = np.where(ok, sxq * sxq / np.where(ok, sqq, 1), 0)
        better = gain > best_gain
        best_gain = np.where(better, gain, best_gain)
        best_s = np.where(better, np.where(ok, sxq / np.where(ok, sqq, 1), 0), best_s)
    return np.where(vmax == 0, 0, best_s).astype(np.float32)


# Nearest IQ4 level by table: the level midpoints are multiples of 1/2, so floor(2v) decides the
# nearest level exactly (ties go up); 5x faster than np.searchsorted. |v| beyond the table clips
# to the end levels.
_LUT_HALF = 512
_IQ4_LUT = np.searchsorted(IQ4_LEVELS[1:] + IQ4_LEVELS[:-1], np.arange(-_LUT_HALF, _LUT_HALF),
                           side="right").astype(np.uint8)


def _nearest_iq4(v):
    k = np.clip(np.floor(2 * v), -_LUT_HALF, _LUT_HALF - 1).astype(np.intp)
    return _IQ4_LUT[k + _LUT_HALF]


def _f16(a) -> np.ndarray:
    """float16 of `a`, and the float32 value it stands for."""
    with np.errstate(over="ignore"):  # overflow -> inf, reported by _check_finite
        h = np.asarray(a, dtype=np.float32).astype(np.float16)
    return h, h.astype(np.float32)


def _div(a, b):
    return np.where(b != 0, a / np.where(b != 0, b, 1), 0)


def _super_scale(s, qmax: int, signed: bool):
    """Quantize per-group scales s (nb, G) to integers with one float16 super-scale per block.
    signed: the largest |s| maps to -(qmax+1) (range [-(qmax+1), qmax]); else s >= 0 -> [0, qmax]."""
    if signed:
        idx = np.abs(s).argmax(axis=-1)[..., None]
        smax = np.take_along_axis(s, idx, axis=-1)[..., 0]
        d_h, d = _f16(-smax / (qmax + 1))
        sc = np.clip(np.rint(_div(s, d[..., None])), -(qmax + 1), qmax)
    else:
        d_h, d = _f16(s.max(axis=-1) / qmax)
        sc = np.clip(np.rint(_div(s, d[..., None])), 0, qmax)
    return d_h, d, sc.astype(np.int32)


def _weights(x, imatrix, shape):
    if imatrix is None:
        return np.ones(shape, np.float32)
    return np.broadcast_to(np.asarray(imatrix, np.float32).reshape(1, -1), x.shape).reshape(shape)


def _check_finite(name, *arrays):
    for a in arrays:
        if not np.isfinite(a.astype(np.float32)).all():
            raise ValueError(f"{name}: weights too large for its float16 scales")


# ----------------------------------------------------------------------------------------------
# Per-type encoders: x (nb, 256) float32, w same shape -> uint8 (nb, nbytes)
# ----------------------------------------------------------------------------------------------

def _pack_2bit(L):
    """2-bit levels (nb, 256) -> (nb, 64): byte h*32+j holds elements h*128 + s*32 + j at bits 2s."""
    L = L.reshape(-1, 2, 4, 32).astype(np.uint8)
    return (L[:, :, 0] | (L[:, :, 1] << 2) | (L[:, :, 2] << 4) | (L[:, :, 3] << 6)).reshape(-1, 64)


def _pack_4bit_32(L):
    """4-bit levels (nb, 256) -> (nb, 128): byte c*32+j holds elements 64c+j (low) and 64c+32+j (high)."""
    L = L.reshape(-1, 4, 2, 32).astype(np.uint8)
    return (L[:, :, 0] | (L[:, :, 1] << 4)).reshape(-1, 128)


def _pack_bits(B):
    """1-bit planes (nb, 256) -> (nb, 32): byte j holds element s*32+j at bit s."""
    B = B.reshape(-1, 8, 32).astype(np.uint8)
    out = np.zeros((B.shape[0], 32), np.uint8)
    for s in range(8):
        out |= B[:, s] << s
    return out


def _pack_scales_6bit_k(sc, mn):
    """Q4_K/Q5_K: 8 six-bit scales and 8 six-bit minima -> 12 bytes."""
    sc = sc.astype(np.uint8)
    mn = mn.astype(np.uint8)
    out = np.empty((sc.shape[0], 12), np.uint8)
    out[:, 0:4] = sc[:, 0:4] | ((sc[:, 4:8] >> 4) << 6)
    out[:, 4:8] = mn[:, 0:4] | ((mn[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (sc[:, 4:8] & 15) | ((mn[:, 4:8] & 15) << 4)
    return out


def _affine_k(x, w, nmax: int, group: int, scale_max: int):
    """Shared by Q2_K, Q4_K, Q5_K: per-group (s, m), then integer scales and minima under two
    float16 super-scales, then levels against the final values. Returns d_h, dmin_h, sc, mn, L."""
    nb = x.shape[0]
    xg, wg = x.reshape(nb, -1, group), w.reshape(nb, -1, group)
    s, m = _fit_affine(xg, wg, nmax)
    d_h, d, sc = _super_scale(s, scale_max, signed=False)
    dm_h, dm, mn = _super_scale(m, scale_max, signed=False)
    _check_finite("scale", d, dm)
    ds = (d[:, None] * sc)[..., None]
    ms = (dm[:, None] * mn)[..., None]
    L = np.clip(np.rint(_div(xg + ms, ds)), 0, nmax).astype(np.uint8)
    return d_h, dm_h, sc, mn, L.reshape(nb, QK_K)


def _enc_q2_k(x, w):
    d_h, dm_h, sc, mn, L = _affine_k(x, w, 3, 16, 15)
    scales = (sc | (mn << 4)).astype(np.uint8)
    return np.concatenate([scales, _pack_2bit(L), d_h.view(np.uint8).reshape(-1, 2),
                           dm_h.view(np.uint8).reshape(-1, 2)], axis=1)


def _enc_q4_k(x, w):
    d_h, dm_h, sc, mn, L = _affine_k(x, w, 15, 32, 63)
    return np.concatenate([d_h.view(np.uint8).reshape(-1, 2), dm_h.view(np.uint8).reshape(-1, 2),
                           _pack_scales_6bit_k(sc, mn), _pack_4bit_32(L)], axis=1)


def _enc_q5_k(x, w):
    d_h, dm_h, sc, mn, L = _affine_k(x, w, 31, 32, 63)
    return np.concatenate([d_h.view(np.uint8).reshape(-1, 2), dm_h.view(np.uint8).reshape(-1, 2),
                           _pack_scales_6bit_k(sc, mn), _pack_bits(L >> 4), _pack_4bit_32(L & 15)], axis=1)


def _symmetric_k(x, w, lo: int, hi: int, group: int, scale_max: int):
    """Shared by Q3_K and Q6_K: signed group scales under one float16 super-scale; levels q in
    [lo, hi] against the final scales. Returns d_h, sc (signed ints), q (signed ints)."""
    nb = x.shape[0]
    xg, wg = x.reshape(nb, -1, group), w.reshape(nb, -1, group)
    s = _fit_symmetric(xg, wg, lo, hi)
    d_h, d, sc = _super_scale(s, scale_max, signed=True)
    _check_finite("scale", d)
    ds = (d[:, None] * sc)[..., None]
    q = np.clip(np.rint(_div(xg, ds)), lo, hi).astype(np.int32)
    return d_h, sc, q.reshape(nb, QK_K)


def _enc_q3_k(x, w):
    d_h, sc, q = _symmetric_k(x, w, -4, 3, 16, 31)
    L = (q + 4).astype(np.uint8)                    # 0..7: low 2 bits + "no -4 offset" bit
    u = (sc + 32).astype(np.uint8)                  # 6-bit scales stored with +32
    lo4 = u & 15
    hi2 = u >> 4
    scales = np.empty((x.shape[0], 12), np.uint8)
    scales[:, 0:8] = lo4[:, 0:8] | (lo4[:, 8:16] << 4)
    scales[:, 8:12] = hi2[:, 0:4] | (hi2[:, 4:8] << 2) | (hi2[:, 8:12] << 4) | (hi2[:, 12:16] << 6)
    return np.concatenate([_pack_bits(L >> 2), _pack_2bit(L & 3), scales,
                           d_h.view(np.uint8).reshape(-1, 2)], axis=1)


def _enc_q6_k(x, w):
    d_h, sc, q = _symmetric_k(x, w, -32, 31, 16, 127)
    L = (q + 32).astype(np.uint8).reshape(-1, 2, 2, 64)   # half, nibble plane, 64
    ql = (L[:, :, 0] & 15) | ((L[:, :, 1] & 15) << 4)     # (nb, 2, 64)
    H = (L >> 4).reshape(-1, 2, 4, 32)                    # half, 2-bit plane, 32
    qh = H[:, :, 0] | (H[:, :, 1] << 2) | (H[:, :, 2] << 4) | (H[:, :, 3] << 6)
    return np.concatenate([ql.reshape(-1, 128), qh.reshape(-1, 64), sc.astype(np.int8).view(np.uint8),
                           d_h.view(np.uint8).reshape(-1, 2)], axis=1)


def _enc_iq4_nl(x, w):
    nb = x.shape[0]
    s = _fit_levels(x, w, IQ4_LEVELS)
    d_h, d = _f16(s)
    _check_finite("scale", d)
    L = _nearest_iq4(_div(x, d[:, None])).reshape(nb, 2, 16)
    return np.concatenate([d_h.view(np.uint8).reshape(-1, 2), L[:, 0] | (L[:, 1] << 4)], axis=1)


def _enc_iq4_xs(x, w):
    nb = x.shape[0]
    xg, wg = x.reshape(nb, 8, 32), w.reshape(nb, 8, 32)
    s = _fit_levels(xg, wg, IQ4_LEVELS)
    d_h, sc_signed = _super_scale_xs(s)
    d = d_h.astype(np.float32)
    ds = d[:, None] * sc_signed
    L = _nearest_iq4(_div(xg, ds[..., None])).reshape(nb, 8, 2, 16)
    qs = (L[:, :, 0] | (L[:, :, 1] << 4)).reshape(nb, 128)
    u = (sc_signed + 32).astype(np.uint16)
    scales_h = np.zeros(nb, np.uint16)
    for k in range(8):
        scales_h |= (u[:, k] >> 4) << (2 * k)
    lo = (u & 15).astype(np.uint8)
    scales_l = lo[:, 0::2] | (lo[:, 1::2] << 4)
    return np.concatenate([d_h.view(np.uint8).reshape(-1, 2), scales_h.view(np.uint8).reshape(-1, 2),
                           scales_l, qs], axis=1)


def _super_scale_xs(s):
    d_h, d, sc = _super_scale(s, 31, signed=True)
    _check_finite("scale", d)
    return d_h, sc


_ENCODERS = {"q2_k": _enc_q2_k, "q3_k": _enc_q3_k, "q4_k": _enc_q4_k, "q5_k": _enc_q5_k,
             "q6_k": _enc_q6_k, "iq4_nl": _enc_iq4_nl, "iq4_xs": _enc_iq4_xs}

# Rows are encoded this many blocks at a time: the scale search keeps a few float32 copies of
# the chunk alive, and small chunks stay in cache.
_CHUNK_BLOCKS = 4096


def quantize(x: np.ndarray, t: str, imatrix: np.ndarray | None = None, threads: int | None = None) -> np.ndarray:
    """Encode float rows (rows, n) as type `t`; returns uint8 (rows, row_size(t, n)).
    imatrix: optional per-column importance (n,), used as least-squares weights.
    threads: chunks of blocks encoded in parallel (numpy releases the GIL); None: all cores."""
    if t not in _TRAITS:
        raise ValueError(f"unknown type {t!r}; expected one of {', '.join(TYPES)}")
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array of rows, got shape {x.shape}")
    rows, n = x.shape
    rs = row_size(t, n)
    if not np.isfinite(x).all():
        raise ValueError("weights contain NaN or infinity")
    if imatrix is not None:
        imatrix = np.asarray(imatrix, np.float32).reshape(-1)
        if imatrix.size != n:
            raise ValueError(f"imatrix has {imatrix.size} values for rows of {n}")
    tr = _TRAITS[t]
    per_row = n // tr.block
    blocks = x.reshape(-1, tr.block)
    wts = _weights(x, imatrix, blocks.shape)
    out = np.empty((blocks.shape[0], tr.nbytes), np.uint8)
    enc = _ENCODERS[t]

    def run(b0):
        b1 = min(b0 + _CHUNK_BLOCKS, blocks.shape[0])
        out[b0:b1] = enc(blocks[b0:b1], np.ascontiguousarray(wts[b0:b1]))

    starts = range(0, blocks.shape[0], _CHUNK_BLOCKS)
    nthreads = min(len(starts), threads or os.cpu_count() or 1)
    if nthreads <= 1:
        for b0 in starts:
            run(b0)
    else:
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(nthreads) as ex:
            list(ex.map(run, starts))
    return out.reshape(rows, per_row * tr.nbytes) if rows else out.reshape(0, rs)
