"""Text -> token ids with the tokenizer stored in a GGUF file (for `iqkt eval`).

Two tokenizer models cover the llama family:
- ``gpt2`` (byte-level BPE: SmolLM2, Llama 3, ...): the text is split into pieces by the
  pre-tokenizer named in ``tokenizer.ggml.pre``, each piece's UTF-8 bytes are mapped to printable
  characters, and merges are applied by rank (lowest first) until none applies.
- ``llama`` (SentencePiece-style BPE: Llama 1/2, Mistral): spaces become U+2581, an optional space
  is prepended, adjacent symbols are merged by the highest vocabulary score while the merged string
  is in the vocabulary, and symbols left outside it become byte tokens ``<0xXX>``.

Special tokens in the text are not parsed (as llama-perplexity: the text is plain text). Letter /
number classes of the pre-tokenizer patterns use the ``regex`` package when it is installed and an
approximation with ``re`` otherwise (identical on ASCII text; may differ on rare Unicode numerals).
"""
from __future__ import annotations

import heapq
from functools import lru_cache

import numpy as np

try:  # exact Unicode classes (\p{L}, \p{N}) when available
    import regex as _re
    _L, _N, _NOT_LN_S = r"\p{L}", r"\p{N}", r"[^\s\p{L}\p{N}]"
    _NOT_LN_RN = r"[^\r\n\p{L}\p{N}]"
except ImportError:  # pragma: no cover - depends on the environment
    import re as _re
    _L, _N, _NOT_LN_S = r"[^\W\d_]", r"\d", r"(?:[^\s\w]|_)"
    _NOT_LN_RN = r"(?:[^\r\n\w]|_)"

__all__ = ["Tokenizer", "TokenizerError"]

