"""Bad input raises ValueError/TypeError naming the problem; awkward but valid
input quantizes and decodes to finite values.  Everything is also run in a child
interpreter so that a crash/abort shows up as a failed test, not a dead run."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import iqkt
from conftest import child_env, iqkt_parent
import pyref

TYPES = ("iq2_kt", "iq3_kt", "iq4_kt", "iq1_kt")
N = 512
RNG = np.random.default_rng(7)
X = RNG.standard_normal((2, N)).astype(np.float32)
IM = RNG.chisquare(2, N).astype(np.float32)

PY = os.environ.get("IQKT_TEST_PYTHON", sys.executable)

# Loose regular expressions (matched case-insensitively): the message must *name* the problem.
RE_FINITE = r"(nan|inf|finite)"
RE_IMATRIX = r"imatrix"
RE_256 = r"(256|multiple)"
RE_NDIM = r"(dim|\b[123]-?d\b|shape)"
RE_EMPTY = r"(empty|zero|no rows|0 rows|rows|size|shape|256|positive)"
RE_TYPE = r"type"
RE_ROWS = r"(row|multiple|whole|byte|size)"
RE_QDTYPE = r"(uint8|dtype|byte)"
RE_SHAPE = r"(shape|size|length|mismatch|match|expected|K\b|columns)"
RE_NUMERIC = r"(numeric|number|float|dtype|real|convert|type)"
RE_SCALE = r"(scale|finite|nan|inf)"


def _q(t):
    return iqkt.quantize(X, t)


def _with_scale(q, value):
    q = np.array(q, copy=True)
    q[0, :4] = np.frombuffer(np.array([value], dtype="<f4").tobytes(), dtype=np.uint8)
    return q


def bad_cases(t):
    """(name, callable, exception types, regex) for type ``t``."""
    xn = X.copy(); xn[1, 17] = np.nan
    xi = X.copy(); xi[0, 300] = np.inf
    xmi = X.copy(); xmi[1, 0] = -np.inf
    imn = IM.copy(); imn[5] = np.nan
    imi = IM.copy(); imi[5] = np.inf
    imneg = IM.copy(); imneg[9] = -1.0
    q = _q(t)
    V = ValueError
    VT = (ValueError, TypeError)
    return [
        ("x_nan", lambda: iqkt.quantize(xn, t), V, RE_FINITE),
        ("x_inf", lambda: iqkt.quantize(xi, t), V, RE_FINITE),
        ("x_neginf", lambda: iqkt.quantize(xmi, t), V, RE_FINITE),
        ("x_nan_1d", lambda: iqkt.quantize(xn[1], t), V, RE_FINITE),
        ("x_nan_f64", lambda: iqkt.quantize(xn.astype(np.float64), t), V, RE_FINITE),
        ("x_f64_overflow", lambda: iqkt.quantize(np.full((1, N), 1e300), t), V,
         RE_FINITE + r"|(range|overflow|float32)"),
        ("imatrix_nan", lambda: iqkt.quantize(X, t, imn), V, RE_IMATRIX),
        ("imatrix_inf", lambda: iqkt.quantize(X, t, imi), V, RE_IMATRIX),
        ("imatrix_negative", lambda: iqkt.quantize(X, t, imneg), V, RE_IMATRIX),
        ("imatrix_short", lambda: iqkt.quantize(X, t, IM[:-1]), V, RE_IMATRIX),
        ("imatrix_long", lambda: iqkt.quantize(X, t, np.ones(N + 256, np.float32)), V, RE_IMATRIX),
        ("imatrix_2d", lambda: iqkt.quantize(X, t, np.ones((2, N), np.float32)), V, RE_IMATRIX),
        ("imatrix_strings", lambda: iqkt.quantize(X, t, ["a"] * N), VT, RE_IMATRIX + "|" + RE_NUMERIC),
        ("n_not_256", lambda: iqkt.quantize(X[:, :300], t), V, RE_256),
        ("n_100", lambda: iqkt.quantize(np.ones((2, 100), np.float32), t), V, RE_256),
        ("dequant_n_not_256", lambda: iqkt.dequantize(q, t, 300), V, RE_256),
        ("row_size_n_not_256", lambda: iqkt.row_size(t, 300), V, RE_256),
        ("x_3d", lambda: iqkt.quantize(X.reshape(2, 2, 256), t), V, RE_NDIM),
        ("x_0d", lambda: iqkt.quantize(np.float32(1.0), t), V, RE_NDIM + "|" + RE_256),
        ("x_0_rows", lambda: iqkt.quantize(np.zeros((0, N), np.float32), t), V, RE_EMPTY),
        ("x_0_cols", lambda: iqkt.quantize(np.zeros((2, 0), np.float32), t), V, RE_EMPTY),
        ("x_empty_1d", lambda: iqkt.quantize(np.zeros(0, np.float32), t), V, RE_EMPTY),
        ("type_unknown", lambda: iqkt.quantize(X, "iq5_kt"), V, RE_TYPE),
        ("type_other_ggml", lambda: iqkt.quantize(X, "q4_0"), V, RE_TYPE),
        ("type_empty", lambda: iqkt.quantize(X, ""), V, RE_TYPE),
        ("type_none", lambda: iqkt.quantize(X, None), VT, RE_TYPE),
        ("type_int", lambda: iqkt.quantize(X, 153), VT, RE_TYPE),
        ("dequant_type_unknown", lambda: iqkt.dequantize(q, "iq5_kt", N), V, RE_TYPE),
        ("mul_mat_type_unknown", lambda: iqkt.mul_mat(q, "IQ2_KS", X[0]), V, RE_TYPE),
        ("q_partial_row_flat", lambda: iqkt.dequantize(q.tobytes()[:-1], t, N), V, RE_ROWS),
        ("q_extra_byte_flat", lambda: iqkt.dequantize(q.tobytes() + b"\0", t, N), V, RE_ROWS),
        ("q_row_len_wrong", lambda: iqkt.dequantize(q[:, :-1], t, N), V, RE_ROWS),
        ("q_wrong_n", lambda: iqkt.dequantize(q, t, 2 * N), V, RE_ROWS),
        ("q_empty", lambda: iqkt.dequantize(b"", t, N), V, RE_ROWS + "|" + RE_EMPTY),
        ("q_float32", lambda: iqkt.dequantize(q.astype(np.float32), t, N), VT, RE_QDTYPE),
        ("q_int16", lambda: iqkt.dequantize(q.astype(np.int16), t, N), VT, RE_QDTYPE),
        ("q_float32_mul_mat", lambda: iqkt.mul_mat(q.astype(np.float32), t, X[0]), VT, RE_QDTYPE),
        ("mul_mat_K_short", lambda: iqkt.mul_mat(q, t, X[0, :-256]), V, RE_SHAPE + "|" + RE_ROWS),
        ("mul_mat_K_odd", lambda: iqkt.mul_mat(q, t, X[0, :-1]), V, RE_SHAPE + "|" + RE_ROWS + "|" + RE_256),
        ("mul_mat_K_long", lambda: iqkt.mul_mat(q, t, np.ones(N + 256, np.float32)), V,
         RE_SHAPE + "|" + RE_ROWS),
        ("mul_mat_batch_K", lambda: iqkt.mul_mat(q, t, np.ones((3, N - 256), np.float32)), V,
         RE_SHAPE + "|" + RE_ROWS),
        ("mul_mat_x_3d", lambda: iqkt.mul_mat(q, t, np.ones((2, 2, N), np.float32)), V, RE_NDIM),
        ("mul_mat_precision", lambda: iqkt.mul_mat(q, t, X[0], precision="int4"), V, r"precision"),
        ("mul_mat_precision_list", lambda: iqkt.mul_mat(q, t, X[0], precision=["int8"]), V, r"precision"),
        ("mul_mat_x_strings", lambda: iqkt.mul_mat(q, t, np.array(["a"] * N)), VT, RE_NUMERIC),
        ("x_strings", lambda: iqkt.quantize(np.array([["a"] * N] * 2), t), VT, RE_NUMERIC),
        ("x_string_list", lambda: iqkt.quantize([["1.0"] * N], t), VT, RE_NUMERIC),
        ("x_object_none", lambda: iqkt.quantize(np.array([[None] * N], dtype=object), t), VT, RE_NUMERIC),
        ("x_object_mixed", lambda: iqkt.quantize(np.array([[1.0, "x"] * (N // 2)], dtype=object), t), VT,
         RE_NUMERIC),
        ("x_dict", lambda: iqkt.quantize({"a": 1}, t), VT, RE_NUMERIC + "|" + RE_NDIM),
        ("x_ragged", lambda: iqkt.quantize([[1.0] * N, [1.0] * (N - 1)], t), VT,
         RE_NUMERIC + "|" + RE_SHAPE + "|" + r"(inhomogeneous|sequence)"),
        ("q_scale_nan_dequant", lambda: iqkt.dequantize(_with_scale(q, np.nan), t, N), V, RE_SCALE),
        ("q_scale_inf_dequant", lambda: iqkt.dequantize(_with_scale(q, np.inf), t, N), V, RE_SCALE),
        ("q_scale_ninf_dequant", lambda: iqkt.dequantize(_with_scale(q, -np.inf), t, N), V, RE_SCALE),
        ("q_scale_nan_mul_mat", lambda: iqkt.mul_mat(_with_scale(q, np.nan), t, X[0]), V, RE_SCALE),
        ("q_scale_inf_mul_mat", lambda: iqkt.mul_mat(_with_scale(q, np.inf), t, X[0]), V, RE_SCALE),
        ("q_scale_inf_mul_mat_float", lambda: iqkt.mul_mat(_with_scale(q, np.inf), t, X[0], precision="float"),
         V, RE_SCALE),
        ("q_scale_nan_qm", lambda: iqkt.QuantizedMatrix(_with_scale(q, np.nan), t, N) @ X[0], V, RE_SCALE),
        ("qm_bad_type", lambda: iqkt.QuantizedMatrix(q, "iq9_kt", N), V, RE_TYPE),
        ("qm_bad_rows", lambda: iqkt.QuantizedMatrix(q.tobytes()[:-3], t, N), V, RE_ROWS),
        ("qm_matmul_K", lambda: iqkt.QuantizedMatrix(q, t, N) @ np.ones(N + 256, np.float32), V,
         RE_SHAPE + "|" + RE_ROWS),
        ("from_float_nan", lambda: iqkt.QuantizedMatrix.from_float(xn, t), V, RE_FINITE),
        ("trellis_steps_negative", lambda: iqkt.trellis([1, 2], -1), V, r"(step|negative)"),
    ]


CASE_NAMES = [c[0] for c in bad_cases("iq4_kt")]


@pytest.mark.parametrize("t", TYPES)
@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_raises(t, name):
    (case,) = [c for c in bad_cases(t) if c[0] == name]
    _, fn, exc, regex = case
    with pytest.raises(exc, match="(?i)" + regex):
        fn()


def test_package_still_works_after_errors():
    for t in TYPES:
        for _, fn, exc, _ in bad_cases(t):
            try:
                fn()
            except (ValueError, TypeError):
                pass
        q = iqkt.quantize(X, t)
        assert np.array_equal(iqkt.dequantize(q, t, N).view(np.uint32),
                              pyref.dequantize(q, t, N).view(np.uint32))


# ------------------------------------------------------------------ valid edge input
def edge_inputs():
    rng = np.random.default_rng(42)
    g = rng.standard_normal((2, N)).astype(np.float32)
    zero_blocks = g.copy()
    zero_blocks[0, 0:32] = 0
    zero_blocks[0, 96:160] = 0
    zero_blocks[1, 256:512] = 0            # whole second super-block
    zero_blocks[1, 32:64] = 0
    outlier = g.copy()
    outlier[0, 77] = 1e30
    outlier[1, 300] = -1e30
    big = (np.sign(g) * np.float32(3e38)).astype(np.float32)
    big_mixed = (g / np.abs(g).max() * np.float32(3.4e38)).astype(np.float32)
    fmax = np.full((1, N), np.finfo(np.float32).max, dtype=np.float32)
    fmax[0, ::2] *= -1
    sub = (g * np.float32(1e-40)).astype(np.float32)
    tiny_sub = np.zeros((1, N), np.float32)
    tiny_sub[0, 5] = np.float32(1.4e-45)
    mixed_rows = np.vstack([g[0] * np.float32(1e-30), g[1] * np.float32(1e30)]).astype(np.float32)
    return {
        "all_zero": np.zeros((3, N), np.float32),
        "neg_zero": np.full((1, N), -0.0, np.float32),
        "zero_blocks": zero_blocks,
        "tiny_1e-30": (g * np.float32(1e-30)).astype(np.float32),
        "tiny_1e-20": (g * np.float32(1e-20)).astype(np.float32),
        "outlier_1e30": outlier,
        "subnormal": sub,
        "single_subnormal": tiny_sub,
        "pm_3e38": big,
        "spread_3.4e38": big_mixed,
        "float32_max": fmax,
        "mixed_rows": mixed_rows,
        "constant": np.full((1, N), 0.5, np.float32),
        "one_nonzero": np.eye(1, N, 200, dtype=np.float32) * -7,
    }


EDGE = edge_inputs()


@pytest.mark.parametrize("t", TYPES)
@pytest.mark.parametrize("name", sorted(EDGE))
@pytest.mark.parametrize("with_im", [False, True], ids=["noim", "im"])
def test_edge_input_quantizes(t, name, with_im):
    x = EDGE[name]
    im = IM if with_im else None
    q = iqkt.quantize(x, t, im)
    assert q.shape == (x.shape[0], iqkt.row_size(t, N))
    d = pyref.row_scales(q, t, N)
    assert np.all(np.isfinite(d)), d
    y = iqkt.dequantize(q, t, N)
    assert np.all(np.isfinite(y))
    assert np.array_equal(y.view(np.uint32), pyref.dequantize(q, t, N).view(np.uint32))
    # No row may be worse than reconstructing it as all zeros (with a sliver of rounding slack).
    e = pyref.rel_err_rows(x, y, im)
    assert np.all(e <= 1.0 + 1e-5), e
    if name in ("all_zero", "neg_zero"):
        assert np.all(y == 0)
    for prec in ("int8", "int16", "float"):
        y2 = iqkt.mul_mat(q, t, np.ones(N, np.float32) * np.float32(1e-30), precision=prec)
        assert y2.shape == (x.shape[0],)
        assert np.all(np.isfinite(y2)), (prec, y2)


@pytest.mark.parametrize("t", TYPES)
@pytest.mark.parametrize("name", ["tiny_1e-30", "tiny_1e-20", "mixed_rows", "outlier_1e30", "zero_blocks",
                                  "constant", "one_nonzero"])
def test_edge_input_is_actually_quantized(t, name):
    """Unlike the bound above, these inputs are well within float32's range, so the
    quantizer must do real work on them (a relative error well below 1)."""
    x = EDGE[name]
    y = pyref.dequantize(iqkt.quantize(x, t), t, N)
    e = pyref.rel_err_rows(x, y)
    assert np.all(e < 0.7), e


@pytest.mark.parametrize("t", TYPES)
def test_edge_imatrix_values(t):
    for im in (np.zeros(N, np.float32), np.full(N, 1e30, np.float32), np.full(N, 1e-40, np.float32),
               np.where(np.arange(N) % 2, 0, 1).astype(np.float32), np.full(N, -0.0, np.float32)):
        q = iqkt.quantize(X, t, im)
        d = pyref.row_scales(q, t, N)
        assert np.all(np.isfinite(d))
        assert np.all(np.isfinite(iqkt.dequantize(q, t, N)))


# ------------------------------------------------------------------ in a child interpreter
CHILD = textwrap.dedent(
    r"""
    import sys, traceback
    sys.path.insert(0, {tests_dir!r})
    import numpy as np
    import test_bad_input as tb
    names = set()
    for t in tb.TYPES:
        for name, fn, exc, regex in tb.bad_cases(t):
            try:
                fn()
            except (ValueError, TypeError) as e:
                print(f"RAISED {{t}} {{name}} {{type(e).__name__}}: {{e}}".replace("\n", " "), flush=True)
            except BaseException as e:
                print(f"WRONG {{t}} {{name}} {{type(e).__name__}}: {{e}}".replace("\n", " "), flush=True)
            else:
                print(f"NORAISE {{t}} {{name}}", flush=True)
        for name, x in tb.EDGE.items():
            for im in (None, tb.IM):
                q = tb.iqkt.quantize(x, t, im)
                y = tb.iqkt.dequantize(q, t, x.shape[1])
                ok = bool(np.all(np.isfinite(y)))
                print(f"EDGE {{t}} {{name}} {{'im' if im is not None else 'noim'}} finite={{ok}}", flush=True)
    print("CHILD-DONE", flush=True)
    """
)


def _child_env():
    return child_env(), os.path.dirname(os.path.abspath(__file__))


@pytest.mark.subprocess
def test_bad_input_in_child_process():
    env, tests_dir = _child_env()
    code = CHILD.format(tests_dir=tests_dir)
    proc = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=600, env=env,
                          cwd=iqkt_parent())
    out = proc.stdout
    assert proc.returncode == 0, f"child exited {proc.returncode}\nstdout tail:\n{out[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    assert "CHILD-DONE" in out
    lines = out.splitlines()
    for t in TYPES:
        for name in CASE_NAMES:
            hits = [ln for ln in lines if ln.startswith(("RAISED", "WRONG", "NORAISE")) and ln.split()[1:3] == [t, name]]
            assert len(hits) == 1, (t, name)
            assert hits[0].startswith("RAISED"), hits[0]
    edge = [ln for ln in lines if ln.startswith("EDGE")]
    assert len(edge) == len(TYPES) * len(EDGE) * 2
    assert all(ln.endswith("finite=True") for ln in edge), [ln for ln in edge if not ln.endswith("finite=True")]


@pytest.mark.subprocess
def test_child_interpreter_imports_package():
    env, _ = _child_env()
    proc = subprocess.run([PY, "-c", "import iqkt, sys; print(iqkt.isa()); sys.exit(0)"],
                          capture_output=True, text=True, timeout=300, env=env,
                          cwd=iqkt_parent())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() in iqkt.available_isas()
