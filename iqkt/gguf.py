"""GGUF models: quantize to IQ1_KT / IQ2_KT / IQ3_KT / IQ4_KT (and the K-quants, IQ4_NL/IQ4_XS and the
gguf package's types around them), inspect, and dequantize.

Needs the PyPI ``gguf`` package (from an iqkt checkout: ``pip install '.[gguf]'``; or
``pip install gguf tqdm`` next to an installed iqkt). Note the name: this module is
``iqkt.gguf``; ``import gguf`` below is the PyPI package (absolute import).

Python API: `quantize_model`, `dequantize_model`, `model_info` (+ `format_info`), `open_gguf`.
The ``iqkt quantize / info / dequantize`` commands are thin wrappers around them.

How KT tensors fit into the gguf package (the one place that extends it)
-----------------------------------------------------------------------
gguf knows a tensor type through ``GGMLQuantizationType`` (a closed IntEnum) and
``GGML_QUANT_SIZES`` (block size, bytes per block). Neither can describe the KT types: their ids
(153-155, ik_llama.cpp) are not enum members, and a KT row is ``4 + blocks * type_size`` bytes (a
float32 row scale precedes the blocks), which no (block size, type size) pair expresses. So we do not
patch those tables. Instead:
- reading: `KTGGUFReader` subclasses ``gguf.GGUFReader`` and overrides only ``_build_tensors``:
  tensor-info records with a KT id become ``ReaderTensor`` entries whose ``tensor_type`` is the plain
  int id and whose ``data`` is a memory-mapped uint8 array (..., rows, row_size); all other records
  go through the package's own code unchanged.
- writing: ``GGUFWriter.add_tensor_info`` already writes any integer type id and any byte count; it
  only converts the shape when told the data is bytes (dtype uint8), and that conversion needs
  GGML_QUANT_SIZES. `_add_tensor_info` therefore passes the element shape with a non-uint8 dtype
  marker and the exact byte count. The writer produces the header bytes (metadata, tensor infos);
  the tensor data is written by `_Journal` at the offsets the writer's layout implies (aligned,
  zero padding), which is what makes runs resumable and lets Ray results land in any order.
Everything else (metadata, alignment, other types, quants for q8_0 etc.) is gguf's; the K-quants
and IQ4_NL/IQ4_XS, which gguf decodes but cannot encode, come from `iqkt.kquants`.

Memory: the input is memory-mapped and processed tensor by tensor in chunks of rows; the largest
allocation is one output tensor plus one float32 chunk, so models larger than RAM work.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

import gguf  # the PyPI package, not this module
from gguf import GGMLQuantizationType as _GT

from . import _api
from . import kquants as _kq
from .imatrix import Imatrix, ImatrixError, load_imatrix

__all__ = [
    "GGUFFormatError", "KTGGUFReader", "open_gguf", "quantize_model", "dequantize_model",
    "model_info", "format_info", "ModelInfo", "QuantizeReport", "TensorReport", "parse_custom_q",
    "OUTPUT_TYPES", "MIXES", "TENSOR_CLASSES", "parse_override_kv",
]

log = logging.getLogger("iqkt.gguf")

KT_TYPES = _api.TYPES
_KT_BY_ID = {tid: name for name, tid in _api.GGML_TYPE_IDS.items()}
_KT_FILE_TYPE_NAMES = {fid: f"MOSTLY_{name.upper()}" for name, fid in _api.GGUF_FILE_TYPE_IDS.items()}
# Output types: the KT types, the K-quants and IQ4_NL/IQ4_XS (iqkt.kquants), and those the gguf
# package can write (its numpy quantizers).
_GGUF_OUT_TYPES = ("f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0")
OUTPUT_TYPES = KT_TYPES + _kq.TYPES + _GGUF_OUT_TYPES
_IMATRIX_TYPES = KT_TYPES + _kq.TYPES  # types whose quantizer uses an imatrix
_FLOAT_OUT_TYPES = ("f16", "bf16", "f32")
_NON_WEIGHT_TYPES = {_GT.I8, _GT.I16, _GT.I32, _GT.I64}
QUANTIZATION_VERSION = 2
# Rows are converted in chunks of about this many weights (32 MiB of float32).
_CHUNK_WEIGHTS = 1 << 23


class GGUFFormatError(ValueError):
    """The file is not a GGUF file iqkt can read (corrupt, truncated, unknown tensor type)."""


# ----------------------------------------------------------------------------------------------
# Type helpers
# ----------------------------------------------------------------------------------------------

def type_name(tid: int) -> str:
    """Lower-case name of a ggml type id ("q8_0", "iq4_kt", or "type<id>" when unknown)."""
    tid = int(tid)
    if tid in _KT_BY_ID:
        return _KT_BY_ID[tid]
    try:
        return _GT(tid).name.lower()
    except ValueError:
        return f"type{tid}"


def type_id(name: str) -> int:
    name = name.lower()
    if name in _api.GGML_TYPE_IDS:
        return _api.GGML_TYPE_IDS[name]
    try:
        return int(_GT[name.upper()])
    except KeyError:
        raise ValueError(f"unknown tensor type {name!r}") from None


def _block_size(name: str) -> int:
    if name in KT_TYPES:
        return _api.BLOCK
    return gguf.GGML_QUANT_SIZES[_GT[name.upper()]][0]


def _tensor_nbytes(tid: int, shape: Sequence[int]) -> int:
    """Bytes of a tensor of ggml type `tid` and numpy shape `shape` (last axis = row)."""
    n = int(shape[-1])
    rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
    if tid in _KT_BY_ID:
        return rows * _api.row_size(_KT_BY_ID[tid], n)
    bs, ts = gguf.GGML_QUANT_SIZES[_GT(tid)]
    return rows * (n // bs) * ts


def _add_tensor_info(writer: "gguf.GGUFWriter", name: str, shape: Sequence[int], tid: int, nbytes: int):
    """Declare a tensor of any type id, KT included, with its numpy (element) shape.

    GGUFWriter converts the shape from bytes to elements only when the dtype is uint8, through
    GGML_QUANT_SIZES (which cannot describe KT rows); any other dtype means "shape is in elements",
    and the type id and byte count are written as given."""
    raw = _GT(tid) if tid not in _KT_BY_ID else tid
    writer.add_tensor_info(name, tuple(int(s) for s in shape), np.dtype(np.float32), int(nbytes), raw_dtype=raw)


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------

class KTGGUFReader(gguf.GGUFReader):
    """``gguf.GGUFReader`` that also maps KT tensors (IQ2_KT/IQ3_KT/IQ4_KT/IQ1_KT: ids 153/154/155/158,
    from the type table).

    KT tensors get ``tensor_type`` = the int id and ``data`` = uint8 (..., rows, row_size) over
    the memory map. Tensor data running past the end of the file (truncation) is a clear error."""

    def _get(self, offset, dtype, count=1, override_order=None):
        # Speed only: every slice of an np.memmap builds a new memmap object, which makes parsing
        # a 150k-entry vocabulary take seconds. A plain ndarray view of the same mapping slices
        # the same bytes (still lazily paged in) several times faster.
        if isinstance(self.data, np.memmap):
            self._mmap = self.data
            self.data = self.data.view(np.ndarray)
        return super()._get(offset, dtype, count, override_order)

    def _build_tensors(self, start_offs: int, fields) -> None:
        known, kt = [], []
        file_size = len(self.data)
        for f in fields:
            # parts: name length, name, n_dims, dims, type id, offset (see GGUFReader)
            tid = int(f.parts[4][0])
            dims = [int(d) for d in f.parts[3]]
            if tid not in _KT_BY_ID:
                try:
                    gt = _GT(tid)
                except ValueError:
                    raise GGUFFormatError(f"tensor {f.name!r} has ggml type id {tid}, which neither the gguf "
                                          f"package nor iqkt knows") from None
                shape = tuple(reversed(dims)) or (1,)
                bs, _ = gguf.GGML_QUANT_SIZES[gt]
                if shape[-1] % bs:
                    raise GGUFFormatError(f"tensor {f.name!r}: row length {shape[-1]} is not a multiple of "
                                          f"the {gt.name} block size {bs}")
            else:
                shape = tuple(reversed(dims)) or (1,)
                if shape[-1] <= 0 or shape[-1] % _api.BLOCK:
                    raise GGUFFormatError(f"tensor {f.name!r}: {_KT_BY_ID[tid]} row length {shape[-1]} is not "
                                          f"a positive multiple of {_api.BLOCK}")
            end = start_offs + int(f.parts[5][0]) + _tensor_nbytes(tid, shape)
            if end > file_size:
                raise GGUFFormatError(f"truncated file: tensor {f.name!r} ends at byte {end}, but the file has "
                                      f"{file_size} bytes")
            (kt if tid in _KT_BY_ID else known).append(f)
        super()._build_tensors(start_offs, known)
        if not kt:
            return
        names = {t.name for t in self.tensors}
        extra = []
        for f in kt:
            if f.name in names:
                raise GGUFFormatError(f"duplicated tensor name {f.name!r}")
            names.add(f.name)
            dims = f.parts[3]
            tid = int(f.parts[4][0])
            shape = tuple(reversed([int(d) for d in dims]))
            rs = _api.row_size(_KT_BY_ID[tid], shape[-1])
            nbytes = _tensor_nbytes(tid, shape)
            offs = int(start_offs + f.parts[5][0])
            data = self._get(offs, np.uint8, nbytes).reshape(*shape[:-1], rs)
            extra.append(gguf.ReaderTensor(name=f.name, tensor_type=tid, shape=dims,
                                           n_elements=int(np.prod(shape)), n_bytes=nbytes,
                                           data_offset=offs, data=data, field=f))
        self.tensors = sorted(list(self.tensors) + extra, key=lambda t: t.field.offset)


def open_gguf(path: str | os.PathLike) -> KTGGUFReader:
    """Open a GGUF file read-only (memory-mapped); raises GGUFFormatError with a one-line reason."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    if os.path.getsize(path) < 24:
        raise GGUFFormatError(f"{path}: not a GGUF file (only {os.path.getsize(path)} bytes)")
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise GGUFFormatError(f"{path}: not a GGUF file (bad magic)")
    try:
        r = KTGGUFReader(path, "r")
    except GGUFFormatError as e:
        raise GGUFFormatError(f"{path}: {e}") from None
    except Exception as e:  # the reader fails in many ways on corrupt headers
        raise GGUFFormatError(f"{path}: corrupt or truncated GGUF file ({type(e).__name__}: {e})") from None
    if r.byte_order != "I":
        raise GGUFFormatError(f"{path}: big-endian GGUF files are not supported")
    r.source_path = path
    return r


