"""Floors of the AVX512-VNNI int8 mul_mat kernels (issue #15), one core.

Compiles bench/gemv_floors.c (the kernels' instruction mixes with data in
L1/L2), runs it, times numpy float32 W @ x (4096 x 4096, one BLAS thread) in
the same run, and with --gemm also the real IQ2_KT int8 GEMM at B = 64 through
`iqkt bench`.  Prints per-weight costs and the best ratio to numpy each floor
allows.  Skips (exit 0) where gcc or AVX512-VNNI is missing.

    python bench/gemv_floors.py [--gemm] [--scale S]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

N = 4096
W = N * N   # weights of one 4096 x 4096 matrix
FLAGS = ["-O3", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512vnni", "-mfma"]
TARGET = {1: 3.0, 8: 6.0, 64: 4.3}   # issue #15, avx512, IQ2_KT (B=1 IQ3 2.6, IQ4 2.4)


def cpu_has_vnni() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln for ln in f if ln.startswith("flags")), "")
    except OSError:
        return True   # let the binary's own cpuid check decide
    return "avx512_vnni" in flags.split()


def run_floors(scale: float) -> dict:
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gemv_floors.c")
    with tempfile.TemporaryDirectory() as d:
        exe = os.path.join(d, "gemv_floors")
        subprocess.run(["gcc", *FLAGS, "-o", exe, src], check=True)
        out = subprocess.run([exe, str(scale)], check=True, capture_output=True, text=True).stdout
    res = {}
    for line in out.splitlines():
        parts = line.split()
        if parts[0] == "skip":
            return {}
        res[parts[0]] = (float(parts[2]), float(parts[3]))   # best, median
    return res


def iqkt_gemm64_ms() -> float:
    """Median ms of IQ2_KT int8 mul_mat, 4096 x 4096, B = 64, 1 thread, from `iqkt bench`."""
    cmd = [sys.executable, "-m", "iqkt._bench", "--quick", "--ops", "mul_mat", "--batches", "64",
           "--threads", "1", "--types", "iq2_kt", "--precision", "int8"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():   # op type prec NxK B thr median_ms Gw/s GB/s ratio
        fields = line.split()
        if fields[:3] == ["mul_mat", "iq2_kt", "int8"]:
            return float(fields[6])
    raise RuntimeError("could not parse `iqkt bench` output:\n" + out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gemm", action="store_true", help="also time the real IQ2_KT int8 GEMM at B = 64")
    ap.add_argument("--scale", type=float, default=4.0, help="work per timing (4: one 4096^2 matrix)")
    a = ap.parse_args()
    if shutil.which("gcc") is None or not cpu_has_vnni():
        print("skip: needs gcc and a CPU with AVX512-VNNI")
        return 0
    f = run_floors(a.scale)
    if not f:
        print("skip: CPU lacks AVX512-VNNI")
        return 0
    from iqkt._bench import numpy_baseline
    npy = {b: s * 1e3 for (_, _, b), s in numpy_baseline([(N, N)], [1, 8, 64], threads=1, repeat=15).items()}
    best = {k: v[0] for k, v in f.items()}
    ms = lambda ns_per_weight, b=1: ns_per_weight * W * b / 1e6   # noqa: E731

    print(f"numpy float32 4096x4096, 1 thread: B=1 {npy[1]:.2f} ms, B=8 {npy[8]:.2f} ms, B=64 {npy[64]:.2f} ms")
    print("\n| measure | ns (best / median) | per 4096^2 | best ratio to numpy it allows |")
    print("|---|---|---|---|")
    row = lambda name, unit, per, note: print(  # noqa: E731
        f"| {name} | {f[name][0]:.4g} / {f[name][1]:.4g} per {unit} | {per} | {note} |")
    t1 = ms(best["b1_gen_dot"])
    row("b1_gen_dot", "weight", f"{t1:.3f} ms", f"B=1 {npy[1] / t1:.2f}x (target {TARGET[1]})")
    tg = ms(best["b1_gen_only"])
    row("b1_gen_only", "weight", f"{tg:.3f} ms", f"B=1 {npy[1] / tg:.2f}x")
    for name, tgt in (("b1_iq3_form", 2.6), ("b1_iq4_form", 2.4)):
        t = ms(best[name])
        row(name, "weight", f"{t:.3f} ms", f"B=1 {npy[1] / t:.2f}x (target {tgt})")
    tm = ms(best["peak_vpmulld"] / 16)
    row("peak_vpmulld", "zmm (16 weights)", f"{tm:.3f} ms", f"B=1 {npy[1] / tm:.2f}x (1 vpmulld / 16 weights only)")
    dec = min(best["decode_computed"], best["decode_lookup"])
    td = ms(dec)
    row("decode_computed", "weight", f"{ms(best['decode_computed']):.3f} ms", "")
    row("decode_lookup", "weight", f"{ms(best['decode_lookup']):.3f} ms", "")
    peak_mac = best["peak_vpdpbusd"] / 64
    row("peak_vpdpbusd", "zmm (64 MACs)", f"{64 / best['peak_vpdpbusd']:.0f} GMAC/s", "")
    for b, names in ((8, ("gemm8_mac", "gemm8_mac_epilogue")), (64, ("gemm64_mac", "gemm64_mac_epilogue"))):
        for name in names:
            t = td + ms(best[name], b)
            row(name, "MAC", f"{1 / best[name]:.0f} GMAC/s",
                f"B={b} decode + MACs {t:.2f} ms: {npy[b] / t:.2f}x (target {TARGET[b]})")
        t = td + ms(peak_mac, b)
        print(f"| decode + MACs at vpdpbusd peak | | {t:.2f} ms | B={b} {npy[b] / t:.2f}x |")
    need_ms = npy[64] / TARGET[64]
    need = 64 * W / (need_ms - td) / 1e6 if need_ms > td else float("inf")
    print(f"\nB=64 target {TARGET[64]}x = {need_ms:.2f} ms = {64 * W / need_ms / 1e6:.0f} GMAC/s overall; "
          f"after the {td:.2f} ms decode the MACs need {need:.0f} GMAC/s "
          f"({100 * need * best['peak_vpdpbusd'] / 64:.0f}% of vpdpbusd peak)")
    if a.gemm:
        g = iqkt_gemm64_ms()
        print(f"iqkt IQ2_KT int8 GEMM B=64: {g:.2f} ms = {64 * W / g / 1e6:.0f} GMAC/s overall, "
              f"{npy[64] / g:.2f}x numpy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
