"""pytest-benchmark: iqkt.quantize throughput per effort level (128 x 4096 Gaussian rows, with an imatrix).

    pytest bench --benchmark-only -k quantize

extra_info["mweights_per_s"] holds 10^6 weights per second.
"""
from __future__ import annotations

import pytest

iqkt = pytest.importorskip("iqkt")
from iqkt import _bench as B  # noqa: E402

ROWS, K = B.QUANT_SHAPE


@pytest.fixture(scope="module")
def data():
    return B.gaussian(ROWS, K, seed=7), B.imatrix(K, seed=8)


@pytest.mark.parametrize("threads", B.THREADS)
@pytest.mark.parametrize("effort", iqkt.EFFORTS)
@pytest.mark.parametrize("type_", iqkt.TYPES)
def test_quantize(benchmark, data, type_, effort, threads):
    x, im = data
    benchmark.group = f"quantize {ROWS}x{K} threads={threads}"
    benchmark.extra_info["effort"] = effort
    q = benchmark.pedantic(iqkt.quantize, args=(x, type_, im), kwargs={"threads": threads, "effort": effort},
                           rounds=5, warmup_rounds=1)
    med = benchmark.stats.stats.median if benchmark.stats else None
    if med:
        benchmark.extra_info["mweights_per_s"] = ROWS * K / med / 1e6
    assert q.shape == (ROWS, iqkt.row_size(type_, K))
