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
    4: lambda: codebook(8, 4096, 8192),                     # IQ1_KT (13-bit index)
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
    errs = []
    for passes in (1, 3, 6):
        q = iqkt.quantize(x, type, im, threads=1, params={"refine_passes": passes})
        errs.append(pyref.rel_err(x, pyref.dequantize(q, type, 512), im))
    assert errs[1] <= errs[0] * (1 + 1e-6) and errs[2] <= errs[1] * (1 + 1e-6), errs


@pytest.mark.parametrize("params", [dict(nflip_trial_iq4=0), dict(iq4_keep=1, iq4_keep_margin=1.0),
                                    dict(iq4_rank_flips=0), dict(iq4_nsteps=3, iq4_step_margin=[0, 0, 0])])
@pytest.mark.parametrize("isa", ISAS)
def test_iq4_non_default_params_same_bytes_everywhere(isa, params):
    """IQ4 with non-default trial parameters stays deterministic across ISAs
    and thread counts, gives a valid encoding, and leaves the defaults alone
    (params are per call: no state survives it)."""
    rng = np.random.default_rng(21)
    x = rng.standard_t(4, (5, 512)).astype(np.float32)
    im = rng.chisquare(1, 512).astype(np.float32)
    default = iqkt.quantize(x, "iq4_kt", im, threads=1)
    want = iqkt.quantize(x, "iq4_kt", im, threads=1, params=params)
    with _dispatch.use_isa(isa):
        assert np.array_equal(iqkt.quantize(x, "iq4_kt", im, threads=1, params=params), want)
        assert np.array_equal(iqkt.quantize(x, "iq4_kt", im, threads=3, params=params), want)
    assert np.array_equal(iqkt.quantize(x, "iq4_kt", im, threads=1), default)
    assert pyref.rel_err(x, pyref.dequantize(want, "iq4_kt", 512), im) < 0.05


@pytest.mark.parametrize("type", pyref.TYPES)
def test_approximate_last_pass_same_bytes_everywhere(type):
    """An approximate last refinement pass (nflip_refine, used to measure what
    the exact pass buys) stays deterministic across ISAs and thread counts."""
    rng = np.random.default_rng(23)
    x = rng.standard_t(3, (3, 512)).astype(np.float32)
    im = rng.chisquare(1, 512).astype(np.float32)
    p = {"nflip_refine": 3}
    want = iqkt.quantize(x, type, im, threads=1, params=p)
    for isa in ISAS:
        with _dispatch.use_isa(isa):
            assert np.array_equal(iqkt.quantize(x, type, im, threads=2, params=p), want), isa
    assert pyref.rel_err(x, pyref.dequantize(want, type, 512), im) < 0.2


def test_quantizer_params_validated():
    with pytest.raises(TypeError, match="no_such_param"):
        iqkt.quantize(np.ones((1, 256), np.float32), "iq2_kt", params={"no_such_param": 1})
    with pytest.raises(TypeError, match="mapping"):
        iqkt.quantize(np.ones((1, 256), np.float32), "iq2_kt", params=3)
    defaults = iqkt._api.quantizer_params()
    assert iqkt._api.quantizer_params(defaults) == defaults
    assert iqkt._api.quantizer_params({"refine_passes": 0})["refine_passes"] == 1   # clamped


def test_params_run_concurrently_without_interference():
    """Two threads quantizing with different params at once each get the
    bytes their params give alone (no process-wide state)."""
    import concurrent.futures
    rng = np.random.default_rng(24)
    x = rng.standard_normal((6, 512)).astype(np.float32)
    a = iqkt.quantize(x, "iq4_kt", threads=1)
    b = iqkt.quantize(x, "iq4_kt", threads=1, params={"iq4_keep": 1, "refine_passes": 1})
    assert not np.array_equal(a, b)
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        futs = [ex.submit(iqkt.quantize, x, "iq4_kt", threads=1,
                          params=None if i % 2 == 0 else {"iq4_keep": 1, "refine_passes": 1})
                for i in range(8)]
        for i, f in enumerate(futs):
            assert np.array_equal(f.result(), a if i % 2 == 0 else b)


def _fma32(a, b, c):
    """float32 a * b + c with a single rounding (as C's fmaf).  The product
    of two float32 is exact in extended precision; the sum is rounded there
    and then to float32, which differs from one rounding only when the first
    rounding lands exactly on a float32 midpoint (rare: 2**-40 or so per step
    with an 80-bit long double)."""
    ld = np.longdouble
    return (np.asarray(a, ld) * np.asarray(b, ld) + np.asarray(c, ld)).astype(np.float32)


