import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as skm

from segjax import metrics


def test_confusion_matrix_hand_computed():
  label = np.array([[0, 0, 1], [1, 2, 255]])
  pred = np.array([[0, 1, 1], [2, 2, 0]])
  cm = np.asarray(metrics.confusion_matrix(pred, label, 3))
  # rows = ground truth, columns = prediction; the ignored pixel is not counted.
  np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 1], [0, 0, 1]])


def test_confusion_matrix_weights_skip_padding_and_jit():
  label = jnp.array([[[0, 1]], [[1, 1]]])
  pred = jnp.array([[[0, 0]], [[1, 1]]])
  valid = jnp.array([True, False])
  cm = jax.jit(lambda p, l, v: metrics.confusion_matrix(p, l, 2, weights=v[:, None, None]))(
    pred, label, valid
  )
  np.testing.assert_array_equal(cm, [[1, 0], [1, 0]])


def test_derived_metrics_hand_computed():
  cm = np.array([[3, 1, 0], [2, 4, 0], [0, 0, 0]])  # class 2 absent and never predicted
  np.testing.assert_allclose(metrics.pixel_accuracy(cm), 7 / 10)
  np.testing.assert_allclose(metrics.iou(cm), [3 / 6, 4 / 7, np.nan])
  np.testing.assert_allclose(metrics.recall(cm), [3 / 4, 4 / 6, np.nan])
  np.testing.assert_allclose(metrics.precision(cm), [3 / 5, 4 / 5, np.nan])
  np.testing.assert_allclose(metrics.dice(cm), [6 / 9, 8 / 11, np.nan])
  np.testing.assert_allclose(metrics.mean_iou(cm), (3 / 6 + 4 / 7) / 2)
  np.testing.assert_allclose(metrics.mean_pixel_accuracy(cm), (3 / 4 + 4 / 6) / 2)
  np.testing.assert_allclose(metrics.frequency_weighted_iou(cm), 0.4 * 3 / 6 + 0.6 * 4 / 7)
  b = 2.0
  np.testing.assert_allclose(metrics.f_score(cm, beta=b)[0], 5 * 3 / (5 * 3 + 4 * 1 + 2))


def test_class_predicted_but_absent_has_iou_zero_and_recall_nan():
  cm = np.array([[2, 1], [0, 0]])
  np.testing.assert_allclose(metrics.iou(cm), [2 / 3, 0.0])
  assert np.isnan(metrics.recall(cm)[1])
  np.testing.assert_allclose(metrics.mean_iou(cm), 1 / 3)


def test_empty_matrix_gives_nan_not_error():
  cm = np.zeros((3, 3), int)
  assert np.isnan(metrics.pixel_accuracy(cm)) and np.isnan(metrics.mean_iou(cm))
  summary = metrics.summarize(cm)
  assert summary["mean_iou"] is None and summary["iou"]["class_0"] is None


def test_agrees_with_scikit_learn_on_random_pixels():
  rng = np.random.default_rng(0)
  label = rng.integers(0, 5, size=(4, 17, 13))
  pred = np.where(rng.random(label.shape) < 0.6, label, rng.integers(0, 5, size=label.shape))
  label[0, :3] = 255
  cm = np.asarray(metrics.confusion_matrix(pred, label, 5))
  keep = label != 255
  y, p = label[keep], pred[keep]
  np.testing.assert_array_equal(cm, skm.confusion_matrix(y, p, labels=range(5)))
  np.testing.assert_allclose(
    metrics.iou(cm), skm.jaccard_score(y, p, average=None, labels=range(5))
  )
  np.testing.assert_allclose(metrics.precision(cm), skm.precision_score(y, p, average=None))
  np.testing.assert_allclose(metrics.recall(cm), skm.recall_score(y, p, average=None))
  np.testing.assert_allclose(
    metrics.f_score(cm, 0.5), skm.fbeta_score(y, p, beta=0.5, average=None)
  )
  np.testing.assert_allclose(metrics.pixel_accuracy(cm), skm.accuracy_score(y, p))
  np.testing.assert_allclose(metrics.mean_pixel_accuracy(cm), skm.balanced_accuracy_score(y, p))


def test_summarize_names_classes_and_checks_count():
  summary = metrics.summarize(np.array([[1, 0], [1, 2]]), ["sky", "car"])
  assert summary["iou"] == {"sky": pytest.approx(0.5), "car": pytest.approx(2 / 3)}
  assert summary["pixels"] == 4
  with pytest.raises(ValueError, match="3 class names"):
    metrics.summarize(np.zeros((2, 2)), ["a", "b", "c"])


