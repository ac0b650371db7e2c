"""Build script: the same Cython kernel source compiled once per CPU ISA.

Each variant is a tiny shim ``iqkt/_kernels/_kt_<isa>.pyx`` that ``include``s
``kt_kernels.pxi``; only the compiler flags differ.  ``iqkt/_dispatch.py``
picks the best one at import time.

Environment knobs (all optional):
  IQKT_VARIANTS   comma list of variants to build (default: all for the target arch)
  IQKT_SANITIZE   "1" -> -fsanitize=address,undefined -fno-omit-frame-pointer
  IQKT_DEBUG      "1" -> -O0 -g
"""
import os
import runpy
import sys
import sysconfig

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class ParallelBuildExt(build_ext):
    """Compile the variants in parallel (pip builds call build_ext without -j).

    A default variant whose ISA flags the compiler rejects (e.g. -mavxvnni
    before GCC 11 / clang 12) is left out with a warning: the runtime then
    dispatches among the others.  A variant named in IQKT_VARIANTS is required.
    """

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1

    def _flags_ok(self, flags):
        import tempfile
        from distutils.errors import CompileError

        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "flags_probe.c")
            with open(src, "w") as f:
                f.write("int main(void) { return 0; }\n")
            try:
                self.compiler.compile([src], output_dir=tmp, extra_postargs=flags)
            except CompileError:
                return False
        return True

    def build_extensions(self):
        if not MSVC:
            kept = []
            for ext in self.extensions:
                v = ext.name.rsplit("._kt_", 1)[-1] if "._kt_" in ext.name else None
                if v is not None and ISA_FLAGS[v] and not self._flags_ok(ISA_FLAGS[v]):
                    if REQUESTED:
                        raise SystemExit(f"IQKT_VARIANTS: the compiler rejects the {v!r} variant's flags "
                                         f"{' '.join(ISA_FLAGS[v])}")
                    print(f"warning: the compiler rejects {' '.join(ISA_FLAGS[v])}: "
                          f"variant {v!r} not built", file=sys.stderr)
                    continue
                kept.append(ext)
            self.extensions[:] = kept
        super().build_extensions()

KDIR = os.path.join("iqkt", "_kernels")


def _target_arch():
    # sysconfig honours _PYTHON_HOST_PLATFORM, which cross builds set.
    plat = sysconfig.get_platform().lower()
    if any(a in plat for a in ("aarch64", "arm64")):
        return "arm64"
    if any(a in plat for a in ("x86_64", "amd64", "win-amd64", "universal2")) or plat.startswith("macosx") and "x86" in plat:
        return "x86_64"
    import platform

    m = platform.machine().lower()
    if m in ("aarch64", "arm64"):
        return "arm64"
    if m in ("x86_64", "amd64"):
        return "x86_64"
    return "other"


MSVC = sys.platform == "win32"
ARCH = _target_arch()

# The variants, their features and compiler flags: one table, shared with the
# runtime detection (iqkt/_kernels/isa_manifest.py; loaded as a plain file, the
# package is not importable before it is built).  Everything else
# (optimisation, no FP contraction) is common, so that every variant computes
# the quantizer bit-identically.
MANIFEST = runpy.run_path(os.path.join(KDIR, "isa_manifest.py"))
ISA_FLAGS = {isa: MANIFEST["compile_flags"](isa, msvc=MSVC) for isa in MANIFEST["ISAS"]}
DEFAULT_VARIANTS = MANIFEST["variants_for"](ARCH)

variants = os.environ.get("IQKT_VARIANTS")
REQUESTED = bool(variants)
variants = [v.strip() for v in variants.split(",") if v.strip()] if variants else DEFAULT_VARIANTS
for v in variants:
    if v not in ISA_FLAGS:
        raise SystemExit(f"IQKT_VARIANTS: unknown variant {v!r} (known: {', '.join(ISA_FLAGS)})")

if MSVC:
    BASE_CFLAGS = ["/O2", "/fp:precise"]
    BASE_LDFLAGS = []
else:
    # -ffp-contract=off: no FMA fusion behind our back, so the scalar and SIMD
    # builds round identically.  -fno-math-errno lets sqrtf inline.
    BASE_CFLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math",
                   "-Wno-unused-function", "-Wno-unreachable-code"]
    BASE_LDFLAGS = []
    if os.environ.get("IQKT_DEBUG") == "1":
        BASE_CFLAGS = ["-O0", "-g"] + BASE_CFLAGS[1:]
    if os.environ.get("IQKT_SANITIZE") == "1":
        san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
        BASE_CFLAGS = BASE_CFLAGS + san + ["-g"]
        BASE_LDFLAGS = BASE_LDFLAGS + san
    if sys.platform.startswith("linux"):
        BASE_LDFLAGS.append("-lpthread")

# iqkt/include holds iqkt.h, the embedding API header that the variants'
# function tables (kt_capi.pxi) are laid out by; it ships in the wheel.
IDIR = os.path.join("iqkt", "include")
include_dirs = [np.get_include(), KDIR, IDIR]
# Every variant includes the shared kernel sources and headers: rebuild on any change.
KERNEL_DEPENDS = sorted([os.path.join(d, f) for d in (KDIR, os.path.join(KDIR, "isa"), IDIR)
                         for f in os.listdir(d) if f.endswith((".pxi", ".h", ".pxd"))])
macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]

extensions = []
for v in variants:
    extensions.append(
        Extension(
            f"iqkt._kernels._kt_{v}",
            [os.path.join(KDIR, f"_kt_{v}.pyx")],
            include_dirs=include_dirs,
            define_macros=macros + [("IQKT_VARIANT", f'"{v}"')],
            depends=KERNEL_DEPENDS,
            extra_compile_args=BASE_CFLAGS + ISA_FLAGS[v],
            extra_link_args=BASE_LDFLAGS,
        )
    )

# CPU feature detection and the format table: compiled without ISA flags,
# they must run anywhere.
for name in ("_cpu", "_types"):
    extensions.append(
        Extension(
            f"iqkt._kernels.{name}",
            [os.path.join(KDIR, f"{name}.pyx")],
            include_dirs=[KDIR, IDIR],
            depends=[os.path.join(IDIR, "iqkt_types.h")],
            extra_compile_args=BASE_CFLAGS,
            extra_link_args=BASE_LDFLAGS,
        )
    )

setup(
    cmdclass={"build_ext": ParallelBuildExt},
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "embedsignature": True,
        },
        include_path=[KDIR],
    ),
)