def _exact_f32_nearest(cb: np.ndarray, t: np.ndarray, w: np.ndarray) -> int:
    """The search's own definition: e = fma(w_k * d_k, d_k, e) in float32 in
    coordinate order (one rounding per fused step), the minimum in
    (e, index) order (NaN never wins)."""
    e = np.zeros(cb.shape[0], dtype=np.float32)
    for k in range(cb.shape[1]):
        d = np.float32(t[k]) - cb[:, k]
        e = _fma32(np.float32(w[k]) * d, d, e)
    e = np.where(np.isnan(e), np.float32(np.inf), e)
    return int(np.argmin(e))                          # first index of the minimum


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("space", sorted(SPACES))
def test_exact_search_ties_and_zero_weights(isa, space):
    """Exact search returns exactly the (distance, index) minimum, ties
    included: targets on codes and half-way between integers, weights with
    zeros (many codes at the same distance), coarse integer weights."""
    cb = SPACES[space]()
    dim = cb.shape[1]
    rng = np.random.default_rng(300 + space)
    m = 30
    t = np.round(rng.standard_normal((m, dim)) * 40).astype(np.float32)
    t[m // 3:] += 0.5                                 # half-way: ties between neighbours
    if space == 1:
        t = np.abs(t)
    w = rng.integers(0, 3, (m, dim)).astype(np.float32)
    w[::5] = 0
    w[1::5, 0] = 1
    with _dispatch.use_isa(isa):
        got = _dispatch.module().nearest_codes(space, t, w)
    for r in range(m):
        assert got[r] == _exact_f32_nearest(cb, t[r], w[r]), (space, r)


@pytest.mark.parametrize("space", sorted(SPACES))
def test_exact_search_tiny_and_huge_weights(space):
    """Weights whose distances are subnormal, or near float's top, and
    targets on or half-way between codes (near ties): every ISA returns the
    fused-arithmetic (distance, index) minimum.  The portable build screens
    with unfused arithmetic and a margin; this is where a margin too small
    would show."""
    cb = SPACES[space]()
    dim = cb.shape[1]
    rng = np.random.default_rng(500 + space)
    m = 40
    t = np.round(rng.standard_normal((m, dim)) * 40).astype(np.float32)
    t[m // 2:] += 0.5
    if space == 1:
        t = np.abs(t)
    w = (rng.random((m, dim)) * 10.0 ** -rng.uniform(36, 44, (m, dim))).astype(np.float32)
    w[::4] = (rng.random((m // 4, dim)) * 1e33).astype(np.float32)
    for isa in ISAS:
        with _dispatch.use_isa(isa):
            got = _dispatch.module().nearest_codes(space, t, w)
        for r in range(m):
            assert got[r] == _exact_f32_nearest(cb, t[r], w[r]), (isa, space, r)


@pytest.mark.parametrize("space", sorted(SPACES))
def test_search_non_finite_targets_same_on_every_isa(space):
    """Infinite or NaN targets (a tiny block scale can overflow 1/scale)
    with zero or huge weights: every ISA picks the same code."""
    dim = SPACES[space]().shape[1]
    rng = np.random.default_rng(400 + space)
    m = 400
    t = (rng.standard_normal((m, dim)) * 37).astype(np.float32)
    u = rng.random((m, dim))
    t[u < 0.05] = np.inf
    t[(u >= 0.05) & (u < 0.1)] = -np.inf
    t[(u >= 0.1) & (u < 0.13)] = np.nan
    t[(u >= 0.13) & (u < 0.16)] = 3e38
    w = rng.chisquare(1, (m, dim)).astype(np.float32)
    w[rng.random((m, dim)) < 0.2] = 0
    w[rng.random((m, dim)) < 0.02] = 3e38
    t[:40] = np.inf
    w[:20] = 0
    t[40:60] = np.nan
    for nflip in (0, 2, 3, 8):
        outs = []
        for isa in ISAS:
            with _dispatch.use_isa(isa):
                outs.append(_dispatch.module().nearest_codes(space, t, w, nflip))
        for isa, o in zip(ISAS, outs):
            assert np.array_equal(o, outs[0]), (isa, nflip)


@pytest.mark.parametrize("isa", iqkt.available_isas())
@pytest.mark.parametrize("type_", ["iq2_kt", "iq1_kt"])
def test_nearest_table_code_is_the_scan(isa, type_):
    """The branch-free nearest scale code (midpoint count, then down through
    equal float distances) picks what a first-minimum scan of fabsf(v - value)
    picks: ties at midpoints and their float neighbours, values far outside
    the table (distances that round alike), NaN, infinities, subnormals."""
    rng = np.random.default_rng(11)
    table = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113]
    mids = np.array([(a + b) / 2 for a, b in zip(table, table[1:])], np.float32)
    f32 = np.finfo(np.float32)
    v = np.concatenate([rng.standard_normal(20000) * s for s in (1, 30, 1e4, 1e9, 1e30)] + [
        mids, np.nextafter(mids, np.float32(np.inf)), np.nextafter(mids, np.float32(-np.inf)),
        np.array(table, np.float32), [np.nan, np.inf, -np.inf, 0.0, -0.0, f32.max, -f32.max, f32.tiny, 1e-45],
    ]).astype(np.float32)
    with iqkt.use_isa(isa):
        fast, scan = _dispatch.module()._nearest_table_codes(iqkt.TYPES.index(type_), v)
    assert fast == scan
    assert len(set(scan)) == len(table)     # every code reached
