"""General English text for ROME's key covariance (mom2) of a real model.

The covariance C = E[k k^T] should be measured on text like what the model usually sees: the edit
u = C^-1 k* is the change that disturbs those keys least. For the shipped world models that is the world
corpus they were trained on; for a model trained on the web (SmolLM2-135M) the narrow world corpus would
protect the wrong keys. This module supplies ordinary, natural English prose that installs offline from
Debian: Jane Austen's six novels (public domain, 1811-1817), as packaged in Debian's r-cran-janeaustenr.

The package stores the novels as R data (a lazy-load database of character vectors, one line of the
book each); a small reader below decodes that format, so neither R nor any Python package is needed at
run time (installing the Debian package pulls in r-base-core, which knlab never runs). The lines are
joined into paragraphs, headings and other short lines are dropped, and long paragraphs are cut at
sentence ends into texts of at most MAX_WORDS words. The books are interleaved paragraph by paragraph,
so any prefix (``limit``) draws on all six."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import os
import re
import struct
import zlib
from functools import lru_cache
from itertools import chain, zip_longest
from pathlib import Path
from typing import Any

from knlab.core.errors import InputError
from knlab.world.training_corpus import build_documents

ENGLISH_SOURCE: dict[str, str] = {
    "name": "janeaustenr",
    "package": "r-cran-janeaustenr (Debian)",
    "version": "1.0.0-1 (Debian 12 bookworm)",
    "install": "apt-get install --no-install-recommends r-cran-janeaustenr",
    "licence": "texts public domain (Project Gutenberg editions); package MIT (Julia Silge)",
    "text": "Jane Austen's six completed novels: Sense and Sensibility, Pride and Prejudice, Mansfield Park, "
            "Emma, Northanger Abbey, Persuasion (~717,000 words of English literary prose)",
}

MIN_WORDS = 5
MAX_WORDS = 60
BOOKS = ("sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion")
_R_ROOTS = ("/usr/lib/R/site-library", "/usr/local/lib/R/site-library", "/usr/lib/R/library")
_ENV = "KNLAB_JANEAUSTENR"  # the package folder, e.g. from `dpkg -x r-cran-janeaustenr_*.deb DIR` (no R)


def english_texts(limit: int | None = None) -> list[str]:
    """Paragraphs (or runs of whole sentences) of English prose, one line each, MIN_WORDS to about
    MAX_WORDS words, in a fixed order; the first ``limit`` of them if given."""
    texts = _all_texts()
    return list(texts if limit is None else texts[:limit])


@lru_cache(maxsize=1)
def _all_texts() -> tuple[str, ...]:
    books = _read_books(_data_dir())
    per_book = [[t for p in _paragraphs(books[name]) for t in _chunks(p)] for name in BOOKS]
    return tuple(t for t in chain.from_iterable(zip_longest(*per_book)) if t is not None)


def _data_dir() -> Path:
    roots = [os.environ[_ENV]] if os.environ.get(_ENV) else [f"{r}/janeaustenr" for r in _R_ROOTS]
    for root in roots:
        data = Path(root) / "data"
        if (data / "Rdata.rdx").is_file() and (data / "Rdata.rdb").is_file():
            return data
    raise InputError(f"the English corpus needs Jane Austen's novels: {ENGLISH_SOURCE['install']}")


# --- text --------------------------------------------------------------------------------------------

_TITLES = "".join(rf"(?<!\b{t}\.)" for t in ("Mr", "Mrs", "Dr", "St", "Messrs", "Col", "Capt", "Esq"))
_SENTENCE_END = re.compile(rf"(?<=[.!?]){_TITLES}[\"')]*\s+(?=[\"'(]?[A-Z])")
_CLAUSE_END = re.compile(r"(?<=[;:])\s+|(?<=--)(?=\S)")  # for sentences longer than MAX_WORDS


def _paragraphs(lines: list[str | None]) -> list[str]:
    """Blank-line separated paragraphs, whitespace-normalised; headings, title lines, other short or
    all-capitals lines, editors' [notes] and *footnotes dropped."""
    out: list[str] = []
    current: list[str] = []
    for line in chain(lines, [""]):
        line = (line or "").strip()
        if line:
            current.append(line)
            continue
        if current:
            text = " ".join(" ".join(current).replace("_", "").replace("*", "").split())
            if len(text.split()) >= MIN_WORDS and not _mostly_capitals(text) and text[0] not in "[*":
                out.append(text)
            current = []
    return out


