"""com.microsoft MultiHeadAttention with masks and a key/value cache against ONNX Runtime:
key counts and 0/1 key padding masks (masked keys get `mask_filter_value`), an attention
bias (per head or shared), past_key/past_value before the new keys with the present
state as outputs, causal attention over a cache (aligned to the end of the keys), a
bias on Q, K and V, a cross attention's [B, N, L, H] keys and values; packed QKV and KV
against ORT's MHA on the same values unpacked (its CPU kernel has no packed forms); and
the errors for forms dlc does not take."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from conftest import dlc, dlc_run, ort_run

B, S, L, N, H = 2, 3, 3, 2, 4


def _model(path, *, past=0, mask=None, bias=None, qkv_bias=False, outputs=("y", "present_k", "present_v"), **attrs):
    f = T.FLOAT
    ins = [h.make_tensor_value_info(n, f, [B, s, N * H]) for n, s in (("q", S), ("k", L), ("v", L))]
    names = ["q", "k", "v", "qkv_bias" if qkv_bias else ""]
    inits = []
    if qkv_bias:
        inits.append(h.make_tensor("qkv_bias", f, [3 * N * H], np.linspace(-1, 1, 3 * N * H).astype(np.float32)))
    if mask is not None:
        ins.append(h.make_tensor_value_info("mask", T.INT32, mask))
    names.append("mask" if mask is not None else "")
    if bias is not None:
        ins.append(h.make_tensor_value_info("attn_bias", f, bias))
    names.append("attn_bias" if bias is not None else "")
    if past:
        ins += [h.make_tensor_value_info(n, f, [B, N, past, H]) for n in ("past_k", "past_v")]
        names += ["past_k", "past_v"]
    while names and not names[-1]:
        names.pop()
    node = h.make_node("MultiHeadAttention", names, list(outputs), domain="com.microsoft", num_heads=N, **attrs)
    g = h.make_graph([node], "mha", ins, [h.make_tensor_value_info(o, f, None) for o in outputs if o], initializer=inits)
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("com.microsoft", 1)]), str(path))


def _feeds(rng, past=0, mask=None, bias=None):
    n = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    feeds = {"q": n(B, S, N * H), "k": n(B, L, N * H), "v": n(B, L, N * H)}
    if past:
        feeds |= {"past_k": n(B, N, past, H), "past_v": n(B, N, past, H)}
    if mask == [B]:
        feeds["mask"] = np.array([past + L, past + 1], np.int32)
    elif mask is not None:
        m = np.ones(mask, np.int32)
        m[0, -1] = 0
        m[1, :2] = 0
        feeds["mask"] = m
    if bias is not None:
        feeds["attn_bias"] = n(*bias)
    return feeds


CASES = {
    "key_counts": dict(mask=[B]),
    "padding_mask": dict(mask=[B, L]),
    "padding_mask_custom_fill": dict(mask=[B, L], mask_filter_value=-50.0),
    "bias_per_head": dict(bias=[B, N, S, L]),
    "bias_shared_and_mask": dict(bias=[1, 1, S, L], mask=[B, L]),
    "past": dict(past=4),
    "past_causal": dict(past=4, unidirectional=1),
    "past_mask_bias_scale": dict(past=2, mask=[B, 2 + L], bias=[B, 1, S, 2 + L], scale=0.7, qkv_bias=True),
    "past_key_counts_causal": dict(past=3, mask=[B], unidirectional=1),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_mha_matches_ort(case, tmp_path):
    c = dict(CASES[case])
    path = tmp_path / "mha.onnx"
    _model(path, **c)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    feeds = _feeds(np.random.default_rng(len(case)), c.get("past", 0), c.get("mask"), c.get("bias"))
    got, want = dlc_run(art, path, feeds, tmp_path), ort_run(path, feeds)
    for name in ("y", "present_k", "present_v"):
        assert got[name].shape == want[name].shape, name
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_unsupported_forms_are_clear_errors(tmp_path):
    path = tmp_path / "mha.onnx"
    _model(path, mask=[B, 3 * B + 2])
    p = dlc("compile", path, "-o", tmp_path / "art", check=False)
    assert p.returncode != 0 and "key_padding_mask" in p.stderr and "panicked" not in p.stderr, p.stderr
    _model(path, outputs=("y", "", "", "qk"))
    p = dlc("compile", path, "-o", tmp_path / "art2", check=False)
    assert p.returncode != 0 and "qk output" in p.stderr and "panicked" not in p.stderr, p.stderr


def _packed_model(path, form, bias=False):
    f = T.FLOAT
    if form == "qkv":
        ins = [h.make_tensor_value_info("qkv", f, [B, S, N, 3, H])]
        names = ["qkv", "", ""]
    elif form == "kv":
        ins = [h.make_tensor_value_info("q", f, [B, S, N * H]), h.make_tensor_value_info("kv", f, [B, L + 1, N, 2, H])]
        names = ["q", "kv", ""]
    else:  # a cross attention's projected keys and values, [B, N, L, H]
        ins = [h.make_tensor_value_info("q", f, [B, S, N * H]), h.make_tensor_value_info("k4", f, [B, N, L + 2, H]),
               h.make_tensor_value_info("v4", f, [B, N, L + 2, H])]
        names = ["q", "k4", "v4"]
    inits = []
    if bias:
        inits.append(h.make_tensor("b", f, [3 * N * H], np.linspace(-1, 1, 3 * N * H).astype(np.float32)))
        names.append("b")
    node = h.make_node("MultiHeadAttention", names, ["y"], domain="com.microsoft", num_heads=N)
    g = h.make_graph([node], "mha", ins, [h.make_tensor_value_info("y", f, None)], initializer=inits)
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("com.microsoft", 1)]), str(path))
    return {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in ins}


@pytest.mark.parametrize("form,bias", [("qkv", False), ("qkv", True), ("kv", False), ("bnsh", False)])
def test_packed_and_4d_forms_match_ort(form, bias, tmp_path):
    path = tmp_path / "mha.onnx"
    shapes = _packed_model(path, form, bias)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    rng = np.random.default_rng(len(form))
    feeds = {k: rng.standard_normal(v).astype(np.float32) for k, v in shapes.items()}
    got = dlc_run(art, path, feeds, tmp_path)["y"]
    if form == "bnsh":
        want = ort_run(path, feeds)["y"]
    else:
        # ONNX Runtime's CPU kernel has no packed forms: the reference is its MHA on the
        # same values unpacked into separate [B, S, N*H] inputs.
        if form == "qkv":
            x = feeds["qkv"]
            q, k, v = (x[:, :, :, i, :].reshape(B, S, N * H) for i in range(3))
        else:
            x = feeds["kv"]
            q = feeds["q"]
            k, v = (x[:, :, :, i, :].reshape(B, L + 1, N * H) for i in range(2))
        ref = tmp_path / "ref.onnx"
        f = T.FLOAT
        ins = [h.make_tensor_value_info(n, f, list(a.shape)) for n, a in (("q", q), ("k", k), ("v", v))]
        inits = [h.make_tensor("b", f, [3 * N * H], np.linspace(-1, 1, 3 * N * H).astype(np.float32))] if bias else []
        node = h.make_node("MultiHeadAttention", ["q", "k", "v"] + (["b"] if bias else []), ["y"],
                           domain="com.microsoft", num_heads=N)
        g = h.make_graph([node], "ref", ins, [h.make_tensor_value_info("y", f, None)], initializer=inits)
        onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("com.microsoft", 1)]), str(ref))
        want = ort_run(ref, {"q": q, "k": k, "v": v})["y"]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
