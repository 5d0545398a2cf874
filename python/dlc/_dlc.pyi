"""Type stubs of dlc's native module (python/src/lib.rs)."""

from typing import Dict, List, Optional, Tuple, Union

import numpy as np

__version__: str

class Error(Exception):
    """Base class of every error dlc raises."""

class CompileError(Error):
    """The model could not be compiled (the message is `dlc compile`'s)."""

class UnsupportedOpError(CompileError):
    """The model uses ops dlc does not support."""

    nodes: List[Tuple[str, str, str, int]]
    """Every unsupported node as (name, op_type, domain, opset)."""

class InputError(Error):
    """Inputs that do not fit the model."""

class LoadError(Error):
    """An artifact that cannot be loaded on this machine."""

class Artifact:
    threads: int
    def __init__(self, path: str) -> None: ...
    def inputs(self) -> List[Tuple[str, str, List[Union[int, str]]]]: ...
    def outputs(self) -> List[Tuple[str, str, List[Union[int, str]]]]: ...
    def symbols(self) -> List[Tuple[str, int, bool]]: ...
    def manifest_json(self) -> str: ...
    def run(self, feeds: Dict[str, object]) -> Dict[str, np.ndarray]: ...
    def bench(self, feeds: Dict[str, object], iters: int, warmup: int) -> List[float]: ...

def compile(
    model: str,
    out_dir: str,
    *,
    name: Optional[str] = None,
    input_shapes: Optional[Dict[str, List[int]]] = None,
    dims: Optional[Dict[str, int]] = None,
    target: Optional[str] = None,
    cpu: Optional[str] = None,
    quantize: Optional[str] = None,
    calibrate: Optional[str] = None,
    no_opt: bool = False,
    backend: str = "llvm",
    sequence_lengths: Optional[Dict[str, int]] = None,
    absent: Optional[List[str]] = None,
) -> str: ...
def npy_file_name(name: str) -> str: ...
def read_manifest(path: str) -> str: ...
def numpy_name(dtype: str) -> Optional[str]: ...
