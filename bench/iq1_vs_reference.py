"""IQ1_KT error of iqkt against the numpy model of the reference quantizer
(tests/iq1_reference_model.py; no reference IQ1_KT vectors exist).

    python bench/iq1_vs_reference.py

Cases: the x (and imatrix) of the 6 IQ2_KT golden files, and the 6 synthetic
cases of bench/quantizer_tradeoffs.py (ROWS x 4096, default 8).  Columns: the
model's error (it stores d * 1.07 as the reference does), iqkt's error, their
ratio, and iqkt's ratio to two stronger variants of the model (d stored
without the 1.07 factor; three final re-search / refit passes instead of
one).  A first table checks the model itself: run as IQ2_KT, its error over
the real reference's on the IQ2_KT golden files (1.0 = as good).
Env: ROWS (default 8), EFFORT (iqkt's effort level, default "default").
"""
from __future__ import annotations

import glob
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, HERE)
import iq1_reference_model as model  # noqa: E402
import pyref  # noqa: E402
from quantizer_tradeoffs import cases, iqkt  # noqa: E402

T = "iq1_kt"


def golden():
    for f in sorted(glob.glob(os.path.join(HERE, "..", "tests", "data", "iq2_kt_*.npz"))):
        with np.load(f) as z:
            yield (os.path.basename(f)[7:-4], z["x"], z["imatrix"] if "imatrix" in z.files else None,
                   z["deq_ref"])


def err(x, q, im, t=T):
    return pyref.rel_err(x, pyref.dequantize(q, t, x.shape[1]), im)


def main() -> None:
    print("model run as IQ2_KT / real reference IQ2_KT (golden files):")
    for name, x, im, deq in golden():
        q = model.encode_iq2(*model.quantize_fields(x, im, store_factor=1.0, ncodes=65536))
        print(f"  {name:14s} {err(x, q, im, 'iq2_kt') / pyref.rel_err(x, deq, im):.3f}")
    data = [(n, x, im) for n, x, im, _ in golden()] + cases(int(os.environ.get("ROWS", "8")))
    print(f"\nIQ1_KT on {iqkt.isa()}, effort {os.environ.get('EFFORT', 'default')}:")
    print("| case | model (d*1.07) | iqkt | iqkt / model | / model d*1 | / model 3 passes |")
    print("|---|---|---|---|---|---|")
    ratios = []
    for name, x, im in data:
        e_ref = err(x, model.quantize(x, im), im)
        e_1 = err(x, model.quantize(x, im, store_factor=1.0), im)
        e_3 = err(x, model.quantize(x, im, passes=3), im)
        e = err(x, iqkt.quantize(x, T, im, threads=1, effort=os.environ.get("EFFORT", "default")), im)
        ratios.append(e / e_ref)
        print(f"| {name} | {e_ref:.4f} | {e:.4f} | {e / e_ref:.3f} | {e / e_1:.3f} | {e / e_3:.3f} |",
              flush=True)
    print(f"geo-mean iqkt / model {np.exp(np.log(ratios).mean()):.3f}, max {max(ratios):.3f}")


if __name__ == "__main__":
    main()
