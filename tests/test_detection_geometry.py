"""Detection geometry with fixed expected values worked out by hand (detectron2's ``test_rpn.py`` style):
anchors, IoU, the box encoding, anchor labelling, the two samplers, NMS, and RoI max pooling against a
loop over the Caffe layer's arithmetic, with its gradient against finite differences."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from cnnctl.detection import anchors as anchor_ops
from cnnctl.detection import boxes as box_ops
from cnnctl.detection import sampling
from cnnctl.layers import RoIPool, roi_pool

R2 = math.sqrt(2.0)


def test_base_anchors_have_the_papers_areas_and_ratios():
    # ratio = height / width; area = scale^2: ratio 2 at scale 128 is 128*sqrt(2) tall, 128/sqrt(2) wide
    got = anchor_ops.base_anchors([128, 256], [0.5, 1.0, 2.0])
    expected = np.array([
        [-64 / R2, -64 * R2, 64 / R2, 64 * R2],        # ratio 0.5, scale 128
        [-128 / R2, -128 * R2, 128 / R2, 128 * R2],    # ratio 0.5, scale 256
        [-64, -64, 64, 64],                             # ratio 1
        [-128, -128, 128, 128],
        [-64 * R2, -64 / R2, 64 * R2, 64 / R2],        # ratio 2
        [-128 * R2, -128 / R2, 128 * R2, 128 / R2],
    ])
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    heights, widths = got[:, 2] - got[:, 0], got[:, 3] - got[:, 1]
    np.testing.assert_allclose(heights * widths, [128 ** 2, 256 ** 2] * 3, rtol=1e-6)


def test_grid_anchors_are_position_major_and_centred_on_cells():
    got = anchor_ops.grid_anchors(2, 3, stride=16, scales=[16, 32], ratios=[1.0])
    assert got.shape == (2 * 3 * 2, 4)
    # cell (0, 0): centre (8, 8); its two anchors come first, then cell (0, 1) centred at (8, 24)
    np.testing.assert_allclose(got[:4], [[0, 0, 16, 16], [-8, -8, 24, 24], [0, 16, 16, 32], [-8, 8, 24, 40]])
    # last cell (1, 2): centre (24, 40)
    np.testing.assert_allclose(got[-1], [8, 24, 40, 56])


def test_iou_fixed_values():
    a = [[0, 0, 10, 10], [0, 0, 0, 0]]
    b = [[5, 5, 15, 15], [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 5]]
    got = box_ops.iou(a, b).numpy()
    np.testing.assert_allclose(got, [[25 / 175, 1.0, 0.0, 0.5], [0, 0, 0, 0]], rtol=1e-6)


def test_encode_fixed_values_and_decode_inverts_it():
    anchors = np.array([[0, 0, 10, 10], [10, 20, 30, 60]], np.float32)
    boxes = np.array([[2, 4, 12, 14], [5, 10, 45, 90]], np.float32)
    got = box_ops.encode(boxes, anchors).numpy()
    # box 1: centre (7, 9) vs (5, 5), size 10 x 10 vs 10 x 10
    # box 2: centre (25, 50) vs (20, 40), size 40 x 80 vs 20 x 40
    np.testing.assert_allclose(got, [[0.2, 0.4, 0, 0], [0.25, 0.25, math.log(2), math.log(2)]], rtol=1e-6, atol=1e-7)
    weighted = box_ops.encode(boxes, anchors, sampling.HEAD_WEIGHTS).numpy()
    np.testing.assert_allclose(weighted, got * [10, 10, 5, 5], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(box_ops.decode(weighted, anchors, sampling.HEAD_WEIGHTS), boxes, atol=1e-4)


def test_decode_clamps_huge_size_deltas():
    got = box_ops.decode([[0, 0, 500.0, 500.0]], [[0, 0, 16, 16]]).numpy()
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got[0, 2] - got[0, 0], 1000.0, rtol=1e-4)   # exp(log(1000 / 16)) * 16


def test_xyxy_round_trip_and_clip():
    np.testing.assert_allclose(box_ops.to_xyxy([[1, 2, 3, 4]]), [[2, 1, 4, 3]])
    np.testing.assert_allclose(box_ops.from_xyxy(box_ops.to_xyxy([[1, 2, 3, 4]])), [[1, 2, 3, 4]])
    np.testing.assert_allclose(box_ops.clip([[-5, 3, 20, 40]], 16, 32), [[0, 3, 16, 32]])


def test_label_anchors_fixed_case():
    image = (100, 100)
    gt = [[10, 10, 50, 50], [60, 60, 90, 90]]
    anchors = np.array([
        [10, 10, 50, 46],      # IoU 0.9 with gt 0: positive
        [30, 30, 70, 70],      # IoU 400 / 2800 = 0.143 with gt 0, 100/1900 with gt 1: negative
        [60, 60, 90, 75],      # IoU 0.5 with gt 1, and the best any anchor has with gt 1: positive
        [10, 10, 50, 30],      # IoU 0.5 with gt 0, not its best: ignored (between the thresholds)
        [-5, 10, 45, 50],      # IoU 0.6 with gt 0 but crosses the image: ignored
        [0, 0, 5, 5],          # no overlap at all: negative
        [92, 92, 99, 99],      # no overlap: negative
    ], np.float32)
    labels, matched = sampling.label_anchors(anchors, gt, *image)
    assert labels.numpy().tolist() == [1, 0, 1, -1, -1, 0, 0]
    assert matched.numpy()[[0, 2, 3]].tolist() == [0, 1, 0]


def test_label_anchors_ties_for_the_best_anchor_are_all_positive_and_no_gt_means_negative():
    gt = [[0, 0, 40, 40]]
    anchors = [[0, 0, 20, 40], [20, 0, 40, 40], [0, 0, 10, 10]]   # 0.5, 0.5, 0.0625
    labels, _ = sampling.label_anchors(anchors, gt, 64, 64)
    assert labels.numpy().tolist() == [1, 1, 0]
    labels, _ = sampling.label_anchors(anchors, np.zeros((0, 4), np.float32), 64, 64)
    assert labels.numpy().tolist() == [0, 0, 0]


def test_sample_labels_caps_positives_and_fills_with_negatives():
    labels = np.array([1] * 10 + [0] * 20 + [-1] * 5, np.int32)
    got = sampling.sample_labels(labels, 8, 0.5, seed=[1, 2]).numpy()
    assert (got == 1).sum() == 4 and (got == 0).sum() == 4
    assert set(np.nonzero(got == 1)[0]) <= set(range(10)) and set(np.nonzero(got == 0)[0]) <= set(range(10, 30))
    assert (got[30:] == -1).all()
    again = sampling.sample_labels(labels, 8, 0.5, seed=[1, 2]).numpy()
    other = sampling.sample_labels(labels, 8, 0.5, seed=[1, 3]).numpy()
    assert (got == again).all() and not (got == other).all()
    few = sampling.sample_labels(np.array([1] + [0] * 20, np.int32), 8, 0.5, seed=[0, 0]).numpy()
    assert (few == 1).sum() == 1 and (few == 0).sum() == 7


def test_sample_rois_fixed_case():
    gt = np.array([[0, 0, 40, 40]], np.float32)
    proposals = np.array([
        [0, 0, 40, 36],        # IoU 0.9: foreground
        [0, 0, 40, 20],        # IoU 0.5: foreground
        [0, 0, 40, 12],        # IoU 0.3: background
        [0, 0, 10, 10],        # IoU 0.0625: neither (below 0.1)
        [50, 50, 60, 60],      # IoU 0: neither
    ], np.float32)
    rois, classes, targets, valid = (t.numpy() for t in sampling.sample_rois(
        proposals, gt, [3], num=8, seed=[0, 0], foreground_fraction=0.5))
    # candidates = proposals + the gt box itself: 3 foreground (the gt, 0.9, 0.5), 1 background
    assert valid.tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert sorted(classes[:3].tolist()) == [3, 3, 3] and classes[3] == 0 and (classes[4:] == 0).all()
    assert {tuple(r) for r in rois[:3].tolist()} == {(0, 0, 40, 40), (0, 0, 40, 36), (0, 0, 40, 20)}
    np.testing.assert_allclose(rois[3], [0, 0, 40, 12])
    for roi, target in zip(rois[:3], targets[:3]):
        np.testing.assert_allclose(box_ops.decode(target[None], roi[None], sampling.HEAD_WEIGHTS)[0], gt[0], atol=1e-3)
    assert (targets[3:] == 0).all()
    # the foreground share is a cap: at most 2 of 4 when num = 4 and fraction 0.5
    _, classes, _, valid = sampling.sample_rois(proposals, gt, [3], num=4, seed=[0, 0], foreground_fraction=0.5)
    assert (classes.numpy() > 0).sum() == 2 and valid.numpy().sum() == 3


def test_nms_keeps_the_best_of_each_overlapping_group_and_drops_small_boxes():
    boxes = [[0, 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 30], [40, 40, 42, 42]]
    scores = [0.8, 0.9, 0.5, 0.95]
    assert box_ops.nms(boxes, scores, 0.7, 10).numpy().tolist() == [3, 1, 2]
    assert box_ops.nms(boxes, scores, 0.7, 10, min_size=4).numpy().tolist() == [1, 2]
    assert box_ops.nms(boxes, scores, 0.95, 10, min_size=4).numpy().tolist() == [1, 0, 2]


def _roi_pool_reference(features, rois, index, out, scale):
    """The Caffe ROIPoolingLayer's forward loop, on exclusive far edges and clipped RoIs."""
    _, fh, fw, c = features.shape
    result = np.zeros((len(rois), out, out, c), features.dtype)
    for n, ((y0, x0, y1, x1), b) in enumerate(zip(rois, index)):
        start = [min(max(math.floor(v * scale + 0.5), 0), side - 1) for v, side in ((y0, fh), (x0, fw))]
        end = [min(max(math.floor((v - 1) * scale + 0.5), 0), side - 1) for v, side in ((y1, fh), (x1, fw))]
        h, w = max(end[0] - start[0] + 1, 1), max(end[1] - start[1] + 1, 1)
        for i in range(out):
            for j in range(out):
                r0 = min(max(i * h // out + start[0], 0), fh)            # floor and ceil, exactly
                r1 = min(max(-(-(i + 1) * h // out) + start[0], 0), fh)
                c0 = min(max(j * w // out + start[1], 0), fw)
                c1 = min(max(-(-(j + 1) * w // out) + start[1], 0), fw)
                result[n, i, j] = features[b, r0:r1, c0:c1].max(axis=(0, 1))
    return result


def test_roi_pool_matches_the_caffe_loop():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2, 13, 17, 3)).astype(np.float32)
    # RoIs of every size, from one cell to the whole map, on both images, in pixels at stride 8
    y0 = rng.uniform(0, 90, 40)
    x0 = rng.uniform(0, 120, 40)
    rois = np.stack([y0, x0, y0 + rng.uniform(1, 104 - y0), x0 + rng.uniform(1, 136 - x0)], 1).astype(np.float32)
    rois[0] = [0, 0, 104, 136]
    rois[1] = [8, 8, 9, 9]
    index = rng.integers(0, 2, 40)
    got = roi_pool(tf.constant(features), rois, index, (7, 7), 1 / 8).numpy()
    np.testing.assert_array_equal(got, _roi_pool_reference(features, rois, index, 7, 1 / 8))


def test_roi_pool_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    features = tf.constant(rng.normal(size=(1, 9, 11, 2)), tf.float64)   # distinct values: no ties
    rois = np.array([[0, 0, 72, 88], [8, 16, 40, 60], [30, 5, 70, 30]], np.float32)
    weights = tf.constant(rng.normal(size=(3, 3, 3, 2)), tf.float64)

    def objective(f):
        return tf.reduce_sum(roi_pool(f, rois, [0, 0, 0], (3, 3), 1 / 8) * weights)

    with tf.GradientTape() as tape:
        tape.watch(features)
        value = objective(features)
    grad = tape.gradient(value, features).numpy()
    assert value.dtype == tf.float64
    numeric = np.zeros_like(grad)
    eps = 1e-6
    flat = features.numpy()
    for idx in np.ndindex(flat.shape):
        plus, minus = flat.copy(), flat.copy()
        plus[idx] += eps
        minus[idx] -= eps
        numeric[idx] = (objective(tf.constant(plus)) - objective(tf.constant(minus))).numpy() / (2 * eps)
    np.testing.assert_allclose(grad, numeric, atol=1e-6)
    assert (grad != 0).sum() > 10      # the gradient reaches many cells, not one


def test_roi_pool_layer_in_a_model_round_trips(tmp_path):
    features = keras.Input((16, 16, 4))
    rois = keras.Input((3, 4))                       # 3 RoIs per image
    pooled = RoIPool((7, 7), 1 / 8, name="roi_pool")([features, rois])
    model = keras.Model([features, rois], pooled)
    x = np.random.default_rng(2).normal(size=(2, 16, 16, 4)).astype(np.float32)
    r = np.array([[[0, 0, 64, 64], [16, 32, 100, 120], [0, 0, 128, 128]],
                  [[8, 8, 40, 40], [0, 0, 16, 16], [64, 64, 128, 128]]], np.float32)
    before = model.predict([x, r], verbose=0)
    assert before.shape == (2, 3, 7, 7, 4)
    # image 1's RoIs read image 1's features
    np.testing.assert_array_equal(before[1], roi_pool(tf.constant(x), r[1], [1, 1, 1], (7, 7), 1 / 8).numpy())
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(again.predict([x, r], verbose=0), before)


@pytest.mark.parametrize("side", [7, 8, 50])
def test_roi_pool_whole_map_is_a_max_pool_over_the_bins(side):
    # a RoI over the whole map divides it into the same bins as an adaptive max pool
    x = np.random.default_rng(side).normal(size=(1, side, side, 1)).astype(np.float32)
    got = roi_pool(tf.constant(x), [[0, 0, side, side]], [0], (7, 7), 1.0).numpy()
    np.testing.assert_array_equal(got, _roi_pool_reference(x, np.array([[0, 0, side, side]]), [0], 7, 1.0))
    assert got.max() == x.max()
