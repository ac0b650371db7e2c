"""The `iqkt` command: `iqkt info`, `iqkt demo`, `iqkt bench`."""
from __future__ import annotations

import argparse
import sys
import time


def _cmd_info(args) -> int:
    import iqkt

    iqkt.show_config()
    return 0


def _median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def _cmd_demo(args) -> int:
    """Quantize a built-in synthetic weight matrix with every KT type."""
    import numpy as np

    import iqkt

    rows, n = args.rows, args.cols
    if n % 256 or n <= 0 or rows <= 0:
        print("iqkt demo: --cols must be a positive multiple of 256 and --rows positive", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    # LLM-like weights: Gaussian rows with per-column importance and a few outliers.
    w = (rng.standard_normal((rows, n)) * 0.02).astype(np.float32)
    w[rng.random((rows, n)) < 1e-3] *= 8
    imatrix = rng.chisquare(4, n).astype(np.float32)
    x = rng.standard_normal(n).astype(np.float32)

    print(f"iqkt {iqkt.__version__} demo: synthetic {rows}x{n} float32 matrix, kernel variant "
          f"{iqkt.isa()}, threads {args.threads or 'default'}")
    y_ref = w.astype(np.float64) @ x.astype(np.float64)
    t_np = _median_time(lambda: w @ x, args.repeat)
    print(f"numpy float32 W @ x: {t_np * 1e3:.3f} ms\n")
    hdr = f"{'type':8s} {'bits/w':>7s} {'MiB':>7s} {'rel.err':>9s} {'rel.err(im)':>11s} {'quant s':>8s} " \
          f"{'mul_mat ms':>10s} {'vs numpy':>8s} {'mm rel.err':>10s}"
    print(hdr)
    print("-" * len(hdr))
    for t in iqkt.TYPES:
        t0 = time.perf_counter()
        q = iqkt.quantize(w, t, imatrix, threads=args.threads)
        tq = time.perf_counter() - t0
        deq = iqkt.dequantize(q, t, n)
        err = float(((w - deq) ** 2).sum() / (w ** 2).sum())
        errw = float((imatrix * (w - deq) ** 2).sum() / (imatrix * w ** 2).sum())
        t_mm = _median_time(lambda: iqkt.mul_mat(q, t, x, threads=args.threads), args.repeat)
        y = iqkt.mul_mat(q, t, x, threads=args.threads)
        mm_err = float(np.linalg.norm(y - y_ref) / np.linalg.norm(y_ref))
        bpw = 8 * q.nbytes / (rows * n)
        print(f"{t:8s} {bpw:7.3f} {q.nbytes / 2**20:7.2f} {err:9.5f} {errw:11.5f} {tq:8.2f} "
              f"{t_mm * 1e3:10.3f} {t_np / t_mm:7.2f}x {mm_err:10.4f}")
    print("\nrel.err: relative squared error of the dequantized weights; (im): imatrix-weighted.")
    print("mm rel.err: relative L2 error of mul_mat (int8 activations) against the float64 product "
          "with the original weights.")
    return 0


def _cmd_bench(args, rest) -> int:
    from . import _bench

    return _bench.main(rest)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="iqkt", description="KT trellis quantization tools")
    sub = parser.add_subparsers(dest="cmd")
    sub.add_parser("info", help="show the detected CPU features and the kernel variant in use")
    d = sub.add_parser("demo", help="quantize a built-in synthetic matrix with every KT type")
    d.add_argument("--rows", type=int, default=128)
    d.add_argument("--cols", type=int, default=4096)
    d.add_argument("--threads", type=int, default=None)
    d.add_argument("--repeat", type=int, default=20)
    d.add_argument("--seed", type=int, default=0)
    sub.add_parser("bench", help="benchmark table (see `iqkt bench --help`)", add_help=False)
    args, rest = parser.parse_known_args(argv)
    try:
        if args.cmd == "info":
            return _cmd_info(args)
        if args.cmd == "demo":
            return _cmd_demo(args)
        if args.cmd == "bench":
            return _cmd_bench(args, rest)
    except (ValueError, TypeError, RuntimeError, OSError) as e:
        print(f"iqkt: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("iqkt: interrupted", file=sys.stderr)
        return 130
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
