"""Segmentation scores: per-pixel (confusion matrix -> accuracy, IoU, Dice) and per-instance.

- ``semantic_scores``: pixel accuracy; per-class IoU = TP / (TP + FP + FN) and Dice =
  2 TP / (2 TP + FP + FN); ``miou`` is the mean IoU over every class (background included) that occurs
  in the truth or the prediction (VOC's convention); ``dice`` is the mean Dice over the foreground
  classes that occur (for two classes: the foreground Dice, the usual figure for nuclei).
- ``instance_scores``: predicted instances are the connected components (8-connected) of each
  predicted foreground class, or of the whole predicted foreground (``by = "foreground"``). A true
  and a predicted instance match when their IoU exceeds the threshold (above 0.5 a match is unique). ``instance_f1`` at IoU 0.5, and the 2018 Data Science
  Bowl score: per image, the mean over thresholds 0.5, 0.55, ..., 0.95 of TP / (TP + FP + FN), then
  the mean over images.
"""

from __future__ import annotations

import numpy as np

DSB_THRESHOLDS = np.arange(0.5, 1.0, 0.05)


def _flat(a) -> np.ndarray:
    """An array, or a list of arrays of different shapes (images of various sizes) -> 1-D int64."""
    if isinstance(a, np.ndarray):
        return a.reshape(-1).astype(np.int64)
    return np.concatenate([x.reshape(-1) for x in a]).astype(np.int64)


def confusion(labels, predicted, k: int) -> np.ndarray:
    """(k, k) int64 counts, rows = true class, columns = predicted class (arrays or lists of them).
    Pixels whose true label is 255 (Pascal VOC's void) are not counted."""
    t, p = _flat(labels), _flat(predicted)
    keep = t != 255
    t, p = t[keep], p[keep]
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def semantic_scores(labels: np.ndarray, predicted: np.ndarray, class_names: list[str]) -> dict:
    k = len(class_names)
    m = confusion(labels, predicted, k)
    tp = np.diag(m).astype(np.float64)
    fp, fn = m.sum(axis=0) - tp, m.sum(axis=1) - tp
    union = tp + fp + fn
    occurs = union > 0
    iou = np.where(occurs, tp / np.maximum(union, 1), np.nan)
    dice = np.where(occurs, 2 * tp / np.maximum(2 * tp + fp + fn, 1), np.nan)
    fg = occurs.copy()
    fg[0] = False
    return {
        "pixel_accuracy": float(tp.sum() / max(m.sum(), 1)),
        "miou": float(iou[occurs].mean()) if occurs.any() else 0.0,
        "dice": float(dice[fg].mean()) if fg.any() else 0.0,
        "per_class": [{"class": c, "iou": None if np.isnan(iou[i]) else float(iou[i]),
                       "dice": None if np.isnan(dice[i]) else float(dice[i]),
                       "pixels": int(m[i].sum())} for i, c in enumerate(class_names)],
    }


def components(predicted: np.ndarray, by: str = "classes") -> np.ndarray:
    """(H, W) class labels -> (H, W) int32 instance ids: 8-connected components of each foreground
    class (``by = "classes"``), or of the foreground whatever its classes (``"foreground"``: an
    object whose pixels are split between two classes stays one object; touching objects merge)."""
    from scipy.ndimage import label

    if by == "foreground":
        ids, _ = label(predicted > 0, structure=np.ones((3, 3), bool))
        return ids.astype(np.int32)
    out = np.zeros(predicted.shape, np.int32)
    top = 0
    for c in np.unique(predicted):
        if c == 0:
            continue
        comp, n = label(predicted == c, structure=np.ones((3, 3), bool))
        out[comp > 0] = comp[comp > 0] + top
        top += n
    return out


def iou_matrix(true_ids: np.ndarray, pred_ids: np.ndarray) -> np.ndarray:
    """(H, W) instance ids (0 = none) -> (n_true, n_pred) IoU of every pair, ids renumbered 1..n in order."""
    t_vals, t = np.unique(true_ids, return_inverse=True)
    p_vals, p = np.unique(pred_ids, return_inverse=True)
    t, p = t.reshape(-1), p.reshape(-1)
    # index 0 of each is the background only when 0 occurs; shift so that instance j is column j - 1
    t_off = 1 if t_vals[0] == 0 else 0
    p_off = 1 if p_vals[0] == 0 else 0
    nt, np_ = len(t_vals), len(p_vals)
    inter = np.bincount(t * np_ + p, minlength=nt * np_).reshape(nt, np_)[t_off:, p_off:].astype(np.float64)
    area_t = np.bincount(t, minlength=nt)[t_off:].astype(np.float64)
    area_p = np.bincount(p, minlength=np_)[p_off:].astype(np.float64)
    union = area_t[:, None] + area_p[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _matches(iou: np.ndarray, threshold: float) -> int:
    """True positives at ``threshold`` >= 0.5: pairs above it (each true and predicted instance in at most one)."""
    return int((iou > threshold).sum())


def instance_scores(true_instances: np.ndarray, predicted: np.ndarray, pred_instances: np.ndarray | None = None,
                    by: str = "classes") -> dict:
    """(n, H, W) true instance ids and predicted class labels (or predicted instance ids) -> scores;
    ``by``: how ``components`` makes instances of the labels."""
    tp = fp = fn = 0
    dsb, n_true, n_pred = [], 0, 0
    for i in range(len(true_instances)):
        pred_ids = pred_instances[i] if pred_instances is not None else components(predicted[i], by)
        iou = iou_matrix(true_instances[i], pred_ids)
        nt, npred = iou.shape
        n_true += nt
        n_pred += npred
        m = _matches(iou, 0.5)
        tp, fp, fn = tp + m, fp + npred - m, fn + nt - m
        per_t = []
        for thr in DSB_THRESHOLDS:
            mt = _matches(iou, thr)
            denom = mt + (npred - mt) + (nt - mt)
            per_t.append(mt / denom if denom else 1.0)
        dsb.append(float(np.mean(per_t)))
    f1 = 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else 1.0
    return {"instance_f1": float(f1), "instance_tp": tp, "instance_fp": fp, "instance_fn": fn,
            "instances_true": n_true, "instances_predicted": n_pred, "dsb_score": float(np.mean(dsb)) if dsb else 0.0}
