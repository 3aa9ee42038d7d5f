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

import functools
from typing import NamedTuple, Sequence

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
  counts = (
    jnp.zeros((num_classes * num_classes,), jnp.int32)
    .at[index.reshape(-1)]
    .add(keep.reshape(-1).astype(jnp.int32))
  )
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
  names = (
    list(class_names) if class_names is not None else [f"class_{i}" for i in range(cm.shape[0])]
  )
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


class ExactSum(NamedTuple):
  """Running totals of a pytree of per-batch sums, kept on device so that they neither wrap nor
  round away over a split of any size (JAX computes in 32 bits unless x64 is on).

  Integer leaves (non-negative counts: confusion matrices, segment counts) are two uint32 words,
  ``value = high * 2**32 + low``, exact below 2**64: `add` carries from ``low`` into ``high``.
  Floating leaves (sums of IoUs) are a float32 pair (``high + low``, double-single arithmetic:
  Knuth's TwoSum then a renormalisation), which keeps about twice float32's digits however many
  batches it sums. `value` gives int64 / float64 numpy arrays.
  """

  high: object  # a pytree of the per-batch sums' structure
  low: object

  @classmethod
  def zeros(cls, like) -> "ExactSum":
    """Zero totals for per-batch sums of the structure and shapes of ``like``."""
    zero = lambda x: jnp.zeros(jnp.shape(x), _word(x))
    return cls(jax.tree.map(zero, like), jax.tree.map(zero, like))

  def add(self, sums) -> "ExactSum":
    """The totals with one batch's ``sums`` (the structure of `zeros`'s ``like``) added."""

    def one(high, low, x):
      if jnp.issubdtype(high.dtype, jnp.integer):
        x = jnp.asarray(x).astype(jnp.uint32)
        total = low + x  # modulo 2**32: it wrapped when it came out below what was added
        return high + (total < x).astype(jnp.uint32), total
      x = jnp.asarray(x).astype(jnp.float32)
      total = high + x  # TwoSum: total + error == high + x exactly
      part = total - high
      error = (high - (total - part)) + (x - part) + low
      high = total + error  # renormalised (Fast2Sum), so that low stays below high's last digit
      return high, error - (high - total)

    highs, tree = jax.tree.flatten(self.high)
    pairs = [
      one(*leaves) for leaves in zip(highs, tree.flatten_up_to(self.low), tree.flatten_up_to(sums))
    ]
    return ExactSum(tree.unflatten([p[0] for p in pairs]), tree.unflatten([p[1] for p in pairs]))

  def value(self):
    """The totals on the host: int64 for counts (refused past 2**63), float64 for sums."""

    def one(high, low):
      high, low = np.asarray(high), np.asarray(low)
      if np.issubdtype(high.dtype, np.integer):
        if np.any(high >= 2**31):
          raise OverflowError("a count passed 2**63")
        return (high.astype(np.int64) << 32) + low.astype(np.int64)
      return high.astype(np.float64) + low.astype(np.float64)

    return jax.tree.map(one, self.high, self.low)


def _word(x):
  return jnp.uint32 if jnp.issubdtype(jnp.result_type(x), jnp.integer) else jnp.float32


# ----------------------------------------------------------------------------------------------
# Panoptic quality (Kirillov et al. 2019), following the COCO panopticapi rules exactly.
# ----------------------------------------------------------------------------------------------


class PanopticSums(NamedTuple):
  """Per-class sums from which PQ, SQ and RQ follow; they add across images, devices and hosts.

  ``iou``: sum of the IoUs of matched segments, ``tp``/``fp``/``fn``: matched, unmatched predicted
  and unmatched ground-truth segments, each ``[num_classes]``. ``overflow`` counts images with more
  distinct segments than ``max_segments`` (their sums are wrong; `panoptic_summary` refuses them).
  """

  iou: jax.Array
  tp: jax.Array
  fp: jax.Array
  fn: jax.Array
  overflow: jax.Array

  @classmethod
  def zeros(cls, num_classes: int) -> "PanopticSums":
    counts = lambda: jnp.zeros((num_classes,), jnp.int32)
    return cls(
      jnp.zeros((num_classes,), jnp.float32), counts(), counts(), counts(), jnp.zeros((), jnp.int32)
    )

  def __add__(self, other: "PanopticSums") -> "PanopticSums":
    return jax.tree.map(jnp.add, self, other)


