"""Every compiled ISA variant computes what the scalar variant computes: the same
quantized bytes, the same dequantized floats, the same trellis, and products
within float rounding."""
from __future__ import annotations

import functools

import numpy as np
import pytest

import iqkt
import pyref
from pyref import summation_order_ratio
from conftest import GOLDEN_CASES

TYPES = ("iq2_kt", "iq3_kt", "iq4_kt", "iq1_kt")
ISAS = iqkt.available_isas()
OTHER_ISAS = [i for i in ISAS if i != "scalar"] or ["scalar"]


def bits(a):
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32)).view(np.uint32)


def rel_l2(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    nb = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / nb) if nb > 0 else float(np.linalg.norm(a - b))


def _random_inputs():
    rng = np.random.default_rng(123)
    out = []
    for t in TYPES:
        x = rng.standard_normal((3, 768)).astype(np.float32)
        x[1] *= np.float32(1e-3)
        x[2, 5] = 40.0
        im = rng.chisquare(1, 768).astype(np.float32)
        im[::7] = 0
        heavy = rng.standard_t(2, (2, 512)).astype(np.float32)
        out.append((f"{t}-gauss", t, x, None))
        out.append((f"{t}-gauss-im", t, x, im))
        out.append((f"{t}-heavy", t, heavy, None))
    return out


RANDOM = _random_inputs()


@functools.lru_cache(maxsize=None)
def scalar_quantize(key):
    with iqkt.use_isa("scalar"):
        return _run_quantize(key)


def _inputs(key):
    kind, name = key
    if kind == "golden":
        c = {g.name: g for g in GOLDEN_CASES}[name]
        return c.type, c.x, c.imatrix
    (_, t, x, im), = [r for r in RANDOM if r[0] == name]
    return t, x, im


def _run_quantize(key):
    t, x, im = _inputs(key)
    q = iqkt.quantize(x, t, im)
    q.setflags(write=False)
    return q


KEYS = [("golden", c.name) for c in GOLDEN_CASES] + [("random", r[0]) for r in RANDOM]
KEY_IDS = [k[1] for k in KEYS]


def test_scalar_is_available():
    assert "scalar" in ISAS
    with iqkt.use_isa("scalar"):
        assert iqkt.isa() == "scalar"


@pytest.mark.parametrize("isa", ISAS)
def test_use_isa_switches(isa):
    before = iqkt.isa()
    with iqkt.use_isa(isa):
        assert iqkt.isa() == isa
    assert iqkt.isa() == before


@pytest.mark.parametrize("isa", OTHER_ISAS)
@pytest.mark.parametrize("key", KEYS, ids=KEY_IDS)
def test_quantize_identical_to_scalar(isa, key):
    ref = scalar_quantize(key)
    with iqkt.use_isa(isa):
        q = _run_quantize(key)
    if not np.array_equal(q, ref):
        t, x, _ = _inputs(key)
        n = x.shape[1]
        rows = np.nonzero(np.any(q != ref, axis=1))[0]
        pytest.fail(f"{isa}: bytes differ from scalar in rows {rows.tolist()} "
                    f"(first differing byte offsets {[int(np.argmax(q[r] != ref[r])) for r in rows[:4]]}, "
                    f"n={n}, type={t})")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("key", KEYS, ids=KEY_IDS)
def test_dequantize_identical(isa, key):
    t, x, _ = _inputs(key)
    n = x.shape[1]
    q = scalar_quantize(key)
    exp = pyref.dequantize(q, t, n)
    with iqkt.use_isa(isa):
        got = iqkt.dequantize(q, t, n)
        got_inf = iqkt.dequantize(q, t, n, inference=True)
    with iqkt.use_isa("scalar"):
        ref_inf = iqkt.dequantize(q, t, n, inference=True)
    assert np.array_equal(bits(got), bits(exp))
    assert np.array_equal(bits(got_inf), bits(ref_inf))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("golden", GOLDEN_CASES, ids=[c.name for c in GOLDEN_CASES])
