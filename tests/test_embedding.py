"""The embedding API: downstream Cython and C extensions built at test time.

tests/embedding_example/ holds a tiny downstream project (the README's
example): kt_demo.pyx cimports iqkt.capi and calls the kernels in nogil
loops; kt_cdemo.c includes iqkt.h and calls iqkt_import().  It is compiled
in a temporary folder against ``iqkt.get_include()`` of the iqkt under test
(the worktree or an installed wheel), and its results must equal the Python
API's.  Skipped when there is no C compiler, Cython or setuptools.
"""
from __future__ import annotations

import importlib
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig
import threading

import numpy as np
import pytest

import iqkt

EXAMPLE_DIR = pathlib.Path(__file__).resolve().parent / "embedding_example"
EXAMPLE_FILES = ("setup.py", "kt_demo.pyx", "kt_cdemo.c")
PKG_DIR = pathlib.Path(iqkt.__file__).resolve().parent
PKG_PARENT = str(PKG_DIR.parent)


def _compiler():
    if sys.platform == "win32":
        return shutil.which("cl")
    return shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def _missing_tools():
    missing = []
    if not _compiler():
        missing.append("a C compiler")
    for mod in ("Cython", "setuptools"):
        try:
            importlib.import_module(mod)
        except ImportError:
            missing.append(mod)
    return missing


needs_build_tools = pytest.mark.skipif(
    bool(_missing_tools()), reason=f"embedding tests need {', '.join(_missing_tools())}")


