"""Public functions: validation and output allocation around the kernels
(each public call is one kernel call, which threads itself on the native pool).

The kernel variant (scalar/avx2/avx2_vnni/avx512/neon) is looked up on every call
through iqkt._dispatch, so iqkt.set_isa()/use_isa() take effect at once.
"""
from __future__ import annotations

import functools
import numbers
import os

import numpy as np

from . import _dispatch

from ._kernels._types import BLOCK, TYPE_TABLE

# Everything per type comes from the format table (iqkt/include/iqkt_types.h).
TYPES = tuple(t["name"] for t in TYPE_TABLE)
_TYPE_IDS = {t["name"]: t["id"] for t in TYPE_TABLE}
_SB_BYTES = tuple(t["block_bytes"] for t in TYPE_TABLE)
# Kernels index within a row with 32-bit ints in places.
MAX_ROW_LENGTH = (1 << 31) - BLOCK

# ggml / GGUF identifiers (ik_llama.cpp)
GGML_TYPE_IDS = {t["name"]: t["ggml_type"] for t in TYPE_TABLE}
GGUF_FILE_TYPE_IDS = {t["name"]: t["gguf_file_type"] for t in TYPE_TABLE}


def _type_id(type) -> int:
    if not isinstance(type, str):
        raise TypeError(f"type must be a string, one of {TYPES}, not {type!r}")
    tid = _TYPE_IDS.get(type.lower())
    if tid is None:
        raise ValueError(f"unknown type {type!r}; expected one of {TYPES}")
    return tid


def _check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"row length n must be an integer, not {n!r}")
    n = int(n)
    if n <= 0 or n % BLOCK:
        raise ValueError(f"row length n={n} must be a positive multiple of {BLOCK}")
    if n > MAX_ROW_LENGTH:
        raise ValueError(f"row length n={n} is too large (at most {MAX_ROW_LENGTH})")
    return n


def row_size(type, n) -> int:
    """Bytes per row of n weights (the 4-byte row scale included)."""
    return 4 + _SB_BYTES[_type_id(type)] * (_check_n(n) // BLOCK)


@functools.lru_cache(maxsize=None)
def _total_memory() -> int:
    # Physical memory does not change while we run; sysconf costs ~1 us a call.
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def _empty(shape, dtype, what: str) -> np.ndarray:
    """np.empty, but refuse absurd sizes with a clear error before trying."""
    nbytes = np.dtype(dtype).itemsize
    for dim in shape:
        nbytes *= int(dim)
    if nbytes > _total_memory():
        raise MemoryError(f"{what} would need {nbytes / 2**30:.1f} GiB, more than this machine's "
                          f"{_total_memory() / 2**30:.1f} GiB of memory (shape {tuple(shape)})")
    return np.empty(shape, dtype=dtype)


def _threads(threads, work_rows: int) -> int:
    if threads is None:
        threads = _dispatch.default_threads()[0]
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1:
        raise ValueError(f"threads must be a positive integer or None, not {threads!r}")
    return max(1, min(int(threads), work_rows))


def _as_float_matrix(x, what: str) -> np.ndarray:
    """Any real float (or integer) array-like -> C-contiguous float32, 2-D."""
    try:
        a = np.asarray(x)
    except Exception as e:  # ragged lists etc.
        raise TypeError(f"{what} must be a numeric array: {e}") from None
    if a.dtype == object or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)
                                 or a.dtype == np.bool_):
        raise TypeError(f"{what} must be a real numeric array, got dtype {a.dtype}")
    if a.ndim == 1:
        a = a[None, :]
    elif a.ndim != 2:
        raise ValueError(f"{what} must be 1-D or 2-D, got {a.ndim}-D with shape {a.shape}")
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.ascontiguousarray(a, dtype=np.float32)
    if a.dtype.itemsize > 4 and np.issubdtype(a.dtype, np.floating) and np.isfinite(a).all() \
            and not np.isfinite(out).all():
        raise ValueError(f"{what} has values outside the float32 range (|v| > 3.4e38)")
    return out


