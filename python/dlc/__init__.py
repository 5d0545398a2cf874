"""dlc: an ahead-of-time compiler for deep-learning models.

Compile an ONNX model (a path, an ``onnx.ModelProto``, or a ``torch.nn.Module`` with
example inputs) into a native artifact and run it on numpy arrays::

    >>> import dlc, numpy as np
    >>> model = dlc.compile("mlp.onnx")                         # doctest: +SKIP
    >>> model.run({"x": np.ones((1, 784), np.float32)})["y"]    # doctest: +SKIP

An artifact is a directory (``model.so``, ``model.h``, ``model.manifest``...) that
``dlc.load`` (or dlc-runtime, or any C program) runs later without the compiler.
Errors are :class:`Error` subclasses carrying the messages of the ``dlc`` CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from . import _dlc
from ._dlc import CompileError, Error, InputError, LoadError, UnsupportedOpError

__all__ = [
    "compile",
    "load",
    "Model",
    "TensorInfo",
    "Error",
    "CompileError",
    "UnsupportedOpError",
    "InputError",
    "LoadError",
    "__version__",
]

__version__: str = _dlc.__version__



class TensorInfo(NamedTuple):
    """A model input or output: its name, dlc dtype (``"f32"``...), the numpy dtype its
    arrays have, and its shape, with run-time dims as their symbol names (``"batch"``,
    ``"2*seq"``)."""

    name: str
    dtype: str
    numpy_dtype: np.dtype
    shape: Tuple[Union[int, str], ...]


def _infos(specs, strings=()) -> Tuple[TensorInfo, ...]:
    """The tensors a caller sees: a string tensor's table and bytes buffers (docs/strings.md)
    as one tensor of dtype ``string`` (numpy ``object``)."""
    out = []
    for n, d, s in specs:
        if n in strings:
            out.append(TensorInfo(n, "string", np.dtype(object), tuple(s)[:-1]))
        elif not any(n == f"{t}.bytes" for t in strings):
            out.append(TensorInfo(n, d, np.dtype(_dlc.numpy_name(d) or "uint8"), tuple(s)))
    return tuple(out)


def _string_tables(manifest: dict) -> set:
    """The names of the string tensors among the manifest's inputs and outputs."""
    return {t["name"] for t in manifest["inputs"] + manifest["outputs"] if t.get("encoding") == "string-table"}


def _encode_strings(name: str, value: Any) -> Tuple[np.ndarray, np.ndarray]:
    """A string array as its element table and UTF-8 bytes."""
    a = np.asarray(value, dtype=object)
    table = np.empty(a.shape + (2,), np.int64)
    parts, at = [], 0
    for idx, v in np.ndenumerate(a):
        if isinstance(v, bytes):
            b = v
        elif isinstance(v, str):
            b = v.encode("utf-8")
        else:
            raise InputError(f"input '{name}': a string tensor's elements must be str or bytes, got {type(v).__name__}")
        table[idx] = (at, at + len(b))
        parts.append(b)
        at += len(b)
    data = b"".join(parts) or b"\0"  # at least one byte
    return table, np.frombuffer(data, np.uint8).copy()


def _decode_strings(table: np.ndarray, data: np.ndarray) -> np.ndarray:
    raw = data.tobytes()
    out = np.empty(table.shape[:-1], dtype=object)
    for idx in np.ndindex(out.shape):
        s, e = table[idx]
        out[idx] = raw[s:e].decode("utf-8")
    return out


def _manifest_specs(specs) -> list:
    """(name, dtype, shape) of manifest.json's tensor entries."""
    return [
        (t["name"], t["dtype"], [d["fixed"] if "fixed" in d else d.get("symbol", "?") for d in t["shape"]])
        for t in specs
    ]


