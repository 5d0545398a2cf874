"""MatMulInteger and ConvInteger at the magnitudes where an f32 sum stops being exact:
long reductions (over 2^24 / (255 x 127) terms) of activation codes as far as they go
from their run-time zero point, times constant int8 weights at +-127 (or -128), must
give ONNX Runtime's i32 results exactly (dlc sums chunks short enough for f32, sized
from the weights' own range, in f64, or for a u8 left operand and constant weights
runs the int8 kernel, `int_matmul`). The int8 kernel's own cases: u8 and i8 weights,
one zero point or one per column, none given, rows only the run knows. The reference
for MatMulInteger is the exact int64 product, and ONNX Runtime's where its kernel is
exact (see `_ort_u8s8_is_exact`)."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

from conftest import dlc, dlc_run, ort_run


def _ort_u8s8_is_exact():
    """Whether ONNX Runtime's u8 x i8 products are exact here: on x86-64 without VNNI its
    MLAS kernels take AVX2's vpmaddubsw, whose pair sums saturate at 16 bits (255 x 127 x
    2 > 2^15; ONNX Runtime's quantization documentation says so), so there the
    reference is the exact int64 product alone. (dlc is exact on every path.)"""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def _matmul_int64(a, azp, w, wzp):
    """MatMulInteger's exact value: (a - azp) @ (w - wzp) in int64, as int32."""
    y = (a.astype(np.int64) - np.int64(azp)) @ (w.astype(np.int64) - np.asarray(wzp, np.int64))
    return y.astype(np.int32)


def _check_int_matmul(got, feeds, path, w, wzp, msg):
    """dlc's result equals the exact product, and so does ONNX Runtime's where its
    kernel is exact (u8 weights, or VNNI)."""
    want = _matmul_int64(feeds["a"], feeds.get("azp", 0), w, wzp)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_array_equal(got, want, err_msg=msg)
    if w.dtype == np.uint8 or _ort_u8s8_is_exact():
        np.testing.assert_array_equal(ort_run(path, feeds)["y"], want, err_msg=f"ORT against int64: {msg}")
    return want


def _save(path, node, inputs, inits):
    g = h.make_graph([node], "g", inputs, [h.make_tensor_value_info("y", T.INT32, None)],
                     initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 13)]), str(path))
    return path


@pytest.mark.parametrize("wmax", [127, -128])
def test_matmul_integer_long_reduction_is_exact(wmax, tmp_path):
    k, n = 1100, 6
    rng = np.random.default_rng(1)
    w = rng.choice(np.array([wmax, -127, 127], np.int8), size=(k, n))
    w[:, 0] = wmax  # one column of equal signs: the largest sum
    path = _save(tmp_path / "m.onnx", h.make_node("MatMulInteger", ["a", "w", "azp", "wzp"], ["y"]),
                 [h.make_tensor_value_info("a", T.UINT8, [4, k]), h.make_tensor_value_info("azp", T.UINT8, [])],
                 {"w": w, "wzp": np.array(0, np.int8)})
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    for zp in (255, 0, 128):
        a = rng.integers(0, 256, (4, k)).astype(np.uint8)
        a[0] = 0 if zp else 255  # |a - zp| = 255 along a whole row
        feeds = {"a": a, "azp": np.array(zp, np.uint8)}
        work = tmp_path / f"zp{zp}"
        work.mkdir()
        want = _check_int_matmul(dlc_run(art, path, feeds, work)["y"], feeds, path, w, 0, f"zp={zp}")
        assert abs(int(want[0, 0])) > 1 << 24  # past f32's exact integers


