"""`dlc compile --emit kir` then `dlc compile model.kir`: the four reference models lower
entirely through kir, and compile back from their kir text into artifacts that match
ONNX Runtime. int8 layers (`quant_pack`, `qconv`) are still inkwell lowerings, so
`--emit kir` refuses a quantized model with a message naming the node (tested)."""
import onnxruntime as ort
import pytest

from conftest import assert_close, dlc, dlc_run, ort_run, random_inputs
from test_quantize import save_samples


@pytest.mark.parametrize("name", ["mlp", "bert", "resnet18", "mobilenetv2"])
def test_kir_round_trip_matches_ort(name, generated_models, tmp_path):
    src = generated_models / f"{name}.onnx"
    dlc("compile", src, "-o", tmp_path / "a", "--emit", "kir")
    kir = tmp_path / "a" / "model.kir"
    # Packed weights travel inside the kernels as constant arrays.
    assert 'data %d0 "bpack"' in kir.read_text() or 'data %d0 "wpack"' in kir.read_text()
    dlc("compile", kir, "-o", tmp_path / "b")
    feeds = random_inputs(src, seed=5)
    want = ort_run(src, feeds)
    got = dlc_run(tmp_path / "b", src, feeds, tmp_path)
    assert set(got) == set(want)
    for k in want:
        assert_close(got[k], want[k], f"{name} from kir:{k}")


def test_kir_is_refused_for_int8_layers_naming_the_node(generated_models, tmp_path):
    src = generated_models / "resnet18.onnx"
    inp = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).get_inputs()[0]
    cal = save_samples(tmp_path / "cal", inp.name, inp.shape, 2, seed=1)
    p = dlc("compile", src, "-o", tmp_path / "a", "--quantize", "int8", "--calibrate", cal, "--emit", "kir",
            check=False)
    assert p.returncode != 0
    assert "--emit kir: node '" in p.stderr and "not lowered through kir yet" in p.stderr, p.stderr