_NO_SEGMENT = np.iinfo(np.int32).max


def _segments(ids, max_segments):
  """Distinct ids (padded with _NO_SEGMENT), each pixel's index into them, and an overflow flag."""
  flat = ids.reshape(-1)
  unique = jnp.unique(flat, size=max_segments + 1, fill_value=_NO_SEGMENT)
  index = jnp.searchsorted(unique[:max_segments], flat).clip(0, max_segments - 1)
  return unique[:max_segments], index, unique[max_segments] != _NO_SEGMENT


def _image_panoptic_sums(pred, gt, is_category, is_thing, *, label_divisor, max_segments):
  num_classes = is_category.shape[0]
  gt_ids, gt_index, gt_overflow = _segments(gt, max_segments)
  pred_ids, pred_index, pred_overflow = _segments(pred, max_segments)
  # inter[g, p]: pixels of ground-truth segment g predicted as segment p.
  inter = jnp.zeros((max_segments, max_segments), jnp.int32).at[gt_index, pred_index].add(1)

  def describe(ids):
    cls = ids // label_divisor
    known = (ids != _NO_SEGMENT) & (ids >= 0) & (cls < num_classes)
    cls = jnp.where(known, cls, 0)
    return cls, known & is_category[cls]  # a segment of an unknown class is void

  gt_class, gt_segment = describe(gt_ids)
  pred_class, pred_segment = describe(pred_ids)
  gt_void = (gt_ids != _NO_SEGMENT) & ~gt_segment
  gt_crowd = gt_segment & is_thing[gt_class] & (gt_ids % label_divisor == 0)
  gt_area = inter.sum(axis=1)
  pred_area = inter.sum(axis=0)
  void_inter = jnp.sum(jnp.where(gt_void[:, None], inter, 0), axis=0)  # per predicted segment

  same_class = gt_class[:, None] == pred_class[None, :]
  union = gt_area[:, None] + pred_area[None, :] - inter - void_inter[None, :]
  pair_iou = inter / jnp.maximum(union, 1)
  match = (
    (inter > 0)
    & same_class
    & (gt_segment & ~gt_crowd)[:, None]
    & pred_segment[None, :]
    & (pair_iou > 0.5)
  )
  gt_matched = match.any(axis=1)
  pred_matched = match.any(axis=0)
  matched_iou = jnp.sum(jnp.where(match, pair_iou, 0.0), axis=1)

  crowd_inter = jnp.sum(jnp.where(gt_crowd[:, None] & same_class, inter, 0), axis=0)
  mostly_ignored = (void_inter + crowd_inter) > 0.5 * pred_area
  false_negative = gt_segment & ~gt_crowd & ~gt_matched
  false_positive = pred_segment & ~pred_matched & ~mostly_ignored

  per_class = lambda cls, values: jnp.zeros((num_classes,), values.dtype).at[cls].add(values)
  overflow = gt_overflow | pred_overflow
  return PanopticSums(
    iou=per_class(gt_class, matched_iou.astype(jnp.float32)),
    tp=per_class(gt_class, gt_matched.astype(jnp.int32)),
    fp=per_class(pred_class, false_positive.astype(jnp.int32)),
    fn=per_class(gt_class, false_negative.astype(jnp.int32)),
    overflow=overflow.astype(jnp.int32),
  )


