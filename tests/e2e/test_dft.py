"""DFT against numpy's float64 FFT: forward and inverse, real and complex signals,
one-sided both ways (odd and even lengths), dft_length shorter (truncation) and longer
(zero padding) than the signal, along each signal axis; and opset 20's axis given at
run time, one artifact serving two axes (and, one-sided, giving shapes that depend on it)."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from conftest import dlc, dlc_run, dlc_run_process


def _reference(x, axis, inverse, onesided, n):
    """ONNX's DFT in float64 through numpy's FFT (its reference's definition)."""
    x = x.astype(np.float64)
    sig = x[..., 0] + (1j * x[..., 1] if x.shape[-1] == 2 else 0)
    if not inverse:
        y = np.fft.fft(sig, n=n, axis=axis)
        if onesided:
            y = np.take(y, range(n // 2 + 1), axis=axis)
    elif onesided:
        return np.fft.irfft(sig, n=n, axis=axis)[..., None]
    else:
        y = np.fft.ifft(sig, n=n, axis=axis)
    return np.stack([y.real, y.imag], axis=-1)


CASES = [
    # (signal shape, axis, inverse, onesided, dft_length or None)
    ((2, 12, 3, 1), 1, 0, 0, None),
    ((2, 12, 3, 2), 1, 0, 0, None),
    ((2, 5, 7, 1), 2, 0, 1, None),
    ((2, 9, 4, 2), 1, 1, 0, None),
    ((3, 6, 2), 1, 1, 1, 11),  # irfft to an odd length
    ((3, 6, 2), 1, 1, 1, None),
    ((2, 10, 1), 1, 0, 0, 7),  # truncated
    ((2, 10, 2), 1, 0, 0, 16),  # zero-padded
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_dft_matches_numpy_fft(case, tmp_path):
    shape, axis, inverse, onesided, n = CASES[case]
    inputs, inits, names = [h.make_tensor_value_info("x", T.FLOAT, list(shape))], [], ["x"]
    if n is not None:
        inits.append(nh.from_array(np.array(n, np.int64), "n"))
        names.append("n")
    node = h.make_node("DFT", names, ["y"], axis=axis, inverse=inverse, onesided=onesided)
    g = h.make_graph([node], "g", inputs, [h.make_tensor_value_info("y", T.FLOAT, None)], initializer=inits)
    path = tmp_path / "dft.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 19)]), str(path))
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    x = np.random.default_rng(case).standard_normal(shape).astype(np.float32)
    got = dlc_run(art, path, {"x": x}, tmp_path)["y"]
    length = n if n is not None else (2 * (shape[axis] - 1) if inverse and onesided else shape[axis])
    want = _reference(x, axis, inverse, onesided, length)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(want).max()))


def _run_time_axis_model(tmp_path, shape, **attrs):
    """An opset-20 DFT of `x` (`shape`) along the axis given as input `axis`, compiled."""
    inputs = [h.make_tensor_value_info("x", T.FLOAT, shape), h.make_tensor_value_info("axis", T.INT64, [])]
    node = h.make_node("DFT", ["x", "", "axis"], ["y"], **attrs)
    g = h.make_graph([node], "g", inputs, [h.make_tensor_value_info("y", T.FLOAT, None)])
    path = tmp_path / "dft20.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 20)]), str(path))
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    return path, art


def test_axis_at_run_time(tmp_path):
    """Opset 20: the axis as an input; one artifact transforms along axis 1 or 2."""
    path, art = _run_time_axis_model(tmp_path, [2, 8, 8, 2], inverse=1)
    x = np.random.default_rng(5).standard_normal((2, 8, 8, 2)).astype(np.float32)
    for axis in (1, 2, -2):
        w = tmp_path / f"a{axis}"
        w.mkdir()
        got = dlc_run(art, path, {"x": x, "axis": np.array(axis, np.int64)}, w)["y"]
        want = _reference(x, axis if axis >= 0 else axis + 4, 1, 0, 8)  # counts the complex dim
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=1e-4, atol=1e-5, err_msg=f"axis {axis}")


def test_one_sided_axis_at_run_time(tmp_path):
    """Opset 20, one-sided with the axis as an input: the result's shape depends on the
    axis's value (n // 2 + 1 along the transformed axis), so one artifact gives
    (2, 5, 6, 2) for axis 1 and (2, 9, 4, 2) for axis 2; an axis out of range fails the
    run with an error."""
    path, art = _run_time_axis_model(tmp_path, [2, 9, 6, 1], onesided=1)
    x = np.random.default_rng(6).standard_normal((2, 9, 6, 1)).astype(np.float32)
    for axis in (1, 2, -2, 0):
        w = tmp_path / f"a{axis}"
        w.mkdir()
        got = dlc_run(art, path, {"x": x, "axis": np.array(axis, np.int64)}, w)["y"]
        a = axis if axis >= 0 else axis + 4
        want = _reference(x, a, 0, 1, x.shape[a])
        assert got.shape == want.shape, (axis, got.shape, want.shape)
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=1e-4, atol=1e-4, err_msg=f"axis {axis}")
    w = tmp_path / "bad"
    w.mkdir()
    p = dlc_run_process(art, {"x": x, "axis": np.array(3, np.int64)}, w)
    assert p.returncode != 0 and "out of range" in p.stderr, p.stderr