def _check_not_split(r, path: str) -> None:
    """For readers of one file only (iqkt.eval): a shard of a split model is an error."""
    n = _field_int(r, gguf.Keys.Split.LLM_KV_SPLIT_COUNT)
    if n is not None and n > 1:
        raise GGUFFormatError(f"{path} is one shard of a model split into {n} files, which this command does "
                              f"not read yet; merge the shards first (iqkt quantize IN OUT f32 --allow-requantize "
                              f"reads them all, or llama-gguf-split --merge)")


_SPLIT_RX = re.compile(r"^(?P<prefix>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


def shard_paths(path: str, count: int) -> list[str]:
    """Paths of the `count` shards of a split model named like the gguf package's writer does
    (``PREFIX-00001-of-00003.gguf``); `path` is the model path without the shard suffix."""
    p = Path(path)
    stem = p.name[:-5] if p.name.endswith(".gguf") else p.name
    return [str(p.with_name(gguf.SHARD_NAME_FORMAT.format(stem, i + 1, count))) for i in range(count)]


def open_inputs(src: str) -> list[KTGGUFReader]:
    """The readers of a model: [src], or all shards of a split model whose first shard is `src`
    (``general``-style ``split.count`` / ``split.no`` keys, files named PREFIX-0000i-of-0000N.gguf)."""
    r = open_gguf(src)
    n = _field_int(r, gguf.Keys.Split.LLM_KV_SPLIT_COUNT)
    if n is None or n <= 1:
        return [r]
    no = _field_int(r, gguf.Keys.Split.LLM_KV_SPLIT_NO) or 0
    m = _SPLIT_RX.match(os.path.basename(src))
    if m is None or no != 0 or int(m.group("no")) != 1:
        raise GGUFFormatError(f"{src} is shard {no + 1} of a model split into {n} files; give the first shard, "
                              f"named like PREFIX-00001-of-{n:05d}.gguf")
    prefix = os.path.join(os.path.dirname(src), m.group("prefix"))
    paths = shard_paths(prefix + ".gguf", n)
    readers = [r]
    for i, p in enumerate(paths[1:], start=1):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"{src} is the first of {n} shards, but shard {i + 1} ({p}) does not exist")
        ri = open_gguf(p)
        if _field_int(ri, gguf.Keys.Split.LLM_KV_SPLIT_NO) != i or \
                _field_int(ri, gguf.Keys.Split.LLM_KV_SPLIT_COUNT) != n:
            raise GGUFFormatError(f"{p}: its split.no / split.count keys do not say shard {i + 1} of {n}")
        readers.append(ri)
    total = _field_int(r, gguf.Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT)
    have = sum(len(x.tensors) for x in readers)
    if total is not None and total != have:
        raise GGUFFormatError(f"{src}: split.tensors.count says {total} tensors, the {n} shards hold {have}")
    return readers


def _np_shape(t) -> tuple[int, ...]:
    return tuple(reversed([int(d) for d in t.shape])) or (1,)


def _raw_rows(t) -> np.ndarray:
    """The tensor's bytes as a uint8 (rows, bytes_per_row) view of the memory map."""
    a = t.data
    if a.dtype != np.uint8:
        a = a.view(np.uint8)
    return a.reshape(-1, a.shape[-1])


def _decode_rows(tid: int, raw: np.ndarray, n: int) -> np.ndarray:
    """float32 (rows, n) from raw bytes of type `tid`. KT tensors give inference values (IQ2_KT's
    1.05 included): those are the weights the model computes with."""
    if tid in _KT_BY_ID:
        return _api.dequantize(raw, _KT_BY_ID[tid], n, inference=True)
    gt = _GT(tid)
    raw = np.ascontiguousarray(raw)
    if gt == _GT.F32:
        return raw.view(np.float32).reshape(-1, n)
    if gt == _GT.F64:
        return raw.view(np.float64).astype(np.float32).reshape(-1, n)
    if gt == _GT.F16:
        return raw.view(np.float16).astype(np.float32).reshape(-1, n)
    try:
        return np.asarray(gguf.quants.dequantize(raw, gt), dtype=np.float32).reshape(-1, n)
    except NotImplementedError:
        raise ValueError(f"the gguf package cannot dequantize {gt.name} tensors") from None


def _weighted_sq_sum(a: np.ndarray, w: np.ndarray | None) -> float:
    """sum over rows and columns of w[col] * a^2, accumulated in float64 column sums."""
    col = np.square(a).sum(axis=0, dtype=np.float64)
    return float(col @ w if w is not None else col.sum())


def _encode_rows(out_type: str, x: np.ndarray, im: np.ndarray | None, threads: int | None,
                 hessian: np.ndarray | None = None, effort: str = "default"):
    """Encode float32 rows (rows, n) as `out_type`. Returns (bytes (rows, row_bytes), err_num, den):
    err_num / den is the relative squared error of the rows, imatrix-weighted when `im` is given.
    hessian: the inputs' second-moment matrix (n x n): KT rows then get LDLQ error feedback.
    effort: the KT quantizer's effort level (iqkt.EFFORTS); other types ignore it."""
    w = None if im is None else im.astype(np.float64)
    den = _weighted_sq_sum(x, w)
    if out_type in KT_TYPES and hessian is not None:
        from .ldlq import quantize_ldlq

        q = quantize_ldlq(x, out_type, hessian, threads=threads, effort=effort)
    elif out_type in KT_TYPES:
        q, st = _api.quantize(x, out_type, im, threads=threads, return_stats=True, effort=effort)
        return q, float(st["rel_err_total"]) * den, den
    elif out_type in _kq.TYPES:
        q = _kq.quantize(x, out_type, im, threads=threads)
    elif out_type == "f32":
        return np.ascontiguousarray(x, dtype=np.float32).view(np.uint8), 0.0, den
    elif out_type == "f16":
        q = x.astype(np.float16).view(np.uint8)
    else:
        q = np.asarray(gguf.quants.quantize(x, _GT[out_type.upper()]), dtype=np.uint8)
    y = _decode_rows(type_id(out_type), q, x.shape[1])
    return q, _weighted_sq_sum(y - x, w), den


# ----------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------

def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


def _fmt_shape(shape: Sequence[int]) -> str:
    # ggml order (ne0 = row length first), as llama.cpp tools print it
    return "x".join(str(s) for s in reversed(shape))


@dataclass
class TensorReport:
    name: str
    shape: tuple[int, ...]  # numpy order
    src_type: str
    out_type: str
    n_elements: int
    nbytes: int
    rel_err: float | None = None  # relative squared error (imatrix-weighted when one was used)
    seconds: float = 0.0
    note: str = ""

    @property
    def bpw(self) -> float:
        return 8.0 * self.nbytes / self.n_elements if self.n_elements else 0.0


