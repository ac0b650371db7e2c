"""iqkt.gguf and the `iqkt quantize / info / dequantize` commands on small GGUF fixtures.

The files iqkt writes are checked with an independent minimal GGUF parser (below, written from the
GGUF spec; it shares no code with iqkt.gguf or with gguf's reader), and the tensor bytes against
iqkt.quantize / gguf.quants applied directly to the fixture's weights.
"""
from __future__ import annotations

import os
import struct
import subprocess
import sys

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

import iqkt  # noqa: E402
import iqkt.gguf as ig  # noqa: E402
from iqkt import cli  # noqa: E402
from conftest import child_env, iqkt_parent  # noqa: E402
from iqkt.imatrix import write_legacy_imatrix  # noqa: E402

Q8_0 = gguf.GGMLQuantizationType.Q8_0
KT_IDS = {"iq2_kt": 153, "iq3_kt": 154, "iq4_kt": 155, "iq1_kt": 158}
KT_FILE_TYPES = {"iq2_kt": 151, "iq3_kt": 152, "iq4_kt": 153, "iq1_kt": 156}
KT_SB_BYTES = {"iq2_kt": 68, "iq3_kt": 100, "iq4_kt": 128, "iq1_kt": 56}
TYPE_IDS = {"f32": 0, "f16": 1, "q8_0": 8, "bf16": 30}
TYPE_IDS.update(KT_IDS)


# ---------------------------------------------------------------------------------------------
# Independent GGUF parser and fixtures
# ---------------------------------------------------------------------------------------------

_SCALAR_FMT = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def parse_gguf(path):
    """(metadata dict, {name: info}, file bytes); info: ne (ggml order), type, offset (absolute)."""
    buf = open(path, "rb").read()
    pos = 4

    def rd(fmt):
        nonlocal pos
        v = struct.unpack_from("<" + fmt, buf, pos)[0]
        pos += struct.calcsize("<" + fmt)
        return v

    def rd_val(vt):
        nonlocal pos
        if vt in _SCALAR_FMT:
            return rd(_SCALAR_FMT[vt])
        if vt == 8:
            n = rd("Q")
            pos += n
            return buf[pos - n:pos].decode("utf-8")
        assert vt == 9, vt
        sub, n = rd("I"), rd("Q")
        return [rd_val(sub) for _ in range(n)]

    assert buf[:4] == b"GGUF"
    assert rd("I") == 3
    n_tensors, n_kv = rd("Q"), rd("Q")
    meta = {}
    for _ in range(n_kv):
        key = rd_val(8)
        meta[key] = rd_val(rd("I"))
    infos = {}
    for _ in range(n_tensors):
        name = rd_val(8)
        ne = [rd("Q") for _ in range(rd("I"))]
        infos[name] = {"ne": ne, "type": rd("I"), "offset": rd("Q")}
    align = meta.get("general.alignment", 32)
    data_start = (pos + align - 1) // align * align
    for i in infos.values():
        assert i["offset"] % align == 0
        i["offset"] += data_start
    return meta, infos, buf


def expected_nbytes(type_name, ne):
    n, rows = ne[0], int(np.prod(ne[1:]))
    if type_name in KT_SB_BYTES:
        return rows * (4 + KT_SB_BYTES[type_name] * n // 256)
    bs, ts = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[type_name.upper()]]
    return n // bs * ts * rows


def stored(buf, info, type_name):
    nb = expected_nbytes(type_name, info["ne"])
    assert info["offset"] + nb <= len(buf)
    return np.frombuffer(buf, dtype=np.uint8, count=nb, offset=info["offset"])


