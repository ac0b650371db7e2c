"""pytest-benchmark: the quantizer's nearest-codeword search on its own.

    pytest bench --benchmark-only -k search

One benchmark per (search space, effort, ISA variant): 4096 random targets
(Gaussian x 40 in code units, magnitudes for the IQ3 space) with chi-square
weights, no hint, through the variant's ``nearest_codes`` test hook.  Effort
is nflip: 0 scans the target's own cell, 2 and 3 also the cells one level
away in the 2 or 3 cheapest coordinates (the trial and early passes), 8 is
exact (the last pass).  extra_info["ns_per_search"] is the median per
search: the number to watch when changing the search engine (the
quantizer's own throughput is in test_bench_quantize.py).
"""
from __future__ import annotations

import numpy as np
import pytest

iqkt = pytest.importorskip("iqkt")
from iqkt import _dispatch  # noqa: E402

M = 4096
SPACES = {0: ("iq2", 8), 1: ("iq3", 8), 2: ("iq4a", 4), 3: ("iq4b", 4)}


def targets(space: int):
    dim = SPACES[space][1]
    rng = np.random.default_rng(10 + space)
    t = (rng.standard_normal((M, dim)) * 40).astype(np.float32)
    if space == 1:
        t = np.abs(t)
    w = rng.chisquare(1, (M, dim)).astype(np.float32)
    return t, w


@pytest.mark.parametrize("isa", iqkt.available_isas())
@pytest.mark.parametrize("nflip", [0, 2, 3, 8])
@pytest.mark.parametrize("space", sorted(SPACES), ids=[v[0] for _, v in sorted(SPACES.items())])
def test_search(benchmark, space, nflip, isa):
    t, w = targets(space)
    with _dispatch.use_isa(isa):
        mod = _dispatch.module()
        mod.nearest_codes(space, t[:16], w[:16], nflip)        # builds the space once
        benchmark.group = f"search {SPACES[space][0]} nflip={nflip}"
        out = benchmark.pedantic(mod.nearest_codes, args=(space, t, w, nflip), rounds=5,
                                 warmup_rounds=1)
    med = benchmark.stats.stats.median if benchmark.stats else None
    if med:
        benchmark.extra_info["ns_per_search"] = med / M * 1e9
    assert out.shape == (M,) and out.min() >= 0
