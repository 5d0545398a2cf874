"""Tree ensembles (ai.onnx.ml TreeEnsemble opset 5 and TreeEnsembleRegressor opsets 1
and 3) against ONNX Runtime: random forests with every comparison mode, NaN inputs
routed by nodes_missing_value_tracks_true, set membership, several targets, each
aggregate function and post transform (one target: PROBIT only, as ONNX Runtime), float and double inputs, a run-time batch; and
malformed ensembles refused with errors that name the problem."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from conftest import dlc, dlc_run, ort_run

MODES = ["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ"]


def _random_trees(rng, n_trees, n_features, n_targets, depth, values, modes=MODES):
    """Legacy attributes of `n_trees` random trees: thresholds drawn from `values` (so
    that equality tests can hold), random modes, 1-2 votes per leaf."""
    a = {k: [] for k in ("nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_values", "nodes_modes",
                         "nodes_truenodeids", "nodes_falsenodeids", "nodes_missing_value_tracks_true",
                         "target_treeids", "target_nodeids", "target_ids", "target_weights")}
    for t in range(n_trees):
        count = [0]

        def grow(d):
            me = count[0]
            count[0] += 1
            a["nodes_treeids"].append(t)
            a["nodes_nodeids"].append(me)
            i = len(a["nodes_nodeids"]) - 1
            if d == 0 or (d < depth and rng.random() < 0.2):
                a["nodes_featureids"].append(0)
                a["nodes_values"].append(0.0)
                a["nodes_modes"].append("LEAF")
                a["nodes_truenodeids"].append(0)
                a["nodes_falsenodeids"].append(0)
                a["nodes_missing_value_tracks_true"].append(0)
                for target in rng.choice(n_targets, size=min(n_targets, rng.integers(1, 3)), replace=False):
                    a["target_treeids"].append(t)
                    a["target_nodeids"].append(me)
                    a["target_ids"].append(int(target))
                    a["target_weights"].append(float(rng.normal()))
                return me
            a["nodes_featureids"].append(int(rng.integers(n_features)))
            a["nodes_values"].append(float(rng.choice(values)))
            a["nodes_modes"].append(str(rng.choice(modes)))
            a["nodes_missing_value_tracks_true"].append(int(rng.integers(2)))
            a["nodes_truenodeids"].append(-1)
            a["nodes_falsenodeids"].append(-1)
            yes = grow(d - 1)
            no = grow(d - 1)
            a["nodes_truenodeids"][i] = yes
            a["nodes_falsenodeids"][i] = no
            return me

        grow(depth)
    return a


def _regressor(path, attrs, n_features, dtype=T.FLOAT, opset=3, batch="N"):
    node = h.make_node("TreeEnsembleRegressor", ["x"], ["y"], domain="ai.onnx.ml", **attrs)
    g = h.make_graph([node], "g", [h.make_tensor_value_info("x", dtype, [batch, n_features])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("ai.onnx.ml", opset)])
    onnx.save(m, str(path))


def _inputs(rng, rows, n_features, values, dtype=np.float32):
    """Rows drawing from the thresholds themselves, values between them, and NaNs."""
    x = rng.choice(values, size=(rows, n_features)).astype(dtype)
    x += (rng.random(x.shape) < 0.3) * rng.normal(scale=0.5, size=x.shape).astype(dtype)
    x[rng.random(x.shape) < 0.05] = np.nan
    return x


VALUES = np.array([-1.5, -0.25, 0.0, 0.1, 0.5, 2.0, 3.75], np.float32)


@pytest.mark.parametrize("aggregate,post,n_targets", [
    ("SUM", "NONE", 1), ("AVERAGE", "NONE", 3), ("MIN", "NONE", 3), ("MAX", "NONE", 2),
    ("SUM", "LOGISTIC", 2), ("SUM", "SOFTMAX", 4), ("SUM", "LOGISTIC", 1), ("AVERAGE", "SOFTMAX_ZERO", 4),
    ("AVERAGE", "PROBIT", 1), ("MAX", "PROBIT", 3),
])
def test_random_forest_regressor_matches_ort(aggregate, post, n_targets, tmp_path):
    rng = np.random.default_rng(len(aggregate) * 7 + n_targets)
    attrs = _random_trees(rng, 12, 5, n_targets, 6, VALUES)
    attrs.update(n_targets=n_targets, aggregate_function=aggregate, post_transform=post,
                 base_values=[float(v) for v in rng.normal(size=n_targets)])
    if post == "PROBIT":
        # Probabilities in (0, 1): weights in [0.05, 0.95), no base values.
        attrs["target_weights"] = [float(v) for v in rng.uniform(0.05, 0.95, len(attrs["target_weights"]))]
        del attrs["base_values"]
    if post == "SOFTMAX_ZERO":
        del attrs["base_values"]  # targets no leaf voted for stay 0
    path = tmp_path / "forest.onnx"
    _regressor(path, attrs, 5)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    for rows in (1, 37):
        x = _inputs(rng, rows, 5, VALUES)
        w = tmp_path / f"r{rows}"
        w.mkdir()
        got, want = dlc_run(art, path, {"x": x}, w)["y"], ort_run(path, {"x": x})["y"]
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=f"{rows} rows")


def test_double_input_with_double_thresholds(tmp_path):
    """Opset 3's nodes_values_as_tensor: f64 thresholds compared with an f64 input (a
    value one ulp from a threshold goes its own way)."""
    rng = np.random.default_rng(11)
    values = np.array([0.1, 1 / 3, 2.5], np.float64)
    attrs = _random_trees(rng, 6, 3, 1, 5, values)
    thresholds = np.array(attrs.pop("nodes_values"), np.float64)
    thresholds[np.array(attrs["nodes_modes"]) != "LEAF"] = rng.choice(values, size=(np.array(attrs["nodes_modes"]) != "LEAF").sum())
    attrs["nodes_values_as_tensor"] = nh.from_array(thresholds)
    attrs.update(n_targets=1)
    path = tmp_path / "f64.onnx"
    _regressor(path, attrs, 3, dtype=T.DOUBLE)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    x = rng.choice(values, size=(50, 3))
    x[::3] = np.nextafter(x[::3], np.inf)
    x[1::3] = np.nextafter(x[1::3], -np.inf)
    got, want = dlc_run(art, path, {"x": x}, tmp_path)["y"], ort_run(path, {"x": x})["y"]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def _ensemble5(path, nodes, leaves, roots, n_targets, aggregate=1, post=0, membership=None, dtype=T.FLOAT,
               n_features=3):
    """An opset-5 TreeEnsemble from node tuples (feature, split, mode, true id, true is
    leaf, false id, false is leaf, missing tracks true) and leaf tuples (target, weight)."""
    np_t = np.float32 if dtype == T.FLOAT else np.float64
    attrs = dict(
        nodes_featureids=[n[0] for n in nodes], nodes_splits=nh.from_array(np.array([n[1] for n in nodes], np_t)),
        nodes_modes=nh.from_array(np.array([n[2] for n in nodes], np.uint8)),
        nodes_truenodeids=[n[3] for n in nodes], nodes_trueleafs=[n[4] for n in nodes],
        nodes_falsenodeids=[n[5] for n in nodes], nodes_falseleafs=[n[6] for n in nodes],
        nodes_missing_value_tracks_true=[n[7] for n in nodes],
        leaf_targetids=[l[0] for l in leaves], leaf_weights=nh.from_array(np.array([l[1] for l in leaves], np_t)),
        tree_roots=roots, n_targets=n_targets, aggregate_function=aggregate, post_transform=post)
    if membership is not None:
        attrs["membership_values"] = nh.from_array(np.array(membership, np_t))
    node = h.make_node("TreeEnsemble", ["x"], ["y"], domain="ai.onnx.ml", **attrs)
    g = h.make_graph([node], "g", [h.make_tensor_value_info("x", dtype, ["N", n_features])],
                     [h.make_tensor_value_info("y", dtype, None)])
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 21), h.make_opsetid("ai.onnx.ml", 5)]), str(path))


def test_opset5_modes_membership_and_missing_values(tmp_path):
    """Two trees over every mode (LEQ, LT, GTE, GT, EQ, NEQ, MEMBER), NaNs each way, two
    targets, against ONNX Runtime."""
    nodes = [
        # tree 0: x0 <= 1 ? (x1 in {1, 4, 9} ? L0 : (x2 != 2 ? L1 : L2)) : (x2 < 0 ? L3 : L4)
        (0, 1.0, 0, 1, 0, 3, 0, 0),
        (1, 0.0, 6, 0, 1, 2, 0, 1),
        (2, 2.0, 5, 1, 1, 2, 1, 0),
        (2, 0.0, 1, 3, 1, 4, 1, 1),
        # tree 1: x1 >= 4 ? L5 : (x0 > -1 ? (x2 == 3 ? L6 : L7) : L8)
        (1, 4.0, 2, 5, 1, 5, 0, 1),
        (0, -1.0, 3, 6, 0, 8, 1, 0),
        (2, 3.0, 4, 6, 1, 7, 1, 1),
    ]
    leaves = [(0, 1.0), (1, 2.0), (0, 3.0), (1, 4.0), (0, 5.0), (1, 6.0), (0, 7.0), (1, 8.0), (0, 9.0)]
    path = tmp_path / "te5.onnx"
    _ensemble5(path, nodes, leaves, [0, 4], 2, membership=[1.0, 4.0, 9.0, np.nan])
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    grid = np.array([-2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 9.0, np.nan], np.float32)
    x = np.array(np.meshgrid(grid, grid, grid)).reshape(3, -1).T.copy()
    got, want = dlc_run(art, path, {"x": x}, tmp_path)["y"], ort_run(path, {"x": x})["y"]
    np.testing.assert_array_equal(got, want)


def test_opset5_double_average_with_a_one_leaf_tree(tmp_path):
    """f64, AVERAGE over three trees, one of them a single leaf (its root's children are
    the same leaf)."""
    nodes = [(0, 0.5, 0, 0, 1, 1, 1, 0), (1, -0.5, 2, 2, 1, 3, 1, 0), (0, 0.0, 0, 4, 1, 4, 1, 0)]
    leaves = [(0, 1.5), (0, -2.0), (0, 0.25), (0, 8.0), (0, 3.0)]
    path = tmp_path / "te5d.onnx"
    _ensemble5(path, nodes, leaves, [0, 1, 2], 1, aggregate=0, dtype=T.DOUBLE, n_features=2)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    x = np.random.default_rng(3).normal(size=(20, 2))
    got, want = dlc_run(art, path, {"x": x}, tmp_path)["y"], ort_run(path, {"x": x})["y"]
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("change,message", [
    (lambda a: a.update(nodes_featureids=[7] + a["nodes_featureids"][1:]), "feature 7"),
    (lambda a: a.update(nodes_truenodeids=[0] + a["nodes_truenodeids"][1:]), "cycle"),
    (lambda a: a.update(nodes_falsenodeids=[99] + a["nodes_falsenodeids"][1:]), "no node 99"),
    (lambda a: a.update(target_ids=[5] + a["target_ids"][1:]), "target 5"),
    (lambda a: a.update(nodes_modes=["BRANCH_SOMETIMES"] + a["nodes_modes"][1:]), "BRANCH_SOMETIMES"),
    (lambda a: a.update(post_transform="SIGMOID"), "SIGMOID"),
    (lambda a: a.update(n_targets=1 << 20), "n_targets too large"),
])
def test_malformed_ensembles_are_refused(change, message, tmp_path):
    rng = np.random.default_rng(5)
    attrs = _random_trees(rng, 2, 3, 2, 3, VALUES)
    attrs.update(n_targets=2)
    change(attrs)
    path = tmp_path / "bad.onnx"
    _regressor(path, attrs, 3)
    p = dlc("compile", path, "-o", tmp_path / "art", check=False)
    assert p.returncode != 0 and message in p.stderr and "TreeEnsembleRegressor" in p.stderr, p.stderr
    assert "panicked" not in p.stderr


def _classifier(path, attrs, n_features, labels):
    key = "classlabels_strings" if isinstance(labels[0], str) else "classlabels_int64s"
    node = h.make_node("TreeEnsembleClassifier", ["x"], ["label", "scores"], domain="ai.onnx.ml",
                       **{key: labels}, **attrs)
    ltype = T.STRING if key == "classlabels_strings" else T.INT64
    g = h.make_graph([node], "g", [h.make_tensor_value_info("x", T.FLOAT, ["N", n_features])],
                     [h.make_tensor_value_info("label", ltype, None), h.make_tensor_value_info("scores", T.FLOAT, None)])
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("ai.onnx.ml", 3)]), str(path))


def _class_votes(attrs, rng, classes, positive):
    """The trees' leaf votes rewritten as class votes: each leaf votes for each class in
    `classes` (weights in [0, 1/8) when `positive`, so that eight trees sum to a
    probability as a random forest's do; else normal)."""
    leaves = [(t, n) for t, n, m in zip(attrs["nodes_treeids"], attrs["nodes_nodeids"], attrs["nodes_modes"])
              if m == "LEAF"]
    for k in ("target_treeids", "target_nodeids", "target_ids", "target_weights"):
        del attrs[k]
    attrs.update(class_treeids=[], class_nodeids=[], class_ids=[], class_weights=[])
    for t, n in leaves:
        for c in classes:
            attrs["class_treeids"].append(t)
            attrs["class_nodeids"].append(n)
            attrs["class_ids"].append(c)
            attrs["class_weights"].append(float(rng.random() / 8 if positive else rng.normal()))


@pytest.mark.parametrize("labels,voted,positive,post,base", [
    ([10, 20, 30], [0, 1, 2], True, "NONE", None),
    (["cat", "dog", "émeu", ""], [0, 1, 2, 3], False, "SOFTMAX", [0.1, -0.2, 0.3, 0.0]),
    ([0, 1, 2], [0, 2], False, "LOGISTIC", [0.5, -0.5, 0.0]),
    ([0, 1], [0, 1], True, "NONE", None),  # a random forest's class probabilities
    ([0, 1], [1], True, "NONE", None),  # the binary case: one probability
    ([0, 1], [0], False, "LOGISTIC", [0.25]),  # a boosted margin with a base value
    ([0, 1], [0, 1], False, "SOFTMAX", [0.5, 0.5]),
    ([3, 7], [1], False, "NONE", None),
    (["no", "yes"], [1], True, "LOGISTIC", None),
])
def test_tree_ensemble_classifier_matches_ort(labels, voted, positive, post, base, tmp_path):
    rng = np.random.default_rng(len(labels) * 31 + len(voted) * 7 + len(post))
    attrs = _random_trees(rng, 8, 4, 1, 5, VALUES)
    _class_votes(attrs, rng, voted, positive)
    attrs["post_transform"] = post
    if base is not None:
        attrs["base_values"] = base
    path = tmp_path / "clf.onnx"
    _classifier(path, attrs, 4, labels)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    x = _inputs(rng, 64, 4, VALUES)
    got = dlc_run(art, path, {"x": x}, tmp_path)
    want = ort_run(path, {"x": x})
    np.testing.assert_allclose(got["scores"], want["scores"], rtol=1e-5, atol=1e-6)
    if isinstance(labels[0], str):
        assert [str(v) for v in got["label"]] == [str(v) for v in want["label"]]
    else:
        assert got["label"].dtype == np.int64
        np.testing.assert_array_equal(got["label"], want["label"])


def _ml_model(path, node, n_features, outputs, in_type=T.FLOAT):
    g = h.make_graph([node], "g", [h.make_tensor_value_info("x", in_type, ["N", n_features])],
                     [h.make_tensor_value_info(n, t, None) for n, t in outputs])
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("ai.onnx.ml", 1)]), str(path))


