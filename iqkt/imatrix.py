"""Importance matrices ("imatrix") as written by llama-imatrix, in both file formats.

An imatrix holds, per weight tensor, the mean squared activation seen by each input column
(one vector of length n_per_row, or one per expert for a 3-D expert tensor, stored expert after
expert). Quantizers use it to spend precision where the activations are large.

Two formats exist:
- legacy binary ``.dat`` (little-endian): int32 entry count; per entry: int32 name length, the
  name (UTF-8), int32 ncall, int32 nval, nval float32 sums; an optional trailer of int32 last chunk,
  int32 length and the dataset name. The stored values are sums over ncall calls, so a reader
  divides by ncall when ncall > 0.
- GGUF: tensors ``<name>.in_sum2`` (float32, n_expert x n_per_row sums of squares) and
  ``<name>.counts`` (float32, one count per expert). The importance is in_sum2 / count; an expert
  that saw no input (count 0) gets a uniform importance of 1, since nothing is known about it.

`load_imatrix` reads either (it looks at the magic bytes) into an `Imatrix`; the legacy reader has
no dependencies beyond numpy, the GGUF reader needs the ``gguf`` package.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Imatrix", "ImatrixError", "load_imatrix", "write_legacy_imatrix"]

_GGUF_MAGIC = b"GGUF"
# Generous sanity limits: they only exist to turn a corrupt length field into a clear error
# instead of a huge allocation.
_MAX_NAME_LEN = 1 << 16


class ImatrixError(ValueError):
    """The imatrix file is malformed, or does not fit the model's tensors."""


@dataclass
class Imatrix:
    """Per-tensor importance vectors, already divided by their call counts.

    entries: tensor name -> flat float32 array (n_per_row, or n_expert * n_per_row expert after
    expert). ncalls: tensor name -> number of calls (legacy) or largest per-expert count (GGUF).
    """
    path: str
    format: str  # "legacy" or "gguf"
    entries: dict[str, np.ndarray]
    ncalls: dict[str, int] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    chunks: int | None = None

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def for_tensor(self, name: str, shape: tuple[int, ...]) -> np.ndarray | None:
        """Importance vectors for a tensor of numpy shape `shape` (..., rows, n_per_row):
        a float32 array (groups, n_per_row) where groups is the number of experts of a 3-D
        tensor (1 for a 2-D one), or None when the imatrix has no entry for `name`.
        Raises ImatrixError when the length does not fit."""
        v = self.entries.get(name)
        if v is None:
            return None
        n = int(shape[-1])
        groups = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
        if v.size != n * groups:
            what = f"{groups} experts x {n} columns = {n * groups}" if groups > 1 else f"{n} columns"
            raise ImatrixError(f"imatrix entry {name!r} in {self.path} has {v.size} values, but the tensor "
                               f"(shape {'x'.join(map(str, shape))}) needs {what}")
        return v.reshape(groups, n)


def _check_values(path: str, name: str, v: np.ndarray) -> None:
    if not np.isfinite(v).all():
        raise ImatrixError(f"imatrix entry {name!r} in {path} contains NaN or infinity")
    if (v < 0).any():
        raise ImatrixError(f"imatrix entry {name!r} in {path} has negative values (squared activations "
                           f"cannot be negative)")


