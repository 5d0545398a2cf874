"""STFT against ONNX Runtime: a window or a constant frame_length, one- and two-sided, a
real and a complex signal, a constant frame_step over a run-time signal length (the
frame count an expression of it), a run-time frame_step (a computed dim), and a run-time
frame_length (frame length, bin count and frame count computed dims; the DFT's tables
computed when the model runs)."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from conftest import dlc, dlc_run, dlc_run_process, ort_run


def assert_close(got, want, what):
    """Each value is a sum of up to 16 float32 products of unit-sized terms: absolute
    errors of a few 1e-6 are rounding (both sides), so atol is 1e-4."""
    assert got.shape == want.shape and got.dtype == want.dtype, what
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=what)


def _model(path, *, window, onesided, complex_, step=None, length="n", frame_length=None, fl_input=False):
    c = 2 if complex_ else 1
    ins = [h.make_tensor_value_info("x", T.FLOAT, [2, length, c])]
    inits = []
    if step is None:
        ins.append(h.make_tensor_value_info("step", T.INT64, []))
    else:
        inits.append(nh.from_array(np.array(step, np.int64), "step"))
    names = ["x", "step", "", ""]
    if window:
        ins.append(h.make_tensor_value_info("w", T.FLOAT, [window]))
        names[2] = "w"
    if fl_input:
        ins.append(h.make_tensor_value_info("fl", T.INT64, []))
        names[3] = "fl"
    elif frame_length:
        inits.append(nh.from_array(np.array(frame_length, np.int64), "fl"))
        names[3] = "fl"
    node = h.make_node("STFT", names, ["y"], onesided=onesided)
    g = h.make_graph([node], "g", ins, [h.make_tensor_value_info("y", T.FLOAT, None)], initializer=inits)
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), str(path))


@pytest.mark.parametrize("window,frame_length,onesided,complex_", [
    (16, None, 1, False), (None, 12, 1, False), (16, 16, 0, False), (8, None, 0, True),
])
def test_stft_matches_ort_at_two_lengths(window, frame_length, onesided, complex_, tmp_path):
    path = tmp_path / "stft.onnx"
    _model(path, window=window, onesided=onesided, complex_=complex_, step=5, frame_length=frame_length)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    rng = np.random.default_rng(0)
    for n in (64, 101):
        feeds = {"x": rng.standard_normal((2, n, 2 if complex_ else 1)).astype(np.float32)}
        if window:
            feeds["w"] = np.hanning(window).astype(np.float32)
        got, want = dlc_run(art, path, feeds, tmp_path)["y"], ort_run(path, feeds)["y"]
        assert_close(got, want, f"length {n}")


def test_stft_with_a_run_time_step(tmp_path):
    path = tmp_path / "stft.onnx"
    _model(path, window=16, onesided=1, complex_=False, length=96)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 96, 1)).astype(np.float32)
    for step in (3, 8, 80):
        feeds = {"x": x, "step": np.array(step, np.int64), "w": np.hamming(16).astype(np.float32)}
        got, want = dlc_run(art, path, feeds, tmp_path)["y"], ort_run(path, feeds)["y"]
        assert_close(got, want, f"step {step}")


def _stft64(x, fl, step, onesided):
    """ONNX's STFT without a window, in float64 through numpy's FFT."""
    sig = x[..., 0].astype(np.float64) + (1j * x[..., 1] if x.shape[-1] == 2 else 0)
    frames = np.stack([sig[:, f * step:f * step + fl] for f in range((x.shape[1] - fl) // step + 1)], axis=1)
    y = np.fft.fft(frames, axis=-1)
    if onesided:
        y = y[..., :fl // 2 + 1]
    return np.stack([y.real, y.imag], axis=-1).astype(np.float32)


@pytest.mark.parametrize("onesided,complex_,step", [(1, False, 4), (0, True, 3), (1, False, None)])
def test_stft_with_a_run_time_frame_length(onesided, complex_, step, tmp_path):
    """frame_length as an input (no window): one artifact serves lengths 16, 25 and 96
    (one frame), against a float64 numpy STFT (ONNX Runtime's own STFT is off by 6e-4 at
    length 96, two-sided complex: dlc is within 1e-5 of float64 there) and in shape
    against ONNX Runtime; with step None the step is an input too."""
    path = tmp_path / "stft.onnx"
    _model(path, window=None, onesided=onesided, complex_=complex_, step=step, length=96, fl_input=True)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    x = np.random.default_rng(2).standard_normal((2, 96, 2 if complex_ else 1)).astype(np.float32)
    for fl, st in ((16, 8), (25, 5), (96, 7)):
        feeds = {"x": x, "fl": np.array(fl, np.int64)}
        if step is None:
            feeds["step"] = np.array(st, np.int64)
        w = tmp_path / f"fl{fl}"
        w.mkdir()
        got = dlc_run(art, path, feeds, w)["y"]
        assert got.shape == ort_run(path, feeds)["y"].shape, fl
        assert_close(got, _stft64(x, fl, step or st, onesided), f"frame_length {fl}")


def test_bad_run_time_frame_lengths_and_steps_fail_the_run(tmp_path):
    """A frame_length of 0 or past the signal, a step of 0, and (with a window) a
    frame_length that is not the window's length each fail the run with an error."""
    path = tmp_path / "stft.onnx"
    _model(path, window=None, onesided=1, complex_=False, length=32, fl_input=True)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    x = np.ones((2, 32, 1), np.float32)
    for i, (fl, st) in enumerate(((0, 4), (33, 4), (8, 0), (8, -2))):
        w = tmp_path / f"bad{i}"
        w.mkdir()
        p = dlc_run_process(art, {"x": x, "fl": np.array(fl, np.int64), "step": np.array(st, np.int64)}, w)
        assert p.returncode != 0 and "error" in p.stderr, (fl, st, p.stderr)
        assert "panicked" not in p.stderr, p.stderr
    path = tmp_path / "stft_w.onnx"
    _model(path, window=16, onesided=1, complex_=False, step=4, length=64, fl_input=True)
    art = tmp_path / "art_w"
    dlc("compile", path, "-o", art)
    x = np.random.default_rng(3).standard_normal((2, 64, 1)).astype(np.float32)
    feeds = {"x": x, "w": np.hanning(16).astype(np.float32), "fl": np.array(16, np.int64)}
    w = tmp_path / "ok_w"
    w.mkdir()
    assert_close(dlc_run(art, path, feeds, w)["y"], ort_run(path, feeds)["y"], "window and frame_length 16")
    w = tmp_path / "bad_w"
    w.mkdir()
    p = dlc_run_process(art, {**feeds, "fl": np.array(12, np.int64)}, w)
    assert p.returncode != 0 and "frame_length_check" in p.stderr, p.stderr


