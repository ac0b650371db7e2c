"""The integer trellis: pyref self-checks (no package needed) and iqkt.trellis vs pyref."""
from __future__ import annotations

import numpy as np
import pytest

import pyref

SPECIAL_SEEDS = [0, 1, 2, 4095, 4096, 4096 + 32767, 4096 + 32768, 4096 + 65535,
                 4096 + 32768 + 32767, 2**31 - 1, 2**31, 2**32 - 2, 2**32 - 1]


def _seed_sets():
    rng = np.random.default_rng(20261127)
    idx16 = rng.integers(0, 65536, size=200, dtype=np.uint64)
    idx15 = rng.integers(0, 32768, size=200, dtype=np.uint64)
    return {
        "special": np.array(SPECIAL_SEEDS, dtype=np.uint32),
        "random32": rng.integers(0, 2**32, size=500, dtype=np.uint64).astype(np.uint32),
        "idx+4096": (idx16 + 4096).astype(np.uint32),
        "idx+4096+32768": (idx15 + 4096 + 32768).astype(np.uint32),
    }


SEED_SETS = _seed_sets()


# ----------------------------------------------------------------- pyref self-checks
def test_pyref_trellis_hand_computed():
    # seed 0 stays 0 forever: every masked byte is 0, value = -126.
    assert pyref.trellis_scalar(0, 3) == [-126, -126, -126]
    # seed 1: state = 0xCBAC1FED; & 0x3F3F3F3F = 0x0B2C1F2D -> 0x0B+0x2C+0x1F+0x2D-126
    assert pyref.trellis_scalar(1, 1) == [0x0B + 0x2C + 0x1F + 0x2D - 126]
    # second step of seed 1: state = 0xCBAC1FED**2 mod 2**32
    st = (0xCBAC1FED * 0xCBAC1FED) % 2**32
    s = st & 0x3F3F3F3F
    assert pyref.trellis_scalar(1, 2)[1] == sum((s >> (8 * k)) & 0xFF for k in range(4)) - 126


@pytest.mark.parametrize("name", sorted(SEED_SETS))
def test_pyref_vectorised_matches_scalar(name):
    seeds = SEED_SETS[name][:60]
    vec = pyref.trellis(seeds, 16)
    ref = np.array([pyref.trellis_scalar(int(s), 16) for s in seeds], dtype=np.int64)
    assert np.array_equal(vec.astype(np.int64), ref)


def test_pyref_codebook_statistics():
    # The spec says values are roughly Gaussian with std ~ 37 and within [-126, 126].
    cb = pyref.codebook(4096, 8, 65536).astype(np.float64)
    assert cb.min() >= -126 and cb.max() <= 126
    assert abs(cb.mean()) < 1.0
    assert 33 < cb.std() < 41


# ----------------------------------------------------------------- package vs pyref
@pytest.mark.parametrize("name", sorted(SEED_SETS))
@pytest.mark.parametrize("steps", list(range(1, 17)))
def test_trellis_matches_pyref(iqkt_mod, name, steps):
    seeds = SEED_SETS[name]
    got = iqkt_mod.trellis(seeds, steps)
    exp = pyref.trellis(seeds, steps)
    assert isinstance(got, np.ndarray)
    assert got.dtype == np.int8
    assert got.shape == (len(seeds), steps)
    assert np.array_equal(got, exp)
    assert int(got.min()) >= -126 and int(got.max()) <= 126


def test_trellis_accepts_python_ints_and_other_int_dtypes(iqkt_mod):
    seeds = [0, 1, 4096, 2**32 - 1]
    exp = pyref.trellis(seeds, 8)
    assert np.array_equal(iqkt_mod.trellis(seeds, 8), exp)
    assert np.array_equal(iqkt_mod.trellis(np.array(seeds, dtype=np.uint64), 8), exp)
    assert np.array_equal(iqkt_mod.trellis(np.array(seeds, dtype=np.int64), 8), exp)


def test_trellis_full_codebook(iqkt_mod):
    """Every index of the IQ2/IQ3 codebook and both IQ4 codebooks."""
    s16 = np.arange(65536, dtype=np.uint32) + 4096
    assert np.array_equal(iqkt_mod.trellis(s16, 8), pyref.codebook(4096, 8, 65536))
    s15 = np.arange(32768, dtype=np.uint32) + 4096 + 32768
    assert np.array_equal(iqkt_mod.trellis(s15, 4), pyref.codebook(4096 + 32768, 4, 32768))


def test_trellis_strided_seeds(iqkt_mod):
    seeds = SEED_SETS["random32"]
    strided = np.repeat(seeds, 2)[::2]  # a view with stride 2*itemsize
    assert not strided.flags.c_contiguous
    assert np.array_equal(iqkt_mod.trellis(strided, 5), pyref.trellis(seeds, 5))


def test_trellis_empty(iqkt_mod):
    got = iqkt_mod.trellis(np.zeros(0, dtype=np.uint32), 4)
    assert got.shape == (0, 4) and got.dtype == np.int8
