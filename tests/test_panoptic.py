"""Panoptic-DeepLab: targets of a hand-built instance mask, grouping of hand-built heatmaps and
offsets, and the trainer's PQ on the model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from segjax import metrics
from segjax import models
from segjax import postprocess
from segjax.data.shapes import DESCRIPTOR
from segjax.data import targets
from segjax.postprocess.panoptic import group_panoptic


def test_targets_of_a_hand_built_instance_mask():
  semantic = np.zeros((8, 10), np.int32)
  instance = np.zeros((8, 10), np.int32)
  semantic[1:4, 1:4] = 2  # instance 1: a 3x3 square, centre (2, 2)
  instance[1:4, 1:4] = 1
  semantic[5:7, 6:10] = 3  # instance 7: 2x4, centre (5.5, 7.5)
  instance[5:7, 6:10] = 7
  semantic[0, 9] = 255  # ignored pixel
  semantic[7, 0] = 2  # a thing pixel with instance 0 (crowd): no centre, no offset
  t = targets.panoptic_targets(
    tf.constant(semantic),
    tf.constant(instance),
    thing_classes=(2, 3),
    sigma=2.0,
    small_instance_area=8,
    small_instance_weight=3.0,
  )
  t = {k: v.numpy() for k, v in t.items()}
  assert t["center"][2, 2] == pytest.approx(1.0)
  assert t["center"][2, 4] == pytest.approx(np.exp(-4 / 8))
  assert t["center"][5, 7] == pytest.approx(np.exp(-(0.25 + 0.25) / 8))
  np.testing.assert_allclose(t["offset"][1, 1], [1, 1])  # to (2, 2)
  np.testing.assert_allclose(t["offset"][6, 9], [-0.5, -1.5])  # to (5.5, 7.5)
  assert (t["offset"][instance == 0] == 0).all()
  assert t["offset_weight"].sum() == 9 + 8 and t["offset_weight"][7, 0] == 0
  assert t["center_weight"][0, 9] == 0 and t["center_weight"].sum() == 79
  # instance 7 has 8 pixels (not < 8): weight 1; instance 1 (9 px) too; ignore -> 0.
  small = targets.panoptic_targets(
    tf.constant(semantic), tf.constant(instance), thing_classes=(2, 3), small_instance_area=9
  )
  assert (
    small["semantic_weight"].numpy()[5, 6] == 3.0 and small["semantic_weight"].numpy()[1, 1] == 1.0
  )
  assert small["semantic_weight"].numpy()[0, 9] == 0.0


def test_grouping_of_hand_built_heatmaps_and_offsets():
  height, width, classes = 8, 12, 4  # 0, 1 stuff; 2, 3 things
  semantic = np.zeros((height, width), np.int32)
  semantic[:, 6:] = 1
  semantic[1:4, 1:4] = 2  # thing A around (2, 2)
  semantic[4:7, 7:11] = 3  # thing B around (5, 8) ...
  semantic[4, 7] = 2  # ... one pixel of it misclassified: majority vote wins
  logits = np.eye(classes)[semantic] * 5.0
  center = np.zeros((height, width), np.float32)
  center[2, 2], center[5, 8], center[0, 11] = 0.9, 0.8, 0.05  # the last is below threshold
  yy, xx = np.mgrid[:height, :width]
  offset = np.zeros((height, width, 2), np.float32)
  a = np.zeros((height, width), bool)
  a[1:4, 1:4] = True
  b = np.zeros((height, width), bool)
  b[4:7, 7:11] = True
  offset[a] = np.stack([2 - yy[a], 2 - xx[a]], -1)
  offset[b] = np.stack([5 - yy[b], 8 - xx[b]], -1)
  out = np.asarray(
    group_panoptic(
      jnp.argmax(jnp.asarray(logits), -1)[None],
      jnp.asarray(center)[None],
      jnp.asarray(offset)[None],
      num_classes=classes,
      thing_classes=(2, 3),
      label_divisor=1000,
      nms_kernel=3,
      top_k=4,
    )
  )[0]
  ids_a, ids_b = np.unique(out[a]), np.unique(out[b])
  assert len(ids_a) == 1 and ids_a[0] // 1000 == 2 and ids_a[0] % 1000 > 0
  assert len(ids_b) == 1 and ids_b[0] // 1000 == 3 and ids_b[0] != ids_a[0]
  stuff = ~(a | b)
  np.testing.assert_array_equal(out[stuff], semantic[stuff] * 1000)
  # The prediction scores PQ = 1 against the ground truth it was drawn from.
  gt = np.where(a, 2001, np.where(b, 3002, semantic * 1000))
  result = metrics.panoptic_quality(
    out, gt, label_divisor=1000, thing_classes=[2, 3], stuff_classes=[0, 1]
  )
  assert result["all"]["pq"] == pytest.approx(1.0)


def test_no_centre_makes_things_void_and_small_stuff_void():
  logits = np.eye(3)[np.array([[0, 0, 2], [0, 1, 2]])] * 5.0
  out = np.asarray(
    group_panoptic(
      jnp.argmax(jnp.asarray(logits), -1)[None],
      jnp.zeros((1, 2, 3)),
      jnp.zeros((1, 2, 3, 2)),
      num_classes=3,
      thing_classes=(2,),
      label_divisor=1000,
      stuff_area=2,
    )
  )[0]
  np.testing.assert_array_equal(out, [[0, 0, 255000], [0, 255000, 255000]])


def test_model_returns_raw_heads_and_the_post_processor_groups_them():
  model = models.create(
    "panoptic_deeplab",
    num_classes=5,
    trunk="unet",
    trunk_kwargs={"features": 4, "depth": 2},
    head_features=4,
  )
  image = jnp.ones((2, 24, 20, 3))
  out, variables = jax.jit(lambda r: model.init_with_output(r, image, train=False))(
    jax.random.key(0, impl="rbg")
  )
  assert out["center"].shape == (2, 24, 20) and out["offset"].shape == (2, 24, 20, 2)
  assert "panoptic" not in out  # grouping is a post-processor, not part of the network
  chain = postprocess.Chain(
    "argmax|panoptic_deeplab(center_threshold=0.0, nms_kernel=3)", DESCRIPTOR
  )
  grouped = jax.jit(chain.apply_compiled)(out)
  assert grouped["panoptic"].shape == (2, 24, 20) and grouped["panoptic"].dtype == jnp.int32
  expected = group_panoptic(
    jnp.argmax(out["logits"], -1),
    out["center"],
    out["offset"],
    num_classes=5,
    thing_classes=(2, 3, 4),
    label_divisor=1000,
    center_threshold=0.0,
    nms_kernel=3,
    top_k=200,
  )
  np.testing.assert_array_equal(grouped["panoptic"], expected)
  dual = models.create(
    "panoptic_deeplab",
    num_classes=5,
    trunk="unet",
    dual_decoder=True,
    trunk_kwargs={"features": 4, "depth": 2},
    head_features=4,
  )
  params = jax.eval_shape(lambda: dual.init(jax.random.key(0), image, train=False))["params"]
  assert {"trunk", "instance_trunk", "center_head", "offset_head"} <= set(params)


def test_instance_scores_and_panoptic_drawing():
  from segjax import visualize
  from segjax.postprocess.panoptic import instance_predictions

  panoptic = np.zeros((4, 6), np.int64)  # stuff class 0 everywhere ...
  panoptic[0:2, 0:2] = 2001  # ... disc 1 (4 px)
  panoptic[2:4, 3:6] = 3002  # ... triangle 2 (6 px)
  panoptic[0, 5] = 255000  # void
  center = np.zeros((4, 6), np.float32)
  center[0, 1], center[3, 4] = 0.8, 0.5
  probs = np.full((4, 6, 5), 0.1, np.float32)
  probs[0:2, 0:2, 2] = [[0.9, 0.7], [0.5, 0.3]]  # mean 0.6
  probs[2:4, 3:6, 3] = 0.4
  found = instance_predictions(panoptic, center, probs, label_divisor=1000, thing_classes=(2, 3, 4))
  np.testing.assert_array_equal(found["ids"], [2001, 3002])
  np.testing.assert_array_equal(found["classes"], [2, 3])
  np.testing.assert_allclose(found["scores"], [0.8 * 0.6, 0.5 * 0.4], rtol=1e-6)
  assert found["masks"].sum(axis=(1, 2)).tolist() == [4, 6]
  # Drawing: stuff in its class colour, instances a shade of theirs, outlines white, void white.
  rgb = visualize.colorize_panoptic(panoptic, DESCRIPTOR)
  np.testing.assert_array_equal(rgb[3, 0], DESCRIPTOR.colormap[0])
  np.testing.assert_array_equal(rgb[0, 5], [255, 255, 255])
  shade = rgb[0, 0] / np.asarray(DESCRIPTOR.colormap[2], np.float32)  # interior pixel
  np.testing.assert_allclose(shade, shade[0], atol=0.02)
  assert 0.45 <= shade[0] <= 1.0
  np.testing.assert_array_equal(rgb[1, 1], [255, 255, 255])  # disc pixel on its boundary
