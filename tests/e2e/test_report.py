"""The size and energy report: `dlc bench` stores latency, CPU time and energy per
inference in the artifact's report.json, and `dlc compare` shows two artifacts side by
side with ratios."""
import json

from conftest import FILETESTS, dlc


def test_bench_records_energy_and_compare_shows_ratios(tmp_path):
    model = FILETESTS / "gemm_packed.onnx"
    a, b = tmp_path / "a", tmp_path / "b"
    dlc("compile", model, "-o", a, "--no-opt")
    dlc("compile", model, "-o", b)
    for art in (a, b):
        dlc("bench", art, "--iters", "5", "--watts-per-core", "12.5")
        bench = json.loads((art / "report.json").read_text())["bench"]
        assert bench["iters"] == 5 and bench["threads"] >= 1
        assert 0 < bench["min_ms"] <= bench["median_ms"] <= bench["max_ms"]
        assert bench["cpu_ms_per_inference"] > 0
        if bench["energy_source"] != "rapl":
            # The estimate is CPU time x the watts given.
            assert abs(bench["energy_j_per_inference"] - bench["cpu_ms_per_inference"] / 1e3 * 12.5) < 1e-12
    ra, rb = (json.loads((d / "report.json").read_text()) for d in (a, b))
    out = dlc("compare", a, b).stdout
    kernels = next(line for line in out.splitlines() if line.startswith("kernels"))
    assert kernels.split() == ["kernels", str(ra["kernels"]), str(rb["kernels"]), f"{rb['kernels'] / ra['kernels']:.2f}"]
    assert "energy per inference" in out and "benchmarked with" in out


def test_compare_names_a_missing_report(tmp_path):
    p = dlc("compare", tmp_path / "nope", tmp_path / "nope2", check=False)
    assert p.returncode != 0 and "nope/report.json" in p.stderr
