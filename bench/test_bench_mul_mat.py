"""pytest-benchmark: iqkt.mul_mat and iqkt.dequantize vs numpy float32.

    pytest bench --benchmark-only                      # all shapes
    IQKT_BENCH_QUICK=1 pytest bench --benchmark-only   # 4096x4096 only

Cases: type x precision (int8, int16, float) x (N x K) x B in {1, 8, 64} x threads in {1, 2},
one benchmark group per shape, B and threads, so the precisions sit side by side; the numpy float32
``W @ x`` baseline on the same shapes (one or two BLAS threads through
threadpoolctl when it is installed, else only with numpy's default pool).
Each benchmark's extra_info holds Gweights/s and GB/s of weights read.
Quantized weights are cached on disk (see iqkt/_bench.py).
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest

iqkt = pytest.importorskip("iqkt")
from iqkt import _bench as B  # noqa: E402

SHAPES = B.shapes()
SHAPE_IDS = [f"{n}x{k}" for n, k in SHAPES]

_WEIGHTS: dict = {}


def weights(type_: str, n: int, k: int) -> np.ndarray:
    """Quantized (n, row_size) weights, made once per session (and cached on disk)."""
    key = (type_, n, k)
    if key not in _WEIGHTS:
        _WEIGHTS.clear()  # keep one matrix alive at a time
        _WEIGHTS[key] = B.quantized_weights(type_, n, k)
    return _WEIGHTS[key]


def _record(benchmark, n, k, b, nbytes):
    benchmark.extra_info["weights"] = n * k
    benchmark.extra_info["batch"] = b
    benchmark.extra_info["weight_bytes"] = int(nbytes)

    def finish():
        med = benchmark.stats.stats.median if benchmark.stats else None
        if med:
            benchmark.extra_info["gweights_per_s"] = n * k * b / med / 1e9
            benchmark.extra_info["gbytes_per_s"] = nbytes / med / 1e9
    return finish


@pytest.mark.parametrize("threads", B.THREADS)
@pytest.mark.parametrize("b", B.BATCHES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("precision", ["int8", "int16", "float"])
@pytest.mark.parametrize("type_", iqkt.TYPES)
def test_mul_mat(benchmark, type_, precision, shape, b, threads):
    n, k = shape
    q = weights(type_, n, k)
    x = B.activations(b, k)
    benchmark.group = f"mul_mat {n}x{k} B={b} threads={threads}"
    finish = _record(benchmark, n, k, b, q.nbytes)
    benchmark.extra_info["precision"] = precision
    y = benchmark(iqkt.mul_mat, q, type_, x, threads=threads, precision=precision)
    finish()
    assert y.shape == ((n,) if b == 1 else (b, n))


def _blas_threads(threads):
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=threads, user_api="blas")


_F32: dict = {}


@pytest.mark.parametrize("threads", B.THREADS)
@pytest.mark.parametrize("b", B.BATCHES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_numpy_f32(benchmark, shape, b, threads):
    n, k = shape
    limiter = _blas_threads(threads)
    if limiter is None and threads != B.THREADS[-1]:
        pytest.skip("pip install threadpoolctl to pin numpy's BLAS thread count")
    with limiter if limiter is not None else contextlib.nullcontext():
        if (n, k) not in _F32:
            _F32.clear()
            _F32[(n, k)] = B.gaussian(n, k, seed=0)
        w = _F32[(n, k)]
        x = B.activations(b, k)
        benchmark.group = f"mul_mat {n}x{k} B={b} threads={threads}"
        finish = _record(benchmark, n, k, b, w.nbytes)
        if b == 1:
            benchmark(np.matmul, w, x)
        else:
            benchmark(np.matmul, w, np.ascontiguousarray(x.T))  # (N, K) @ (K, B)
        finish()
        benchmark.extra_info["blas_threads"] = threads if limiter is not None else "default"


@pytest.mark.parametrize("threads", B.THREADS)
@pytest.mark.parametrize("type_", iqkt.TYPES)
def test_dequantize(benchmark, type_, threads):
    n, k = SHAPES[0]
    q = weights(type_, n, k)
    benchmark.group = f"dequantize {n}x{k} threads={threads}"
    finish = _record(benchmark, n, k, 1, q.nbytes)
    out = benchmark(iqkt.dequantize, q, type_, k, threads=threads)
    finish()
    assert out.shape == (n, k)