def _check_finite(a: np.ndarray, what: str):
    if not np.isfinite(a).all():
        bad = np.argwhere(~np.isfinite(a))[0]
        raise ValueError(f"{what} contains NaN or infinity (first at index {tuple(int(i) for i in bad)})")


EFFORTS = ("fast", "default", "best")


def _check_effort(effort) -> None:
    if not isinstance(effort, str) or effort not in EFFORTS:
        raise ValueError(f"effort must be one of {', '.join(EFFORTS)}, not {effort!r}")


def quantize(x, type, imatrix=None, *, threads=None, return_stats=False, params=None, row_scale=None,
             effort="default"):
    """Quantize rows of x into KT bytes, shape (rows, row_size(type, n)).

    x: 2-D (rows, n) or 1-D (one row) real array, n a multiple of 256.
    imatrix: optional length-n vector of non-negative importances.
    return_stats: also return {"rel_err": per-row relative squared error
    (imatrix-weighted when given), "rel_err_total": over all rows}.
    effort: "default" (today's quality), "fast" (several times quicker; error
    still below ik_llama.cpp's quantizer on its golden cases) or "best"
    (exact searches, ~2x slower, ~2-3% lower error); the levels' speed and
    error: docs/perf-notes.md.
    params: for experiments only, a dict of quantizer parameters that differ
    from the effort level's (names and effects: quantizer_params()).  The
    result is deterministic for given effort and params.
    row_scale: optional per-row float32 scales the rows are stored with (only
    block scales and codebook indices are chosen): column slices of the same
    rows quantized separately then share their row scale, so their blocks can
    be put together into whole rows (see `iqkt.ldlq`).
    """
    tid = _type_id(type)
    a = _as_float_matrix(x, "x")
    rows, n = a.shape
    if rows == 0:
        raise ValueError("x has no rows")
    _check_n(n)
    _check_finite(a, "x")
    im = None
    if imatrix is not None:
        im = _as_float_matrix(imatrix, "imatrix")
        if im.shape[0] != 1:
            raise ValueError(f"imatrix must be a vector of length {n}, got shape {np.shape(imatrix)}")
        im = im[0]
        if im.shape[0] != n:
            raise ValueError(f"imatrix length {im.shape[0]} does not match row length {n}")
        _check_finite(im, "imatrix")
        if (im < 0).any():
            raise ValueError("imatrix has negative entries; importances must be >= 0")
    rsc = None
    if row_scale is not None:
        rsc = _as_float_matrix(row_scale, "row_scale")
        if rsc.shape != (1, rows):
            raise ValueError(f"row_scale must be a vector of {rows} row scales, got shape {np.shape(row_scale)}")
        rsc = np.ascontiguousarray(rsc[0])
        _check_finite(rsc, "row_scale")
        lim = np.finfo(np.float32).max / (TYPE_TABLE[tid]["scale_abs_max"] * 126 * 1.0001)
        if (np.abs(rsc) > lim).any():
            raise ValueError(f"row_scale has entries above {lim:.3g}: decoded weights would overflow")
    _check_effort(effort)
    k = _dispatch.module()
    if params is not None:
        params = k.quantizer_params(params, effort, tid)     # validated once, before any work
    out = _empty((rows, row_size(type, n)), np.uint8, "the quantized output")
    err = np.empty(rows, dtype=np.float64) if return_stats else None
    k.quantize_rows(tid, a, im, out, err, params, _threads(threads, rows), rsc, effort)
    if not return_stats:
        return out
    xd = a.astype(np.float64)
    wt = np.ones(n) if im is None else im.astype(np.float64)
    den = float((xd * xd * wt).sum())
    num = float((err * (xd * xd * wt).sum(axis=1)).sum())
    return out, {"rel_err": err, "rel_err_total": num / den if den > 0 else 0.0}