def make_model(path, rng, alignment=None, kt_rows=8, extra_kv=None):
    """A tiny llama-like model; returns its weights as float32 by name (numpy shapes), as the
    quantizer sees them (f16 and q8_0 inputs decoded)."""
    w = gguf.GGUFWriter(str(path), "llama")
    if alignment:
        w.add_custom_alignment(alignment)
    w.add_name("tiny-test")
    w.add_uint32("llama.block_count", 1)
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_bool("tiny.flag", True)
    w.add_file_type(0)
    w.add_array("tokenizer.ggml.tokens", ["<s>", "a", "\u00fc", "\u4e2d"])
    w.add_array("tokenizer.ggml.scores", [0.0, -1.5, -2.5, -3.25])
    w.add_array("tokenizer.ggml.token_type", [3, 1, 1, 1])
    for k, v in (extra_kv or {}).items():
        w.add_uint16(k, v)
    ref = {}

    def add(name, x, store="f32"):
        if store == "f16":
            w.add_tensor(name, x.astype(np.float16))
            ref[name] = x.astype(np.float16).astype(np.float32)
        elif store == "q8_0":
            q = gguf.quants.quantize(x, Q8_0)
            w.add_tensor(name, q, raw_dtype=Q8_0)
            ref[name] = gguf.quants.dequantize(q, Q8_0).astype(np.float32)
        else:
            w.add_tensor(name, x)
            ref[name] = x

    def g(*shape):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    add("token_embd.weight", g(16, 256))
    add("blk.0.attn_norm.weight", 1 + g(256))
    add("blk.0.attn_q.weight", g(kt_rows, 512), "f16")     # rows of 2 x 256
    add("blk.0.ffn_up.weight", g(kt_rows, 256), "q8_0")    # quantized input
    add("blk.0.ffn_down.weight", g(256, 96))               # rows of 96: cannot be KT
    add("blk.0.ffn_gate_exps.weight", g(3, 4, 256))        # 3 experts
    add("blk.0.ffn_gate_inp.weight", g(3, 256))            # MoE router: never quantized
    add("output_norm.weight", 1 + g(256))
    add("output.weight", g(16, 256))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return ref


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "model.gguf"
    ref = make_model(path, np.random.default_rng(1))
    return path, ref


def quant(src, dst, type, **kw):
    """quantize_model for the fixture, whose ffn_up is stored in q8_0 (so: allow_requantize)."""
    kw.setdefault("progress", False)
    kw.setdefault("allow_requantize", True)
    return ig.quantize_model(src, dst, type, **kw)


# ---------------------------------------------------------------------------------------------
# quantize -> info -> dequantize
# ---------------------------------------------------------------------------------------------

def test_quantize_layout_types_and_bytes(model, tmp_path):
    src, ref = model
    dst = tmp_path / "out.gguf"
    rep = quant(src, dst, "iq4_kt", fallback_type="q8_0")
    meta, infos, buf = parse_gguf(dst)
    types = {n: i["type"] for n, i in infos.items()}
    assert types == {
        "token_embd.weight": 8,            # special case: q8_0 with a KT default type
        "blk.0.attn_norm.weight": 0,       # 1-D stays f32
        "blk.0.attn_q.weight": 155,
        "blk.0.ffn_up.weight": 155,        # requantized from q8_0
        "blk.0.ffn_down.weight": 8,        # row 96: fallback q8_0 (as asked)
        "blk.0.ffn_gate_exps.weight": 155,
        "blk.0.ffn_gate_inp.weight": 0,    # router copied
        "output_norm.weight": 0,
        "output.weight": 8,
    }
    # metadata copied, file type and quantization version set
    src_meta, _, _ = parse_gguf(src)
    for k, v in src_meta.items():
        if k != "general.file_type":
            assert meta[k] == v, k
    assert meta["general.file_type"] == KT_FILE_TYPES["iq4_kt"]
    assert meta["general.quantization_version"] == 2
    # KT bytes are exactly iqkt.quantize of the input weights, rows x row_size each
    for name in ("blk.0.attn_q.weight", "blk.0.ffn_up.weight"):
        x = ref[name]
        assert infos[name]["ne"] == [x.shape[1], x.shape[0]]
        got = stored(buf, infos[name], "iq4_kt")
        assert got.size == x.shape[0] * iqkt.row_size("iq4_kt", x.shape[1])
        np.testing.assert_array_equal(got, iqkt.quantize(x, "iq4_kt").reshape(-1))
    x = ref["blk.0.ffn_gate_exps.weight"]
    assert infos["blk.0.ffn_gate_exps.weight"]["ne"] == [256, 4, 3]
    np.testing.assert_array_equal(stored(buf, infos["blk.0.ffn_gate_exps.weight"], "iq4_kt"),
                                  iqkt.quantize(x.reshape(-1, 256), "iq4_kt").reshape(-1))
    # q8_0 fallback equals gguf's own quantizer; copied tensors are byte-identical
    x = ref["blk.0.ffn_down.weight"]
    np.testing.assert_array_equal(stored(buf, infos["blk.0.ffn_down.weight"], "q8_0"),
                                  gguf.quants.quantize(x, Q8_0).reshape(-1))
    for name in ("blk.0.attn_norm.weight", "blk.0.ffn_gate_inp.weight"):
        np.testing.assert_array_equal(stored(buf, infos[name], "f32").view(np.float32), ref[name].reshape(-1))
    # the report
    byname = {t.name: t for t in rep.tensors}
    assert byname["blk.0.attn_q.weight"].out_type == "iq4_kt"
    assert byname["blk.0.attn_q.weight"].nbytes == expected_nbytes("iq4_kt", [512, 8])
    assert 1e-4 < byname["blk.0.attn_q.weight"].rel_err < 0.05
    assert rep.total_bytes == sum(expected_nbytes(ig.type_name(i["type"]), i["ne"]) for i in infos.values())
    assert any("ffn_down" in w and "fallback" in w for w in rep.warnings)
    assert "total" in rep.format_table()


