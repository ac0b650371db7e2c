"""Model quality where users judge it: perplexity and KL divergence of a GGUF model on a text.

A numpy forward pass of the llama architecture (token embedding, RMSNorm, RoPE, grouped-query
causal attention, SwiGLU feed-forward, tied or separate output matrix), in float32, with every
weight decoded once at load time: KT tensors by iqkt with their inference values (IQ2_KT's 1.05
included), other types by the gguf package. So the only difference between two models' results is
their weights.

The protocol is llama-perplexity's: the token stream is cut into chunks of ``n_ctx`` tokens, each
chunk is evaluated on its own (the first token replaced by BOS when the model adds one), and only the
second half of each chunk is scored (positions ``n_ctx/2 .. n_ctx-2`` predicting the next token), so
every scored token sees at least ``n_ctx/2`` tokens of context.

KL divergence needs the base model's distribution at the same positions: either a second model
evaluated chunk by chunk alongside (``base=``), or log-probabilities saved by an earlier run
(``save_logits=`` then ``base_logits=``), which is what a tuning loop wants: the base is run once.

Python API: `load_model`, `tokenize_file`, `evaluate` (-> `EvalResult`), `collect_imatrix`.
Command line: ``iqkt eval MODEL.gguf --text FILE [--base BASE.gguf | --base-logits F]``,
``iqkt imatrix MODEL.gguf --text FILE -o imatrix.dat``.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

__all__ = ["LlamaModel", "load_model", "tokenize_file", "evaluate", "EvalResult", "collect_imatrix",
           "EvalError"]

_ARCHS = ("llama",)


class EvalError(ValueError):
    """The model, text or logits file cannot be evaluated (a clear one-line reason)."""


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------

@dataclass
class HParams:
    n_vocab: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_rot: int
    rope_base: float
    norm_eps: float
    add_bos: bool
    bos_id: int | None


@dataclass
class Layer:
    attn_norm: np.ndarray
    wq: np.ndarray
    wk: np.ndarray
    wv: np.ndarray
    wo: np.ndarray
    ffn_norm: np.ndarray
    w_gate: np.ndarray
    w_up: np.ndarray
    w_down: np.ndarray
    bq: np.ndarray | None = None
    bk: np.ndarray | None = None
    bv: np.ndarray | None = None


@dataclass
class LlamaModel:
    """Decoded float32 weights (matrices (out, in), as stored: y = x @ W.T) and hyper-parameters.
    ``weights`` maps GGUF tensor names to the same arrays, so a caller can swap one tensor (e.g. to
    try another quantization of ``blk.*.ffn_down.weight``) with `replace_weight`."""
    hp: HParams
    tok_embd: np.ndarray
    layers: list[Layer]
    output_norm: np.ndarray
    output: np.ndarray
    rope_freqs: np.ndarray | None = None
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    tokenizer: object | None = None
    path: str | None = None

    def replace_weight(self, name: str, w: np.ndarray) -> None:
        """Use `w` (float32, the tensor's numpy shape) for the GGUF tensor `name`."""
        old = self.weights.get(name)
        if old is None:
            raise KeyError(f"no tensor {name!r} in the model")
        w = np.ascontiguousarray(w, dtype=np.float32)
        if w.shape != old.shape:
            raise ValueError(f"{name}: shape {w.shape} != {old.shape}")
        old[...] = w

    # -- forward ------------------------------------------------------------------------------
    def _rope_tables(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        hp = self.hp
        inv = hp.rope_base ** (-np.arange(0, hp.n_rot, 2, dtype=np.float64) / hp.n_rot)
        if self.rope_freqs is not None:
            inv = inv / self.rope_freqs.astype(np.float64)[: inv.size]
        ang = np.arange(n, dtype=np.float64)[:, None] * inv[None, :]
        return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)

    def _rope(self, x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
        # GGUF llama tensors rotate adjacent pairs (2i, 2i+1) of the first n_rot dimensions.
        r = self.hp.n_rot
        x0 = x[..., 0:r:2]
        x1 = x[..., 1:r:2]
        c = cos[:, None, :]
        s = sin[:, None, :]
        out = x.copy()
        out[..., 0:r:2] = x0 * c - x1 * s
        out[..., 1:r:2] = x0 * s + x1 * c
        return out

    def _norm(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        ms = np.mean(np.square(x, dtype=np.float32), axis=-1, keepdims=True)
        return (x / np.sqrt(ms + np.float32(self.hp.norm_eps))) * w

    def forward(self, tokens: np.ndarray, out_positions: slice | np.ndarray | None = None,
                collect: dict | None = None) -> np.ndarray:
        """Logits (float32) at `out_positions` (default: all) of one sequence `tokens`.
        `collect`: if a dict, the sum of squared inputs of every matrix is added to
        collect[name] (float64, per input column) and collect['#tokens'] counts the rows."""
        hp = self.hp
        tokens = np.asarray(tokens)
        T = tokens.shape[0]
        if T == 0:
            raise EvalError("empty token sequence")
        if tokens.min() < 0 or tokens.max() >= hp.n_vocab:
            raise EvalError(f"token id out of range [0, {hp.n_vocab})")
        H, Hkv = hp.n_head, hp.n_head_kv
        D = hp.n_embd // H
        rep = H // Hkv
        cos, sin = self._rope_tables(T)
        mask = np.triu(np.full((T, T), -np.inf, dtype=np.float32), k=1)
        scale = np.float32(1.0 / math.sqrt(D))

        full = None if collect is None else collect.get("#covariance")


        def lin(name, x, w, b=None):
            if collect is not None:
                acc = collect.get(name)
                sq = np.einsum("ij,ij->j", x, x, dtype=np.float64)
                collect[name] = sq if acc is None else acc + sq
                if full is not None and full.search(name):
                    c = collect.get("#cov:" + name)
                    xtx = (x.T @ x).astype(np.float64)
                    collect["#cov:" + name] = xtx if c is None else c + xtx
            y = x @ w.T
            return y if b is None else y + b

        x = self.tok_embd[tokens].astype(np.float32)
        with np.errstate(over="ignore"):
            for il, L in enumerate(self.layers):
                pre = f"blk.{il}."
                h = self._norm(x, L.attn_norm)
                q = lin(pre + "attn_q.weight", h, L.wq, L.bq).reshape(T, H, D)
                k = lin(pre + "attn_k.weight", h, L.wk, L.bk).reshape(T, Hkv, D)
                v = lin(pre + "attn_v.weight", h, L.wv, L.bv).reshape(T, Hkv, D)
                q = self._rope(q, cos, sin)
                k = self._rope(k, cos, sin)
                # (Hkv, rep, T, D) x (Hkv, 1, D, T): query head h uses kv head h // rep.
                qh = q.reshape(T, Hkv, rep, D).transpose(1, 2, 0, 3)
                kh = k.transpose(1, 2, 0)[:, None]
                vh = v.transpose(1, 0, 2)[:, None]
                s = (qh @ kh) * scale + mask
                s -= s.max(axis=-1, keepdims=True)
                np.exp(s, out=s)
                s /= s.sum(axis=-1, keepdims=True)
                a = (s @ vh).transpose(2, 0, 1, 3).reshape(T, H * D)
                x = x + lin(pre + "attn_output.weight", a, L.wo)
                h = self._norm(x, L.ffn_norm)
                g = lin(pre + "ffn_gate.weight", h, L.w_gate)
                u = lin(pre + "ffn_up.weight", h, L.w_up)
                act = (g / (np.float32(1) + np.exp(-g))) * u      # SiLU(gate) * up
                x = x + lin(pre + "ffn_down.weight", act, L.w_down)
            if collect is not None:
                collect["#tokens"] = collect.get("#tokens", 0) + T
            if out_positions is not None:
                x = x[out_positions]
            x = self._norm(x, self.output_norm)
            name = "output.weight" if "output.weight" in self.weights else "token_embd.weight"
            return lin(name, x, self.output) if collect is not None and name == "output.weight" \
                else x @ self.output.T


def _decode_tensor(t) -> np.ndarray:
    from .gguf import _decode_rows, _np_shape, _raw_rows

    shape = _np_shape(t)
    n = shape[-1]
    rows = _decode_rows(int(t.tensor_type), _raw_rows(t), n)
    w = np.ascontiguousarray(rows.reshape(shape), dtype=np.float32)
    return w if w.flags.writeable else w.copy()   # f32 tensors are views of the read-only map


def load_model(path: str | os.PathLike, progress: bool | None = None) -> LlamaModel:
    """Read a llama-architecture GGUF file and decode its weights to float32."""
    from . import gguf as gg
    from .tokenizer import Tokenizer, TokenizerError

    path = os.fspath(path)
    r = gg.open_gguf(path)
    gg._check_not_split(r, path)
    arch = gg._field_str(r, "general.architecture")
    if arch not in _ARCHS:
        raise EvalError(f"{path}: architecture {arch!r} is not supported by iqkt eval (supported: "
                        f"{', '.join(_ARCHS)})")

    def num(key, default=None, cast=int):
        f = r.get_field(f"{arch}.{key}")
        if f is None:
            if default is None:
                raise EvalError(f"{path}: missing metadata {arch}.{key}")
            return default
        return cast(f.parts[-1][0])

    tensors = {t.name: t for t in r.tensors}
    n_embd = num("embedding_length")
    n_head = num("attention.head_count")
    tok = tensors.get("token_embd.weight")
    if tok is None:
        raise EvalError(f"{path}: no token_embd.weight tensor")
    n_vocab = int(tok.shape[1])
    try:
        tokenizer = Tokenizer.from_gguf(r)
        add_bos, bos_id = tokenizer.add_bos, tokenizer.bos_id
    except TokenizerError:
        tokenizer, add_bos, bos_id = None, False, None
    hp = HParams(n_vocab=n_vocab, n_embd=n_embd, n_layer=num("block_count"), n_head=n_head,
                 n_head_kv=num("attention.head_count_kv", n_head), n_ff=num("feed_forward_length"),
                 n_rot=num("rope.dimension_count", n_embd // n_head),
                 rope_base=num("rope.freq_base", 10000.0, float),
                 norm_eps=num("attention.layer_norm_rms_epsilon", 1e-5, float),
                 add_bos=add_bos, bos_id=bos_id)
    if n_embd % n_head or n_head % hp.n_head_kv or hp.n_rot % 2 or hp.n_rot > n_embd // n_head:
        raise EvalError(f"{path}: inconsistent attention shape (embd {n_embd}, heads {n_head}/"
                        f"{hp.n_head_kv}, rope dims {hp.n_rot})")

    weights: dict[str, np.ndarray] = {}
    bar = gg._progress_bar(sum(int(np.prod(t.shape)) for t in r.tensors), progress)

    def get(name, shape=None, required=True):
        t = tensors.get(name)
        if t is None:
            if required:
                raise EvalError(f"{path}: missing tensor {name}")
            return None
        w = _decode_tensor(t)
        if shape is not None and w.shape != shape:
            raise EvalError(f"{path}: {name} has shape {w.shape}, expected {shape}")
        if not np.isfinite(w).all():
            raise EvalError(f"{path}: {name} has non-finite values")
        weights[name] = w
        if bar is not None:
            bar.update(w.size)
        return w

    D = n_embd // n_head
    kv = hp.n_head_kv * D
    try:
        tok_embd = get("token_embd.weight", (n_vocab, n_embd))
        layers = []
        for i in range(hp.n_layer):
            p = f"blk.{i}."
            layers.append(Layer(
                attn_norm=get(p + "attn_norm.weight", (n_embd,)),
                wq=get(p + "attn_q.weight", (n_embd, n_embd)),
                wk=get(p + "attn_k.weight", (kv, n_embd)),
                wv=get(p + "attn_v.weight", (kv, n_embd)),
                wo=get(p + "attn_output.weight", (n_embd, n_embd)),
                ffn_norm=get(p + "ffn_norm.weight", (n_embd,)),
                w_gate=get(p + "ffn_gate.weight", (hp.n_ff, n_embd)),
                w_up=get(p + "ffn_up.weight", (hp.n_ff, n_embd)),
                w_down=get(p + "ffn_down.weight", (n_embd, hp.n_ff)),
                bq=get(p + "attn_q.bias", (n_embd,), False),
                bk=get(p + "attn_k.bias", (kv,), False),
                bv=get(p + "attn_v.bias", (kv,), False)))
        output_norm = get("output_norm.weight", (n_embd,))
        output = get("output.weight", (n_vocab, n_embd), False)
        rope_freqs = get("rope_freqs.weight", None, False)
    finally:
        if bar is not None:
            bar.close()
    return LlamaModel(hp, tok_embd, layers, output_norm, tok_embd if output is None else output,
                      rope_freqs, weights, tokenizer, path)


def tokenize_file(model: LlamaModel, paths: str | os.PathLike | Sequence[str | os.PathLike]) -> np.ndarray:
    """Token ids of the text file(s) (concatenated) with the model's own tokenizer. A ``.npy``
    file is taken as token ids already (e.g. from llama-tokenize), for exact parity with another
    tool's tokenization."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [os.fspath(p) for p in paths]
    if len(paths) == 1 and paths[0].endswith(".npy"):
        ids = np.load(paths[0])
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise EvalError(f"{paths[0]}: expected a 1-D integer array of token ids")
        return ids.astype(np.int32)
    if model.tokenizer is None:
        raise EvalError(f"{model.path}: no supported tokenizer in the file; pass token ids as a .npy file")
    text = []
    for p in paths:
        if not os.path.isfile(p):
            raise FileNotFoundError(f"no such text file: {p}")
        with open(p, encoding="utf-8", errors="replace") as f:
            text.append(f.read())
    return model.tokenizer.encode("".join(text), add_bos=False)


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------

def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return z


@dataclass
class EvalResult:
    """Perplexity and (with a base) KL divergence statistics over the scored tokens."""
    n_ctx: int
    n_chunks: int
    n_tokens: int                       # scored tokens
    nll: np.ndarray                     # per scored token, natural log
    kld: np.ndarray | None = None       # per scored token
    base_nll: np.ndarray | None = None
    same_top: np.ndarray | None = None  # bool per scored token: argmax agrees with the base
    seconds: float = 0.0

    @property
    def ppl(self) -> float:
        return float(np.exp(self.nll.mean()))

    @property
    def ppl_err(self) -> float:
        """One standard error of the perplexity (delta method on the mean NLL)."""
        return self.ppl * float(self.nll.std(ddof=1) / math.sqrt(self.nll.size)) if self.nll.size > 1 else 0.0

    @property
    def base_ppl(self) -> float | None:
        return None if self.base_nll is None else float(np.exp(self.base_nll.mean()))

    @property
    def mean_kld(self) -> float | None:
        return None if self.kld is None else float(self.kld.mean())

    @property
    def kld_err(self) -> float | None:
        if self.kld is None or self.kld.size < 2:
            return None
        return float(self.kld.std(ddof=1) / math.sqrt(self.kld.size))

    def summary(self) -> dict:
        d = {"n_ctx": self.n_ctx, "chunks": self.n_chunks, "tokens": self.n_tokens,
             "ppl": self.ppl, "ppl_err": self.ppl_err, "seconds": self.seconds}
        if self.base_nll is not None:
            d["base_ppl"] = self.base_ppl
            diff = self.nll - self.base_nll
            d["ln_ppl_ratio"] = float(diff.mean())
            d["ln_ppl_ratio_err"] = float(diff.std(ddof=1) / math.sqrt(diff.size)) if diff.size > 1 else 0.0
        if self.kld is not None:
            d.update(mean_kld=self.mean_kld, kld_err=self.kld_err, median_kld=float(np.median(self.kld)),
                     kld_p99=float(np.quantile(self.kld, 0.99)), max_kld=float(self.kld.max()),
                     same_top=float(self.same_top.mean()))
        return d

    def format(self) -> str:
        d = self.summary()
        lines = [f"chunks {d['chunks']} x {d['n_ctx']} tokens, {d['tokens']} scored, {d['seconds']:.1f} s",
                 f"PPL            {d['ppl']:.4f} +/- {d['ppl_err']:.4f}"]
        if "base_ppl" in d:
            lines.append(f"base PPL       {d['base_ppl']:.4f}")
            lines.append(f"ln(PPL/base)   {d['ln_ppl_ratio']:.5f} +/- {d['ln_ppl_ratio_err']:.5f}")
        if "mean_kld" in d:
            lines += [f"mean KLD       {d['mean_kld']:.6f} +/- {d['kld_err']:.6f}",
                      f"median KLD     {d['median_kld']:.6f}",
                      f"99% KLD        {d['kld_p99']:.6f}",
                      f"max KLD        {d['max_kld']:.6f}",
                      f"same top token {100 * d['same_top']:.2f} %"]
        return "\n".join(lines)


class _LogitsFile:
    """Base log-probabilities at the scored positions: a float32 .npy (chunks, n_scored, vocab)
    memory map plus a JSON side file saying which tokens and context they belong to."""

    def __init__(self, path: str):
        self.path = os.fspath(path)
        self.meta_path = self.path + ".json"

    @staticmethod
    def key(tokens: np.ndarray, n_ctx: int, n_chunks: int, vocab: int) -> dict:
        # One hash per chunk: a file saved for more chunks serves any prefix of them.
        used = np.ascontiguousarray(tokens[: n_ctx * n_chunks], dtype=np.int32).reshape(n_chunks, n_ctx)
        return {"n_ctx": n_ctx, "n_chunks": n_chunks, "vocab": vocab,
                "chunk_sha256": [hashlib.sha256(c.tobytes()).hexdigest()[:16] for c in used]}

    def create(self, key: dict, n_scored: int) -> np.ndarray:
        d = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(d):
            raise FileNotFoundError(f"no such directory for the logits file: {d}")
        arr = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.float32,
                                        shape=(key["n_chunks"], n_scored, key["vocab"]))
        with open(self.meta_path, "w") as f:
            json.dump(key, f)
        return arr

    def open(self, key: dict, n_scored: int) -> np.ndarray:
        if not os.path.isfile(self.path) or not os.path.isfile(self.meta_path):
            raise FileNotFoundError(f"no base logits at {self.path} (and {self.meta_path}); "
                                    f"write them with --save-logits")
        with open(self.meta_path) as f:
            have = json.load(f)
        for k in ("vocab", "n_ctx"):
            if have.get(k) != key[k]:
                raise EvalError(f"{self.path} was saved for another {k.replace('n_', '')} "
                                f"({have.get(k)} vs {key[k]}): same text, context and vocabulary needed")
        if have.get("n_chunks", 0) < key["n_chunks"]:
            raise EvalError(f"{self.path} holds {have.get('n_chunks')} chunks, {key['n_chunks']} asked for")
        if have.get("chunk_sha256", [])[: key["n_chunks"]] != key["chunk_sha256"]:
            raise EvalError(f"{self.path} was saved for other tokens: same text, context and "
                            f"vocabulary needed")
        arr = np.load(self.path, mmap_mode="r")
        if arr.shape[1:] != (n_scored, key["vocab"]):
            raise EvalError(f"{self.path}: shape {arr.shape} does not fit ({n_scored}, {key['vocab']})")
        return arr


def _progress(total: int, enabled: bool | None, desc: str):
    """A tqdm bar over chunks on stderr (None without tqdm); enabled=None: only on a terminal."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="chunk", desc=desc, file=sys.stderr, dynamic_ncols=True,
                disable=(None if enabled is None else not enabled))


def evaluate(model: LlamaModel, tokens: np.ndarray, *, n_ctx: int = 512, n_chunks: int | None = None,
             base: LlamaModel | None = None, base_logits: str | os.PathLike | None = None,
             save_logits: str | os.PathLike | None = None, progress: bool | None = None) -> EvalResult:
    """Perplexity of `model` on `tokens`, chunked as llama-perplexity does; with `base` (a model)
    or `base_logits` (a file from ``save_logits=``), also the KL divergence KL(base || model) per
    scored token. `save_logits` writes this model's log-probabilities for later use as a base."""
    import time

    if n_ctx < 4 or n_ctx % 2:
        raise EvalError(f"n_ctx must be an even number >= 4, got {n_ctx}")
    if base is not None and base_logits is not None:
        raise EvalError("pass either a base model or a base logits file, not both")
    tokens = np.asarray(tokens)
    avail = tokens.shape[0] // n_ctx
    if avail == 0:
        raise EvalError(f"the text has {tokens.shape[0]} tokens, fewer than one chunk of {n_ctx}")
    n_chunks = avail if n_chunks is None else min(int(n_chunks), avail)
    if n_chunks <= 0:
        raise EvalError("n_chunks must be positive")
    vocab = model.hp.n_vocab
    if base is not None and base.hp.n_vocab != vocab:
        raise EvalError(f"base vocabulary {base.hp.n_vocab} != model vocabulary {vocab}")
    first = n_ctx // 2
    n_scored = n_ctx - 1 - first
    key = _LogitsFile.key(tokens, n_ctx, n_chunks, vocab)
    base_arr = _LogitsFile(base_logits).open(key, n_scored) if base_logits is not None else None
    save_arr = _LogitsFile(save_logits).create(key, n_scored) if save_logits is not None else None
    with_base = base is not None or base_arr is not None

    nll = np.empty((n_chunks, n_scored))
    kld = np.empty((n_chunks, n_scored)) if with_base else None
    bnll = np.empty((n_chunks, n_scored)) if with_base else None
    same = np.empty((n_chunks, n_scored), dtype=bool) if with_base else None
    t0 = time.perf_counter()
    bar = _progress(n_chunks, progress, "eval")
    try:
        for c in range(n_chunks):
            toks = np.array(tokens[c * n_ctx:(c + 1) * n_ctx], dtype=np.int64)
            target = toks[first + 1:].copy()
            if model.hp.add_bos and model.hp.bos_id is not None:
                toks[0] = model.hp.bos_id
            pos = slice(first, n_ctx - 1)
            lp = _log_softmax(model.forward(toks, pos))
            rows = np.arange(n_scored)
            nll[c] = -lp[rows, target]
            if save_arr is not None:
                save_arr[c] = lp
            if with_base:
                blp = base_arr[c].astype(np.float64) if base_arr is not None \
                    else _log_softmax(base.forward(toks, pos))
                pb = np.exp(blp)
                kld[c] = np.einsum("ij,ij->i", pb, blp - lp)
                bnll[c] = -blp[rows, target]
                same[c] = blp.argmax(axis=-1) == lp.argmax(axis=-1)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        if save_arr is not None:
            save_arr.flush()
            del save_arr
    res = EvalResult(n_ctx, n_chunks, n_chunks * n_scored, nll.reshape(-1),
                     None if kld is None else np.maximum(kld.reshape(-1), 0.0),
                     None if bnll is None else bnll.reshape(-1),
                     None if same is None else same.reshape(-1), time.perf_counter() - t0)
    return res


def collect_imatrix(model: LlamaModel, tokens: np.ndarray, *, n_ctx: int = 512, n_chunks: int | None = None,
                    covariance: str | None = None, progress: bool | None = None) -> dict[str, np.ndarray]:
    """Mean squared input activation per column of every weight matrix (what llama-imatrix
    computes), over `n_chunks` chunks of `n_ctx` tokens, all positions counted. Returns
    name -> float32 vector, plus '#chunks' -> the chunk count (an int). `covariance`: a regex of
    tensor names whose full input second-moment matrix E[x x^T] (float64, n x n) is returned too,
    under 'cov:' + name (for `iqkt.ldlq`)."""
    import re

    tokens = np.asarray(tokens)
    avail = tokens.shape[0] // n_ctx
    if avail == 0:
        raise EvalError(f"the text has {tokens.shape[0]} tokens, fewer than one chunk of {n_ctx}")
    n_chunks = avail if n_chunks is None else max(1, min(int(n_chunks), avail))
    acc: dict = {}
    if covariance:
        acc["#covariance"] = re.compile(covariance)
    bar = _progress(n_chunks, progress, "imatrix")
    try:
        for c in range(n_chunks):
            toks = np.array(tokens[c * n_ctx:(c + 1) * n_ctx], dtype=np.int64)
            if model.hp.add_bos and model.hp.bos_id is not None:
                toks[0] = model.hp.bos_id
            model.forward(toks, None, collect=acc)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    acc.pop("#covariance", None)
    n = acc.pop("#tokens")
    out = {}
    for k, v in acc.items():
        if k.startswith("#cov:"):
            out["cov:" + k[5:]] = v / n
        else:
            out[k] = (v / n).astype(np.float32)
    out["#chunks"] = n_chunks
    return out
