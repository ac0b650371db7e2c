"""Property-based tests (hypothesis).  Profiles: "ci" (default) and "long"
(IQKT_FUZZ=long), registered in conftest.py.  Shapes are kept small so each test
stays within ~20 s on the scalar variant."""
from __future__ import annotations

import numpy as np
from hypothesis import given, note, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import iqkt
import pyref
from conftest import fuzz_examples

TYPES = ("iq2_kt", "iq3_kt", "iq4_kt")
# Loose per-row bounds for Gaussian rows (measured worst row of many ~ 1/2 of these).
GAUSS_BOUND = {"iq2_kt": 0.2, "iq3_kt": 0.08, "iq4_kt": 0.03}

types = st.sampled_from(TYPES)
shapes = st.tuples(st.integers(1, 3), st.sampled_from([256, 512]))


def bits(a):
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32)).view(np.uint32)


def same_floats(a, b):
    """Bitwise equal, except that any NaN equals any NaN."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    both_nan = np.isnan(a) & np.isnan(b)
    return bool(np.all((bits(a) == bits(b)) | both_nan))


@st.composite
def gaussian_rows(draw, with_imatrix=False):
    t = draw(types)
    rows, n = draw(shapes)
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from([1e-20, 1e-6, 1e-2, 1.0, 37.0, 1e4, 1e20]))
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, n)) * scale).astype(np.float32)
    im = None
    if with_imatrix:
        im = rng.chisquare(draw(st.sampled_from([1, 2, 8])), n).astype(np.float32)
    return t, x, im


finite_f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
modest_f32 = st.floats(min_value=-1e6, max_value=1e6, width=32, allow_nan=False, allow_infinity=False)


@st.composite
def arbitrary_rows(draw):
    t = draw(types)
    rows, n = draw(shapes)
    elements = draw(st.sampled_from([finite_f32, modest_f32]))
    x = draw(hnp.arrays(np.float32, (rows, n), elements=elements))
    return t, x


@settings(max_examples=fuzz_examples(40))
@given(gaussian_rows())
def test_gaussian_roundtrip_error_bounded(case):
    t, x, _ = case
    q = iqkt.quantize(x, t)
    y = iqkt.dequantize(q, t, x.shape[1])
    e = pyref.rel_err_rows(x, y)
    note(f"per-row errors {e}")
    assert np.all(e <= GAUSS_BOUND[t]), e


@settings(max_examples=fuzz_examples(30))
@given(gaussian_rows(with_imatrix=True))
def test_gaussian_imatrix_roundtrip_error_bounded(case):
    t, x, im = case
    q = iqkt.quantize(x, t, im)
    y = pyref.dequantize(q, t, x.shape[1])
    e = pyref.rel_err_rows(x, y, im)
    note(f"per-row weighted errors {e}")
    assert np.all(e <= GAUSS_BOUND[t]), e


@settings(max_examples=fuzz_examples(40))
@given(arbitrary_rows())
def test_arbitrary_finite_input_never_worse_than_zero(case):
    t, x = case
    q = iqkt.quantize(x, t)
    n = x.shape[1]
    assert np.all(np.isfinite(pyref.row_scales(q, t, n)))
    y = iqkt.dequantize(q, t, n)
    assert np.all(np.isfinite(y))
    assert np.array_equal(bits(y), bits(pyref.dequantize(q, t, n)))
    e = pyref.rel_err_rows(x, y)
    note(f"per-row errors {e}")
    assert np.all(e <= 1.0 + 1e-5), e


@settings(max_examples=fuzz_examples(30))
@given(gaussian_rows())
def test_requantize_is_stable(case):
    """The decoded values are exactly representable, so quantizing them again must
    not lose more than the first quantization lost."""
    t, x, _ = case
    n = x.shape[1]
    y1 = iqkt.dequantize(iqkt.quantize(x, t), t, n)
    e1 = pyref.rel_err_rows(x, y1)
    y2 = iqkt.dequantize(iqkt.quantize(y1, t), t, n)
    e2 = pyref.rel_err_rows(y1, y2)
    note(f"first {e1} second {e2}")
    assert np.all(e2 <= e1 * (1 + 1e-6) + 1e-12), (e1, e2)


@st.composite
def random_encodings(draw, scales=finite_f32):
    t = draw(types)
    rows = draw(st.integers(1, 3))
    nsb = draw(st.integers(1, 3))
    n = 256 * nsb
    rs = pyref.row_size(t, n)
    body = draw(st.binary(min_size=rows * (rs - 4), max_size=rows * (rs - 4)))
    d = draw(st.lists(scales, min_size=rows, max_size=rows))
    q = np.empty((rows, rs), dtype=np.uint8)
    q[:, 4:] = np.frombuffer(body, dtype=np.uint8).reshape(rows, rs - 4)
    q[:, :4] = np.array(d, dtype="<f4").view(np.uint8).reshape(rows, 4)
    return t, n, q


@settings(max_examples=fuzz_examples(50))
@given(random_encodings())
def test_random_bytes_decode_like_pyref(enc):
    """Every byte string with a finite row scale is a valid encoding."""
    t, n, q = enc
    got = iqkt.dequantize(q, t, n)
    exp = pyref.dequantize(q, t, n)
    assert got.shape == exp.shape and got.dtype == np.float32
    assert same_floats(got, exp)
    assert same_floats(iqkt.dequantize(q.tobytes(), t, n), exp)


@settings(max_examples=fuzz_examples(40))
@given(random_encodings(scales=st.floats(min_value=-1e3, max_value=1e3, width=32, allow_nan=False)),
       st.integers(0, 2**32 - 1), st.sampled_from([1e-3, 1.0, 50.0]), st.integers(1, 3))
def test_random_bytes_mul_mat_bounds(enc, seed, vscale, B):
    """Products on arbitrary encodings: the float path is exact up to float32
    rounding, the int8 path is off by at most one activation quantization step."""
    t, n, q = enc
    rng = np.random.default_rng(seed)
    v = (rng.standard_normal((B, n)) * vscale).astype(np.float32)
    w = pyref.dequantize(q, t, n, inference=True).astype(np.float64)  # inference weights (~1.05x IQ2)
    w_exact = pyref.dequantize(q, t, n).astype(np.float64) * pyref.INFERENCE_FACTOR[t]
    exact = v.astype(np.float64) @ w_exact.T                          # (B, N)
    mag = np.abs(v).astype(np.float64) @ np.abs(w).T                  # Σ|w||v|
    yf = iqkt.mul_mat(q, t, v, precision="float")
    assert yf.shape == (B, q.shape[0])
    assert np.all(np.abs(yf - exact) <= 1e-5 * mag + 1e-30), np.max(np.abs(yf - exact) / (mag + 1e-30))
    y8 = iqkt.mul_mat(q, t, v)
    step = np.abs(v).max(axis=1, keepdims=True).astype(np.float64) / 127.0       # (B, 1)
    bound = step * np.abs(w).sum(axis=1)[None, :] * 1.01 + 1e-5 * mag + 1e-30
    assert np.all(np.abs(y8 - exact) <= bound), np.max(np.abs(y8 - exact) / bound)


@settings(max_examples=fuzz_examples(25))
@given(gaussian_rows(with_imatrix=True), st.sampled_from([2, 3, 4]))
def test_threads_identical(case, k):
    t, x, im = case
    n = x.shape[1]
    x = np.vstack([x, x[::-1] * np.float32(0.5)])  # a few more rows than threads
    q1 = iqkt.quantize(x, t, im, threads=1)
    qk = iqkt.quantize(x, t, im, threads=k)
    assert np.array_equal(q1, qk)
    assert np.array_equal(bits(iqkt.dequantize(q1, t, n, threads=1)), bits(iqkt.dequantize(q1, t, n, threads=k)))
    v = x[:2].astype(np.float32)
    assert np.array_equal(bits(iqkt.mul_mat(q1, t, v, threads=1)), bits(iqkt.mul_mat(q1, t, v, threads=k)))