def _as_q(q, tid: int, n: int) -> np.ndarray:
    rs = 4 + _SB_BYTES[tid] * (n // BLOCK)
    if isinstance(q, (bytes, bytearray, memoryview)):
        a = np.frombuffer(q, dtype=np.uint8)
    else:
        a = np.asarray(q)
        if a.dtype != np.uint8:
            raise TypeError(f"quantized data must be uint8 bytes, got dtype {a.dtype}")
    if a.ndim == 1:
        if a.size % rs:
            raise ValueError(f"quantized data has {a.size} bytes, not a whole number of "
                             f"{rs}-byte rows (n={n})")
        a = a.reshape(-1, rs)
    elif a.ndim == 2 and a.shape[1] != rs:
        held = (a.shape[1] - 4) / _SB_BYTES[tid] * BLOCK
        raise ValueError(f"shape mismatch: quantized rows have {a.shape[1]} bytes "
                         f"({held:g} weights of {TYPES[tid]}), but n={n} needs {rs} bytes per row")
    elif a.ndim != 2:
        raise ValueError(f"quantized data must be 1-D or 2-D, got {a.ndim}-D")
    if a.shape[0] == 0:
        raise ValueError("quantized data has no rows")
    a = np.ascontiguousarray(a)
    # A view of each row's 4 scale bytes as float32 (numpy >= 1.23 allows a view
    # whose last axis is contiguous): no copy, ~6x cheaper than copying first,
    # which mattered for GEMV-sized calls (~30 us per 4096 rows).
    d = a[:, :4].view("<f4")[:, 0]
    if not np.isfinite(d).all():
        r = int(np.argwhere(~np.isfinite(d))[0, 0])
        raise ValueError(f"row scale of row {r} is NaN or infinity (corrupted data?)")
    return a


def dequantize(q, type, n, *, inference=False, threads=None) -> np.ndarray:
    """Decode KT bytes to float32 (rows, n).  inference=True applies the type's
    inference factor, as the matrix products do (IQ2_KT: 1.05; 1 otherwise)."""
    tid = _type_id(type)
    n = _check_n(n)
    a = _as_q(q, tid, n)
    rows = a.shape[0]
    out = _empty((rows, n), np.float32, "the dequantized output")
    _dispatch.module().dequantize_rows(tid, a, n, out, 1 if inference else 0, _threads(threads, rows))
    return out


def mul_mat(q, type, x, *, threads=None, precision="int8") -> np.ndarray:
    """ggml-style product: x (K,) or (B, K) float -> (N,) or (B, N) float32,
    each output dot(W[r], x[b]) with W's inference values (IQ2_KT's 1.05).

    precision="int8" (default) quantizes x once to int8 per block of 32
    (d = amax / 127, one float scale per block: the activation precision of
    the reference's own CPU kernels, ~0.5% relative error, up to a few % on
    rows whose terms cancel) and sums trellis-value x activation products
    exactly in int32; precision="int16" does the same with int16 per block
    of 32 (|x16| <= 8000, ~1e-4 relative); precision="float" is the exact
    float path (dequantized weights, float64 accumulation).
    """
    tid = _type_id(type)
    xa = np.asarray(x) if not isinstance(x, np.ndarray) else x
    if xa.ndim not in (1, 2):
        raise ValueError(f"x must be 1-D (K,) or 2-D (B, K), got shape {np.shape(x)}")
    vec = xa.ndim == 1
    xm = _as_float_matrix(xa, "x")
    K = xm.shape[1]
    if K == 0 or K % BLOCK:
        raise ValueError(f"x has {K} columns; K must be a positive multiple of {BLOCK}")
    _check_n(K)
    if isinstance(q, QuantizedMatrix):
        if q.type != TYPES[tid]:
            raise ValueError(f"matrix is {q.type}, not {TYPES[tid]}")
        if q.shape[1] != K:
            raise ValueError(f"shape mismatch: matrix has K={q.shape[1]}, x has K={K}")
        q = q.data
    if isinstance(q, np.ndarray) and q.ndim == 2 and q.shape[1] != row_size(TYPES[tid], K):
        held = (q.shape[1] - 4) / _SB_BYTES[tid] * BLOCK
        raise ValueError(f"shape mismatch: x has K={K} columns but the {TYPES[tid]} matrix rows "
                         f"hold {held:g} weights")
    a = _as_q(q, tid, K)
    _check_finite(xm, "x")
    mod = _dispatch.module()
    if not isinstance(precision, str) or precision not in mod.PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, mod.PRECISIONS))}, "
                         f"not {precision!r}")
    N = a.shape[0]
    B = xm.shape[0]
    y = _empty((B, N), np.float32, "the product")
    if B:
        # One kernel call: activation quantization and layout, scratch and
        # the native threads all live in the kernel (kt_mul_mat_threads).
        mod.mul_mat(tid, a, K, xm, y, mod.PRECISIONS[precision], _threads(threads, N))
    return y[0] if vec else y


