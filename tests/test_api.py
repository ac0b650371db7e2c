"""Public API behaviour: types, sizes, input conversions, QuantizedMatrix,
threads, inference factor, batched products, statistics."""
from __future__ import annotations

import functools

import numpy as np
import pytest

import iqkt
import pyref
from conftest import GOLDEN_CASES

TYPES = ("iq2_kt", "iq3_kt", "iq4_kt", "iq1_kt")
BPW = {"iq2_kt": 2.125, "iq3_kt": 3.125, "iq4_kt": 4.0, "iq1_kt": 1.75}
BLOCK = {"iq2_kt": 68, "iq3_kt": 100, "iq4_kt": 128, "iq1_kt": 56}


def bits(a):
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32)).view(np.uint32)


def rel_l2(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@functools.lru_cache(maxsize=None)
def sample(rows=3, n=512, seed=0, imatrix=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, n)).astype(np.float32)
    im = rng.chisquare(2, n).astype(np.float32) if imatrix else None
    x.setflags(write=False)
    return x, im


@functools.lru_cache(maxsize=None)
def quantized(t, rows=3, n=512, seed=0, imatrix=False):
    x, im = sample(rows, n, seed, imatrix)
    q = iqkt.quantize(x, t, im)
    q.setflags(write=False)
    return q


# ------------------------------------------------------------------ constants and sizes
def test_types():
    assert iqkt.TYPES == TYPES


@pytest.mark.parametrize("t", TYPES)
@pytest.mark.parametrize("n", [256, 512, 768, 4096, 11008, 256 * 1000])
def test_row_size(t, n):
    assert iqkt.row_size(t, n) == 4 + BLOCK[t] * n // 256 == pyref.row_size(t, n)


@pytest.mark.parametrize("t", TYPES)
@pytest.mark.parametrize("n", [0, -256, 1, 100, 255, 257, 300, 4095])
def test_row_size_bad_n(t, n):
    with pytest.raises(ValueError, match=r"(?i)(256|positive|multiple)"):
        iqkt.row_size(t, n)


@pytest.mark.parametrize("t", ["iq5_kt", "q4_0", "", "iq2_k", "iq2kt"])
def test_row_size_bad_type(t):
    with pytest.raises(ValueError, match=r"(?i)type"):
        iqkt.row_size(t, 256)


@pytest.mark.parametrize("t", TYPES)
def test_case_insensitive_types(t):
    x, _ = sample()
    q = quantized(t)
    for spelled in (t.upper(), t.capitalize(), t.swapcase().title()):
        assert iqkt.row_size(spelled, 512) == iqkt.row_size(t, 512)
        assert np.array_equal(iqkt.quantize(x, spelled), q)
        assert np.array_equal(bits(iqkt.dequantize(q, spelled, 512)), bits(iqkt.dequantize(q, t, 512)))
        np.testing.assert_array_equal(iqkt.mul_mat(q, spelled, x[0]), iqkt.mul_mat(q, t, x[0]))


# ------------------------------------------------------------------ input conversions
@pytest.mark.parametrize("t", TYPES)
def test_1d_input_is_one_row(t):
    x, _ = sample()
    q1 = iqkt.quantize(x[1], t)
    assert q1.shape == (1, iqkt.row_size(t, 512))
    assert np.array_equal(q1, quantized(t)[1:2])
    assert np.array_equal(iqkt.quantize(x[1:2], t), q1)


@pytest.mark.parametrize("t", TYPES)
def test_rows_are_independent(t):
    x, _ = sample()
    q = quantized(t)
    for r in range(x.shape[0]):
        assert np.array_equal(iqkt.quantize(x[r:r + 1], t), q[r:r + 1])


@pytest.mark.parametrize("t", TYPES)
def test_strided_and_non_contiguous_input(t):
    x, _ = sample()
    q = quantized(t)
    wide = np.zeros((3, 1024), dtype=np.float32)
    wide[:, ::2] = x
    assert np.array_equal(iqkt.quantize(wide[:, ::2], t), q)          # column stride
    tall = np.zeros((6, 512), dtype=np.float32)
    tall[::2] = x
    assert np.array_equal(iqkt.quantize(tall[::2], t), q)             # row stride
    assert np.array_equal(iqkt.quantize(np.asfortranarray(x), t), q)  # Fortran order
    assert np.array_equal(iqkt.quantize(x[::-1], t), q[::-1])         # negative stride
    assert np.array_equal(iqkt.quantize(x[:, ::-1], t), iqkt.quantize(np.ascontiguousarray(x[:, ::-1]), t))
    assert np.array_equal(iqkt.quantize(x.tolist(), t), q)            # nested list
    assert np.array_equal(iqkt.quantize(wide[1, ::2], t), q[1:2])     # strided 1-D


