"""The `iqkt` command: `iqkt info [FILE.gguf]`, `iqkt quantize`, `iqkt dequantize`, `iqkt eval`,
`iqkt imatrix`, `iqkt demo`, `iqkt bench`."""
from __future__ import annotations

import argparse
import os
import sys
import time

from ._api import EFFORTS


def _cmd_info(args) -> int:
    if args.file is not None:
        gg = _gguf_module()
        print(gg.format_info(gg.model_info(args.file), tensors=not args.summary))
        return 0
    import iqkt

    iqkt.show_config()
    return 0


class _MissingDependency(RuntimeError):
    pass


def _gguf_module():
    try:
        from . import gguf as gg
    except ImportError as e:
        raise _MissingDependency(f"this command needs the gguf package ({e}); install it with "
                                 f"pip install gguf tqdm regex (or pip install '.[gguf]' in an iqkt checkout)") from None
    return gg


def _setup_logging():
    import logging

    class _Fmt(logging.Formatter):
        def format(self, record):
            return f"iqkt: {record.levelname.lower()}: {record.getMessage()}"

    class _Stderr(logging.StreamHandler):
        # the current sys.stderr at each record: one bound at setup may be closed later
        # (a replaced or captured stream) while the "iqkt" logger lives on
        stream = property(lambda self: sys.stderr, lambda self, v: None)

    h = _Stderr()
    h.setFormatter(_Fmt())
    lg = logging.getLogger("iqkt")
    lg.handlers[:] = [h]
    lg.setLevel(logging.INFO)
    lg.propagate = False


def _progress_flag(args):
    return False if args.no_progress else None


_CLASS_OPTIONS = ("attn_q", "attn_k", "attn_v", "attn_qkv", "attn_output", "ffn_gate", "ffn_down", "ffn_up")


def _quantize_type_and_threads(args):
    """llama-quantize's positional form IN OUT TYPE [THREADS] next to --type / --threads."""
    ty, threads = args.type, args.threads
    if args.type_pos is not None:
        if ty is not None and ty.lower() != args.type_pos.lower():
            raise ValueError(f"two types given: {args.type_pos} (positional) and --type {ty}")
        ty = args.type_pos
    if args.threads_pos is not None:
        try:
            n = int(args.threads_pos)
        except ValueError:
            raise ValueError(f"THREADS must be a positive integer, not {args.threads_pos!r}") from None
        if threads is not None and threads != n:
            raise ValueError(f"two thread counts given: {n} (positional) and --threads {threads}")
        threads = n
    if ty is None:
        raise ValueError("no type given: iqkt quantize IN OUT TYPE [THREADS] (or --type TYPE)")
    return ty, threads


def _cmd_quantize(args) -> int:
    gg = _gguf_module()
    _setup_logging()
    ty, threads = _quantize_type_and_threads(args)
    rep = gg.quantize_model(args.input, args.output, ty, custom_q=args.custom_q,
                            output_tensor_type=args.output_tensor_type,
                            token_embedding_type=args.token_embedding_type,
                            tensor_types={c: getattr(args, c + "_type") for c in _CLASS_OPTIONS},
                            pure=args.pure, threads=threads, imatrix=args.imatrix,
                            include_weights=args.include_weights, exclude_weights=args.exclude_weights,
                            fallback_type=args.fallback_type, allow_requantize=args.allow_requantize,
                            leave_output_tensor=args.leave_output_tensor, override_kv=args.override_kv,
                            keep_split=args.keep_split, ray=args.ray, hessian=args.hessian,
                            effort=args.effort, progress=_progress_flag(args))
    print(rep.format_table(tensors=not args.summary))
    for path in rep.outputs or [args.output]:
        print(f"wrote {path}")
    return 0


def _cmd_dequantize(args) -> int:
    gg = _gguf_module()
    _setup_logging()
    rep = gg.dequantize_model(args.input, args.output, args.type, threads=args.threads,
                              progress=_progress_flag(args))
    print(rep.format_table(tensors=not args.summary))
    print(f"wrote {args.output}")
    return 0


def _eval_module():
    _gguf_module()  # the same dependency message when the gguf package is missing
    from . import eval as ev

    return ev