@pytest.mark.parametrize("kt", ["iq2_kt", "iq3_kt", "iq1_kt"])
def test_round_trip_quantize_info_dequantize(model, tmp_path, kt):
    src, ref = model
    q = tmp_path / "q.gguf"
    d = tmp_path / "d.gguf"
    imf = tmp_path / "im.dat"
    write_legacy_imatrix(imf, {"blk.0.attn_q.weight": np.linspace(0.5, 2, 512), "blk.0.ffn_up.weight": np.ones(256),
                               "blk.0.ffn_gate_exps.weight": np.ones(3 * 256)})
    quant(src, q, kt, imatrix=imf)
    info = ig.model_info(q)
    assert info.file_type == KT_FILE_TYPES[kt]
    kt_names = {t.name for t in info.tensors if t.out_type == kt}
    assert kt_names == {"blk.0.attn_q.weight", "blk.0.ffn_up.weight", "blk.0.ffn_gate_exps.weight"}
    text = ig.format_info(info)
    assert kt in text and "KT share: 3 tensors" in text
    ig.dequantize_model(q, d, "f32", progress=False)
    _, qinfos, qbuf = parse_gguf(q)
    meta, dinfos, dbuf = parse_gguf(d)
    assert meta["general.file_type"] != KT_FILE_TYPES[kt]
    for name, qi in qinfos.items():
        di = dinfos[name]
        assert di["ne"] == qi["ne"]
        if qi["type"] == KT_IDS[kt]:
            assert di["type"] == 0
            n = qi["ne"][0]
            want = iqkt.dequantize(stored(qbuf, qi, kt), kt, n, inference=True).reshape(-1)
            got = stored(dbuf, di, "f32").view(np.float32)
            np.testing.assert_array_equal(got, want)
            if kt == "iq2_kt":  # the inference values carry IQ2_KT's 1.05
                plain = iqkt.dequantize(stored(qbuf, qi, kt), kt, n).reshape(-1)
                nz = plain != 0
                np.testing.assert_allclose(got[nz] / plain[nz], 1.05, rtol=1e-5)
        else:
            assert di["type"] == qi["type"]
            tn = ig.type_name(qi["type"])
            np.testing.assert_array_equal(stored(dbuf, di, tn), stored(qbuf, qi, tn))


def test_dequantize_f16_and_bad_type(model, tmp_path):
    src, _ = model
    q = tmp_path / "q.gguf"
    quant(src, q, "iq4_kt", custom_q="attn_q=iq4_kt,.*=q8_0")
    d = tmp_path / "d16.gguf"
    ig.dequantize_model(q, d, "f16", progress=False)
    _, qi, qbuf = parse_gguf(q)
    _, di, dbuf = parse_gguf(d)
    a = qi["blk.0.attn_q.weight"]
    want = iqkt.dequantize(stored(qbuf, a, "iq4_kt"), "iq4_kt", 512, inference=True).astype(np.float16)
    np.testing.assert_array_equal(stored(dbuf, di["blk.0.attn_q.weight"], "f16").view(np.float16), want.reshape(-1))
    with pytest.raises(ValueError, match="f16, bf16, f32"):
        ig.dequantize_model(q, tmp_path / "x.gguf", "q8_0")