_GPT2_PATTERN = (rf"'s|'t|'re|'ve|'m|'ll|'d| ?{_L}+| ?{_N}+| ?{_NOT_LN_S}+|\s+(?!\S)|\s+")
_LLAMA3_PATTERN = (rf"(?i:'s|'t|'re|'ve|'m|'ll|'d)|{_NOT_LN_RN}?{_L}+|{_N}{{1,3}}"
                   rf"| ?{_NOT_LN_S}+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# tokenizer.ggml.pre -> the regexes applied in sequence (each splits the pieces of the previous).
_PRE_TOKENIZERS = {
    "default": [_GPT2_PATTERN],
    "gpt2": [_GPT2_PATTERN],
    "smollm": [_N, _GPT2_PATTERN],          # digits one by one, then GPT-2's pattern
    "llama3": [_LLAMA3_PATTERN],
    "llama-bpe": [_LLAMA3_PATTERN],
    "llama-v3": [_LLAMA3_PATTERN],
}


class TokenizerError(ValueError):
    """The GGUF file has no usable tokenizer, or one iqkt does not implement."""


@lru_cache(maxsize=None)
def _byte_chars() -> tuple[str, ...]:
    """GPT-2's reversible byte -> printable character map: bytes that are printable Latin-1
    characters stand for themselves, the others are moved to code points 256 and up."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return tuple(out[b] for b in range(256))


def _split(pattern_list: list[str], text: str) -> list[str]:
    """Apply the regexes in turn; text between matches is kept as pieces too (as the
    pre-tokenizers do: nothing of the input is dropped)."""
    pieces = [text]
    for pat in pattern_list:
        rx = _re.compile(pat)
        nxt = []
        for p in pieces:
            pos = 0
            for m in rx.finditer(p):
                if m.start() > pos:
                    nxt.append(p[pos:m.start()])
                if m.end() > m.start():
                    nxt.append(m.group())
                pos = m.end()
            if pos < len(p):
                nxt.append(p[pos:])
        pieces = nxt
    return pieces


class Tokenizer:
    """A GGUF file's tokenizer. ``Tokenizer.from_gguf(reader)``; ``encode(text)`` -> int32 ids."""

    def __init__(self, model: str, tokens: list[str], *, merges: list[str] | None = None,
                 scores: list[float] | None = None, pre: str | None = None,
                 add_bos: bool = False, bos_id: int | None = None, add_space_prefix: bool = True,
                 unk_id: int | None = None):
        self.model = model
        self.tokens = tokens
        self.vocab = {t: i for i, t in enumerate(tokens)}
        self.add_bos = add_bos
        self.bos_id = bos_id
        self.unk_id = unk_id
        if model == "gpt2":
            if merges is None:
                raise TokenizerError("gpt2 tokenizer without tokenizer.ggml.merges")
            self.ranks = {}
            for r, m in enumerate(merges):
                a, sep, b = m.partition(" ")
                if not sep:
                    raise TokenizerError(f"malformed merge #{r}: {m!r}")
                self.ranks.setdefault((a, b), r)
            self.pre = pre or "default"
            if self.pre not in _PRE_TOKENIZERS:
                raise TokenizerError(f"pre-tokenizer {self.pre!r} is not implemented (known: "
                                     f"{', '.join(sorted(_PRE_TOKENIZERS))}); pass token ids instead")
            self._bpe_cache: dict[str, list[int]] = {}
        elif model == "llama":
            if scores is None or len(scores) != len(tokens):
                raise TokenizerError("llama (SentencePiece) tokenizer without one score per token")
            self.scores = scores
            self.add_space_prefix = add_space_prefix
            self.byte_ids = [self.vocab.get(f"<0x{b:02X}>") for b in range(256)]
        else:
            raise TokenizerError(f"tokenizer model {model!r} is not implemented (gpt2 and llama are)")

    @classmethod
    def from_gguf(cls, reader) -> "Tokenizer":
        import gguf

        S, A = gguf.GGUFValueType.STRING, gguf.GGUFValueType.ARRAY

        def get(key, default=None):
            f = reader.fields.get(key)
            if f is None:
                return default
            t = f.types[0]
            if t == S:
                return bytes(f.parts[-1]).decode("utf-8", errors="replace")
            if t == A:
                if len(f.types) > 1 and f.types[1] == S:
                    return [bytes(f.parts[i]).decode("utf-8", errors="replace") for i in f.data]
                return [f.parts[i].tolist()[0] for i in f.data]
            return f.parts[-1].tolist()[0]

        model = get("tokenizer.ggml.model")
        tokens = get("tokenizer.ggml.tokens")
        if model is None or tokens is None:
            raise TokenizerError("the GGUF file has no tokenizer (tokenizer.ggml.model / .tokens)")
        return cls(str(model), list(tokens), merges=get("tokenizer.ggml.merges"),
                   scores=get("tokenizer.ggml.scores"), pre=get("tokenizer.ggml.pre"),
                   add_bos=bool(get("tokenizer.ggml.add_bos_token", model == "llama")),
                   bos_id=get("tokenizer.ggml.bos_token_id"),
                   add_space_prefix=bool(get("tokenizer.ggml.add_space_prefix", True)),
                   unk_id=get("tokenizer.ggml.unknown_token_id"))

    def encode(self, text: str, add_bos: bool | None = None) -> np.ndarray:
        if add_bos is None:
            add_bos = self.add_bos
        ids = self._encode_gpt2(text) if self.model == "gpt2" else self._encode_spm(text)
        if add_bos and self.bos_id is not None:
            ids.insert(0, int(self.bos_id))
        return np.asarray(ids, dtype=np.int32)

    # -- gpt2 -------------------------------------------------------------------------------
    def _encode_gpt2(self, text: str) -> list[int]:
        bc = _byte_chars()
        out: list[int] = []
        for piece in _split(_PRE_TOKENIZERS[self.pre], text):
            ids = self._bpe_cache.get(piece)
            if ids is None:
                word = "".join(bc[b] for b in piece.encode("utf-8"))
                ids = [self._id(s) for s in self._bpe(word)]
                if len(self._bpe_cache) < 200_000:
                    self._bpe_cache[piece] = ids
            out.extend(ids)
        return out

    def _bpe(self, word: str) -> list[str]:
        syms = list(word)
        ranks = self.ranks
        while len(syms) > 1:
            best, best_r = -1, None
            for i in range(len(syms) - 1):
                r = ranks.get((syms[i], syms[i + 1]))
                if r is not None and (best_r is None or r < best_r):
                    best, best_r = i, r
            if best < 0:
                break
            a, b = syms[best], syms[best + 1]
            merged, i = [], 0
            while i < len(syms):  # merge every occurrence of the pair, left to right
                if i < len(syms) - 1 and syms[i] == a and syms[i + 1] == b:
                    merged.append(a + b)
                    i += 2
                else:
                    merged.append(syms[i])
                    i += 1
            syms = merged
        return syms

    def _id(self, sym: str) -> int:
        i = self.vocab.get(sym)
        if i is None:
            if self.unk_id is None:
                raise TokenizerError(f"symbol {sym!r} is not in the vocabulary and there is no unknown token")
            return int(self.unk_id)
        return i

    # -- llama (SentencePiece BPE) -----------------------------------------------------------
    def _encode_spm(self, text: str) -> list[int]:
        if not text:
            return []
        if self.add_space_prefix:
            text = " " + text
        syms = list(text.replace(" ", "\u2581"))
        n = len(syms)
        prev = list(range(-1, n - 1))
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        alive = [True] * n
        heap: list[tuple[float, int, int, str]] = []

        def push(i):
            j = nxt[i]
            if j < 0:
                return
            s = syms[i] + syms[j]
            t = self.vocab.get(s)
            if t is not None:
                heapq.heappush(heap, (-self.scores[t], i, j, s))

        for i in range(n - 1):
            push(i)
        while heap:
            _, i, j, s = heapq.heappop(heap)
            if not (alive[i] and alive[j]) or nxt[i] != j or syms[i] + syms[j] != s:
                continue  # stale entry
            syms[i] = s
            alive[j] = False
            nxt[i] = nxt[j]
            if nxt[j] >= 0:
                prev[nxt[j]] = i
            if prev[i] >= 0:
                push(prev[i])
            push(i)
        out: list[int] = []
        i = 0
        while i >= 0 and i < n:
            if alive[i]:
                t = self.vocab.get(syms[i])
                if t is not None:
                    out.append(t)
                else:
                    for b in syms[i].encode("utf-8"):
                        bt = self.byte_ids[b]
                        out.append(bt if bt is not None else self._id(syms[i]))
            i = nxt[i]
        return out