def _class_masks(num_classes, thing_classes, stuff_classes):
  thing_classes, stuff_classes = list(thing_classes), list(stuff_classes)
  overlap = set(thing_classes) & set(stuff_classes)
  if overlap:
    raise ValueError(f"classes {sorted(overlap)} are listed both as things and as stuff.")
  bad = [c for c in thing_classes + stuff_classes if not 0 <= c < num_classes]
  if bad:
    raise ValueError(f"classes {bad} lie outside [0, {num_classes}).")
  is_thing = np.zeros(num_classes, bool)
  is_thing[thing_classes] = True
  is_category = is_thing.copy()
  is_category[stuff_classes] = True
  return jnp.asarray(is_category), jnp.asarray(is_thing)


def panoptic_sums(
  pred,
  gt,
  *,
  num_classes: int,
  label_divisor: int,
  thing_classes: Sequence[int],
  stuff_classes: Sequence[int],
  max_segments: int = 256,
  valid=None,
) -> PanopticSums:
  """Streaming PQ: the per-class sums of one panoptic map ``[H,W]`` or a batch ``[B,H,W]``.

  Maps hold ``class * label_divisor + instance``. The COCO panopticapi rules: a segment whose class
  is neither thing nor stuff (e.g. the void/ignore label 255) is void; a ground-truth *thing* segment
  with instance 0 is crowd. A predicted and a ground-truth segment of one class match when their
  IoU > 0.5, the union leaving out the prediction's pixels on ground-truth void (matches are then
  unique). Unmatched ground truth that is not crowd is a false negative; an unmatched prediction
  is a false positive unless more than half of it lies on void or on crowd of its class.
  ``valid`` (``[B]`` bools) drops padded images. jit-compilable; ``max_segments`` bounds the number
  of distinct ids per image (overflow is counted and refused by `panoptic_summary`).
  """
  is_category, is_thing = _class_masks(num_classes, thing_classes, stuff_classes)
  pred = jnp.asarray(pred).astype(jnp.int32)
  gt = jnp.asarray(gt).astype(jnp.int32)
  if pred.shape != gt.shape:
    raise ValueError(f"prediction shape {pred.shape} != ground truth shape {gt.shape}")
  single = functools.partial(
    _image_panoptic_sums,
    is_category=is_category,
    is_thing=is_thing,
    label_divisor=label_divisor,
    max_segments=max_segments,
  )
  if pred.ndim == 2:
    return single(pred, gt)
  per_image = jax.vmap(single)(pred, gt)
  if valid is not None:
    keep = jnp.asarray(valid, bool)
    per_image = jax.tree.map(
      lambda x: jnp.where(keep.reshape((-1,) + (1,) * (x.ndim - 1)), x, 0), per_image
    )
  return jax.tree.map(lambda x: x.sum(axis=0), per_image)


_panoptic_sums_jit = jax.jit(
  panoptic_sums,
  static_argnames=(
    "num_classes",
    "label_divisor",
    "thing_classes",
    "stuff_classes",
    "max_segments",
  ),
)


