"""Text embedders for KNNFewShot, as ``dspy.Embedder`` objects.

``hashing`` (the default) is a local, deterministic, lexical embedder: a hashed bag of normalized
word n-grams. It needs no model download and no network, gives the same vector for the same text on
every machine and Python process (the hash is BLAKE2b, not Python's salted ``hash``), and ranks
texts by the words they share. It is a real embedder of *lexical* similarity, the kind of signal a
TF vectorizer gives: "where is my parcel" is near "my parcel has not arrived" because both say
"parcel", but it does not know that "parcel" and "package" mean the same thing. In production,
configure a semantic embedding model instead (``embedder: openai/text-embedding-3-small`` or any
LiteLLM embedding model name); the provider key is read by LiteLLM from the environment.

Hashing, step by step:
1. Unicode NFKD, accents dropped, case folded; words are runs of letters and digits.
2. English stop words are dropped (the offline LM's list) and a plural ``s`` is stripped from words
   longer than three letters ("refunds" → "refund", but "class" stays).
3. Features are the word n-grams for n = 1..``ngrams`` (bigrams keep some word order).
4. Each feature adds ±1 at position ``h mod dimensions`` of a ``dimensions``-long vector, ``h`` being
   the first 8 bytes of BLAKE2b(feature) and the sign its top bit (signed hashing keeps collisions
   unbiased); the vector is then L2-normalized, so a dot product is a cosine similarity. A text
   without words gets the zero vector (similarity 0 to everything).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

import dspy
import numpy as np

from teleprompt_assets.core.lm import STOPWORDS

HASHING = "hashing"
HASHING_VERSION = 1  # recorded with a compiled program; bump when the vectors change
DEFAULT_DIMENSIONS = 1024
DEFAULT_NGRAMS = 2
_WORD = re.compile(r"[^\W_]+")
_PERSON = b"teleprompt-knn"  # BLAKE2b personalization: these hashes are ours alone


def words(text: str) -> list[str]:
    """Normalized content words of ``text``, in order."""
    folded = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).casefold()
    return [w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in _WORD.findall(folded) if w not in STOPWORDS]


def features(text: str, ngrams: int = DEFAULT_NGRAMS) -> list[str]:
    tokens = words(text)
    return [" ".join(tokens[i : i + n]) for n in range(1, ngrams + 1) for i in range(len(tokens) - n + 1)]


class HashingEmbedder:
    """``texts -> float32 array (len(texts), dimensions)``, rows L2-normalized (see the module docstring)."""

    def __init__(self, dimensions: int = DEFAULT_DIMENSIONS, ngrams: int = DEFAULT_NGRAMS) -> None:
        if dimensions < 1 or ngrams < 1:
            raise ValueError("dimensions and ngrams must be positive")
        self.dimensions = dimensions
        self.ngrams = ngrams

    def __call__(self, texts: Sequence[str], **_: Any) -> np.ndarray:
        out = np.zeros((len(texts), self.dimensions), dtype=np.float64)
        for row, text in enumerate(texts):
            for feature in features(text, self.ngrams):
                h = int.from_bytes(hashlib.blake2b(feature.encode("utf-8"), digest_size=8, person=_PERSON).digest(), "big")
                out[row, h % self.dimensions] += -1.0 if h >> 63 else 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return (out / np.where(norms == 0, 1.0, norms)).astype(np.float32)

    def __repr__(self) -> str:
        return f"HashingEmbedder(dimensions={self.dimensions}, ngrams={self.ngrams})"


def describe(name: str, dimensions: int | None = None, ngrams: int | None = None) -> dict[str, Any]:
    """The embedder's recorded identity (part of a compiled program's state and hash)."""
    if name != HASHING:
        return {"name": name}
    return {"name": HASHING, "version": HASHING_VERSION, "dimensions": dimensions or DEFAULT_DIMENSIONS, "ngrams": ngrams or DEFAULT_NGRAMS}


def build(description: dict[str, Any]) -> dspy.Embedder:
    """A ``dspy.Embedder`` for a :func:`describe` record: the hashing function, or a LiteLLM model."""
    name = description["name"]
    if name != HASHING:
        return dspy.Embedder(name)
    if description.get("version") != HASHING_VERSION:
        raise ValueError(f"hashing embedder version {description.get('version')!r} is not this release's ({HASHING_VERSION})")
    return dspy.Embedder(HashingEmbedder(description["dimensions"], description["ngrams"]), caching=False)
