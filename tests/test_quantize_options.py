"""`iqkt quantize` as a llama-quantize user drives it: K-quant outputs and mixes, bit-width-aware
fallbacks, the positional form, --allow-requantize, --leave-output-tensor, per-class types,
--include/--exclude-weights, --override-kv, imatrix provenance keys, up-front path checks.

Files are checked with the independent parser of test_gguf and the gguf package's decoders."""
from __future__ import annotations

import os

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

import iqkt  # noqa: E402
import iqkt.gguf as ig  # noqa: E402
from iqkt import cli  # noqa: E402
from iqkt import kquants as kq  # noqa: E402
from iqkt.imatrix import write_legacy_imatrix  # noqa: E402
from test_gguf import make_model, parse_gguf, stored  # noqa: E402

GT = gguf.GGMLQuantizationType


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "model.gguf"
    return path, make_model(path, np.random.default_rng(1))


def quant(src, dst, type, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("allow_requantize", True)
    return ig.quantize_model(src, dst, type, **kw)


def types_of(path):
    _, infos, _ = parse_gguf(path)
    return {n: ig.type_name(i["type"]) for n, i in infos.items()}


def decode(path, name):
    """float32 values of tensor `name` through gguf's own decoders (or iqkt's for KT)."""
    _, infos, buf = parse_gguf(path)
    i = infos[name]
    tn = ig.type_name(i["type"])
    raw = stored(buf, i, tn)
    if tn in ig.KT_TYPES:
        return iqkt.dequantize(raw.reshape(-1, iqkt.row_size(tn, i["ne"][0])), tn, i["ne"][0])
    if tn == "f32":
        return raw.view(np.float32).reshape(-1, i["ne"][0])
    return gguf.quants.dequantize(raw.reshape(-1, len(raw) // int(np.prod(i["ne"][1:]))), GT[tn.upper()])


def rel(x, y):
    x = x.reshape(y.shape)
    return float(((x - y) ** 2).sum() / (x ** 2).sum())


def test_kt_body_q6_k_output_q8_0_embeddings_in_one_command(model, tmp_path, capsys):
    src, ref = model
    out = tmp_path / "o.gguf"
    rc = cli.main(["quantize", "--output-tensor-type", "q6_k", "--token-embedding-type", "q8_0",
                   "--allow-requantize", "--no-progress", str(src), str(out), "iq4_kt", "1"])
    assert rc == 0, capsys.readouterr().err
    t = types_of(out)
    assert t["output.weight"] == "q6_k" and t["token_embd.weight"] == "q8_0"
    assert t["blk.0.attn_q.weight"] == "iq4_kt" and t["blk.0.ffn_gate_exps.weight"] == "iq4_kt"
    _, infos, buf = parse_gguf(out)
    np.testing.assert_array_equal(stored(buf, infos["output.weight"], "q6_k"),
                                  kq.quantize(ref["output.weight"], "q6_k").reshape(-1))
    np.testing.assert_array_equal(stored(buf, infos["token_embd.weight"], "q8_0"),
                                  gguf.quants.quantize(ref["token_embd.weight"], GT.Q8_0).reshape(-1))
    assert rel(ref["output.weight"], decode(out, "output.weight")) < 1e-3
    r = ig.KTGGUFReader(str(out), "r")  # gguf's reader, taught the KT ids
    byname = {x.name: x for x in r.tensors}
    assert int(byname["output.weight"].tensor_type) == int(GT.Q6_K)
    assert ig.model_info(out).file_type == 153  # MOSTLY_IQ4_KT


def _layered_model(path, layers=8, n=256, rng=None):
    """A model with `layers` blocks of attn_q/attn_v/attn_output/ffn_down (f32), head counts for
    the GQA ratio, and an untied output."""
    rng = rng or np.random.default_rng(7)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint32("llama.block_count", layers)
    w.add_uint32("llama.attention.head_count", 8)
    w.add_uint32("llama.attention.head_count_kv", 2)
    ref = {}

    def add(name, *shape):
        x = (rng.standard_normal(shape) * 0.02).astype(np.float32)
        w.add_tensor(name, x)
        ref[name] = x

    add("token_embd.weight", 32, n)
    for i in range(layers):
        for c in ("attn_q", "attn_v", "attn_output", "ffn_down"):
            add(f"blk.{i}.{c}.weight", 8, n)
    add("output.weight", 32, n)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return ref


def test_q4_k_m_mix_rules_and_stock_reader(tmp_path):
    src = tmp_path / "m.gguf"
    ref = _layered_model(src)
    out = tmp_path / "o.gguf"
    quant(src, out, "q4_k_m")
    t = types_of(out)
    n = 8
    more = [i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2 for i in range(n)]
    assert more == [True, False, False, True, False, False, True, True]
    for i in range(n):
        want = "q6_k" if more[i] else "q4_k"
        assert t[f"blk.{i}.attn_v.weight"] == want and t[f"blk.{i}.ffn_down.weight"] == want
        assert t[f"blk.{i}.attn_q.weight"] == "q4_k"
    assert t["output.weight"] == "q6_k" and t["token_embd.weight"] == "q4_k"
    assert ig.model_info(out).file_type == int(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    # the stock gguf reader loads it, and its decoders give the weights back
    r = gguf.GGUFReader(str(out), "r")
    for x in r.tensors:
        y = gguf.quants.dequantize(x.data, x.tensor_type)
        assert rel(ref[x.name], y) < (2e-3 if x.tensor_type == GT.Q6_K else 1e-2), x.name
    # --pure: every matrix in the base type, output included
    quant(src, tmp_path / "p.gguf", "q4_k_m", pure=True)
    assert set(types_of(tmp_path / "p.gguf").values()) == {"q4_k"}
    # q3_k_m puts attention output in q4_k; q5_k_s is plain q5_k apart from the output
    quant(src, tmp_path / "q3.gguf", "q3_k_m")
    t3 = types_of(tmp_path / "q3.gguf")
    assert t3["blk.3.attn_output.weight"] == "q4_k" and t3["blk.0.attn_v.weight"] == "q5_k"
    assert t3["blk.3.attn_q.weight"] == "q3_k"


@pytest.mark.parametrize("requested, fallback", [("iq2_kt", "iq4_nl"), ("iq3_kt", "iq4_nl"), ("iq4_kt", "iq4_nl"),
                                                 ("q3_k", "iq4_nl"), ("q4_k", "q5_0"), ("q5_k", "q5_1"),
                                                 ("q6_k", "q8_0")])
def test_auto_fallback_near_the_bit_width(model, tmp_path, requested, fallback):
    src, ref = model
    out = tmp_path / "o.gguf"
    rep = quant(src, out, requested, pure=True)
    t = types_of(out)
    assert t["blk.0.ffn_down.weight"] == fallback          # 96 columns
    assert t["blk.0.attn_q.weight"] == requested
    assert any(f"{requested} -> {fallback}" in w and "ffn_down" in w for w in rep.warnings)
    # the fallback is not worse than the requested type on the same weights (within 25%: q5_1 for
    # q5_k is llama-quantize's rule, slightly worse on some inputs)
    x = ref["blk.0.attn_q.weight"]
    err_fb = rel(x, gguf.quants.dequantize(kq.quantize(x, fallback) if fallback in kq.TYPES
                                           else gguf.quants.quantize(x, GT[fallback.upper()]), GT[fallback.upper()]))
    assert err_fb <= rel(x, decode(out, "blk.0.attn_q.weight")) * 1.25


def test_fallback_for_rows_not_a_multiple_of_32(tmp_path):
    src = tmp_path / "m.gguf"
    w = gguf.GGUFWriter(str(src), "llama")
    w.add_tensor("blk.0.attn_q.weight", np.ones((4, 40), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    quant(src, tmp_path / "o.gguf", "iq4_kt")
    assert types_of(tmp_path / "o.gguf")["blk.0.attn_q.weight"] == "f16"


def test_requantize_needs_permission(model, tmp_path, capsys):
    src, _ = model
    out = tmp_path / "o.gguf"
    with pytest.raises(ValueError, match=r"already quantized: q8_0 \(1\).*--allow-requantize"):
        ig.quantize_model(src, out, "iq4_kt", progress=False)
    assert not out.exists()
    # copying the q8_0 tensor unchanged is not requantizing
    ig.quantize_model(src, out, "iq4_kt", custom_q="ffn_up=keep", progress=False)
    assert types_of(out)["blk.0.ffn_up.weight"] == "q8_0"
    assert cli.main(["quantize", str(src), str(tmp_path / "x.gguf"), "q4_k"]) == 1
    assert "--allow-requantize" in capsys.readouterr().err


def test_leave_output_tensor_and_class_types(model, tmp_path):
    src, ref = model
    out = tmp_path / "o.gguf"
    quant(src, out, "q4_k", leave_output_tensor=True,
          tensor_types={"attn_q": "q6_k", "ffn_down": "q8_0", "ffn_gate": "iq4_nl", "attn_v": None},
          custom_q="ffn_gate_exps=q5_k")
    _, infos, buf = parse_gguf(out)
    _, src_infos, src_buf = parse_gguf(src)
    np.testing.assert_array_equal(stored(buf, infos["output.weight"], "f32"),
                                  stored(src_buf, src_infos["output.weight"], "f32"))
    t = types_of(out)
    assert t["blk.0.attn_q.weight"] == "q6_k"
    assert t["blk.0.ffn_down.weight"] == "q8_0"
    assert t["blk.0.ffn_gate_exps.weight"] == "q5_k"    # --custom-q wins over the class option
    assert t["blk.0.ffn_up.weight"] == "q4_k"
    with pytest.raises(ValueError, match="unknown tensor class"):
        quant(src, tmp_path / "x.gguf", "q4_k", tensor_types={"attn_z": "q4_k"})
    args = ["quantize", str(src), str(tmp_path / "c.gguf"), "q4_k", "--allow-requantize", "--no-progress",
            "--attn-q-type", "q6_k", "--ffn-down-type", "q8_0", "--leave-output-tensor"]
    assert cli.main(args) == 0
    t2 = types_of(tmp_path / "c.gguf")
    assert t2["blk.0.attn_q.weight"] == "q6_k" and t2["blk.0.ffn_down.weight"] == "q8_0"
    assert t2["output.weight"] == "f32"


def test_tied_embeddings_take_the_output_type(tmp_path):
    src = tmp_path / "m.gguf"
    ref = _layered_model(src, layers=2)
    w = gguf.GGUFWriter(str(tmp_path / "tied.gguf"), "llama")
    for name, x in ref.items():
        if name != "output.weight":
            w.add_tensor(name, x)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    quant(tmp_path / "tied.gguf", tmp_path / "o.gguf", "iq4_kt", output_tensor_type="q6_k")
    assert types_of(tmp_path / "o.gguf")["token_embd.weight"] == "q6_k"
    rep = quant(tmp_path / "tied.gguf", tmp_path / "o2.gguf", "iq4_kt", output_tensor_type="q6_k",
                token_embedding_type="q8_0")
    assert types_of(tmp_path / "o2.gguf")["token_embd.weight"] == "q6_k"
    assert any("tied embeddings" in w and "q8_0 is not used" in w for w in rep.warnings)


def _imatrix(tmp_path, ref):
    rng = np.random.default_rng(9)
    ims = {"blk.0.attn_q.weight": rng.chisquare(2, 512).astype(np.float32),
           "blk.0.ffn_gate_exps.weight": rng.chisquare(2, 3 * 256).astype(np.float32),
           "output.weight": rng.chisquare(2, 256).astype(np.float32)}
    imf = tmp_path / "im.dat"
    write_legacy_imatrix(imf, ims, ncall=3, dataset="calib.txt", last_chunk=42)
    return imf, ims


def test_include_exclude_weights_and_provenance(model, tmp_path):
    src, ref = model
    imf, ims = _imatrix(tmp_path, ref)
    x = ref["blk.0.attn_q.weight"]
    with_im = iqkt.quantize(x, "iq4_kt", ims["blk.0.attn_q.weight"]).reshape(-1)
    without = iqkt.quantize(x, "iq4_kt").reshape(-1)

    def attn_q_bytes(path):
        _, infos, buf = parse_gguf(path)
        return stored(buf, infos["blk.0.attn_q.weight"], "iq4_kt")

    quant(src, tmp_path / "a.gguf", "iq4_kt", imatrix=imf, output_tensor_type="q6_k")
    np.testing.assert_array_equal(attn_q_bytes(tmp_path / "a.gguf"), with_im)
    _, infos, buf = parse_gguf(tmp_path / "a.gguf")  # K-quants use the imatrix too
    np.testing.assert_array_equal(stored(buf, infos["output.weight"], "q6_k"),
                                  kq.quantize(ref["output.weight"], "q6_k", ims["output.weight"]).reshape(-1))
    quant(src, tmp_path / "e.gguf", "iq4_kt", imatrix=imf, exclude_weights=["attn_q"])
    np.testing.assert_array_equal(attn_q_bytes(tmp_path / "e.gguf"), without)
    quant(src, tmp_path / "i.gguf", "iq4_kt", imatrix=imf, include_weights=["ffn_gate"])
    np.testing.assert_array_equal(attn_q_bytes(tmp_path / "i.gguf"), without)
    quant(src, tmp_path / "i2.gguf", "iq4_kt", imatrix=imf, include_weights=["attn_q"])
    np.testing.assert_array_equal(attn_q_bytes(tmp_path / "i2.gguf"), with_im)
    with pytest.raises(ValueError, match="need an --imatrix"):
        quant(src, tmp_path / "x.gguf", "iq4_kt", include_weights=["attn_q"])
    meta, _, _ = parse_gguf(tmp_path / "a.gguf")
    assert meta["quantize.imatrix.file"] == str(imf)
    assert meta["quantize.imatrix.dataset"] == "calib.txt"
    assert meta["quantize.imatrix.entries_count"] == 3
    assert meta["quantize.imatrix.chunks_count"] == 42
    # requantizing without an imatrix drops the stale provenance
    quant(tmp_path / "a.gguf", tmp_path / "b.gguf", "q8_0")
    meta_b, _, _ = parse_gguf(tmp_path / "b.gguf")
    assert not any(k.startswith("quantize.imatrix.") for k in meta_b)


def test_override_kv(model, tmp_path):
    src, _ = model
    out = tmp_path / "o.gguf"
    quant(src, out, "q8_0", override_kv=["llama.block_count=int:7", "my.float=float:0.5", "my.flag=bool:false",
                                         "general.name=str:renamed: yes"])
    meta, _, _ = parse_gguf(out)
    src_meta, _, _ = parse_gguf(src)
    assert meta["llama.block_count"] == 7 and meta["my.float"] == 0.5 and meta["my.flag"] is False
    assert meta["general.name"] == "renamed: yes"
    assert list(meta)[:len(src_meta) - 1] == [k for k in src_meta if k in meta][:len(src_meta) - 1]  # order kept
    for bad, msg in (("nokey", "KEY=TYPE:VALUE"), ("a=int:x", "not a valid int"), ("a=char:1", "not one of"),
                     ("a=bool:maybe", "not a valid bool"), ("general.alignment=int:64", "cannot be overridden")):
        with pytest.raises(ValueError, match=msg):
            quant(src, tmp_path / "x.gguf", "q8_0", override_kv=[bad])


def test_positional_form_and_conflicts(model, tmp_path, capsys):
    src, _ = model
    out = tmp_path / "o.gguf"
    assert cli.main(["quantize", str(src), str(out), "Q6_K", "2", "--allow-requantize", "--no-progress",
                     "--summary"]) == 0
    assert types_of(out)["blk.0.attn_q.weight"] == "q6_k"
    capsys.readouterr()
    for argv, msg in ((["quantize", str(src), str(out)], "no type given"),
                      (["quantize", str(src), str(out), "q4_k", "--type", "q8_0"], "two types"),
                      (["quantize", str(src), str(out), "q4_k", "x"], "THREADS"),
                      (["quantize", str(src), str(out), "q4_k", "2", "--threads", "3"], "two thread counts")):
        assert cli.main(argv) == 1
        assert msg in capsys.readouterr().err


def test_path_problems_fail_before_the_plan(model, tmp_path, capsys):
    src, _ = model
    cases = [
        (["quantize", str(src), str(tmp_path / "nodir" / "o.gguf"), "q8_0", "--allow-requantize"],
         "output folder"),
        (["quantize", str(src), str(tmp_path / "o.gguf"), "iq4_kt", "--imatrix", str(tmp_path / "no.dat")],
         "imatrix file"),
        (["quantize", str(tmp_path / "missing.gguf"), str(tmp_path / "o.gguf"), "q8_0"], "input file"),
        (["quantize", str(tmp_path), str(tmp_path / "o.gguf"), "q8_0"], "is a directory"),
    ]
    for argv, words in cases:
        assert cli.main(argv) == 1
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("iqkt: error:") and words in lines[0], err
        assert "Errno" not in err
    assert not (tmp_path / "o.gguf").exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_input(model, tmp_path):
    src, _ = model
    os.chmod(src, 0)
    try:
        with pytest.raises(PermissionError, match="not readable"):
            quant(src, tmp_path / "o.gguf", "q8_0")
    finally:
        os.chmod(src, 0o644)


def test_effort_levels(model, tmp_path, capsys):
    src, ref = model
    x = ref["blk.0.attn_q.weight"]

    def attn_q_bytes(path):
        _, infos, buf = parse_gguf(path)
        return stored(buf, infos["blk.0.attn_q.weight"], "iq2_kt")

    quant(src, tmp_path / "d.gguf", "iq2_kt", output_tensor_type="q6_k")
    quant(src, tmp_path / "f.gguf", "iq2_kt", output_tensor_type="q6_k", effort="fast")
    np.testing.assert_array_equal(attn_q_bytes(tmp_path / "d.gguf"), iqkt.quantize(x, "iq2_kt").reshape(-1))
    fast = iqkt.quantize(x, "iq2_kt", effort="fast").reshape(-1)
    assert not np.array_equal(fast, iqkt.quantize(x, "iq2_kt").reshape(-1))
    np.testing.assert_array_equal(attn_q_bytes(tmp_path / "f.gguf"), fast)
    _, infos_d, buf_d = parse_gguf(tmp_path / "d.gguf")  # non-KT tensors ignore the level
    _, infos_f, buf_f = parse_gguf(tmp_path / "f.gguf")
    np.testing.assert_array_equal(stored(buf_d, infos_d["output.weight"], "q6_k"),
                                  stored(buf_f, infos_f["output.weight"], "q6_k"))
    meta_d, _, _ = parse_gguf(tmp_path / "d.gguf")
    meta_f, _, _ = parse_gguf(tmp_path / "f.gguf")
    assert "quantize.iqkt.effort" not in meta_d and meta_f["quantize.iqkt.effort"] == "fast"
    # the CLI form; requantizing the fast file drops its stale effort key
    assert cli.main(["quantize", str(src), str(tmp_path / "c.gguf"), "iq2_kt", "--output-tensor-type", "q6_k",
                     "--effort", "fast", "--allow-requantize", "--no-progress"]) == 0
    assert (tmp_path / "c.gguf").read_bytes() == (tmp_path / "f.gguf").read_bytes()
    quant(tmp_path / "f.gguf", tmp_path / "r.gguf", "q8_0")
    assert "quantize.iqkt.effort" not in parse_gguf(tmp_path / "r.gguf")[0]
    with pytest.raises(ValueError, match="effort must be one of"):
        quant(src, tmp_path / "x.gguf", "iq2_kt", effort="quick")
    assert not os.path.exists(tmp_path / "x.gguf") and not os.path.exists(str(tmp_path / "x.gguf") + ".part")
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli.main(["quantize", str(src), str(tmp_path / "x.gguf"), "iq2_kt", "--effort", "quick"])
    assert "invalid choice: 'quick'" in capsys.readouterr().err
