"""Benchmarks behind ``iqkt bench`` (also ``python -m iqkt._bench``).

Measures, with ``time.perf_counter`` medians over ``--repeat`` calls:

* ``mul_mat``    per type x shape (N x K) x batch B x threads, and numpy float32
                 ``W @ x`` on the same shape/B/thread count as the baseline;
* ``dequantize`` per type x shape x threads;
* ``quantize``   per type x threads on 128 x 4096 Gaussian rows with an imatrix.

The numpy baseline runs in a child process per thread count, with
``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` set before
numpy is imported, so "threads=1" really is one BLAS thread.

Weights for the large shapes: quantizing 4096 x 11008 Gaussian weights takes a
while, and a GEMV's cost does not depend on which codebook indices it reads, so
by default ``--unique-rows`` (512) distinct rows are quantized and tiled to N
rows (a real N x row_size array in memory, nothing is shared).  Quantized rows are
cached on disk in ``$IQKT_BENCH_CACHE`` (default: ``<tmp>/iqkt-bench-cache``), keyed
by type, shape, seed and iqkt version.  ``--unique-rows 0`` quantizes all N rows.

The helpers here are also used by the pytest-benchmark files in ``bench/``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

DEFAULT_SHAPES = ((4096, 4096), (4096, 11008))
QUICK_SHAPES = ((4096, 4096),)
BATCHES = (1, 8, 64)
THREADS = (1, 2)
QUANT_SHAPE = (128, 4096)
UNIQUE_ROWS = 512
ENV_REPORTED = (
    "IQKT_ISA", "IQKT_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
    "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
)
BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                    "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


# ----------------------------------------------------------------- helpers --

def quick_from_env() -> bool:
    return os.environ.get("IQKT_BENCH_QUICK", "").strip().lower() not in ("", "0", "false", "no")


def shapes(quick: bool | None = None):
    if quick is None:
        quick = quick_from_env()
    return QUICK_SHAPES if quick else DEFAULT_SHAPES


def gaussian(rows: int, k: int, seed: int = 0) -> np.ndarray:
    """float32 (rows, k) standard normal weights."""
    return np.random.default_rng(seed).standard_normal((rows, k), dtype=np.float32)


def imatrix(k: int, seed: int = 1) -> np.ndarray:
    """float32 (k,) importance vector, chi-square(1)-distributed like real imatrix columns."""
    rng = np.random.default_rng(seed)
    return (rng.chisquare(1.0, k) + 1e-3).astype(np.float32)


def activations(b: int, k: int, seed: int = 2) -> np.ndarray:
    """float32 activations: (k,) for b == 1 (the GEMV case), else (b, k)."""
    x = np.random.default_rng(seed).standard_normal((b, k), dtype=np.float32)
    return x[0].copy() if b == 1 else x


def cache_dir() -> str:
    d = os.environ.get("IQKT_BENCH_CACHE") or os.path.join(tempfile.gettempdir(), "iqkt-bench-cache")
    os.makedirs(d, exist_ok=True)
    return d


def quantized_weights(type_: str, n: int, k: int, *, seed: int = 0,
                      unique_rows: int = UNIQUE_ROWS, use_cache: bool = True) -> np.ndarray:
    """uint8 (n, row_size) quantized Gaussian weights of ``type_`` (cached on disk).

    ``unique_rows`` distinct rows are quantized (with an imatrix) and tiled to ``n``
    rows; 0 or >= n quantizes all rows.
    """
    import iqkt

    type_ = type_.lower()
    u = n if unique_rows <= 0 or unique_rows >= n else unique_rows
    version = getattr(iqkt, "__version__", "0")
    path = os.path.join(cache_dir(), f"{type_}-{u}x{k}-seed{seed}-v{version}.npy")
    q = None
    if use_cache and os.path.exists(path):
        try:
            q = np.load(path)
            if q.dtype != np.uint8 or q.shape != (u, iqkt.row_size(type_, k)):
                q = None
        except (OSError, ValueError):
            q = None
    if q is None:
        q = iqkt.quantize(gaussian(u, k, seed), type_, imatrix(k, seed + 1))
        if use_cache:
            tmp = f"{path}.{os.getpid()}.tmp.npy"
            np.save(tmp, q)
            os.replace(tmp, path)
    if u == n:
        return np.ascontiguousarray(q)
    reps = -(-n // u)
    return np.ascontiguousarray(np.tile(q, (reps, 1))[:n])


def time_call(fn, repeat: int, *, warmup: int = 1, budget_s: float | None = None,
              min_repeat: int = 3) -> list:
    """Per-call wall times in seconds (``warmup`` untimed calls first).

    Stops early after ``min_repeat`` calls once ``budget_s`` seconds were spent.
    """
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    for i in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if budget_s is not None and i + 1 >= min_repeat and time.perf_counter() - start > budget_s:
            break
    return times


def blas_info() -> list:
    """threadpoolctl's view of the loaded BLAS/OpenMP pools ([] if not installed)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return threadpool_info()


