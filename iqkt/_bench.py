"""`iqkt bench`: a benchmark table.

Timings are normalised by numpy's float32 4096x4096 GEMV on one BLAS thread,
measured in the same run, because the reference quantizer's speeds were taken
on a machine where that GEMV took 2.77 ms (see issue 5).
"""
from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np

from . import _dispatch
from ._api import quantize

#: Reference quantizer (ik_llama.cpp, one thread, imatrix), million weights/s,
#: measured when numpy's GEMV below took REF_GEMV_MS.
REF_QUANT_MWS = {"iq2_kt": 1.3, "iq3_kt": 0.55, "iq4_kt": 0.55}
REF_GEMV_MS = 2.77


def _blas_one_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:                 # optional: then BLAS may use several threads
        return contextlib.nullcontext()
    return threadpool_limits(1)


def numpy_gemv_ms(repeat: int = 20) -> float:
    """Median wall time of a float32 (4096, 4096) @ (4096,) product, one BLAS thread."""
    a = np.random.default_rng(0).standard_normal((4096, 4096), dtype=np.float32)
    v = np.ones(4096, dtype=np.float32)
    ts = []
    with _blas_one_thread():
        for _ in range(repeat):
            t0 = time.perf_counter()
            a @ v
            ts.append(time.perf_counter() - t0)
    return float(np.median(ts)) * 1e3


def quantize_speed(type: str, rows: int = 16, n: int = 4096, repeat: int = 3, threads: int = 1,
                   imatrix: bool = True, seed: int = 5) -> float:
    """Median quantize throughput in million weights per second (wall time)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, n)).astype(np.float32)
    im = rng.chisquare(1, n).astype(np.float32) if imatrix else None
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        quantize(x, type, im, threads=threads)
        ts.append(time.perf_counter() - t0)
    return x.size / float(np.median(ts)) / 1e6


def quantize_table(rows: int = 16, threads=(1,), isa=None) -> list[dict]:
    out = []
    with _dispatch.use_isa(isa) if isa else contextlib.nullcontext():
        g = numpy_gemv_ms()
        for t in REF_QUANT_MWS:
            for th in threads:
                mws = quantize_speed(t, rows=rows, threads=th)
                norm = mws * g / REF_GEMV_MS
                out.append({"type": t, "isa": _dispatch.isa(), "threads": th, "mws": mws,
                            "normalised_mws": norm, "vs_reference": norm / REF_QUANT_MWS[t] / th,
                            "numpy_gemv_ms": g})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="iqkt bench", description="iqkt benchmark table")
    p.add_argument("--rows", type=int, default=16, help="rows of 4096 Gaussian weights to quantize")
    p.add_argument("--threads", type=int, nargs="+", default=[1])
    p.add_argument("--isa", default=None, help="kernel variant (default: the one in use)")
    args = p.parse_args(argv)
    rows = quantize_table(args.rows, tuple(args.threads), args.isa)
    print(f"quantize, 4096-wide Gaussian rows with a chi-square imatrix; numpy f32 GEMV "
          f"{rows[0]['numpy_gemv_ms']:.2f} ms (reference figures taken at {REF_GEMV_MS} ms)")
    print(f"{'type':8s} {'isa':7s} {'thr':>3s} {'Mw/s':>8s} {'normalised':>11s} {'vs ref/thread':>14s}")
    for r in rows:
        print(f"{r['type']:8s} {r['isa']:7s} {r['threads']:3d} {r['mws']:8.3f} {r['normalised_mws']:11.3f} "
              f"{r['vs_reference']:13.2f}x")
    return 0