def load_imatrix(path: str | os.PathLike) -> Imatrix:
    """Read a legacy ``.dat`` or a GGUF imatrix file; raises ImatrixError when it is malformed."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if head == _GGUF_MAGIC:
        return _load_gguf(path)
    return _load_legacy(path)


def _load_legacy(path: str) -> Imatrix:
    with open(path, "rb") as f:
        buf = f.read()
    pos = 0

    def take(nbytes: int, what: str) -> bytes:
        nonlocal pos
        if nbytes < 0 or pos + nbytes > len(buf):
            raise ImatrixError(f"{path}: not a valid imatrix file: truncated while reading {what} "
                               f"(offset {pos}, file size {len(buf)})")
        b = buf[pos:pos + nbytes]
        pos += nbytes
        return b

    def int32(what: str) -> int:
        return struct.unpack("<i", take(4, what))[0]

    if len(buf) < 4:
        raise ImatrixError(f"{path}: not a valid imatrix file (only {len(buf)} bytes)")
    count = int32("the entry count")
    # Every entry takes at least 13 bytes (3 int32 + a 1-byte name), which bounds a sane count.
    if count <= 0 or count * 13 > len(buf):
        raise ImatrixError(f"{path}: not a valid imatrix file (entry count {count} does not fit a "
                           f"{len(buf)}-byte file)")
    entries: dict[str, np.ndarray] = {}
    ncalls: dict[str, int] = {}
    for i in range(count):
        nlen = int32(f"the name length of entry {i}")
        if not 0 < nlen <= _MAX_NAME_LEN:
            raise ImatrixError(f"{path}: not a valid imatrix file (entry {i} has name length {nlen})")
        raw = take(nlen, f"the name of entry {i}")
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ImatrixError(f"{path}: not a valid imatrix file (entry {i} name is not UTF-8)") from None
        ncall = int32(f"the call count of {name!r}")
        nval = int32(f"the value count of {name!r}")
        if ncall < 0 or nval <= 0:
            raise ImatrixError(f"{path}: not a valid imatrix file (entry {name!r}: ncall={ncall}, "
                               f"nval={nval})")
        if name in entries:
            raise ImatrixError(f"{path}: entry {name!r} appears twice")
        v = np.frombuffer(take(4 * nval, f"the {nval} values of {name!r}"), dtype="<f4").astype(np.float32)
        if ncall > 0:
            v = v / np.float32(ncall)
        _check_values(path, name, v)
        entries[name] = v
        ncalls[name] = ncall
    datasets: list[str] = []
    chunks = None
    if pos < len(buf):
        # Optional trailer: last chunk number and the calibration dataset's name.
        chunks = int32("the trailer (last chunk)")
        dlen = int32("the trailer (dataset name length)")
        if not 0 <= dlen <= _MAX_NAME_LEN:
            raise ImatrixError(f"{path}: not a valid imatrix file (bad dataset name length {dlen})")
        datasets.append(take(dlen, "the dataset name").decode("utf-8", errors="replace"))
        if pos != len(buf):
            raise ImatrixError(f"{path}: not a valid imatrix file ({len(buf) - pos} unexpected bytes at "
                               f"the end)")
    return Imatrix(path, "legacy", entries, ncalls, datasets, chunks)


def _load_gguf(path: str) -> Imatrix:
    try:
        import gguf
    except ImportError:
        raise ImatrixError(f"{path} is a GGUF imatrix; reading it needs the gguf package "
                           f"(pip install gguf, or pip install '.[gguf]' in an iqkt checkout)") from None
    try:
        r = gguf.GGUFReader(path, "r")
    except Exception as e:  # the reader raises many kinds of errors on corrupt input
        raise ImatrixError(f"{path}: not a valid GGUF imatrix file ({type(e).__name__}: {e})") from None
    tensors = {t.name: t for t in r.tensors}
    sums = {name[:-len(".in_sum2")]: t for name, t in tensors.items() if name.endswith(".in_sum2")}
    if not sums:
        raise ImatrixError(f"{path}: GGUF file has no '<tensor>.in_sum2' tensors; is it an imatrix?")
    F32 = gguf.GGMLQuantizationType.F32
    entries: dict[str, np.ndarray] = {}
    ncalls: dict[str, int] = {}
    for name, ts in sums.items():
        tc = tensors.get(name + ".counts")
        if tc is None:
            raise ImatrixError(f"{path}: {name}.in_sum2 has no matching {name}.counts tensor")
        if ts.tensor_type != F32 or tc.tensor_type != F32:
            raise ImatrixError(f"{path}: {name}.in_sum2 and .counts must be float32")
        s = np.asarray(ts.data, dtype=np.float32)
        c = np.asarray(tc.data, dtype=np.float32).reshape(-1)
        # in_sum2: ggml shape (n_per_row, n_expert) -> numpy (n_expert, n_per_row).
        s = s.reshape(-1, s.shape[-1]) if s.ndim >= 2 else s.reshape(1, -1)
        if c.size != s.shape[0]:
            raise ImatrixError(f"{path}: {name}.counts has {c.size} values but {name}.in_sum2 has "
                               f"{s.shape[0]} rows (one count per expert expected)")
        if not np.isfinite(c).all() or (c < 0).any():
            raise ImatrixError(f"{path}: {name}.counts has negative or non-finite values")
        v = np.ones(s.shape, dtype=np.float32)
        seen = c > 0
        v[seen] = s[seen] / c[seen, None]
        v = v.reshape(-1)
        _check_values(path, name, v)
        entries[name] = v
        ncalls[name] = int(c.max())
    datasets: list[str] = []
    chunks = None
    f = r.get_field("imatrix.datasets")
    if f is not None:
        try:
            datasets = [str(x) for x in f.contents()]
        except Exception:
            datasets = []
    f = r.get_field("imatrix.chunk_count")
    if f is not None:
        try:
            chunks = int(f.contents())
        except Exception:
            chunks = None
    return Imatrix(path, "gguf", entries, ncalls, datasets, chunks)


def write_legacy_imatrix(path: str | os.PathLike, entries: dict[str, np.ndarray], ncall: int = 1,
                         dataset: str | None = None, last_chunk: int = 0) -> None:
    """Write `entries` (name -> importance vector) as a legacy ``.dat`` imatrix. The values are
    stored multiplied by `ncall`, as llama-imatrix stores sums, so reading gives them back."""
    with open(path, "wb") as f:
        f.write(struct.pack("<i", len(entries)))
        for name, v in entries.items():
            nb = name.encode("utf-8")
            v = np.asarray(v, dtype="<f4").reshape(-1)
            f.write(struct.pack("<i", len(nb)) + nb + struct.pack("<ii", ncall, v.size))
            f.write((v * np.float32(max(ncall, 1))).astype("<f4").tobytes())
        if dataset is not None:
            db = dataset.encode("utf-8")
            f.write(struct.pack("<ii", last_chunk, len(db)) + db)
