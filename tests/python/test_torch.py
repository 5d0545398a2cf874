"""`dlc.compile(torch_module, example_inputs=...)`: exported with torch.onnx.export, then
compiled; the reference is the module's own output. Runs where torch is installed
(scripts/python-torch-check.sh makes such a venv); skipped elsewhere."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import dlc  # noqa: E402


class SmallCnn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(16)
        self.conv2 = torch.nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.head = torch.nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.nn.functional.gelu(self.conv2(x))
        x = torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return torch.softmax(self.head(x), dim=-1)


def seeded(module):
    torch.manual_seed(0)
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.2)
    for b in module.buffers():
        if b.dtype.is_floating_point:
            b.uniform_(0.5, 1.5)
    return module.eval()


def close(got, want):
    want = want.detach().numpy()
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert np.abs(want).max() > 1e-2


def test_module_matches_its_own_output():
    m = seeded(SmallCnn())
    x = torch.randn(1, 3, 32, 32)
    model = dlc.compile(m, example_inputs=x)
    assert [i.name for i in model.inputs] == ["input"] and [o.name for o in model.outputs] == ["output"]
    with torch.no_grad():
        close(model(x.numpy()), m(x))


def test_dynamic_batch_and_two_inputs():
    m = seeded(SmallCnn())
    model = dlc.compile(m, example_inputs=(torch.randn(2, 3, 32, 32),), dynamic_axes={"input": {0: "batch"}})
    assert model.inputs[0].shape == ("batch", 3, 32, 32)
    for n in (1, 3):
        x = torch.randn(n, 3, 32, 32)
        with torch.no_grad():
            close(model(x.numpy()), m(x))

    class Pair(torch.nn.Module):
        def forward(self, a, b):
            return torch.tanh(a @ b) + a.mean()

    a, b = torch.randn(4, 8), torch.randn(8, 5)
    pair = dlc.compile(Pair(), example_inputs=(a, b))
    assert [i.name for i in pair.inputs] == ["input_0", "input_1"]
    close(pair(a.numpy(), b.numpy()), Pair()(a, b))


def test_torchvision_architecture():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    m = torchvision.models.mobilenet_v3_small(weights=None).eval()
    x = torch.randn(1, 3, 224, 224)
    model = dlc.compile(m, example_inputs=x)
    with torch.no_grad():
        want = m(x)
    got = model(x.numpy())
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-3, atol=1e-4)


def test_module_without_example_inputs_is_an_error():
    with pytest.raises(dlc.CompileError, match="example_inputs"):
        dlc.compile(SmallCnn())
