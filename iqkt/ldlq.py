"""Error feedback across a row's blocks (LDLQ / GPTQ-style) for the KT quantizer.

The plain quantizer minimises sum_j imatrix_j * (w_j - q_j)^2 row by row: the diagonal of the
inputs' second moment H = E[x x^T]. What a layer's output loses is the full form
(w - q) H (w - q)^T, and LLM activations are strongly correlated, so errors in one column can be
partly cancelled by adjusting the columns that are quantized later. LDLQ does that 256 columns
(one super-block) at a time:
  1. quantize the whole rows once (imatrix = diag H) for their row scales d;
  2. for each super-block b, left to right: quantize the current targets of b at the fixed row
     scale d (`iqkt.quantize(..., row_scale=d)`), weighting columns by the diagonal of the Schur
     complement of H (what an error in b costs once the later columns have compensated), then add
     to the targets of the later columns the least-squares compensation of b's error:
     W[:, rest] += (W_b - Q_b) H_b,rest H_rest,rest^-1 = (W_b - Q_b) U_bb^-1 U_b,rest,
     with U the upper Cholesky factor of H^-1 (one factorisation for all blocks);
  3. refit each row scale by least squares in the output metric.
The blocks are put together under the shared row scale, so the bytes are an ordinary KT tensor.

Measured on SmolLM2-135M (ffn_down, H from 24 x 512 tokens of calibration text): output error
tr(E H E^T) about 0.55-0.6x the plain quantizer's; see README's quality table for the model.
"""
from __future__ import annotations

import numpy as np

from . import _api

__all__ = ["quantize_ldlq", "prepare_hessian"]


def prepare_hessian(hessian, n: int, damp: float = 0.01) -> np.ndarray:
    """Checked float64 copy of H (n x n, symmetric positive semi-definite up to rounding) with
    `damp` x mean(diag H) added to the diagonal, which keeps the factorisation stable when H is
    rank-deficient (fewer calibration tokens than columns, dead inputs)."""
    h = np.asarray(hessian, dtype=np.float64)
    if h.shape != (n, n):
        raise ValueError(f"hessian must be {n} x {n} for rows of {n} weights, got shape {h.shape}")
    if not np.isfinite(h).all():
        raise ValueError("hessian has NaN or infinite entries")
    dg = np.diag(h)
    if (dg < 0).any():
        raise ValueError("hessian has negative diagonal entries (not a second-moment matrix)")
    if not (damp > 0):
        raise ValueError("damp must be > 0")
    h = (h + h.T) * 0.5
    mean = dg.mean()
    h[np.diag_indices(n)] += damp * (mean if mean > 0 else 1.0)
    return h


def _upper_cholesky_of_inverse(h: np.ndarray) -> np.ndarray:
    try:
        lo = np.linalg.cholesky(h)                 # h = L L^T
        li = np.linalg.solve(lo, np.eye(h.shape[0]))   # L^-1; h^-1 = L^-T L^-1
        return np.linalg.cholesky(li.T @ li).T     # U upper with h^-1 = U^T U
    except np.linalg.LinAlgError:
        raise ValueError("hessian is not positive definite even after damping; increase damp") from None


def quantize_ldlq(w, type, hessian, *, damp: float = 0.01, threads=None, return_stats: bool = False,
                  effort: str = "default"):
    """Quantize rows of w (rows, n) to KT bytes with error feedback from the input second-moment
    matrix `hessian` (n x n, e.g. from `iqkt imatrix --covariance` or
    `iqkt.eval.collect_imatrix(..., covariance=...)`). Same bytes layout as `iqkt.quantize`.
    return_stats: also {"rel_err": per-row diag(H)-weighted weight error, "rel_out_err": per-row
    output error (w - q) H (w - q)^T / w H w^T, both with the undamped H}.
    effort: the quantizer's effort level for every slice (iqkt.EFFORTS)."""
    a = np.asarray(w)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise TypeError(f"w must be a real 2-D array, got {a.dtype} with shape {np.shape(w)}")
    rows, n = a.shape
    _api._check_n(n)
    if rows == 0:
        raise ValueError("w has no rows")
    a = np.ascontiguousarray(a, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError("w has NaN or infinite values")
    h = prepare_hessian(hessian, n, damp)
    h_raw = np.asarray(hessian, dtype=np.float64)
    imp0 = np.maximum(np.diag(h_raw), 0).astype(np.float32)
    q0 = _api.quantize(a.astype(np.float32), type, imp0, threads=threads, effort=effort)
    d = q0[:, :4].copy().view("<f4")[:, 0].copy()
    u = _upper_cholesky_of_inverse(h)
    bs = _api.BLOCK
    sb = (_api.row_size(type, n) - 4) // (n // bs)
    out = q0.copy()
    wt = a.copy()
    for b0 in range(0, n, bs):
        cols = slice(b0, b0 + bs)
        ubb = u[cols, cols]
        ubb_inv = np.linalg.solve(ubb, np.eye(bs))
        # Schur complement of H for block b given the later columns: (U_bb^T U_bb)^-1.
        schur_diag = np.einsum("ij,ij->i", ubb_inv, ubb_inv)
        qb = _api.quantize(wt[:, cols].astype(np.float32), type, schur_diag.astype(np.float32),
                           threads=threads, row_scale=d, effort=effort)
        k = b0 // bs
        out[:, 4 + k * sb:4 + (k + 1) * sb] = qb[:, 4:]
        if b0 + bs < n:
            err = wt[:, cols] - _api.dequantize(qb, type, bs).astype(np.float64)
            wt[:, b0 + bs:] -= (err @ ubb_inv) @ u[cols, b0 + bs:]
    # The row scales were fixed before the feedback changed the targets; refit each row's scale
    # by least squares in the output metric: f = q H w^T / q H q^T (undamped H).
    deq = _api.dequantize(out, type, n).astype(np.float64)
    qh = deq @ h_raw
    num = np.einsum("ij,ij->i", qh, a)
    den = np.einsum("ij,ij->i", qh, deq)
    f = np.where(den > 0, num / np.where(den > 0, den, 1.0), 1.0)
    lim = np.finfo(np.float32).max / (_api.TYPE_TABLE[_api._type_id(type)]["scale_abs_max"] * 126 * 1.0001)
    d_new = np.clip(d.astype(np.float64) * f, -lim, lim).astype(np.float32)
    out[:, :4] = d_new.reshape(-1, 1).view(np.uint8)
    if not return_stats:
        return out
    e = _api.dequantize(out, type, n).astype(np.float64) - a
    dg = np.diag(h_raw)
    rel = (e * e) @ dg / np.maximum((a * a) @ dg, 1e-300)
    out_err = np.einsum("ij,jk,ik->i", e, h_raw, e) / np.maximum(np.einsum("ij,jk,ik->i", a, h_raw, a), 1e-300)
    return out, {"rel_err": rel, "rel_out_err": out_err}
