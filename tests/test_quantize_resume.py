"""Resumable quantization (OUT.part + OUT.part.journal) and split models (--keep-split)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

import iqkt.gguf as ig  # noqa: E402
from conftest import child_env, iqkt_parent  # noqa: E402
from test_gguf import make_model, parse_gguf, stored  # noqa: E402
from test_quantize_options import model, quant  # noqa: E402,F401  (fixture and helper shared)

EXIT_AFTER = "IQKT_TEST_EXIT_AFTER_TENSORS"


def cli_child(args, **env):
    return subprocess.run([sys.executable, "-m", "iqkt.cli", "quantize", *map(str, args), "--no-progress",
                           "--allow-requantize"], capture_output=True, text=True, timeout=120,
                          env=child_env(**env), cwd=iqkt_parent())


def journal_names(dst):
    with open(str(dst) + ".part.journal") as f:
        f.readline()
        return [json.loads(line)["name"] for line in f]


@pytest.mark.subprocess
def test_killed_run_resumes_with_identical_bytes(model, tmp_path):
    src, _ = model
    ref, out = tmp_path / "ref.gguf", tmp_path / "out.gguf"
    args = ["--output-tensor-type", "q6_k", "--token-embedding-type", "q8_0"]
    quant(src, ref, "iq4_kt", output_tensor_type="q6_k", token_embedding_type="q8_0")
    p = cli_child([src, out, "iq4_kt", *args], **{EXIT_AFTER: "4"})
    assert p.returncode == 75, p.stderr       # the hook's exit, as a kill mid-run
    assert not out.exists()
    done = journal_names(out)
    assert len(done) == 4
    p = cli_child([src, out, "iq4_kt", *args])
    assert p.returncode == 0, p.stderr
    assert "resuming" in p.stderr and "4 of 9 tensors" in p.stderr
    assert out.read_bytes() == ref.read_bytes()
    assert not os.path.exists(str(out) + ".part") and not os.path.exists(str(out) + ".part.journal")


def test_resume_verifies_checksums_and_plan(model, tmp_path, monkeypatch):
    src, _ = model
    ref, out = tmp_path / "ref.gguf", tmp_path / "out.gguf"
    quant(src, ref, "iq4_kt")
    monkeypatch.setenv(EXIT_AFTER, "5")
    monkeypatch.setattr(ig.os, "_exit", lambda code: (_ for _ in ()).throw(SystemExit(code)))
    with pytest.raises(SystemExit):
        quant(src, out, "iq4_kt")
    monkeypatch.delenv(EXIT_AFTER)
    names = journal_names(out)
    # damage one finished tensor in the .part: the resume must redo it, not trust the journal
    _, infos, _ = parse_gguf(ref)
    victim = next(n for n in names if infos[n]["type"] == 155)
    with open(str(out) + ".part", "r+b") as f:
        f.seek(infos[victim]["offset"] + 10)
        b = f.read(1)
        f.seek(infos[victim]["offset"] + 10)
        f.write(bytes([b[0] ^ 0xFF]))
    rep = quant(src, out, "iq4_kt")
    resumed = {t.name for t in rep.tensors if "resumed" in t.note}
    assert resumed == set(names) - {victim}
    assert out.read_bytes() == ref.read_bytes()
    # a journal of a different plan (another type) is not reused
    out2 = tmp_path / "o2.gguf"
    monkeypatch.setenv(EXIT_AFTER, "5")
    with pytest.raises(SystemExit):
        quant(src, out2, "iq3_kt")
    monkeypatch.delenv(EXIT_AFTER)
    rep = quant(src, out2, "iq4_kt")
    assert not any("resumed" in t.note for t in rep.tensors)
    assert out2.read_bytes() == ref.read_bytes()
    # nor one of the same types at another effort level
    out3 = tmp_path / "o3.gguf"
    monkeypatch.setenv(EXIT_AFTER, "5")
    with pytest.raises(SystemExit):
        quant(src, out3, "iq4_kt", effort="fast")
    monkeypatch.delenv(EXIT_AFTER)
    rep = quant(src, out3, "iq4_kt")
    assert not any("resumed" in t.note for t in rep.tensors)
    assert out3.read_bytes() == ref.read_bytes()


def test_second_run_on_the_same_output_is_refused(model, tmp_path):
    fcntl = pytest.importorskip("fcntl")
    src, _ = model
    out = tmp_path / "o.gguf"
    fd = os.open(str(out) + ".part", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(RuntimeError, match="another run is writing"):
            quant(src, out, "q8_0")
    finally:
        os.close(fd)
    quant(src, out, "q8_0")
    assert out.exists()


def _split_model(tmp_path, max_tensors=3):
    """The test_gguf fixture model written whole and as shards by the gguf package's writer."""
    whole = tmp_path / "whole.gguf"
    ref = make_model(whole, np.random.default_rng(1))
    r = gguf.GGUFReader(str(whole))
    w = gguf.GGUFWriter(str(tmp_path / "split.gguf"), "llama", split_max_tensors=max_tensors)
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        vt = f.types[0]
        if vt == gguf.GGUFValueType.ARRAY:
            w.add_key_value(key, f.contents(), vt, sub_type=f.types[1])
        else:
            w.add_key_value(key, f.contents(), vt)
    for t in r.tensors:
        w.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    shards = sorted(p for p in os.listdir(tmp_path) if p.startswith("split-"))
    return whole, [tmp_path / p for p in shards], ref


def test_split_input_merged_or_kept(tmp_path):
    whole, shards, _ = _split_model(tmp_path)
    assert len(shards) == 3 and shards[0].name == "split-00001-of-00003.gguf"
    # merged: the same file as from the unsplit model
    quant(whole, tmp_path / "from_whole.gguf", "q4_k")
    quant(shards[0], tmp_path / "merged.gguf", "q4_k")
    assert (tmp_path / "merged.gguf").read_bytes() == (tmp_path / "from_whole.gguf").read_bytes()
    # --keep-split: the same shards, loadable by the stock reader, the same tensor bytes
    rep = quant(shards[0], tmp_path / "out.gguf", "q4_k", keep_split=True)
    outs = [tmp_path / f"out-{i:05d}-of-00003.gguf" for i in (1, 2, 3)]
    assert rep.outputs == [str(p) for p in outs] and all(p.exists() for p in outs)
    _, minfos, mbuf = parse_gguf(tmp_path / "merged.gguf")
    seen = []
    for i, (src_shard, out_shard) in enumerate(zip(shards, outs)):
        meta, infos, buf = parse_gguf(out_shard)
        _, src_infos, _ = parse_gguf(src_shard)
        assert list(infos) == list(src_infos)
        assert meta["split.no"] == i and meta["split.count"] == 3 and meta["split.tensors.count"] == 9
        assert ("general.file_type" in meta) == (i == 0)
        r = gguf.GGUFReader(str(out_shard))
        assert [t.name for t in r.tensors] == list(infos)
        for name, info in infos.items():
            tn = ig.type_name(info["type"])
            np.testing.assert_array_equal(stored(buf, info, tn), stored(mbuf, minfos[name], tn))
            seen.append(name)
    assert sorted(seen) == sorted(minfos)
    info = ig.model_info(outs[0])  # iqkt info on the first shard: the whole model
    assert info.shards == 3 and len(info.tensors) == 9 and "in 3 shards" in ig.format_info(info)
    # and iqkt reads the quantized shards back as one model
    rep2 = quant(outs[0], tmp_path / "again.gguf", "q4_k")
    assert all("already this type" in t.note for t in rep2.tensors if t.out_type == "q4_k")