@pytest.mark.parametrize("t", TYPES)
def test_float64_and_float16_input(t):
    rng = np.random.default_rng(5)
    x64 = rng.standard_normal((2, 512))          # not representable in float32
    assert np.array_equal(iqkt.quantize(x64, t), iqkt.quantize(x64.astype(np.float32), t))
    x16 = x64.astype(np.float16)
    assert np.array_equal(iqkt.quantize(x16, t), iqkt.quantize(x16.astype(np.float32), t))


@pytest.mark.parametrize("t", TYPES)
def test_imatrix_dtypes_and_layouts(t):
    x, im = sample(imatrix=True)
    q = quantized(t, imatrix=True)
    assert np.array_equal(iqkt.quantize(x, t, im.astype(np.float64)), q)
    assert np.array_equal(iqkt.quantize(x, t, im.tolist()), q)
    strided = np.repeat(im, 2)[::2]
    assert np.array_equal(iqkt.quantize(x, t, strided), q)
    assert np.array_equal(iqkt.quantize(x, t, imatrix=im), q)


@pytest.mark.parametrize("t", TYPES)
def test_imatrix_changes_result_and_ones_equal_weighting(t):
    x, im = sample(imatrix=True)
    assert not np.array_equal(quantized(t, imatrix=True), quantized(t))
    # The weighted error that the imatrix optimises is lower with it than without it.
    e_with = pyref.rel_err(x, pyref.dequantize(quantized(t, imatrix=True), t, 512), im)
    e_without = pyref.rel_err(x, pyref.dequantize(quantized(t), t, 512), im)
    assert e_with < e_without


@pytest.mark.parametrize("t", TYPES)
def test_dequantize_flat_bytes(t):
    q = quantized(t)
    exp = iqkt.dequantize(q, t, 512)
    assert np.array_equal(bits(exp), bits(pyref.dequantize(q, t, 512)))
    for flat in (q.tobytes(), bytearray(q.tobytes()), memoryview(q.tobytes()), q.reshape(-1),
                 np.frombuffer(q.tobytes(), dtype=np.uint8)):
        got = iqkt.dequantize(flat, t, 512)
        assert got.shape == (3, 512)
        assert np.array_equal(bits(got), bits(exp))


@pytest.mark.parametrize("t", TYPES)
def test_dequantize_strided_q(t):
    q = quantized(t)
    exp = pyref.dequantize(q, t, 512)
    assert np.array_equal(bits(iqkt.dequantize(q[::-1], t, 512)), bits(exp[::-1]))
    assert np.array_equal(bits(iqkt.dequantize(q[::2], t, 512)), bits(exp[::2]))
    assert np.array_equal(bits(iqkt.dequantize(np.asfortranarray(q), t, 512)), bits(exp))