def _cmd_eval(args) -> int:
    import json

    ev = _eval_module()
    if args.base is not None and args.base_logits is not None:
        raise ValueError("--base and --base-logits exclude each other")
    progress = _progress_flag(args)
    model = ev.load_model(args.model, progress=progress)
    tokens = ev.tokenize_file(model, args.text)
    base = ev.load_model(args.base, progress=progress) if args.base is not None else None
    res = ev.evaluate(model, tokens, n_ctx=args.ctx, n_chunks=args.chunks, base=base,
                      base_logits=args.base_logits, save_logits=args.save_logits, progress=progress)
    if args.json:
        print(json.dumps({"model": args.model, **res.summary()}))
    else:
        print(f"{args.model}: {len(tokens)} tokens of text")
        print(res.format())
    if args.save_logits is not None:
        print(f"wrote base log-probabilities to {args.save_logits} (+ .json)", file=sys.stderr)
    return 0


def _cmd_imatrix(args) -> int:
    import numpy as np

    ev = _eval_module()
    from .imatrix import write_legacy_imatrix

    out_dir = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(out_dir):
        raise FileNotFoundError(f"output directory does not exist: {out_dir}")
    progress = _progress_flag(args)
    model = ev.load_model(args.model, progress=progress)
    tokens = ev.tokenize_file(model, args.text)
    im = ev.collect_imatrix(model, tokens, n_ctx=args.ctx, n_chunks=args.chunks, covariance=args.covariance,
                            progress=progress)
    chunks = im.pop("#chunks")
    cov = {k[4:]: im.pop(k).astype(np.float32) for k in list(im) if k.startswith("cov:")}
    if args.covariance:
        if not cov:
            raise ValueError(f"--covariance {args.covariance!r} matches no weight matrix of the model")
        cov_path = args.output + ".covariance.npz"
        np.savez(cov_path, **cov)
        print(f"wrote {cov_path}: input second moments of {len(cov)} tensors (for iqkt quantize --hessian)")
    write_legacy_imatrix(args.output, im, ncall=chunks, dataset=",".join(args.text), last_chunk=chunks)
    print(f"wrote {args.output}: {len(im)} tensors, {chunks} chunks of {args.ctx} tokens")
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
          f"{iqkt.isa()}, threads {args.threads or 'default'}, quantizer effort {args.effort}")
    threads = args.threads
    try:  # compare one kernel thread with one BLAS thread when we can pin BLAS
        from threadpoolctl import threadpool_limits
        limit = threadpool_limits(limits=threads)
        blas = f"{threads} BLAS thread(s)"
    except ImportError:
        import contextlib
        limit = contextlib.nullcontext()
        blas = "default BLAS threads (install threadpoolctl to pin them)"
    # Products are timed on a GEMV-sized matrix (the demo rows tiled to 4096 x n): a small
    # matrix sits in cache and says little about the memory-bound case users care about.
    reps = max(1, 4096 // rows)
    w_big = np.tile(w, (reps, 1))
    with limit:
        w_big @ x  # warm-up
        t_np = _median_time(lambda: w_big @ x, args.repeat)
    print(f"products timed on {rows * reps}x{n}: numpy float32 W @ x with {blas}: "
          f"{t_np * 1e3:.3f} ms; iqkt uses {threads} thread(s)\n")
    hdr = f"{'type':8s} {'bits/w':>7s} {'MiB':>7s} {'rel.err':>9s} {'rel.err(im)':>11s} {'quant s':>8s} " \
          f"{'mul_mat ms':>10s} {'vs numpy':>8s} {'int8 vs exact':>13s}"
    print(hdr)
    print("-" * len(hdr))
    for t in iqkt.TYPES:
        t0 = time.perf_counter()
        q = iqkt.quantize(w, t, imatrix, threads=None, effort=args.effort)
        tq = time.perf_counter() - t0
        deq = iqkt.dequantize(q, t, n)
        err = float(((w - deq) ** 2).sum() / (w ** 2).sum())
        errw = float((imatrix * (w - deq) ** 2).sum() / (imatrix * w ** 2).sum())
        q_big = np.tile(q, (reps, 1))
        iqkt.mul_mat(q_big, t, x, threads=threads)  # warm-up
        t_mm = _median_time(lambda: iqkt.mul_mat(q_big, t, x, threads=threads), args.repeat)
        y = iqkt.mul_mat(q, t, x, threads=threads)
        y_exact = iqkt.mul_mat(q, t, x, precision="float")
        mm_err = float(np.linalg.norm(y - y_exact) / np.linalg.norm(y_exact))
        bpw = 8 * q.nbytes / (rows * n)
        print(f"{t:8s} {bpw:7.3f} {q.nbytes / 2**20:7.2f} {err:9.5f} {errw:11.5f} {tq:8.2f} "
              f"{t_mm * 1e3:10.3f} {t_np / t_mm:7.2f}x {mm_err:13.2e}")
    print("\nmul_mat ms and vs numpy: the tiled matrix; rel.err: relative squared error of the dequantized weights; (im): imatrix-weighted.")
    print("int8 vs exact: relative L2 difference of mul_mat's int8-activation path from the exact "
          "float product with the same quantized weights.")
    return 0


def _cmd_bench(args, rest) -> int:
    from . import _bench

    return _bench.main(rest)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="iqkt", description="KT trellis quantization tools")
    sub = parser.add_subparsers(dest="cmd")
    i = sub.add_parser("info", help="without FILE: the detected CPU features and the kernel variant in use; "
                                    "with FILE.gguf: its tensors, types, sizes, bits per weight, KT share")
    i.add_argument("file", nargs="?", default=None, metavar="FILE.gguf")
    i.add_argument("--summary", action="store_true", help="only the per-type summary, no tensor list")
    q = sub.add_parser("quantize", help="quantize a GGUF model (KT types, K-quants, q8_0, f16, ...)",
                       usage="iqkt quantize [options] IN.gguf OUT.gguf TYPE [THREADS]",
                       description="Quantize a GGUF model. Arguments and options are named like llama-quantize's.")
    q.add_argument("input", metavar="IN.gguf")
    q.add_argument("output", metavar="OUT.gguf")
    q.add_argument("type_pos", nargs="?", default=None, metavar="TYPE", help="same as --type")
    q.add_argument("threads_pos", nargs="?", default=None, metavar="THREADS", help="same as --threads")
    q.add_argument("--type", default=None, help="default type of weight matrices: iq1_kt, iq2_kt, iq3_kt, iq4_kt, "
                   "q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl, iq4_xs, q8_0, q5_1, q5_0, q4_1, q4_0, f16, bf16, f32; "
                   "or a mix: q3_k_s, q3_k_m, q3_k_l, q4_k_s, q4_k_m, q5_k_s, q5_k_m")
    q.add_argument("--custom-q", default=None, metavar="REGEX=TYPE,...",
                   help="per-tensor types, first matching regex wins (e.g. 'ffn_down=iq4_kt,attn_v=q8_0'); "
                        "TYPE 'keep' copies the tensor unchanged")
    q.add_argument("--output-tensor-type", default=None, metavar="TYPE",
                   help="type of output.weight (of token_embd.weight when the embeddings are tied)")
    q.add_argument("--token-embedding-type", default=None, metavar="TYPE", help="type of token_embd.weight")
    for c in _CLASS_OPTIONS:
        q.add_argument(f"--{c.replace('_', '-')}-type", dest=c + "_type", default=None, metavar="TYPE",
                       help=f"type of the blk.N.{c} tensors (and {c}_exps/_shexp)")
    q.add_argument("--leave-output-tensor", action="store_true", help="copy output.weight unchanged")
    q.add_argument("--pure", action="store_true",
                   help="no special cases: no mix rules, and with a KT --type no q8_0 for output and embeddings")
    q.add_argument("--allow-requantize", action="store_true",
                   help="allow converting tensors that are already quantized (quality loss)")
    q.add_argument("--imatrix", default=None, metavar="FILE",
                   help="importance matrix: legacy .dat (llama-imatrix) or GGUF imatrix")
    q.add_argument("--hessian", default=None, metavar="FILE.npz",
                   help="input second-moment matrices by tensor name (iqkt imatrix --covariance): KT "
                        "matrices listed there get LDLQ error feedback (lower output error)")
    q.add_argument("--effort", default="default", choices=EFFORTS,
                   help="KT quantizer effort: fast (several times quicker, error still below "
                        "ik_llama.cpp's quantizer), default, or best (about 2x slower, 1-3%% lower error)")
    q.add_argument("--include-weights", action="append", default=[], metavar="NAME",
                   help="use the imatrix only for tensors whose names contain NAME (repeatable)")
    q.add_argument("--exclude-weights", action="append", default=[], metavar="NAME",
                   help="do not use the imatrix for tensors whose names contain NAME (repeatable)")
    q.add_argument("--override-kv", action="append", default=[], metavar="KEY=TYPE:VALUE",
                   help="set a metadata key; TYPE is int, float, bool or str (repeatable)")
    q.add_argument("--keep-split", action="store_true",
                   help="a split input (IN = its first shard, PREFIX-00001-of-0000N.gguf) gives the same shards, "
                        "named OUT-0000i-of-0000N.gguf; without it the shards are merged into OUT")
    q.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="convert the tensors on a Ray cluster (pip install ray): ADDRESS as for ray.init "
                        "(e.g. auto, ray://head:10001); without ADDRESS RAY_ADDRESS or a new local cluster. "
                        "IN must be readable at the same path on every node")
    q.add_argument("--fallback-type", default="auto", metavar="TYPE",
                   help="type for matrices whose row length does not fit the chosen type (K and KT types "
                        "need a multiple of 256); 'auto' (default): a type near the requested bit width "
                        "(iq4_nl for KT/q2_k/q3_k, q5_0 for q4_k, q5_1 for q5_k, q8_0 for q6_k); 'keep'")
    q.add_argument("--threads", type=int, default=None, help="threads for the KT quantizer (default: all cores)")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.add_argument("--summary", action="store_true", help="report only the per-type summary")
    dq = sub.add_parser("dequantize", help="convert the KT tensors of a GGUF model to f16/bf16/f32")
    dq.add_argument("input", metavar="IN.gguf")
    dq.add_argument("output", metavar="OUT.gguf")
    dq.add_argument("--type", default="f16", choices=["f16", "bf16", "f32"])
    dq.add_argument("--threads", type=int, default=None)
    dq.add_argument("--no-progress", action="store_true", help="no progress bar")
    dq.add_argument("--summary", action="store_true", help="report only the per-type summary")
    e = sub.add_parser("eval", help="perplexity and KL divergence of a llama-family GGUF model on a text",
                       description="Perplexity (and, with a base, KL divergence) of MODEL on the text, "
                                   "as llama-perplexity computes it: chunks of --ctx tokens, the second "
                                   "half of each chunk scored. A numpy forward pass; KT weights decoded "
                                   "by iqkt, other types by the gguf package.")
    e.add_argument("model", metavar="MODEL.gguf")
    e.add_argument("--text", required=True, nargs="+", metavar="FILE",
                   help="text file(s), concatenated; or one .npy file of token ids")
    e.add_argument("--ctx", type=int, default=512, help="tokens per chunk (default 512)")
    e.add_argument("--chunks", type=int, default=None, help="at most this many chunks (default: all)")
    e.add_argument("--base", default=None, metavar="BASE.gguf",
                   help="base model for the KL divergence, evaluated alongside")
    e.add_argument("--base-logits", default=None, metavar="FILE.npy",
                   help="base log-probabilities saved by an earlier run with --save-logits")
    e.add_argument("--save-logits", default=None, metavar="FILE.npy",
                   help="save this model's log-probabilities (float32, chunks x ctx/2-1 x vocab) as a base")
    e.add_argument("--json", action="store_true", help="print the results as one JSON object")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    im = sub.add_parser("imatrix", help="importance matrix (mean squared activations) of a GGUF model on a text",
                        description="Run MODEL over the text and write the mean squared input of every "
                                    "weight matrix per column, as a legacy .dat imatrix (llama-imatrix's "
                                    "format, read by `iqkt quantize --imatrix`).")
    im.add_argument("model", metavar="MODEL.gguf")
    im.add_argument("--text", required=True, nargs="+", metavar="FILE", help="calibration text file(s)")
    im.add_argument("-o", "--output", required=True, metavar="OUT.dat")
    im.add_argument("--ctx", type=int, default=512)
    im.add_argument("--chunks", type=int, default=None, help="at most this many chunks (default: all)")
    im.add_argument("--covariance", default=None, metavar="REGEX",
                    help="also write OUT.covariance.npz: the full input second-moment matrix of every "
                         "tensor whose name matches (n x n float32 each; for iqkt quantize --hessian)")
    im.add_argument("--no-progress", action="store_true", help="no progress bar")
    d = sub.add_parser("demo", help="quantize a built-in synthetic matrix with every KT type")
    d.add_argument("--rows", type=int, default=128)
    d.add_argument("--cols", type=int, default=4096)
    d.add_argument("--threads", type=int, default=1, help="threads for the timed products (default 1)")
    d.add_argument("--repeat", type=int, default=20)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--effort", default="default", choices=EFFORTS,
                   help="quantizer effort level (as iqkt quantize --effort)")
    sub.add_parser("bench", help="benchmark table (see `iqkt bench --help`)", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if rest and args.cmd != "bench":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        if args.cmd == "info":
            return _cmd_info(args)
        if args.cmd == "quantize":
            return _cmd_quantize(args)
        if args.cmd == "dequantize":
            return _cmd_dequantize(args)
        if args.cmd == "eval":
            return _cmd_eval(args)
        if args.cmd == "imatrix":
            return _cmd_imatrix(args)
        if args.cmd == "demo":
            return _cmd_demo(args)
        if args.cmd == "bench":
            return _cmd_bench(args, rest)
    except (ValueError, TypeError, RuntimeError, OSError, KeyError) as e:
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
