import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from teleprompt_assets.core import embedder
from teleprompt_assets.core.embedder import HashingEmbedder

EMBED = HashingEmbedder()
# content words only (no stop word, no trailing "s" to strip): what the property below reasons about
WORD = st.text("bcdfghjklmnpqrtvwxz", min_size=4, max_size=9)


def test_vectors_are_unit_length_and_the_same_in_any_batch_and_any_instance():
    texts = ["My parcel never arrived", "the app crashes on start", "refund my last invoice"]
    batch = EMBED(texts)
    assert batch.dtype == np.float32 and batch.shape == (3, embedder.DEFAULT_DIMENSIONS)
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0)
    assert np.array_equal(batch[1], HashingEmbedder()([texts[1]])[0])


def test_the_hash_is_pinned():
    """BLAKE2b, not Python's salted hash(): the same positions in every process. A change here must bump HASHING_VERSION."""
    vector = EMBED(["parcel"])[0]
    assert np.flatnonzero(vector).tolist() == [1021] and vector[1021] == -1.0


def test_normalization_folds_case_accents_plurals_and_stop_words():
    assert np.array_equal(*EMBED(["Café REFUNDS, please!", "cafe refund"]))
    assert not EMBED(["the of and"]).any()  # no content word: the zero vector, similar to nothing


def test_dspy_embedder_wraps_the_recorded_configuration():
    record = embedder.describe(embedder.HASHING, dimensions=256, ngrams=1)
    assert record == {"name": "hashing", "version": embedder.HASHING_VERSION, "dimensions": 256, "ngrams": 1}
    assert embedder.build(record)(["where is my parcel"]).shape == (1, 256)
    assert embedder.describe("openai/text-embedding-3-small") == {"name": "openai/text-embedding-3-small"}
    with pytest.raises(ValueError, match="version"):
        embedder.build(record | {"version": 0})


@settings(max_examples=60, deadline=None)
@given(base=st.lists(WORD, min_size=4, max_size=12, unique=True), other=st.lists(WORD, min_size=4, max_size=12, unique=True),
       drop=st.integers(min_value=0))
def test_a_text_missing_one_word_is_closer_than_a_text_sharing_none(base, other, drop):
    other = [w for w in other if w not in base]
    if len(other) < 4:
        return
    edited = base[: drop % len(base)] + base[drop % len(base) + 1 :]
    a, near, far = EMBED([" ".join(base), " ".join(edited), " ".join(other)])
    assert a @ near > a @ far
    assert a @ near > 0.5