def quantizer_params(changes=None, *, effort="default", type=None) -> dict:
    """The quantizer parameters quantize(x, type, params=changes, effort=effort)
    uses: the effort level's preset for the type (some fast-level settings
    differ per type) with changes applied (clamped to valid ranges); unknown
    names raise TypeError.  For experiments and benchmarks (docs/perf-notes.md)."""
    _check_effort(effort)
    return _dispatch.module().quantizer_params(changes, effort, -1 if type is None else _type_id(type))


def trellis(seeds, steps) -> np.ndarray:
    """Raw integer trellis values, int8 (len(seeds), steps).  The seed is used
    as given (the formats add 4096, and IQ4_KT's second codebook 32768 more)."""
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, not {steps!r}")
    s = np.asarray(seeds)
    if s.ndim == 0:
        s = s[None]
    if s.ndim != 1:
        raise ValueError(f"seeds must be 1-D, got shape {s.shape}")
    if s.size and not np.issubdtype(s.dtype, np.integer):
        raise TypeError(f"seeds must be integers, got dtype {s.dtype}")
    if s.size and (s.min() < 0 or s.max() > 0xFFFFFFFF):
        raise ValueError("seeds must be in [0, 2**32)")
    s = np.ascontiguousarray(s, dtype=np.uint32)
    out = _empty((s.shape[0], int(steps)), np.int8, "the trellis output")
    _dispatch.module().trellis(s, int(steps), out)
    return out


class QuantizedMatrix:
    """A KT-quantized (N, K) matrix: `qm @ x`, `qm.dequantize()`, sizes."""

    __array_priority__ = 100

    def __init__(self, data, type, n):
        tid = _type_id(type)
        self.type = TYPES[tid]
        n = _check_n(n)
        self.data = _as_q(data, tid, n)
        self.shape = (self.data.shape[0], n)

    @classmethod
    def from_float(cls, x, type, imatrix=None, *, threads=None):
        a = _as_float_matrix(x, "x")
        return cls(quantize(a, type, imatrix, threads=threads), type, a.shape[1])

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.nbytes / (self.shape[0] * self.shape[1])

    def dequantize(self, *, inference=False, threads=None) -> np.ndarray:
        return dequantize(self.data, self.type, self.shape[1], inference=inference, threads=threads)

    def matmul(self, x, *, threads=None, precision="int8"):
        """W @ x for x of shape (K,) or (K, B), numpy convention."""
        xa = np.asarray(x)
        if xa.ndim == 2:
            return mul_mat(self.data, self.type, xa.T, threads=threads, precision=precision).T
        return mul_mat(self.data, self.type, xa, threads=threads, precision=precision)

    def __matmul__(self, x):
        return self.matmul(x)

    def __repr__(self):
        return (f"QuantizedMatrix(type={self.type!r}, shape={self.shape}, "
                f"bits_per_weight={self.bits_per_weight:.4f})")