def test_per_image_miou_of_the_picture_titles_hand_computed():
  from segjax import visualize

  label = np.array([[0, 0, 1, 1], [2, 2, 255, 255]])
  prediction = np.array([[0, 1, 1, 1], [2, 0, 2, 0]])
  # class 0: inter 1, union 3; class 1: inter 2, union 3; class 2: inter 1, union 2 (the ignored
  # pixels' predictions do not count).
  assert visualize.image_miou(prediction, label, 3, 255) == pytest.approx(
    (1 / 3 + 2 / 3 + 1 / 2) / 3
  )
  assert visualize.image_miou(label, label, 3, 255) == 1.0
  assert visualize.image_miou(prediction, np.full_like(label, 255), 3, 255) is None


def test_training_curves_read_the_run_log_and_draw_each_value_at_its_place(tmp_path):
  from segjax import visualize  # pylint: disable=import-outside-toplevel

  log = tmp_path / "metrics.jsonl"
  rows = [
    {"step": 100, "train/loss": 1.5, "train/mean_iou": 0.25},
    {"step": 200, "train/loss": float("nan"), "train/mean_iou": 0.5},
    {"step": 200, "validation/mean_iou": 0.4},
    {"step": 300, "train/loss": 0.5, "train/mean_iou": 0.75},
  ]
  log.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
  curves = visualize.read_curves(str(log), ("train/loss", "validation/mean_iou"))
  np.testing.assert_array_equal(curves["train/loss"][0], [100, 300])  # the NaN is left out
  np.testing.assert_array_equal(curves["train/loss"][1], [1.5, 0.5])
  np.testing.assert_array_equal(curves["validation/mean_iou"][0], [200])
  # A flat line at 0.5 on a 0..1 axis lies half-way between the plot's top and bottom edges.
  steps = np.array([0, 100])
  plot = visualize.line_plot(
    {"flat": (steps, np.array([0.5, 0.5]))}, "t", size=(300, 400), y_range=(0.0, 1.0)
  )
  colour = np.all(plot == visualize.CURVE_COLOURS[0], axis=-1)
  rows_drawn = np.nonzero(colour[:, 200])[0]  # the column in the middle of the plot
  top, bottom = visualize.TITLE_HEIGHT + 6, 300 - 34
  assert abs(rows_drawn.mean() - (top + bottom) / 2) <= 1.0
  picture = visualize.training_curves(str(log))
  assert picture.ndim == 3 and picture.shape[1] > 800


def test_exact_sums_carry_counts_past_2_32_and_keep_float_sums_to_double_precision():
  # 40 additions of 2**28 + 3 to each cell: 10,737,418,360, five times what int32 holds (it would
  # have wrapped); 2**20 additions of float32(0.1): the float32 pair equals the float64 sum exactly
  # here, where a float32 running total is off by 1,034.
  like = {"confusion": jnp.zeros((2, 2), jnp.int32), "iou": jnp.zeros((3,), jnp.float32)}
  step = {
    "confusion": jnp.full((2, 2), 2**28 + 3, jnp.int32),
    "iou": jnp.full((3,), 0.1, jnp.float32),
  }
  add = lambda n: jax.jit(lambda z: jax.lax.fori_loop(0, n, lambda _, z: z.add(step), z))(
    metrics.ExactSum.zeros(like)
  ).value()
  counts = add(40)["confusion"]
  assert counts.dtype == np.int64
  np.testing.assert_array_equal(counts, np.full((2, 2), 40 * (2**28 + 3), np.int64))
  sums = add(2**20)["iou"]
  assert sums.dtype == np.float64
  np.testing.assert_array_equal(sums, np.full(3, 2**20 * np.float64(np.float32(0.1))))
  plain = jax.jit(
    lambda: jax.lax.fori_loop(0, 2**20, lambda _, t: t + jnp.float32(0.1), jnp.float32(0))
  )()
  assert abs(float(plain) - sums[0]) > 1000


def test_exact_sums_of_panoptic_sums_keep_their_structure():
  sums = metrics.ExactSum.zeros(metrics.PanopticSums.zeros(3))
  one = metrics.PanopticSums(
    jnp.array([0.75, 0.5, 0.0]),
    jnp.array([1, 1, 0]),
    jnp.array([0, 2, 0]),
    jnp.array([3, 0, 0]),
    jnp.array(0),
  )
  total = sums.add(one).add(one).value()
  assert isinstance(total, metrics.PanopticSums)
  np.testing.assert_array_equal(total.iou, [1.5, 1.0, 0.0])
  np.testing.assert_array_equal(total.fp, [0, 4, 0])
  assert total.tp.dtype == np.int64
