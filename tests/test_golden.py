"""Golden vectors from the reference implementation (tests/data/*.npz).

The first group of tests validates ``pyref`` against the golden data and needs no
package; the rest checks ``iqkt`` against the golden data and against pyref.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest

import pyref
from conftest import GOLDEN_CASES, golden_params

BY_NAME = {c.name: c for c in GOLDEN_CASES}


def bits(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32)).view(np.uint32)


def rel_l2(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    nb = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / nb) if nb > 0 else float(np.linalg.norm(a - b))


# The types with reference vectors from ik_llama.cpp.  IQ1_KT has none: its
# decode is checked against the format formula in test_iq1.py.
GOLDEN_TYPES = ("iq2_kt", "iq3_kt", "iq4_kt")


def test_golden_set_complete():
    names = {c.name for c in GOLDEN_CASES}
    assert {c.type for c in GOLDEN_CASES} == set(GOLDEN_TYPES)
    for t in GOLDEN_TYPES:
        for case in ("gauss", "gauss_imatrix", "heavy", "edge", "imatrix_zero", "wide"):
            assert f"{t}_{case}" in names


# ------------------------------------------------------------------ pyref validation
@pytest.mark.parametrize(**golden_params())
def test_pyref_row_size(golden):
    assert golden.q.shape == (golden.rows, pyref.row_size(golden.type, golden.n))


@pytest.mark.parametrize(**golden_params())
def test_pyref_decoder_bit_exact(golden):
    deq = pyref.dequantize(golden.q, golden.type, golden.n)
    assert deq.dtype == np.float32 and deq.shape == golden.deq_ref.shape
    assert np.array_equal(bits(deq), bits(golden.deq_ref))


@pytest.mark.parametrize(**golden_params())
def test_pyref_scalar_decoder_bit_exact(golden):
    rows = slice(0, 2)
    deq = pyref.dequantize_scalar(golden.q[rows], golden.type, golden.n)
    assert np.array_equal(bits(deq), bits(golden.deq_ref[rows]))


@pytest.mark.parametrize(**golden_params())
def test_pyref_product_matches_y_ref(golden):
    # y_ref = (deq_ref * f) @ v in float64, f = 1.05 for IQ2_KT: pins the factor.
    y = pyref.mul_mat_exact(golden.q, golden.type, golden.n, golden.v)
    np.testing.assert_allclose(y, golden.y_ref, rtol=1e-12, atol=1e-12 * np.abs(golden.y_ref).max())


def test_pyref_metric():
    x = np.array([[1.0, 2.0, 0.0, -2.0]])
    y = np.array([[1.0, 1.0, 1.0, -2.0]])
    assert pyref.rel_err(x, y) == pytest.approx(2.0 / 9.0)
    w = np.array([0.0, 2.0, 5.0, 1.0])
    assert pyref.rel_err(x, y, w) == pytest.approx((2 * 1 + 5 * 1) / (2 * 4 + 4))
    x2 = np.vstack([x, 2 * x])
    y2 = np.vstack([y, 2 * x])
    assert pyref.rel_err(x2, y2) == pytest.approx(2.0 / (9 + 36))
    np.testing.assert_allclose(pyref.rel_err_rows(x2, y2), [2.0 / 9.0, 0.0])
    assert pyref.rel_err(np.zeros((1, 4)), np.zeros((1, 4))) == 0.0


# ------------------------------------------------------------------ package: decoding
@pytest.mark.parametrize(**golden_params())
def test_dequantize_bit_exact(iqkt_mod, golden):
    deq = iqkt_mod.dequantize(golden.q, golden.type, golden.n)
    assert isinstance(deq, np.ndarray)
    assert deq.dtype == np.float32
    assert deq.shape == (golden.rows, golden.n)
    assert np.array_equal(bits(deq), bits(golden.deq_ref))


@pytest.mark.parametrize(**golden_params())
def test_dequantize_single_rows_bit_exact(iqkt_mod, golden):
    for r in (0, golden.rows - 1):
        deq = iqkt_mod.dequantize(golden.q[r:r + 1], golden.type, golden.n)
        assert np.array_equal(bits(deq), bits(golden.deq_ref[r:r + 1]))


@pytest.mark.parametrize(**golden_params())
def test_dequantize_inference_values(iqkt_mod, golden):
    deq = iqkt_mod.dequantize(golden.q, golden.type, golden.n, inference=True)
    assert deq.dtype == np.float32
    if golden.type == "iq2_kt":
        np.testing.assert_allclose(deq, golden.deq_ref.astype(np.float64) * 1.05, rtol=1e-6, atol=0)
    else:
        assert np.array_equal(bits(deq), bits(golden.deq_ref))


# ------------------------------------------------------------------ package: quantizing
@functools.lru_cache(maxsize=None)
def _quantized(name: str):
    import iqkt

    c = BY_NAME[name]
    q = iqkt.quantize(c.x, c.type, c.imatrix)
    q.setflags(write=False)
    return q


@pytest.mark.parametrize(**golden_params())
def test_quantize_shape_dtype(iqkt_mod, golden):
    q = _quantized(golden.name)
    assert isinstance(q, np.ndarray)
    assert q.dtype == np.uint8
    assert q.shape == (golden.rows, pyref.row_size(golden.type, golden.n))
    assert np.all(np.isfinite(pyref.row_scales(q, golden.type, golden.n)))


@pytest.mark.parametrize(**golden_params())
def test_quantize_quality_not_worse_than_reference(iqkt_mod, golden):
    q = _quantized(golden.name)
    y = pyref.dequantize(q, golden.type, golden.n)
    ours = pyref.rel_err(golden.x, y, golden.imatrix)
    ref = pyref.rel_err(golden.x, golden.deq_ref, golden.imatrix)
    assert ours <= ref * (1 + 1e-9) + 1e-12, f"{golden.name}: error {ours:.6g} > reference {ref:.6g}"


@pytest.mark.parametrize(**golden_params())
def test_quantize_quality_per_row(iqkt_mod, golden):
    """No row may be much worse than the reference's row (catches rows that the
    total error cannot see, e.g. tiny-magnitude rows next to a 100-sigma outlier)."""
    q = _quantized(golden.name)
    y = pyref.dequantize(q, golden.type, golden.n)
    ours = pyref.rel_err_rows(golden.x, y, golden.imatrix)
    ref = pyref.rel_err_rows(golden.x, golden.deq_ref, golden.imatrix)
    bad = np.nonzero(ours > ref * 1.25 + 1e-9)[0]
    assert bad.size == 0, f"{golden.name}: rows {bad.tolist()} ours={ours[bad]} ref={ref[bad]}"


@pytest.mark.parametrize(**golden_params())
def test_quantize_format_agreement(iqkt_mod, golden):
    """iqkt's bytes decode the same through pyref and through iqkt."""
    q = _quantized(golden.name)
    a = pyref.dequantize(q, golden.type, golden.n)
    b = iqkt_mod.dequantize(q, golden.type, golden.n)
    assert np.array_equal(bits(a), bits(b))


