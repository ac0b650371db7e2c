"""mul_mat: the integer-activation kernels (int8 and int16, per-ISA), the batch kernels
(AVX512 B >= 2, AVX2 B > 4) and the native thread pool.  Expected values come from the
independent pure-Python decoder (tests/pyref.py), never from iqkt itself."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import iqkt
from conftest import child_env, iqkt_parent
import pyref

ISAS = iqkt.available_isas()


def bits(a):
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def random_q(t, rows, n, seed):
    """Arbitrary (valid) encodings: every byte pattern decodes; finite row scales."""
    rng = np.random.default_rng(seed)
    q = rng.integers(0, 256, (rows, iqkt.row_size(t, n)), dtype=np.uint8)
    d = (rng.standard_normal(rows) * 0.01).astype(np.float32)
    q[:, :4] = d.view(np.uint8).reshape(rows, 4)
    return q


def rel(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def accuracy_ok(y, q, t, n, v, prec, exact=None):
    """int16: ~1e-4 relative; int8: no worse than the per-32 int8 model
    (tests/pyref.py) on the same inputs."""
    if exact is None:
        exact = pyref.mul_mat_exact(q, t, n, v)
    if prec == "int16":
        return rel(y, exact) < 2e-3
    return rel(y, exact) <= pyref.int8_error_bound(q, t, n, v, exact)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("t", iqkt.TYPES)
@pytest.mark.parametrize("B", [1, 2, 3, 4, 5, 9, 17, 48])
@pytest.mark.parametrize("prec", ["int8", "int16"])
def test_integer_paths_close_to_exact(isa, t, B, prec):
    n, rows = 512, 7          # 7 rows: batch tiles of 4 plus a partial tile
    q = random_q(t, rows, n, seed=B)
    v = np.random.default_rng(100 + B).standard_normal((B, n)).astype(np.float32)
    with iqkt.use_isa(isa):
        y = iqkt.mul_mat(q, t, v, precision=prec)
    assert y.shape == (B, rows)
    assert accuracy_ok(y, q, t, n, v, prec)


@pytest.mark.parametrize("t", iqkt.TYPES)
def test_int8_is_the_default_and_coarser_than_int16(t):
    n, rows = 512, 5
    q = random_q(t, rows, n, seed=5)
    v = np.random.default_rng(6).standard_normal((3, n)).astype(np.float32)
    exact = pyref.mul_mat_exact(q, t, n, v)
    y8 = iqkt.mul_mat(q, t, v, precision="int8")
    assert np.array_equal(bits(iqkt.mul_mat(q, t, v)), bits(y8))
    e8, e16 = rel(y8, exact), rel(iqkt.mul_mat(q, t, v, precision="int16"), exact)
    # int8 per 32 is ~0.5% on Gaussian activations, int16 ~1e-4
    assert 1e-3 < e8 < 0.03 and e16 < 5e-4


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("t", iqkt.TYPES)
@pytest.mark.parametrize("prec", ["int8", "int16"])
def test_batch_kernels_equal_row_kernels_bitwise(isa, t, prec):
    """B >= 2 goes through the batch kernels (decoded weight tiles) on AVX512
    (int8: the quad-paired GEMM for 5..8 rows, the 16-row GEMM above) and
    B > 4 on AVX2; each output row must be bit-for-bit the B = 1 result."""
    n, rows = 768, 6
    q = random_q(t, rows, n, seed=21)
    v = np.random.default_rng(22).standard_normal((64, n)).astype(np.float32)
    with iqkt.use_isa(isa):
        one = np.stack([iqkt.mul_mat(q, t, v[b], precision=prec) for b in range(64)])
        for B in (3, 4, 5, 8, 9, 16, 17, 64):
            assert np.array_equal(bits(iqkt.mul_mat(q, t, v[:B], precision=prec)), bits(one[:B])), B


@pytest.mark.parametrize("t", iqkt.TYPES)
@pytest.mark.parametrize("prec", ["int8", "int16"])
def test_activation_outliers_and_zero_blocks(t, prec):
    n, rows = 1024, 5
    q = random_q(t, rows, n, seed=7)
    v = np.zeros((3, n), np.float32)
    v[0, 5] = 1e6                       # one huge value, rest zero
    v[1] = np.random.default_rng(1).standard_normal(n).astype(np.float32) * 1e-30
    v[2, :32] = np.linspace(-1, 1, 32)
    v[2, 512:] = 3.0
    exact = pyref.mul_mat_exact(q, t, n, v)
    for isa in ISAS:
        with iqkt.use_isa(isa):
            y = iqkt.mul_mat(q, t, v, precision=prec)
        for b in range(3):
            assert accuracy_ok(y[b], q, t, n, v[b], prec, exact[b]), (isa, b)


@pytest.mark.parametrize("t", iqkt.TYPES)
@pytest.mark.parametrize("B", [1, 3, 8, 64])
@pytest.mark.parametrize("prec", ["int8", "int16"])
def test_native_threads_identical(t, B, prec):
    n, rows = 512, 203                  # enough rows that several threads get work
    q = random_q(t, rows, n, seed=11)
    v = np.random.default_rng(12).standard_normal((B, n)).astype(np.float32)
    ref = iqkt.mul_mat(q, t, v, threads=1, precision=prec)
    for k in (2, 3, 4, 7, 13):
        assert np.array_equal(bits(iqkt.mul_mat(q, t, v, threads=k, precision=prec)), bits(ref)), k
    assert accuracy_ok(ref, q, t, n, v, prec)


def test_native_threads_concurrent_callers():
    """Several Python threads inside mul_mat at once: the pool serves one,
    the others run inline; every result must still be right."""
    t, n, rows = "iq2_kt", 512, 96
    q = random_q(t, rows, n, seed=3)
    vs = [np.random.default_rng(s).standard_normal((2, n)).astype(np.float32) for s in range(6)]
    refs = [iqkt.mul_mat(q, t, v, threads=1) for v in vs]
    errors = []

    def work(i):
        try:
            for _ in range(20):
                y = iqkt.mul_mat(q, t, vs[i], threads=3)
                if not np.array_equal(bits(y), bits(refs[i])):
                    errors.append(i)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(repr(e))

    ths = [threading.Thread(target=work, args=(i,)) for i in range(len(vs))]
    for th in ths:
        th.start()
    for th in ths:
        th.join(60)
    assert not any(th.is_alive() for th in ths), "mul_mat threads hung"
    assert errors == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_native_threads_after_fork():
    code = r"""
