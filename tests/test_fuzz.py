"""Fuzzing with hypothesis: adversarial floats for quantize, arbitrary bytes
for dequantize and mul_mat.  Short by default; IQKT_FUZZ=<n> or IQKT_FUZZ=long
(10000 examples) for longer runs (.ci/fuzz.sh runs a few hundred)."""
import numpy as np
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import iqkt
import pyref
from conftest import fuzz_examples

F32_MAX = float(np.finfo(np.float32).max)
types = st.sampled_from(iqkt.TYPES)


@st.composite
def adversarial_rows(draw):
    """Rows built to break scale logic: subnormals, ±float32 max, mixtures of
    1e-38 and 1e38, constant rows, a lone outlier, zero blocks."""
    t = draw(types)
    rows = draw(st.integers(1, 2))
    n = 256 * draw(st.integers(1, 2))
    kind = draw(st.sampled_from(["subnormal", "extreme", "mixture", "constant", "outlier", "sparse",
                                 "any"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "subnormal":
        x = (rng.integers(0, 1 << 23, (rows, n)).astype(np.uint32)
             | (rng.integers(0, 2, (rows, n)).astype(np.uint32) << 31)).view(np.float32)
    elif kind == "extreme":
        x = np.where(rng.random((rows, n)) < 0.5, -F32_MAX, F32_MAX).astype(np.float32)
        x *= rng.random((rows, n)).astype(np.float32) ** 8
    elif kind == "mixture":
        x = np.where(rng.random((rows, n)) < 0.5, 1e-38, 1e38).astype(np.float32)
        x *= np.sign(rng.standard_normal((rows, n))).astype(np.float32)
    elif kind == "constant":
        x = np.full((rows, n), draw(st.floats(-1e30, 1e30).map(np.float32)), np.float32)
    elif kind == "outlier":
        x = rng.standard_normal((rows, n)).astype(np.float32)
        x[:, rng.integers(0, n)] = draw(st.sampled_from([1e4, -1e20, 3e38, 1e-3]))
    elif kind == "sparse":
        x = np.zeros((rows, n), np.float32)
        idx = rng.integers(0, n, rng.integers(1, 6))
        x[:, idx] = rng.standard_normal(idx.size).astype(np.float32) * draw(
            st.sampled_from([1e-30, 1.0, 1e30]))
    else:
        x = draw(hnp.arrays(np.float32, (rows, n), elements=st.floats(
            -F32_MAX, F32_MAX, width=32)))
    return t, x


def _sq_err(x, y):
    d = x.astype(np.float64) - y.astype(np.float64)
    return (d * d).sum(axis=1)


@settings(max_examples=fuzz_examples(60))
@given(adversarial_rows())
def test_quantize_adversarial(case):
    t, x = case
    n = x.shape[1]
    q = iqkt.quantize(x, t)
    assert q.shape == (x.shape[0], iqkt.row_size(t, n))
    d = q[:, :4].copy().view(np.float32)
    assert np.isfinite(d).all()
    y = iqkt.dequantize(q, t, n)
    assert np.isfinite(y).all()
    # Never worse than quantizing only each row's largest weight (the rest zeroed).
    largest = np.zeros_like(x)
    j = np.abs(x).argmax(axis=1)
    largest[np.arange(x.shape[0]), j] = x[np.arange(x.shape[0]), j]
    y_largest = iqkt.dequantize(iqkt.quantize(largest, t), t, n)
    e, e_largest = _sq_err(x, y), _sq_err(x, y_largest)
    note(f"errors {e} vs largest-only {e_largest}")
    assert np.all(e <= e_largest * (1 + 1e-6) + 1e-300)


@st.composite
def arbitrary_encodings(draw):
    t = draw(types)
    n = 256 * draw(st.integers(1, 2))
    rows = draw(st.integers(1, 3))
    raw = draw(st.binary(min_size=rows * iqkt.row_size(t, n), max_size=rows * iqkt.row_size(t, n)))
    return t, n, np.frombuffer(raw, np.uint8).reshape(rows, -1).copy()


@settings(max_examples=fuzz_examples(80))
@given(arbitrary_encodings(), st.integers(0, 2**32 - 1))
def test_arbitrary_bytes(enc, seed):
    """Any bytes: a non-finite row scale raises ValueError; otherwise decoding
    equals the independent decoder and mul_mat matches its float product."""
    t, n, q = enc
    d = q[:, :4].copy().view(np.float32)[:, 0]
    v = np.random.default_rng(seed).standard_normal(n).astype(np.float32)
    if not np.isfinite(d).all():
        with pytest.raises(ValueError, match="row scale"):
            iqkt.dequantize(q, t, n)
        with pytest.raises(ValueError, match="row scale"):
            iqkt.mul_mat(q, t, v)
        return
    y = iqkt.dequantize(q, t, n)
    ref = pyref.dequantize(q, t, n)
    same = (y.view(np.uint32) == ref.view(np.uint32)) | (np.isnan(y) & np.isnan(ref))
    assert same.all()
    if not np.isfinite(ref).all():
        return                      # products of overflowed weights are not comparable
    w = pyref.dequantize(q, t, n).astype(np.float64) * (1.05 if t == "iq2_kt" else 1.0)
    exact = w @ v.astype(np.float64)
    scale = np.abs(w).sum(axis=1) * np.abs(v).max() + 1e-300
    for precision, tol in (("float", 1e-6), ("int8", 1e-3)):
        got = iqkt.mul_mat(q, t, v, precision=precision).astype(np.float64)
        if np.isfinite(got).all():
            assert np.all(np.abs(got - exact) <= tol * scale), precision
