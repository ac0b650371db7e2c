"""Quantizing at a given row scale (`iqkt.quantize(..., row_scale=)`) and the LDLQ error-feedback
quantizer built on it (`iqkt.ldlq.quantize_ldlq`)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import iqkt
from iqkt.ldlq import quantize_ldlq

import pyref

RNG = np.random.default_rng(11)
ROWS, N = 12, 768


def row_scales(q):
    return q[:, :4].copy().view("<f4")[:, 0]


def correlated(n_tokens=4096, n=N, seed=0):
    """Weights and activations whose columns are strongly correlated (a few shared factors plus
    noise, heavy per-column scales), like an LLM layer's inputs."""
    r = np.random.default_rng(seed)
    f = r.standard_normal((n_tokens, 16)) @ r.standard_normal((16, n))
    x = (f + 0.3 * r.standard_normal((n_tokens, n))) * r.chisquare(2, n) ** 0.5
    h = x.T @ x / n_tokens
    w = (r.standard_normal((ROWS, n)) * 0.05).astype(np.float32)
    return w, h


def out_err(w, wq, h):
    e = wq.astype(np.float64) - w
    return float(np.einsum("ij,jk,ik->", e, h, e) / np.einsum("ij,jk,ik->", w, h, w.astype(np.float64)))


@pytest.mark.parametrize("t", iqkt.TYPES)
def test_row_scale_is_stored_and_close_to_free_choice(t):
    x = RNG.standard_normal((ROWS, N)).astype(np.float32)
    im = RNG.chisquare(1, N).astype(np.float32)
    q, s = iqkt.quantize(x, t, im, return_stats=True)
    d = row_scales(q)
    for f in (1.0, 1.25, 0.8):
        qf, sf = iqkt.quantize(x, t, im, return_stats=True, row_scale=d * f)
        np.testing.assert_array_equal(row_scales(qf), (d * f).astype(np.float32))
        # the scale codes adapt: a 25% different row scale costs little, the same one nothing
        bound = 1.02 if f == 1.0 else 1.5
        assert sf["rel_err_total"] <= s["rel_err_total"] * bound
        np.testing.assert_array_equal(iqkt.dequantize(qf, t, N), pyref.dequantize(qf, t, N))


@pytest.mark.parametrize("t", iqkt.TYPES)
def test_row_scale_same_bytes_on_every_isa_and_thread_count(t):
    x = RNG.standard_normal((ROWS, N)).astype(np.float32)
    im = RNG.chisquare(1, N).astype(np.float32)
    d = row_scales(iqkt.quantize(x, t, im)) * np.float32(1.1)
    outs = []
    for isa in iqkt.available_isas():
        with iqkt.use_isa(isa):
            for th in (1, 3):
                outs.append(iqkt.quantize(x, t, im, row_scale=d, threads=th))
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


def test_row_scale_bad_input():
    x = RNG.standard_normal((4, 256)).astype(np.float32)
    with pytest.raises(ValueError, match="row_scale"):
        iqkt.quantize(x, "iq4_kt", row_scale=np.ones(3, np.float32))
    with pytest.raises(ValueError, match="row_scale"):
        iqkt.quantize(x, "iq4_kt", row_scale=np.array([1, np.nan, 1, 1], np.float32))
    with pytest.raises(ValueError, match="overflow"):
        iqkt.quantize(x, "iq2_kt", row_scale=np.full(4, 3e38, np.float32))
    # a zero row scale is valid: every weight decodes to zero
    q = iqkt.quantize(x, "iq3_kt", row_scale=np.zeros(4, np.float32))
    assert not iqkt.dequantize(q, "iq3_kt", 256).any()


@settings(max_examples=25, deadline=None)
@given(t=st.sampled_from(iqkt.TYPES), seed=st.integers(0, 2**31 - 1),
       logf=st.floats(-8, 8), amp=st.floats(-20, 20))
