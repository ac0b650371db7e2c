"""Quantize throughput per KT type and thread count (pytest-benchmark).

Run: python -m pytest bench/test_bench_quantize.py --benchmark-only -p no:cacheprovider
Targets (issue 5): per thread >= 5x the reference quantizer, i.e. >= 6.5 / 2.75 / 2.75
million weights/s for IQ2/IQ3/IQ4_KT when numpy's 4096x4096 f32 GEMV takes 2.77 ms;
`extra_info` records the normalised throughput measured against that GEMV in the same run.
"""
from __future__ import annotations

import numpy as np
import pytest

import iqkt
from iqkt import _bench

ROWS, N = 16, 4096


@pytest.fixture(scope="module")
def gemv_ms():
    return _bench.numpy_gemv_ms()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    return rng.standard_normal((ROWS, N)).astype(np.float32), rng.chisquare(1, N).astype(np.float32)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("type", list(_bench.REF_QUANT_MWS))
def test_quantize_throughput(benchmark, data, gemv_ms, type, threads):
    x, im = data
    benchmark.pedantic(iqkt.quantize, args=(x, type, im), kwargs={"threads": threads},
                       rounds=3, iterations=1, warmup_rounds=0)
    mws = x.size / benchmark.stats.stats.median / 1e6
    norm = mws * gemv_ms / _bench.REF_GEMV_MS
    benchmark.extra_info.update(mws=mws, numpy_gemv_ms=gemv_ms, normalised_mws=norm,
                                vs_reference_per_thread=norm / _bench.REF_QUANT_MWS[type] / threads)
