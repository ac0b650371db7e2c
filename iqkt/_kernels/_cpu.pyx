# cython: language_level=3
"""CPU feature detection for iqkt's kernel dispatch.

This module is compiled without ISA flags, so importing it is safe on any
CPU; ``iqkt._dispatch`` asks it which kernel variants may be loaded before
importing any of them.

Environment:
    IQKT_CPU_MASK   comma-separated feature names (see ``FEATURE_NAMES``) to
                    pretend are absent, e.g. ``IQKT_CPU_MASK=avx512f,avx_vnni`` makes
                    an AVX-512 machine choose the avx2 variant.  Meant for
                    tests and for working around a misbehaving variant; it can
                    only hide features, never add them.  Read on every call.
"""
import os
import warnings

cdef extern from "cpu_features.h":
    enum:
        IQKT_CPU_NFEATURES
        IQKT_ARCH_OTHER
        IQKT_ARCH_X86_64
        IQKT_ARCH_ARM64
    unsigned iqkt_cpu_detect() nogil
    int iqkt_cpu_arch() nogil
    const char *iqkt_cpu_feature_name(int feature) nogil

#: Feature names, in the C header's bit order.
FEATURE_NAMES = tuple(iqkt_cpu_feature_name(i).decode("ascii")
                      for i in range(IQKT_CPU_NFEATURES))

#: Architecture this module was built for: "x86_64", "arm64" or "other".
ARCH = {IQKT_ARCH_X86_64: "x86_64", IQKT_ARCH_ARM64: "arm64"}.get(iqkt_cpu_arch(), "other")

# Variants, best first, with the architecture and features each needs: the
# table setup.py compiles them from (isa_manifest.py), so a variant may use
# any instruction its flags allow.
from iqkt._kernels import isa_manifest as _manifest
ISA_ARCH = {isa: _manifest.arch(isa) for isa in _manifest.ISAS}
ISA_FEATURES = {isa: tuple(_manifest.features(isa)) for isa in _manifest.ISAS}
ISAS = tuple(ISA_ARCH)

# The hardware does not change while we run: detect once, at import.
cdef unsigned _detected = iqkt_cpu_detect()


def raw_features():
    """Detected features as {name: bool}, ignoring IQKT_CPU_MASK."""
    return {name: bool((_detected >> i) & 1u) for i, name in enumerate(FEATURE_NAMES)}


def cpu_mask():
    """Feature names hidden by IQKT_CPU_MASK (unknown names warn and are ignored)."""
    spec = os.environ.get("IQKT_CPU_MASK", "")
    hidden = []
    for item in spec.split(","):
        name = item.strip().lower()
        if not name:
            continue
        if name not in FEATURE_NAMES:
            warnings.warn(f"IQKT_CPU_MASK: unknown feature {name!r} ignored "
                          f"(known: {', '.join(FEATURE_NAMES)})", RuntimeWarning, stacklevel=2)
        elif name not in hidden:
            hidden.append(name)
    return tuple(hidden)


def features():
    """{"arch": "x86_64"|"arm64"|"other", <feature>: bool, ...}, after IQKT_CPU_MASK.

    A feature is True only if both the CPU and the OS support it; "os_avx" and
    "os_avx512" tell whether the OS saves YMM / ZMM+opmask registers.
    """
    hidden = cpu_mask()
    out = {"arch": ARCH}
    for name, present in raw_features().items():
        out[name] = present and name not in hidden
    return out


def missing_features(isa, feats=None):
    """What the CPU lacks for variant ``isa``: a list of names, empty if it can run.

    A wrong architecture is reported as e.g. "arm64 architecture".
    """
    if isa not in ISA_ARCH:
        raise ValueError(f"unknown ISA {isa!r} (known: {', '.join(ISAS)})")
    if feats is None:
        feats = features()
    missing = []
    arch = ISA_ARCH[isa]
    if arch is not None and feats.get("arch") != arch:
        missing.append(f"{arch} architecture")
    missing.extend(f for f in ISA_FEATURES[isa] if not feats.get(f, False))
    return missing


def supported_isas(feats=None):
    """Variants this CPU (after IQKT_CPU_MASK) can run, best first; always ends with "scalar"."""
    if feats is None:
        feats = features()
    return [isa for isa in ISAS if not missing_features(isa, feats)]
