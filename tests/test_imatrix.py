"""iqkt.imatrix: the legacy .dat and GGUF imatrix readers. The test files are written byte by byte
here (struct), independently of the writer under test."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from iqkt.imatrix import ImatrixError, load_imatrix, write_legacy_imatrix


def legacy_bytes(entries, trailer=None):
    """entries: [(name, ncall, values)]"""
    b = struct.pack("<i", len(entries))
    for name, ncall, v in entries:
        nb = name.encode()
        v = np.asarray(v, "<f4")
        b += struct.pack("<i", len(nb)) + nb + struct.pack("<ii", ncall, v.size) + v.tobytes()
    if trailer is not None:
        chunk, ds = trailer
        b += struct.pack("<ii", chunk, len(ds)) + ds.encode()
    return b


def test_legacy_reader_divides_by_ncall(tmp_path):
    p = tmp_path / "im.dat"
    p.write_bytes(legacy_bytes([("a.weight", 4, [4.0, 8.0, 0.0]), ("b.weight", 0, [1.5, 2.5])],
                               trailer=(123, "wiki.train")))
    im = load_imatrix(p)
    assert im.format == "legacy" and len(im) == 2
    np.testing.assert_array_equal(im.entries["a.weight"], [1.0, 2.0, 0.0])
    np.testing.assert_array_equal(im.entries["b.weight"], [1.5, 2.5])  # ncall 0: no division
    assert im.chunks == 123 and im.datasets == ["wiki.train"]
    assert im.for_tensor("a.weight", (7, 3)).shape == (1, 3)
    assert im.for_tensor("missing", (7, 3)) is None


def test_legacy_writer_round_trip_and_experts(tmp_path):
    p = tmp_path / "im.dat"
    v = np.arange(12, dtype=np.float32)
    write_legacy_imatrix(p, {"x.weight": v}, ncall=3, dataset="d")
    im = load_imatrix(p)
    np.testing.assert_allclose(im.entries["x.weight"], v, rtol=1e-6)
    per_expert = im.for_tensor("x.weight", (3, 5, 4))  # 3 experts x 4 columns
    np.testing.assert_allclose(per_expert, v.reshape(3, 4), rtol=1e-6)
    with pytest.raises(ImatrixError, match=r"12 values.*needs 2 experts x 4 columns = 8"):
        im.for_tensor("x.weight", (2, 5, 4))
    with pytest.raises(ImatrixError, match=r"needs 5 columns"):
        im.for_tensor("x.weight", (9, 5))


@pytest.mark.parametrize("kind", ["short", "count", "namelen", "truncated", "nval", "trailing", "nan",
                                  "negative", "dup", "utf8"])
def test_legacy_corrupt(tmp_path, kind):
    good = legacy_bytes([("a.weight", 1, [1.0, 2.0])])
    data = {
        "short": b"\x01\x00",
        "count": struct.pack("<i", 1000) + good[4:],
        "namelen": struct.pack("<i", 1) + struct.pack("<i", -5) + good[8:],
        "truncated": good[:-3],
        "nval": legacy_bytes([("a.weight", 1, [])]),
        "trailing": good + struct.pack("<ii", 1, 50) + b"xx",
        "nan": legacy_bytes([("a.weight", 1, [1.0, float("nan")])]),
        "negative": legacy_bytes([("a.weight", 1, [1.0, -2.0])]),
        "dup": legacy_bytes([("a.weight", 1, [1.0]), ("a.weight", 1, [1.0])]),
        "utf8": struct.pack("<i", 1) + struct.pack("<i", 2) + b"\xff\xfe" + struct.pack("<ii", 1, 1) + b"\0\0\0\0",
    }[kind]
    p = tmp_path / "bad.dat"
    p.write_bytes(data)
    with pytest.raises(ImatrixError) as ei:
        load_imatrix(p)
    assert str(p) in str(ei.value) and "\n" not in str(ei.value)


def _write_gguf_imatrix(path, entries, counts_shape_ok=True):
    gguf = pytest.importorskip("gguf")
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_string("general.type", "imatrix")
    w.add_array("imatrix.datasets", ["calib.txt"])
    w.add_uint32("imatrix.chunk_count", 42)
    for name, (s, c) in entries.items():
        w.add_tensor(name + ".in_sum2", np.asarray(s, np.float32))
        if c is not None:
            w.add_tensor(name + ".counts", np.asarray(c, np.float32).reshape(-1, 1))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gguf_reader(tmp_path):
    p = tmp_path / "im.gguf"
    sums = np.array([[2.0, 4.0, 6.0], [9.0, 9.0, 9.0], [5.0, 5.0, 5.0]])
    _write_gguf_imatrix(p, {"blk.0.ffn_up_exps.weight": (sums, [2, 3, 0]),
                            "blk.0.attn_q.weight": ([[10.0, 20.0]], [10])})
    im = load_imatrix(p)
    assert im.format == "gguf" and im.datasets == ["calib.txt"] and im.chunks == 42
    e = im.for_tensor("blk.0.ffn_up_exps.weight", (3, 8, 3))
    np.testing.assert_array_equal(e, [[1, 2, 3], [3, 3, 3], [1, 1, 1]])  # count 0 -> uniform 1
    np.testing.assert_array_equal(im.for_tensor("blk.0.attn_q.weight", (4, 2)), [[1.0, 2.0]])


def test_gguf_reader_errors(tmp_path):
    p = tmp_path / "a.gguf"
    _write_gguf_imatrix(p, {"t.weight": ([[1.0, 2.0]], None)})
    with pytest.raises(ImatrixError, match="no matching t.weight.counts"):
        load_imatrix(p)
    p = tmp_path / "b.gguf"
    _write_gguf_imatrix(p, {"t.weight": ([[1.0, 2.0], [1.0, 2.0]], [1.0])})
    with pytest.raises(ImatrixError, match="one count per expert"):
        load_imatrix(p)
    p = tmp_path / "c.gguf"
    _write_gguf_imatrix(p, {"t.weight": ([[1.0, 2.0]], [-1.0])})
    with pytest.raises(ImatrixError, match="negative"):
        load_imatrix(p)
    p = tmp_path / "d.gguf"
    _write_gguf_imatrix(p, {})
    with pytest.raises(ImatrixError, match="no '<tensor>.in_sum2' tensors"):
        load_imatrix(p)
    p = tmp_path / "e.gguf"
    p.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 10)
    with pytest.raises(ImatrixError, match="not a valid GGUF imatrix"):
        load_imatrix(p)
