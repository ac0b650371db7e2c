"""CPU feature detection and kernel-variant dispatch.

Choices made at import time (IQKT_ISA, IQKT_CPU_MASK) are tested in fresh
interpreters; the rest in-process, restoring the dispatcher's state after
each test.
"""
import io
import os
import platform
import subprocess
import sys

import pytest

import iqkt
from conftest import iqkt_parent
from iqkt import _dispatch
from iqkt._kernels import _cpu

ALL = _dispatch.ALL_ISAS
# What the hardware offers, whatever IQKT_CPU_MASK the suite was started with
# (the tests run with the knobs cleared).
FEATURES = {"arch": _cpu.ARCH, **_cpu.raw_features()}
SUPPORTED = _cpu.supported_isas(FEATURES)
BUILT = _dispatch.built_isas()
AVAILABLE = [i for i in SUPPORTED if i in BUILT]
UNSUPPORTED = [i for i in ALL if i not in SUPPORTED]
ROOT = os.path.dirname(os.path.abspath(list(iqkt.__path__)[0]))
ENV_KNOBS = ("IQKT_ISA", "IQKT_CPU_MASK", "IQKT_NUM_THREADS")

needs_avx512 = pytest.mark.skipif(
    not {"avx512", "avx2"} <= set(AVAILABLE),
    reason="needs an x86_64 CPU with AVX-512 (and the avx512 + avx2 variants built)")


@pytest.fixture(autouse=True)
def _clean_dispatch(monkeypatch):
    for k in ENV_KNOBS:
        monkeypatch.delenv(k, raising=False)
    state, warned = _dispatch._state, list(_dispatch._warnings)
    yield
    _dispatch._state = state
    _dispatch._warnings[:] = warned


@pytest.fixture(scope="session")
def spawn():
    """Run Python code in a fresh interpreter with extra env vars."""
    try:
        subprocess.run([sys.executable, "-c", "pass"], check=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:  # e.g. under user-mode QEMU
        pytest.skip(f"cannot start a child interpreter: {exc}")

    def run(code, **env):
        full = {k: v for k, v in os.environ.items() if k not in ENV_KNOBS}
        full["PYTHONPATH"] = os.pathsep.join(filter(None, [iqkt_parent(), os.environ.get("PYTHONPATH")]))
        full.update(env)
        return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True,
                              text=True, timeout=120, cwd=iqkt_parent())
    return run


PRINT_ISA = "import iqkt; print(iqkt.isa())"
LOADED = ("import sys; print(sorted(m.rsplit('.', 1)[1] for m in sys.modules"
          " if m.startswith('iqkt._kernels._kt_')))")


# ------------------------------------------------------------- detection --

def test_features_keys():
    assert FEATURES["arch"] in ("x86_64", "arm64", "other")
    expected = {"avx2", "fma", "f16c", "bmi2", "popcnt", "avx512f", "avx512bw", "avx512vl",
                "avx512dq", "avx512vnni", "os_avx", "os_avx512", "asimddp", "avx_vnni"}
    assert set(FEATURES) == expected | {"arch"}
    assert set(_cpu.FEATURE_NAMES) == expected
    assert all(isinstance(FEATURES[k], bool) for k in expected)


def test_supported_isas_order():
    assert SUPPORTED[-1] == "scalar"
    assert SUPPORTED == [i for i in ALL if i in SUPPORTED]      # best first
    assert iqkt.available_isas() == AVAILABLE
    assert "scalar" in BUILT and AVAILABLE[-1] == "scalar"


def test_arch_consistent_with_features():
    if FEATURES["arch"] != "x86_64":
        assert not any(FEATURES[f] for f in ("avx2", "avx512f", "os_avx", "os_avx512"))
    if FEATURES["arch"] != "arm64":
        assert not FEATURES["asimddp"]
    if FEATURES["avx512f"] and FEATURES["os_avx512"]:
        assert FEATURES["os_avx"]


@pytest.mark.skipif(not (sys.platform.startswith("linux") and FEATURES["arch"] == "x86_64"),
                    reason="compares with Linux x86 /proc/cpuinfo")
