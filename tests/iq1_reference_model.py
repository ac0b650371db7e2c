"""A numpy model of the reference (ik_llama.cpp) IQ1_KT quantizer, the quality
bar of issue #16.  No reference IQ1_KT vectors exist and its code is not used:
this follows the prose description of the reference's IQ2_KT quantizer in
/work/shared/notes/kt-formats.md ("How the reference quantizer works") with
IQ1_KT's format (issue #16), and stores ``d * 1.07`` as the issue says the
reference does.  Nothing here imports ``iqkt``.

Where the description leaves a choice open, the model takes the choice that
lowers its error, so that "iqkt <= model" is not won by a weak model:
- the codeword search is exhaustive over the 8192 codes (the reference
  searches one cluster of candidates);
- the row-scale candidates are scored by the least-squares fit of the block
  scales weighted by each block's curvature sum w q^2;
- the final re-search / least-squares ``d`` step may be repeated
  (``passes``; the description has one).

``quantize(x, imatrix)`` returns IQ1_KT bytes, decodable by
``pyref.dequantize(q, "iq1_kt", n)``.
"""
from __future__ import annotations

import numpy as np

import pyref

NCODES = 8192
STORE_FACTOR = 1.07            # the reference stores d * 1.07 (issue #16)
TABLE = np.asarray(pyref.IQ2_TABLE, dtype=np.float64)   # IQ4K_VALUES, IQ1/IQ2 block scales

_CB = pyref.codebook(pyref.OFFSET, 8, 65536).astype(np.float64)       # IQ2_KT's; IQ1_KT's is the first 8192
# One matmul gives sum w c^2 - 2 sum w t c for every code: [w, t*w] @ _CBT.
_CBT = np.concatenate([_CB.T ** 2, -2.0 * _CB.T], axis=0)              # (16, 65536)


