"""com.microsoft GroupQueryAttention against ONNX Runtime: first prompts, decode steps and
chunked prompts over a key/value cache, grouped heads, packed QKV, rotary embedding
(halves and interleaved, full and partial width), a sliding window, softcap, an
attention bias, rows of different lengths, and a model whose batch, sequence and cache
lengths are run-time dims run at several shapes."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from conftest import dlc, dlc_run, ort_run

HQ, HK, D = 4, 2, 16  # ONNX Runtime's rotary needs D a multiple of 16


def _model(path, b, s, p, total, *, packed=False, rotary=None, bias=False, sink=False, **attrs):
    """GQA over q/k/v [b, s, *] and a cache of p positions (None: no cache); dims may be
    strings (run-time). rotary: (half width, interleaved)."""
    f = T.FLOAT
    ins, names = [], []
    if packed:
        ins.append(h.make_tensor_value_info("qkv", f, [b, s, (HQ + 2 * HK) * D]))
        names += ["qkv", "", ""]
    else:
        ins += [h.make_tensor_value_info("q", f, [b, s, HQ * D]), h.make_tensor_value_info("k", f, [b, s, HK * D]),
                h.make_tensor_value_info("v", f, [b, s, HK * D])]
        names += ["q", "k", "v"]
    if p is not None:
        ins += [h.make_tensor_value_info("past_k", f, [b, HK, p, D]), h.make_tensor_value_info("past_v", f, [b, HK, p, D])]
        names += ["past_k", "past_v"]
    else:
        names += ["", ""]
    ins.append(h.make_tensor_value_info("seqlens_k", T.INT32, [b]))
    names += ["seqlens_k", "total"]
    # total_sequence_length must be known when compiling: a constant here.
    inits = [h.make_tensor("total", T.INT32, [], [total])]
    if rotary:
        half, inter = rotary
        attrs.update(do_rotary=1, rotary_interleaved=int(inter))
        pos = np.arange(32)[:, None] / (10000 ** (np.arange(half) / half))[None, :]
        inits += [h.make_tensor("cos", f, [32, half], np.cos(pos).astype(np.float32).ravel()),
                  h.make_tensor("sin", f, [32, half], np.sin(pos).astype(np.float32).ravel())]
        names += ["cos", "sin"]
    if bias:
        ins.append(h.make_tensor_value_info("bias", f, [b, 1, s, total]))
        names += [""] * (10 - len(names)) + ["bias"]  # input 10: attention_bias
    if sink:
        inits.append(h.make_tensor("sink", f, [HQ], [0.5, -1.0, 2.0, 0.0]))
        names += [""] * (11 - len(names)) + ["sink"]  # input 11: head_sink
    node = h.make_node("GroupQueryAttention", names, ["y", "present_k", "present_v"], domain="com.microsoft",
                       num_heads=HQ, kv_num_heads=HK, **attrs)
    outs = [h.make_tensor_value_info(n, f, None) for n in ("y", "present_k", "present_v")]
    g = h.make_graph([node], "gqa", ins, outs, initializer=inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 21), h.make_opsetid("com.microsoft", 1)])
    onnx.save(m, str(path))


def _feeds(rng, b, s, p, lens=None, packed=False, bias_t=None):
    n = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    total = (p or 0) + s if lens is None else max(lens)
    lens = lens or [total] * b
    feeds = {"qkv": n(b, s, (HQ + 2 * HK) * D)} if packed else {"q": n(b, s, HQ * D), "k": n(b, s, HK * D),
                                                                "v": n(b, s, HK * D)}
    if p is not None:
        feeds |= {"past_k": n(b, HK, p, D), "past_v": n(b, HK, p, D)}
    feeds["seqlens_k"] = np.array(lens, np.int32) - 1
    if bias_t is not None:
        feeds["bias"] = n(b, 1, s, bias_t)
    return feeds


def _check(path, feeds, tmp_path, art, lens=None):
    got, want = dlc_run(art, path, feeds, tmp_path), ort_run(path, feeds)
    np.testing.assert_allclose(got["y"], want["y"], rtol=1e-4, atol=1e-5)
    for name in ("present_k", "present_v"):
        assert got[name].shape == want[name].shape
        if lens is None:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5)
        else:
            # Past a row's length ONNX Runtime leaves its buffer as it was: compare the rows' keys.
            for r, n in enumerate(lens):
                np.testing.assert_allclose(got[name][r, :, :n], want[name][r, :, :n], rtol=1e-4, atol=1e-5)


CASES = {
    "first_prompt": dict(b=2, s=5, p=None),
    "decode": dict(b=2, s=1, p=6),
    "chunked_prompt": dict(b=1, s=3, p=4),
    # ONNX Runtime takes one row when a prompt continues a cache.
    "packed": dict(b=1, s=4, p=3, packed=True),
    "packed_decode": dict(b=2, s=1, p=3, packed=True),
    "rotary_halves": dict(b=1, s=3, p=4, rotary=(8, False)),
    "rotary_decode": dict(b=3, s=1, p=4, rotary=(8, False)),
    "rotary_interleaved": dict(b=1, s=4, p=2, rotary=(8, True)),
    "rotary_first_prompt": dict(b=2, s=6, p=None, rotary=(8, True)),
    "window": dict(b=1, s=4, p=5, local_window_size=2),
    "window_decode": dict(b=2, s=1, p=5, local_window_size=3),
    "softcap_scale": dict(b=1, s=3, p=3, softcap=2.0, scale=0.3),
    "head_sink": dict(b=2, s=1, p=4, sink=True),
    "head_sink_prompt_window": dict(b=1, s=5, p=None, sink=True, local_window_size=2),
    "smooth_softmax": dict(b=2, s=1, p=3, smooth_softmax=1),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_gqa_matches_ort(case, tmp_path):
    c = dict(CASES[case])
    b, s, p, packed = c.pop("b"), c.pop("s"), c.pop("p"), c.get("packed", False)
    path = tmp_path / "gqa.onnx"
    _model(path, b, s, p, (p or 0) + s, **c)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    _check(path, _feeds(np.random.default_rng(len(case)), b, s, p, packed=packed), tmp_path, art)


def test_rows_of_different_lengths(tmp_path):
    # A decode step over a cache of 6 positions where row 0 holds 3 keys and row 1 holds 6.
    path = tmp_path / "gqa.onnx"
    _model(path, 2, 1, 6, 7, rotary=(8, False))
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    lens = [4, 7]
    _check(path, _feeds(np.random.default_rng(3), 2, 1, 6, lens=lens), tmp_path, art, lens=lens)


def test_attention_bias(tmp_path):
    path = tmp_path / "gqa.onnx"
    _model(path, 1, 3, 4, 7, bias=True)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    _check(path, _feeds(np.random.default_rng(5), 1, 3, 4, bias_t=7), tmp_path, art)


def test_run_time_batch(tmp_path):
    path = tmp_path / "gqa.onnx"
    _model(path, "batch", 1, 5, 6, rotary=(8, False))
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    for b in (1, 3):
        _check(path, _feeds(np.random.default_rng(b), b, 1, 5), tmp_path, art)


def _exported_model(path):
    """As onnxruntime.transformers' converter wires GQA into a decoder: seqlens_k and
    total_sequence_length computed from the attention mask, every length a dim_param."""
    f = T.FLOAT
    ins = [h.make_tensor_value_info("q", f, ["batch", "seq", HQ * D]),
           h.make_tensor_value_info("k", f, ["batch", "seq", HK * D]),
           h.make_tensor_value_info("v", f, ["batch", "seq", HK * D]),
           h.make_tensor_value_info("past_k", f, ["batch", HK, "past", D]),
           h.make_tensor_value_info("past_v", f, ["batch", HK, "past", D]),
           h.make_tensor_value_info("attention_mask", T.INT64, ["batch", "total"])]
    nodes = [
        h.make_node("ReduceSum", ["attention_mask", "one"], ["row_sums"]),
        h.make_node("Sub", ["row_sums", "one"], ["seqlens_i64"]),
        h.make_node("Cast", ["seqlens_i64"], ["seqlens_k"], to=T.INT32),
        h.make_node("Shape", ["attention_mask"], ["mask_shape"]),
        h.make_node("Gather", ["mask_shape", "one"], ["total_i64"], axis=0),
        h.make_node("Cast", ["total_i64"], ["total"], to=T.INT32),
        h.make_node("GroupQueryAttention", ["q", "k", "v", "past_k", "past_v", "seqlens_k", "total", "cos", "sin"],
                    ["y", "present_k", "present_v"], domain="com.microsoft", num_heads=HQ, kv_num_heads=HK,
                    do_rotary=1),
    ]
    pos = np.arange(32)[:, None] / (10000 ** (np.arange(8) / 8))[None, :]
    inits = [h.make_tensor("one", T.INT64, [1], [1]),
             h.make_tensor("cos", f, [32, 8], np.cos(pos).astype(np.float32).ravel()),
             h.make_tensor("sin", f, [32, 8], np.sin(pos).astype(np.float32).ravel())]
    outs = [h.make_tensor_value_info(n, f, None) for n in ("y", "present_k", "present_v")]
    g = h.make_graph(nodes, "decoder_attention", ins, outs, initializer=inits)
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("com.microsoft", 1)]), str(path))


@pytest.mark.parametrize("b,s,p", [(2, 1, 5), (1, 6, 0), (1, 3, 4)])
def test_exported_decoder_pattern_with_pinned_shapes(b, s, p, tmp_path):
    path = tmp_path / "gqa.onnx"
    _exported_model(path)
    art = tmp_path / "art"
    t = p + s
    pins = [f"q={b}x{s}x{HQ * D}", f"k={b}x{s}x{HK * D}", f"v={b}x{s}x{HK * D}", f"past_k={b}x{HK}x{p}x{D}",
            f"past_v={b}x{HK}x{p}x{D}", f"attention_mask={b}x{t}"]
    dlc("compile", path, "-o", art, *[a for pin in pins for a in ("--input-shape", pin)])
    feeds = _feeds(np.random.default_rng(s + p), b, s, p)
    del feeds["seqlens_k"]
    feeds["attention_mask"] = np.ones((b, t), np.int64)
    _check(path, feeds, tmp_path, art)


def test_exported_decoder_pattern_at_run_time_lengths(tmp_path):
    """The same model with nothing pinned: batch, new tokens and cache length are
    run-time dims of one artifact, run at a prompt, decode steps and a chunk."""
    path = tmp_path / "gqa.onnx"
    _exported_model(path)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    for b, s, p in [(1, 4, 1), (2, 1, 5), (1, 3, 4), (3, 1, 9)]:
        feeds = _feeds(np.random.default_rng(10 * s + p), b, s, p)
        del feeds["seqlens_k"]
        feeds["attention_mask"] = np.ones((b, p + s), np.int64)
        work = tmp_path / f"b{b}s{s}p{p}"
        work.mkdir()
        _check(path, feeds, work, art)


def test_an_empty_cache_at_run_time(tmp_path):
    """A first prompt with no cache (past length 0) runs on the artifact with nothing
    pinned (a run-time dim may be 0, as ONNX's may), then decode steps on the same
    artifact; each against ORT."""
    path = tmp_path / "gqa.onnx"
    _exported_model(path)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    for b, s, p in [(1, 6, 0), (2, 3, 0), (2, 1, 3)]:
        feeds = _feeds(np.random.default_rng(b + s), b, s, p)
        del feeds["seqlens_k"]
        feeds["attention_mask"] = np.ones((b, p + s), np.int64)
        work = tmp_path / f"b{b}s{s}p{p}"
        work.mkdir()
        _check(path, feeds, work, art)

@pytest.mark.parametrize("mode,case", [(1, dict(b=1, s=3, p=2, softcap=2.0)), (1, dict(b=2, s=1, p=4, bias=True)),
                                       (2, dict(b=1, s=4, p=3, local_window_size=2)), (2, dict(b=2, s=5, p=None)),
                                       (1, dict(b=1, s=4, p=2, rotary=(8, False), scale=0.3))])
def test_output_qk_matches_ort(mode, case, tmp_path):
    """The fourth output (`qk_output` 1: the scaled, soft-capped scores plus the bias,
    masked positions 0; 2: the probabilities), [B, num_heads, S, T], against ORT."""
    path = tmp_path / "gqa.onnx"
    b, s, p = case.pop("b"), case.pop("s"), case.pop("p")
    total = (p or 0) + s
    _model(path, b, s, p, total, qk_output=mode, **case)
    m = onnx.load(str(path))
    m.graph.node[0].output.append("qk")
    m.graph.output.append(h.make_tensor_value_info("qk", T.FLOAT, None))
    onnx.save(m, str(path))
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    feeds = _feeds(np.random.default_rng(mode + s), b, s, p, bias_t=total if case.get("bias") else None)
    got, want = dlc_run(art, path, feeds, tmp_path), ort_run(path, feeds)
    assert got["qk"].shape == want["qk"].shape == (b, HQ, s, total)
    np.testing.assert_allclose(got["qk"], want["qk"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["y"], want["y"], rtol=1e-4, atol=1e-5)
