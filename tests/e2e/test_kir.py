"""`dlc compile --emit kir` then `dlc compile model.kir`: the four reference models lower
entirely through kir, and compile back from their kir text into artifacts that match
ONNX Runtime; int8 models (static and dynamic quantization) compile back into artifacts
whose outputs equal the directly compiled artifact's (a consistency check of two dlc
paths: the int8 numbers themselves are checked against ONNX Runtime in
test_quantize.py)."""
import numpy as np
import onnxruntime as ort
import pytest

from conftest import FILETESTS, assert_close, dlc, dlc_run, ort_run, random_inputs
from test_quantize import save_samples


@pytest.mark.parametrize("name", ["mlp", "bert", "resnet18", "mobilenetv2"])
def test_kir_round_trip_matches_ort(name, generated_models, tmp_path):
    src = generated_models / f"{name}.onnx"
    dlc("compile", src, "-o", tmp_path / "a", "--emit", "kir")
    kir = tmp_path / "a" / "model.kir"
    text = kir.read_text()
    # Packed weights travel inside the kernels as constant arrays or, for kernels of
    # layers of one shape that share their code (BERT's Q, K and V projections), as
    # constant buffers their calls pass; their bytes (like every constant of a kilobyte
    # or more) in the sidecar file the program names.
    packed = ('data %d0 "bpack"', 'data %d0 "wpack"', '.bpack" const', '.wpack" const')
    assert any(p in text for p in packed)
    if name == "bert":
        assert '.bpack" const' in text
    assert text.splitlines()[1] == 'weights "model.kir.weights"'
    assert (tmp_path / "a" / "model.kir.weights").stat().st_size > len(text)
    dlc("compile", kir, "-o", tmp_path / "b")
    # The model compiled directly (a consistency check of the two dlc paths: equal
    # outputs), and both against ONNX Runtime.
    dlc("compile", src, "-o", tmp_path / "direct")
    feeds = random_inputs(src, seed=5)
    want = ort_run(src, feeds)
    got = dlc_run(tmp_path / "b", src, feeds, tmp_path)
    direct = dlc_run(tmp_path / "direct", src, feeds, tmp_path)
    assert set(got) == set(want) == set(direct)
    for k in want:
        np.testing.assert_array_equal(got[k], direct[k], err_msg=f"{name} from kir vs direct:{k}")
        assert_close(got[k], want[k], f"{name} from kir:{k}")


@pytest.mark.parametrize("name,scheme", [("mnist_cnn", "int8"), ("bert", "int8-dynamic")])
def test_int8_kir_round_trip_equals_the_direct_artifact(name, scheme, generated_models, tmp_path):
    src = generated_models / f"{name}.onnx"
    inp = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).get_inputs()[0]
    extra = []
    if scheme == "int8":
        extra = ["--calibrate", save_samples(tmp_path / "cal", inp.name, inp.shape, 2, seed=1)]
    dlc("compile", src, "-o", tmp_path / "a", "--quantize", scheme, *extra, "--emit", "kir,so,a,h")
    text = (tmp_path / "a" / "model.kir").read_text()
    assert "quant_pack" in text and "qconv" in text and 'data %d0 "wpack" : i8' in text
    dlc("compile", tmp_path / "a" / "model.kir", "-o", tmp_path / "b")
    feeds = random_inputs(src, seed=8)
    direct = dlc_run(tmp_path / "a", src, feeds, tmp_path)
    via_kir = dlc_run(tmp_path / "b", src, feeds, tmp_path)
    assert set(direct) == set(via_kir)
    for k in direct:
        np.testing.assert_array_equal(via_kir[k], direct[k], err_msg=f"{name} {scheme} from kir:{k}")


def test_kir_weights_file_must_stay_in_the_programs_folder(generated_models, tmp_path):
    """The weights file a program names is read from the program's folder only: a path,
    a symlink out of the folder, a missing file and a truncated one are errors naming
    the file (never a read elsewhere, never a crash)."""
    a = tmp_path / "a"
    dlc("compile", generated_models / "mlp.onnx", "-o", a, "--emit", "kir")
    text = (a / "model.kir").read_text()
    outside = tmp_path / "outside.weights"
    outside.write_bytes((a / "model.kir.weights").read_bytes())
    cases = {
        '"../outside.weights"': "must be a file name in the program's folder",
        '"link.weights"': "outside the program's folder",
        '"missing.weights"': "missing.weights",
        '"short.weights"': "past the weights file's 10 bytes",
    }
    (a / "link.weights").symlink_to(outside)
    (a / "short.weights").write_bytes(b"0123456789")
    for name, why in cases.items():
        bad = a / "bad.kir"
        bad.write_text(text.replace('"model.kir.weights"', name, 1))
        p = dlc("compile", bad, "-o", tmp_path / "out", check=False)
        assert p.returncode != 0 and why in p.stderr and "bad.kir" in p.stderr, (name, p.stderr)
        assert "panicked" not in p.stderr


@pytest.mark.parametrize("name", sorted(
    p.name for p in FILETESTS.glob("*.onnx") if p.name != "unsupported.onnx"))
def test_every_filetest_model_round_trips_through_kir(name, tmp_path):
    """Every filetest model (the symbolic-batch one too) through `--emit kir` and back:
    the kir artifact's outputs equal the directly compiled artifact's (a consistency check
    of two dlc paths) and match ONNX Runtime."""
    src = FILETESTS / name
    dlc("compile", src, "-o", tmp_path / "a", "--emit", "so,kir")
    dlc("compile", tmp_path / "a" / "model.kir", "-o", tmp_path / "b")
    sess = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    rng = np.random.RandomState(9)
    # Run-time dims (the symbolic-batch model's) at 3.
    feeds = {i.name: rng.randn(*[d if isinstance(d, int) else 3 for d in i.shape]).astype(np.float32)
             for i in sess.get_inputs()} if name == "symbolic_batch.onnx" else random_inputs(src, seed=9)
    direct = dlc_run(tmp_path / "a", src, feeds, tmp_path)
    via_kir = dlc_run(tmp_path / "b", src, feeds, tmp_path)
    want = ort_run(src, feeds)
    assert set(direct) == set(via_kir) == set(want)
    for k in want:
        np.testing.assert_array_equal(via_kir[k], direct[k], err_msg=f"{name} from kir:{k}")
        assert_close(via_kir[k], want[k], f"{name} from kir:{k}")