class Model:
    """A compiled model, loaded and ready to run.

    ``model.run({"x": x})`` returns a dict of output arrays (like ONNX Runtime's
    ``InferenceSession.run`` with feeds); ``model(x)`` takes the inputs in order and
    returns one array, or a tuple for several outputs. A ``Model`` may be called from
    several threads at once; the GIL is released while the generated code runs.
    Arrays that are C-contiguous and aligned are read in place (no copy).
    """

    def __init__(self, path: Union[str, os.PathLike], *, _keep: Any = None, _cross: bool = False) -> None:
        self._path = Path(path)
        self._keep = _keep  # a TemporaryDirectory the artifact lives in, when any
        self._load_error: Optional[LoadError] = None
        try:
            self._art = _dlc.Artifact(str(self._path))
            inputs, outputs = self._art.inputs(), self._art.outputs()
        except LoadError as e:
            if not _cross:
                raise
            # Compiled for another machine: described, saved, not run here.
            self._art, self._load_error = None, e
            m = json.loads(_dlc.read_manifest(str(self._path)))
            inputs, outputs = _manifest_specs(m["inputs"]), _manifest_specs(m["outputs"])
        manifest = json.loads(_dlc.read_manifest(str(self._path)))
        self._strings = _string_tables(manifest)
        # Sequence inputs and outputs (docs/sequences.md): name -> its elements' names.
        self._seq_in = {q["name"]: q.get("elements", []) for q in manifest.get("sequences", []) if not q.get("output")}
        self._seq_out = {
            q["name"]: q.get("elements", [])
            for q in manifest.get("sequences", [])
            if q.get("output") and not q.get("data")
        }
        # Sequence outputs whose length only the run knows: name -> (data, shapes) outputs;
        # element i is row i of data cut to the dims in row i of shapes (a dim of -1: one the
        # element lacks, index 0 there).
        self._seq_padded = {
            q["name"]: (q["data"], q["shapes"])
            for q in manifest.get("sequences", [])
            if q.get("output") and q.get("data")
        }
        # Optional inputs compiled absent (``compile(absent=...)``): a feed of None for
        # one is dropped, as ONNX Runtime takes None for an empty optional.
        self._absent = frozenset(manifest.get("absent_inputs", []))
        # Optional outputs whose presence only the run knows: None when NAME.present is false.
        self._maybe = list(manifest.get("optional_outputs", []))
        self.inputs: Tuple[TensorInfo, ...] = _infos(inputs, self._strings)
        """The inputs, in call order."""
        self.outputs: Tuple[TensorInfo, ...] = _infos(outputs, self._strings)
        """The outputs, in the order ``run`` returns them."""
        self._input_names = [i.name for i in self.inputs]

    def _runnable(self) -> "_dlc.Artifact":
        if self._art is None:
            raise LoadError(f"{self._load_error}; the artifact is in '{self._path}' (Model.save copies it)")
        return self._art

    @property
    def path(self) -> Path:
        """The artifact directory."""
        return self._path

    @property
    def threads(self) -> int:
        """Threads a run may use (default: ``DLC_NUM_THREADS``, else 1)."""
        return self._runnable().threads

    @threads.setter
    def threads(self, n: int) -> None:
        self._runnable().threads = n

    @property
    def symbols(self) -> Tuple[Tuple[str, int, bool], ...]:
        """The run-time dims as (name, smallest value, computed from tensor values)."""
        return tuple((s["name"], s["min"], s.get("data", False)) for s in self.manifest.get("symbols", []))

    @property
    def manifest(self) -> dict:
        """The artifact's manifest (``manifest.json``) as a dict."""
        return json.loads(_dlc.read_manifest(str(self._path)))

    @property
    def report(self) -> dict:
        """``report.json``: parameters, weight bytes, FLOPs, memory, energy estimate, and
        the optimizer's and quantizer's sections."""
        path = self._path / "report.json"
        if not path.exists():
            raise Error(f"artifact '{self._path}' has no report.json")
        with open(path) as f:
            return json.load(f)

    def run(self, feeds: Mapping[str, Any]) -> dict:
        """Runs the model. ``feeds`` maps every input name to an array (or anything
        ``numpy.asarray`` takes) of the input's dtype and a shape it accepts; returns
        ``{output name: array}`` in output order. An optional input compiled absent
        is left out (or given as None).

        >>> y = model.run({"x": np.zeros((1, 784), np.float32)})["y"]  # doctest: +SKIP

        Raises :class:`InputError` for a missing or unknown input, a wrong dtype or
        shape, or run-time dims that break one of the model's constraints.
        """
        if not isinstance(feeds, dict):
            feeds = dict(feeds)
        if self._absent:
            feeds = {k: v for k, v in feeds.items() if not (v is None and k in self._absent)}
        return self._run(feeds)

    def _run(self, feeds: dict) -> dict:
        if self._seq_in or self._seq_out or self._seq_padded:
            out = self._run_sequences(feeds)
        else:
            out = self._run_tensors(feeds)
        for name in self._maybe:
            if not bool(np.asarray(out.pop(f"{name}.present", True))):
                out[name] = None
        return out

    def _run_tensors(self, feeds: dict) -> dict:
        if not self._strings:
            return self._runnable().run(feeds)
        # String tensors: each an element table and its bytes (docs/strings.md).
        feeds = dict(feeds)
        for name in self._strings & set(feeds):
            feeds[name], feeds[f"{name}.bytes"] = _encode_strings(name, feeds[name])
        out = self._runnable().run(feeds)
        res = {}
        for name, value in out.items():
            if name in self._strings:
                res[name] = _decode_strings(value, out[f"{name}.bytes"])
            elif not (name.endswith(".bytes") and name[: -len(".bytes")] in self._strings):
                res[name] = value
        return res

    def _run_sequences(self, feeds: dict) -> dict:
        """A sequence input given as a list is fed as its elements; a sequence output is
        returned as the list of its elements (in the place of its first one)."""
        flat = {}
        for name, value in feeds.items():
            elems = self._seq_in.get(name)
            if elems is None:
                flat[name] = value
                continue
            if not isinstance(value, (list, tuple)) or len(value) != len(elems):
                got = f"{len(value)} elements" if isinstance(value, (list, tuple)) else type(value).__name__
                raise InputError(
                    f"input '{name}' is a sequence compiled for {len(elems)} elements (a list); got {got}"
                )
            flat.update(zip(elems, value))
        out = self._run_tensors(flat)
        owner = {e: name for name, elems in self._seq_out.items() for e in elems}
        shapes_of = {shapes: name for name, (_, shapes) in self._seq_padded.items()}
        res = {}
        for name, value in out.items():
            if name in shapes_of:
                continue
            if name in self._seq_padded:
                dims = out[self._seq_padded[name][1]]
                res[name] = [value[i][tuple(slice(0, int(k)) if k >= 0 else 0 for k in row)] for i, row in enumerate(dims)]
            elif name in owner:
                res.setdefault(owner[name], []).append(value)
            else:
                res[name] = value
        for name in self._seq_out:
            res.setdefault(name, [])
        return res

    def __call__(self, *arrays: Any) -> Union[np.ndarray, Tuple[np.ndarray, ...]]:
        """``model(x1, x2, ...)``: the inputs in order; one array back, or a tuple."""
        if len(arrays) != len(self._input_names):
            names = ", ".join(f"'{n}'" for n in self._input_names)
            raise InputError(f"the model takes {len(self._input_names)} input(s) ({names}), got {len(arrays)}")
        out = self._run(dict(zip(self._input_names, arrays)))
        values = tuple(out.values())
        return values[0] if len(values) == 1 else values

    def bench(self, iters: int = 50, feeds: Optional[Mapping[str, Any]] = None, warmup: int = 3) -> dict:
        """Times ``iters`` runs (after ``warmup``) on ``feeds`` (default: zeros, which
        needs every input's shape fixed). Returns median, min and max latency in
        milliseconds, the runs and the threads; buffers are allocated once, outside the
        timing."""
        if feeds is None:
            feeds = {}
            for i in self.inputs:
                if not all(isinstance(d, int) for d in i.shape):
                    raise InputError(
                        f"input '{i.name}' has run-time dims {i.shape}; give feeds to choose the shape to time"
                    )
                feeds[i.name] = np.zeros(i.shape, i.numpy_dtype)
        if iters < 1:
            raise ValueError("iters must be at least 1")
        times = self._runnable().bench(dict(feeds), iters, warmup)
        ms = [t * 1e3 for t in times]
        return {
            "median_ms": statistics.median(ms),
            "min_ms": min(ms),
            "max_ms": max(ms),
            "iters": iters,
            "threads": self.threads,
        }

    def save(self, directory: Union[str, os.PathLike]) -> Path:
        """Copies the artifact to ``directory`` (created if missing); ``dlc.load`` or
        dlc-runtime or a C program can then use it without the compiler."""
        dst = Path(directory)
        if dst.resolve() != self._path.resolve():
            shutil.copytree(self._path, dst, dirs_exist_ok=True)
        return dst

    def __repr__(self) -> str:
        def sig(infos):
            return ", ".join(f"{i.name}: {i.dtype}[{','.join(map(str, i.shape))}]" for i in infos)

        return f"<dlc.Model '{self._path}' ({sig(self.inputs)}) -> ({sig(self.outputs)})>"