@pytest.mark.parametrize("bins,dft,rate,lo,hi,dtype", [
    (8, 16, 8192, 0.0, 4096.0, None), (40, 512, 16000, 20.0, 7600.0, None), (13, 256, 22050, 0.0, 8000.0, T.DOUBLE),
])
def test_mel_weight_matrix_from_constants_matches_ort(bins, dft, rate, lo, hi, dtype, tmp_path):
    """The matrix from constant operands (as exported models give them), against ONNX
    Runtime, in float32 and float64."""
    inits = [nh.from_array(np.array(bins, np.int32), "bins"), nh.from_array(np.array(dft, np.int32), "dft"),
             nh.from_array(np.array(rate, np.int32), "rate"), nh.from_array(np.array(lo, np.float32), "lo"),
             nh.from_array(np.array(hi, np.float32), "hi")]
    attrs = {"output_datatype": dtype} if dtype else {}
    node = h.make_node("MelWeightMatrix", ["bins", "dft", "rate", "lo", "hi"], ["m"], **attrs)
    g = h.make_graph([node], "g", [], [h.make_tensor_value_info("m", dtype or T.FLOAT, None)], initializer=inits)
    path = tmp_path / "mel.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), str(path))
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    got, want = dlc_run(art, path, {}, tmp_path)["m"], ort_run(path, {})["m"]
    assert got.dtype == want.dtype and got.shape == want.shape == (dft // 2 + 1, bins)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert got.sum() > 0


def _mel_run_time_model(path, dtype=None):
    ins = [h.make_tensor_value_info(n, t, []) for n, t in (("bins", T.INT32), ("dft", T.INT32), ("rate", T.INT32),
                                                           ("lo", T.FLOAT), ("hi", T.FLOAT))]
    attrs = {"output_datatype": dtype} if dtype else {}
    node = h.make_node("MelWeightMatrix", ["bins", "dft", "rate", "lo", "hi"], ["m"], **attrs)
    g = h.make_graph([node], "g", ins, [h.make_tensor_value_info("m", dtype or T.FLOAT, None)])
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), str(path))
    return path