def test_conv_integer_long_reduction_is_exact(tmp_path):
    rng = np.random.default_rng(2)
    w = rng.choice(np.array([-127, 127], np.int8), size=(4, 80, 3, 3))
    w[0] = 127
    path = _save(tmp_path / "m.onnx", h.make_node("ConvInteger", ["x", "w", "xzp"], ["y"], pads=[1, 1, 1, 1]),
                 [h.make_tensor_value_info("x", T.UINT8, [1, 80, 5, 5]), h.make_tensor_value_info("xzp", T.UINT8, [])],
                 {"w": w})
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    x = rng.integers(0, 256, (1, 80, 5, 5)).astype(np.uint8)
    x[:, :, 1:4, 1:4] = 255
    feeds = {"x": x, "xzp": np.array(0, np.uint8)}
    got, want = dlc_run(art, path, feeds, tmp_path)["y"], ort_run(path, feeds)["y"]
    assert abs(int(want[0, 0, 2, 2])) > 80 * 9 * 255 * 127 - 1
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("wtype,per_column,zps", [
    (np.uint8, False, True), (np.uint8, True, True), (np.int8, True, True), (np.int8, False, False),
], ids=["u8", "u8_per_column", "i8_per_column", "i8_no_zero_points"])
@pytest.mark.parametrize("cpu", ["native", "znver3"])
def test_int8_kernel_matches_ort_at_run_time_rows(wtype, per_column, zps, cpu, tmp_path):
    """A [B, T, K] u8 (B and T run-time dims) by constant weights [K, N] with N = 70
    (the last column block part empty), the way ORT's quantize_dynamic writes a
    MatMul: exact i32 results at several row counts, 0 included. On this machine's own
    path and on Zen 3's (AVX2 without VNNI, which this x86-64 machine can run: full-range
    weights as two halves within +-64 through vpmaddubsw)."""
    k, n = 96, 70
    rng = np.random.default_rng(5)
    info = np.iinfo(wtype)
    w = rng.integers(info.min, info.max + 1, (k, n), dtype=np.int64).astype(wtype)
    w[:, 0] = info.max  # one column far from any zero point
    inits = {"w": w}
    ins = ["a", "w"]
    if zps:
        wzp = rng.integers(info.min, info.max + 1, (n,) if per_column else (), dtype=np.int64).astype(wtype)
        inits["wzp"] = wzp
        ins += ["azp", "wzp"]
    inputs = [h.make_tensor_value_info("a", T.UINT8, ["B", "T", k])]
    if zps:
        inputs.append(h.make_tensor_value_info("azp", T.UINT8, []))
    path = _save(tmp_path / "m.onnx", h.make_node("MatMulInteger", ins, ["y"]), inputs, inits)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art, "--cpu", cpu)
    dlc("compile", path, "-o", tmp_path / "ir", "--emit", "ir")
    ir = (tmp_path / "ir" / "model.dlcir").read_text()
    assert "int_matmul" in ir, ir
    if cpu == "znver3":
        dlc("compile", path, "-o", tmp_path / "asm", "--cpu", cpu, "--emit", "asm")
        asm = (tmp_path / "asm" / "model.s").read_text()
        assert "vpmaddubsw" in asm and "vpdpbusd" not in asm
    for b, t, zp in ((1, 1, 0), (2, 7, 255), (1, 0, 3), (3, 13, 128)):
        a = rng.integers(0, 256, (b, t, k), dtype=np.int64).astype(np.uint8)
        feeds = {"a": a}
        if zps:
            feeds["azp"] = np.array(zp, np.uint8)
        work = tmp_path / f"r{b}_{t}_{zp}"
        work.mkdir()
        got = dlc_run(art, path, feeds, work)["y"]
        assert got.shape == (b, t, n)
        _check_int_matmul(got, feeds, path, w, inits.get("wzp", 0), f"{b}x{t} zp={zp}")


@pytest.mark.parametrize("wtype,per_channel,attrs,kernel,c", [
    (np.uint8, False, {"pads": [1, 1, 1, 1]}, 3, 8),
    (np.uint8, True, {"pads": [0, 1, 2, 0], "strides": [2, 1], "dilations": [1, 2]}, 3, 8),
    (np.int8, True, {"pads": [0, 1, 2, 0], "strides": [2, 1], "dilations": [1, 2]}, 3, 8),
    (np.uint8, False, {"strides": [2, 2]}, 1, 8),
    (np.int8, True, {}, 1, 8),
    (np.int8, True, {"pads": [1, 1, 1, 1], "strides": [2, 2]}, 3, 3),
    (np.uint8, False, {}, 1, 3),
], ids=["u8_padded", "u8_per_channel_strided_dilated", "i8_per_channel_strided_dilated", "u8_1x1_strided",
        "i8_1x1_the_image_itself", "i8_rgb_rows_padded_to_28", "u8_rgb_1x1_rows_padded_to_4"])