@pytest.mark.parametrize(**golden_params())
def test_quantize_return_stats(iqkt_mod, golden):
    q2, stats = iqkt_mod.quantize(golden.x, golden.type, golden.imatrix, return_stats=True)
    assert np.array_equal(q2, _quantized(golden.name))
    rel = np.asarray(stats["rel_err"])
    assert rel.dtype == np.float64 and rel.shape == (golden.rows,)
    y = pyref.dequantize(q2, golden.type, golden.n)
    exp = pyref.rel_err_rows(golden.x, y, golden.imatrix)
    np.testing.assert_allclose(rel, exp, rtol=1e-4, atol=1e-12)


# ------------------------------------------------------------------ package: products
@pytest.mark.parametrize(**golden_params())
def test_mul_mat_int16_close_to_y_ref(iqkt_mod, golden):
    y = iqkt_mod.mul_mat(golden.q, golden.type, golden.v, precision="int16")
    assert y.dtype == np.float32 and y.shape == (golden.rows,)
    assert rel_l2(y, golden.y_ref) < 1e-3


# The per-32 int8 model itself misses 1.5% here: a row of block magnitudes
# spanning 1e-6..1e2 whose product cancels to ~1.5 (model: 2.6%).  No kernel
# with int8 activations per 32 at d = amax / 127 can do better on it.
INT8_MODEL_ABOVE_1_5_PERCENT = {"iq4_kt_edge"}


@pytest.mark.parametrize(**golden_params())
def test_mul_mat_int8_within_model_bound(iqkt_mod, golden):
    """precision="int8" (the default): no worse than the reference's per-32
    int8 activation scheme (numpy model, tests/pyref.py) on the same inputs,
    and at most 1.5% wherever that model is."""
    y = iqkt_mod.mul_mat(golden.q, golden.type, golden.v)
    assert y.dtype == np.float32 and y.shape == (golden.rows,)
    model_err = rel_l2(pyref.mul_mat_int8_model(golden.q, golden.type, golden.n, golden.v), golden.y_ref)
    err = rel_l2(y, golden.y_ref)
    assert err <= model_err * (1 + 1e-3) + 1e-6
    assert (model_err > 0.015) == (golden.name in INT8_MODEL_ABOVE_1_5_PERCENT), model_err
    if golden.name not in INT8_MODEL_ABOVE_1_5_PERCENT:
        assert err <= 0.015


@pytest.mark.parametrize(**golden_params())
def test_mul_mat_float_close_to_y_ref(iqkt_mod, golden):
    y = iqkt_mod.mul_mat(golden.q, golden.type, golden.v, precision="float")
    assert y.dtype == np.float32 and y.shape == (golden.rows,)
    assert rel_l2(y, golden.y_ref) < 1e-5


@pytest.mark.parametrize(**golden_params())
def test_mul_mat_on_own_quantization(iqkt_mod, golden):
    q = _quantized(golden.name)
    exact = pyref.mul_mat_exact(q, golden.type, golden.n, golden.v)
    assert rel_l2(iqkt_mod.mul_mat(q, golden.type, golden.v, precision="float"), exact) < 1e-5
    assert rel_l2(iqkt_mod.mul_mat(q, golden.type, golden.v, precision="int16"), exact) < 1e-3
    assert rel_l2(iqkt_mod.mul_mat(q, golden.type, golden.v), exact) <= \
        pyref.int8_error_bound(q, golden.type, golden.n, golden.v, exact)
