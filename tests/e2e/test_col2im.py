"""Col2Im (2-D, constant image and block shapes) against ONNX Runtime: strides, pads,
dilations, several channels, a stride that leaves rows no block reaches; and Col2Im of
ones, which counts how many blocks cover each pixel (counted here in numpy)."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from conftest import dlc, dlc_run, dlc_run_process, ort_run


def _blocks(img, blk, pads, dil, strides):
    return [(img[a] + pads[a] + pads[a + 2] - dil[a] * (blk[a] - 1) - 1) // strides[a] + 1 for a in range(2)]


@pytest.mark.parametrize("img,blk,pads,dil,strides", [
    ((5, 5), (2, 2), (0, 0, 0, 0), (1, 1), (1, 1)),
    ((6, 7), (3, 2), (1, 0, 1, 2), (1, 2), (2, 1)),
    ((9, 8), (3, 3), (1, 1, 1, 1), (2, 2), (3, 2)),
])
def test_col2im_matches_ort(img, blk, pads, dil, strides, tmp_path):
    n, c = 2, 3
    lh, lw = _blocks(img, blk, pads, dil, strides)
    inits = [nh.from_array(np.array(img, np.int64), "img"), nh.from_array(np.array(blk, np.int64), "blk")]
    node = h.make_node("Col2Im", ["x", "img", "blk"], ["y"], pads=list(pads), dilations=list(dil), strides=list(strides))
    g = h.make_graph([node], "g", [h.make_tensor_value_info("x", T.FLOAT, [n, c * blk[0] * blk[1], lh * lw])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)], initializer=inits)
    path = tmp_path / "c2i.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 18)]), str(path))
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    feeds = {"x": np.random.default_rng(0).standard_normal((n, c * blk[0] * blk[1], lh * lw)).astype(np.float32)}
    got, want = dlc_run(art, path, feeds, tmp_path)["y"], ort_run(path, feeds)["y"]
    assert got.shape == want.shape == (n, c, *img)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_col2im_of_ones_counts_the_blocks_covering_each_pixel(tmp_path):
    img, blk, strides = (6, 6), (3, 3), (2, 2)
    lh, lw = _blocks(img, blk, (0, 0, 0, 0), (1, 1), strides)
    inits = [nh.from_array(np.array(img, np.int64), "img"), nh.from_array(np.array(blk, np.int64), "blk")]
    node = h.make_node("Col2Im", ["x", "img", "blk"], ["y"], strides=list(strides))
    g = h.make_graph([node], "g", [h.make_tensor_value_info("x", T.FLOAT, [1, 9, lh * lw])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)], initializer=inits)
    path = tmp_path / "ones.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 18)]), str(path))
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    got = dlc_run(art, path, {"x": np.ones((1, 9, lh * lw), np.float32)}, tmp_path)["y"][0, 0]
    cover = np.zeros(img)
    for by in range(lh):
        for bx in range(lw):
            cover[by * 2:by * 2 + 3, bx * 2:bx * 2 + 3] += 1
    np.testing.assert_array_equal(got, cover)


def test_shapes_given_at_run_time_match_ort(tmp_path):
    # image_shape and block_shape as graph inputs: one artifact for several image and
    # block shapes of one input (the channel and column counts fixed), against ORT; a
    # pair whose grid does not match the columns fails the run naming the node.
    pads, dil, strides = (1, 0, 0, 1), (1, 2), (2, 1)
    node = h.make_node("Col2Im", ["x", "img", "blk"], ["y"], pads=list(pads), dilations=list(dil), strides=list(strides))
    ins = [h.make_tensor_value_info("x", T.FLOAT, [2, 12, 20]), h.make_tensor_value_info("img", T.INT64, [2]),
           h.make_tensor_value_info("blk", T.INT64, [2])]
    g = h.make_graph([node], "g", ins, [h.make_tensor_value_info("y", T.FLOAT, None)])
    path = tmp_path / "c2i.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 18)]), str(path))
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    x = np.random.default_rng(1).standard_normal((2, 12, 20)).astype(np.float32)
    # (image, block) pairs whose grid has 20 cells and whose block divides 12 channels.
    for img, blk in [((7, 6), (2, 2)), ((2, 9), (1, 1)), ((9, 7), (2, 3)), ((2, 25), (3, 4))]:
        assert np.prod(_blocks(img, blk, pads, dil, strides)) == 20 and 12 % np.prod(blk) == 0
        feeds = {"x": x, "img": np.array(img, np.int64), "blk": np.array(blk, np.int64)}
        w = tmp_path / f"{img[0]}_{img[1]}_{blk[0]}_{blk[1]}"
        w.mkdir()
        got, want = dlc_run(art, path, feeds, w)["y"], ort_run(path, feeds)["y"]
        assert got.shape == want.shape, (img, blk, got.shape, want.shape)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=str((img, blk)))
    bad = {"x": x, "img": np.array([9, 9], np.int64), "blk": np.array([2, 2], np.int64)}
    p = dlc_run_process(art, bad, tmp_path)
    assert p.returncode != 0 and "Col2Im" in p.stderr and "panicked" not in p.stderr, p.stderr


def test_constant_3d_shapes_match_ort(tmp_path):
    # Constant shapes other than 2-D take the general kernel (its extents constants).
    img, blk = (4, 5, 3), (2, 2, 1)
    grid = [img[a] - blk[a] + 1 for a in range(3)]
    inits = [nh.from_array(np.array(img, np.int64), "img"), nh.from_array(np.array(blk, np.int64), "blk")]
    node = h.make_node("Col2Im", ["x", "img", "blk"], ["y"])
    g = h.make_graph([node], "g", [h.make_tensor_value_info("x", T.FLOAT, [1, 2 * 4, int(np.prod(grid))])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)], initializer=inits)
    path = tmp_path / "c2i.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 18)]), str(path))
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    feeds = {"x": np.random.default_rng(2).standard_normal((1, 8, int(np.prod(grid)))).astype(np.float32)}
    got, want = dlc_run(art, path, feeds, tmp_path)["y"], ort_run(path, feeds)["y"]
    assert got.shape == want.shape == (1, 2, *img)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