def test_int8_convolution_matches_ort_at_run_time_image_dims(wtype, per_channel, attrs, kernel, c, tmp_path):
    """ConvInteger over u8 codes [N, C, H, W] (C = 8, or 3: rows of 27 or 3 taps padded to
    a multiple of 4 with the zero point) with run-time N, H and W by constant
    weights: the int8 path (the image channels-last, its windows as rows padded with the
    input's zero point, or at 1x1 and stride 1 the image's pixels themselves, times the
    weights), exact i32 against ONNX Runtime at three image sizes (per-channel
    weight zero points, which ORT's ConvInteger refuses, against the exact int64 sum)."""
    m = 20
    rng = np.random.default_rng(7)
    info = np.iinfo(wtype)
    w = rng.integers(info.min, info.max + 1, (m, c, kernel, kernel), dtype=np.int64).astype(wtype)
    wzp = rng.integers(info.min, info.max + 1, (m,) if per_channel else (), dtype=np.int64).astype(wtype)
    path = _save(tmp_path / "m.onnx", h.make_node("ConvInteger", ["x", "w", "xzp", "wzp"], ["y"], **attrs),
                 [h.make_tensor_value_info("x", T.UINT8, ["N", c, "H", "W"]),
                  h.make_tensor_value_info("xzp", T.UINT8, [])],
                 {"w": w, "wzp": wzp})
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    dlc("compile", path, "-o", tmp_path / "ir", "--emit", "ir")
    ir = (tmp_path / "ir" / "model.dlcir").read_text()
    assert ("patches" in ir or (kernel == 1 and not attrs and c % 4 == 0)) and "int_matmul" in ir, ir
    for n, hh, ww, zp in ((1, 6, 9, 17), (2, 5, 5, 0), (1, 11, 4, 255)):
        feeds = {"x": rng.integers(0, 256, (n, c, hh, ww), dtype=np.int64).astype(np.uint8),
                 "xzp": np.array(zp, np.uint8)}
        work = tmp_path / f"r{n}_{hh}_{ww}"
        work.mkdir()
        got = dlc_run(art, path, feeds, work)["y"]
        # ONNX Runtime takes one weight zero point only: per channel, an exact int64 sum.
        exact = _conv_int64(feeds["x"], zp, w, wzp, attrs)
        want = exact if per_channel else ort_run(path, feeds)["y"]
        np.testing.assert_array_equal(exact, want, err_msg="the int64 reference against ORT")
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want, err_msg=f"{n}x{hh}x{ww} zp={zp}")