def _mel_feeds(bins, dft, rate, lo, hi):
    return {"bins": np.array(bins, np.int32), "dft": np.array(dft, np.int32), "rate": np.array(rate, np.int32),
            "lo": np.array(lo, np.float32), "hi": np.array(hi, np.float32)}


@pytest.mark.parametrize("dtype", [None, T.DOUBLE])
def test_mel_weight_matrix_from_run_time_values_matches_ort(dtype, tmp_path):
    """Every operand given at run time: one artifact whose [dft/2 + 1, bins] extents are
    computed dims, at five settings (bands of no width among them), against ONNX
    Runtime."""
    path = _mel_run_time_model(tmp_path / "mel.onnx", dtype)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    for i, args in enumerate([(8, 16, 8192, 0.0, 4096.0), (40, 512, 16000, 20.0, 7600.0), (13, 256, 22050, 0.0, 8000.0),
                              (64, 64, 16000, 0.0, 8000.0), (1, 4, 100, 10.0, 40.0)]):
        feeds = _mel_feeds(*args)
        work = tmp_path / f"run{i}"
        work.mkdir()
        got, want = dlc_run(art, path, feeds, work)["m"], ort_run(path, feeds)["m"]
        assert got.dtype == want.dtype and got.shape == want.shape == (args[1] // 2 + 1, args[0]), args
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=str(args))
        assert got.sum() > 0


def test_mel_bands_past_the_dft_bins_fail_the_run(tmp_path):
    """An upper edge above the Nyquist frequency puts bands past the last bin: the
    reference fails with an index error, and the run fails naming the check."""
    path = _mel_run_time_model(tmp_path / "mel.onnx")
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    p = dlc_run_process(art, _mel_feeds(8, 16, 8000, 0.0, 7900.0), tmp_path)
    assert p.returncode != 0 and "panicked" not in p.stderr
    assert "mel_bands_past_the_dft_bins" in p.stderr, p.stderr


def test_a_signal_shorter_than_a_frame_is_a_clear_error(tmp_path):
    """Frames of 16 every 4 samples over a run-time length n: the frame count
    floor((n - 16) / 4) + 1 is negative below n = 12, which would size a buffer
    negatively; the artifact's minimum for n says so before the run."""
    path = tmp_path / "stft.onnx"
    _model(path, window=False, onesided=True, complex_=False, step=4, frame_length=16)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    assert "n >= 12" in dlc("inspect", art).stdout
    x = np.random.default_rng(0).random((2, 10, 1)).astype(np.float32)
    p = dlc_run_process(art, {"x": x}, tmp_path)
    assert p.returncode != 0 and "panicked" not in p.stderr
    assert "n = 10, but n must be at least 12" in p.stderr, p.stderr
