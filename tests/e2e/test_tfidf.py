"""TfIdfVectorizer against ONNX Runtime: unigrams, bigrams and trigrams with skips, TF,
IDF and TFIDF with and without weights, [C] and [B, C] tokens of int32 and int64, one
artifact at a run-time batch and row length; and string tokens (pool_strings)."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from conftest import assert_close, dlc, dlc_run, ort_run

# Unigrams 2, 3, 5; bigrams (5, 6), (7, 8), (2, 3); trigrams (1, 2, 3), (4, 4, 4).
POOL = [2, 3, 5, 5, 6, 7, 8, 2, 3, 1, 2, 3, 4, 4, 4]
COUNTS = [0, 3, 9]
INDEXES = [0, 1, 2, 3, 4, 5, 6, 7]


def _model(path, mode, weights, dims, dtype=T.INT64, min_n=1, max_n=3, skip=2):
    attrs = dict(mode=mode, min_gram_length=min_n, max_gram_length=max_n, max_skip_count=skip,
                 ngram_counts=COUNTS, ngram_indexes=INDEXES, pool_int64s=POOL)
    if weights:
        attrs["weights"] = [0.5, 1.0, 2.0, 0.25, 3.0, 1.5, 0.75, 4.0]
    g = h.make_graph([h.make_node("TfIdfVectorizer", ["x"], ["y"], **attrs)], "tfidf",
                     [h.make_tensor_value_info("x", dtype, dims)], [h.make_tensor_value_info("y", T.FLOAT, None)])
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), str(path))
    return path


def _tokens(rng, shape, dtype):
    # Small token values so the pool's n-grams occur, at several skips.
    return rng.integers(1, 9, shape).astype(dtype)


@pytest.mark.parametrize("mode,weights", [("TF", False), ("IDF", False), ("IDF", True), ("TFIDF", True),
                                          ("TFIDF", False)])
def test_tfidf_matches_ort_at_run_time_shapes(mode, weights, tmp_path):
    path = _model(tmp_path / "m.onnx", mode, weights, ["b", "c"])
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    rng = np.random.default_rng(len(mode) + weights)
    for b, c in [(1, 12), (3, 40), (2, 7), (2, 3), (1, 1)]:  # rows shorter than an n-gram too
        feeds = {"x": _tokens(rng, (b, c), np.int64)}
        work = tmp_path / f"{b}x{c}"
        work.mkdir()
        got, want = dlc_run(art, path, feeds, work)["y"], ort_run(path, feeds)["y"]
        assert c < 7 or want.sum() > 0, "the case must count something"
        assert_close(got, want, f"{mode} weights={weights} {b}x{c}")


@pytest.mark.parametrize("min_n,max_n,skip", [(1, 1, 3), (2, 2, 0), (2, 3, 1), (3, 3, 4)])
def test_tfidf_gram_ranges_and_skips_on_a_vector_of_int32(min_n, max_n, skip, tmp_path):
    path = _model(tmp_path / "m.onnx", "TF", False, [30], T.INT32, min_n, max_n, skip)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    feeds = {"x": _tokens(np.random.default_rng(skip), (30,), np.int32)}
    got, want = dlc_run(art, path, feeds, tmp_path)["y"], ort_run(path, feeds)["y"]
    assert_close(got, want, f"n {min_n}..{max_n} skip {skip}")


WORDS = ["", "cat", "sat", "on", "the", "mat", "été", "dog"]


@pytest.mark.parametrize("mode,weights", [("TF", False), ("TFIDF", True)])
def test_string_tokens_match_ort(mode, weights, tmp_path):
    """pool_strings over a string tensor: the pool's words numbered, the tokens mapped to
    them (unknown words count nothing), then the integer algorithm; one artifact at a
    run-time batch and row length, against ONNX Runtime."""
    pool = [WORDS[t - 1] if t <= len(WORDS) else f"w{t}" for t in POOL]
    attrs = dict(mode=mode, min_gram_length=1, max_gram_length=3, max_skip_count=2, ngram_counts=COUNTS,
                 ngram_indexes=INDEXES, pool_strings=pool)
    if weights:
        attrs["weights"] = [0.5, 1.0, 2.0, 0.25, 3.0, 1.5, 0.75, 4.0]
    g = h.make_graph([h.make_node("TfIdfVectorizer", ["x"], ["y"], **attrs)], "tfidf",
                     [h.make_tensor_value_info("x", T.STRING, ["b", "c"])], [h.make_tensor_value_info("y", T.FLOAT, None)])
    path = tmp_path / "s.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), str(path))
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    rng = np.random.default_rng(7)
    vocab = np.array(WORDS + ["w9", "unknown"], dtype=object)
    for b, c in [(1, 12), (3, 30), (2, 2)]:
        x = vocab[rng.integers(0, len(vocab), (b, c))]
        work = tmp_path / f"{b}x{c}"
        work.mkdir()
        got = dlc_run(art, path, {"x": x.astype(str)}, work)["y"]
        want = ort_run(path, {"x": x})["y"]
        assert c < 7 or want.sum() > 0, "the case must count something"
        assert_close(got, want, f"strings {mode} {b}x{c}")
