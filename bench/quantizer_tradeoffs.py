"""Speed / error trade-offs of the quantizer's parameters.

    python bench/quantizer_tradeoffs.py iq2_kt "" "nflip_refine=5" "refine_passes=1; nflip_trial=1"
    python bench/quantizer_tradeoffs.py iq4_kt "effort=fast" "" "effort=best"

Each argument after the type is one setting: name=value pairs separated by
semicolons (values are Python literals, e.g. iq4_steps=[24, 12]) passed as
``iqkt.quantize(..., params=...)`` (an empty string is the defaults; every
setting starts from the defaults, or from an effort level's preset with
``effort=fast``; names: ``iqkt._api.quantizer_params()``).  For each setting it
prints the throughput on 6 synthetic cases (Gaussian, Student-t 3, 0.5% x20
outliers; each without and with a chi-square imatrix; ROWS x 4096, 1
thread), each case's error relative to the first setting, and the error
relative to the reference's on every golden case (tests/data; none for
IQ1_KT, see bench/iq1_vs_reference.py).

The synthetic cases decide; the golden ratios are the issue's acceptance
bound (<= 1: error no larger than the reference's), not something to tune on.  Throughput is one timed pass per
setting: compare settings measured in the same run only.
Env: ROWS (default 16), ISA (default: the best available).
"""
from __future__ import annotations

import ast
import glob
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
import pyref  # noqa: E402

try:
    import iqkt
except ImportError:     # run from a checkout built in place (setup.py build_ext --inplace)
    sys.path.insert(0, os.path.join(HERE, ".."))
    import iqkt


def parse(setting: str) -> dict:
    out = {}
    for part in filter(None, (p.strip() for p in setting.split(";"))):
        name, _, value = part.partition("=")
        name, value = name.strip(), value.strip()
        out[name] = value if name == "effort" else ast.literal_eval(value)
    return out


def cases(rows: int):
    rng = np.random.default_rng(123)
    g = rng.standard_normal((rows, 4096))
    t3 = rng.standard_t(3, (rows, 4096))
    outl = g * np.where(rng.random((rows, 4096)) < 0.005, 20, 1)
    im = rng.chisquare(1, 4096).astype(np.float32)
    return [(f"{name}{'+im' if m is not None else ''}", x.astype(np.float32), m)
            for name, x in (("gauss", g), ("t3", t3), ("outliers", outl)) for m in (None, im)]


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit(__doc__)
    ty = pyref.norm_type(argv[1])
    settings = argv[2:] or [""]
    if os.environ.get("ISA"):
        iqkt.set_isa(os.environ["ISA"])
    data = cases(int(os.environ.get("ROWS", "16")))
    gold = sorted(glob.glob(os.path.join(HERE, "..", "tests", "data", f"{ty}_*.npz")))
    names = [os.path.basename(f)[len(ty) + 1:-4] for f in gold]
    print(f"{ty} on {iqkt.isa()}; cases: {' '.join(n for n, _, _ in data)}; golden: {' '.join(names)}")
    base = None
    for s in settings:
        params = parse(s)
        effort = params.pop("effort", "default")
        errs, dt = [], 0.0
        for _, x, m in data:
            t0 = time.perf_counter()
            q = iqkt.quantize(x, ty, m, threads=1, params=params, effort=effort)
            dt += time.perf_counter() - t0
            errs.append(pyref.rel_err(x, pyref.dequantize(q, ty, x.shape[1]), m))
        gr = []
        for f in gold:
            d = np.load(f)
            im = d["imatrix"] if "imatrix" in d.files else None
            q = iqkt.quantize(d["x"], ty, im, threads=1, params=params, effort=effort)
            gr.append(pyref.rel_err(d["x"], pyref.dequantize(q, ty, d["x"].shape[1]), im)
                      / pyref.rel_err(d["x"], d["deq_ref"], im))
        errs = np.array(errs)
        mw = sum(x.size for _, x, _ in data) / dt / 1e6
        if base is None:
            base = (errs, mw)
        rel = errs / base[0]
        print(f"{s or 'defaults':45s} {mw:6.3f} Mw/s (x{mw / base[1]:.2f})  "
              f"err geo x{np.exp(np.log(rel).mean()):.4f} max x{rel.max():.4f} "
              f"[{' '.join(f'{r:.3f}' for r in rel)}]"
              + (f"  golden max {max(gr):.3f} [{' '.join(f'{r:.3f}' for r in gr)}]" if gr else ""),
              flush=True)


if __name__ == "__main__":
    main(sys.argv)
