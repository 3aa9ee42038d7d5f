"""Training metrics as terms (segjax/train_metrics.py): hand-computed sums, a metric written as a
plain function (the documented one too), and the errors that name the entry at fault. A model
without ``logits`` in training (Mask2Former with ``mask_confusion``) trains in
tests/test_transformers_reference.py."""

import jax.numpy as jnp
import numpy as np
import pytest

from segjax import train
from segjax import train_metrics
from segjax.data.shapes import DESCRIPTOR


def test_mask_confusion_scores_the_masks_at_their_resolution_against_block_centres():
  # Two queries on a 2x2 mask grid of a 4x4 image (stride 2): query 0 says class 1 and covers the
  # left column, query 1 says class 2 and covers the right one.
  class_logits = jnp.array([[[0.0, 9.0, 0.0, -9.0], [0.0, 0.0, 9.0, -9.0]]])  # 3 classes + none
  mask_logits = jnp.array([[[[9.0, -9.0], [9.0, -9.0]], [[-9.0, 9.0], [-9.0, 9.0]]]])
  labels = np.full((1, 4, 4), 255, np.int32)
  labels[0, 1, 1] = 1  # block (0, 0)'s centre: class 1, predicted 1
  labels[0, 1, 3] = 0  # block (0, 1): class 0, predicted 2
  labels[0, 3, 1] = 2  # block (1, 0): class 2, predicted 1
  labels[0, 0, 0] = 0  # not a block centre: not counted
  cm = train_metrics.mask_confusion(
    {"class_logits": class_logits, "mask_logits": mask_logits},
    {"semantic": jnp.asarray(labels)},
    num_classes=3,
    ignore_label=255,
  )
  expected = np.zeros((3, 3), np.int32)
  expected[1, 1] = expected[0, 2] = expected[2, 1] = 1
  np.testing.assert_array_equal(cm, expected)


def labelled_pixels(outputs, batch, *, num_classes, ignore_label):
  """A metric as a plain function: labelled pixels per step, and the mean logit."""
  del num_classes
  return {
    "labelled": jnp.sum(batch["semantic"] != ignore_label).astype(jnp.float32),
    "mean_logit": jnp.mean(outputs["logits"]),
  }


def test_a_plain_function_metric_is_summed_and_logged_beside_the_default(config, tmp_path):
  config.train_metrics = ("confusion", labelled_pixels)
  config.data.train_pp = "flip_lr"  # no padding: every pixel labelled
  config.num_train_steps, config.log_every_steps, config.eval_splits = 4, 2, ()
  config.checkpoint_every_steps = 4
  train.train_and_evaluate(config, str(tmp_path / "run"))
  import json

  lines = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
  logged = [line for line in lines if "train/labelled" in line]
  assert [line["step"] for line in logged] == [2, 4]
  # Every pixel of the 32x32 crops is labelled (shapes): 4 images x 1024 per step, mean per step.
  assert all(line["train/labelled"] == 4 * 32 * 32 for line in logged)
  assert all(
    np.isfinite(line["train/mean_logit"]) and 0 <= line["train/mean_iou"] <= 1 for line in logged
  )


def test_summaries_and_bad_entries():
  metrics = train_metrics.TrainMetrics(("confusion", labelled_pixels), 5, 255)
  cm = np.diag([3, 0, 1, 0, 0])
  cm[0, 2] = 1
  scalars = metrics.summarize(
    {"confusion": cm, "labelled_pixels": {"labelled": np.float32(10), "mean_logit": np.float32(1)}},
    2,
    DESCRIPTOR,
  )
  assert scalars["pixel_accuracy"] == pytest.approx(4 / 5)
  # IoU: class 0 3/4, class 2 1/2 (present classes only), so mIoU 0.625.
  assert scalars["mean_iou"] == pytest.approx(0.625)
  assert scalars["labelled"] == 5 and scalars["mean_logit"] == 0.5
  with pytest.raises(ValueError, match=r"config.train_metrics\[1\]='nope'.*Unknown"):
    train_metrics.TrainMetrics(("confusion", "nope"), 5, 255)
  with pytest.raises(
    KeyError,
    match=r"confusion\(output='logits'\).*\['class_logits'\].*"
    "mask_confusion",
  ):
    train_metrics.TrainMetrics(("confusion",), 5, 255)(
      {"class_logits": jnp.zeros((1, 2, 6))}, {"semantic": jnp.zeros((1, 4, 4), jnp.int32)}
    )


def test_the_documented_metric_runs():
  import os
  import re
  from conftest import ROOT, load_config

  text = open(os.path.join(ROOT, "docs", "training.md")).read()
  block = re.search(
    r"```python\n(import jax.numpy as jnp\n\ndef labelled_pixels.*?)```", text, re.S
  ).group(1)
  config = load_config("unet_shapes")
  namespace = {"config": config}
  exec(compile(block, "training.md", "exec"), namespace)  # pylint: disable=exec-used
  train.check_config(config)
  metrics = train_metrics.TrainMetrics(config.train_metrics, 5, 255)
  labels = jnp.array([[[0, 255], [4, 1]]])
  sums = metrics({"logits": jnp.zeros((1, 2, 2, 5))}, {"semantic": labels})
  assert float(sums["labelled_pixels"]["labelled"]) == 3
  assert int(sums["confusion"].sum()) == 3