def test_dequantize_golden(isa, golden):
    with iqkt.use_isa(isa):
        got = iqkt.dequantize(golden.q, golden.type, golden.n)
    assert np.array_equal(bits(got), bits(golden.deq_ref))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("t", TYPES)
def test_dequantize_random_bytes(isa, t):
    rng = np.random.default_rng(99)
    n = 1024
    q = rng.integers(0, 256, size=(5, iqkt.row_size(t, n)), dtype=np.uint8)
    d = np.array([1.0, -3.5e-3, 1e-30, 2.5e30, 1.4e-45], dtype="<f4")
    q[:, :4] = d.view(np.uint8).reshape(5, 4)
    exp = pyref.dequantize(q, t, n)
    with iqkt.use_isa(isa):
        got = iqkt.dequantize(q, t, n)
    assert np.array_equal(bits(got), bits(exp))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("steps", [1, 3, 4, 7, 8, 9, 16, 33])
def test_trellis_identical(isa, steps):
    rng = np.random.default_rng(steps)
    seeds = np.concatenate([
        np.array([0, 1, 4096, 4096 + 32768, 2**31, 2**32 - 1], dtype=np.uint32),
        rng.integers(0, 2**32, size=1000, dtype=np.uint64).astype(np.uint32),
    ])
    with iqkt.use_isa(isa):
        got = iqkt.trellis(seeds, steps)
    assert got.dtype == np.int8
    assert np.array_equal(got, pyref.trellis(seeds, steps))


@pytest.mark.parametrize("isa", OTHER_ISAS)
@pytest.mark.parametrize("key", KEYS, ids=KEY_IDS)
@pytest.mark.parametrize("prec", ["int8", "int16", "float"])
def test_mul_mat_close_to_scalar(isa, key, prec):
    t, x, _ = _inputs(key)
    n = x.shape[1]
    q = scalar_quantize(key)
    rng = np.random.default_rng(n)
    v1 = rng.standard_normal(n).astype(np.float32)
    vb = rng.standard_normal((4, n)).astype(np.float32)
    vg = rng.standard_normal((16, n)).astype(np.float32)   # the batch / GEMM kernels
    with iqkt.use_isa("scalar"):
        r1 = iqkt.mul_mat(q, t, v1, precision=prec)
        rb = iqkt.mul_mat(q, t, vb, precision=prec)
        rg = iqkt.mul_mat(q, t, vg, precision=prec)
    with iqkt.use_isa(isa):
        g1 = iqkt.mul_mat(q, t, v1, precision=prec)
        gb = iqkt.mul_mat(q, t, vb, precision=prec)
        gg = iqkt.mul_mat(q, t, vg, precision=prec)
    assert summation_order_ratio(g1, r1, q, t, n, v1, prec) <= 1.0
    assert summation_order_ratio(gb, rb, q, t, n, vb, prec) <= 1.0
    assert summation_order_ratio(gg, rg, q, t, n, vg, prec) <= 1.0
    assert rel_l2(g1, r1) < 1e-4  # a loose plain check as well
    assert rel_l2(gb, rb) < 1e-4
    exact = pyref.mul_mat_exact(q, t, n, v1)
    tol = {"float": 1e-5, "int16": 0.01}.get(prec) or pyref.int8_error_bound(q, t, n, v1, exact)
    assert rel_l2(g1, exact) <= tol


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("golden", [c for c in GOLDEN_CASES if c.case in ("gauss", "edge", "wide")],
                         ids=lambda c: c.name)
def test_mul_mat_golden(isa, golden):
    with iqkt.use_isa(isa):
        y8 = iqkt.mul_mat(golden.q, golden.type, golden.v)
        y16 = iqkt.mul_mat(golden.q, golden.type, golden.v, precision="int16")
        yf = iqkt.mul_mat(golden.q, golden.type, golden.v, precision="float")
    assert rel_l2(y8, golden.y_ref) <= pyref.int8_error_bound(golden.q, golden.type, golden.n, golden.v,
                                                              golden.y_ref)
    assert rel_l2(y16, golden.y_ref) < 0.01
    assert rel_l2(yf, golden.y_ref) < 1e-5
