"""Choice of the compiled kernel variant ("ISA") used by iqkt.

The kernels are built several times, once per instruction set, as modules
``iqkt._kernels._kt_<isa>``.  Importing a variant the CPU cannot execute may
crash the process with SIGILL (module initialisation can already run
vector code), so a variant is imported only after ``iqkt._kernels._cpu``
has confirmed the CPU and OS support everything it was compiled for.

Environment:
    IQKT_ISA           force a variant (avx512, avx2_vnni, avx2, neon, scalar); empty or
                       "auto" picks the best one available.  A forced variant
                       that cannot run is an error, not a silent fallback.
    IQKT_CPU_MASK      hide CPU features (see iqkt._kernels._cpu), for tests.
    IQKT_NUM_THREADS   default worker thread count (else os.cpu_count()).

The chosen variant is process-wide: ``set_isa`` and ``use_isa`` affect all
threads.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import platform
import sys
import threading
import warnings

__all__ = [
    "ALL_ISAS", "IsaError", "built_isas", "supported_isas", "available_isas", "load",
    "current", "module", "isa", "set_isa", "use_isa", "cpu_features", "default_threads",
    "show_config",
]

from iqkt._kernels import isa_manifest as _manifest

#: Every variant name iqkt knows, best first (iqkt/_kernels/isa_manifest.py).
ALL_ISAS = tuple(_manifest.ISAS)

_PKG = "iqkt._kernels"


class IsaError(RuntimeError):
    """A requested kernel variant cannot be used (CPU lacks it, or not built)."""


# --------------------------------------------------------------- detection --

def _cpu():
    """The detection module, or None if it is missing from this build."""
    try:
        from iqkt._kernels import _cpu as mod
    except ImportError as exc:  # a broken build: stay usable with scalar only
        _warn_once(f"CPU feature detection unavailable ({exc}); only 'scalar' is considered safe")
        return None
    return mod


def cpu_features() -> dict:
    """{"arch": ..., <feature>: bool} as detected (after IQKT_CPU_MASK)."""
    cpu = _cpu()
    if cpu is None:
        return {"arch": "unknown"}
    return cpu.features()


def supported_isas() -> list:
    """Variants the CPU can run, best first (whether built or not)."""
    cpu = _cpu()
    return ["scalar"] if cpu is None else list(cpu.supported_isas())


def _missing(name: str) -> list:
    cpu = _cpu()
    if cpu is None:
        return [] if name == "scalar" else ["CPU feature detection (iqkt._kernels._cpu)"]
    return cpu.missing_features(name)


def built_isas() -> list:
    """Variants compiled into this installation, best first.

    Uses import machinery lookups only: a found module is not executed.
    """
    found = []
    for name in ALL_ISAS:
        try:
            spec = importlib.util.find_spec(f"{_PKG}._kt_{name}")
        except (ImportError, ValueError):
            spec = None
        if spec is not None:
            found.append(name)
    return found


def available_isas() -> list:
    """Variants both built and runnable on this CPU, best first."""
    built = set(built_isas())
    return [name for name in supported_isas() if name in built]


# ----------------------------------------------------------------- loading --

_warnings: list = []          # messages shown by show_config
_lock = threading.RLock()
_state = None                 # (name, module, reason) once chosen


def _warn_once(msg: str) -> None:
    if msg not in _warnings:
        _warnings.append(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


def _import_variant(name: str):
    # Separate function so tests can simulate a variant that fails to import.
    return importlib.import_module(f"{_PKG}._kt_{name}")


def _normalize(name, where: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{where}: ISA name must be a str, not {type(name).__name__}")
    key = name.strip().lower()
    if key not in ALL_ISAS:
        raise ValueError(f"{where}: unknown ISA {name!r}; known names: "
                         f"{', '.join(ALL_ISAS)} (or 'auto')")
    return key


def _load_forced(name: str, where: str):
    """Import exactly variant ``name`` or raise IsaError; ``where`` prefixes messages."""
    missing = _missing(name)
    if missing:
        raise IsaError(f"{where}: this CPU cannot run the {name!r} kernel variant "
                       f"(missing: {', '.join(missing)}); variants available here: "
                       f"{', '.join(available_isas())}")
    built = built_isas()
    if name not in built:
        raise IsaError(f"{where}: the {name!r} kernel variant is not in this build of "
                       f"iqkt (built: {', '.join(built) or 'none'})")
    try:
        return _import_variant(name)
    except Exception as exc:
        raise IsaError(f"{where}: the {name!r} kernel variant failed to import: {exc}") from exc


def _load_auto():
    """(name, module) for the best variant that imports; remembers failures."""
    for name in available_isas():
        try:
            return name, _import_variant(name)
        except Exception as exc:
            _warn_once(f"kernel variant {name!r} failed to import ({exc}); "
                       f"fell back to the next one")
    raise ImportError("iqkt: no kernel variant could be loaded (built: "
                      f"{', '.join(built_isas()) or 'none'}; runnable here: "
                      f"{', '.join(supported_isas())})")


def _resolve(name, source: str):
    """(name, module, reason) for a request from ``source``.

    ``name`` None means: IQKT_ISA if set, else automatic choice.  ``reason``
    is "auto", "IQKT_ISA", "set_isa" or "use_isa".
    """
    if name is None:
        env = os.environ.get("IQKT_ISA", "").strip()
        name, source = (env, "IQKT_ISA") if env and env.lower() != "auto" else ("auto", "auto")
    if isinstance(name, str) and name.strip().lower() == "auto":
        chosen, mod = _load_auto()
        return chosen, mod, "auto"
    where = f"IQKT_ISA={name}" if source == "IQKT_ISA" else f"{source}({name!r})"
    key = _normalize(name, where)
    return key, _load_forced(key, where), source


def load(name=None):
    """Import and return the variant module for ``name``, without making it current.

    ``name`` None reads IQKT_ISA (empty or "auto": best available).  An unknown
    name raises ValueError; a variant the CPU lacks or that was not built
    raises IsaError (a RuntimeError) and is never imported.
    """
    return _resolve(name, "load")[1]


def _current_state():
    state = _state
    if state is None:
        with _lock:
            state = _state
            if state is None:
                state = _set(_resolve(None, "auto"))
    return state


def current():
    """(name, module) of the variant in use, choosing it on first call."""
    state = _current_state()
    return state[0], state[1]


def module():
    """The variant module in use (fast path for the API layer)."""
    state = _state
    return state[1] if state is not None else _current_state()[1]


def isa() -> str:
    """Name of the variant in use, e.g. "avx512"."""
    return _current_state()[0]


def _set(state):
    global _state
    _state = state
    return state


def set_isa(name):
    """Switch the process-wide variant; "auto" (or None) re-runs the automatic choice.

    Returns the name now in use.  Raises like ``load``; on error the current
    choice is unchanged.
    """
    with _lock:
        return _set(_resolve("auto" if name is None else name, "set_isa"))[0]


@contextlib.contextmanager
def use_isa(name):
    """Context manager: use variant ``name`` inside the block (yields its name), then restore."""
    with _lock:
        saved = _current_state()
        state = _set(_resolve("auto" if name is None else name, "use_isa"))
    try:
        yield state[0]
    finally:
        with _lock:
            _set(saved)


# ------------------------------------------------------------------ report --

def default_threads():
    """(count, source): IQKT_NUM_THREADS if a positive integer, else the CPU count."""
    env = os.environ.get("IQKT_NUM_THREADS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n >= 1:
            return n, "IQKT_NUM_THREADS"
        _warn_once(f"IQKT_NUM_THREADS={env!r} is not a positive integer; ignored")
    return max(1, os.cpu_count() or 1), "os.cpu_count()"


def _version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version
        try:
            return version("iqkt")
        except PackageNotFoundError:
            pass
    except ImportError:
        pass
    return getattr(sys.modules.get("iqkt"), "__version__", None) or "unknown"


def show_config(file=None) -> dict:
    """Print build and runtime configuration (to ``file``, default stdout); return it as a dict."""
    try:
        import numpy
        np_version = numpy.__version__
    except ImportError:
        np_version = "not installed"
    cpu = _cpu()
    feats = cpu_features()
    try:
        name, _, reason = _current_state()
    except Exception as exc:  # report, don't raise: this is a diagnostic tool
        name, reason = None, f"error: {exc}"
    threads, threads_src = default_threads()
    info = {
        "iqkt": _version(),
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "numpy": np_version,
        "machine": platform.machine(),
        "platform": sys.platform,
        "cpu_arch": feats.get("arch"),
        "cpu_features": {k: v for k, v in feats.items() if k != "arch"},
        "cpu_mask": list(cpu.cpu_mask()) if cpu is not None else [],
        "built_isas": built_isas(),
        "available_isas": available_isas(),
        "isa": name,
        "isa_reason": reason,
        "threads": threads,
        "threads_source": threads_src,
        "warnings": list(_warnings),
    }
    reasons = {"auto": "auto: best available", "IQKT_ISA": "forced by IQKT_ISA",
               "set_isa": "set by iqkt.set_isa()", "use_isa": "inside iqkt.use_isa()"}
    lines = [
        f"iqkt {info['iqkt']}",
        f"python {info['python']}, numpy {info['numpy']}",
        f"machine: {info['machine']} ({info['platform']}); kernels built for {info['cpu_arch']}",
        "cpu features: " + (" ".join(f"{k}={'yes' if v else 'no'}"
                                     for k, v in info["cpu_features"].items()) or "unknown"),
    ]
    if info["cpu_mask"]:
        lines.append(f"cpu features hidden by IQKT_CPU_MASK: {', '.join(info['cpu_mask'])}")
    lines += [
        f"variants built: {', '.join(info['built_isas']) or 'none'}",
        f"variants available: {', '.join(info['available_isas']) or 'none'}",
        f"variant in use: {name or 'none'} ({reasons.get(reason, reason)})",
        f"threads: {threads} ({threads_src})",
    ]
    lines += [f"warning: {w}" for w in info["warnings"]]
    print("\n".join(lines), file=file if file is not None else sys.stdout)
    return info