def _env(**extra):
    """Environment where a child Python imports the iqkt under test."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PKG_PARENT, env.get("PYTHONPATH")]))
    env.update(extra)
    return env


# --------------------------------------------------------------- no compiler

def test_get_include_ships_header_and_pxd():
    inc = pathlib.Path(iqkt.get_include())
    assert inc.is_absolute() and inc.parent == PKG_DIR
    header = (inc / "iqkt.h").read_text()
    version = int(re.search(r"#define IQKT_API_VERSION (\d+)", header).group(1))
    assert version == iqkt.C_API_VERSION
    assert (PKG_DIR / "capi.pxd").is_file()


def test_capsule_is_the_current_variant():
    cap = iqkt._C_API
    assert type(cap).__name__ == "PyCapsule"
    assert 'iqkt._C_API' in repr(cap)
    assert cap is iqkt._dispatch.module()._C_API
    with pytest.raises(AttributeError):
        iqkt.no_such_attribute  # noqa: B018  (module __getattr__ must not swallow names)


def test_header_compiles_as_cplusplus(tmp_path):
    cxx = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if cxx is None or sys.platform == "win32":
        pytest.skip("no C++ compiler")
    src = tmp_path / "use.cpp"
    src.write_text('#include "iqkt.h"\n'
                   "int f(const uint8_t *q, const float *x, float *y) {\n"
                   "    if (iqkt_import() < 0) return -1;\n"
                   "    return iqkt_mul_mat(IQKT_IQ4_KT, q, 4, 256, x, 1, y, IQKT_PRECISION_INT8);\n"
                   "}\n")
    proc = subprocess.run([cxx, "-fsyntax-only", "-Wall", "-Werror", "-I", iqkt.get_include(),
                           "-I", sysconfig.get_paths()["include"], str(src)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_readme_example_is_the_tested_code():
    readme = PKG_DIR.parent / "README.md"
    if not readme.is_file() or not (PKG_DIR.parent / "setup.py").is_file():
        pytest.skip("not a source checkout (README.md not next to the package)")
    text = readme.read_text()
    assert "## Using iqkt from Cython and C" in text
    blocks = [b.strip() for b in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)]
    for name in EXAMPLE_FILES:
        assert (EXAMPLE_DIR / name).read_text().strip() in blocks, \
            f"README does not show tests/embedding_example/{name} verbatim"


# --------------------------------------------------------------- built

@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """Build the example once; yield (kt_demo, kt_cdemo, folder)."""
    missing = _missing_tools()
    if missing:
        pytest.skip(f"embedding tests need {', '.join(missing)}")
    folder = tmp_path_factory.mktemp("embedding_example")
    for name in EXAMPLE_FILES:
        shutil.copy(EXAMPLE_DIR / name, folder / name)
    proc = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=folder,
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"building the example failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    sys.path.insert(0, str(folder))
    try:
        demo = importlib.import_module("kt_demo")
        cdemo = importlib.import_module("kt_cdemo")
    finally:
        sys.path.remove(str(folder))
    yield demo, cdemo, folder
    for name in ("kt_demo", "kt_cdemo"):
        sys.modules.pop(name, None)


def _weights(rows, n, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, n)).astype(np.float32)


TYPE_IDS = list(enumerate(iqkt.TYPES))


@needs_build_tools
@pytest.mark.subprocess
def test_readme_usage_snippet_runs(example):
    readme = PKG_DIR.parent / "README.md"
    if not readme.is_file() or not (PKG_DIR.parent / "setup.py").is_file():
        pytest.skip("not a source checkout (README.md not next to the package)")
    _, _, folder = example
    snippets = [b for b in re.findall(r"```python\n(.*?)```", readme.read_text(), flags=re.S)
                if "import kt_demo" in b]
    assert snippets, "README lost its kt_demo usage snippet"
    proc = subprocess.run([sys.executable, "-c", snippets[0]], cwd=folder, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@needs_build_tools
def test_variant_is_the_one_in_use(example):
    demo, cdemo, _ = example
    assert demo.variant() == cdemo.variant() == iqkt.isa()
    assert cdemo.API_VERSION == iqkt.C_API_VERSION


@needs_build_tools
@pytest.mark.parametrize("tid,name", TYPE_IDS)
def test_quantize_dequantize_bit_identical(example, tid, name):
    demo, cdemo, _ = example
    n = 512
    x = _weights(6, n, tid) * np.float32(3)
    imatrix = np.random.default_rng(10 + tid).uniform(0.1, 5, n).astype(np.float32)
    for im in (None, imatrix):
        ref = iqkt.quantize(x, name, im)
        got = np.empty_like(ref)
        demo.quantize(tid, x, got, im)
        assert got.tobytes() == ref.tobytes()
    ref = iqkt.quantize(x, name)
    assert cdemo.quantize(tid, x, n) == ref.tobytes()
    deq = iqkt.dequantize(ref, name, n)
    got = np.empty_like(deq)
    demo.dequantize(tid, ref, got)
    assert got.tobytes() == deq.tobytes()
    assert cdemo.dequantize(tid, ref, n) == deq.tobytes()
    assert demo.row_size(tid, n) == iqkt.row_size(name, n) == ref.shape[1]


@needs_build_tools
@pytest.mark.parametrize("tid,name", TYPE_IDS)
@pytest.mark.parametrize("precision", ["int8", "int16", "float"])
@pytest.mark.parametrize("batch", [1, 5])
def test_mul_mat_equals_python_api(example, tid, name, precision, batch):
    demo, cdemo, _ = example
    n, rows = 768, 37
    q = iqkt.quantize(_weights(rows, n, 20 + tid), name)
    x = _weights(batch, n, 30 + batch)
    ref = iqkt.mul_mat(q, name, x, precision=precision)
    exact = precision == "float"
    if precision != "int16":   # the Cython demo knows int8 and float only
        for fn in (demo.mul_mat_rows, demo.mul_mat):
            y = np.full((batch, rows), np.nan, np.float32)
            fn(tid, q, x, y, exact)
            np.testing.assert_array_equal(y, ref, err_msg=fn.__name__)
    # the C API's values: IQKT_PRECISION_INT8 = 0, _FLOAT = 1, _INT16 = 2
    code = {"int8": 0, "float": 1, "int16": 2}[precision]
    y = np.frombuffer(cdemo.mul_mat(tid, q, n, x, code), np.float32).reshape(batch, rows)
    np.testing.assert_array_equal(y, ref)
    if precision == "float":   # any value other than 0 and 2 is float, as before INT16 existed
        y = np.frombuffer(cdemo.mul_mat(tid, q, n, x, 7), np.float32).reshape(batch, rows)
        np.testing.assert_array_equal(y, ref)


@needs_build_tools
def test_trellis_equals_python_api(example):
    demo, _, _ = example
    seeds = np.array([0, 1, 4096, 4096 + 32768, 2**32 - 1], np.uint32)
    out = np.empty((seeds.size, 19), np.int8)
    demo.trellis(seeds, out)
    np.testing.assert_array_equal(out, iqkt.trellis(seeds, 19))


@needs_build_tools
def test_errors_are_return_codes(example):
    demo, cdemo, _ = example
    x = _weights(2, 256, 1)
    with pytest.raises(ValueError, match=r"unknown KT type id \(code -1\)"):
        demo.row_size(7, 256)
    with pytest.raises(ValueError, match=r"multiple of 256.*\(code -2\)"):
        cdemo.quantize(0, _weights(1, 300, 1), 300)
    bad = x.copy()
    bad[1, 7] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinity \(code -3\)"):
        demo.quantize(2, bad, np.empty((2, iqkt.row_size("iq4_kt", 256)), np.uint8))
    q = iqkt.quantize(x, "iq3_kt")
    q[1, :4] = np.frombuffer(np.float32(np.inf).tobytes(), np.uint8)
    y = np.empty((1, 2), np.float32)
    with pytest.raises(ValueError, match=r"row scale.*\(code -4\)"):
        demo.mul_mat_rows(1, q, x[:1], y)
    with pytest.raises(ValueError, match=r"imatrix.*\(code -6\)"):
        demo.quantize(0, x, np.empty((2, iqkt.row_size("iq2_kt", 256)), np.uint8),
                      np.full(256, -1, np.float32))


@needs_build_tools
def test_threads_calling_kernels_at_once(example):
    """Python threads running the extensions' nogil loops concurrently give
    the sequential results (the kernels share only read-only tables)."""
    demo, cdemo, _ = example
    n, rows, nthreads = 512, 48, 6
    qs = [iqkt.quantize(_weights(rows, n, 40 + t), iqkt.TYPES[t % 3]) for t in range(nthreads)]
    xs = [_weights(4, n, 50 + t) for t in range(nthreads)]
    ws = [_weights(3, n, 60 + t) for t in range(nthreads)]

    def work(t):
        tid = t % 3
        y = np.empty((4, rows), np.float32)
        demo.mul_mat_rows(tid, qs[t], xs[t], y, t % 2 == 1)
        qw = np.empty((3, iqkt.row_size(iqkt.TYPES[tid], n)), np.uint8)
        demo.quantize(tid, ws[t], qw)
        yc = cdemo.mul_mat(tid, qs[t], n, xs[t], 0)
        return y, qw, yc

    expected = [work(t) for t in range(nthreads)]
    results = [None] * nthreads
    start = threading.Barrier(nthreads)

    def run(t):
        start.wait()
        for _ in range(3):
            results[t] = work(t)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(nthreads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    for t in range(nthreads):
        assert results[t] is not None, f"thread {t} failed"
        np.testing.assert_array_equal(results[t][0], expected[t][0])
        assert results[t][1].tobytes() == expected[t][1].tobytes()
        assert results[t][2] == expected[t][2]
    # And against the Python API: quantized bytes are the library's.
    for t in range(nthreads):
        assert expected[t][1].tobytes() == iqkt.quantize(ws[t], iqkt.TYPES[t % 3]).tobytes()


@needs_build_tools
def test_incompatible_version_fails_cleanly(example):
    _, cdemo, _ = example
    with pytest.raises(ImportError, match=r"version mismatch.*compiled against iqkt C API version "
                                          rf"{cdemo.API_VERSION + 1}.*provides version {cdemo.API_VERSION}"):
        cdemo.import_version(cdemo.API_VERSION + 1, cdemo.TABLE_SIZE)
    with pytest.raises(ImportError, match=r"too old.*needs a function table of"):
        cdemo.import_version(cdemo.API_VERSION, cdemo.TABLE_SIZE + 64)
    # A failed request leaves the working table in place.
    assert cdemo.variant() == iqkt.isa()
    q = iqkt.quantize(_weights(2, 256, 3), "iq2_kt")
    assert cdemo.dequantize(0, q, 256) == iqkt.dequantize(q, "iq2_kt", 256).tobytes()
    cdemo.import_version(cdemo.API_VERSION, cdemo.TABLE_SIZE)


@needs_build_tools
@pytest.mark.subprocess
def test_table_fixed_when_extension_imports(example):
    """IQKT_ISA picks the table; a later set_isa() does not change it."""
    _, _, folder = example
    avail = iqkt.available_isas()
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "import numpy as np, iqkt, kt_demo, kt_cdemo\n"
        "first = iqkt.isa()\n"
        "assert kt_demo.variant() == kt_cdemo.variant() == first, (kt_demo.variant(), first)\n"
        "other = [v for v in iqkt.available_isas() if v != first]\n"
        "if other:\n"
        "    iqkt.set_isa(other[0])\n"
        "    assert kt_demo.variant() == kt_cdemo.variant() == first\n"
        "    x = np.random.default_rng(0).standard_normal((3, 256)).astype(np.float32)\n"
        "    assert kt_cdemo.quantize(2, x, 256) == iqkt.quantize(x, 'iq4_kt').tobytes()\n"
        "print(first)\n"
    )
    for forced in dict.fromkeys([avail[-1], avail[0]]):
        proc = subprocess.run([sys.executable, "-c", code, str(folder)], env=_env(IQKT_ISA=forced), cwd=str(folder),
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == forced
