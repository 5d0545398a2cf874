"""Shared by the benchmarks and the end-to-end tests: a compiled dlc artifact's model.so
called through ctypes (the generated entry point directly: no process per input), and
seeded model inputs."""
import ctypes
import json

import numpy as np


class DlcModel:
    """model.so loaded with ctypes; run() calls the generated entry point directly."""

    def __init__(self, art):
        m = json.loads((art / "manifest.json").read_text())
        self.lib = ctypes.CDLL(str(art / "model.so"))
        p = m["symbol_prefix"]
        self.run_fn = getattr(self.lib, p + "run")
        self.run_fn.restype = ctypes.c_int32
        self.run_fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        ws = getattr(self.lib, p + "workspace_size")
        ws.restype = ctypes.c_uint64
        self.ws = np.zeros(int(ws()) + 64, dtype=np.uint8)
        self.ws_ptr = (self.ws.ctypes.data + 63) // 64 * 64
        self.outputs = [np.zeros([d["fixed"] for d in o["shape"]], np.float32) for o in m["outputs"]]
        self.input_names = [i["name"] for i in m["inputs"]]

    def bind(self, feeds):
        self.inputs = [np.ascontiguousarray(feeds[n]) for n in self.input_names]
        self.in_arr = (ctypes.c_void_p * len(self.inputs))(*[a.ctypes.data for a in self.inputs])
        self.out_arr = (ctypes.c_void_p * len(self.outputs))(*[a.ctypes.data for a in self.outputs])

    def run(self):
        if self.run_fn(self.in_arr, self.out_arr, ctypes.c_void_p(self.ws_ptr)) != 0:
            raise RuntimeError("dlc run failed")
        return self.outputs


def random_feeds(inputs, rng, dims=None):
    """Seeded inputs for ONNX Runtime input descriptions `inputs`: standard-normal floats;
    uniform 8-bit integers; token ids below 8192 for `*ids` inputs; for other int64
    inputs (attention masks) ones with the last quarter zero (padding). Symbolic dims
    take their values from `dims` ({name: extent})."""
    feeds = {}
    for i in inputs:
        shape = [d if isinstance(d, int) else dims[d] for d in i.shape]
        if i.type == "tensor(int64)" and i.name.endswith("ids"):
            feeds[i.name] = rng.randint(0, 8192, size=shape).astype(np.int64)
        elif i.type in ("tensor(uint8)", "tensor(int8)"):
            lo, hi = (0, 256) if i.type == "tensor(uint8)" else (-128, 128)
            feeds[i.name] = rng.randint(lo, hi, size=shape).astype(np.uint8 if lo == 0 else np.int8)
        elif i.type == "tensor(int64)":
            m = np.ones(shape, np.int64)
            m[..., shape[-1] * 3 // 4:] = 0
            feeds[i.name] = m
        else:
            feeds[i.name] = rng.randn(*shape).astype(np.float32)
    return feeds
