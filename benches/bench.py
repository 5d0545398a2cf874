#!/usr/bin/env python3
"""Times dlc against ONNX Runtime on the same models and inputs, in one run.

    .venv/bin/python benches/bench.py [--dlc target/release/dlc] [--iters 20] [--models mlp,resnet18]

For each model and thread count (1 and 2) both engines run the same seeded input. dlc is
timed by `dlc bench --json` (its runtime, thread pool included, on pre-allocated buffers;
the reported times exclude process start and loading), ONNX Runtime and OpenVINO (the
`openvino` package's CPU plugin, the model reshaped to the input's shape, the latency
hint, one stream, f32 inference: its default on CPUs with bf16 instructions is bf16; skipped with --no-openvino or when it is not installed) in this
process; the engines alternate in rounds of --round iterations (each dlc round after its own warm-up)
until --iters timings each, and the table reports medians and the ratio dlc/ORT (below
1.0: dlc is faster). The max abs diff column compares outputs, dlc's through ctypes on
model.so. A GEMM table (single MatMul models, 256 to 2048) gives GFLOP/s of both engines at
1 thread and dlc's share of the single-core FP32 peak that benches/peak.c measures.

An int8 table (--int8 models, default resnet18,bert): dlc's fp32 artifact against its
`--quantize int8` artifact (16 seeded calibration samples), alternating `dlc bench` rounds
at 1 and 2 threads, with ONNX Runtime's own int8 (`quantize_static`, QDQ, u8 activations,
per-channel i8 weights, same samples) timed in the same run; plus the weight bytes ratio
and the cosine similarity of int8 to fp32 outputs on a held-back input.

A run-time batch table (--symbolic models, default resnet18,mobilenetv2,bert): each model
compiled pinned (as generated, batch 1) and with its batch made symbolic
(tests/models/make_symbolic.py, one artifact for every batch), both timed at batch 1 with
alternating `dlc bench` rounds at 1 and 2 threads; the ratio is symbolic/pinned.

An op table (--ops, default on): single-op models where an op's own kernel decides the
time, a Llama-like GroupQueryAttention decode step over a 1,024-position cache and NonZero
of a detector-sized mask, against ONNX Runtime (and OpenVINO where it has the op).

A real-model table (--real, default: every corpus model dlc runs, tests/models/real_models.py,
fetched by scripts/setup.sh): the model as it ships (run-time batch and image dims, one
artifact) against the same model pinned to its first listed shape with --input-shape,
and ONNX Runtime on the shipped model, all at that shape, 1 and 2 threads; ratios
symbolic/pinned and symbolic/ORT.
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "models"))
import gen_models  # noqa: E402
from dlc_model import DlcModel, random_feeds  # noqa: E402
from make_symbolic import make_symbolic  # noqa: E402
import real_models  # noqa: E402


def ort_session(path, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Errors only: ddddocr's models declare an output shape their graph does not give,
    # and ONNX Runtime warns on every run (hundreds of lines between the table's rows).
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


class OvSession:
    """OpenVINO's CPU plugin (the `openvino` package) on the model reshaped to the feeds'
    shapes (static, as OpenVINO compiles best), with `threads` inference threads, the
    latency hint and f32 inference (on a CPU with AVX512-BF16 or AMX the plugin's default
    is bf16, a different accuracy from dlc's and ORT's f32); `run` has ORT's signature so
    the timing loops take either."""

    def __init__(self, path, threads, feeds):
        import openvino as ov
        core = ov.Core()
        model = core.read_model(str(path))
        model.reshape({k: list(v.shape) for k, v in feeds.items()})
        cfg = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
               "INFERENCE_PRECISION_HINT": "f32"}
        self.compiled = core.compile_model(model, "CPU", cfg)
        self.request = self.compiled.create_infer_request()

    def run(self, _names, feeds):
        self.request.infer(feeds)
        return [self.request.get_output_tensor(i).data for i in range(len(self.compiled.outputs))]


def ov_version():
    try:
        import openvino as ov
        return ov.__version__.split("-")[0]
    except ImportError:
        return None


def time_pair(dlc_model, sess, feeds, iters, warmup=3):
    """In-process, alternating (the GEMM table, one thread)."""
    for _ in range(warmup):
        dlc_model.run()
        sess.run(None, feeds)
    td, to = [], []
    for _ in range(iters):
        t0 = time.perf_counter()
        dlc_model.run()
        td.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sess.run(None, feeds)
        to.append(time.perf_counter() - t0)
    return statistics.median(td) * 1e3, statistics.median(to) * 1e3


def time_rounds(dlc, art, input_args, sess, feeds, threads, iters, per_round):
    """dlc through `dlc bench` and in-process sessions (ORT's, OpenVINO's), alternating in
    rounds. `sess` is one session (returns dlc's and its medians) or a list (returns
    dlc's median and a list)."""
    sessions = sess if isinstance(sess, list) else [sess]
    for s in sessions:
        for _ in range(3):
            s.run(None, feeds)
    td, others = [], [[] for _ in sessions]
    while len(td) < iters:
        # ORT's pool threads spin for a while after a run; let them go idle so that
        # they do not compete with dlc's threads for the two cores (dlc's process has
        # exited before ORT's round starts).
        time.sleep(0.05)
        out = subprocess.run([dlc, "bench", art, "--iters", str(per_round), "--threads", str(threads), "--json",
                              *input_args], check=True, capture_output=True, text=True).stdout
        td += json.loads(out)["times_ms"]
        for s, t in zip(sessions, others):
            time.sleep(0.05)
            for _ in range(per_round):
                t0 = time.perf_counter()
                s.run(None, feeds)
                t.append((time.perf_counter() - t0) * 1e3)
    meds = [statistics.median(t) for t in others]
    return statistics.median(td), (meds if isinstance(sess, list) else meds[0])


def engines(path, threads, feeds, ov):
    """The in-process engines timed beside dlc: ORT, and OpenVINO when `ov`."""
    return [ort_session(path, threads)] + ([OvSession(path, threads, feeds)] if ov else [])


def engines_available(path, threads, feeds, ov):
    """`engines`, with OpenVINO left out (None) when it cannot read the model (it has no
    ai.onnx.ml tree ensembles, for one): (sessions, OpenVINO's session or None)."""
    sessions = [ort_session(path, threads)]
    ovs = None
    if ov:
        try:
            ovs = OvSession(path, threads, feeds)
            sessions.append(ovs)
        except RuntimeError as e:
            why = [ln.strip() for ln in str(e).splitlines() if "No conversion rule" in ln] or ["it refuses the model"]
            print(f"<!-- OpenVINO cannot run {Path(path).name}: {why[0]} -->", flush=True)
    return sessions, ovs


def cells(td, others):
    """Table cells: each engine's ms, then dlc's ratio to each."""
    return " | ".join([f"{t:.3f}" for t in others] + [f"{td / t:.2f}" for t in others])


def npy_inputs(work, name, feeds):
    """Saves `feeds` as .npy files; returns the `--input NAME=FILE` arguments."""
    args = []
    for k, v in feeds.items():
        f = work / f"{name}_{k}.npy"
        np.save(f, v)
        args += ["--input", f"{k}={f}"]
    return args


def dlc_rounds(dlc, arts, input_args, threads, iters, per_round):
    """Medians of `dlc bench` of several artifacts on the same inputs, alternating."""
    times = [[] for _ in arts]
    while len(times[0]) < iters:
        for t, art in zip(times, arts):
            out = subprocess.run([dlc, "bench", art, "--iters", str(per_round), "--threads", str(threads), "--json",
                                  *input_args], check=True, capture_output=True, text=True).stdout
            t += json.loads(out)["times_ms"]
    return [statistics.median(t) for t in times]


def symbolic_table(a, work):
    print("\n| model (batch 1) | threads | pinned ms | symbolic ms | symbolic/pinned |")
    print("|---|---|---|---|---|")
    for name in a.symbolic.split(","):
        path = work / f"{name}.onnx"
        onnx.save(gen_models.MODELS[name](), path)
        sym = work / f"{name}_sym.onnx"
        onnx.save(make_symbolic(onnx.load(path), {0: "N"}), sym)
        arts = [work / f"{name}_pinned", work / f"{name}_symbolic"]
        for src, art in zip([path, sym], arts):
            subprocess.run([a.dlc, "compile", src, "-o", art, "--emit", "so"], check=True, capture_output=True)
        feeds = random_feeds(ort_session(path, 1).get_inputs(), np.random.RandomState(0))
        input_args = npy_inputs(work, name, feeds)
        for threads in (1, 2):
            tp, ts = dlc_rounds(a.dlc, arts, input_args, threads, a.iters, a.round)
            print(f"| {name} | {threads} | {tp:.3f} | {ts:.3f} | {ts / tp:.3f} |", flush=True)


def real_table(a, work):
    ov = "| OpenVINO ms " if a.ov else ""
    ovr = "| symbolic/OpenVINO " if a.ov else ""
    print(f"\n| real model (shape) | threads | pinned ms | symbolic ms | ORT ms {ov}| symbolic/pinned | symbolic/ORT {ovr}|")
    print("|---|---|---|---|---|---|---|" + ("---|---|" if a.ov else ""))
    for name in filter(None, a.real.split(",")):
        path = real_models.path(name)
        shape = real_models.MODELS[name]["shapes"][0]
        sess = ort_session(path, 1)
        feeds = real_models.feeds(name, sess, shape, np.random.RandomState(0))
        arts = [work / f"{name}_pinned", work / f"{name}_symbolic"]
        pin = [f for k, v in feeds.items() if v.ndim > 0 for f in ("--input-shape", f"{k}={'x'.join(map(str, v.shape))}")]
        dims = [f"--dim={k}={v}" for k, v in real_models.MODELS[name].get("dims", {}).items()]
        for art, extra in zip(arts, [pin, dims]):
            subprocess.run([a.dlc, "compile", path, "-o", art, "--emit", "so", *extra], check=True, capture_output=True)
        input_args = npy_inputs(work, name, feeds)
        shape = next(iter(feeds.values())).shape
        for threads in (1, 2):
            tp, ts = dlc_rounds(a.dlc, arts, input_args, threads, a.iters, a.round)
            sessions, ovs = engines_available(path, threads, feeds, a.ov)
            _, others = time_rounds(a.dlc, arts[1], input_args, sessions, feeds, threads, a.iters, a.round)
            if a.ov and ovs is None:
                others.append(None)  # OpenVINO cannot read the model
            label = f"{name} ({'x'.join(map(str, shape))})"
            ms = " | ".join("n/a" if t is None else f"{t:.3f}" for t in others)
            ratios = " | ".join("n/a" if t is None else f"{ts / t:.2f}" for t in others[1:])
            print(f"| {label} | {threads} | {tp:.3f} | {ts:.3f} | {ms} | {ts / tp:.2f} | {ts / others[0]:.2f} |"
                  + (f" {ratios} |" if a.ov else ""), flush=True)


def op_models(work):
    """Single-op models of the op table: (name, path, feeds, engines-with-OpenVINO)."""
    f = TensorProto.FLOAT
    rng = np.random.RandomState(0)
    out = []
    # A Llama-like decode step of com.microsoft GroupQueryAttention: 32 query heads over
    # 8 key/value heads of 128, a cache of 1,024 positions, rotary (OpenVINO has no GQA).
    b, p, hq, hk, d = 1, 1024, 32, 8, 128
    pos = np.arange(4096)[:, None] / (10000 ** (np.arange(d // 2) / (d // 2)))[None, :]
    ins = [helper.make_tensor_value_info("q", f, [b, 1, hq * d]), helper.make_tensor_value_info("k", f, [b, 1, hk * d]),
           helper.make_tensor_value_info("v", f, [b, 1, hk * d]),
           helper.make_tensor_value_info("past_k", f, [b, hk, p, d]),
           helper.make_tensor_value_info("past_v", f, [b, hk, p, d]),
           helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, [b])]
    inits = [helper.make_tensor("total", TensorProto.INT32, [], [p + 1]),
             numpy_helper.from_array(np.cos(pos).astype(np.float32), "cos"),
             numpy_helper.from_array(np.sin(pos).astype(np.float32), "sin")]
    node = helper.make_node("GroupQueryAttention", ["q", "k", "v", "past_k", "past_v", "seqlens_k", "total", "cos", "sin"],
                            ["y", "present_k", "present_v"], domain="com.microsoft", num_heads=hq, kv_num_heads=hk,
                            do_rotary=1)
    g = helper.make_graph([node], "gqa", ins, [helper.make_tensor_value_info(n, f, None) for n in ("y", "present_k", "present_v")],
                          initializer=inits)
    path = work / "gqa_decode.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]), path)
    feeds = {"q": rng.randn(b, 1, hq * d), "k": rng.randn(b, 1, hk * d), "v": rng.randn(b, 1, hk * d),
             "past_k": rng.randn(b, hk, p, d), "past_v": rng.randn(b, hk, p, d)}
    feeds = {k: v.astype(np.float32) for k, v in feeds.items()} | {"seqlens_k": np.array([p] * b, np.int32)}
    out.append(("gqa_decode (1x1024 cache, 32/8 heads)", path, feeds, False))
    # The same step as onnxruntime.transformers' converter wires it, nothing pinned: the
    # cache and mask lengths are run-time dims, seqlens and the total from the mask.
    ins = ins[:3] + [helper.make_tensor_value_info("past_k", f, [b, hk, "past", d]),
                     helper.make_tensor_value_info("past_v", f, [b, hk, "past", d]),
                     helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [b, "total"])]
    nodes = [helper.make_node("ReduceSum", ["attention_mask", "one"], ["row_sums"]),
             helper.make_node("Sub", ["row_sums", "one"], ["seqlens_i64"]),
             helper.make_node("Cast", ["seqlens_i64"], ["seqlens_k"], to=TensorProto.INT32),
             helper.make_node("Shape", ["attention_mask"], ["mask_shape"]),
             helper.make_node("Gather", ["mask_shape", "one"], ["total_i64"], axis=0),
             helper.make_node("Cast", ["total_i64"], ["total"], to=TensorProto.INT32), node]
    g = helper.make_graph(nodes, "gqa_rt", ins, [helper.make_tensor_value_info(n, f, None) for n in ("y", "present_k", "present_v")],
                          initializer=[helper.make_tensor("one", TensorProto.INT64, [1], [1])] + inits[1:])
    path = work / "gqa_decode_runtime.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]), path)
    feeds = {k: v for k, v in feeds.items() if k != "seqlens_k"} | {"attention_mask": np.ones((b, p + 1), np.int64)}
    out.append(("gqa_decode, run-time cache length (1024)", path, feeds, False))
    # NonZero of a 1x3x640x640 mask (10% set), as detectors' post-processing takes it.
    g = helper.make_graph([helper.make_node("Greater", ["x", "t"], ["m"]), helper.make_node("NonZero", ["m"], ["y"])],
                          "nonzero", [helper.make_tensor_value_info("x", f, [1, 3, 640, 640])],
                          [helper.make_tensor_value_info("y", TensorProto.INT64, None)],
                          initializer=[helper.make_tensor("t", f, [], [0.9])])
    path = work / "nonzero.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    out.append(("nonzero (1x3x640x640)", path, {"x": rng.rand(1, 3, 640, 640).astype(np.float32)}, True))
    return out


def op_table(a, work):
    ov = "| OpenVINO ms " if a.ov else ""
    print(f"\n| op model | threads | dlc ms | ORT ms {ov}| dlc/ORT |" + (" dlc/OpenVINO |" if a.ov else ""))
    print("|---|---|---|---|---|" + ("---|---|" if a.ov else ""))
    for name, path, feeds, with_ov in op_models(work):
        art = work / path.stem
        subprocess.run([a.dlc, "compile", path, "-o", art, "--emit", "so"], check=True, capture_output=True)
        input_args = npy_inputs(work, path.stem, feeds)
        for threads in (1, 2):
            td, others = time_rounds(a.dlc, art, input_args, engines(path, threads, feeds, a.ov and with_ov), feeds,
                                     threads, a.iters, a.round)
            ms = " | ".join(f"{t:.3f}" for t in others) + (" | -" if a.ov and not with_ov else "")
            ratios = " | ".join(f"{td / t:.2f}" for t in others) + (" | -" if a.ov and not with_ov else "")
            print(f"| {name} | {threads} | {td:.3f} | {ms} | {ratios} |", flush=True)


def matmul_model(n, path):
    rng = np.random.RandomState(n)
    w = numpy_helper.from_array(rng.randn(n, n).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["a", "w"], ["y"])], f"gemm{n}",
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)