def test_requantizing_kt_to_same_type_copies_bytes(model, tmp_path):
    src, _ = model
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    quant(src, a, "iq3_kt")
    rep = quant(a, b, "iq3_kt")
    _, ia, ba = parse_gguf(a)
    _, ib, bb = parse_gguf(b)
    for name, i in ia.items():
        tn = ig.type_name(i["type"])
        np.testing.assert_array_equal(stored(bb, ib[name], tn), stored(ba, i, tn))
    assert all("already" in t.note for t in rep.tensors if t.out_type == "iq3_kt")


def test_requantize_kt_input_to_q8_0_uses_inference_values(model, tmp_path):
    src, _ = model
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    quant(src, a, "iq2_kt", pure=True)
    quant(a, b, "q8_0")
    _, ia, ba = parse_gguf(a)
    _, ib, bb = parse_gguf(b)
    i = ia["blk.0.attn_q.weight"]
    x = iqkt.dequantize(stored(ba, i, "iq2_kt"), "iq2_kt", 512, inference=True)
    np.testing.assert_array_equal(stored(bb, ib["blk.0.attn_q.weight"], "q8_0"),
                                  gguf.quants.quantize(x, Q8_0).reshape(-1))


def test_alignment_is_kept(tmp_path):
    src = tmp_path / "m.gguf"
    make_model(src, np.random.default_rng(2), alignment=64)
    dst = tmp_path / "o.gguf"
    quant(src, dst, "iq4_kt")
    meta, infos, _ = parse_gguf(dst)  # checks every offset % 64
    assert meta["general.alignment"] == 64


# ---------------------------------------------------------------------------------------------
# type selection
# ---------------------------------------------------------------------------------------------

def _types(path):
    return {t.name: t.out_type for t in ig.model_info(path).tensors}


def test_custom_q_first_match_and_special_types(model, tmp_path):
    src, _ = model
    dst = tmp_path / "o.gguf"
    quant(src, dst, "q8_0", custom_q="ffn_up=iq3_kt,ffn=iq2_kt,attn_q=keep",
          output_tensor_type="f16", token_embedding_type="iq4_kt")
    t = _types(dst)
    assert t["blk.0.ffn_up.weight"] == "iq3_kt"          # first match wins
    assert t["blk.0.ffn_gate_exps.weight"] == "iq2_kt"
    assert t["blk.0.ffn_down.weight"] == "iq4_nl"        # iq2_kt does not fit 96: auto fallback
    assert t["blk.0.attn_q.weight"] == "f16"             # keep
    assert t["output.weight"] == "f16"
    assert t["token_embd.weight"] == "iq4_kt"
    # --type names the file type
    assert ig.model_info(dst).file_type == int(gguf.LlamaFileType.MOSTLY_Q8_0)


def test_pure_and_fallback_keep(model, tmp_path):
    src, _ = model
    dst = tmp_path / "o.gguf"
    quant(src, dst, "iq4_kt", pure=True, fallback_type="keep")
    t = _types(dst)
    assert t["token_embd.weight"] == "iq4_kt" and t["output.weight"] == "iq4_kt"
    assert t["blk.0.ffn_down.weight"] == "f32"
    dst2 = tmp_path / "o2.gguf"
    quant(src, dst2, "f16")
    t = _types(dst2)
    assert t["blk.0.ffn_up.weight"] == "f16" and t["blk.0.attn_norm.weight"] == "f32"
    assert ig.model_info(dst2).file_type == int(gguf.LlamaFileType.MOSTLY_F16)


def test_bad_options(model, tmp_path):
    src, _ = model
    dst = tmp_path / "o.gguf"
    with pytest.raises(ValueError, match="unknown or unsupported type 'q9_9'"):
        quant(src, dst, "q9_9")
    with pytest.raises(ValueError, match="bad regex"):
        quant(src, dst, "q8_0", custom_q="ffn[=iq4_kt")
    with pytest.raises(ValueError, match="REGEX=TYPE"):
        quant(src, dst, "q8_0", custom_q="ffn_down")
    with pytest.raises(ValueError, match="refusing to overwrite the input"):
        quant(src, src, "q8_0")
    with pytest.raises(ValueError, match="threads"):
        quant(src, dst, "q8_0", threads=0)
    assert not dst.exists()


