"""Dev check for refactors: one hash per ISA variant over quantize bytes,
dequantized values and mul_mat products (int8, int16 and float precision, B=1 and B=8).

Run before and after a change that must not change results; the hashes must
match.  Not a test: the expected value is whatever the unmodified code gives.

    python bench/hash_outputs.py            # every variant this CPU can run
    python bench/hash_outputs.py --verbose  # also one hash per part
    python bench/hash_outputs.py --small    # a subset cheap enough for QEMU (NEON)
"""
import argparse
import hashlib

import numpy as np

import iqkt

SHAPES = [(3, 256), (5, 512), (4, 1024)]
SEEDS = [0, 1, 2]
SMALL = False


def parts():
    for t in iqkt.TYPES:
        for seed in SEEDS[:1] if SMALL else SEEDS:
            for rows, n in SHAPES[:2] if SMALL else SHAPES:
                rng = np.random.default_rng(1000 * seed + n + rows)
                x = rng.standard_normal((rows, n)).astype(np.float32)
                if seed == 2:   # heavy-tailed rows
                    x *= rng.exponential(1.0, (rows, 1)).astype(np.float32) ** 2
                im = (rng.random(n) ** 3).astype(np.float32)
                for imatrix in (None, im):
                    for threads in (1, 2):
                        q = iqkt.quantize(x, t, imatrix, threads=threads)
                        yield f"q {t} s{seed} {rows}x{n} im={imatrix is not None} t{threads}", q.tobytes()
                w = iqkt.dequantize(q, t, n)
                yield f"dq {t} s{seed} {rows}x{n}", w.tobytes()
                yield f"dqi {t} s{seed} {rows}x{n}", iqkt.dequantize(q, t, n, inference=True).tobytes()
                for B in (1, 8):
                    a = rng.standard_normal((B, n)).astype(np.float32)
                    for prec in ("int8", "int16", "float"):
                        for threads in (1, 2):
                            y = iqkt.mul_mat(q, t, a, precision=prec, threads=threads)
                            yield f"mm {t} s{seed} {rows}x{n} B{B} {prec} t{threads}", y.tobytes()
    # A larger product (many rows, threads, every batch kernel path).
    rng = np.random.default_rng(7)
    for t in iqkt.TYPES:
        x = rng.standard_normal((64, 2048)).astype(np.float32)
        if SMALL:       # rows of the first product's weights, no big quantization
            x = x[:4]
        q = iqkt.quantize(x, t, threads=2)
        if SMALL:
            q = np.tile(q, (16, 1))
        yield f"qbig {t}", q.tobytes()
        for B in (1, 2, 3, 4, 5, 8, 16, 48):
            a = rng.standard_normal((B, 2048)).astype(np.float32)
            for threads in (1, 2):
                yield f"mmbig {t} B{B} t{threads}", iqkt.mul_mat(q, t, a, threads=threads).tobytes()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--isa", action="append")
    ap.add_argument("--small", action="store_true")
    args = ap.parse_args()
    global SMALL
    SMALL = args.small
    for isa in args.isa or iqkt.available_isas():
        h = hashlib.sha256()
        with iqkt.use_isa(isa):
            for name, data in parts():
                h.update(name.encode())
                h.update(data)
                if args.verbose:
                    print(f"  {isa} {name}: {hashlib.sha256(data).hexdigest()[:16]}")
        print(f"{isa}: {h.hexdigest()[:16]}")


if __name__ == "__main__":
    main()
