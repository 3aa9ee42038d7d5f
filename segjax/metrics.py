"""Exact, streaming segmentation metrics.

Semantic metrics derive from a confusion matrix ``cm`` (int ``[C,C]``): **rows are ground truth,
columns prediction**; pixels whose label is the ignore label are not counted at all. The matrix is
computed on device inside the compiled step and summed over batches, devices and hosts (it is a sum,
so sharded and unsharded accumulation agree exactly).

Conventions for the derived per-class ratios (the MMSegmentation / scikit-learn convention):
a ratio whose denominator is 0 (e.g. the IoU of a class absent from both ground truth and
prediction) is NaN, and NaN entries are left out of the means. A class absent from the ground truth
but predicted somewhere has IoU 0 and recall NaN.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def confusion_matrix(pred, label, num_classes: int, *, ignore_label: int = 255, weights=None):
  """Counts ``cm[g, p]`` = number of pixels with ground truth ``g`` predicted as ``p``.

  ``pred`` and ``label`` are integer arrays of one shape. Pixels whose label is ``ignore_label``
  are skipped; ``weights`` (broadcastable to the shape, e.g. ``valid[:, None, None]``) masks further
  pixels such as evaluation padding. Labels outside ``[0, num_classes)`` that are not the ignore
  label are also skipped here (the input pipeline rejects them with a clear error beforehand).
  Returns int32 ``[num_classes, num_classes]``; jit-compilable.
  """
  pred = jnp.asarray(pred).astype(jnp.int32)
  label = jnp.asarray(label).astype(jnp.int32)
  keep = (label != ignore_label) & (label >= 0) & (label < num_classes)
  keep &= (pred >= 0) & (pred < num_classes)
  if weights is not None:
    keep &= jnp.broadcast_to(jnp.asarray(weights, bool), keep.shape)
  index = jnp.where(keep, label * num_classes + pred, 0)
  counts = jnp.zeros((num_classes * num_classes,), jnp.int32).at[index.reshape(-1)].add(
      keep.reshape(-1).astype(jnp.int32))
  return counts.reshape(num_classes, num_classes)


def _ratio(num, den):
  num = np.asarray(num, np.float64)
  den = np.asarray(den, np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _parts(cm):
  cm = np.asarray(cm, np.float64)
  tp = np.diag(cm)
  return tp, cm.sum(axis=0) - tp, cm.sum(axis=1) - tp  # tp, fp, fn


def pixel_accuracy(cm) -> float:
  """Correct pixels / counted pixels; NaN when no pixel is counted."""
  cm = np.asarray(cm, np.float64)
  return float(_ratio(np.trace(cm), cm.sum()))


def recall(cm) -> np.ndarray:
  """Per class ``TP / (TP + FN)`` (= per-class accuracy); NaN for classes absent from the ground truth."""
  tp, _, fn = _parts(cm)
  return _ratio(tp, tp + fn)


def precision(cm) -> np.ndarray:
  """Per class ``TP / (TP + FP)``; NaN for classes never predicted."""
  tp, fp, _ = _parts(cm)
  return _ratio(tp, tp + fp)


def f_score(cm, beta: float = 1.0) -> np.ndarray:
  """Per class ``(1 + b^2) TP / ((1 + b^2) TP + b^2 FN + FP)``; NaN where that denominator is 0."""
  tp, fp, fn = _parts(cm)
  b2 = beta * beta
  return _ratio((1 + b2) * tp, (1 + b2) * tp + b2 * fn + fp)


def dice(cm) -> np.ndarray:
  """Per class ``2 TP / (2 TP + FP + FN)`` (the F1 score)."""
  return f_score(cm, 1.0)


def iou(cm) -> np.ndarray:
  """Per class intersection over union ``TP / (TP + FP + FN)``; NaN where the class is in neither."""
  tp, fp, fn = _parts(cm)
  return _ratio(tp, tp + fp + fn)


def _nanmean(x) -> float:
  x = np.asarray(x, np.float64)
  return float(np.nanmean(x)) if np.any(~np.isnan(x)) else float("nan")


def mean_pixel_accuracy(cm) -> float:
  """Mean of the per-class recalls over classes present in the ground truth."""
  return _nanmean(recall(cm))


def mean_iou(cm) -> float:
  """Mean of the per-class IoUs over classes with a defined IoU."""
  return _nanmean(iou(cm))


def frequency_weighted_iou(cm) -> float:
  """``sum_c freq_c IoU_c`` with ``freq_c`` = ground-truth share of class c (NaN IoUs have freq 0)."""
  cm = np.asarray(cm, np.float64)
  freq = _ratio(cm.sum(axis=1), cm.sum())
  values = iou(cm)
  defined = ~np.isnan(values)
  return float(np.sum(freq[defined] * values[defined])) if cm.sum() > 0 else float("nan")


def summarize(cm, class_names: Sequence[str] | None = None) -> dict:
  """All semantic metrics of a confusion matrix, JSON-ready (NaN becomes ``None``)."""
  cm = np.asarray(cm)
  names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(cm.shape[0])]
  if len(names) != cm.shape[0]:
    raise ValueError(f"{len(names)} class names for a {cm.shape[0]}-class confusion matrix.")
  clean = lambda v: None if np.isnan(v) else float(v)
  per_class = lambda values: {n: clean(v) for n, v in zip(names, values)}
  return {
      "pixel_accuracy": clean(pixel_accuracy(cm)),
      "mean_pixel_accuracy": clean(mean_pixel_accuracy(cm)),
      "mean_iou": clean(mean_iou(cm)),
      "frequency_weighted_iou": clean(frequency_weighted_iou(cm)),
      "mean_dice": clean(_nanmean(dice(cm))),
      "mean_f_score": clean(_nanmean(f_score(cm))),
      "iou": per_class(iou(cm)),
      "dice": per_class(dice(cm)),
      "precision": per_class(precision(cm)),
      "recall": per_class(recall(cm)),
      "pixels": int(cm.sum()),
  }


def argmax_prediction(logits) -> jax.Array:
  """Predicted class per pixel from ``[..., C]`` logits."""
  return jnp.argmax(logits, axis=-1).astype(jnp.int32)