# ---------------------------------------------------------------------------------------------
# imatrix
# ---------------------------------------------------------------------------------------------

def _gguf_imatrix(path, entries):
    """entries: name -> (sums (n_expert, n), counts (n_expert,))"""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_string("general.type", "imatrix")
    for name, (s, c) in entries.items():
        w.add_tensor(name + ".in_sum2", np.asarray(s, np.float32))
        w.add_tensor(name + ".counts", np.asarray(c, np.float32).reshape(-1, 1))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_imatrix_legacy_and_gguf_give_the_same_bytes(model, tmp_path):
    src, ref = model
    rng = np.random.default_rng(5)
    im_q = rng.chisquare(3, 512).astype(np.float32)
    im_e = rng.chisquare(3, (3, 256)).astype(np.float32)  # one vector per expert
    leg = tmp_path / "im.dat"
    write_legacy_imatrix(leg, {"blk.0.attn_q.weight": im_q, "blk.0.ffn_gate_exps.weight": im_e.reshape(-1)},
                         ncall=4)
    gg = tmp_path / "im.gguf"
    _gguf_imatrix(gg, {"blk.0.attn_q.weight": (im_q[None] * 7, [7]),
                       "blk.0.ffn_gate_exps.weight": (im_e * 5, [5, 5, 5])})
    outs = []
    for imf in (leg, gg):
        dst = tmp_path / (imf.name + ".out.gguf")
        rep = quant(src, dst, "iq4_kt", imatrix=imf)
        assert any("no imatrix entry" in w and "ffn_up" in w for w in rep.warnings)
        outs.append(parse_gguf(dst))
    (_, ia, ba), (_, ib, bb) = outs
    for name in ia:
        tn = ig.type_name(ia[name]["type"])
        np.testing.assert_array_equal(stored(ba, ia[name], tn), stored(bb, ib[name], tn))
    x = ref["blk.0.attn_q.weight"]
    np.testing.assert_array_equal(stored(ba, ia["blk.0.attn_q.weight"], "iq4_kt"),
                                  iqkt.quantize(x, "iq4_kt", im_q).reshape(-1))
    with_plain = iqkt.quantize(x, "iq4_kt").reshape(-1)
    assert not np.array_equal(with_plain, stored(ba, ia["blk.0.attn_q.weight"], "iq4_kt"))
    xe = ref["blk.0.ffn_gate_exps.weight"]
    got = stored(ba, ia["blk.0.ffn_gate_exps.weight"], "iq4_kt").reshape(3, -1)
    for e in range(3):
        np.testing.assert_array_equal(got[e], iqkt.quantize(xe[e], "iq4_kt", im_e[e]).reshape(-1))


def test_imatrix_length_mismatch_is_a_clear_error(model, tmp_path):
    src, _ = model
    imf = tmp_path / "im.dat"
    write_legacy_imatrix(imf, {"blk.0.ffn_gate_exps.weight": np.ones(256)})  # needs 3 x 256
    dst = tmp_path / "o.gguf"
    with pytest.raises(ValueError, match=r"ffn_gate_exps.*256 values.*3 experts x 256"):
        quant(src, dst, "iq4_kt", imatrix=imf)
    assert not dst.exists()


def test_iq2_without_imatrix_warns(model, tmp_path):
    src, _ = model
    rep = quant(src, tmp_path / "o.gguf", "iq2_kt")
    assert any("iq2_kt without an imatrix" in w for w in rep.warnings)
    rep = quant(src, tmp_path / "o2.gguf", "q2_k")
    assert any("q2_k without an imatrix" in w for w in rep.warnings)
    rep = quant(src, tmp_path / "o3.gguf", "iq3_kt")
    assert not any("without an imatrix" in w for w in rep.warnings)


# ---------------------------------------------------------------------------------------------
# failures: interrupted writes, corrupt inputs, CLI errors
# ---------------------------------------------------------------------------------------------

