"""More `com.microsoft` contrib ops, each against ONNX Runtime (which defines them) on
small models: FusedMatMul (its transposes, the batch ones included), MatMulIntegerToFloat, DynamicQuantizeMatMul, the QLinear
elementwise ops, pools and Concat, MatMulNBits (4 and 8 bits, with and without zero
points), MultiHeadAttention (with a bias, causal) and RotaryEmbedding (position ids or an
offset). Quantized results may differ from ORT's by one step (ORT rounds some of them
through lookup tables); float ones match to f32 rounding. Signed 8-bit weights stay
within +-64 (as ORT's `reduce_range` keeps them): on AVX2 without VNNI, ORT's u8 x s8
products pair up in 16 bits and would saturate with full-range weights, so its answer
would depend on the CPU."""
import numpy as np
import onnxruntime as ort
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from conftest import assert_close, dlc, dlc_run, ort_run

R = np.random.default_rng(0)


def _ms(op, ins, outs, **attrs):
    return h.make_node(op, ins, outs, domain="com.microsoft", **attrs)


def _save(path, nodes, inputs, inits, out_type, opset=17):
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info(n, dt, s) for n, dt, s in inputs],
                     [h.make_tensor_value_info("y", out_type, None)], initializer=[nh.from_array(v, k) for k, v in inits.items()])
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", opset), h.make_opsetid("com.microsoft", 1)]), str(path))
    return path


def _u8(*s):
    return R.integers(0, 256, s).astype(np.uint8)


def _f(*s):
    return R.standard_normal(s).astype(np.float32)


def _q(s, zp):
    return {"s": np.array(s, np.float32), "zp": np.array(zp, np.uint8)}


