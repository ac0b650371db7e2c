"""A/B speed of two builds of iqkt (dev script, not a test).

    python bench/ab_speed.py OLD_ROOT NEW_ROOT [--rounds 3] [--isa avx2 ...]

Each root is a source tree with in-place built kernels.  Child processes
alternate between the two trees (OLD, NEW, OLD, NEW, ...) so machine noise
hits both; per case the best time over all rounds is kept and NEW/OLD speed
ratios (>1: NEW faster) are printed.  Cases, one thread, per type: quantize
16 x 4096 with an imatrix; int8 mul_mat 4096 x 4096 at B = 1 and 8; float
mul_mat 512 x 4096 at B = 1; dequantize 1024 x 4096; on the first ISA also
quantize and int8 mul_mat (B = 1, 8) with 2 threads.
"""
import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, sys, time
import numpy as np
import iqkt
isas, reps = json.loads(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
x = rng.standard_normal((16, 4096)).astype(np.float32)
im = (rng.chisquare(1.0, 4096) + 1e-3).astype(np.float32)
w = rng.standard_normal((256, 4096)).astype(np.float32)
out = {}
def best(f, n):
    t = []
    for _ in range(n):
        t0 = time.perf_counter(); f(); t.append(time.perf_counter() - t0)
    return min(t)
for isa in isas:
    with iqkt.use_isa(isa):
        for t in iqkt.TYPES:
            out[f"{isa} quantize {t}"] = best(lambda: iqkt.quantize(x, t, im, threads=1), reps)
            q = np.tile(iqkt.quantize(w, t, threads=2), (16, 1))
            for B in (1, 8):
                a = rng.standard_normal((B, 4096)).astype(np.float32)
                out[f"{isa} mul_mat {t} B={B}"] = best(lambda: iqkt.mul_mat(q, t, a, threads=1), 5 * reps)
            out[f"{isa} mul_mat float {t} B=1"] = best(lambda: iqkt.mul_mat(q[:512], t, a[0], threads=1,
                                                                            precision="float"), reps)
            out[f"{isa} dequantize {t}"] = best(lambda: iqkt.dequantize(q[:1024], t, 4096, threads=1), 3 * reps)
            if isa == isas[0]:      # the threaded paths, on the first ISA only
                out[f"{isa} quantize 2 threads {t}"] = best(lambda: iqkt.quantize(x, t, im, threads=2), reps)
                for B in (1, 8):
                    a = rng.standard_normal((B, 4096)).astype(np.float32)
                    out[f"{isa} mul_mat 2 threads {t} B={B}"] = best(lambda: iqkt.mul_mat(q, t, a, threads=2),
                                                                     5 * reps)
print(json.dumps(out))
"""


def run(root, isas, reps):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(root))
    r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(isas), str(reps)], env=env,
                       cwd="/", capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--isa", action="append")
    a = ap.parse_args()
    if a.isa:
        isas = a.isa
    else:
        env = dict(os.environ, PYTHONPATH=os.path.abspath(a.new))
        isas = json.loads(subprocess.run([sys.executable, "-c", "import iqkt, json; print(json.dumps(iqkt.available_isas()))"],
                                         env=env, cwd="/", capture_output=True, text=True, check=True).stdout)
    best = {"old": {}, "new": {}}
    for _ in range(a.rounds):
        for side in ("old", "new"):
            for k, v in run(getattr(a, side), isas, a.reps).items():
                best[side][k] = min(v, best[side].get(k, float("inf")))
    ratios = []
    for k in best["old"]:
        r = best["old"][k] / best["new"][k]
        ratios.append(r)
        print(f"{k:32s} old {best['old'][k] * 1e3:9.3f} ms  new {best['new'][k] * 1e3:9.3f} ms  x{r:.3f}")
    geo = 1.0
    for r in ratios:
        geo *= r
    print(f"geometric mean speed ratio new/old: x{geo ** (1 / len(ratios)):.3f}")


if __name__ == "__main__":
    main()