def test_features_match_proc_cpuinfo():
    with open("/proc/cpuinfo") as f:
        flags = next(line for line in f if line.startswith("flags")).split(":", 1)[1].split()
    # The kernel drops AVX flags when it does not save their state, so these
    # match our CPU-and-OS answer.
    for ours, linux in [("avx2", "avx2"), ("fma", "fma"), ("f16c", "f16c"), ("bmi2", "bmi2"),
                        ("popcnt", "popcnt"), ("avx512f", "avx512f"), ("avx512bw", "avx512bw"),
                        ("avx512vl", "avx512vl"), ("avx512dq", "avx512dq"),
                        ("avx512vnni", "avx512_vnni"), ("avx_vnni", "avx_vnni")]:
        assert FEATURES[ours] == (linux in flags), ours


def test_cpu_mask_in_process(monkeypatch):
    monkeypatch.setenv("IQKT_CPU_MASK", " AVX2, os_avx512 ")
    feats = _cpu.features()
    assert not feats["avx2"] and not feats["os_avx512"]
    assert "avx2" not in _cpu.supported_isas() and "avx512" not in _cpu.supported_isas()
    assert _cpu.raw_features()["avx2"] == FEATURES["avx2"]      # the mask only hides
    monkeypatch.setenv("IQKT_CPU_MASK", "nosuchfeature")
    with pytest.warns(RuntimeWarning, match="nosuchfeature"):
        assert _cpu.features() == FEATURES


def test_missing_features_names_the_gap():
    assert _cpu.missing_features("scalar") == []
    other = "neon" if FEATURES["arch"] != "arm64" else "avx2"
    assert any("architecture" in m for m in _cpu.missing_features(other))
    with pytest.raises(ValueError):
        _cpu.missing_features("sse9")


def test_built_isas_does_not_import(spawn):
    code = ("import sys, iqkt._dispatch as d\n"
            "before = {m for m in sys.modules if m.startswith('iqkt._kernels._kt_')}\n"
            "built = d.built_isas()\n"
            "after = {m for m in sys.modules if m.startswith('iqkt._kernels._kt_')}\n"
            "print(built, after == before)")
    r = spawn(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-1] == "True"


# ------------------------------------------------------------ auto choice --

def test_default_is_best_available(spawn):
    r = spawn(PRINT_ISA)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == AVAILABLE[0]
    r = spawn(PRINT_ISA, IQKT_ISA="auto")
    assert r.stdout.strip() == AVAILABLE[0], r.stderr
    r = spawn(PRINT_ISA, IQKT_ISA="")
    assert r.stdout.strip() == AVAILABLE[0], r.stderr


@needs_avx512
def test_this_machine_prefers_avx512(spawn):
    assert {"scalar", "avx2", "avx512"} <= set(iqkt.available_isas())
    assert iqkt.available_isas()[0] == "avx512"
    r = spawn(PRINT_ISA)
    assert r.stdout.strip() == "avx512", r.stderr


@needs_avx512
def test_mask_avx512f_falls_back_to_avx2(spawn, monkeypatch):
    next_best = "avx2_vnni" if "avx2_vnni" in AVAILABLE else "avx2"
    r = spawn(PRINT_ISA + "\n" + LOADED, IQKT_CPU_MASK="avx512f")
    assert r.returncode == 0, r.stderr
    isa, loaded = r.stdout.strip().splitlines()
    assert isa == next_best
    assert "_kt_avx512" not in loaded                  # never imported
    # In-process, the mask is honoured on every query.
    monkeypatch.setenv("IQKT_CPU_MASK", "avx512f")
    assert iqkt.available_isas()[0] == next_best


needs_avx2_vnni = pytest.mark.skipif(
    not {"avx2_vnni", "avx2"} <= set(AVAILABLE),
    reason="needs an x86_64 CPU with AVX-VNNI (and the avx2_vnni + avx2 variants built)")