@dataclass
class QuantizeReport:
    src: str
    dst: str
    tensors: list[TensorReport] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    src_bytes: int = 0
    seconds: float = 0.0
    file_type: int | None = None
    outputs: list[str] = field(default_factory=list)  # the files written (several with keep_split)

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def total_weights(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def bpw(self) -> float:
        return 8.0 * self.total_bytes / max(1, self.total_weights)

    def by_type(self) -> dict[str, dict]:
        """Per output type: tensors, weights, bytes, seconds, bpw, weighted relative error."""
        out: dict[str, dict] = {}
        for t in self.tensors:
            d = out.setdefault(t.out_type, {"tensors": 0, "weights": 0, "bytes": 0, "seconds": 0.0,
                                            "_err": 0.0, "_errw": 0})
            d["tensors"] += 1
            d["weights"] += t.n_elements
            d["bytes"] += t.nbytes
            d["seconds"] += t.seconds
            if t.rel_err is not None:
                d["_err"] += t.rel_err * t.n_elements
                d["_errw"] += t.n_elements
        for d in out.values():
            d["bpw"] = 8.0 * d["bytes"] / max(1, d["weights"])
            d["rel_err"] = d.pop("_err") / d["_errw"] if d["_errw"] else None
            d.pop("_errw")
        return out

    def format_table(self, tensors: bool = True) -> str:
        lines = []
        if tensors:
            w = max([len(t.name) for t in self.tensors] + [6])
            hdr = f"{'tensor':{w}s} {'shape':>16s} {'from':>7s} {'type':>7s} {'size':>11s} {'bpw':>6s} " \
                  f"{'rel.err':>9s} {'time s':>7s}  note"
            lines += [hdr, "-" * len(hdr)]
            for t in self.tensors:
                err = "" if t.rel_err is None else f"{t.rel_err:9.2e}"
                lines.append(f"{t.name:{w}s} {_fmt_shape(t.shape):>16s} {t.src_type:>7s} {t.out_type:>7s} "
                             f"{_fmt_bytes(t.nbytes):>11s} {t.bpw:6.3f} {err:>9s} {t.seconds:7.2f}  {t.note}")
            lines.append("")
        hdr = f"{'type':7s} {'tensors':>7s} {'weights':>12s} {'size':>11s} {'bpw':>6s} {'rel.err':>9s} {'time s':>8s}"
        lines += [hdr, "-" * len(hdr)]
        for name, d in sorted(self.by_type().items(), key=lambda kv: -kv[1]["weights"]):
            err = "" if d["rel_err"] is None else f"{d['rel_err']:9.2e}"
            lines.append(f"{name:7s} {d['tensors']:7d} {d['weights']:12,d} {_fmt_bytes(d['bytes']):>11s} "
                         f"{d['bpw']:6.3f} {err:>9s} {d['seconds']:8.2f}")
        lines.append("-" * len(hdr))
        lines.append(f"{'total':7s} {len(self.tensors):7d} {self.total_weights:12,d} "
                     f"{_fmt_bytes(self.total_bytes):>11s} {self.bpw:6.3f} {'':>9s} {self.seconds:8.2f}")
        if self.src_bytes:
            lines.append(f"input tensor data {_fmt_bytes(self.src_bytes)} -> output {_fmt_bytes(self.total_bytes)} "
                         f"({self.total_bytes / self.src_bytes:.3f}x), wall time {self.seconds:.1f} s")
        lines.append("rel.err: relative squared error of the written weights against the input weights "
                     "(imatrix-weighted where an imatrix entry was used); rel.err per type is weight-averaged.")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Planning
# ----------------------------------------------------------------------------------------------

@dataclass
class _Plan:
    tensor: object  # ReaderTensor
    name: str
    shape: tuple[int, ...]
    src_tid: int
    out_type: str  # output type name, or "keep" (copy the bytes unchanged)
    note: str = ""
    imatrix: np.ndarray | None = None  # (groups, n)
    hessian: object | None = None      # (npz file, key): input second moments for LDLQ (2-D KT tensors)
    effort: str = "default"            # the KT quantizer's effort level (iqkt.EFFORTS)

    @property
    def out_tid(self) -> int:
        return self.src_tid if self.out_type == "keep" else type_id(self.out_type)

    @property
    def out_type_name(self) -> str:
        return type_name(self.out_tid)

    @property
    def out_nbytes(self) -> int:
        if self.out_type == "keep":
            return int(self.tensor.n_bytes)
        return _tensor_nbytes(self.out_tid, self.shape)


def _check_type(t: str, what: str, allow_keep: bool = False, allow_mix: bool = False,
                allow_auto: bool = False) -> str:
    if not isinstance(t, str):
        raise TypeError(f"{what} must be a type name string, not {t!r}")
    t = t.strip().lower()
    allowed = OUTPUT_TYPES + (("keep",) if allow_keep else ()) + (MIXES if allow_mix else ()) + \
        (("auto",) if allow_auto else ())
    if t not in allowed:
        raise ValueError(f"{what}: unknown or unsupported type {t!r}; expected one of {', '.join(allowed)}")
    return t


def parse_custom_q(spec) -> list[tuple[re.Pattern, str]]:
    """``"REGEX=TYPE,REGEX=TYPE"`` (or a list of "REGEX=TYPE" strings / (regex, type) pairs, or a
    dict) -> [(compiled regex, type)]. Regexes are searched in tensor names; first match wins."""
    if spec is None:
        return []
    if isinstance(spec, str):
        items = [s for s in spec.split(",") if s.strip()]
    elif isinstance(spec, dict):
        items = list(spec.items())
    else:
        items = list(spec)
    rules = []
    for item in items:
        if isinstance(item, str):
            if "=" not in item:
                raise ValueError(f"--custom-q rule {item!r} must look like REGEX=TYPE")
            rx, ty = item.rsplit("=", 1)
        else:
            rx, ty = item
        rx = rx.strip()
        if not rx:
            raise ValueError(f"--custom-q rule {item!r} has an empty regex")
        try:
            pat = re.compile(rx)
        except re.error as e:
            raise ValueError(f"--custom-q rule {item!r}: bad regex ({e})") from None
        rules.append((pat, _check_type(ty, f"--custom-q rule {rx!r}", allow_keep=True)))
    return rules


def _is_float_like(tid: int) -> bool:
    return tid in _KT_BY_ID or _GT(tid) not in _NON_WEIGHT_TYPES


def _is_quantized(tid: int) -> bool:
    return tid in _KT_BY_ID or _GT(tid) not in (_GT.F32, _GT.F16, _GT.BF16, _GT.F64)


# Fallbacks for rows that do not hold whole 256-weight blocks: the 32-weight-block type nearest in
# bits per weight whose error is not above the requested type's. Measured (relative squared error,
# LLM-like 256x1536 weights): iq2_kt 0.095, iq3_kt 0.029, iq4_kt 0.0083, q4_k 0.0067, iq4_xs 0.0076;
# iq4_nl 0.0074 (4.5 bpw), q4_0 0.011, q5_0 0.0028 (5.5), q5_1 0.0018 (6.0). So every KT type and
# q2_k/q3_k/iq4_xs -> iq4_nl (the lowest-bit 32-block type), q4_k -> q5_0, q5_k -> q5_1, q6_k -> q8_0
# (the K-quant rules are llama-quantize's). A row that is not even a multiple of 32 gets f16.
_AUTO_FALLBACK = {"iq1_kt": "iq4_nl", "iq2_kt": "iq4_nl", "iq3_kt": "iq4_nl", "iq4_kt": "iq4_nl", "q2_k": "iq4_nl",
                  "q3_k": "iq4_nl", "iq4_xs": "iq4_nl", "q4_k": "q5_0", "q5_k": "q5_1", "q6_k": "q8_0"}

# Per-tensor-class options (--attn-v-type ...): a class matches blk.N.<class>.weight and the MoE
# variants <class>_exps / _shexp / _chexp.
TENSOR_CLASSES = ("attn_q", "attn_k", "attn_v", "attn_qkv", "attn_output", "ffn_gate", "ffn_down", "ffn_up")
_CLASS_RX = {c: re.compile(rf"(^|\.){c}(_exps|_shexp|_chexp)?\.weight$") for c in TENSOR_CLASSES}
_LAYER_RX = re.compile(r"^blk\.(\d+)\.")


def _more_bits(i: int, n: int) -> bool:
    """llama-quantize's "use more bits" layers: the first and last eighth, every third between."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


# llama-quantize's K mixes: a base type, output.weight in q6_k, and per class a rule
# (layer i, layers n, GQA ratio g) -> type or None (the base). Approximates the reference's rules
# for dense models (no per-architecture or per-size special cases).
_MIXES: dict[str, tuple[str, dict[str, Callable[[int, int, int], str | None]]]] = {
    "q3_k_s": ("q3_k", {"ffn_down": lambda i, n, g: "q4_k" if i < n // 8 else None}),
    "q3_k_m": ("q3_k", {"attn_v": lambda i, n, g: "q5_k" if i < 2 else "q4_k",
                        "ffn_down": lambda i, n, g: "q5_k" if i < n // 16 else ("q4_k" if _more_bits(i, n) else None),
                        "attn_output": lambda i, n, g: "q4_k"}),
    "q3_k_l": ("q3_k", {"attn_v": lambda i, n, g: "q5_k", "ffn_down": lambda i, n, g: "q5_k",
                        "attn_output": lambda i, n, g: "q5_k"}),
    "q4_k_s": ("q4_k", {"attn_v": lambda i, n, g: "q5_k" if i < 4 else None,
                        "ffn_down": lambda i, n, g: "q5_k" if i < n // 8 else None}),
    "q4_k_m": ("q4_k", {"attn_v": lambda i, n, g: "q6_k" if _more_bits(i, n) else None,
                        "ffn_down": lambda i, n, g: "q6_k" if _more_bits(i, n) else None}),
    "q5_k_s": ("q5_k", {}),
    "q5_k_m": ("q5_k", {"attn_v": lambda i, n, g: "q6_k" if _more_bits(i, n) else None,
                        "ffn_down": lambda i, n, g: "q6_k" if _more_bits(i, n) else None}),
}
MIXES = tuple(_MIXES)


@dataclass
class _Choice:
    """How quantize_model picks each tensor's type (the user's options, checked)."""
    default: str                         # a type or a mix name
    rules: list                          # --custom-q [(regex, type)]
    class_types: dict[str, str]          # --attn-v-type ... {class: type}
    output_type: str | None
    embd_type: str | None
    pure: bool
    fallback: str                        # a type, "keep" or "auto"
    leave_output: bool
    tied_output: bool = False            # no output.weight: token_embd.weight is the output
    n_layers: int = 0
    gqa: int = 1

    @property
    def base(self) -> str:
        return _MIXES[self.default][0] if self.default in _MIXES else self.default


def _class_of(name: str) -> str | None:
    for c, rx in _CLASS_RX.items():
        if rx.search(name):
            return c
    return None


def _pick_type(name: str, c: _Choice) -> tuple[str, str]:
    """(target type or "keep", why) for weight matrix `name` before the row-length check."""
    is_output = name == "output.weight" or (c.tied_output and name == "token_embd.weight")
    if name == "output.weight" and c.leave_output:
        return "keep", "--leave-output-tensor"
    if is_output and c.output_type:
        return c.output_type, "--output-tensor-type" + (" (tied embeddings)" if name != "output.weight" else "")
    if name == "token_embd.weight" and c.embd_type:
        return c.embd_type, "--token-embedding-type"
    for pat, ty in c.rules:
        if pat.search(name):
            return ty, f"--custom-q {pat.pattern}"
    cls = _class_of(name)
    if cls in c.class_types:
        return c.class_types[cls], f"--{cls.replace('_', '-')}-type"
    if not c.pure:
        if c.default in _MIXES:
            if is_output:
                return "q6_k", f"{c.default}: output in q6_k"
            rule = _MIXES[c.default][1].get(cls)
            m = _LAYER_RX.match(name)
            if rule is not None and m:
                t = rule(int(m.group(1)), max(c.n_layers, 1), c.gqa)
                if t is not None:
                    return t, f"{c.default}: {cls} of layer {m.group(1)}"
        elif c.default in KT_TYPES and name in ("output.weight", "token_embd.weight"):
            return "q8_0", "q8_0 for output/embeddings (use --pure to disable)"
    return c.base, ""


def _plan_tensor(t, c: _Choice, fallbacks: list) -> _Plan:
    name = t.name
    shape = _np_shape(t)
    tid = int(t.tensor_type)
    p = _Plan(t, name, shape, tid, "keep")
    if not _is_float_like(tid):
        p.note = "integer tensor"
        return p
    if len(shape) < 2:
        p.out_type = "keep" if tid == _GT.F32 else "f32"
        p.note = "1-D: float32"
        return p
    if not name.endswith(".weight") or "ffn_gate_inp." in name:
        # like llama-quantize: only weight matrices are quantized; MoE routers stay as they are
        p.note = "not quantized (router)" if "ffn_gate_inp." in name else "not a weight"
        return p
    target, why = _pick_type(name, c)
    if target != "keep" and shape[-1] % _block_size(target):
        fb = c.fallback
        if fb == "auto":
            fb = _AUTO_FALLBACK.get(target, "f16")
        if fb != "keep" and shape[-1] % _block_size(fb):
            fb = "f16"
        fallbacks.append((name, target, fb, shape[-1]))
        why = f"row {shape[-1]} not a multiple of {_block_size(target)}: {target} -> {fb}"
        target = fb
    if target != "keep" and type_id(target) == tid:
        target, why = "keep", (why + "; " if why else "") + "already this type"
    p.out_type, p.note = target, why
    return p


def _model_shape_facts(r, tensors) -> tuple[int, int, bool]:
    """(layers, GQA ratio, tied output) of a model, for the mixes and the output tensor rules."""
    names = {t.name for t in tensors}
    layers = [int(m.group(1)) for m in map(_LAYER_RX.match, names) if m]
    n_layers = max(layers) + 1 if layers else 0
    arch = _field_str(r, gguf.Keys.General.ARCHITECTURE) or ""
    heads = _field_int(r, f"{arch}.attention.head_count")
    kv = _field_int(r, f"{arch}.attention.head_count_kv")
    gqa = heads // kv if heads and kv else 1
    return n_layers, gqa, "output.weight" not in names and "token_embd.weight" in names


_KV_TYPES = {"int": gguf.GGUFValueType.INT32, "float": gguf.GGUFValueType.FLOAT32,
             "bool": gguf.GGUFValueType.BOOL, "str": gguf.GGUFValueType.STRING}


def parse_override_kv(items) -> dict[str, tuple[object, "gguf.GGUFValueType"]]:
    """``["KEY=TYPE:VALUE", ...]`` (TYPE: int, float, bool, str, as llama-quantize's
    --override-kv) -> {key: (value, GGUF value type)}."""
    out: dict = {}
    for item in items or ():
        key, sep, rest = str(item).partition("=")
        ty, sep2, val = rest.partition(":")
        key, ty = key.strip(), ty.strip().lower()
        if not sep or not sep2 or not key:
            raise ValueError(f"--override-kv {item!r} must look like KEY=TYPE:VALUE (TYPE: int, float, bool, str)")
        if ty not in _KV_TYPES:
            raise ValueError(f"--override-kv {item!r}: type {ty!r} is not one of int, float, bool, str")
        if key.startswith("GGUF.") or key in (gguf.Keys.General.ARCHITECTURE, gguf.Keys.General.ALIGNMENT):
            raise ValueError(f"--override-kv {item!r}: {key} cannot be overridden")
        try:
            if ty == "int":
                v = int(val, 0)
                if not -2**31 <= v < 2**31:
                    raise ValueError
            elif ty == "float":
                v = float(val)
            elif ty == "bool":
                if val.strip().lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                v = val.strip().lower() in ("true", "1")
            else:
                v = val
        except ValueError:
            raise ValueError(f"--override-kv {item!r}: {val!r} is not a valid {ty}") from None
        out[key] = (v, _KV_TYPES[ty])
    return out


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------

# Plain K types name the mix llama-quantize uses them for (its "Q4_K" is an alias of Q4_K_M).
_K_FILE_TYPES = {"q3_k": "MOSTLY_Q3_K_M", "q4_k": "MOSTLY_Q4_K_M", "q5_k": "MOSTLY_Q5_K_M"}


def _file_type_of(tid: int, fallback: int | None) -> int | None:
    """general.file_type id ("mostly <type>") for tensor type `tid`."""
    if tid in _KT_BY_ID:
        return _api.GGUF_FILE_TYPE_IDS[_KT_BY_ID[tid]]
    name = _GT(tid).name
    if name == "F32":
        return int(gguf.LlamaFileType.ALL_F32)
    try:
        return int(gguf.LlamaFileType[_K_FILE_TYPES.get(name.lower(), f"MOSTLY_{name}")])
    except KeyError:
        return fallback


def _dominant_file_type(plans: list[_Plan], fallback: int | None) -> int | None:
    """general.file_type of the type holding the most weights among the matrices (2-D and up)."""
    weights: dict[int, int] = {}
    for p in plans:
        if len(p.shape) >= 2 and p.note != "integer tensor":
            weights[p.out_tid] = weights.get(p.out_tid, 0) + int(np.prod(p.shape))
    if not weights:
        return fallback
    return _file_type_of(max(weights, key=lambda k: weights[k]), fallback)


def _field_value(f):
    """(value, type, sub_type) of a metadata field, for GGUFWriter.add_key_value. Strings are passed
    as their raw bytes so that nothing is re-encoded."""
    vt = f.types[0]
    if vt == gguf.GGUFValueType.STRING:
        return bytes(f.parts[-1]), vt, None
    if vt == gguf.GGUFValueType.ARRAY:
        if len(f.types) != 2:
            raise GGUFFormatError(f"metadata key {f.name!r}: nested or empty arrays are not supported")
        sub = f.types[1]
        if sub == gguf.GGUFValueType.STRING:
            return [bytes(f.parts[i]) for i in f.data], vt, sub
        return [f.parts[i].tolist()[0] for i in f.data], vt, sub
    return f.parts[-1].tolist()[0], vt, None


def _field_int(r, key: str) -> int | None:
    f = r.get_field(key)
    if f is None or f.types[0] == gguf.GGUFValueType.ARRAY or f.types[0] == gguf.GGUFValueType.STRING:
        return None
    return int(f.parts[-1][0])


def _field_str(r, key: str) -> str | None:
    f = r.get_field(key)
    if f is None or f.types[0] != gguf.GGUFValueType.STRING:
        return None
    return bytes(f.parts[-1]).decode("utf-8", errors="replace")


def _copy_metadata(r, w, file_type: int | None, extra: dict | None = None):
    """Copy r's metadata to w; file type and quantization version set; `extra` {key: (value, GGUF
    value type)} replaces keys in place or is appended. Stale quantize.imatrix.* and quantize.iqkt.*
    keys of a previously quantized input are dropped (the new ones, if any, are in `extra`)."""
    set_keys = {gguf.Keys.General.FILE_TYPE: file_type, gguf.Keys.General.QUANTIZATION_VERSION: QUANTIZATION_VERSION}
    extra = dict(extra or {})
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key in (gguf.Keys.General.ARCHITECTURE, gguf.Keys.General.ALIGNMENT):
            continue  # header fields, and the two keys the writer itself manages
        if key in extra:
            val, vt = extra.pop(key)
            w.add_key_value(key, val, vt)
            set_keys.pop(key, None)
            continue
        if key.startswith(("quantize.imatrix.", "quantize.iqkt.", "split.")):
            continue  # (split keys: written per output shard by _header_bytes)
        if key in set_keys and set_keys[key] is not None:
            w.add_uint32(key, set_keys.pop(key))  # replaced in place, keeping the key order
            continue
        if f.types and f.types[0] == gguf.GGUFValueType.ARRAY and len(f.data) == 0:
            log.warning(f"metadata key {key!r} is an empty array, which the gguf writer cannot write; dropped")
            continue
        val, vt, sub = _field_value(f)
        w.add_key_value(key, val, vt, sub_type=sub)
    for key, val in set_keys.items():
        if val is not None:
            w.add_uint32(key, val)
    for key, (val, vt) in extra.items():
        w.add_key_value(key, val, vt)


def _progress_bar(total: int, enabled: bool | None):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    try:
        cols, lines = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        cols = lines = 0
    # A terminal that reports a size of 0 (some ptys) would make tqdm hide the bar.
    return tqdm(total=total, unit="w", unit_scale=True, dynamic_ncols=cols > 0, ncols=None if cols > 0 else 100,
                nrows=None if lines > 0 else 24, file=sys.stderr,
                disable=(None if enabled is None else not enabled), desc="quantize",
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} weights [{elapsed}<{remaining}, {rate_fmt}{postfix}]")


def _row_chunks(p: _Plan, chunk_weights: int) -> list[tuple[int, int]]:
    """Row ranges [r0, r1) of a tensor of at most `chunk_weights` weights, each inside one imatrix
    group (expert). Rows are quantized independently, so any chunking gives the same bytes."""
    n = p.shape[-1]
    rows = int(np.prod(p.shape[:-1], dtype=np.int64)) if len(p.shape) > 1 else 1
    groups = p.imatrix.shape[0] if p.imatrix is not None else 1
    per_group = rows // groups
    chunk = max(1, chunk_weights // n)
    return [(r0, min(r0 + chunk, (g + 1) * per_group))
            for g in range(groups) for r0 in range(g * per_group, (g + 1) * per_group, chunk)]


def _convert_rows(p: _Plan, r0: int, r1: int, threads) -> tuple[np.ndarray, float, float]:
    """Output bytes (r1-r0, row bytes) of rows [r0, r1) of a tensor that is converted (not kept),
    with the error numerator and denominator of those rows."""
    n = p.shape[-1]
    raw = _raw_rows(p.tensor)
    rows = raw.shape[0]
    groups = p.imatrix.shape[0] if p.imatrix is not None else 1
    im = p.imatrix[r0 // (rows // groups)] if p.imatrix is not None else None
    x = _decode_rows(p.src_tid, raw[r0:r1], n)
    if not np.isfinite(x).all():
        raise ValueError(f"tensor {p.name!r} contains NaN or infinity (rows {r0}..{r1 - 1})")
    hess = None
    if p.hessian is not None and p.out_type in KT_TYPES:
        hess = p.hessian[0][p.hessian[1]]
    q, e_num, e_den = _encode_rows(p.out_type, x, im, threads, hess, p.effort)
    return q.reshape(r1 - r0, p.out_nbytes // rows), e_num, e_den


def _convert_tensor(p: _Plan, threads, bar) -> tuple[np.ndarray, float | None]:
    """Produce the output bytes of one tensor, chunk by chunk. Returns (uint8 array, rel_err)."""
    if p.out_type == "keep":
        if bar is not None:
            bar.update(int(np.prod(p.shape)))
        return np.asarray(p.tensor.data).reshape(-1).view(np.uint8), None
    n = p.shape[-1]
    rows = int(np.prod(p.shape[:-1], dtype=np.int64))
    out = np.empty((rows, p.out_nbytes // rows), dtype=np.uint8)
    num = den = 0.0
    for r0, r1 in _row_chunks(p, _CHUNK_WEIGHTS):
        out[r0:r1], e_num, e_den = _convert_rows(p, r0, r1, threads)
        num += e_num
        den += e_den
        if bar is not None:
            bar.update((r1 - r0) * n)
    return out.reshape(-1), (num / den if den > 0 else 0.0)


@dataclass
class _Shard:
    """One output file: its path, its tensors, and its split keys (None: not split)."""
    path: str
    plans: list
    split: tuple[int, int, int] | None = None  # (split.no, split.count, split.tensors.count)


def _header_bytes(r, shard: _Shard, arch: str, file_type, extra_kv, tmp_dir: str) -> bytes:
    """The GGUF header (magic ... tensor infos) of `shard`, as the gguf writer writes it: shard 0
    (or an unsplit file) gets all metadata, later shards only the split keys (the writer's
    convention). Written through a scratch file: the writer only writes to files."""
    w = gguf.GGUFWriter(None, arch)
    align = _field_int(r, gguf.Keys.General.ALIGNMENT)
    if align is not None and align != gguf.GGUF_DEFAULT_ALIGNMENT:
        w.add_custom_alignment(align)
    if shard.split is None or shard.split[0] == 0:
        _copy_metadata(r, w, file_type, extra_kv)
    else:
        w.kv_data[0].clear()
        if align is not None and align != gguf.GGUF_DEFAULT_ALIGNMENT:
            w.add_custom_alignment(align)
    if shard.split is not None:
        no, count, total = shard.split
        w.add_uint16(gguf.Keys.Split.LLM_KV_SPLIT_NO, no)
        w.add_uint16(gguf.Keys.Split.LLM_KV_SPLIT_COUNT, count)
        w.add_int32(gguf.Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT, total)
    for p in shard.plans:
        _add_tensor_info(w, p.name, p.shape, p.out_tid, p.out_nbytes)
    fd, scratch = tempfile.mkstemp(prefix=".iqkt-header.", dir=tmp_dir)
    os.close(fd)
    try:
        w.write_header_to_file(path=Path(scratch))
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        w.close()
        with open(scratch, "rb") as f:
            return f.read()
    finally:
        w.close()
        os.unlink(scratch)


def _pread(fd: int, n: int, offset: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(fd, n, offset)
    os.lseek(fd, offset, os.SEEK_SET)  # Windows: no pread; one thread uses fd
    return os.read(fd, n)


def _pwrite(fd: int, data, offset: int) -> int:
    if hasattr(os, "pwrite"):
        return os.pwrite(fd, data, offset)
    os.lseek(fd, offset, os.SEEK_SET)
    return os.write(fd, data)


def _pad(n: int, align: int) -> int:
    return (n + align - 1) // align * align


# Test hook: exit the process (as a kill would) after this many tensors were journaled.
_EXIT_AFTER_ENV = "IQKT_TEST_EXIT_AFTER_TENSORS"
_commits = [0]


def _count_commit() -> None:
    _commits[0] += 1
    limit = int(os.environ.get(_EXIT_AFTER_ENV, "0") or 0)
    if limit and _commits[0] >= limit:
        os._exit(75)


class _Journal:
    """Resumable output: OUT.part is written at planned offsets; OUT.part.journal lists finished
    tensors (offset, size, sha256) after their bytes are written. A rerun with the same plan (same
    fingerprint: header bytes, input identity, per-tensor imatrix) verifies and keeps those."""

    def __init__(self, dst: str, header: bytes, align: int, plans: list, fingerprint: str):
        self.dst, self.part, self.path = dst, dst + ".part", dst + ".part.journal"
        self.header = header
        off = _pad(len(header), align)
        self.offsets = {}
        for p in plans:
            self.offsets[p.name] = off
            off += _pad(p.out_nbytes, align)
        self.size = off
        self.fingerprint = fingerprint
        self.fd = None
        self.jf = None
        self.done: dict[str, dict] = {}

    def open(self) -> int:
        """Open (and lock) OUT.part; returns how many finished tensors were verified and kept."""
        self.fd = os.open(self.part, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666)
        try:
            import fcntl
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:
            pass
        except OSError:
            os.close(self.fd)
            self.fd = None
            raise RuntimeError(f"another run is writing {self.dst} (its {self.part} is locked)") from None
        entries = []
        try:
            with open(self.path, encoding="utf-8") as f:
                head = json.loads(f.readline())
                if head.get("fingerprint") == self.fingerprint and os.fstat(self.fd).st_size == self.size:
                    for line in f:
                        try:
                            entries.append(json.loads(line))
                        except ValueError:
                            break  # a line cut by the kill
        except (OSError, ValueError):
            entries = []
        for e in entries:
            name = e.get("name")
            if self.offsets.get(name) != e.get("offset"):
                continue
            if e["offset"] + e["nbytes"] <= self.size and self._sha256(e["offset"], e["nbytes"]) == e["sha256"]:
                self.done[name] = e
        if not self.done:
            os.ftruncate(self.fd, 0)
        os.ftruncate(self.fd, self.size)
        self._pwrite(self.header, 0)
        self.jf = open(self.path, "w", encoding="utf-8")
        self.jf.write(json.dumps({"fingerprint": self.fingerprint, "size": self.size}) + "\n")
        for e in self.done.values():
            self.jf.write(json.dumps(e) + "\n")
        self._sync_journal()
        return len(self.done)

    def _pwrite(self, data, offset: int) -> None:
        mv = memoryview(data).cast("B")
        while len(mv):
            n = _pwrite(self.fd, mv, offset)
            mv, offset = mv[n:], offset + n

    def _sha256(self, offset: int, nbytes: int) -> str:
        """Checksum of a byte range of the file, read in pieces (a read returns at most ~2 GiB)."""
        h = hashlib.sha256()
        end = offset + nbytes
        while offset < end:
            b = _pread(self.fd, min(1 << 26, end - offset), offset)
            if not b:
                break
            h.update(b)
            offset += len(b)
        return h.hexdigest()

    def _sync_journal(self):
        self.jf.flush()

    def write_at(self, name: str, start: int, data: np.ndarray) -> None:
        """Write bytes of tensor `name` from byte `start` of its data (a row chunk, or all of it)."""
        data = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        # No fsync per tensor: a kill keeps written pages, and after a crash of the machine the
        # resume verifies every journaled tensor's checksum, so a lost write is simply redone.
        self._pwrite(data, self.offsets[name] + start)

    def commit(self, name: str, nbytes: int, rel_err, seconds: float, data: np.ndarray | None = None) -> None:
        """Journal tensor `name` as finished; its checksum from `data` (all its bytes) when given,
        else read back from the file."""
        off = self.offsets[name]
        if data is not None:
            digest = hashlib.sha256(np.ascontiguousarray(data).reshape(-1).view(np.uint8)).hexdigest()
        else:
            digest = self._sha256(off, nbytes)
        e = {"name": name, "offset": off, "nbytes": int(nbytes), "sha256": digest, "rel_err": rel_err,
             "seconds": seconds}
        self.jf.write(json.dumps(e) + "\n")
        self._sync_journal()
        self.done[name] = e
        _count_commit()

    def close(self) -> None:
        if self.jf is not None:
            self.jf.close()
            self.jf = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def finish(self) -> None:
        os.fsync(self.fd)
        self.close()  # before the rename: Windows cannot rename an open file
        os.replace(self.part, self.dst)
        os.unlink(self.path)

    def discard(self) -> None:
        self.close()
        for f in (self.part, self.path):
            try:
                os.unlink(f)
            except OSError:
                pass


def _fingerprint(header: bytes, plans: list, inputs: list[str]) -> str:
    h = hashlib.sha256(header)
    for path in inputs:
        st = os.stat(path)
        h.update(f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    for p in plans:
        h.update(f"{p.name}|{p.out_type}\n".encode())
        if p.out_type in KT_TYPES and p.effort != "default":
            h.update(f"effort {p.effort}\n".encode())
        if p.imatrix is not None:
            h.update(np.ascontiguousarray(p.imatrix, dtype=np.float32).tobytes())
        if p.hessian is not None:
            h.update(f"hessian {p.hessian[1]}\n".encode())
    from . import __version__
    h.update(f"iqkt {__version__}".encode())  # another iqkt may quantize differently: start over
    return h.hexdigest()


def _write_model(readers: list, shards: list[_Shard], src: str, file_type: int | None, threads,
                 progress: bool | None, report: QuantizeReport, desc: str, extra_kv: dict | None = None,
                 ray_address: str | None = None) -> None:
    """Write each shard to OUT.part at planned offsets (journaled, resumable), then rename all.
    ray_address: not None: convert the tensors on a Ray cluster (see iqkt._ray)."""
    order = {p.name: i for i, p in enumerate(p for sh in shards for p in sh.plans)}
    r = readers[0]
    arch = _field_str(r, gguf.Keys.General.ARCHITECTURE)
    if arch is None:
        raise GGUFFormatError(f"{src}: no general.architecture key; not a model file")
    align = _field_int(r, gguf.Keys.General.ALIGNMENT) or gguf.GGUF_DEFAULT_ALIGNMENT
    inputs = [x.source_path for x in readers]
    journals = []
    bar = None
    try:
        for sh in shards:
            header = _header_bytes(r, sh, arch, file_type, extra_kv, os.path.dirname(os.path.abspath(sh.path)))
            j = _Journal(sh.path, header, align, sh.plans, _fingerprint(header, sh.plans, inputs))
            journals.append(j)
            kept = j.open()
            if kept:
                log.info("resuming %s: %d of %d tensors already done (verified by checksum)", sh.path, kept,
                         len(sh.plans))
        bar = _progress_bar(sum(int(np.prod(p.shape)) for sh in shards for p in sh.plans), progress)
        if bar is not None:
            bar.set_description(desc)
        _commits[0] = 0
        pending = []
        for sh, j in zip(shards, journals):
            for p in sh.plans:
                e = j.done.get(p.name)
                if e is None:
                    pending.append((j, p))
                    continue
                if bar is not None:
                    bar.update(int(np.prod(p.shape)))
                report.tensors.append(TensorReport(p.name, p.shape, type_name(p.src_tid), p.out_type_name,
                                                   int(np.prod(p.shape)), e["nbytes"], e["rel_err"],
                                                   e["seconds"], (p.note + "; " if p.note else "") + "resumed"))
        if ray_address is not None:
            from . import _ray
            _ray.convert(pending, inputs, threads, bar, ray_address)
        for j, p in pending:
            if p.name in j.done:  # done by Ray workers
                e = j.done[p.name]
                report.tensors.append(TensorReport(p.name, p.shape, type_name(p.src_tid), p.out_type_name,
                                                   int(np.prod(p.shape)), e["nbytes"], e["rel_err"],
                                                   e["seconds"], p.note))
                continue
            if bar is not None:
                bar.set_postfix_str(f"{p.name} -> {p.out_type_name}", refresh=False)
            t0 = time.perf_counter()
            data, err = _convert_tensor(p, threads, bar)
            dt = time.perf_counter() - t0
            j.write_at(p.name, 0, data)
            j.commit(p.name, int(data.nbytes), err, dt, data)
            report.tensors.append(TensorReport(p.name, p.shape, type_name(p.src_tid), p.out_type_name,
                                               int(np.prod(p.shape)), int(data.nbytes), err, dt, p.note))
        report.tensors.sort(key=lambda t: order[t.name])
        if bar is not None:
            bar.close()
            bar = None
        for j in journals:
            j.finish()
    except BaseException as e:
        if bar is not None:
            bar.close()
        if isinstance(e, (KeyboardInterrupt, SystemExit)):  # interrupted: keep the work for a rerun
            done = sum(len(j.done) for j in journals)
            for j in journals:
                j.close()
            if done:
                log.warning("interrupted: %d finished tensor(s) are kept in %s; run the same command again to "
                            "resume", done, ", ".join(j.part for j in journals))
            else:
                for j in journals:
                    j.discard()
            raise
        for j in journals:
            j.discard()
        if isinstance(e, OSError) and not isinstance(e, FileNotFoundError):
            # numpy's short-write error ("N requested and M written") names neither
            # the file nor the likely cause.
            why = e.strerror or str(e)
            raise OSError(f"cannot write {shards[0].path}: {why} (disk full or file size limit?); "
                          f"no output was written") from e
        raise


def _check_paths(src: str, dst: str, imatrix=None) -> None:
    """Fail before any work (and before the plan is printed) on paths that cannot work."""
    if not os.path.exists(src):
        raise FileNotFoundError(f"input file {src} does not exist")
    if os.path.isdir(src):
        raise IsADirectoryError(f"input {src} is a directory, not a GGUF file")
    if not os.access(src, os.R_OK):
        raise PermissionError(f"input file {src} is not readable")
    if isinstance(imatrix, (str, os.PathLike)):
        imf = os.fspath(imatrix)
        if not os.path.exists(imf):
            raise FileNotFoundError(f"imatrix file {imf} does not exist")
        if os.path.isdir(imf) or not os.access(imf, os.R_OK):
            raise PermissionError(f"imatrix file {imf} is not a readable file")
    dst_dir = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(dst_dir):
        raise FileNotFoundError(f"output folder {dst_dir} does not exist (create it first)")
    if not os.access(dst_dir, os.W_OK | os.X_OK):
        raise PermissionError(f"output folder {dst_dir} is not writable")
    if os.path.exists(dst):
        if os.path.isdir(dst):
            raise IsADirectoryError(f"output {dst} is a directory")
        if os.path.samefile(src, dst):
            raise ValueError(f"refusing to overwrite the input file {src}")


def _fmt_list(names: list[str], limit: int = 8) -> str:
    s = ", ".join(names[:limit])
    return s + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------

def _npz_shape(npz, key: str) -> tuple:
    """Shape of one array of an .npz from its header, without reading the data."""
    with npz.zip.open(key + ".npy") as f:
        major, _ = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        return read(f)[0]


def _attach_hessians(plans: list, path, ray) -> None:
    """Point every 2-D KT plan with an entry in the .npz at `path` to it (loaded per use)."""
    path = os.fspath(path)
    if ray is not None:
        raise ValueError("--hessian (LDLQ) does not run on Ray yet; quantize locally")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such hessian file: {path}")
    try:
        npz = np.load(path, allow_pickle=False)
        names = set(npz.files)
    except Exception as e:
        raise ValueError(f"{path}: not an .npz of matrices ({type(e).__name__}: {e})") from None
    used = 0
    for p in plans:
        if p.out_type in KT_TYPES and len(p.shape) == 2 and p.name in names:
            n = p.shape[-1]
            shape = _npz_shape(npz, p.name)
            if shape != (n, n):
                raise ValueError(f"{path}: {p.name} is {shape}, expected {n} x {n}")
            p.hessian = (npz, p.name)
            used += 1
    log.info("hessian %s: LDLQ error feedback for %d KT tensor(s)", path, used)
    if used == 0:
        log.warning("the hessian file %s matches none of the KT tensors", path)


def quantize_model(src, dst, type: str, *, custom_q=None, output_tensor_type: str | None = None,
                   token_embedding_type: str | None = None, tensor_types: dict | None = None, pure: bool = False,
                   threads: int | None = None, imatrix=None, include_weights: Sequence[str] = (),
                   exclude_weights: Sequence[str] = (), fallback_type: str = "auto", allow_requantize: bool = False,
                   leave_output_tensor: bool = False, override_kv=None, keep_split: bool = False,
                   ray: str | None = None, hessian=None, effort: str = "default",
                   progress: bool | None = None) -> QuantizeReport:
    """Quantize the GGUF model `src` into `dst`; returns a QuantizeReport.

    type: default type of weight matrices (a KT type, a K-quant, iq4_nl/iq4_xs, f32/f16/bf16/q8_0/
      q5_1/q5_0/q4_1/q4_0), or a llama-quantize mix (q3_k_s/m/l, q4_k_s/m, q5_k_s/m; see MIXES).
    custom_q: per-tensor rules, "REGEX=TYPE,..." or [(regex, type)], first match wins ("keep" copies).
    output_tensor_type / token_embedding_type: types of output.weight / token_embd.weight (with tied
      embeddings, no output.weight, token_embd.weight is the output tensor).
    tensor_types: {class: type} for the classes in TENSOR_CLASSES (attn_v, ffn_down, ...).
    pure: no special cases (no mix rules; with a KT type, output and embeddings are not put in q8_0).
    imatrix: path of a legacy .dat or GGUF imatrix, or an `iqkt.imatrix.Imatrix`; used by the KT,
      K-quant and IQ4 quantizers. include_weights / exclude_weights: use it only for / not for the
      tensors whose names contain one of these strings.
    hessian: path of an .npz of input second-moment matrices by tensor name (`iqkt imatrix
      --covariance`): the KT matrices listed there are quantized with LDLQ error feedback
      (`iqkt.ldlq`), which lowers the layer's output error rather than the weight error.
    effort: the KT quantizer's effort level: "default", "fast" (several times quicker, error still
      below ik_llama.cpp's quantizer on its golden cases) or "best" (about 2x slower, 1-3% lower
      error); other types ignore it. Recorded in the output as quantize.iqkt.effort.
    fallback_type: type for matrices whose rows do not fit the chosen type's block; "auto" (a type
      near the requested bit width, see _AUTO_FALLBACK) or "keep".
    allow_requantize: without it, converting an already quantized input tensor is an error.
    leave_output_tensor: copy output.weight unchanged.
    override_kv: ["KEY=TYPE:VALUE", ...] metadata to set (see parse_override_kv).
    keep_split: a split input (src = its first shard, PREFIX-00001-of-0000N.gguf) gives the same
      shards (dst without .gguf + -0000i-of-0000N.gguf); without it a split input is merged into dst.
    ray: None (local), or a Ray cluster address ("" or "local": ray.init()'s default, or the
      cluster this process is already connected to) that converts the tensors, in row chunks; the
      input must be readable at the same path on every node. Same bytes as a local run.
    progress: tqdm bar on stderr (None: only when stderr is a terminal).
    1-D tensors become float32; routers and non-".weight" tensors are copied; a tensor already of
    its target type is copied unchanged. Writes `dst`.part (+ .part.journal) next to `dst`, renamed
    at the end; a killed or interrupted run resumes from the journal when run again.
    """
    t_start = time.perf_counter()
    src, dst = os.fspath(src), os.fspath(dst)
    default = _check_type(type, "--type", allow_mix=True)
    out_t = _check_type(output_tensor_type, "--output-tensor-type", True) if output_tensor_type else None
    emb_t = _check_type(token_embedding_type, "--token-embedding-type", True) if token_embedding_type else None
    class_types = {}
    for cls, ty in (tensor_types or {}).items():
        if cls not in TENSOR_CLASSES:
            raise ValueError(f"unknown tensor class {cls!r}; expected one of {', '.join(TENSOR_CLASSES)}")
        if ty:
            class_types[cls] = _check_type(ty, f"--{cls.replace('_', '-')}-type", allow_keep=True)
    fallback = _check_type(fallback_type, "--fallback-type", allow_keep=True, allow_auto=True)
    rules = parse_custom_q(custom_q)
    extra_kv = parse_override_kv(override_kv)
    include_weights, exclude_weights = list(include_weights or ()), list(exclude_weights or ())
    if include_weights and exclude_weights:
        raise ValueError("--include-weights and --exclude-weights cannot be used together")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer, not {threads!r}")
    _api._check_effort(effort)
    _check_paths(src, dst, imatrix)
    readers = open_inputs(src)
    r = readers[0]
    tensors = [t for x in readers for t in x.tensors]
    im = imatrix
    if im is not None and not isinstance(im, Imatrix):
        im = load_imatrix(im)
    report = QuantizeReport(src, dst, src_bytes=sum(int(t.n_bytes) for t in tensors))

    def warn(msg: str):
        report.warnings.append(msg)
        log.warning(msg)

    n_layers, gqa, tied = _model_shape_facts(r, tensors)
    if tied and out_t and emb_t and out_t != emb_t:
        warn(f"the model has tied embeddings (no output.weight): token_embd.weight is its output tensor and "
             f"gets --output-tensor-type {out_t}; --token-embedding-type {emb_t} is not used")
    choice = _Choice(default, rules, class_types, out_t, emb_t, pure, fallback, leave_output_tensor,
                     tied, n_layers, gqa)
    fallbacks: list = []
    plans = [_plan_tensor(t, choice, fallbacks) for t in tensors]
    for p in plans:
        p.effort = effort
    shards = _output_shards(src, dst, readers, plans, keep_split)
    if fallbacks:
        by_pair: dict = {}
        for n, a, b, c in fallbacks:
            by_pair.setdefault((a, b), []).append(f"{n} ({c})")
        warn(f"{len(fallbacks)} tensor(s) have rows that are not a multiple of their type's block and use a "
             f"fallback type: " + "; ".join(f"{a} -> {b} for {_fmt_list(v, 4)}" for (a, b), v in by_pair.items()))
    requant: dict[str, int] = {}
    for p in plans:
        if p.out_type != "keep" and _is_quantized(p.src_tid):
            requant[type_name(p.src_tid)] = requant.get(type_name(p.src_tid), 0) + 1
    if requant:
        what = ", ".join(f"{k} ({v})" for k, v in requant.items())
        if not allow_requantize:
            raise ValueError(f"{src} has tensors that are already quantized: {what}; requantizing them loses "
                             f"quality (start from an f32/f16/bf16 model if you can), pass --allow-requantize "
                             f"(allow_requantize=True) to do it anyway")
        log.info("requantizing: %s input tensors are dequantized and quantized again; the result cannot "
                 "be better than the input", what)
    for p in plans:
        if p.out_type != "keep":  # fail now, not after minutes of work, on types gguf cannot decode
            _decode_rows(p.src_tid, _raw_rows(p.tensor)[:1], p.shape[-1])
    im_plans = [p for p in plans if p.out_type in _IMATRIX_TYPES]
    if im is not None:
        used = 0
        missing, skipped = [], []
        for p in im_plans:
            if (include_weights and not any(s in p.name for s in include_weights)) or \
                    any(s in p.name for s in exclude_weights):
                skipped.append(p.name)
                continue
            v = im.for_tensor(p.name, p.shape)
            if v is None:
                missing.append(p.name)
            else:
                p.imatrix = v
                used += 1
        log.info("imatrix %s (%s format, %d entries%s): used for %d of %d tensors of imatrix-aware types%s",
                 im.path, im.format, len(im), f", dataset {', '.join(im.datasets)}" if im.datasets else "", used,
                 len(im_plans), f" ({len(skipped)} left out by --include/--exclude-weights)" if skipped else "")
        if missing:
            warn(f"no imatrix entry for {len(missing)} tensor(s), quantized without: " + _fmt_list(missing))
        if im_plans and used == 0 and len(skipped) < len(im_plans):
            warn(f"the imatrix {im.path} matches none of the tensors (do its names fit this model?)")
        extra_kv = {**_imatrix_provenance(im), **extra_kv}
    elif include_weights or exclude_weights:
        raise ValueError("--include-weights / --exclude-weights need an --imatrix")
    if hessian is not None:
        _attach_hessians(plans, hessian, ray)
    if effort != "default" and any(p.out_type in KT_TYPES for p in plans):
        log.info("KT quantizer effort: %s", effort)
        extra_kv = {"quantize.iqkt.effort": (effort, gguf.GGUFValueType.STRING), **extra_kv}
    no_im_2bit = [p for p in im_plans if p.out_type in ("iq1_kt", "iq2_kt", "q2_k") and p.imatrix is None]
    if no_im_2bit:
        kinds = "/".join(sorted({p.out_type for p in no_im_2bit}))
        warn(f"{len(no_im_2bit)} tensor(s) quantized to {kinds} without an imatrix; 2-bit quality depends on "
             f"one (llama-quantize refuses this): " + _fmt_list([p.name for p in no_im_2bit]))
    # As llama-quantize does, the file type names the requested default type or mix (with a KT
    # --type, ik_llama.cpp's ids 151-153), whatever the per-tensor rules changed.
    if default in _MIXES:
        file_type = int(gguf.LlamaFileType[f"MOSTLY_{default.upper()}"])
    else:
        file_type = _file_type_of(type_id(default), _field_int(r, gguf.Keys.General.FILE_TYPE))
    report.file_type = file_type
    report.outputs = [sh.path for sh in shards]
    _write_model(readers, shards, src, file_type, threads, progress, report, "quantize", extra_kv, ray)
    report.seconds = time.perf_counter() - t_start
    return report


def _output_shards(src: str, dst: str, readers: list, plans: list, keep_split: bool) -> list[_Shard]:
    """One output file, or with keep_split and a split input the same shards, named after dst."""
    if not keep_split or len(readers) == 1:
        if keep_split:
            log.info("--keep-split: %s is not split; writing one file", src)
        shards = [_Shard(dst, plans)]
    else:
        n = len(readers)
        paths = shard_paths(dst, n)
        it = iter(plans)
        shards = [_Shard(paths[i], [next(it) for _ in x.tensors], (i, n, len(plans))) for i, x in enumerate(readers)]
    for sh in shards:
        for x in readers:
            if os.path.exists(sh.path) and os.path.samefile(sh.path, x.source_path):
                raise ValueError(f"refusing to overwrite the input file {x.source_path}")
        if os.path.isdir(sh.path):
            raise IsADirectoryError(f"output {sh.path} is a directory")
    return shards


def _imatrix_provenance(im: Imatrix) -> dict:
    """The quantize.imatrix.* keys llama-quantize writes: file, dataset, entry and chunk counts."""
    S, I = gguf.GGUFValueType.STRING, gguf.GGUFValueType.INT32
    kv = {"quantize.imatrix.file": (im.path, S)}
    if im.datasets:
        kv["quantize.imatrix.dataset"] = (im.datasets[0], S)
    kv["quantize.imatrix.entries_count"] = (len(im), I)
    if im.chunks is not None:
        kv["quantize.imatrix.chunks_count"] = (int(im.chunks), I)
    return kv


def dequantize_model(src, dst, type: str = "f16", *, threads: int | None = None,
                     progress: bool | None = None) -> QuantizeReport:
    """Convert the KT tensors of `src` to a float type (f16, bf16 or f32) for engines without KT
    support; the values are the inference values (IQ2_KT's 1.05 factor included). Other tensors
    are copied unchanged."""
    t_start = time.perf_counter()
    src, dst = os.fspath(src), os.fspath(dst)
    t = _check_type(type, "--type")
    if t not in _FLOAT_OUT_TYPES:
        raise ValueError(f"--type must be one of {', '.join(_FLOAT_OUT_TYPES)}, not {type!r}")
    _check_paths(src, dst)
    readers = open_inputs(src)
    r = readers[0]
    tensors = [t for x in readers for t in x.tensors]
    report = QuantizeReport(src, dst, src_bytes=sum(int(x.n_bytes) for x in tensors))
    plans = []
    for x in tensors:
        p = _Plan(x, x.name, _np_shape(x), int(x.tensor_type), "keep")
        if p.src_tid in _KT_BY_ID:
            p.out_type, p.note = t, f"{type_name(p.src_tid)} inference values"
        plans.append(p)
    if not any(p.out_type != "keep" for p in plans):
        log.warning("%s has no KT tensors; the output is a plain copy", src)
    file_type = _dominant_file_type(plans, _field_int(r, gguf.Keys.General.FILE_TYPE))
    report.file_type = file_type
    shards = _output_shards(src, dst, readers, plans, False)
    report.outputs = [dst]
    _write_model(readers, shards, src, file_type, threads, progress, report, "dequantize")
    report.seconds = time.perf_counter() - t_start
    return report


@dataclass
class ModelInfo:
    path: str
    file_size: int
    version: int
    kv_count: int
    architecture: str | None
    name: str | None
    file_type: int | None
    quantization_version: int | None
    alignment: int
    tensors: list[TensorReport]
    shards: int = 1  # files of a split model (path: the first; file_size: all of them)

    @property
    def file_type_name(self) -> str | None:
        if self.file_type is None:
            return None
        if self.file_type in _KT_FILE_TYPE_NAMES:
            return _KT_FILE_TYPE_NAMES[self.file_type]
        try:
            return gguf.LlamaFileType(self.file_type).name
        except ValueError:
            return f"unknown ({self.file_type})"

    def by_type(self) -> dict[str, dict]:
        return QuantizeReport("", "", tensors=self.tensors).by_type()


def model_info(path) -> ModelInfo:
    """Header, metadata summary and tensor list of a GGUF file (KT tensors included); for the first
    shard of a split model, of all its shards."""
    path = os.fspath(path)
    readers = open_inputs(path)
    r = readers[0]
    tensors = [TensorReport(t.name, _np_shape(t), type_name(int(t.tensor_type)), type_name(int(t.tensor_type)),
                            int(t.n_elements), int(t.n_bytes)) for x in readers for t in x.tensors]
    return ModelInfo(path, sum(os.path.getsize(x.source_path) for x in readers), _field_int(r, "GGUF.version") or 0,
                     _field_int(r, "GGUF.kv_count") or 0, _field_str(r, gguf.Keys.General.ARCHITECTURE),
                     _field_str(r, gguf.Keys.General.NAME), _field_int(r, gguf.Keys.General.FILE_TYPE),
                     _field_int(r, gguf.Keys.General.QUANTIZATION_VERSION), int(r.alignment), tensors,
                     len(readers))


def format_info(info: ModelInfo, tensors: bool = True) -> str:
    shards = f" in {info.shards} shards" if info.shards > 1 else ""
    lines = [f"file: {info.path} ({_fmt_bytes(info.file_size)}{shards}), GGUF v{info.version}, {info.kv_count} "
             f"metadata keys, {len(info.tensors)} tensors, alignment {info.alignment}"]
    lines.append(f"architecture: {info.architecture}" + (f", name: {info.name}" if info.name else ""))
    lines.append(f"file type: {info.file_type_name}" + (f" ({info.file_type})" if info.file_type is not None else "")
                 + f", quantization version: {info.quantization_version}")
    lines.append("")
    if tensors:
        w = max([len(t.name) for t in info.tensors] + [6])
        hdr = f"{'tensor':{w}s} {'type':>7s} {'shape':>18s} {'weights':>12s} {'size':>11s} {'bpw':>6s}"
        lines += [hdr, "-" * len(hdr)]
        for t in info.tensors:
            lines.append(f"{t.name:{w}s} {t.out_type:>7s} {_fmt_shape(t.shape):>18s} {t.n_elements:12,d} "
                         f"{_fmt_bytes(t.nbytes):>11s} {t.bpw:6.3f}")
        lines.append("")
    hdr = f"{'type':7s} {'tensors':>7s} {'weights':>14s} {'size':>11s} {'bpw':>6s} {'weights %':>9s}"
    lines += [hdr, "-" * len(hdr)]
    total_w = sum(t.n_elements for t in info.tensors)
    total_b = sum(t.nbytes for t in info.tensors)
    for name, d in sorted(info.by_type().items(), key=lambda kv: -kv[1]["weights"]):
        lines.append(f"{name:7s} {d['tensors']:7d} {d['weights']:14,d} {_fmt_bytes(d['bytes']):>11s} {d['bpw']:6.3f} "
                     f"{100 * d['weights'] / max(1, total_w):8.2f}%")
    lines.append("-" * len(hdr))
    lines.append(f"{'total':7s} {len(info.tensors):7d} {total_w:14,d} {_fmt_bytes(total_b):>11s} "
                 f"{8 * total_b / max(1, total_w):6.3f}")
    kt = [t for t in info.tensors if t.out_type in KT_TYPES]
    kt_w = sum(t.n_elements for t in kt)
    kt_b = sum(t.nbytes for t in kt)
    lines.append(f"KT share: {len(kt)} tensors, {100 * kt_w / max(1, total_w):.2f}% of weights, "
                 f"{100 * kt_b / max(1, total_b):.2f}% of tensor bytes")
    return "\n".join(lines)
