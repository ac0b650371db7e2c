"""IQ1_KT quality against the reference quantizer (issue #16: error <= the
reference's on the same rows).  No reference IQ1_KT vectors exist, so the bar
is iq1_reference_model.py, an independent numpy model of the reference
quantizer; the first tests check the model itself (its bytes decode as it
meant them; run as IQ2_KT it matches the real reference's error on the IQ2_KT
golden files).  Measured table: docs/perf-notes.md, bench/iq1_vs_reference.py."""
import functools

import numpy as np
import pytest

import iq1_reference_model as model
import pyref
from conftest import GOLDEN_CASES

T = "iq1_kt"
IQ2_GOLDEN = {c.case: c for c in GOLDEN_CASES if c.type == "iq2_kt"}


def synthetic():
    """Gaussian, Student-t 3, 0.5% x20 outliers; each without and with a
    chi-square imatrix (bench/quantizer_tradeoffs.py's cases, smaller)."""
    rng = np.random.default_rng(321)
    g = rng.standard_normal((4, 1024))
    t3 = rng.standard_t(3, (4, 1024))
    outl = g * np.where(rng.random((4, 1024)) < 0.005, 20, 1)
    im = rng.chisquare(1, 1024).astype(np.float32)
    return {f"{name}{'+im' if m is not None else ''}": (x.astype(np.float32), m)
            for name, x in (("gauss", g), ("t3", t3), ("outliers", outl)) for m in (None, im)}


CASES = {f"golden_{k}": (c.x, c.imatrix) for k, c in IQ2_GOLDEN.items()}
CASES.update(synthetic())


def err(x, q, im, t=T):
    return pyref.rel_err(x, pyref.dequantize(q, t, x.shape[1]), im)


def test_model_bytes_decode_to_its_choices():
    """The model's encoder puts every field where pyref's two decoders read
    it: decoding gives float32(d * table[code]) * trellis(index + 4096)."""
    x, im = CASES["t3+im"]
    d, codes, idx = model.quantize_fields(x, im)
    q = model.encode(d, codes, idx)
    rows, n = x.shape
    scale = (d[:, None] * model.TABLE[codes].astype(np.float32)).astype(np.float32)
    vals = pyref.codebook(pyref.OFFSET, 8, 8192)[idx].astype(np.float32).reshape(rows, n // 32, 32)
    want = (scale[..., None] * vals).reshape(rows, n)
    assert idx.max() < 8192 and len(np.unique(idx)) > 400 and len(np.unique(codes)) > 8
    assert 0.3 < (idx >= 4096).mean() < 0.7          # bit 12 (in sh) is exercised
    assert np.array_equal(pyref.dequantize(q, T, n), want)
    assert np.array_equal(pyref.dequantize_scalar(q[:1], T, n), want[:1])
    assert np.array_equal(pyref.row_scales(q, T, n), d)


@pytest.mark.parametrize("case", ["gauss", "gauss_imatrix", "wide"])
def test_model_as_iq2_matches_the_real_reference(case):
    """The same model with IQ2_KT's 65536 codes and no 1.07 factor is the
    reference IQ2_KT quantizer as described; its error is within a few
    percent of the real one's (measured 1.012 / 0.974 / 1.000; the heavy-
    tailed file, 1.158, is the model's worst: its weak spot is not where
    iqkt's IQ1 margin is thin)."""
    c = IQ2_GOLDEN[case]
    x = c.x[:4]
    q = model.encode_iq2(*model.quantize_fields(x, c.imatrix, store_factor=1.0, ncodes=65536))
    ratio = err(x, q, c.imatrix, "iq2_kt") / pyref.rel_err(x, c.deq_ref[:4], c.imatrix)
    assert 0.93 < ratio < 1.07


@functools.lru_cache(maxsize=None)
def model_errors(case):
    x, im = CASES[case]
    return err(x, model.quantize(x, im), im), err(x, model.quantize(x, im, store_factor=1.0), im)


@pytest.mark.parametrize("case", list(CASES))
def test_iq1_error_not_above_reference_model(iqkt_mod, case):
    """iqkt's IQ1_KT error is at most the modelled reference's (which stores
    d * 1.07), and at most that of the model with its least-squares d
    stored as is (a stronger bar than the issue's)."""
    x, im = CASES[case]
    e = err(x, iqkt_mod.quantize(x, T, im), im)
    e_ref, e_ls = model_errors(case)
    assert e <= e_ref, (e, e_ref)
    assert e <= e_ls, (e, e_ls)


@pytest.mark.parametrize("case", list(CASES))
def test_iq1_fast_effort_not_above_reference_model(iqkt_mod, case):
    """The fast level keeps the issue's bar (measured max 0.913 of the model)."""
    x, im = CASES[case]
    e = err(x, iqkt_mod.quantize(x, T, im, effort="fast"), im)
    assert e <= model_errors(case)[0], (e, model_errors(case)[0])