def test_row_scale_property(t, seed, logf, amp):
    r = np.random.default_rng(seed)
    x = (r.standard_normal((2, 256)) * 2.0 ** amp).astype(np.float32)
    d = (r.uniform(-1, 1, 2) * 2.0 ** (amp + logf) / 100).astype(np.float32)
    q = iqkt.quantize(x, t, row_scale=d)
    np.testing.assert_array_equal(row_scales(q), d)
    y = iqkt.dequantize(q, t, 256)
    assert np.isfinite(y).all()
    np.testing.assert_array_equal(y, pyref.dequantize(q, t, 256))


@pytest.mark.parametrize("t", iqkt.TYPES)
def test_ldlq_lowers_output_error_on_correlated_inputs(t):
    w, h = correlated()
    plain = iqkt.quantize(w, t, np.diag(h).astype(np.float32))
    q, stats = quantize_ldlq(w, t, h, return_stats=True)
    assert q.shape == plain.shape and q.dtype == np.uint8
    e_plain = out_err(w, iqkt.dequantize(plain, t, N), h)
    e_ldlq = out_err(w, iqkt.dequantize(q, t, N), h)
    assert e_ldlq < 0.85 * e_plain, (e_ldlq, e_plain)
    per_row = stats["rel_out_err"] * np.einsum("ij,jk,ik->i", w, h, w.astype(np.float64))
    assert per_row.sum() / np.einsum("ij,jk,ik->", w, h, w.astype(np.float64)) == pytest.approx(e_ldlq, rel=1e-6)
    np.testing.assert_array_equal(iqkt.dequantize(q, t, N), pyref.dequantize(q, t, N))


def test_ldlq_without_correlations_is_the_plain_quantizer_quality():
    w, _ = correlated()
    h = np.diag(np.random.default_rng(3).chisquare(1, N))
    for t in iqkt.TYPES:
        plain = iqkt.quantize(w, t, np.diag(h).astype(np.float32))
        q = quantize_ldlq(w, t, h)
        assert out_err(w, iqkt.dequantize(q, t, N), h) <= 1.05 * out_err(w, iqkt.dequantize(plain, t, N), h)


def test_ldlq_effort_levels():
    """The effort level reaches every slice: fast differs from default and, like it, beats the
    plain quantizer's output error on correlated inputs."""
    w, h = correlated(n_tokens=1024)
    plain = iqkt.quantize(w, "iq2_kt", np.diag(h).astype(np.float32))
    q_def = quantize_ldlq(w, "iq2_kt", h)
    q_fast = quantize_ldlq(w, "iq2_kt", h, effort="fast")
    assert not np.array_equal(q_def, q_fast)
    e = {k: out_err(w, iqkt.dequantize(q, "iq2_kt", N), h) for k, q in
         (("plain", plain), ("default", q_def), ("fast", q_fast))}
    assert max(e["default"], e["fast"]) < 0.85 * e["plain"], e   # (fast may even win here: 0.0169 vs 0.0184)
    with pytest.raises(ValueError, match="effort"):
        quantize_ldlq(w, "iq2_kt", h, effort="slow")


def test_ldlq_same_bytes_on_every_isa():
    w, h = correlated(n_tokens=1024)
    outs = []
    for isa in iqkt.available_isas():
        with iqkt.use_isa(isa):
            outs.append(quantize_ldlq(w, "iq3_kt", h, threads=2))
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


def test_ldlq_bad_input():
    w, h = correlated(n_tokens=512)
    with pytest.raises(ValueError, match="768 x 768"):
        quantize_ldlq(w, "iq4_kt", h[:256, :256])
    bad = h.copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        quantize_ldlq(w, "iq4_kt", bad)
    neg = h.copy()
    neg[5, 5] = -1
    with pytest.raises(ValueError, match="negative"):
        quantize_ldlq(w, "iq4_kt", neg)
    with pytest.raises(ValueError, match="multiple of 256"):
        quantize_ldlq(w[:, :300], "iq4_kt", h[:300, :300])
    with pytest.raises(ValueError, match="NaN"):
        quantize_ldlq(np.full_like(w, np.nan), "iq4_kt", h)
    with pytest.raises(ValueError, match="unknown|type"):
        quantize_ldlq(w, "q4_0", h)