def load(artifact_dir: Union[str, os.PathLike]) -> Model:
    """Loads an artifact that ``dlc compile`` or :func:`compile` wrote earlier. Needs no
    compiler: only the artifact's ``model.so`` and manifest.

    Raises :class:`LoadError` when the directory holds no artifact, or one compiled for
    another machine (another architecture, CPU features this one lacks, CUDA).
    """
    return Model(artifact_dir)


def _is_torch_module(obj: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def _export_torch(module: Any, example_inputs: Any, path: Path, dynamic_axes: Optional[dict]) -> None:
    import torch

    args = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    names = [f"input_{i}" for i in range(len(args))] if len(args) > 1 else ["input"]
    module.eval()
    with torch.no_grad():
        out = module(*args)
        n = len(out) if isinstance(out, (tuple, list)) else 1
        outputs = [f"output_{i}" for i in range(n)] if n > 1 else ["output"]
        with warnings.catch_warnings():
            # The TorchScript exporter (dynamo=False) is deliberate: it needs no
            # onnxscript and takes dynamic_axes; torch warns that it is the legacy one.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                module, args, str(path), input_names=names, output_names=outputs,
                dynamic_axes=dynamic_axes, opset_version=17, dynamo=False, do_constant_folding=True,
            )  # fmt: skip