@needs_avx2_vnni
def test_avx2_vnni_between_avx512_and_avx2():
    order = [i for i in AVAILABLE if i in ("avx512", "avx2_vnni", "avx2")]
    assert order[-2:] == ["avx2_vnni", "avx2"]
    assert "avx_vnni" in _cpu.ISA_FEATURES["avx2_vnni"]
    assert set(_cpu.ISA_FEATURES["avx2"]) < set(_cpu.ISA_FEATURES["avx2_vnni"])


@needs_avx2_vnni
def test_mask_avx_vnni_falls_back_to_avx2(spawn, monkeypatch):
    r = spawn(PRINT_ISA + "\n" + LOADED, IQKT_CPU_MASK="avx512f,avx_vnni")
    assert r.returncode == 0, r.stderr
    isa, loaded = r.stdout.strip().splitlines()
    assert isa == "avx2"
    assert "_kt_avx2_vnni" not in loaded and "_kt_avx512" not in loaded   # never imported
    monkeypatch.setenv("IQKT_CPU_MASK", "avx_vnni")
    assert "avx2_vnni" not in iqkt.available_isas() and "avx2" in iqkt.available_isas()


@pytest.mark.parametrize("feature, isa", [
    pytest.param("avx512f", "avx512", marks=needs_avx512),
    # a CPU without AVX-VNNI (say AVX-512 Skylake / Ice Lake or Zen 3) is refused avx2_vnni
    pytest.param("avx_vnni", "avx2_vnni", marks=needs_avx2_vnni),
])
def test_mask_forcing_a_masked_variant_fails_cleanly(spawn, monkeypatch, feature, isa):
    r = spawn(PRINT_ISA + "\n" + LOADED, IQKT_CPU_MASK=feature, IQKT_ISA=isa)
    assert r.returncode > 0, (r.returncode, r.stdout)   # an exception, not a signal
    assert f"IQKT_ISA={isa}" in r.stderr and feature in r.stderr
    monkeypatch.setenv("IQKT_CPU_MASK", feature)
    before = iqkt.isa()
    with pytest.raises(RuntimeError, match=feature) as ei:
        iqkt.set_isa(isa)
    assert isinstance(ei.value, _dispatch.IsaError)
    assert iqkt.isa() == before


def test_import_failure_falls_back(monkeypatch):
    if len(AVAILABLE) < 2:
        pytest.skip("needs two available variants")
    best, second = AVAILABLE[:2]
    real = _dispatch._import_variant

    def broken(name):
        if name == best:
            raise ImportError("simulated breakage")
        return real(name)
    monkeypatch.setattr(_dispatch, "_import_variant", broken)
    _dispatch._state = None
    with pytest.warns(RuntimeWarning, match="simulated breakage"):
        assert iqkt.isa() == second
    buf = io.StringIO()
    info = iqkt.show_config(file=buf)
    assert any("simulated breakage" in w for w in info["warnings"])
    assert "simulated breakage" in buf.getvalue()
    # Forcing the broken variant is an error, not a fallback.
    with pytest.raises(_dispatch.IsaError, match="failed to import"):
        iqkt.set_isa(best)
    assert iqkt.isa() == second


# ----------------------------------------------------------- forced choice --

@pytest.mark.parametrize("name", ALL)
def test_force_each_available_variant(name, spawn):
    if name not in AVAILABLE:
        pytest.skip(f"{name} not available here")
    r = spawn(PRINT_ISA, IQKT_ISA=name)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == name
    r = spawn(PRINT_ISA, IQKT_ISA=" " + name.upper())   # lenient spelling
    assert r.stdout.strip() == name, r.stderr


@pytest.mark.parametrize("name", UNSUPPORTED or ["(none)"])
def test_force_unsupported_variant_fails_cleanly(name, spawn):
    if name == "(none)":
        pytest.skip("this CPU supports every variant")
    r = spawn(PRINT_ISA + "\n" + LOADED, IQKT_ISA=name)
    assert r.returncode > 0, (r.returncode, r.stdout)   # an exception, not SIGILL
    assert f"IQKT_ISA={name}" in r.stderr and "cannot run" in r.stderr
    assert "missing:" in r.stderr