def _conv_int64(x, xzp, w, wzp, attrs):
    """ConvInteger's definition in int64: sum over each window of (x - xzp)(w - wzp[m]),
    taps in the padding contributing 0."""
    m, c, kh, kw = w.shape
    (pt, pl, pb, pr), (sh, sw), (dh, dw) = (attrs.get("pads", [0] * 4), attrs.get("strides", [1, 1]),
                                            attrs.get("dilations", [1, 1]))
    xc = np.pad(x.astype(np.int64) - int(xzp), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    wc = w.astype(np.int64) - np.asarray(wzp, np.int64).reshape(-1, 1, 1, 1)
    oh = (xc.shape[2] - (kh - 1) * dh - 1) // sh + 1
    ow = (xc.shape[3] - (kw - 1) * dw - 1) // sw + 1
    y = np.zeros((x.shape[0], m, oh, ow), np.int64)
    for i in range(oh):
        for j in range(ow):
            win = xc[:, :, i * sh:i * sh + (kh - 1) * dh + 1:dh, j * sw:j * sw + (kw - 1) * dw + 1:dw]
            y[:, :, i, j] = np.einsum("nckl,mckl->nm", win, wc)
    return y.astype(np.int32)


@pytest.mark.parametrize("act,per_channel", [(np.uint8, False), (np.int8, True), (np.int8, False)],
                         ids=["u8_per_tensor", "i8_per_channel", "i8_per_tensor"])
def test_qdq_convolution_runs_on_the_int8_kernels(act, per_channel, tmp_path):
    """A Conv of QDQ form (what onnxruntime.quantization.quantize_static writes: x
    quantized and dequantized, constant weight codes dequantized, an f32 bias), with u8 or
    i8 activation codes (i8 ones as u8 ones 128 higher) and one weight scale or one per
    output channel: dlc takes the int8 kernels, and the result is the float64 value of the
    same codes' convolution (x's codes rounded half to even as QuantizeLinear does) to f32
    rounding, at run-time image dims."""
    c, m = 8, 6
    rng = np.random.default_rng(11)
    wq = rng.integers(-127, 128, (m, c, 3, 3), dtype=np.int64).astype(np.int8)
    ws = (rng.random(m if per_channel else ()) * 0.02 + 0.005).astype(np.float32)
    info = np.iinfo(act)
    xs, xz = np.float32(0.03), np.array(7 if act == np.int8 else 131, act)
    bias = rng.standard_normal(m).astype(np.float32)
    q = lambda o, i, n, attrs={}: h.make_node(o, i, [n], **attrs)
    nodes = [q("QuantizeLinear", ["x", "xs", "xz"], "xq"), q("DequantizeLinear", ["xq", "xs", "xz"], "xd"),
             q("DequantizeLinear", ["wq", "ws", "wz"], "wd", {"axis": 0} if per_channel else {}),
             q("Conv", ["xd", "wd", "b"], "y", {"pads": [1, 1, 1, 1]})]
    inits = {"xs": xs, "xz": xz, "wq": wq, "ws": ws, "wz": np.zeros(ws.shape, np.int8), "b": bias}
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, ["N", c, "H", "W"])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)],
                     initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    path = tmp_path / "m.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 13)]), str(path))
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    dlc("compile", path, "-o", tmp_path / "ir", "--emit", "ir")
    ir = (tmp_path / "ir" / "model.dlcir").read_text()
    assert "patches" in ir and "int_matmul" in ir and "conv(" not in ir, ir
    for n, hh, ww in ((1, 6, 9), (2, 5, 4)):
        x = (rng.standard_normal((n, c, hh, ww)) * 2).astype(np.float32)
        work = tmp_path / f"r{n}_{hh}_{ww}"
        work.mkdir()
        got = dlc_run(art, path, {"x": x}, work)["y"]
        codes = np.clip(np.rint(x.astype(np.float64) / xs) + int(xz), info.min, info.max)
        acc = _conv_int64(codes - int(xz), 0, wq, 0, {"pads": [1, 1, 1, 1]}).astype(np.float64)
        want = acc * float(xs) * np.asarray(ws, np.float64).reshape(-1, 1, 1) + bias.astype(np.float64).reshape(-1, 1, 1)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * np.abs(want).max())
        np.testing.assert_allclose(got, ort_run(path, {"x": x})["y"], rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("form", ["matmul_u8_per_tensor", "matmul_i8_per_column", "gemm_transb_per_row_alpha_beta",
                                  "gemm_plain_no_bias"])
def test_qdq_matmul_and_gemm_run_on_the_int8_kernel(form, tmp_path):
    """A MatMul or Gemm of QDQ form (what onnxruntime.quantization.quantize_static writes
    for a transformer's projections: the activation quantized and dequantized, constant
    weight codes dequantized, with one scale or one per output column; Gemm's weights
    `[N, K]` under transB, its alpha, beta and C): dlc takes the int8 kernel, and the
    result is the float64 value of the same codes' product (the activation's codes
    rounded half to even as QuantizeLinear does), times the scales, plus beta C, to f32
    rounding, at run-time rows; and ONNX Runtime agrees (the weights within +-63, where its
    AVX2 u8 x i8 pair sums cannot saturate, see `_ort_u8s8_is_exact`)."""
    rng = np.random.default_rng(5)
    k, n = 24, 10
    gemm = form.startswith("gemm")
    act = np.uint8 if form == "matmul_u8_per_tensor" else np.int8
    per_col = form in ("matmul_i8_per_column", "gemm_transb_per_row_alpha_beta")
    trans_b = form == "gemm_transb_per_row_alpha_beta"
    wq = rng.integers(-63, 64, (n, k) if trans_b else (k, n), dtype=np.int64).astype(np.int8)
    ws = (rng.random(n if per_col else ()) * 0.02 + 0.005).astype(np.float32)
    wz = np.zeros(ws.shape, np.int8)
    info = np.iinfo(act)
    xs, xz = np.float32(0.04), np.array(-3 if act == np.int8 else 120, act)
    alpha, beta = (0.5, 2.0) if trans_b else (1.0, 1.0)
    q = lambda o, i, nm, attrs={}: h.make_node(o, i, [nm], **attrs)
    dq_attrs = {"axis": 0 if trans_b else 1} if per_col else {}
    nodes = [q("QuantizeLinear", ["x", "xs", "xz"], "xq"), q("DequantizeLinear", ["xq", "xs", "xz"], "xd"),
             q("DequantizeLinear", ["wq", "ws", "wz"], "wd", dq_attrs)]
    inits = {"xs": xs, "xz": xz, "wq": wq, "ws": ws, "wz": wz}
    bias = rng.standard_normal(n).astype(np.float32)
    if gemm:
        ins = ["xd", "wd"] + (["c"] if trans_b else [])
        nodes.append(q("Gemm", ins, "y", {"transB": int(trans_b), "alpha": alpha, "beta": beta}))
        if trans_b:
            inits["c"] = bias
        x_dims = ["M", k]
    else:
        nodes.append(q("MatMul", ["xd", "wd"], "y"))
        x_dims = ["B", "S", k]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, x_dims)],
                     [h.make_tensor_value_info("y", T.FLOAT, None)],
                     initializer=[numpy_helper.from_array(np.asarray(v), nm) for nm, v in inits.items()])
    path = tmp_path / "m.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 13)]), str(path))
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    dlc("compile", path, "-o", tmp_path / "ir", "--emit", "ir")
    ir = (tmp_path / "ir" / "model.dlcir").read_text()
    assert "int_matmul(" in ir and " matmul(" not in ir and " gemm(" not in ir, ir
    w_kn = (wq.T if trans_b else wq).astype(np.float64)
    for shape in (((5, k),) if gemm else ()) + (((3, k),) if gemm else ((1, 7, k), (2, 3, k))):
        x = (rng.standard_normal(shape) * 3).astype(np.float32)
        work = tmp_path / "r{}".format("_".join(map(str, shape)))
        work.mkdir()
        got = dlc_run(art, path, {"x": x}, work)["y"]
        codes = np.clip(np.rint(x.astype(np.float64) / xs) + int(xz), info.min, info.max) - int(xz)
        want = alpha * ((codes @ w_kn) * float(xs) * np.asarray(ws, np.float64))
        if trans_b:
            want = want + beta * bias.astype(np.float64)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * np.abs(want).max())
        np.testing.assert_allclose(got, ort_run(path, {"x": x})["y"], rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_matmul_integer_by_a_vector_of_weights(tmp_path):
    """A constant B of one axis (`[K]`, a matrix-vector product) is no case for the int8
    kernel and takes the general path (found by fuzzing: asking for B's column count
    indexed past its one dim and panicked)."""
    w = np.array([3, 255, 0, 17], np.uint8)
    node = h.make_node("MatMulInteger", ["a", "w"], ["y"])
    path = _save(tmp_path / "m.onnx", node, [h.make_tensor_value_info("a", T.UINT8, ["M", 4])], {"w": w})
    dlc("compile", path, "-o", tmp_path / "art")
    a = np.random.default_rng(0).integers(0, 256, (5, 4)).astype(np.uint8)
    got = dlc_run(tmp_path / "art", path, {"a": a}, tmp_path)["y"]
    np.testing.assert_array_equal(got, _matmul_int64(a, 0, w, 0))
    np.testing.assert_array_equal(got, ort_run(path, {"a": a})["y"])
