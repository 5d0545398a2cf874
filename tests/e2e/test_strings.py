"""String tensors (docs/strings.md) against ONNX Runtime: StringNormalizer (case changes
of ASCII and Latin-1 letters, stopwords compared with and without case, [C] and [1, C]
inputs, every element removed), Equal of strings with broadcasting, a string input
returned as it is, and a run whose input has the wrong number of strings."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from conftest import dlc, dlc_run, dlc_run_process, ort_run

WORDS = ["Monday", "tuesday", "MONDAY", "Été", "straße", "àéîõü ÀÉÎÕÜ", "x×y÷z", "", "été", "mon day", "Ω ω"]


def _save(path, nodes, ins, outs, opset=20):
    g = h.make_graph(nodes, "g", ins, outs)
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", opset)]), str(path))


def _strings(x):
    return np.array(x, dtype=object)


@pytest.mark.parametrize("case", ["NONE", "LOWER", "UPPER"])
@pytest.mark.parametrize("sensitive", [0, 1])
@pytest.mark.parametrize("two_d", [False, True])
def test_string_normalizer_matches_ort(case, sensitive, two_d, tmp_path):
    shape = [1, len(WORDS)] if two_d else [len(WORDS)]
    node = h.make_node("StringNormalizer", ["x"], ["y"], case_change_action=case, is_case_sensitive=sensitive,
                       stopwords=["monday", "ÉTÉ", "mon day"], locale="C.UTF-8")
    path = tmp_path / "sn.onnx"
    _save(path, [node], [h.make_tensor_value_info("x", T.STRING, shape)], [h.make_tensor_value_info("y", T.STRING, None)])
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    rng = np.random.default_rng(sensitive * 2 + two_d)
    for trial in range(3):
        x = _strings(rng.permutation(WORDS)).reshape(shape)
        got, want = dlc_run(art, path, {"x": x}, tmp_path)["y"], ort_run(path, {"x": x})["y"]
        assert got.shape == want.shape and got.tolist() == want.tolist(), (trial, x, got, want)


@pytest.mark.parametrize("locale", ["C", "C.UTF-8"])
def test_case_change_follows_the_locale(locale, tmp_path):
    """The C locale changes ASCII letters only; a UTF-8 one Latin-1 letters too."""
    node = h.make_node("StringNormalizer", ["x"], ["y"], case_change_action="UPPER", locale=locale)
    path = tmp_path / "sn.onnx"
    _save(path, [node], [h.make_tensor_value_info("x", T.STRING, [4])], [h.make_tensor_value_info("y", T.STRING, None)])
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    x = _strings(["àéîõü", "abc", "Ünïcödé", "ßÞþ"])
    got, want = dlc_run(art, path, {"x": x}, tmp_path)["y"], ort_run(path, {"x": x})["y"]
    assert got.tolist() == want.tolist()
    if locale != "C":
        assert got.tolist()[0] == "ÀÉÎÕÜ"  # (a check that the Latin-1 path ran at all)


def test_every_string_removed_gives_one_empty_string(tmp_path):
    node = h.make_node("StringNormalizer", ["x"], ["y"], stopwords=["a", "b"], locale="C.UTF-8")
    path = tmp_path / "sn.onnx"
    _save(path, [node], [h.make_tensor_value_info("x", T.STRING, [3])], [h.make_tensor_value_info("y", T.STRING, None)])
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    for x in (["a", "B", "b"], ["a", "c", "a"]):
        got, want = dlc_run(art, path, {"x": _strings(x)}, tmp_path)["y"], ort_run(path, {"x": _strings(x)})["y"]
        assert got.shape == want.shape and got.tolist() == want.tolist(), x


def test_equal_of_strings_broadcasts_like_ort(tmp_path):
    path = tmp_path / "eq.onnx"
    _save(path, [h.make_node("Equal", ["a", "b"], ["y"])],
          [h.make_tensor_value_info("a", T.STRING, [3, 1]), h.make_tensor_value_info("b", T.STRING, ["n"])],
          [h.make_tensor_value_info("y", T.BOOL, None)])
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    a = _strings([["ab"], [""], ["été"]])
    for b in (["ab", "a", "", "été", "abc"], ["été"], ["", "ab"]):
        feeds = {"a": a, "b": _strings(b)}
        np.testing.assert_array_equal(dlc_run(art, path, feeds, tmp_path)["y"], ort_run(path, feeds)["y"])


def test_string_input_returned_and_wrong_count_refused(tmp_path):
    path = tmp_path / "id.onnx"
    _save(path, [h.make_node("Identity", ["x"], ["y"])], [h.make_tensor_value_info("x", T.STRING, [2])],
          [h.make_tensor_value_info("y", T.STRING, None)])
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    x = _strings(["", "ünï"])
    assert dlc_run(art, path, {"x": x}, tmp_path)["y"].tolist() == ort_run(path, {"x": x})["y"].tolist()
    p = dlc_run_process(art, {"x": _strings(["a", "b", "c"])}, tmp_path)
    assert p.returncode != 0 and "'x'" in p.stderr and "panicked" not in p.stderr, p.stderr


def test_string_tensors_refused_where_unsupported(tmp_path):
    path = tmp_path / "cat.onnx"
    _save(path, [h.make_node("Concat", ["x", "x"], ["y"], axis=0)], [h.make_tensor_value_info("x", T.STRING, [2])],
          [h.make_tensor_value_info("y", T.STRING, None)])
    p = dlc("compile", path, "-o", tmp_path / "art", check=False)
    assert p.returncode != 0 and "Concat of a string tensor is not supported" in p.stderr, p.stderr
    p = dlc("compile", path, "-o", tmp_path / "art", "--target", "nvptx64-nvidia-cuda", check=False)
    assert p.returncode != 0 and "string tensor" in p.stderr, p.stderr


@pytest.mark.parametrize("shapes", [([3], [3]), ([2, 1], [3]), ([], [4]), ([1, 3], [2, 1])])
def test_string_concat_broadcasts_like_ort(shapes, tmp_path):
    sa, sb = shapes
    path = tmp_path / "cat.onnx"
    _save(path, [h.make_node("StringConcat", ["a", "b"], ["y"])],
          [h.make_tensor_value_info("a", T.STRING, sa), h.make_tensor_value_info("b", T.STRING, sb)],
          [h.make_tensor_value_info("y", T.STRING, None)])
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    rng = np.random.default_rng(len(sa) * 3 + len(sb))
    for trial in range(3):
        feeds = {k: _strings(rng.choice(WORDS, size=int(np.prod(s, dtype=np.int64)))).reshape(s)
                 for k, s in (("a", sa), ("b", sb))}
        got, want = dlc_run(art, path, feeds, tmp_path)["y"], ort_run(path, feeds)["y"]
        assert got.shape == want.shape and got.tolist() == want.tolist(), (trial, feeds, got, want)


def test_concat_of_normalized_strings(tmp_path):
    """StringNormalizer's table skips the removed elements' bytes; concatenating its
    result with a suffix and comparing it with Equal reads the right ones."""
    nodes = [h.make_node("StringNormalizer", ["x"], ["n"], case_change_action="LOWER", stopwords=["drop"],
                         locale="C.UTF-8"),
             h.make_node("StringConcat", ["n", "suffix"], ["y"]),
             h.make_node("Equal", ["y", "probe"], ["hit"])]
    path = tmp_path / "chain.onnx"
    _save(path, nodes,
          [h.make_tensor_value_info("x", T.STRING, [5]), h.make_tensor_value_info("suffix", T.STRING, []),
           h.make_tensor_value_info("probe", T.STRING, [])],
          [h.make_tensor_value_info("y", T.STRING, None), h.make_tensor_value_info("hit", T.BOOL, None)])
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    for x in (["DROP", "Ab", "drop", "Ωx", "ÉÉ"], ["drop", "drop", "drop", "drop", "drop"]):
        feeds = {"x": _strings(x), "suffix": _strings("-s"), "probe": _strings("ωx-s")}
        got, want = dlc_run(art, path, feeds, tmp_path), ort_run(path, feeds)
        assert got["y"].tolist() == want["y"].tolist(), (x, got, want)
        np.testing.assert_array_equal(got["hit"], want["hit"])


SPLIT_WORDS = ["a,b,,c", "", ",", "é,ü,,", "one", " a  b\tc\n", "x<>y<><>z", "  lead trail  ", "ω,ж", ",,,,,,", "a\x1cb"]


@pytest.mark.parametrize("delimiter,maxsplit", [(",", None), ("<>", None), (None, None), ("", 1), (",", 2), (None, 0)])
@pytest.mark.parametrize("shape", [[5], [2, 3]])
def test_string_split_matches_the_onnx_reference(delimiter, maxsplit, shape, tmp_path):
    """The reference is onnx's (Python's str.split). ONNX Runtime 1.32 differs from it in
    three documented ways (docs/strings.md): an empty string gives no piece under a
    delimiter, only spaces separate without one, and the rest after maxsplit loses its
    trailing spaces; where its outputs equal the reference's, dlc's must equal both."""
    from onnx.reference import ReferenceEvaluator

    attrs = {k: v for k, v in (("delimiter", delimiter), ("maxsplit", maxsplit)) if v is not None}
    path = tmp_path / "split.onnx"
    _save(path, [h.make_node("StringSplit", ["x"], ["y", "n"], **attrs)], [h.make_tensor_value_info("x", T.STRING, shape)],
          [h.make_tensor_value_info("y", T.STRING, None), h.make_tensor_value_info("n", T.INT64, None)])
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    ref = ReferenceEvaluator(str(path))
    rng = np.random.default_rng(len(shape) * 7 + (maxsplit or 0))
    size = int(np.prod(shape))
    agreed = 0
    for trial in range(6):
        words = rng.choice(SPLIT_WORDS, size=size) if trial else np.array(["", " ", "", "  ", "\t", ""][:size])
        feeds = {"x": _strings(words).reshape(shape)}
        got = dlc_run(art, path, feeds, tmp_path)
        want = dict(zip(["y", "n"], ref.run(None, feeds)))
        np.testing.assert_array_equal(got["n"], want["n"])
        assert got["y"].shape == want["y"].shape and got["y"].tolist() == want["y"].tolist(), (trial, feeds, got, want)
        o = ort_run(path, feeds)
        if o["y"].tolist() == want["y"].tolist() and o["n"].tolist() == want["n"].tolist():
            agreed += 1
    assert agreed or delimiter is None or maxsplit is not None, "ORT agreed with the reference on no batch"


REGEX_TEXT = ["www.example.com", "www.a-b.com", "jo.doe@gmail.com", " x@yahoo.com!", "αβγ", "", "HeLLo",
              "abc_9", "été", "x\ty", "1234", "www.é.com"]


@pytest.mark.parametrize("pattern", [r"www\.[\w.-]+\.\bcom\b", r"(\W|^)[\w.\-]{0,25}@(yahoo|gmail)\.com(\W|$)",
                                     r"\p{Greek}+", r"(?i)hello", r"\w+", r"", r"\d{2,4}", r"[^\s]+", r"x\sy"])
def test_regex_full_match_matches_ort(pattern, tmp_path):
    # RE2's meaning (ONNX Runtime's): ASCII \w, \d, \s and \b; `.` and \p over UTF-8.
    path = tmp_path / "re.onnx"
    _save(path, [h.make_node("RegexFullMatch", ["x"], ["y"], pattern=pattern)],
          [h.make_tensor_value_info("x", T.STRING, [3, 4])], [h.make_tensor_value_info("y", T.BOOL, None)])
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    x = _strings(REGEX_TEXT).reshape(3, 4)
    got, want = dlc_run(art, path, {"x": x}, tmp_path)["y"], ort_run(path, {"x": x})["y"]
    assert got.dtype == np.bool_ and got.tolist() == want.tolist(), (pattern, got, want)


def test_regex_that_a_dfa_cannot_take_is_a_clear_error(tmp_path):
    path = tmp_path / "re.onnx"
    _save(path, [h.make_node("RegexFullMatch", ["x"], ["y"], pattern="(a")],
          [h.make_tensor_value_info("x", T.STRING, [2])], [h.make_tensor_value_info("y", T.BOOL, None)])
    p = dlc("compile", path, "-o", tmp_path / "art", check=False)
    assert p.returncode != 0 and "RegexFullMatch" in p.stderr and "pattern '(a'" in p.stderr, p.stderr
    assert "panicked" not in p.stderr


def test_a_bytes_buffer_name_taken_by_another_input_or_output_is_refused(tmp_path):
    # A string tensor X travels as X and X.bytes: a model whose other input or output is
    # already called X.bytes is refused, naming both.
    path = tmp_path / "clash.onnx"
    _save(path, [h.make_node("Identity", ["x"], ["y"]), h.make_node("Identity", ["x.bytes"], ["z"])],
          [h.make_tensor_value_info("x", T.STRING, [2]), h.make_tensor_value_info("x.bytes", T.FLOAT, [2])],
          [h.make_tensor_value_info("y", T.STRING, None), h.make_tensor_value_info("z", T.FLOAT, None)])
    p = dlc("compile", path, "-o", tmp_path / "art", check=False)
    assert p.returncode != 0 and "input 'x' is a string tensor" in p.stderr and "'x.bytes'" in p.stderr, p.stderr
    _save(path, [h.make_node("Identity", ["x"], ["y"]), h.make_node("Identity", ["w"], ["y.bytes"])],
          [h.make_tensor_value_info("x", T.STRING, [2]), h.make_tensor_value_info("w", T.FLOAT, [2])],
          [h.make_tensor_value_info("y", T.STRING, None), h.make_tensor_value_info("y.bytes", T.FLOAT, None)])
    p = dlc("compile", path, "-o", tmp_path / "art", check=False)
    assert p.returncode != 0 and "output 'y' is a string tensor" in p.stderr and "'y.bytes'" in p.stderr, p.stderr