# ---------------------------------------------------------- numpy baseline --

# Runs in a child process whose BLAS thread variables were set before numpy's import.
_NUMPY_WORKER = r"""
import json, sys, time, statistics
import numpy as np
cfg = json.loads(sys.argv[1])
out = []
rng = np.random.default_rng(0)
for n, k in cfg["shapes"]:
    w = rng.standard_normal((n, k), dtype=np.float32)
    for b in cfg["batches"]:
        x = rng.standard_normal((b, k), dtype=np.float32)
        if b == 1:
            x1 = x[0].copy()
            fn = lambda: w @ x1
        else:
            xt = np.ascontiguousarray(x.T)   # (K, B): W @ X, the faster BLAS layout here
            fn = lambda: w @ xt
        fn()
        ts = []
        t_start = time.perf_counter()
        for i in range(cfg["repeat"]):
            t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
            if i >= 2 and time.perf_counter() - t_start > cfg["budget_s"]:
                break
        out.append({"n": n, "k": k, "b": b, "median_s": statistics.median(ts), "calls": len(ts)})
    del w
print("IQKT_NUMPY_RESULT " + json.dumps(out))
"""


def numpy_baseline(shape_list, batches, threads: int, repeat: int, budget_s: float = 3.0) -> dict:
    """{(n, k, b): median seconds} of numpy float32 W @ x with ``threads`` BLAS threads."""
    env = dict(os.environ)
    for v in BLAS_THREAD_VARS:
        env[v] = str(threads)
    cfg = {"shapes": [list(s) for s in shape_list], "batches": list(batches),
           "repeat": repeat, "budget_s": budget_s}
    proc = subprocess.run([sys.executable, "-c", _NUMPY_WORKER, json.dumps(cfg)], env=env,
                          capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("IQKT_NUMPY_RESULT "):
            res = json.loads(line.split(" ", 1)[1])
            return {(r["n"], r["k"], r["b"]): r["median_s"] for r in res}
    raise RuntimeError(f"numpy baseline worker failed (rc={proc.returncode}):\n{proc.stderr[-2000:]}")


# --------------------------------------------------------------------- CLI --

def _parse_list(s: str, conv=str):
    return [conv(p.strip()) for p in s.split(",") if p.strip()]


def _parse_shape(s: str):
    n, k = s.lower().split("x")
    return int(n), int(k)


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def _print_header(iqkt, args) -> None:
    print(f"iqkt {getattr(iqkt, '__version__', '?')}  isa={iqkt.isa()}  "
          f"available={','.join(iqkt.available_isas())}  precision={args.precision}")
    print(f"python {platform.python_version()}  numpy {np.__version__}  "
          f"machine={platform.machine()}  cpus={os.cpu_count()}")
    env = [f"{v}={os.environ[v]}" for v in ENV_REPORTED if os.environ.get(v)]
    print("env: " + (" ".join(env) if env else "(none of " + ", ".join(ENV_REPORTED) + " set)"))
    info = blas_info()
    if info:
        for p in info:
            print(f"threadpoolctl: {p.get('internal_api')} {p.get('version')} "
                  f"threads={p.get('num_threads')} arch={p.get('architecture', '?')} "
                  f"({os.path.basename(p.get('filepath', ''))})")
    else:
        print("threadpoolctl: not installed (pip install threadpoolctl to list BLAS pools)")
    if os.environ.get("OPENBLAS_CORETYPE") or os.environ.get("OPENBLAS_L2_SIZE"):
        print("note: OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE are set; they change the numpy baseline")
    print(f"times: median of up to {args.repeat} calls after 1 warm-up (time.perf_counter)")
    print()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="iqkt bench",
        description="Time iqkt's mul_mat / dequantize / quantize against numpy float32.")
    ap.add_argument("--quick", action="store_true",
                    help="only the 4096x4096 shape (also: IQKT_BENCH_QUICK=1)")
    ap.add_argument("--types", default="iq2_kt,iq3_kt,iq4_kt",
                    help="comma list of iqkt.TYPES (default: iq2_kt,iq3_kt,iq4_kt)")
    ap.add_argument("--threads", default=",".join(map(str, THREADS)),
                    help="comma list of thread counts (default: 1,2)")
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)),
                    help="comma list of batch sizes B for mul_mat (default: 1,8,64)")
    ap.add_argument("--shapes", default=None,
                    help="comma list of NxK weight shapes (default: 4096x4096,4096x11008)")
    ap.add_argument("--ops", default="mul_mat,dequantize,quantize",
                    help="comma list of mul_mat, dequantize, quantize (default: all)")
    ap.add_argument("--repeat", type=int, default=10, help="timed calls per case (default: 10)")
    ap.add_argument("--precision", default="int8,int16,float",
                    help="comma list of mul_mat precisions, side by side: int8, int16, float "
                         "(default: all three)")
    ap.add_argument("--effort", default="fast,default",
                    help="comma list of quantizer effort levels for the quantize rows "
                         "(iqkt.EFFORTS; default: fast,default)")
    ap.add_argument("--isa", default=None, help="kernel variant to use (default: the best available)")
    ap.add_argument("--unique-rows", type=int, default=UNIQUE_ROWS,
                    help=f"distinct quantized rows tiled to N (0: quantize all; default {UNIQUE_ROWS})")
    ap.add_argument("--no-numpy", action="store_true", help="skip the numpy float32 baseline")
    ap.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    args = ap.parse_args(argv)

    import iqkt

    if args.isa:
        iqkt.set_isa(args.isa)
    types = [t.lower() for t in _parse_list(args.types)]
    for t in types:
        if t not in iqkt.TYPES:
            ap.error(f"unknown type {t!r} (known: {', '.join(iqkt.TYPES)})")
    precisions = _parse_list(args.precision)
    for p in precisions:
        if p not in ("int8", "int16", "float"):
            ap.error(f"unknown precision {p!r} (known: int8, int16, float)")
    threads = _parse_list(args.threads, int)
    batches = _parse_list(args.batches, int)
    ops = _parse_list(args.ops)
    for o in ops:
        if o not in ("mul_mat", "dequantize", "quantize"):
            ap.error(f"unknown op {o!r}")
    if args.shapes:
        shape_list = [_parse_shape(s) for s in _parse_list(args.shapes)]
    else:
        shape_list = list(shapes(args.quick or quick_from_env()))
    repeat = max(1, args.repeat)

    _print_header(iqkt, args)
    results = []

    # numpy baselines first (child processes; fresh memory)
    base = {}
    if "mul_mat" in ops and not args.no_numpy:
        for t in threads:
            print(f"numpy float32 baseline, {t} BLAS thread(s) ...", flush=True)
            base[t] = numpy_baseline(shape_list, batches, t, repeat)
        print()

    cols = (f"{'op':<11} {'type':<7} {'prec':<5} {'N x K':<11} {'B':>3} {'thr':>3} {'median ms':>10} "
            f"{'Gw/s':>7} {'GB/s':>7} {'vs np f32':>9}")
    if "mul_mat" in ops or "dequantize" in ops:
        print("Gw/s: 10^9 weights per second (N*K*B for mul_mat); GB/s: weight bytes read per second;")
        print("vs np f32: numpy float32 time / iqkt time at the same shape, B and thread count (>1: iqkt faster)")
        print(cols)
        print("-" * len(cols))

    def row(op, typ, n, k, b, thr, med, nbytes, ratio, prec="-"):
        gw = n * k * (b or 1) / med / 1e9
        gb = nbytes / med / 1e9
        print(f"{op:<11} {typ:<7} {prec:<5} {f'{n}x{k}':<11} {('-' if b is None else b):>3} {thr:>3} "
              f"{med * 1e3:>10.3f} {gw:>7.2f} {gb:>7.2f} {_fmt(ratio, '>9.2f')}", flush=True)
        results.append({"op": op, "type": typ, "precision": None if prec == "-" else prec, "n": n, "k": k,
                        "b": b, "threads": thr, "median_ms": med * 1e3, "gweights_s": gw, "gbytes_s": gb,
                        "ratio_vs_numpy_f32": ratio})

    for n, k in shape_list:
        if "mul_mat" in ops:
            for b in batches:
                for thr in threads:
                    if thr in base and (n, k, b) in base[thr]:
                        row("numpy", "f32", n, k, b, thr, base[thr][(n, k, b)], 4 * n * k, None)
        for typ in types:
            if "mul_mat" not in ops and "dequantize" not in ops:
                break
            q = quantized_weights(typ, n, k, unique_rows=args.unique_rows)
            if "mul_mat" in ops:
                for b in batches:
                    x = activations(b, k)
                    for thr in threads:
                        for prec in precisions:     # side by side, same q and x
                            ts = time_call(lambda: iqkt.mul_mat(q, typ, x, threads=thr, precision=prec),
                                           repeat, budget_s=5.0)
                            med = statistics.median(ts)
                            nb = base.get(thr, {}).get((n, k, b))
                            row("mul_mat", typ, n, k, b, thr, med, q.nbytes, None if nb is None else nb / med,
                                prec)
            if "dequantize" in ops:
                for thr in threads:
                    ts = time_call(lambda: iqkt.dequantize(q, typ, k, threads=thr), repeat, budget_s=5.0)
                    row("dequantize", typ, n, k, None, thr, statistics.median(ts), q.nbytes, None)
            del q
        if "mul_mat" in ops or "dequantize" in ops:
            print()

    if "quantize" in ops:
        rows_q, k = QUANT_SHAPE
        x = gaussian(rows_q, k, seed=7)
        im = imatrix(k, seed=8)
        efforts = [e.strip() for e in args.effort.split(",") if e.strip()]
        bad = [e for e in efforts if e not in iqkt.EFFORTS]
        if bad:
            raise SystemExit(f"iqkt bench: unknown --effort {', '.join(bad)}; choose from {', '.join(iqkt.EFFORTS)}")
        qcols = f"{'op':<11} {'type':<7} {'effort':<8} {'rows x K':<11} {'thr':>3} {'median ms':>10} {'Mw/s':>8}"
        print("quantize: Gaussian rows with an imatrix; Mw/s: 10^6 weights per second")
        print(qcols)
        print("-" * len(qcols))
        for typ in types:
            for eff in efforts:
                for thr in threads:
                    ts = time_call(lambda: iqkt.quantize(x, typ, im, threads=thr, effort=eff),
                                   min(repeat, 5), budget_s=10.0)
                    med = statistics.median(ts)
                    mw = rows_q * k / med / 1e6
                    print(f"{'quantize':<11} {typ:<7} {eff:<8} {f'{rows_q}x{k}':<11} {thr:>3} {med * 1e3:>10.1f} "
                          f"{mw:>8.3f}", flush=True)
                    results.append({"op": "quantize", "type": typ, "effort": eff, "n": rows_q, "k": k, "b": None,
                                    "threads": thr, "median_ms": med * 1e3, "mweights_s": mw})
        print()

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"isa": iqkt.isa(), "precisions": precisions, "results": results}, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