def measured_peak(work):
    """GFLOP/s of benches/peak.c (independent FMA chains on one core), or None."""
    exe = work / "peak"
    try:
        subprocess.run(["clang-22", "-O2", "-march=native", "-ffp-contract=fast", "-o", exe, ROOT / "benches" / "peak.c"],
                       check=True, capture_output=True)
        return float(subprocess.run([exe], check=True, capture_output=True, text=True).stdout)
    except (OSError, subprocess.CalledProcessError, ValueError):
        return None


def int8_table(a, work):
    import logging

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's advice on pre-processing

    print("\n| model | threads | dlc fp32 ms | dlc int8 ms | int8/fp32 | ORT int8 ms | dlc int8/ORT int8 | "
          "weights int8/fp32 | cosine |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in a.int8.split(","):
        path = work / f"{name}.onnx"
        onnx.save(gen_models.MODELS[name](), path)
        sess0 = ort_session(path, 1)
        rng = np.random.RandomState(100)
        samples = [random_feeds(sess0.get_inputs(), rng) for _ in range(16)]
        cal = work / f"{name}_cal"
        for i, sample in enumerate(samples):
            (cal / f"s{i:02d}").mkdir(parents=True, exist_ok=True)
            for k, v in sample.items():
                np.save(cal / f"s{i:02d}" / f"{k}.npy", v)
        fp32, int8 = work / f"{name}_fp32", work / f"{name}_int8"
        subprocess.run([a.dlc, "compile", path, "-o", fp32, "--emit", "so"], check=True, capture_output=True)
        subprocess.run([a.dlc, "compile", path, "-o", int8, "--emit", "so", "--quantize", "int8", "--calibrate", cal],
                       check=True, capture_output=True)

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.it = iter(samples)

            def get_next(self):
                return next(self.it, None)

        qdq = work / f"{name}_qdq.onnx"
        quantize_static(str(path), str(qdq), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
        feeds, input_args = random_feeds(sess0.get_inputs(), np.random.RandomState(7)), []
        for k, v in feeds.items():
            f = work / f"{name}_held_{k}.npy"
            np.save(f, v)
            input_args += ["--input", f"{k}={f}"]
        outs = []
        for art in (fp32, int8):
            d = DlcModel(art)
            d.bind(feeds)
            outs.append(d.run()[0].ravel().astype(np.float64))
        cos = outs[0] @ outs[1] / np.linalg.norm(outs[0]) / np.linalg.norm(outs[1])
        wb = [json.loads((art / "report.json").read_text())["weight_bytes"] for art in (fp32, int8)]
        for threads in (1, 2):
            sess = ort_session(qdq, threads)
            t32, to = time_rounds(a.dlc, fp32, input_args, sess, feeds, threads, a.iters, a.round)
            t8, to2 = time_rounds(a.dlc, int8, input_args, sess, feeds, threads, a.iters, a.round)
            to = statistics.median([to, to2])
            print(f"| {name} | {threads} | {t32:.3f} | {t8:.3f} | {t8 / t32:.2f} | {to:.3f} | {t8 / to:.2f} | "
                  f"{wb[1] / wb[0]:.3f} | {cos:.5f} |", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dlc", default=str(ROOT / "target" / "release" / "dlc"))
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--round", type=int, default=5, help="iterations per engine before switching")
    ap.add_argument("--models", default="mlp,resnet18,mobilenetv2,bert")
    ap.add_argument("--gemm", default="256,512,1024,2048")
    ap.add_argument("--int8", default="resnet18,bert", help="models for the int8 table (empty: none)")
    ap.add_argument("--symbolic", default="resnet18,mobilenetv2,bert",
                    help="models for the run-time batch table (empty: none)")
    ap.add_argument("--real", default=",".join(n for n, m in real_models.MODELS.items() if m["status"] == "runs"),
                    help="corpus models for the real-model table (empty: none)")
    ap.add_argument("--ops", default="yes", help="the single-op table (GQA decode, NonZero); empty: none")
    ap.add_argument("--no-openvino", action="store_true", help="time ONNX Runtime only")
    a = ap.parse_args()
    a.ov = None if a.no_openvino else ov_version()
    work = Path(tempfile.mkdtemp(prefix="dlc-bench-"))
    against = f"ONNX Runtime {ort.__version__}" + (f" and OpenVINO {a.ov}" if a.ov else " (OpenVINO not installed)")
    print(f"# dlc vs {against}, {time.strftime('%Y-%m-%d')}, median of {a.iters} after warm-up\n")
    ov = "OpenVINO ms | " if a.ov else ""
    ovr = " dlc/OpenVINO |" if a.ov else ""
    print(f"| model | threads | dlc ms | ORT ms | {ov}dlc/ORT |{ovr} max abs diff |")
    print("|---|---|---|---|---|---|" + ("---|---|" if a.ov else ""))
    for name in filter(None, a.models.split(",")):
        path = work / f"{name}.onnx"
        onnx.save(gen_models.MODELS[name](), path)
        art = work / name
        subprocess.run([a.dlc, "compile", path, "-o", art, "--emit", "so"], check=True, capture_output=True)
        d = DlcModel(art)
        sess0 = ort_session(path, 1)
        feeds = random_feeds(sess0.get_inputs(), np.random.RandomState(0))
        d.bind(feeds)
        diff = max(float(np.abs(x - y).max()) for x, y in zip(d.run(), sess0.run(None, feeds)))
        input_args = npy_inputs(work, name, feeds)
        for threads in (1, 2):
            td, others = time_rounds(a.dlc, art, input_args, engines(path, threads, feeds, a.ov), feeds, threads,
                                     a.iters, a.round)
            print(f"| {name} | {threads} | {td:.3f} | {cells(td, others)} | {diff:.2g} |", flush=True)
    if a.ops:
        op_table(a, work)
    if a.symbolic:
        symbolic_table(a, work)
    if a.real:
        real_table(a, work)
    if a.int8:
        int8_table(a, work)
    if a.gemm:
        peak = measured_peak(work)
        print(f"\nMeasured single-core FP32 peak (benches/peak.c): "
              f"{f'{peak:.1f} GFLOP/s' if peak else 'not measured (no clang-22)'}\n")
        print("| GEMM (n x n x n) | dlc GFLOP/s | % of peak | ORT GFLOP/s (1 thread) | dlc/ORT time |")
        print("|---|---|---|---|---|")
        for n in map(int, a.gemm.split(",")):
            path = work / f"gemm{n}.onnx"
            matmul_model(n, path)
            art = work / f"gemm{n}"
            subprocess.run([a.dlc, "compile", path, "-o", art, "--emit", "so"], check=True, capture_output=True)
            d = DlcModel(art)
            feeds = {"a": np.random.RandomState(1).randn(n, n).astype(np.float32)}
            d.bind(feeds)
            iters = max(3, min(a.iters, int(2e9 / n**3)))
            td, to = time_pair(d, ort_session(path, 1), feeds, iters, warmup=1)
            gf = 2 * n**3 / 1e9
            share = f"{gf / td * 1e3 / peak * 100:.0f}%" if peak else "-"
            print(f"| {n} | {gf / td * 1e3:.1f} | {share} | {gf / to * 1e3:.1f} | {td / to:.2f} |", flush=True)


if __name__ == "__main__":
    main()
