"""docs/python.md's tutorial as one script: train a tiny CNN in PyTorch, compile it with
dlc, quantize it with calibration data, and compare outputs and speed with PyTorch and
ONNX Runtime. Needs torch, onnx and onnxruntime besides dlc
(scripts/python-torch-check.sh runs it in such a venv).

    python examples/python/tutorial.py
"""
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

import dlc

# 1. Data and training: 16x16 images of a noisy horizontal, vertical or diagonal bar.
torch.manual_seed(0)
rng = np.random.default_rng(0)


def batch(n):
    x = rng.normal(0, 0.3, (n, 1, 16, 16)).astype(np.float32)
    y = rng.integers(0, 3, n)
    for i, (k, p) in enumerate(zip(y, rng.integers(2, 14, n))):
        if k == 0:
            x[i, 0, p, :] += 1.0
        elif k == 1:
            x[i, 0, :, p] += 1.0
        else:
            x[i, 0, np.arange(16), np.arange(16)] += 1.0
    return torch.from_numpy(x), torch.from_numpy(y)


net = torch.nn.Sequential(
    torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
    torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
    torch.nn.Flatten(), torch.nn.Linear(16, 3),
)  # fmt: skip
opt = torch.optim.Adam(net.parameters(), lr=1e-2)
for step in range(150):
    x, y = batch(64)
    loss = torch.nn.functional.cross_entropy(net(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
net.eval()
x_test, y_test = batch(256)
with torch.no_grad():
    want = net(x_test).numpy()
print(f"trained: loss {loss.item():.3f}, PyTorch test accuracy {(want.argmax(1) == y_test.numpy()).mean():.1%}")

# 2. Compile the module (exported with torch.onnx.export; the batch stays a run-time dim).
model = dlc.compile(net, example_inputs=torch.zeros(1, 1, 16, 16), dynamic_axes={"input": {0: "batch"}})
print(model)
got = model(x_test.numpy())
print(f"dlc fp32: max |dlc - torch| = {np.abs(got - want).max():.2e}, "
      f"accuracy {(got.argmax(1) == y_test.numpy()).mean():.1%}")
assert np.allclose(got, want, rtol=1e-4, atol=1e-4)

# 3. int8: static quantization calibrated on 16 training batches, as numpy feed dicts.
calibration = [{"input": batch(1)[0].numpy()} for _ in range(16)]
int8 = dlc.compile(net, example_inputs=torch.zeros(1, 1, 16, 16), quantize="int8", calibration=calibration)
q = int8.report["quantization"]
agree = np.mean([int8(x.numpy()[None]).argmax() == w.argmax() for x, w in zip(x_test, want)])
print(f"dlc int8: {q['int8_layers']} int8 layers, weights {int8.report['weight_bytes']} bytes "
      f"(fp32: {model.report['weight_bytes']}), top-1 agreement with fp32 {agree:.1%}")

# 4. The same model in ONNX Runtime, and the speed of both at batch 1 and 32.
with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "tiny.onnx"
    torch.onnx.export(net, (torch.zeros(1, 1, 16, 16),), str(path), input_names=["input"],
                      dynamic_axes={"input": {0: "batch"}}, dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ort_out = sess.run(None, {"input": x_test.numpy()})[0]
    print(f"ONNX Runtime: max |ort - dlc| = {np.abs(ort_out - got).max():.2e}")

    def median_ms(run, feeds):  # each engine called from Python the same way
        times = []
        for _ in range(200):
            t = time.perf_counter()
            run(feeds)
            times.append((time.perf_counter() - t) * 1e3)
        return float(np.median(times))

    for n in (1, 32):
        feeds = {"input": x_test[:n].numpy()}
        d, o = median_ms(model.run, feeds), median_ms(lambda f: sess.run(None, f), feeds)
        print(f"batch {n:>2}: dlc {d:.3f} ms, ONNX Runtime {o:.3f} ms (dlc/ORT {d / o:.2f})")

# 5. Ship it: the artifact runs without the compiler (dlc.load, dlc-runtime, or C).
with tempfile.TemporaryDirectory() as tmp:
    model.save(Path(tmp) / "tiny")
    again = dlc.load(Path(tmp) / "tiny")
    assert np.array_equal(again(x_test.numpy()), got)
    print(f"saved and reloaded from {Path(tmp) / 'tiny'}: same outputs")
