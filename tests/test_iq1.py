"""IQ1_KT (issue #16): no reference vectors exist, so the decode is checked
against the format formula three ways (a hand-built super-block here, the
vectorised and the loop decoders of tests/pyref.py), and the quantizer by
validity, cross-ISA identity and error bounds derived below."""
import numpy as np
import pytest

import iqkt
import pyref

ISAS = iqkt.available_isas()
T = "iq1_kt"


def bits(a):
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def trellis8(seed):
    """The 8 trellis values of a seed, straight from the issue's formula."""
    out, s = [], seed
    for _ in range(8):
        s = (s * 0xCBAC1FED) & 0xFFFFFFFF
        m = s & 0x3F3F3F3F
        out.append(sum((m >> (8 * i)) & 0xFF for i in range(4)) - 126)
    return out


def encode_block(codes, idx):
    """56 bytes from 8 scale codes and 32 13-bit indices, placing each bit
    where the decode formula reads it (written here, not taken from iqkt)."""
    sb = bytearray(56)
    for ib in range(8):
        sb[ib] = codes[ib]
    for j, i in enumerate(idx):
        ib, ig = divmod(j, 4)
        sb[8 + j] = i & 0xFF
        sb[40 + j % 16] |= ((i >> 8) & 15) << (4 * (j // 16))
        sb[ib] |= ((i >> 12) & 1) << (4 + ig)
    return bytes(sb)


@pytest.mark.parametrize("isa", ISAS)
def test_hand_built_superblocks(isa):
    rng = np.random.default_rng(5)
    d = np.float32(0.0123)
    row, want = bytearray(np.array([d], "<f4").tobytes()), []
    # index extremes (0, 8191, each high bit alone) and random ones
    fixed = [0, 8191, 0x1000, 0x0F00, 0x00FF, 0x0100, 0x0800, 0x1FFF]
    for sbi in range(3):
        idx = fixed * 4 if sbi == 0 else [int(i) for i in rng.integers(0, 8192, 32)]
        codes = list(range(8)) if sbi == 0 else [int(c) for c in rng.integers(0, 16, 8)]
        row += encode_block(codes, idx)
        for j, i in enumerate(idx):
            s = np.float32(d * np.float32(pyref.IQ2_TABLE[codes[j // 4]]))
            want += [s * np.float32(v) for v in trellis8(i + 4096)]
    q = np.frombuffer(bytes(row), np.uint8)[None, :]
    with iqkt.use_isa(isa):
        got = iqkt.dequantize(q, T, 768)
    assert np.array_equal(bits(got[0]), bits(np.array(want, np.float32)))


@pytest.mark.parametrize("isa", ISAS)
def test_random_bytes_match_both_reference_decoders(isa):
    rng = np.random.default_rng(17)
    n = 512
    q = rng.integers(0, 256, (4, iqkt.row_size(T, n)), dtype=np.uint8)
    q[:, :4] = np.array([1.0, -2.5e-3, 3e20, 1e-38], "<f4").view(np.uint8).reshape(4, 4)
    exp = pyref.dequantize(q, T, n)
    assert np.array_equal(bits(exp), bits(pyref.dequantize_scalar(q, T, n)))
    with iqkt.use_isa(isa):
        got = iqkt.dequantize(q, T, n)
        got_inf = iqkt.dequantize(q, T, n, inference=True)
    assert np.array_equal(bits(got), bits(exp))
    assert np.array_equal(bits(got_inf), bits(exp))      # no inference factor


def _rows(seed, rows=8, n=1024):
    return np.random.default_rng(seed).standard_normal((rows, n)).astype(np.float32)


def test_quantize_valid_bytes_and_identical_on_every_isa():
    x = _rows(1, rows=5, n=768)
    x[1] *= 1e-3
    x[2, 7] = 30.0
    x[3] = 0
    im = np.random.default_rng(2).chisquare(1, 768).astype(np.float32)
    for imatrix in (None, im):
        with iqkt.use_isa("scalar"):
            ref = iqkt.quantize(x, T, imatrix)
        assert ref.shape == (5, iqkt.row_size(T, 768))
        y = pyref.dequantize(ref, T, 768)
        assert np.all(np.isfinite(y)) and not np.any(y[3])
        for isa in ISAS:
            with iqkt.use_isa(isa):
                assert np.array_equal(iqkt.quantize(x, T, imatrix), ref), isa
                assert np.array_equal(bits(iqkt.dequantize(ref, T, 768)), bits(y)), isa


def test_error_between_iq2_and_shannon_and_random():
    """Gaussian rows: the distortion-rate bound of a unit Gaussian source at
    R bits per weight is 2^-2R, so no 1.75 + 32/1024 bpw code can go below
    2^-3.56; IQ2_KT (2.125 bpw) lands ~1.6x above its bound, and IQ1_KT must
    do about as well (<= 2x its bound), stay worse than IQ2_KT, and be far
    better than random bytes with the best row scale (error ~1)."""
    x = _rows(3)
    n = x.shape[1]
    e1 = pyref.rel_err(x, iqkt.dequantize(iqkt.quantize(x, T), T, n))
    e2 = pyref.rel_err(x, iqkt.dequantize(iqkt.quantize(x, "iq2_kt"), "iq2_kt", n))
    rnd = np.random.default_rng(4).integers(0, 256, (8, iqkt.row_size(T, n)), dtype=np.uint8)
    rnd[:, :4] = np.array([1.0], "<f4").view(np.uint8)
    yr = pyref.dequantize(rnd, T, n).astype(np.float64)
    a = (x * yr).sum(1) / (yr * yr).sum(1)
    e_rnd = pyref.rel_err(x, a[:, None] * yr)
    bound = 2.0 ** (-2 * (1.75 + 32 / n))
    assert bound < e1 < 2 * bound
    assert e2 < e1 < 0.25 * e_rnd
    assert e_rnd > 0.9


def test_imatrix_lowers_weighted_error():
    x = _rows(6, rows=6, n=512)
    im = (np.random.default_rng(7).random(512) ** 4 * 10).astype(np.float32)
    e_im = pyref.rel_err(x, iqkt.dequantize(iqkt.quantize(x, T, im), T, 512), im)
    e_no = pyref.rel_err(x, iqkt.dequantize(iqkt.quantize(x, T), T, 512), im)
    assert e_im < 0.9 * e_no


def test_mul_mat_every_isa_close_to_scalar_and_exact():
    """x86 runs IQ1 through the IQ2 kernels (indices and scales read through
    the type table): block dots are the exact integers of the scalar build,
    only the float sum order differs, so every ISA stays within the rounding
    bound of pyref.summation_order_ratio of scalar, at B = 1, the few-row
    kernels and the GEMM sizes (AVX512 int8 from 5 rows, int16 from 40).
    Quantized rows and random bytes (every index and scale bit pattern)."""
    n = 768
    rng = np.random.default_rng(10)
    rand = rng.integers(0, 256, (6, iqkt.row_size(T, n)), dtype=np.uint8)
    rand[:, :4] = (rng.standard_normal(6) * 0.01).astype(np.float32).view(np.uint8).reshape(6, 4)
    v = rng.standard_normal((48, n)).astype(np.float32)
    for q in (iqkt.quantize(_rows(9, rows=7, n=n), T), rand):
        exact = pyref.mul_mat_exact(q, T, n, v)
        for prec in ("int8", "int16"):
            for B in (1, 3, 4, 8, 9, 48):
                with iqkt.use_isa("scalar"):
                    ref = iqkt.mul_mat(q, T, v[:B], precision=prec)
                bound = 2e-3 if prec == "int16" else pyref.int8_error_bound(q, T, n, v[:B], exact[:B])
                for isa in ISAS:
                    with iqkt.use_isa(isa):
                        y = iqkt.mul_mat(q, T, v[:B], precision=prec)
                    assert pyref.summation_order_ratio(y, ref, q, T, n, v[:B], prec) <= 1.0, (isa, B, prec)
                    assert np.linalg.norm(y - exact[:B]) <= bound * np.linalg.norm(exact[:B]), (isa, B, prec)