def test_interrupted_write_leaves_no_output_and_resumes(model, tmp_path, monkeypatch, caplog):
    src, _ = model
    dst = tmp_path / "out.gguf"
    ref = tmp_path / "ref.gguf"
    quant(src, ref, "iq4_kt")
    real = ig._encode_rows
    calls = []

    def failing(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(ig, "_encode_rows", failing)
    with pytest.raises(KeyboardInterrupt):
        quant(src, dst, "iq4_kt")
    assert not dst.exists()
    # the finished tensors stay in OUT.part + its journal, for a rerun
    assert sorted(os.listdir(tmp_path)) == ["model.gguf", "out.gguf.part", "out.gguf.part.journal", "ref.gguf"]
    # an existing OUT survives a failed run untouched
    dst.write_bytes(b"previous")
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        quant(src, dst, "iq4_kt")
    assert dst.read_bytes() == b"previous"
    monkeypatch.setattr(ig, "_encode_rows", real)
    with caplog.at_level("INFO", logger="iqkt.gguf"):
        rep = quant(src, dst, "iq4_kt")
    assert "resuming" in caplog.text
    assert any("resumed" in t.note for t in rep.tensors)
    assert dst.read_bytes() == ref.read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["model.gguf", "out.gguf", "ref.gguf"]


def _corrupt_files(src, tmp_path):
    data = src.read_bytes()
    files = {
        "empty": b"",
        "magic": b"GGUX" + data[4:],
        "header": data[:40],
        "truncated": data[: len(data) - 100],
        "version": data[:4] + struct.pack("<I", 99) + data[8:],
    }
    # an unknown tensor type id: find the first tensor's type field via the independent parser
    _, infos, _ = parse_gguf(src)
    name = b"token_embd.weight"
    p = data.index(name) + len(name)  # then n_dims (4), dims (8 each), type (4)
    nd = struct.unpack_from("<I", data, p)[0]
    tpos = p + 4 + 8 * nd
    assert struct.unpack_from("<I", data, tpos)[0] == 0
    files["typeid"] = data[:tpos] + struct.pack("<I", 200) + data[tpos + 4:]
    paths = {}
    for k, v in files.items():
        paths[k] = tmp_path / f"bad_{k}.gguf"
        paths[k].write_bytes(v)
    return paths


def test_corrupt_gguf_errors(model, tmp_path):
    src, _ = model
    for kind, path in _corrupt_files(src, tmp_path).items():
        with pytest.raises(ig.GGUFFormatError) as ei:
            ig.model_info(path)
        msg = str(ei.value)
        assert str(path) in msg and "\n" not in msg, (kind, msg)
        if kind == "truncated":
            assert "truncated" in msg
        if kind == "typeid":
            assert "type id 200" in msg
        with pytest.raises(ig.GGUFFormatError):
            quant(path, tmp_path / "o.gguf", "q8_0")
        assert not (tmp_path / "o.gguf").exists()


def test_split_model_with_a_missing_shard(tmp_path):
    src = tmp_path / "m-00001-of-00002.gguf"
    make_model(src, np.random.default_rng(3), extra_kv={"split.count": 2, "split.no": 0})
    with pytest.raises(FileNotFoundError, match="first of 2 shards, but shard 2"):
        quant(src, tmp_path / "o.gguf", "q8_0")
    other = tmp_path / "x.gguf"
    make_model(other, np.random.default_rng(3), extra_kv={"split.count": 2, "split.no": 1})
    with pytest.raises(ig.GGUFFormatError, match="give the first shard"):
        quant(other, tmp_path / "o.gguf", "q8_0")


def test_cli_errors_are_one_line(model, tmp_path, capsys):
    src, _ = model
    bad = _corrupt_files(src, tmp_path)
    badim = tmp_path / "bad.dat"
    badim.write_bytes(struct.pack("<i", 1) + struct.pack("<i", 5) + b"abc")
    cases = [
        ["info", str(bad["truncated"])],
        ["quantize", str(bad["magic"]), str(tmp_path / "o.gguf"), "--type", "iq4_kt"],
        ["quantize", str(src), str(tmp_path / "o.gguf"), "--type", "iq4_kt", "--imatrix", str(badim)],
        ["quantize", str(src), str(src), "--type", "q8_0"],
        ["quantize", str(tmp_path / "missing.gguf"), str(tmp_path / "o.gguf"), "--type", "q8_0"],
        ["dequantize", str(bad["header"]), str(tmp_path / "o.gguf")],
    ]
    for argv in cases:
        rc = cli.main(argv)
        err = capsys.readouterr().err
        assert rc != 0, argv
        lines = [ln for ln in err.splitlines() if ln.startswith("iqkt: error:")]
        assert len(lines) == 1 and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "o.gguf").exists()


