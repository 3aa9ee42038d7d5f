"""Panoptic quality against hand-computed cases and a line-by-line port of COCO's panopticapi;
mask AP through pycocotools on cases worked out by hand."""

import jax
import numpy as np
import pytest

from segjax import metrics

D = 1000  # label divisor
VOID = 255 * D  # a pixel of the void / ignore class
THINGS, STUFF = [1, 2], [0]


def pq(pred, gt, things=THINGS, stuff=STUFF):
  return metrics.panoptic_quality(
    np.array(pred), np.array(gt), label_divisor=D, thing_classes=things, stuff_classes=stuff
  )


def reference_sums(pred, gt, num_classes, things, stuff):
  """pq_compute_single_core of github.com/cocodataset/panopticapi, on id maps instead of PNGs."""
  categories = set(things) | set(stuff)
  iou, tp, fp, fn = (np.zeros(num_classes) for _ in range(4))
  segments = lambda m: {int(i): int((m == i).sum()) for i in np.unique(m) if i // D in categories}
  gt_segms, pred_segms = segments(gt), segments(pred)
  is_crowd = lambda label: label // D in things and label % D == 0
  pairs = {}
  for g, p in zip(gt.reshape(-1), pred.reshape(-1)):
    g = int(g) if int(g) in gt_segms else "VOID"
    p = int(p) if int(p) in pred_segms else "VOID"
    pairs[(g, p)] = pairs.get((g, p), 0) + 1
  gt_matched, pred_matched = set(), set()
  for (g, p), intersection in pairs.items():
    if g == "VOID" or p == "VOID" or is_crowd(g) or g // D != p // D:
      continue
    union = pred_segms[p] + gt_segms[g] - intersection - pairs.get(("VOID", p), 0)
    if intersection / union > 0.5:
      iou[g // D] += intersection / union
      tp[g // D] += 1
      gt_matched.add(g)
      pred_matched.add(p)
  crowd_by_class = {g // D: g for g in gt_segms if is_crowd(g)}
  for g in gt_segms:
    if g not in gt_matched and not is_crowd(g):
      fn[g // D] += 1
  for p, area in pred_segms.items():
    if p in pred_matched:
      continue
    ignored = pairs.get(("VOID", p), 0)
    if p // D in crowd_by_class:
      ignored += pairs.get((crowd_by_class[p // D], p), 0)
    if ignored / area > 0.5:
      continue
    fp[p // D] += 1
  return iou, tp, fp, fn


def test_perfect_prediction_scores_one_with_arbitrary_instance_ids():
  gt = np.array([[0, 0, 1001, 1001], [2001, 2001, 1002, 1002]])
  pred = np.where(gt == 1001, 1007, np.where(gt == 1002, 1003, gt))
  result = pq(pred, gt)
  for group in ("all", "things", "stuff"):
    assert result[group]["pq"] == pytest.approx(1.0)
  assert result["things"]["num_classes"] == 2


def test_void_is_taken_out_of_the_union():
  # IoU with void counted would be 2/4 (no match); panopticapi leaves void out: 2/2.
  result = pq([[1001, 1001, 1001, 1001]], [[1001, 1001, VOID, VOID]])
  assert result["all"]["pq"] == pytest.approx(1.0)
  assert result["per_class"]["class_1"]["tp"] == 1


def test_iou_of_exactly_half_is_not_a_match():
  result = pq([[1001, 1001, 1001, 1001]], [[1001, 1001, 1002, 1002]])
  assert result["per_class"]["class_1"] == {
    "pq": 0.0,
    "sq": 0.0,
    "rq": 0.0,
    "tp": 0,
    "fp": 1,
    "fn": 2,
  }


def test_crowd_region_excuses_predictions_but_is_never_a_false_negative():
  # Thing class 1 with instance 0 = crowd. The prediction 1001 lies on it: neither TP nor FP.
  # Stuff 0: gt area 1, predicted area 2, intersection 1 -> IoU 0.5, no match: one FP, one FN.
  result = pq([[1001, 1001, 0, 0]], [[1000, 1000, 1000, 0]])
  assert "class_1" not in result["per_class"]
  assert result["things"]["pq"] is None
  assert result["per_class"]["class_0"] == {
    "pq": 0.0,
    "sq": 0.0,
    "rq": 0.0,
    "tp": 0,
    "fp": 1,
    "fn": 1,
  }
  assert result["all"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "num_classes": 1}


def test_pq_sq_rq_hand_computed():
  gt = [[1001] * 4 + [0] * 6]
  pred = [[1005] * 3 + [0] * 5 + [1009] * 2]
  result = pq(pred, gt)
  # thing 1: IoU 3/4 matched, 1009 is a false positive. stuff 0: intersection 4, union 7.
  thing = result["per_class"]["class_1"]
  assert (thing["tp"], thing["fp"], thing["fn"]) == (1, 1, 0)
  assert thing["sq"] == pytest.approx(0.75)
  assert thing["rq"] == pytest.approx(1 / 1.5)
  assert thing["pq"] == pytest.approx(0.75 / 1.5)
  assert result["stuff"]["pq"] == pytest.approx(4 / 7)
  assert result["all"]["pq"] == pytest.approx((0.5 + 4 / 7) / 2)
  assert result["all"]["sq"] == pytest.approx((0.75 + 4 / 7) / 2)


def random_panoptic(rng, shape, num_classes, things):
  """Blocky random maps with several instances, void and crowd pixels."""
  small = (shape[0] // 4, shape[1] // 4)
  classes = rng.integers(0, num_classes, small)
  instances = rng.integers(0, 4, small) * np.isin(classes, things)
  ids = classes * D + instances
  ids = np.where(rng.random(small) < 0.1, VOID, ids)
  ids = np.kron(ids, np.ones((4, 4), ids.dtype))
  flip = rng.random(shape) < 0.15  # speckle so that IoUs spread around 0.5
  return np.where(flip, np.roll(ids, 1, axis=1), ids)


def test_matches_panopticapi_port_on_random_maps_and_streams_over_images():
  rng = np.random.default_rng(0)
  num_classes, things, stuff = 5, [2, 3, 4], [0, 1]
  gt = np.stack([random_panoptic(rng, (24, 32), num_classes, things) for _ in range(6)])
  pred = np.stack(
    [
      np.where(rng.random((24, 32)) < noise, random_panoptic(rng, (24, 32), num_classes, things), g)
      for g, noise in zip(gt, np.linspace(0.1, 0.6, len(gt)))
    ]
  )
  fn = jax.jit(
    lambda p, g: metrics.panoptic_sums(
      p, g, num_classes=num_classes, label_divisor=D, thing_classes=things, stuff_classes=stuff
    )
  )
  batch = fn(pred, gt)
  streamed = metrics.PanopticSums.zeros(num_classes)
  expected = [np.zeros(num_classes) for _ in range(4)]
  for p, g in zip(pred, gt):
    streamed = streamed + fn(p[None], g[None])
    expected = [e + r for e, r in zip(expected, reference_sums(p, g, num_classes, things, stuff))]
  assert expected[1].sum() > 3 and expected[2].sum() > 3 and expected[3].sum() > 3
  for sums in (batch, streamed):
    np.testing.assert_allclose(sums.iou, expected[0], rtol=1e-5)
    for got, want in zip((sums.tp, sums.fp, sums.fn), expected[1:]):
      np.testing.assert_array_equal(got, want)


def test_padding_images_are_dropped_and_overflow_is_refused():
  gt = np.array([[[0, 1001]], [[0, 1002]]])
  sums_fn = jax.jit(
    metrics.panoptic_sums,
    static_argnames=(
      "num_classes",
      "label_divisor",
      "thing_classes",
      "stuff_classes",
      "max_segments",
    ),
  )
  kwargs = dict(num_classes=2, label_divisor=D, thing_classes=(1,), stuff_classes=(0,))
  sums = sums_fn(gt, gt, valid=np.array([True, False]), **kwargs)
  np.testing.assert_array_equal(sums.tp, [1, 1])
  many = np.arange(10).reshape(1, 10) + 1000
  sums = sums_fn(many, many, max_segments=8, **kwargs)
  with pytest.raises(ValueError, match="max_segments"):
    metrics.panoptic_summary(sums, thing_classes=[1], stuff_classes=[0])
  with pytest.raises(ValueError, match=r"classes \[1\] are listed both"):
    pq(gt, gt, things=[1], stuff=[0, 1])


def square(y, x, size, shape=(20, 20)):
  mask = np.zeros(shape, bool)
  mask[y : y + size, x : x + size] = True
  return mask


def test_mask_ap_hand_computed():
  gt = [{"masks": np.stack([square(0, 0, 10)]), "classes": [1]}]
  perfect = [{"masks": np.stack([square(0, 0, 10)]), "classes": [1], "scores": [0.9]}]
  result = metrics.mask_ap(gt, perfect, class_ids=[1, 2], class_names=["disc", "square"])
  assert result["ap"] == pytest.approx(1.0)
  assert result["per_class"] == {"disc": pytest.approx(1.0), "square": None}
  # COCO matches when IoU >= threshold (0.50, 0.55, ..., 0.95). A 10x8 box inside the 10x10 one:
  # IoU 0.8, a match at 7 of the 10 thresholds -> AP = 0.7. A 10x5 box: IoU 0.5, a match at 0.50
  # only -> AP = 0.1, AP50 = 1, AP75 = 0.
  inner = [
    {"masks": np.stack([square(0, 0, 10) & ~square(0, 8, 10)]), "classes": [1], "scores": [0.9]}
  ]
  assert metrics.mask_ap(gt, inner, class_ids=[1])["ap"] == pytest.approx(0.7)
  half = [
    {"masks": np.stack([square(0, 0, 10) & ~square(0, 5, 10)]), "classes": [1], "scores": [0.9]}
  ]
  result = metrics.mask_ap(gt, half, class_ids=[1])
  assert result["ap"] == pytest.approx(0.1)
  assert (result["ap50"], result["ap75"]) == (pytest.approx(1.0), pytest.approx(0.0))


def test_mask_ap_ranks_by_score_and_handles_no_predictions():
  gt = [{"masks": np.stack([square(0, 0, 8), square(10, 10, 8)]), "classes": [1, 1]}]
  # A false positive with the highest score, then the two true instances: precision 1/2, 2/3 at
  # recalls 1/2 and 1; COCO's interpolated precision is 2/3 for every recall level -> AP = 2/3.
  dets = {
    "masks": np.stack([square(0, 12, 6), square(0, 0, 8), square(10, 10, 8)]),
    "classes": [1, 1, 1],
    "scores": [0.9, 0.8, 0.7],
  }
  assert metrics.mask_ap(gt, [dets], class_ids=[1])["ap"] == pytest.approx(2 / 3)
  empty = {"masks": np.zeros((0, 20, 20), bool), "classes": [], "scores": []}
  assert metrics.mask_ap(gt, [empty], class_ids=[1])["ap"] == pytest.approx(0.0)


def test_instances_from_panoptic():
  panoptic = np.array([[0, 1001, 1001], [1000, 2003, 0]])
  inst = metrics.instances_from_panoptic(panoptic, label_divisor=D, thing_classes=[1, 2])
  np.testing.assert_array_equal(inst["classes"], [1, 1, 2])
  np.testing.assert_array_equal(inst["crowd"], [True, False, False])
  np.testing.assert_array_equal(inst["masks"][1], panoptic == 1001)
