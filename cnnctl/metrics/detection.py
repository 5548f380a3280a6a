"""Detection scores: PASCAL VOC average precision at IoU 0.5 (per class and its mean), COCO's
mAP@[.5:.95] through ``pycocotools`` (the reference implementation), and proposal recall.

Inputs are per image: ground truth ``boxes`` (g, 4) ``(y0, x0, y1, x1)`` with ``classes`` (g,) in 1..K
(and optionally VOC's ``difficult`` (g,) bool), detections ``boxes`` (d, 4), ``scores`` (d,),
``classes`` (d,) in 1..K.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, 4), (m, 4) -> (n, m), numpy (the same formula as ``cnnctl.detection.boxes.iou``)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    ih = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iw = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ih * iw
    area = lambda x: np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def average_precision(recall: np.ndarray, precision: np.ndarray, eleven_point: bool = False) -> float:
    """Area under the interpolated precision-recall curve (VOC 2010 on), or VOC 2007's 11-point mean
    of the interpolated precision at recall 0, 0.1, ..., 1."""
    recall, precision = np.asarray(recall, np.float64), np.asarray(precision, np.float64)
    if eleven_point:
        return float(np.mean([precision[recall >= t].max(initial=0.0) for t in np.linspace(0, 1, 11)]))
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]                  # interpolate: best precision at >= this recall
    steps = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def voc_ap(gt, detections, num_classes: int, iou_threshold: float = 0.5, eleven_point: bool = False) -> dict:
    """``gt``: per image dicts with boxes, classes[, difficult]; ``detections``: per image dicts with
    boxes, scores, classes. -> {"map": mean over classes with ground truth, "ap": [per class or nan]}.

    Each detection, best score first, is a true positive when its best-overlapping ground-truth box of
    its class has IoU >= ``iou_threshold`` and is not taken yet; a match to a ``difficult`` box counts
    as neither (the VOC devkit's rule)."""
    aps = []
    for k in range(1, num_classes + 1):
        records, positives = [], 0
        for g, d in zip(gt, detections):
            gmask = np.asarray(g["classes"]) == k
            gboxes = np.asarray(g["boxes"], np.float64).reshape(-1, 4)[gmask]
            hard = (np.asarray(g.get("difficult", np.zeros(len(gmask), bool)), bool).reshape(-1)[gmask]
                    if g.get("difficult") is not None else np.zeros(len(gboxes), bool))
            positives += int((~hard).sum())
            dmask = np.asarray(d["classes"]) == k
            dboxes = np.asarray(d["boxes"], np.float64).reshape(-1, 4)[dmask]
            dscores = np.asarray(d["scores"], np.float64).reshape(-1)[dmask]
            records.append((gboxes, hard, dboxes, dscores))
        scored = [(s, i, j) for i, (_, _, _, sc) in enumerate(records) for j, s in enumerate(sc)]
        scored.sort(key=lambda t: -t[0])
        taken = [np.zeros(len(r[0]), bool) for r in records]
        tp, fp = [], []
        for _, i, j in scored:
            gboxes, hard, dboxes, _ = records[i]
            if len(gboxes):
                ious = _iou(dboxes[j:j + 1], gboxes)[0]
                best = int(np.argmax(ious))
                if ious[best] >= iou_threshold:
                    if hard[best]:
                        continue
                    if not taken[i][best]:
                        taken[i][best] = True
                        tp.append(1)
                        fp.append(0)
                        continue
            tp.append(0)
            fp.append(1)
        if positives == 0:
            aps.append(float("nan"))
            continue
        tp_c, fp_c = np.cumsum(tp), np.cumsum(fp)
        recall = tp_c / positives
        precision = tp_c / np.maximum(tp_c + fp_c, np.finfo(np.float64).eps)
        aps.append(average_precision(recall, precision, eleven_point) if len(tp) else 0.0)
    valid = [a for a in aps if not np.isnan(a)]
    return {"map": float(np.mean(valid)) if valid else float("nan"), "ap": aps}


def coco_map(gt, detections, class_names: list[str], sizes: list[tuple[int, int]]) -> dict:
    """COCO's box mAP@[.5:.95] and mAP@.5 by ``pycocotools.cocoeval.COCOeval`` (its printout silenced).
    ``sizes``: (height, width) per image."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(b):
        return [float(b[1]), float(b[0]), float(b[3] - b[1]), float(b[2] - b[0])]

    images = [{"id": i + 1, "height": int(h), "width": int(w)} for i, (h, w) in enumerate(sizes)]
    annotations, n = [], 0
    for i, g in enumerate(gt):
        hard = g.get("difficult")
        for j, (b, c) in enumerate(zip(np.asarray(g["boxes"]).reshape(-1, 4), np.asarray(g["classes"]).reshape(-1))):
            n += 1
            box = xywh(b)
            annotations.append({"id": n, "image_id": i + 1, "category_id": int(c), "bbox": box,
                                "area": box[2] * box[3], "iscrowd": int(bool(hard[j])) if hard is not None else 0})
    results = [{"image_id": i + 1, "category_id": int(c), "bbox": xywh(b), "score": float(s)}
               for i, d in enumerate(detections)
               for b, s, c in zip(np.asarray(d["boxes"]).reshape(-1, 4), np.asarray(d["scores"]).reshape(-1),
                                  np.asarray(d["classes"]).reshape(-1))]
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = {"images": images, "annotations": annotations,
                         "categories": [{"id": k + 1, "name": name} for k, name in enumerate(class_names)]}
        truth.createIndex()
        if not results:
            return {"coco_map": 0.0, "coco_map50": 0.0}
        found = truth.loadRes(results)
        ev = COCOeval(truth, found, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"coco_map": float(max(ev.stats[0], 0.0)), "coco_map50": float(max(ev.stats[1], 0.0))}


def proposal_recall(gt_boxes, proposals, iou_threshold: float) -> float:
    """Share of ground-truth boxes (over all images) that some proposal covers at IoU >= the threshold."""
    hit = total = 0
    for g, p in zip(gt_boxes, proposals):
        g = np.asarray(g).reshape(-1, 4)
        total += len(g)
        if len(g) and len(p):
            hit += int((_iou(g, p).max(axis=1) >= iou_threshold).sum())
    return hit / total if total else float("nan")