def _mostly_capitals(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return sum(c.isupper() for c in letters) > 0.5 * len(letters)


def _chunks(paragraph: str) -> list[str]:
    """The paragraph itself if short enough, else consecutive whole sentences of at most MAX_WORDS
    words (a longer sentence cut after its semicolons, colons and dashes; a longer clause stays whole)."""
    if len(paragraph.split()) <= MAX_WORDS:
        return [paragraph]
    sentences = [piece for s in _split_sentences(paragraph) for piece in _split_long(s)]
    chunks: list[list[str]] = [[]]
    for sentence in sentences:
        words = sum(len(s.split()) for s in chunks[-1])
        if chunks[-1] and words + len(sentence.split()) > MAX_WORDS:
            chunks.append([])
        chunks[-1].append(sentence)
    return [" ".join(c) for c in chunks if len(" ".join(c).split()) >= MIN_WORDS]


def _split_long(sentence: str) -> list[str]:
    if len(sentence.split()) <= MAX_WORDS:
        return [sentence]
    return [c for c in (c.strip() for c in _CLAUSE_END.split(sentence)) if c]


def _split_sentences(paragraph: str) -> list[str]:
    out: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(paragraph):
        end = m.start() + len(m.group(0).rstrip())  # keep closing quotes with their sentence
        out.append(paragraph[start:end].strip())
        start = m.end()
    out.append(paragraph[start:].strip())
    return [s for s in out if s]


# --- R lazy-load data ----------------------------------------------------------------------------------

def _read_books(data: Path) -> dict[str, list[str | None]]:
    """The package's character vectors by name, from R's lazy-load database: Rdata.rdx (a gzip'd
    serialised index of name -> (offset, length)) and Rdata.rdb (per object: 4-byte length + zlib)."""
    try:
        index = _RReader(gzip.decompress((data / "Rdata.rdx").read_bytes())).read()
        blob = (data / "Rdata.rdb").read_bytes()
        variables, compressed = index[0], index[2][0]
        books: dict[str, list[str | None]] = {}
        for name, (offset, length) in zip(variables.names, variables):
            books[name] = list(_RReader(_inflate(blob[offset:offset + length], compressed)).read())
    except (OSError, ValueError, EOFError, zlib.error, struct.error, IndexError, TypeError) as e:
        raise InputError(f"cannot read Jane Austen's novels under {data} ({e}); reinstall: "
                         f"{ENGLISH_SOURCE['install']}") from e
    missing = [b for b in BOOKS if b not in books]
    if missing:
        raise InputError(f"Jane Austen's novels under {data} lack {', '.join(missing)}")
    return books


def _inflate(record: bytes, compressed: int) -> bytes:
    """One lazy-load record: 4-byte length, then zlib (compressed=1) or a type byte and a zlib, bzip2,
    xz or raw stream (compressed=2 or 3, as R's LazyDataCompression chooses)."""
    if compressed == 1:
        return zlib.decompress(record[4:])
    kind, body = record[4:5], record[5:]
    inflaters = {b"Z": zlib.decompress, b"2": bz2.decompress, b"X": lzma.decompress, b"0": bytes}
    if kind not in inflaters:
        raise ValueError(f"unknown lazy-load compression {kind!r}")
    return inflaters[kind](body)


class _RVector(list):
    """An R vector (list, character, integer, ...) with its names attribute, if any."""

    names: list[str | None] = []


class _RReader:
    """Just enough of R's XDR serialisation (format 2 or 3) for data: vectors, strings, pairlists,
    symbols and references."""

    _SPECIAL = {254, 253, 252, 251, 250, 242, 241}  # NULL, environments, unbound, missing
    _NUMERIC = {10: "i", 13: "i", 14: "d"}  # logical, integer, double

    def __init__(self, data: bytes) -> None:
        if data[:2] != b"X\n":
            raise ValueError("not an R XDR serialisation")
        self.data, self.pos, self.refs = data, 2, []  # refs: symbols, in the order read
        version = self._int()
        self.pos += 8  # writer and minimal reader versions
        if version == 3:
            self.pos += 4 + self._int()  # native encoding

    def read(self) -> Any:
        flags = self._int()
        kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if kind in self._SPECIAL:
            return None
        if kind == 255:  # reference to an earlier symbol
            return self.refs[(flags >> 8) - 1]
        if kind == 1:  # symbol
            symbol = self.read()
            self.refs.append(symbol)
            return symbol
        if kind == 9:  # string
            n = self._int()
            if n == -1:
                return None
            self.pos += n
            encoding = "latin-1" if (flags >> 12) & 4 else "utf-8"  # R's LATIN1 mark, else UTF-8/ASCII
            return self.data[self.pos - n:self.pos].decode(encoding, errors="replace")
        if kind == 2:  # pairlist: [(tag, value), ...]
            if has_attr:
                self.read()
            tag = self.read() if has_tag else None
            head = (tag, self.read())
            return [head] + (self.read() or [])
        if kind in (16, 19) or kind in self._NUMERIC:
            return self._vector(kind, has_attr)
        raise ValueError(f"unsupported R type {kind}")

    def _vector(self, kind: int, has_attr: int) -> _RVector:
        n = self._int()
        if kind in self._NUMERIC:
            code = self._NUMERIC[kind]
            size = struct.calcsize(">" + code)
            out = _RVector(struct.unpack_from(f">{n}{code}", self.data, self.pos))
            self.pos += n * size
        else:
            out = _RVector(self.read() for _ in range(n))
        if has_attr:
            out.names = dict(self.read()).get("names") or []
        return out

    def _int(self) -> int:
        self.pos += 4
        return struct.unpack_from(">i", self.data, self.pos - 4)[0]


# ROME's key covariance corpora by name; anything else is a text file, one text per line
COVARIANCE_CORPORA = ("world", "english")


@lru_cache(maxsize=1)
def _world_texts() -> tuple[str, ...]:
    return tuple(d.text for d in build_documents())


def covariance_corpus(corpus: str | None = None) -> tuple[str, list[str]]:
    """(a short name that identifies the texts, the texts) for ROME's key covariance. ``corpus``: None or
    "world" (the shipped world corpus, what the organisms were trained on), "english" (general English
    prose, above), or a text file (one text per non-empty line), as for a hub model."""
    if corpus in (None, "", "world"):
        return "world", list(_world_texts())
    if corpus == "english":
        return "english", english_texts()
    path = Path(corpus)
    if not path.is_file():
        raise InputError(f"covariance corpus {corpus!r} is neither {' nor '.join(COVARIANCE_CORPORA)} nor a file")
    texts = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    if not texts:
        raise InputError("the covariance corpus has no text")
    return f"{path.name}-{hashlib.blake2b(path.read_bytes(), digest_size=6).hexdigest()}", texts
