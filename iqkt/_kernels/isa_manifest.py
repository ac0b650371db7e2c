"""The kernel variants ("ISAs"): one table that setup.py compiles from and
iqkt._kernels._cpu / iqkt._dispatch detect and choose from.

Plain Python with no imports, so setup.py can load it before anything is
built.  Each variant lists, best first, its target architecture and the CPU
features it needs; its compiler flags are the flags of those features
(FEATURE_FLAGS), so a variant can never be compiled for an instruction its
runtime check does not look for.  Feature names are those of cpu_features.h;
"os_*" features are OS support checks with no compiler flag.  The C code of a
variant is iqkt/_kernels/isa/<name>.h (kt_isa.h picks it from the flags).
"""

#: GCC/Clang flags per feature (features without an entry need no flag).
FEATURE_FLAGS = {
    "avx2": ["-mavx2"], "fma": ["-mfma"], "f16c": ["-mf16c"], "bmi2": ["-mbmi2"],
    "popcnt": ["-mpopcnt"],
    "avx512f": ["-mavx512f"], "avx512bw": ["-mavx512bw"], "avx512vl": ["-mavx512vl"],
    "avx512dq": ["-mavx512dq"], "avx512vnni": ["-mavx512vnni"], "avx_vnni": ["-mavxvnni"],
    "asimddp": ["-march=armv8.2-a+dotprod"],
}

_AVX2 = ("avx2", "fma", "f16c", "bmi2", "popcnt", "os_avx")

#: name -> (architecture or None for any, required features, MSVC flags); best first.
ISAS = {
    "avx512": ("x86_64", _AVX2 + ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512vnni",
                                  "os_avx512"), ["/arch:AVX512"]),
    # AVX2 + the VEX-encoded vpdpbusd (Alder Lake and later clients, Sapphire
    # Rapids): isa/avx2.h compiled with __AVXVNNI__ (MSVC has no such macro
    # and allows the intrinsic under /arch:AVX2, hence the define).
    "avx2_vnni": ("x86_64", _AVX2 + ("avx_vnni",), ["/arch:AVX2", "/DIQKT_MSVC_AVXVNNI"]),
    "avx2": ("x86_64", _AVX2, ["/arch:AVX2"]),
    "neon": ("arm64", ("asimddp",), []),
    "scalar": (None, (), []),
}


def arch(isa):
    return ISAS[isa][0]


def features(isa):
    return ISAS[isa][1]


def compile_flags(isa, msvc=False):
    """Compiler flags of a variant: the flags of its features, in order."""
    if msvc:
        return list(ISAS[isa][2])
    out = []
    for f in ISAS[isa][1]:
        for flag in FEATURE_FLAGS.get(f, ()):
            if flag not in out:
                out.append(flag)
    return out


def variants_for(target_arch):
    """Variants built by default for a target architecture, best first."""
    return [name for name, (a, _, _) in ISAS.items() if a is None or a == target_arch]