def test_cli_quantize_info_dequantize(model, tmp_path, capsys):
    src, _ = model
    out = tmp_path / "o.gguf"
    assert cli.main(["quantize", str(src), str(out), "--type", "q8_0", "--custom-q", "attn_q=iq4_kt,ffn_up=q4_0",
                     "--threads", "1", "--no-progress", "--allow-requantize"]) == 0
    o = capsys.readouterr()
    assert "blk.0.attn_q.weight" in o.out and "iq4_kt" in o.out and "total" in o.out
    assert "requantizing" in o.err  # the q8_0 input tensor
    assert cli.main(["info", str(out)]) == 0
    o = capsys.readouterr().out
    assert "iq4_kt" in o and "KT share: 1 tensors" in o and "MOSTLY_Q8_0" in o
    assert cli.main(["dequantize", str(out), str(tmp_path / "d.gguf"), "--type", "bf16", "--summary"]) == 0
    assert "bf16" in capsys.readouterr().out
    assert _types(tmp_path / "d.gguf")["blk.0.attn_q.weight"] == "bf16"


def test_cli_info_without_file_shows_config(capsys):
    assert cli.main(["info"]) == 0
    assert iqkt.isa() in capsys.readouterr().out


def test_progress_bar_on_request(model, tmp_path, capsys):
    pytest.importorskip("tqdm")
    src, _ = model
    ig.quantize_model(src, tmp_path / "o.gguf", "q8_0", progress=True)
    err = capsys.readouterr().err
    assert "quantize" in err and "weights" in err


@pytest.mark.subprocess
def test_cli_subprocess_exit_code(model, tmp_path):
    src, _ = model
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(src.read_bytes()[:50])
    p = subprocess.run([sys.executable, "-m", "iqkt.cli", "quantize", str(bad), str(tmp_path / "o.gguf"),
                        "--type", "iq4_kt"], capture_output=True, text=True, timeout=120,
                       env=child_env(), cwd=iqkt_parent())
    assert p.returncode == 1
    assert p.stderr.startswith("iqkt: error:") and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def _cli_child(args, **popen_kw):
    return subprocess.run([sys.executable, "-m", "iqkt.cli", *args], capture_output=True, text=True,
                          timeout=120, env=child_env(), cwd=iqkt_parent(), **popen_kw)


def _assert_one_line_error(p, *words):
    """Exit code != 0, no traceback, exactly one error line (warnings and info
    lines may come before it), naming the given words."""
    assert p.returncode != 0
    assert "Traceback" not in p.stderr, p.stderr
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("iqkt: error:")]
    assert len(errors) == 1 and p.stderr.strip().splitlines()[-1] == errors[0], p.stderr
    for w in words:
        assert w in errors[0], errors[0]


@pytest.mark.subprocess
def test_cli_missing_output_folder(model, tmp_path):
    src, _ = model
    out = tmp_path / "no" / "such" / "folder" / "o.gguf"
    p = _cli_child(["quantize", str(src), str(out), "--type", "q8_0"])
    _assert_one_line_error(p, "folder")
    assert not out.parent.exists()


@pytest.mark.subprocess
@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin", reason="needs RLIMIT_FSIZE")
def test_cli_full_disk_leaves_no_partial_output(model, tmp_path):
    """A file-size limit stands in for a full disk: writes fail with EFBIG."""
    import resource
    import signal

    src, _ = model
    out = tmp_path / "out" / "o.gguf"
    out.parent.mkdir()

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # get EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    for args in (["quantize", str(src), str(out), "--type", "iq4_kt", "--allow-requantize"],
                 ["dequantize", str(src), str(out), "--type", "f32"]):
        p = _cli_child(args, preexec_fn=limit)
        _assert_one_line_error(p, "cannot write", str(out))
        assert list(out.parent.iterdir()) == [], "partial or temporary output left behind"