def _nbits(n, k, bits, block, zp):
    blocks = -(-k // block)
    per = 8 // bits
    b = R.integers(0, 256, (n, blocks, block // per)).astype(np.uint8)
    inits = {"B": b, "scales": (R.random(n * blocks) * 0.1 + 0.01).astype(np.float32)}
    ins = ["a", "B", "scales"]
    if zp:
        inits["zp"] = R.integers(0, 256, (n * (-(-blocks * bits // 8)),)).astype(np.uint8)
        ins.append("zp")
    return [_ms("MatMulNBits", ins, ["y"], K=k, N=n, bits=bits, block_size=block)], [], inits


CASES = {
    "fused_matmul": ([_ms("FusedMatMul", ["a", "b"], ["y"], alpha=0.5, transA=1, transB=1)],
                     [("a", T.FLOAT, [2, 5, 3])], {"b": _f(2, 4, 5)}, {"a": _f(2, 5, 3)}, 0),
    # The batch transposes: [M, b, K] read as [b, M, K] (with transA: [K, b, M]).
    "fused_matmul_trans_batch_a": ([_ms("FusedMatMul", ["a", "b"], ["y"], transBatchA=1)],
                                   [("a", T.FLOAT, [4, 2, 6, 3])], {"b": _f(2, 6, 3, 5)}, {"a": _f(4, 2, 6, 3)}, 0),
    "fused_matmul_trans_batch_a_trans_a": ([_ms("FusedMatMul", ["a", "b"], ["y"], transA=1, transBatchA=1)],
                                           [("a", T.FLOAT, [3, 2, 4])], {"b": _f(2, 3, 5)}, {"a": _f(3, 2, 4)}, 0),
    "fused_matmul_trans_batch_both": ([_ms("FusedMatMul", ["a", "b"], ["y"], alpha=2.0, transA=1, transB=1,
                                           transBatchA=1, transBatchB=1)],
                                      [("a", T.FLOAT, [3, 2, 5])], {"b": _f(5, 2, 3)}, {"a": _f(3, 2, 5)}, 0),
    "fused_matmul_trans_batch_b": ([_ms("FusedMatMul", ["a", "b"], ["y"], transBatchB=1)],
                                   [("a", T.FLOAT, [2, 4, 3])], {"b": _f(3, 2, 5)}, {"a": _f(2, 4, 3)}, 0),
    "matmul_integer_to_float": ([_ms("MatMulIntegerToFloat", ["a", "b", "as", "bs", "azp", "bzp", "bias"], ["y"])],
                                [("a", T.UINT8, [3, 8])],
                                {"b": _u8(8, 4), "as": np.array(0.02, np.float32), "bs": (R.random(4) * 0.05).astype(np.float32),
                                 "azp": np.array(128, np.uint8), "bzp": np.array(120, np.uint8), "bias": _f(4)},
                                {"a": _u8(3, 8)}, 0),
    "dynamic_quantize_matmul": ([_ms("DynamicQuantizeMatMul", ["a", "b", "bs", "bzp", "bias"], ["y"])],
                                [("a", T.FLOAT, [2, 3, 8])],
                                {"b": R.integers(-64, 64, (8, 5)).astype(np.int8), "bs": (R.random(5) * 0.05).astype(np.float32),
                                 "bzp": np.zeros(5, np.int8), "bias": _f(5)}, {"a": _f(2, 3, 8)}, 0),
    "qlinear_add": ([_ms("QLinearAdd", ["a", "as", "azp", "b", "bs", "bzp", "cs", "czp"], ["y"])],
                    [("a", T.UINT8, [2, 6]), ("b", T.UINT8, [6])],
                    {"as": np.array(0.05, np.float32), "azp": np.array(100, np.uint8), "bs": np.array(0.03, np.float32),
                     "bzp": np.array(140, np.uint8), "cs": np.array(0.07, np.float32), "czp": np.array(128, np.uint8)},
                    {"a": _u8(2, 6), "b": _u8(6)}, 1),
    "qlinear_mul": ([_ms("QLinearMul", ["a", "as", "azp", "b", "bs", "bzp", "cs", "czp"], ["y"])],
                    [("a", T.UINT8, [2, 6]), ("b", T.UINT8, [2, 6])],
                    {"as": np.array(0.05, np.float32), "azp": np.array(100, np.uint8), "bs": np.array(0.03, np.float32),
                     "bzp": np.array(140, np.uint8), "cs": np.array(0.2, np.float32), "czp": np.array(128, np.uint8)},
                    {"a": _u8(2, 6), "b": _u8(2, 6)}, 1),
    "qlinear_sigmoid": ([_ms("QLinearSigmoid", ["x", "xs", "xzp", "ys", "yzp"], ["y"])], [("x", T.UINT8, [4, 5])],
                        {"xs": np.array(0.05, np.float32), "xzp": np.array(128, np.uint8),
                         "ys": np.array(1 / 256, np.float32), "yzp": np.array(0, np.uint8)}, {"x": _u8(4, 5)}, 1),
    "qlinear_leaky_relu": ([_ms("QLinearLeakyRelu", ["x", "xs", "xzp", "ys", "yzp"], ["y"], alpha=0.2)],
                           [("x", T.UINT8, [4, 5])],
                           {"xs": np.array(0.05, np.float32), "xzp": np.array(128, np.uint8),
                            "ys": np.array(0.04, np.float32), "yzp": np.array(100, np.uint8)}, {"x": _u8(4, 5)}, 1),
    "qlinear_global_average_pool": ([_ms("QLinearGlobalAveragePool", ["x", "xs", "xzp", "ys", "yzp"], ["y"],
                                         channels_last=0)], [("x", T.UINT8, [2, 3, 4, 5])],
                                    {"xs": np.array(0.05, np.float32), "xzp": np.array(128, np.uint8),
                                     "ys": np.array(0.02, np.float32), "yzp": np.array(128, np.uint8)},
                                    {"x": _u8(2, 3, 4, 5)}, 1),
    "qlinear_average_pool_nhwc": ([_ms("QLinearAveragePool", ["x", "xs", "xzp", "ys", "yzp"], ["y"], kernel_shape=[2, 2],
                                       strides=[2, 2], channels_last=1)], [("x", T.UINT8, [1, 6, 6, 3])],
                                  {"xs": np.array(0.05, np.float32), "xzp": np.array(128, np.uint8),
                                   "ys": np.array(0.05, np.float32), "yzp": np.array(128, np.uint8)},
                                  {"x": _u8(1, 6, 6, 3)}, 1),
    "qlinear_concat": ([_ms("QLinearConcat", ["ys", "yzp", "a", "as", "azp", "b", "bs", "bzp"], ["y"], axis=1)],
                       [("a", T.UINT8, [2, 3]), ("b", T.UINT8, [2, 4])],
                       {"ys": np.array(0.1, np.float32), "yzp": np.array(128, np.uint8), "as": np.array(0.05, np.float32),
                        "azp": np.array(120, np.uint8), "bs": np.array(0.2, np.float32), "bzp": np.array(130, np.uint8)},
                       {"a": _u8(2, 3), "b": _u8(2, 4)}, 1),
    "matmul_4bits_zero_points": (*_nbits(6, 40, 4, 16, True), {"a": _f(3, 40)}, 0),
    "matmul_4bits": (*_nbits(5, 32, 4, 32, False), {"a": _f(2, 3, 32)}, 0),
    "matmul_8bits": (*_nbits(4, 48, 8, 16, False), {"a": _f(3, 48)}, 0),
    "multi_head_attention": ([_ms("MultiHeadAttention", ["q", "k", "v", "bias"], ["y"], num_heads=2, unidirectional=1)],
                             [("q", T.FLOAT, [2, 4, 8]), ("k", T.FLOAT, [2, 4, 8]), ("v", T.FLOAT, [2, 4, 8])],
                             {"bias": _f(24)}, {"q": _f(2, 4, 8), "k": _f(2, 4, 8), "v": _f(2, 4, 8)}, 0),
    "rotary_positions": ([_ms("RotaryEmbedding", ["x", "pos", "cos", "sin"], ["y"], num_heads=2)],
                         [("x", T.FLOAT, [2, 5, 8]), ("pos", T.INT64, [2, 5])],
                         {"cos": np.cos(R.random((16, 2))).astype(np.float32), "sin": np.sin(R.random((16, 2))).astype(np.float32)},
                         {"x": _f(2, 5, 8), "pos": R.integers(0, 16, (2, 5)).astype(np.int64)}, 0),
    "rotary_offset_interleaved": ([_ms("RotaryEmbedding", ["x", "pos", "cos", "sin"], ["y"], interleaved=1)],
                                  [("x", T.FLOAT, [1, 2, 5, 4]), ("pos", T.INT64, [1])],
                                  {"cos": np.cos(R.random((16, 2))).astype(np.float32),
                                   "sin": np.sin(R.random((16, 2))).astype(np.float32)},
                                  {"x": _f(1, 2, 5, 4), "pos": np.array([3], np.int64)}, 0),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_contrib_op_matches_ort(name, tmp_path):
    nodes, inputs, inits, feeds, steps = CASES[name]
    if not inputs:
        inputs = [("a", T.FLOAT, list(feeds["a"].shape))]
    path = _save(tmp_path / "m.onnx", nodes, inputs, inits, T.UINT8 if steps else T.FLOAT)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    want = ort_run(path, feeds)["y"]
    got = dlc_run(art, path, feeds, tmp_path)["y"]
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, got.dtype, want.shape, want.dtype)
    if steps:
        diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
        assert diff.max() <= steps, (name, diff.max(), got, want)
    else:
        assert_close(got, want, name)


def test_dynamic_quantize_lstm(tmp_path):
    """DynamicQuantizeLSTM against ONNX Runtime's own, which quantizes the input sequence
    and each step's hidden state to uint8 (to f32 rounding; ORT at one thread, since with
    several it quantizes a batch's rows in chunks), and within quantization error of the
    float LSTM on the dequantized weights."""
    hid, inp, dirs = 4, 3, 2
    wq = R.integers(-64, 64, (dirs, inp, 4 * hid)).astype(np.int8)
    rq = R.integers(-64, 64, (dirs, hid, 4 * hid)).astype(np.int8)
    ws, rs = (R.random((dirs, 4 * hid)) * 0.02).astype(np.float32), np.array([0.008, 0.01], np.float32)
    wz, rz = np.zeros((dirs, 4 * hid), np.int8), np.zeros(dirs, np.int8)
    b = _f(dirs, 8 * hid)
    inits = {"W": wq, "R": rq, "B": b, "ws": ws, "wz": wz, "rs": rs, "rz": rz}
    node = _ms("DynamicQuantizeLSTM", ["x", "W", "R", "B", "", "", "", "", "ws", "wz", "rs", "rz"], ["y", "y_h", "y_c"],
               hidden_size=hid, direction="bidirectional")
    g = h.make_graph([node], "g", [h.make_tensor_value_info("x", T.FLOAT, [5, 2, inp])],
                     [h.make_tensor_value_info(o, T.FLOAT, None) for o in ("y", "y_h", "y_c")],
                     initializer=[nh.from_array(v, k) for k, v in inits.items()])
    path = tmp_path / "q.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("com.microsoft", 1)]), str(path))
    # The float LSTM of the dequantized weights, in ONNX's layout [D, 4H, K].
    wf = (wq.astype(np.float32) * ws[:, None, :]).transpose(0, 2, 1)
    rf = (rq.astype(np.float32) * rs[:, None, None]).transpose(0, 2, 1)
    fl = h.make_graph([h.make_node("LSTM", ["x", "W", "R", "B"], ["y", "y_h", "y_c"], hidden_size=hid,
                                   direction="bidirectional")], "f", [h.make_tensor_value_info("x", T.FLOAT, [5, 2, inp])],
                      [h.make_tensor_value_info(o, T.FLOAT, None) for o in ("y", "y_h", "y_c")],
                      initializer=[nh.from_array(wf, "W"), nh.from_array(rf, "R"), nh.from_array(b, "B")])
    fpath = tmp_path / "f.onnx"
    onnx.save(h.make_model(fl, opset_imports=[h.make_opsetid("", 17)]), str(fpath))
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    feeds = {"x": _f(5, 2, inp)}
    got = dlc_run(art, path, feeds, tmp_path)
    want_f = ort_run(fpath, feeds)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    want_q = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    for k in ("y", "y_h", "y_c"):
        assert_close(got[k], want_q[k], k)
        assert np.abs(got[k] - want_f[k]).max() < 0.05, (k, np.abs(got[k] - want_f[k]).max())


@pytest.mark.parametrize("steps,causal,beams", [(1, 0, 0), (2, 1, 0), (1, 1, 2), (1, 0, 2)])
def test_multi_head_attention_shared_buffer(steps, causal, beams, tmp_path):
    """MultiHeadAttention over a shared key/value buffer (ONNX Runtime's
    past_present_share_buffer: `past_sequence_length` given at run time, new keys written
    into the buffer at that position) and, with beams, `cache_indirection` (each beam's
    past keys read from the beam its entry names), against ONNX Runtime at two past
    lengths from one artifact."""
    batch, heads, hd, max_len = 4, 2, 4, 8
    ins = ["q", "k", "v", "", "", "", "pk", "pv", "psl"] + (["ci"] if beams else [])
    node = _ms("MultiHeadAttention", ins, ["y", "ppk", "ppv"], num_heads=heads, unidirectional=causal)
    vi = [h.make_tensor_value_info(n, T.FLOAT, [batch, steps, heads * hd]) for n in ("q", "k", "v")]
    vi += [h.make_tensor_value_info(n, T.FLOAT, [batch, heads, max_len, hd]) for n in ("pk", "pv")]
    vi.append(h.make_tensor_value_info("psl", T.INT32, [1]))
    if beams:
        vi.append(h.make_tensor_value_info("ci", T.INT32, [batch // beams, beams, max_len]))
    g = h.make_graph([node], "g", vi, [h.make_tensor_value_info(o, T.FLOAT, None) for o in ("y", "ppk", "ppv")])
    path = tmp_path / "mha.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("com.microsoft", 1)]), str(path))
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    for past in (0, 3, max_len - steps):
        feeds = {"q": _f(batch, steps, heads * hd), "k": _f(batch, steps, heads * hd), "v": _f(batch, steps, heads * hd),
                 "pk": _f(batch, heads, max_len, hd), "pv": _f(batch, heads, max_len, hd),
                 "psl": np.array([past], np.int32)}
        if beams:
            feeds["ci"] = R.integers(0, beams, (batch // beams, beams, max_len)).astype(np.int32)
        want = ort_run(path, feeds)
        got = dlc_run(art, path, feeds, tmp_path)
        for k in ("y", "ppk", "ppv"):
            assert_close(got[k], want[k], f"{k} at past length {past}")