def _write_calibration(calibration: Iterable[Mapping[str, Any]], folder: Path) -> int:
    n = 0
    for i, feeds in enumerate(calibration):
        sample = folder / f"sample_{i:05d}"
        sample.mkdir(parents=True)
        for name, value in feeds.items():
            np.save(sample / _dlc.npy_file_name(name), np.asarray(value))
        n += 1
    return n


def compile(
    model: Any,
    *,
    example_inputs: Any = None,
    dynamic_axes: Optional[dict] = None,
    input_shapes: Optional[Mapping[str, Sequence[int]]] = None,
    dims: Optional[Mapping[str, int]] = None,
    sequence_lengths: Optional[Mapping[str, int]] = None,
    absent: Optional[Iterable[str]] = None,
    target: Optional[str] = None,
    cpu: Optional[str] = None,
    quantize: Optional[str] = None,
    calibration: Optional[Iterable[Mapping[str, Any]]] = None,
    backend: str = "llvm",
    optimize: bool = True,
    out_dir: Optional[Union[str, os.PathLike]] = None,
    name: Optional[str] = None,
) -> Model:
    """Compiles a model into a native artifact and loads it (the pipeline of ``dlc
    compile``, called in-process).

    ``model`` is a path (``.onnx``, ``.dlc`` or ``.kir``), an ``onnx.ModelProto``, or a
    ``torch.nn.Module`` with ``example_inputs`` (a tensor or a tuple of them; exported
    with ``torch.onnx.export`` at opset 17, inputs named ``input`` or ``input_0,
    input_1...``, outputs ``output`` or ``output_0...``, ``dynamic_axes`` passed
    through). Symbolic dims stay run-time dims unless
    ``input_shapes`` (name -> shape) or ``dims`` (symbol -> value) pin them. A
    sequence input needs its length in ``sequence_lengths`` (name -> number of
    elements); ``run`` then takes it as a list, and returns a sequence output as one
    (docs/sequences.md). ``absent`` names inputs of optional type to compile as absent
    (empty optionals, which ``run`` then does not take); other optional inputs are
    given on every run.

    ``target``/``cpu``: an LLVM triple and CPU (default: this machine); an artifact for
    another machine (or CUDA) is returned described but not runnable here (``run``
    raises :class:`LoadError`); give ``out_dir`` or ``save`` it. ``quantize``:
    ``"int8"`` (needs ``calibration``, an iterable of feed dicts of numpy arrays) or
    ``"int8-dynamic"``. ``optimize=False`` skips dlc's graph optimisations.
    ``out_dir``: where the artifact goes (default: a temporary directory that lives as
    long as the returned model; ``Model.save`` copies it).

    >>> model = dlc.compile("resnet18.onnx", input_shapes={"input": (1, 3, 224, 224)})  # doctest: +SKIP

    Raises :class:`UnsupportedOpError` (with ``.nodes``) when the model uses ops dlc
    lacks, :class:`CompileError` for everything else that stops a compile.
    """
    keep = tempfile.TemporaryDirectory(prefix="dlc-")
    work = Path(keep.name)
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        stem = path.stem
    elif _is_torch_module(model):
        if example_inputs is None:
            raise CompileError("compiling a torch.nn.Module needs example_inputs (a tensor or a tuple of them)")
        stem = name or type(model).__name__
        path = work / "model.onnx"
        _export_torch(model, example_inputs, path, dynamic_axes)
    elif hasattr(model, "SerializeToString") and hasattr(model, "graph"):
        stem = name or (model.graph.name or "model")
        path = work / "model.onnx"
        path.write_bytes(model.SerializeToString())
    else:
        raise TypeError(
            f"dlc.compile takes a path, an onnx.ModelProto or a torch.nn.Module, not {type(model).__name__}"
        )
    calib_dir = None
    if calibration is not None:
        calib_dir = work / "calibration"
        if _write_calibration(calibration, calib_dir) == 0:
            raise CompileError("calibration holds no samples")
    if quantize == "int8" and calib_dir is None:
        raise CompileError("quantize='int8' needs calibration (an iterable of feed dicts of numpy arrays)")
    if isinstance(absent, str):  # one name, not its letters
        absent = [absent]
    out = Path(out_dir) if out_dir is not None else work / "artifact"
    _dlc.compile(
        str(path), str(out), name=name or stem,
        input_shapes={k: list(v) for k, v in (input_shapes or {}).items()},
        dims=dict(dims or {}), sequence_lengths=dict(sequence_lengths or {}),
        absent=sorted(absent or []), target=target, cpu=cpu,
        quantize=quantize,
        calibrate=str(calib_dir) if calib_dir else None, no_opt=not optimize, backend=backend,
    )  # fmt: skip
    if calib_dir is not None:
        shutil.rmtree(calib_dir, ignore_errors=True)
    return Model(out, _keep=None if out_dir is not None else keep, _cross=target is not None)