# ------------------------------------------------------------------ QuantizedMatrix
@pytest.mark.parametrize("t", TYPES)
@pytest.mark.parametrize("n", [256, 512, 1024])
def test_quantized_matrix_from_float(t, n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((4, n)).astype(np.float32)
    m = iqkt.QuantizedMatrix.from_float(x, t)
    q = iqkt.quantize(x, t)
    assert m.shape == (4, n)
    assert m.nbytes == q.nbytes == 4 * iqkt.row_size(t, n)
    assert m.bits_per_weight == pytest.approx(8 * m.nbytes / (4 * n), rel=1e-12)
    assert m.bits_per_weight == pytest.approx(BPW[t] + 32 / n, rel=1e-12)
    deq = m.dequantize()
    assert np.array_equal(bits(deq), bits(pyref.dequantize(q, t, n)))
    v = rng.standard_normal(n).astype(np.float32)
    yv = m @ v
    assert yv.shape == (4,)
    np.testing.assert_allclose(yv, iqkt.mul_mat(q, t, v), rtol=1e-6, atol=1e-6 * np.abs(yv).max())
    assert rel_l2(yv, pyref.mul_mat_exact(q, t, n, v)) <= pyref.int8_error_bound(q, t, n, v)
    X = rng.standard_normal((n, 3)).astype(np.float32)      # (K, B): W @ X -> (N, B)
    Y = m @ X
    assert Y.shape == (4, 3)
    np.testing.assert_allclose(Y, iqkt.mul_mat(q, t, X.T).T, rtol=1e-6, atol=1e-6 * np.abs(Y).max())
    assert rel_l2(Y, pyref.mul_mat_exact(q, t, n, X.T).T) <= pyref.int8_error_bound(q, t, n, X.T)


@pytest.mark.parametrize("t", TYPES)
def test_quantized_matrix_from_float_imatrix(t):
    x, im = sample(imatrix=True)
    m = iqkt.QuantizedMatrix.from_float(x, t, im)
    assert np.array_equal(bits(m.dequantize()), bits(pyref.dequantize(quantized(t, imatrix=True), t, 512)))
    m2 = iqkt.QuantizedMatrix.from_float(x, t, imatrix=im)
    assert m2.nbytes == m.nbytes


@pytest.mark.parametrize("golden", [c for c in GOLDEN_CASES if c.case == "gauss"], ids=lambda c: c.name)
def test_quantized_matrix_from_bytes(golden):
    m = iqkt.QuantizedMatrix(golden.q, golden.type, golden.n)
    assert m.shape == (golden.rows, golden.n)
    assert m.nbytes == golden.q.nbytes
    assert np.array_equal(bits(m.dequantize()), bits(golden.deq_ref))
    assert rel_l2(m @ golden.v, golden.y_ref) <= pyref.int8_error_bound(golden.q, golden.type, golden.n,
                                                                        golden.v, golden.y_ref)
    assert rel_l2(m.matmul(golden.v, precision="int16"), golden.y_ref) < 1e-3
    m2 = iqkt.QuantizedMatrix(golden.q.tobytes(), golden.type.upper(), golden.n)
    assert m2.shape == m.shape
    assert np.array_equal(bits(m2.dequantize()), bits(golden.deq_ref))


# ------------------------------------------------------------------ threads
@pytest.mark.parametrize("t", TYPES)
def test_threads_identical(t):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((6, 512)).astype(np.float32)
    im = rng.chisquare(2, 512).astype(np.float32)
    v = rng.standard_normal((2, 512)).astype(np.float32)
    qs = [iqkt.quantize(x, t, im, threads=k) for k in (1, 2, 4)]
    assert np.array_equal(qs[0], qs[1]) and np.array_equal(qs[0], qs[2])
    assert np.array_equal(iqkt.quantize(x, t, im), qs[0])   # default threads
    q = qs[0]
    ds = [iqkt.dequantize(q, t, 512, threads=k) for k in (1, 2, 4)]
    assert np.array_equal(bits(ds[0]), bits(ds[1])) and np.array_equal(bits(ds[0]), bits(ds[2]))
    for prec in ("int8", "int16", "float"):
        ys = [iqkt.mul_mat(q, t, v, threads=k, precision=prec) for k in (1, 2, 4)]
        assert np.array_equal(bits(ys[0]), bits(ys[1])) and np.array_equal(bits(ys[0]), bits(ys[2]))


# ------------------------------------------------------------------ inference factor
@pytest.mark.parametrize("t", TYPES)
def test_inference_factor(t):
    q = quantized(t)
    plain = iqkt.dequantize(q, t, 512)
    inf = iqkt.dequantize(q, t, 512, inference=True)
    assert np.array_equal(bits(iqkt.dequantize(q, t, 512, inference=False)), bits(plain))
    if t == "iq2_kt":
        np.testing.assert_allclose(inf, plain.astype(np.float64) * 1.05, rtol=1e-6, atol=0)
        assert not np.array_equal(bits(inf), bits(plain))
    else:
        assert np.array_equal(bits(inf), bits(plain))


@pytest.mark.parametrize("t", TYPES)
def test_mul_mat_float_equals_inference_weights(t):
    q = quantized(t)
    x, _ = sample()
    v = x[2]
    w = iqkt.dequantize(q, t, 512, inference=True).astype(np.float64)
    y = iqkt.mul_mat(q, t, v, precision="float")
    assert rel_l2(y, w @ v) < 1e-5
    assert rel_l2(y, pyref.mul_mat_exact(q, t, 512, v)) < 1e-5


# ------------------------------------------------------------------ batched products
@pytest.mark.parametrize("t", TYPES)
@pytest.mark.parametrize("prec", ["int8", "int16", "float"])
@pytest.mark.parametrize("B", [2, 3, 5, 8, 17])
def test_mul_mat_batch_equals_rows(t, prec, B):
    q = quantized(t)
    rng = np.random.default_rng(B)
    v = rng.standard_normal((B, 512)).astype(np.float32)
    Y = iqkt.mul_mat(q, t, v, precision=prec)
    assert Y.shape == (B, 3) and Y.dtype == np.float32
    rows = np.stack([iqkt.mul_mat(q, t, v[b], precision=prec) for b in range(B)])
    np.testing.assert_allclose(Y, rows, rtol=1e-6, atol=1e-6 * np.abs(rows).max())
    exact = pyref.mul_mat_exact(q, t, 512, v)
    tol = {"float": 1e-5, "int16": 0.01}.get(prec) or pyref.int8_error_bound(q, t, 512, v, exact)
    assert rel_l2(Y, exact) <= tol


@pytest.mark.parametrize("t", TYPES)
def test_mul_mat_input_conversions(t):
    q = quantized(t)
    rng = np.random.default_rng(3)
    v = rng.standard_normal((2, 512))
    exp = iqkt.mul_mat(q, t, v.astype(np.float32))
    np.testing.assert_array_equal(iqkt.mul_mat(q, t, v), exp)                     # float64
    np.testing.assert_array_equal(iqkt.mul_mat(q, t, v.astype(np.float32).T.copy().T), exp)  # F-order
    np.testing.assert_array_equal(iqkt.mul_mat(q, t, v.astype(np.float32).tolist()), exp)
    np.testing.assert_array_equal(iqkt.mul_mat(q.tobytes(), t, v.astype(np.float32)), exp)
    one = iqkt.mul_mat(q, t, v[0].astype(np.float32))
    assert one.shape == (3,)


# ------------------------------------------------------------------ statistics
@pytest.mark.parametrize("t", TYPES)
@pytest.mark.parametrize("use_im", [False, True])
def test_return_stats(t, use_im):
    x, im = sample(imatrix=use_im)
    q, stats = iqkt.quantize(x, t, im, return_stats=True)
    assert np.array_equal(q, quantized(t, imatrix=use_im))
    rel = np.asarray(stats["rel_err"])
    assert rel.dtype == np.float64 and rel.shape == (3,)
    exp = pyref.rel_err_rows(x, pyref.dequantize(q, t, 512), im)
    np.testing.assert_allclose(rel, exp, rtol=1e-4, atol=0)


def test_return_stats_zero_row():
    x = np.zeros((2, 256), dtype=np.float32)
    x[1] = np.linspace(-1, 1, 256)
    q, stats = iqkt.quantize(x, "iq4_kt", return_stats=True)
    rel = np.asarray(stats["rel_err"])
    assert np.all(np.isfinite(rel))
    assert rel[0] == 0.0
    np.testing.assert_allclose(rel[1], pyref.rel_err_rows(x, pyref.dequantize(q, "iq4_kt", 256))[1], rtol=1e-4)


# ------------------------------------------------------------------ misc API
def test_isa_functions(capsys):
    isas = iqkt.available_isas()
    assert isinstance(isas, list) and len(isas) >= 1
    assert "scalar" in isas
    assert iqkt.isa() in isas
    iqkt.show_config()
    out = capsys.readouterr().out
    assert iqkt.isa() in out


def test_use_isa_restores():
    before = iqkt.isa()
    with iqkt.use_isa("scalar"):
        assert iqkt.isa() == "scalar"
    assert iqkt.isa() == before
    with pytest.raises(ValueError):
        with iqkt.use_isa("no_such_isa"):
            pass
    assert iqkt.isa() == before


def test_type_table_matches_the_independent_reference():
    """The format table the kernels and _api read (iqkt_types.h) against the
    facts tests/pyref.py states independently."""
    from iqkt._kernels._types import BLOCK as TBLOCK, TYPE_TABLE
    assert TBLOCK == 256
    assert tuple(t["name"] for t in TYPE_TABLE) == pyref.TYPES == iqkt.TYPES
    ggml = {"iq2_kt": 153, "iq3_kt": 154, "iq4_kt": 155, "iq1_kt": 158}
    gguf = {"iq2_kt": 151, "iq3_kt": 152, "iq4_kt": 153, "iq1_kt": 156}
    for i, t in enumerate(TYPE_TABLE):
        name = t["name"]
        assert t["id"] == i
        assert t["block_bytes"] == pyref.BLOCK_BYTES[name]
        assert t["inference_factor"] == pytest.approx(pyref.INFERENCE_FACTOR[name], rel=1e-7)
        assert (t["ggml_type"], t["gguf_file_type"]) == (ggml[name], gguf[name])
        assert iqkt.GGML_TYPE_IDS[name] == ggml[name] and iqkt.GGUF_FILE_TYPE_IDS[name] == gguf[name]
    assert TYPE_TABLE[0]["scale_values"] == pyref.IQ2_TABLE
    assert TYPE_TABLE[1]["scale_values"] is None and TYPE_TABLE[1]["sign_plane"]
    assert TYPE_TABLE[2]["scale_codes"] == (-64, 63) and TYPE_TABLE[2]["codebooks"] == 2
    assert TYPE_TABLE[3]["scale_values"] == pyref.IQ2_TABLE and TYPE_TABLE[3]["codebook_size"] == 8192
