"""Makes dims of a model's inputs and outputs symbolic, as exporters with dynamic axes
write them: `make_symbolic.py IN.onnx OUT.onnx --dim 0=N` names dim 0 of every input
and output `N` (a `dim_param`). The model must compute those dims from its inputs (no
constant Reshape targets that fix them); ONNX Runtime checks that when it runs."""
import argparse

import onnx


def make_symbolic(model, dims):
    for vi in list(model.graph.input) + list(model.graph.output):
        shape = vi.type.tensor_type.shape
        for axis, name in dims.items():
            if axis < len(shape.dim):
                shape.dim[axis].Clear()
                shape.dim[axis].dim_param = name
    del model.graph.value_info[:]
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--dim", action="append", required=True, help="AXIS=NAME, e.g. 0=N (repeatable)")
    a = ap.parse_args()
    dims = {int(k): v for k, v in (d.split("=", 1) for d in a.dim)}
    m = make_symbolic(onnx.load(a.src), dims)
    onnx.checker.check_model(m)
    onnx.save(m, a.dst)


if __name__ == "__main__":
    main()
