"""`dlc export` of imported ONNX models: ONNX Runtime on the exported model agrees with
ONNX Runtime on the original (the exporter maps every IR op these models use back)."""
import numpy as np
import onnx
import pytest

from conftest import FILETESTS, assert_close, dlc, ort_run, random_inputs

MODELS = sorted(p.name for p in FILETESTS.glob("*.onnx") if p.name not in ("unsupported.onnx", "symbolic_batch.onnx"))


@pytest.mark.parametrize("name", MODELS)
def test_export_round_trip(name, tmp_path):
    src = FILETESTS / name
    out = tmp_path / name
    dlc("export", src, "-o", out)
    onnx.checker.check_model(onnx.load(out), full_check=True)
    feeds = random_inputs(src, seed=2)
    want = ort_run(src, feeds)
    got = ort_run(out, feeds)
    assert set(got) == set(want)
    for k in want:
        assert_close(got[k], want[k], f"{name}:{k}")
