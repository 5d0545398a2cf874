"""dlc-runtime must not depend on LLVM, MLIR or any compiler crate."""
import subprocess

from conftest import ROOT

FORBIDDEN = ["llvm", "inkwell", "mlir", "melior", "dlc-ir", "dlc-codegen", "dlc-passes", "dlc-onnx", "cranelift"]


def test_runtime_dependency_tree_has_no_compiler():
    tree = subprocess.run(["cargo", "tree", "-p", "dlc-runtime", "--edges", "normal,build", "--prefix", "none"],
                          cwd=ROOT, check=True, capture_output=True, text=True).stdout
    crates = {line.split()[0] for line in tree.splitlines() if line.strip()}
    assert "dlc-artifact" in crates and "libloading" in crates, crates
    bad = sorted(c for c in crates if any(f in c for f in FORBIDDEN))
    assert not bad, f"dlc-runtime depends on {bad}"