@pytest.mark.parametrize("op,attrs,in_type", [
    ("Scaler", dict(offset=[0.5, -1.0, 2.0, 0.0], scale=[2.0, 0.5, -1.0, 3.0]), T.FLOAT),
    ("Scaler", dict(offset=[1.5], scale=[0.25]), T.DOUBLE),
    ("Normalizer", dict(norm="MAX"), T.FLOAT),
    ("Normalizer", dict(norm="L1"), T.FLOAT),
    ("Normalizer", dict(norm="L2"), T.INT64),
    ("LinearRegressor", dict(coefficients=[0.5, -1.0, 2.0, 0.25], intercepts=[0.75]), T.FLOAT),
    ("LinearRegressor", dict(coefficients=list(np.linspace(-1, 1, 12)), intercepts=[0.1, 0.2, 0.3], targets=3,
                             post_transform="SOFTMAX"), T.FLOAT),
    ("LinearRegressor", dict(coefficients=[0.01, -0.02, 0.03, 0.005], intercepts=[0.5], post_transform="PROBIT"),
     T.FLOAT),
])
def test_scaler_normalizer_linear_regressor_match_ort(op, attrs, in_type, tmp_path):
    """Rows with negative values, a zero row (Normalizer leaves it as it is), int and
    double inputs computed in float as ONNX Runtime does."""
    node = h.make_node(op, ["x"], ["y"], domain="ai.onnx.ml", **attrs)
    path = tmp_path / "ml.onnx"
    _ml_model(path, node, 4, [("y", T.FLOAT)], in_type)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    x = np.random.default_rng(4).normal(scale=3, size=(9, 4))
    x[3] = 0
    x[5] = -np.abs(x[5])
    x = {T.FLOAT: x.astype(np.float32), T.DOUBLE: x, T.INT64: np.round(x).astype(np.int64)}[in_type]
    got, want = dlc_run(art, path, {"x": x}, tmp_path)["y"], ort_run(path, {"x": x})["y"]
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("labels,intercepts,post", [
    ([4, 5, 6], [0.1, -0.2, 0.3], "NONE"),
    (["a", "bb", "ccc"], [0.0, 0.5, -0.5], "SOFTMAX"),
    ([0, 1, 2], [0.0, 0.5, -0.5], "LOGISTIC"),
    ([0, 1, 2], [0.0, 0.5, -0.5], "SOFTMAX_ZERO"),
    ([0, 1, 2], [0.0, 0.5, -0.5], "PROBIT"),
    ([2, 9], [0.3], "NONE"),  # one score: [1 - s, s], the label by its sign
    (["no", "yes"], [-0.2], "LOGISTIC"),
    ([0, 1], [0.4], "SOFTMAX"),
])
def test_linear_classifier_matches_ort(labels, intercepts, post, tmp_path):
    rng = np.random.default_rng(len(labels) + len(intercepts))
    c = len(intercepts)
    key = "classlabels_strings" if isinstance(labels[0], str) else "classlabels_ints"
    node = h.make_node("LinearClassifier", ["x"], ["label", "scores"], domain="ai.onnx.ml",
                       coefficients=[float(v) for v in rng.normal(size=c * 4)], intercepts=intercepts,
                       post_transform=post, **{key: labels})
    path = tmp_path / "lc.onnx"
    _ml_model(path, node, 4, [("label", T.STRING if key == "classlabels_strings" else T.INT64), ("scores", T.FLOAT)])
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    x = rng.normal(size=(40, 4)).astype(np.float32)
    got, want = dlc_run(art, path, {"x": x}, tmp_path), ort_run(path, {"x": x})
    np.testing.assert_allclose(got["scores"], want["scores"], rtol=1e-5, atol=1e-6)
    assert [str(v) for v in got["label"]] == [str(v) for v in want["label"]]


def test_linear_classifier_with_one_score_needs_two_labels(tmp_path):
    node = h.make_node("LinearClassifier", ["x"], ["label", "scores"], domain="ai.onnx.ml",
                       coefficients=[1.0, 2.0], intercepts=[0.5], classlabels_ints=[0, 1, 2])
    path = tmp_path / "lc.onnx"
    _ml_model(path, node, 2, [("label", T.INT64), ("scores", T.FLOAT)])
    p = dlc("compile", path, "-o", tmp_path / "art", check=False)
    assert p.returncode != 0 and "needs two class labels" in p.stderr, p.stderr
