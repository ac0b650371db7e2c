"""The quantizer's nearest-codeword search and refinement (iqkt/_kernels/kt_quantize.pxi).

The codebook here is rebuilt in numpy from the trellis definition in the format
notes, independently of the package, and searched by brute force."""
from __future__ import annotations

import numpy as np
import pytest

import iqkt
import pyref
from iqkt import _dispatch

ISAS = iqkt.available_isas()
TRELLIS_MUL = 0xCBAC1FED


def codebook(steps: int, offset: int, count: int) -> np.ndarray:
    state = np.arange(count, dtype=np.uint64) + offset
    out = np.empty((count, steps), dtype=np.float32)
    for k in range(steps):
        state = (state * TRELLIS_MUL) & 0xFFFFFFFF
        s = state & 0x3F3F3F3F
        out[:, k] = ((s & 0xFF) + ((s >> 8) & 0xFF) + ((s >> 16) & 0xFF) + (s >> 24)).astype(np.int64) - 126
    return out


SPACES = {
    0: lambda: codebook(8, 4096, 65536),                    # IQ2_KT
    1: lambda: np.abs(codebook(8, 4096, 65536)),            # IQ3_KT magnitudes
    2: lambda: codebook(4, 4096, 32768),                    # IQ4_KT, flag 0
    3: lambda: codebook(4, 4096 + 32768, 32768),            # IQ4_KT, flag 1
}


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("space", sorted(SPACES))
def test_exact_search_matches_brute_force(isa, space):
    cb = SPACES[space]()
    dim = cb.shape[1]
    rng = np.random.default_rng(100 + space)
    m = 40
    t = (rng.standard_normal((m, dim)) * rng.uniform(10, 80, (m, 1))).astype(np.float32)
    if space == 1:
        t = np.abs(t)
    t[:3] = cb[[5, 777, 1234]]                       # exactly on a code
    w = rng.chisquare(1, (m, dim)).astype(np.float32)
    w[m // 2:] = 1
    w[4, : dim // 2] = 0                              # coordinates that do not matter
    with _dispatch.use_isa(isa):
        got = _dispatch.module().nearest_codes(space, t, w)
    for r in range(m):
        e = (w[r] * (t[r] - cb) ** 2).astype(np.float64).sum(axis=1)
        best = e.min()
        # float32 rounding in the package's distances: allow a tiny relative slack.
        assert e[got[r]] <= best * (1 + 1e-5) + 1e-6, (space, r, got[r], int(e.argmin()))


@pytest.mark.parametrize("type", pyref.TYPES)
def test_bytes_independent_of_thread_count(type):
    rng = np.random.default_rng(7)
    x = rng.standard_t(4, (7, 512)).astype(np.float32)
    im = rng.chisquare(2, 512).astype(np.float32)
    one = iqkt.quantize(x, type, im, threads=1)
    for th in (2, 3, 7):
        assert np.array_equal(iqkt.quantize(x, type, im, threads=th), one)


@pytest.mark.parametrize("type", pyref.TYPES)
def test_more_refinement_never_hurts(type):
    """Each refinement pass minimises the error exactly in one set of
    variables, so more passes can only lower the (importance-weighted) error."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((4, 512)).astype(np.float32)
    im = rng.chisquare(1, 512).astype(np.float32)
    k = _dispatch.module()
    errs = []
    prev = k.set_quantizer_knobs(refine_passes=1)
    try:
        for passes in (1, 3, 6):
            k.set_quantizer_knobs(refine_passes=passes)
            q = iqkt.quantize(x, type, im, threads=1)
            errs.append(pyref.rel_err(x, pyref.dequantize(q, type, 512), im))
    finally:
        k.set_quantizer_knobs(*prev)
    assert errs[1] <= errs[0] * (1 + 1e-6) and errs[2] <= errs[1] * (1 + 1e-6), errs


@pytest.mark.parametrize("isa", ISAS)
def test_iq4_cheap_trial_search_same_bytes_everywhere(isa):
    """IQ4's trial scales searched at a cheaper, non-default effort must stay
    deterministic across ISAs and thread counts, and the result must be a
    valid encoding no worse than encoding nothing."""
    rng = np.random.default_rng(21)
    x = rng.standard_t(4, (5, 512)).astype(np.float32)
    im = rng.chisquare(1, 512).astype(np.float32)
    k = _dispatch.module()
    prev = k.set_quantizer_knobs(nflip_trial_iq4=0)
    try:
        want = iqkt.quantize(x, "iq4_kt", im, threads=1)
        with _dispatch.use_isa(isa):
            m = _dispatch.module()
            p2 = m.set_quantizer_knobs(nflip_trial_iq4=0)
            try:
                got1 = iqkt.quantize(x, "iq4_kt", im, threads=1)
                got3 = iqkt.quantize(x, "iq4_kt", im, threads=3)
            finally:
                m.set_quantizer_knobs(*p2)
    finally:
        k.set_quantizer_knobs(*prev)
    assert np.array_equal(got1, want) and np.array_equal(got3, want)
    assert pyref.rel_err(x, pyref.dequantize(want, "iq4_kt", 512), im) < 0.05