def panoptic_summary(
  sums: PanopticSums,
  *,
  thing_classes: Sequence[int],
  stuff_classes: Sequence[int],
  class_names: Sequence[str] | None = None,
) -> dict:
  """PQ, SQ, RQ (fractions in [0, 1]) for all classes, things and stuff, and per class.

  Per class: ``PQ = sum IoU / (TP + FP/2 + FN/2)``, ``SQ = sum IoU / TP`` (0 without TP, as
  panopticapi), ``RQ = TP / (TP + FP/2 + FN/2)``. Averages are over the classes with any TP, FP or
  FN; a group with none has ``None``.
  """
  sums = jax.tree.map(np.asarray, sums)
  if int(sums.overflow):
    raise ValueError(
      f"{int(sums.overflow)} image(s) had more distinct segment ids than "
      "max_segments; raise max_segments."
    )
  iou_sum = sums.iou.astype(np.float64)
  tp, fp, fn = (x.astype(np.float64) for x in (sums.tp, sums.fp, sums.fn))
  names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(len(tp))]
  present = (tp + fp + fn) > 0
  den = np.where(present, tp + 0.5 * fp + 0.5 * fn, 1.0)
  pq, rq = iou_sum / den, tp / den
  sq = np.where(tp > 0, iou_sum / np.where(tp > 0, tp, 1.0), 0.0)

  def group(classes):
    chosen = [c for c in classes if present[c]]
    if not chosen:
      return {"pq": None, "sq": None, "rq": None, "num_classes": 0}
    return {
      "pq": float(pq[chosen].mean()),
      "sq": float(sq[chosen].mean()),
      "rq": float(rq[chosen].mean()),
      "num_classes": len(chosen),
    }

  things, stuff = list(thing_classes), list(stuff_classes)
  return {
    "all": group(things + stuff),
    "things": group(things),
    "stuff": group(stuff),
    "per_class": {
      names[c]: {
        "pq": float(pq[c]),
        "sq": float(sq[c]),
        "rq": float(rq[c]),
        "tp": int(tp[c]),
        "fp": int(fp[c]),
        "fn": int(fn[c]),
      }
      for c in sorted(things + stuff)
      if present[c]
    },
  }


def panoptic_quality(
  pred,
  gt,
  *,
  label_divisor: int,
  thing_classes: Sequence[int],
  stuff_classes: Sequence[int],
  void_label: int = 255,
  class_names: Sequence[str] | None = None,
  max_segments: int = 256,
) -> dict:
  """PQ / SQ / RQ of panoptic maps (one ``[H,W]`` or a batch ``[B,H,W]``) — see `panoptic_sums`.

  Ids whose class is ``void_label`` (or any class that is neither thing nor stuff) are void.
  """
  classes = list(thing_classes) + list(stuff_classes)
  if void_label in classes:
    raise ValueError(f"void_label {void_label} is also listed as a thing or stuff class.")
  sums = _panoptic_sums_jit(
    pred,
    gt,
    num_classes=max(classes) + 1,
    label_divisor=label_divisor,
    thing_classes=tuple(thing_classes),
    stuff_classes=tuple(stuff_classes),
    max_segments=max_segments,
  )
  return panoptic_summary(
    sums, thing_classes=thing_classes, stuff_classes=stuff_classes, class_names=class_names
  )


# ----------------------------------------------------------------------------------------------
# Instance masks: COCO mask AP through pycocotools (the reference implementation, not a re-write).
# ----------------------------------------------------------------------------------------------