def test_force_unknown_name(spawn):
    with pytest.raises(ValueError) as ei:
        iqkt.set_isa("sse9")
    for name in ALL:
        assert name in str(ei.value)
    with pytest.raises(ValueError):
        _dispatch.load("sse9")
    with pytest.raises(TypeError):
        iqkt.set_isa(3)
    r = spawn(PRINT_ISA, IQKT_ISA="sse9")
    assert r.returncode > 0
    assert "sse9" in r.stderr and all(name in r.stderr for name in ALL)


def test_force_variant_not_built(monkeypatch):
    if len(AVAILABLE) < 2:
        pytest.skip("needs a non-scalar variant this CPU supports")
    target = AVAILABLE[0]
    monkeypatch.setattr(_dispatch, "built_isas", lambda: ["scalar"])
    with pytest.raises(_dispatch.IsaError, match="not in this build"):
        iqkt.set_isa(target)
    with pytest.raises(RuntimeError, match=target):
        _dispatch.load(target)


# --------------------------------------------------------------- switching --

def test_set_isa_and_use_isa():
    start = iqkt.isa()
    for name in AVAILABLE:
        assert iqkt.set_isa(name) == name
        assert iqkt.isa() == name
        assert _dispatch.current()[0] == name
        mod = _dispatch.module()
        assert mod.__name__ == f"iqkt._kernels._kt_{name}"
        assert getattr(mod, "VARIANT", name) == name
    iqkt.set_isa("scalar")
    with iqkt.use_isa(AVAILABLE[0]) as inside:
        assert inside == iqkt.isa() == AVAILABLE[0]
        with iqkt.use_isa("scalar"):
            assert iqkt.isa() == "scalar"
        assert iqkt.isa() == AVAILABLE[0]
    assert iqkt.isa() == "scalar"
    with pytest.raises(KeyError):
        with iqkt.use_isa(AVAILABLE[0]):
            raise KeyError("boom")
    assert iqkt.isa() == "scalar"
    with pytest.raises(ValueError):
        with iqkt.use_isa("sse9"):
            pass
    assert iqkt.isa() == "scalar"
    assert iqkt.set_isa("auto") == AVAILABLE[0]
    iqkt.set_isa(start)


def test_load_does_not_switch():
    start = iqkt.isa()
    mod = _dispatch.load("scalar")
    assert mod.__name__ == "iqkt._kernels._kt_scalar"
    assert iqkt.isa() == start


# ------------------------------------------------------------------ report --

def test_show_config(monkeypatch):
    buf = io.StringIO()
    info = iqkt.show_config(file=buf)
    text = buf.getvalue()
    assert info["isa"] == iqkt.isa()
    assert f"variant in use: {iqkt.isa()}" in text
    assert info["available_isas"] == AVAILABLE and info["built_isas"] == BUILT
    assert info["cpu_arch"] == FEATURES["arch"]
    assert info["machine"] == platform.machine()
    for key in ("iqkt", "python", "numpy", "cpu_features", "threads"):
        assert key in info
    assert "cpu features:" in text and ("avx2=" in text and "asimddp=" in text)
    with iqkt.use_isa("scalar"):
        buf = io.StringIO()
        info = iqkt.show_config(file=buf)
        assert info["isa"] == "scalar" and info["isa_reason"] == "use_isa"
        assert "variant in use: scalar" in buf.getvalue()
    monkeypatch.setenv("IQKT_NUM_THREADS", "3")
    assert iqkt.show_config(file=io.StringIO())["threads"] == 3
    monkeypatch.setenv("IQKT_NUM_THREADS", "zero")
    with pytest.warns(RuntimeWarning, match="IQKT_NUM_THREADS"):
        assert iqkt.show_config(file=io.StringIO())["threads"] == (os.cpu_count() or 1)


def test_show_config_reports_env_choice(spawn):
    r = spawn("import iqkt; iqkt.show_config()", IQKT_ISA="scalar", IQKT_CPU_MASK="popcnt")
    assert r.returncode == 0, r.stderr
    assert "variant in use: scalar (forced by IQKT_ISA)" in r.stdout
    assert "hidden by IQKT_CPU_MASK: popcnt" in r.stdout
    assert "popcnt=no" in r.stdout
