"""iqkt.kquants (Q2_K..Q6_K, IQ4_NL, IQ4_XS encoders) checked through the gguf package's own,
independent dequantizers: the byte layout (every position of a block lands where the decoder
reads it), error bounds that follow from each format's levels, and the error against gguf's
legacy quantizers at similar or higher bit widths."""
from __future__ import annotations

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from iqkt import kquants as kq  # noqa: E402

GT = gguf.GGMLQuantizationType

# A legacy gguf type each must beat (similar or more bits per weight).
BASELINE = {"q2_k": None, "q3_k": None, "q4_k": "q4_0", "q5_k": "q5_0", "q6_k": "q5_1",
            "iq4_nl": "q4_0", "iq4_xs": "q4_0"}


def format_bound(t):
    """Worst per-weight error over a block's max |x| = a, from the format: half a level step at
    the largest group scale s, plus the rounding of the group scales to the format's integer
    scales (half a super-scale step times the largest level), plus half a minimum step.
    Affine types: s <= 2a/nmax; symmetric: s <= a/|lo|; IQ4: widest level gap 23 of 127."""
    if t in ("q2_k", "q4_k", "q5_k"):
        nmax, smax = {"q2_k": (3, 15), "q4_k": (15, 63), "q5_k": (31, 63)}[t]
        s = 2 / nmax
        return s * (0.5 + nmax / (2 * smax)) + 1 / (2 * smax)
    if t in ("q3_k", "q6_k"):
        lo, smax = {"q3_k": (4, 32), "q6_k": (32, 128)}[t]
        s = 1 / lo
        return s * (0.5 + lo / (2 * smax))
    gap = 23 / 2 / 127
    return gap + (127 / 127 / 64 if t == "iq4_xs" else 0)


# The scale search picks the least-squares scale among scales around the range-filling one, which
# may clip the largest weight of a group: allow twice the bound (a packing error gives ~100%).
SEARCH_SLACK = 2.0


def deq(q, t):
    return gguf.quants.dequantize(q, GT[t.upper()]).astype(np.float32)


def weights(rng, rows, n):
    x = (rng.standard_normal((rows, n)) * 0.02).astype(np.float32)
    x[rng.random(x.shape) < 2e-3] *= 10  # outliers
    return x


def rel_err(x, y):
    return float(((x - y) ** 2).sum() / (x ** 2).sum())


@pytest.mark.parametrize("t", kq.TYPES)
def test_sizes_match_gguf(t):
    bs, ts = gguf.GGML_QUANT_SIZES[GT[t.upper()]]
    assert kq.block_size(t) == bs
    assert kq.row_size(t, 4 * bs) == 4 * ts
    q = kq.quantize(np.zeros((3, 2 * bs), np.float32), t)
    assert q.shape == (3, 2 * ts) and q.dtype == np.uint8
    np.testing.assert_array_equal(deq(q, t), 0)
    with pytest.raises(ValueError, match="multiple"):
        kq.quantize(np.zeros((1, bs + 16), np.float32), t)


@pytest.mark.parametrize("t", kq.TYPES)
def test_every_position_decodes_in_place(t):
    """Row i: small noise plus one spike at column i; the decoded spike must be at column i
    (catches any permutation of nibbles, bit planes or groups in the packing)."""
    n = 256
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((n, n)) * 0.01).astype(np.float32)
    x[np.arange(n), np.arange(n)] = np.where(np.arange(n) % 2, 1.0, -1.0)
    y = deq(kq.quantize(x, t), t)
    np.testing.assert_array_equal(np.abs(y).argmax(axis=1), np.arange(n))
    np.testing.assert_allclose(y[np.arange(n), np.arange(n)], x[np.arange(n), np.arange(n)], rtol=0.1)


@pytest.mark.parametrize("t", kq.TYPES)
def test_error_bounds_and_baselines(t):
    rng = np.random.default_rng(2)
    x = weights(rng, 64, 1024)
    q = kq.quantize(x, t)
    y = deq(q, t)
    bs = kq.block_size(t)
    amax = np.abs(x.reshape(-1, bs)).max(axis=1, keepdims=True)
    worst = float((np.abs(x - y).reshape(-1, bs) / amax).max())
    assert worst <= SEARCH_SLACK * format_bound(t), (worst, format_bound(t))
    e = rel_err(x, y)
    base = BASELINE[t]
    if base is not None:
        eb = rel_err(x, deq(gguf.quants.quantize(x, GT[base.upper()]), base))
        assert e < eb, (e, base, eb)


def test_error_decreases_with_bits():
    rng = np.random.default_rng(3)
    x = weights(rng, 32, 1024)
    errs = {t: rel_err(x, deq(kq.quantize(x, t), t)) for t in ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k")}
    vals = list(errs.values())
    assert all(a > 2 * b for a, b in zip(vals, vals[1:])), errs
    assert errs["q6_k"] < 1e-3 and errs["q2_k"] < 0.15, errs


@pytest.mark.parametrize("t", ["q4_k", "q6_k", "iq4_nl", "q3_k"])
def test_imatrix_lowers_the_weighted_error(t):
    rng = np.random.default_rng(4)
    x = weights(rng, 64, 512)
    im = rng.chisquare(1, 512).astype(np.float32) ** 2  # a few columns matter a lot
    def werr(y):
        return float((im * (x - y) ** 2).sum())
    plain = werr(deq(kq.quantize(x, t), t))
    weighted = werr(deq(kq.quantize(x, t, im), t))
    assert weighted < plain
    with pytest.raises(ValueError, match="imatrix"):
        kq.quantize(x, t, im[:10])


def test_bad_input():
    with pytest.raises(ValueError, match="unknown type"):
        kq.quantize(np.zeros((1, 256), np.float32), "q7_k")
    with pytest.raises(ValueError, match="NaN"):
        kq.quantize(np.full((1, 256), np.nan, np.float32), "q4_k")
    with pytest.raises(ValueError, match="float16"):
        kq.quantize(np.full((1, 256), 1e9, np.float32), "q6_k")