def instances_from_panoptic(panoptic, *, label_divisor: int, thing_classes: Sequence[int]) -> dict:
  """The thing instances of one panoptic map ``[H,W]``: ``masks`` ``[N,H,W]`` bool, ``classes`` and
  ``crowd`` ``[N]`` (instance id 0 of a thing class is a crowd region, as in `panoptic_sums`)."""
  panoptic = np.asarray(panoptic)
  ids = [i for i in np.unique(panoptic) if i >= 0 and i // label_divisor in set(thing_classes)]
  return {
    "masks": np.stack([panoptic == i for i in ids])
    if ids
    else np.zeros((0,) + panoptic.shape, bool),
    "classes": np.array([i // label_divisor for i in ids], np.int64),
    "crowd": np.array([i % label_divisor == 0 for i in ids], bool),
  }


def _encode(masks):
  from pycocotools import mask as mask_utils  # pylint: disable=import-outside-toplevel

  masks = np.asarray(masks, bool)
  if masks.ndim != 3:
    raise ValueError(f"instance masks must be [N,H,W]; got shape {masks.shape}")
  return mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))


def mask_ap(
  ground_truth: Sequence[dict],
  predictions: Sequence[dict],
  *,
  class_ids: Sequence[int],
  class_names: Sequence[str] | None = None,
) -> dict:
  """COCO mask AP of predicted instances, computed by pycocotools' ``COCOeval(iouType="segm")``.

  ``ground_truth[i]``: ``{"masks": [N,H,W], "classes": [N], "crowd": [N] (optional)}`` for image i;
  ``predictions[i]``: ``{"masks": [M,H,W], "classes": [M], "scores": [M]}``. Returns AP (IoU
  0.50:0.95), AP50, AP75, AP for small/medium/large objects, AR@100 — fractions, ``None`` where
  COCO reports -1 (nothing to score) — and AP per class over ``class_ids``.
  """
  import contextlib  # pylint: disable=import-outside-toplevel
  import io  # pylint: disable=import-outside-toplevel
  from pycocotools import mask as mask_utils  # pylint: disable=import-outside-toplevel
  from pycocotools.coco import COCO  # pylint: disable=import-outside-toplevel
  from pycocotools.cocoeval import COCOeval  # pylint: disable=import-outside-toplevel

  if len(ground_truth) != len(predictions):
    raise ValueError(f"{len(ground_truth)} ground-truth images but {len(predictions)} predictions.")
  class_ids = [int(c) for c in class_ids]
  names = list(class_names) if class_names is not None else [f"class_{c}" for c in class_ids]
  images, gt_anns, dt_anns = [], [], []
  for image_id, (gt, dt) in enumerate(zip(ground_truth, predictions)):
    gt_masks = np.asarray(gt["masks"], bool)
    height, width = gt_masks.shape[1:]
    images.append({"id": image_id, "height": height, "width": width})
    crowd = np.asarray(gt.get("crowd", np.zeros(len(gt_masks), bool)), bool)
    for kind, masks, classes, extra, out in (
      ("ground truth", gt_masks, gt["classes"], crowd, gt_anns),
      ("prediction", dt["masks"], dt["classes"], dt.get("scores"), dt_anns),
    ):
      masks = np.asarray(masks, bool)
      if masks.shape[1:] != (height, width):
        raise ValueError(
          f"image {image_id}: {kind} masks {masks.shape} do not match the "
          f"ground truth's size {(height, width)}"
        )
      if extra is None or len(classes) != len(masks) or len(extra) != len(masks):
        raise ValueError(
          f"image {image_id}: {kind} needs one class"
          f"{' and one score' if kind == 'prediction' else ''} per mask."
        )
      for rle, cls, value in zip(_encode(masks) if len(masks) else [], classes, extra):
        ann = {
          "id": len(out) + 1,
          "image_id": image_id,
          "category_id": int(cls),
          "segmentation": rle,
          "area": float(mask_utils.area(rle)),
          "bbox": mask_utils.toBbox(rle).tolist(),
        }
        ann.update(
          {"iscrowd": int(value)} if out is gt_anns else {"score": float(value), "iscrowd": 0}
        )
        out.append(ann)
  categories = [{"id": c, "name": n} for c, n in zip(class_ids, names)]

  def coco(anns):
    api = COCO()
    api.dataset = {"images": images, "annotations": anns, "categories": categories}
    with contextlib.redirect_stdout(io.StringIO()):
      api.createIndex()
    return api

  evaluator = COCOeval(coco(gt_anns), coco(dt_anns), iouType="segm")
  with contextlib.redirect_stdout(io.StringIO()):
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
  clean = lambda v: None if v < 0 else float(v)
  stats = evaluator.stats
  precision = evaluator.eval["precision"][
    :, :, :, 0, -1
  ]  # [iou, recall, class], all areas, 100 dets
  per_class = {}
  for k, name in enumerate(names):
    values = precision[:, :, k]
    per_class[name] = float(values[values > -1].mean()) if np.any(values > -1) else None
  return {
    "ap": clean(stats[0]),
    "ap50": clean(stats[1]),
    "ap75": clean(stats[2]),
    "ap_small": clean(stats[3]),
    "ap_medium": clean(stats[4]),
    "ap_large": clean(stats[5]),
    "ar100": clean(stats[8]),
    "per_class": per_class,
  }