import os, sys, numpy as np, iqkt
q = np.random.default_rng(0).integers(0, 256, (64, iqkt.row_size("iq3_kt", 512)), dtype=np.uint8)
q[:, :4] = np.frombuffer(np.float32(0.01).tobytes(), np.uint8)
v = np.ones(512, np.float32)
y0 = iqkt.mul_mat(q, "iq3_kt", v, threads=2)          # pool started in the parent
pid = os.fork()
if pid == 0:
    y1 = iqkt.mul_mat(q, "iq3_kt", v, threads=2)      # child: fresh pool, must not hang
    os._exit(0 if np.array_equal(y0, y1) else 3)
_, st = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(st))
"""
    r = subprocess.run([sys.executable, "-c", code], timeout=120, cwd=iqkt_parent(), env=child_env())
    assert r.returncode == 0


X86_INT8 = [i for i in ("avx512", "avx2_vnni", "avx2") if i in ISAS]


@pytest.mark.skipif(len(X86_INT8) < 2, reason="needs two of the avx512, avx2_vnni, avx2 variants")
@pytest.mark.parametrize("t", iqkt.TYPES)
def test_int8_avx2_equals_avx512_bitwise(t):
    """The x86 variants' int8 kernels (row kernels, AVX2's int8 GEMM from 5 rows
    on vpmaddubsw or, avx2_vnni, on vpdpbusd, AVX512's quad-paired and 16-row
    GEMMs) add exact block dots into 8 block slots in the same order, so every
    batch size gives the same bits on all: a wrong integer anywhere in any
    (decode, sign plane, saturation) shows up here.
    n = 2304: 9 super-blocks, a K chunk of 8 and a partial one; 7 weight rows: a
    partial tile."""
    n, rows = 2304, 7
    q = random_q(t, rows, n, seed=31)
    rng = np.random.default_rng(32)
    for B in (1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 24, 33):
        v = rng.standard_normal((B, n)).astype(np.float32)
        ys = {}
        for isa in X86_INT8:
            with iqkt.use_isa(isa):
                ys[isa] = iqkt.mul_mat(q, t, v, precision="int8")
        for isa in X86_INT8[1:]:   # avx2 == avx512, avx2_vnni == avx512
            assert np.array_equal(bits(ys[isa]), bits(ys[X86_INT8[0]])), (isa, B)


def extreme_q(t, rows, n, seed):
    """Rows of random encodings; for IQ2/IQ3 every group's index is one of the
    codebook rows with the largest magnitudes (|value| up to 123)."""
    q = random_q(t, rows, n, seed)
    if t in ("iq2_kt", "iq3_kt"):
        cb = pyref.codebook(pyref.OFFSET, 8, 65536).astype(np.int64)
        big = np.argsort(np.abs(cb).sum(axis=1))[-64:].astype(np.uint16)
        rng = np.random.default_rng(seed)
        blk = q[:, 4:].reshape(rows, n // 256, pyref.BLOCK_BYTES[t])
        blk[..., 4:68] = rng.choice(big, (rows, n // 256, 32)).view(np.uint8).reshape(rows, n // 256, 64)
    return q


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("t", iqkt.TYPES)
def test_int8_extreme_activations_exact(isa, t):
    """|x| = 127 after quantization everywhere (every block's values are +-c), and
    for activation row b the signs of weight row b, so that row's products all
    add up (the int16 pair sums of the int8 kernels at their largest): the int8
    result must then be the exact product to float rounding, at batch sizes on
    both sides of the AVX2 / AVX512 GEMM thresholds."""
    n, rows = 1024, 17
    q = extreme_q(t, rows, n, seed=41)
    w = pyref.dequantize(q, t, n)
    c = np.float32(0.75)
    for B in (1, 3, 4, 5, 8, 9, 17):
        v = np.where(w[:B] < 0, -c, c).astype(np.float32)
        v[B - 1] = c                                     # one row all +c: no sign alignment
        exact = pyref.mul_mat_exact(q, t, n, v)
        with iqkt.use_isa(isa):
            y = iqkt.mul_mat(q, t, v, precision="int8")
        for b in range(B - 1):   # aligned rows: sum of |w|, no cancellation
            assert abs(y[b, b] - exact[b, b]) <= 1e-5 * abs(exact[b, b]), (B, b)
        scale = np.abs(pyref.dequantize(q, t, n, inference=True)).sum(axis=1) * c
        assert np.all(np.abs(y - exact) <= 1e-5 * scale), B


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("prec", ["int8", "int16"])
def test_kernel_rejects_nonfinite_activations(isa, prec):
    """The kernel's own check (what the C API relies on; iqkt.mul_mat checks
    first in Python): NaN and +-Inf anywhere in a block, alone or next to the
    largest finite float32, are errors; FLT_MAX itself is not."""
    from iqkt import _dispatch
    n, rows = 512, 4
    q = random_q("iq2_kt", rows, n, seed=3)
    with iqkt.use_isa(isa):
        mod = _dispatch.module()
        for B in (1, 9):
            for bad in (np.nan, np.inf, -np.inf):
                for pos in (0, 31, 300, n - 1):
                    x = np.random.default_rng(pos).standard_normal((B, n)).astype(np.float32)
                    x[B - 1, pos] = bad
                    x[B - 1, pos ^ 1] = np.finfo(np.float32).max
                    y = np.empty((B, rows), np.float32)
                    with pytest.raises(ValueError, match="NaN or infinity"):
                        mod.mul_mat(0, q, n, x, y, mod.PRECISIONS[prec], 1)
            x = np.zeros((B, n), np.float32)
            x[:, 5] = np.finfo(np.float32).max
            x[:, 6] = -np.finfo(np.float32).max
            y = np.empty((B, rows), np.float32)
            mod.mul_mat(0, q, n, x, y, mod.PRECISIONS[prec], 1)   # finite input: must not raise


def _float_path_model(w, v):
    """numpy model of precision "float": per 32-block, products in float64
    (exact), s8[j] = (p[j] + p[j+8]) + (p[j+16] + p[j+24]), then
    ((s8[0] + s8[4]) + (s8[1] + s8[5])) + ((s8[2] + s8[6]) + (s8[3] + s8[7])),
    blocks added in order, the total rounded to float32."""
    w = w.astype(np.float64)
    v = v.astype(np.float64)
    acc = np.zeros((v.shape[0], w.shape[0]))
    for b in range(w.shape[1] // 32):
        p = v[:, None, 32 * b:32 * b + 32] * w[None, :, 32 * b:32 * b + 32]
        s8 = (p[..., 0:8] + p[..., 8:16]) + (p[..., 16:24] + p[..., 24:32])
        s = ((s8[..., 0] + s8[..., 4]) + (s8[..., 1] + s8[..., 5])) + \
            ((s8[..., 2] + s8[..., 6]) + (s8[..., 3] + s8[..., 7]))
        acc = acc + s
    return acc.astype(np.float32)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("t", iqkt.TYPES)
def test_float_path_is_its_model_bit_for_bit(isa, t):
    """precision="float" on every ISA equals the numpy model of its order
    exactly, for batch sizes across the 16-row groups the activations are
    widened to double in (1, 15, 16, 17, 40) and any thread count.  (The
    float64 sum order itself rarely shows after rounding to float32; what this
    pins down is every block, row and group reaching its output.)"""
    n, rows = 512, 7
    q = random_q(t, rows, n, seed=31)
    w = iqkt.dequantize(q, t, n, inference=True)
    v = np.random.default_rng(32).standard_normal((40, n)).astype(np.float32)
    v[3] *= 1e-20
    v[5, :64] = 3e4
    with iqkt.use_isa(isa):
        for B in (1, 15, 16, 17, 40):
            for threads in (1, 3):
                y = iqkt.mul_mat(q, t, v[:B], precision="float", threads=threads)
                assert np.array_equal(bits(y), bits(_float_path_model(w, v[:B]))), (B, threads)