def importance(x: np.ndarray, imatrix=None) -> np.ndarray:
    """The reference's per-weight importance, x (rows, n) -> (rows, n) float64.
    Without an imatrix ``0.25 sigma^2 + x^2``, with one ``im * sqrt(sigma^2 + x^2)``;
    sigma^2 = 2 mean(x^2) per 256 super-block; near-zero super-blocks or
    32-blocks get 1e-4 everywhere."""
    rows, n = x.shape
    xs = x.reshape(rows, n // 256, 256)
    sig2 = 2.0 * (xs ** 2).mean(axis=2, keepdims=True)
    if imatrix is None:
        w = 0.25 * sig2 + xs ** 2
    else:
        im = np.asarray(imatrix, dtype=np.float64).reshape(1, n // 256, 256)
        w = im * np.sqrt(sig2 + xs ** 2)
    small_sb = (xs ** 2).sum(axis=2, keepdims=True) < 1e-14 * 256
    w = np.where(small_sb, 1e-4, w)
    wb = w.reshape(rows, n // 32, 32)
    xb = x.reshape(rows, n // 32, 32)
    small_b = (((xb ** 2).sum(axis=2) < 1e-14) | ((wb ** 2).sum(axis=2) < 1e-14)
               | ((wb * np.abs(xb)).sum(axis=2) < 1e-14))
    wb = np.where(small_b[..., None], 1e-4, wb)
    return wb.reshape(rows, n)


def nearest_codes(xg: np.ndarray, wg: np.ndarray, dl: np.ndarray, ncodes: int = NCODES,
                  chunk: int = 512) -> np.ndarray:
    """Exhaustive search: for every group (xg, wg: (G, 8)) the index in
    0..ncodes-1 minimising sum w (x - dl * code)^2 at that group's scale dl (G,).
    A group with dl == 0 gets index 0."""
    G = xg.shape[0]
    out = np.zeros(G, dtype=np.int64)
    nz = np.flatnonzero(dl != 0)
    for s in range(0, nz.size, chunk):
        sel = nz[s:s + chunk]
        t = xg[sel] / dl[sel, None]
        a = np.concatenate([wg[sel], wg[sel] * t], axis=1)           # (g, 16)
        out[sel] = np.argmin(a @ _CBT[:, :ncodes], axis=1)
    return out


def _block_sums(xg, wg, idx, nblocks):
    """Per 32-block sum w x q and sum w q^2 for group indices idx."""
    q = _CB[idx]
    sx = (wg * xg * q).sum(axis=1).reshape(nblocks, 4).sum(axis=1)
    s2 = (wg * q * q).sum(axis=1).reshape(nblocks, 4).sum(axis=1)
    return sx, s2


def _nearest_table(v: np.ndarray) -> np.ndarray:
    """Index of the table value nearest to v (ties: the lower index)."""
    return np.argmin(np.abs(v[..., None] - TABLE), axis=-1)


def quantize(x, imatrix=None, passes: int = 1, store_factor: float = STORE_FACTOR) -> np.ndarray:
    """IQ1_KT bytes (rows, 4 + 56 n/256) for x (rows, n) float32."""
    return encode(*quantize_fields(x, imatrix, passes, store_factor))


def quantize_fields(x, imatrix=None, passes: int = 1, store_factor: float = STORE_FACTOR,
                    ncodes: int = NCODES):
    """The quantizer's choices: stored row scales (rows,) float32, block scale
    codes (rows, n/32) and group indices (rows, n/8)."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float32)).astype(np.float64)
    rows, n = x.shape
    nb = n // 32
    w = importance(x, imatrix)
    xg = x.reshape(-1, 8)
    wg = w.reshape(-1, 8)
    B = rows * nb                       # blocks of all rows, block-major within a row

    # Per block: trial scales +-amax/s0, keep the better least-squares score.
    xb = x.reshape(rows, nb, 32)
    amax = np.abs(xb).max(axis=2)                                       # (rows, nb)
    amax_row = amax.max(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        s0 = np.maximum(90.0, np.where(amax_row > 0, 124.0 * amax / amax_row, 0.0))
    best_score = np.full(B, -1.0)
    idx = np.zeros(B * 4, dtype=np.int64)
    scale = np.zeros(B)
    curv = np.zeros(B)
    for sign in (1.0, -1.0):
        dl = (sign * amax / s0).reshape(B)
        ti = nearest_codes(xg, wg, np.repeat(dl, 4), ncodes)
        sx, s2 = _block_sums(xg, wg, ti, B)
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.where(s2 > 0, sx * sx / s2, -1.0)
        better = (score > best_score) & (dl != 0)
        best_score = np.where(better, score, best_score)
        scale = np.where(better, sx / np.where(s2 > 0, s2, 1), scale)
        curv = np.where(better, s2, curv)
        idx = np.where(np.repeat(better, 4), ti, idx)
    scale = scale.reshape(rows, nb)
    curv = curv.reshape(rows, nb)

    # Row scale: 19 candidates (t + table[0]) / max_scale, block scales rounded
    # to the nearest table value, best least-squares fit of the block scales.
    pick = np.abs(scale).argmax(axis=1)
    max_scale = scale[np.arange(rows), pick]
    best = np.full(rows, -1.0)
    d = np.zeros(rows)
    codes = np.full((rows, nb), 8, dtype=np.int64)
    for t in range(-9, 10):
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = np.where(max_scale != 0, (t + TABLE[0]) / max_scale, 0.0)
        c = _nearest_table(scale * inv[:, None])
        v = TABLE[c]
        num = (curv * scale * v).sum(axis=1)
        den = (curv * v * v).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            sc = np.where(den > 0, num * num / den, -1.0)
        better = sc > best
        best = np.where(better, sc, best)
        d = np.where(better, num / np.where(den > 0, den, 1), d)
        codes = np.where(better[:, None], c, codes)

    # Final pass(es): re-search every block at its quantized scale, keep the
    # better of old and new indices, least-squares row scale.
    v = TABLE[codes].reshape(B)
    for _ in range(passes):
        dlb = np.repeat(d, nb) * v
        ni = nearest_codes(xg, wg, np.repeat(dlb, 4), ncodes)
        sx0, s20 = _block_sums(xg, wg, idx, B)
        sx1, s21 = _block_sums(xg, wg, ni, B)
        better = dlb * dlb * s21 - 2 * dlb * sx1 < dlb * dlb * s20 - 2 * dlb * sx0
        idx = np.where(np.repeat(better, 4), ni, idx)
        sx, s2 = _block_sums(xg, wg, idx, B)
        num = (v * sx).reshape(rows, nb).sum(axis=1)
        den = (v * v * s2).reshape(rows, nb).sum(axis=1)
        d = np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)

    return (np.float32(store_factor) * d.astype(np.float32)).astype(np.float32), codes, \
        idx.reshape(rows, nb * 4)


def encode(d: np.ndarray, codes: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """IQ1_KT bytes from row scales d (rows,), block codes (rows, n/32) and
    13-bit group indices (rows, n/8), placing bits where issue #16's decode
    formula reads them."""
    rows, nb = codes.shape
    nsb = nb // 8
    out = np.zeros((rows, 4 + 56 * nsb), dtype=np.uint8)
    out[:, :4] = np.asarray(d, dtype="<f4").reshape(rows, 1).view(np.uint8)
    sb = out[:, 4:].reshape(rows, nsb, 56)
    c = codes.reshape(rows, nsb, 8)
    i = idx.reshape(rows, nsb, 32)
    j = np.arange(32)
    hi = ((i >> 12) & 1) << (4 + j % 4)                     # bit 12 of group j -> sh[j // 4]
    sb[..., 0:8] = (c | hi.reshape(rows, nsb, 8, 4).sum(axis=3)).astype(np.uint8)
    sb[..., 8:40] = (i & 0xFF).astype(np.uint8)
    nib = (i >> 8) & 15
    sb[..., 40:56] = (nib[..., :16] | (nib[..., 16:] << 4)).astype(np.uint8)
    return out


def encode_iq2(d: np.ndarray, codes: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """IQ2_KT bytes from the same fields (16-bit indices): the model run with
    ncodes=65536, store_factor=1 is the described IQ2_KT quantizer, whose
    error can be compared with the real reference's (tests/data/iq2_kt_*)."""
    rows, nb = codes.shape
    nsb = nb // 8
    out = np.zeros((rows, 4 + 68 * nsb), dtype=np.uint8)
    out[:, :4] = np.asarray(d, dtype="<f4").reshape(rows, 1).view(np.uint8)
    sb = out[:, 4:].reshape(rows, nsb, 68)
    c = codes.reshape(rows, nsb, 8)
    sb[..., 0:4] = (c[..., :4] | (c[..., 4:] << 4)).astype(np.uint8)
    sb[..., 4:68] = idx.reshape(rows, nsb, 32).astype("<u2").view(np.uint8).reshape(rows, nsb, 64)
    return out
