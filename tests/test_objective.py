"""The training objective: loss terms over model outputs, their weights, batch losses with targets
made by preprocessing ops, and the contract checker over every registered loss."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from segjax import losses
from segjax import registry
from segjax import train
from segjax.data import ops
from segjax.data.shapes import DESCRIPTOR

from conftest import load_config


def _random_outputs(seed=0, batch=2, size=6, classes=5):
  rng = np.random.default_rng(seed)
  logits = lambda: jnp.asarray(rng.normal(size=(batch, size, size, classes)), jnp.float32)
  outputs = {
    "logits": logits(),
    "aux_logits": logits(),
    "scale_logits": {"0.5": logits(), "1.0": logits()},
    "center": jnp.asarray(rng.random((batch, size, size)), jnp.float32),
    "offset": jnp.asarray(rng.normal(size=(batch, size, size, 2)), jnp.float32),
  }
  labels = rng.integers(0, classes, (batch, size, size))
  labels[0, 0, :3] = 255
  batch = {
    "semantic": jnp.asarray(labels, jnp.int32),
    "center": jnp.asarray(rng.random((batch, size, size)), jnp.float32),
    "center_weight": jnp.asarray(labels != 255, jnp.float32),
    "offset": jnp.asarray(rng.normal(size=(batch, size, size, 2)), jnp.float32),
    "offset_weight": jnp.asarray(rng.random((batch, size, size)) < 0.5, jnp.float32),
  }
  return outputs, batch


# The configs' own extra terms: each weight scales its term's gradient exactly.
@pytest.mark.parametrize(
  "config_name,label,weight",
  [
    ("deeplabv3_shapes", "aux_logits/cross_entropy", 0.4),
    ("deeplabv3_shapes", "aux_logits/dice_loss", 0.4),
    ("hmsa_shapes", "scale_logits/*/cross_entropy", 0.05),
    ("panoptic_deeplab_shapes", "center/weighted_mse", 200.0),
    ("panoptic_deeplab_shapes", "offset/weighted_l1", 0.01),
  ],
)
def test_a_terms_weight_scales_its_gradient_exactly(config_name, label, weight):
  config = load_config(config_name)
  terms = losses.make_terms(config.loss, config.losses)
  [term] = [t for t in terms if t.label == label]
  assert term.weight == pytest.approx(weight)
  doubled = [dataclasses.replace(t, weight=2 * t.weight) if t is term else t for t in terms]
  alone = [dataclasses.replace(term, weight=1.0)]
  outputs, batch = _random_outputs()
  grad = lambda ts: jax.grad(lambda o: losses.Objective(ts)(o, batch)[0])(outputs)
  difference = jax.tree.map(jnp.subtract, grad(doubled), grad(terms))
  jax.tree.map(
    lambda d, a: np.testing.assert_allclose(d, weight * a, rtol=1e-4, atol=1e-6),
    difference,
    grad(alone),
  )
  assert max(float(jnp.abs(a).max()) for a in jax.tree_util.tree_leaves(grad(alone))) > 0


def test_wildcards_nested_outputs_and_weight_keys():
  outputs, batch = _random_outputs()
  objective = losses.Objective(
    losses.make_terms(
      "",
      [
        ("scale_logits/*", "semantic", "cross_entropy", 0.5),
        ("center", "center", "weighted_mse", 2.0, "center_weight"),
      ],
    )
  )
  total, values = objective(outputs, batch)
  assert sorted(values) == [
    "center/weighted_mse",
    "scale_logits/0.5/cross_entropy",
    "scale_logits/1.0/cross_entropy",
  ]
  ce = lambda x: losses.cross_entropy(x, batch["semantic"])
  w = batch["center_weight"]
  mse = jnp.sum(w * (outputs["center"] - batch["center"]) ** 2) / jnp.sum(w)
  np.testing.assert_allclose(values["center/weighted_mse"], mse, rtol=1e-6)
  np.testing.assert_allclose(
    total,
    0.5 * (ce(outputs["scale_logits"]["0.5"]) + ce(outputs["scale_logits"]["1.0"])) + 2.0 * mse,
    rtol=1e-6,
  )


def test_missing_outputs_and_targets_are_named():
  outputs, batch = _random_outputs()
  with pytest.raises(KeyError, match="reads the model output 'aux'.*'aux_logits'"):
    losses.Objective(losses.make_terms("", [("aux", "semantic", "cross_entropy", 1.0)]))(
      outputs, batch
    )
  with pytest.raises(KeyError, match="batch\\['distance'\\].*train_pp"):
    losses.Objective(losses.make_terms("", [("logits", "distance", "weighted_mse", 1.0)]))(
      outputs, batch
    )
  with pytest.raises(KeyError, match="'nothing/\\*', which matches no model output"):
    losses.Objective(losses.make_terms("", [("nothing/*", "semantic", "cross_entropy", 1.0)]))(
      outputs, batch
    )

  # A batch loss of the user's that reads an entry the pipeline does not make: named, with the fix.
  def band_weighted_ce(outputs, batch, *, output_key, target_key, ignore_label):
    return jnp.mean(batch["boundary_distance"]) * jnp.mean(outputs[output_key])

  band_weighted_ce.takes_batch = True
  with pytest.raises(
    KeyError,
    match=r"'band_weighted_ce' reads batch\['boundary_distance'\], "
    r"which the input pipeline does not produce \(it gives \['center'.*"
    r"'semantic'\]\).*'\|boundary_distance\(16\)'",
  ):
    losses.Objective(losses.make_terms(band_weighted_ce))(outputs, batch)


def test_weighted_regression_losses_hand_computed():
  prediction = jnp.array([[[1.0, 2.0], [3.0, 4.0]]])
  target = jnp.zeros((1, 2, 2))
  weights = jnp.array([[[1.0, 0.0], [2.0, 0.0]]])
  np.testing.assert_allclose(
    losses.weighted_mse(prediction, target, pixel_weights=weights), (1 + 2 * 9) / 3
  )
  np.testing.assert_allclose(losses.weighted_l1(prediction, target), 10 / 4)
  offsets = jnp.ones((1, 2, 2, 2)) * jnp.array([1.0, 3.0])
  np.testing.assert_allclose(losses.weighted_l1(offsets, 0 * offsets, pixel_weights=weights), 2.0)
  assert float(losses.weighted_mse(prediction, target, pixel_weights=0 * weights)) == 0.0


def _boundary_extras(labels):
  op = registry.lookup("pp", "boundary_distance(4)")()
  context = ops.Context(descriptor=DESCRIPTOR)
  return np.stack(
    [
      op({"semantic": tf.constant(l)}, tf.constant([0, 0], tf.int64), context)[
        "boundary_distance"
      ].numpy()
      for l in labels
    ]
  )


# Batch losses need targets the pipeline makes; everything else gets what its kind says.
BATCH_EXTRAS = {"boundary_weighted_cross_entropy": {"boundary_distance": _boundary_extras}}


# Every per-pixel loss (mask-classification losses read per-query outputs and have their own tests:
# tests/test_mask2former.py; check_loss refuses them with that message).
@pytest.mark.parametrize(
  "name",
  [
    n
    for n in registry.names("loss")
    if losses.loss_kind(registry.lookup("loss", n)) != "mask_classification"
  ],
)
def test_every_registered_loss_passes_check_loss(name):
  fn = registry.lookup("loss", name)
  report = losses.check_loss(fn, batch_extras=BATCH_EXTRAS.get(name))
  assert set(report.values()) == {"ok"} and len(report) == 9


def test_check_loss_refuses_mask_classification_losses():
  with pytest.raises(ValueError, match="checks per-pixel losses"):
    losses.check_loss(losses.mask2former_loss)


def test_check_loss_checks_batch_losses():
  @losses.register_loss(takes_batch=True, name="leaky_test_loss")
  def leaky(outputs, batch, *, output_key, target_key, ignore_label=255):
    # Uses the logits of ignored pixels: the contract says it must not.
    return losses.cross_entropy(
      outputs[output_key], batch[target_key], ignore_label=ignore_label
    ) + jnp.mean(outputs[output_key] ** 2)

  with pytest.raises(losses.LossCheckError, match="blind to ignored pixels"):
    losses.check_loss(leaky)


# ---------------------------------------------------------------------------- an extra target
# A new op and a new loss, both defined here: adding them needs no line of the trainer.
@ops.register_op
def distance_to_image_centre(scale: float = 1.0):
  def op(example, seed, context):
    del seed, context
    shape = tf.shape(example["semantic"])
    yy, xx = tf.meshgrid(tf.range(shape[0]), tf.range(shape[1]), indexing="ij")
    centre = tf.cast(shape, tf.float32) / 2
    distance = tf.sqrt(
      (tf.cast(yy, tf.float32) - centre[0]) ** 2 + (tf.cast(xx, tf.float32) - centre[1]) ** 2
    )
    return {**example, "centre_distance": scale * distance}

  return op


@losses.register_loss(takes_batch=True)
def centre_weighted_cross_entropy(outputs, batch, *, output_key, target_key, ignore_label=255):
  """Cross-entropy weighted towards the image centre (a loss that needs an extra target)."""
  weights = jnp.exp(-batch["centre_distance"])
  labels = batch[target_key]
  return losses.cross_entropy(
    outputs[output_key],
    labels,
    ignore_label=ignore_label,
    pixel_weights=jnp.where(labels == ignore_label, 0.0, weights),
  )


@pytest.mark.slow
def test_a_loss_with_an_extra_target_trains_through_the_ordinary_trainer(config, tmp_path):
  config.data.train_pp += "|distance_to_image_centre(0.1)|boundary_distance(4)"
  config.losses = (
    ("logits", "semantic", "centre_weighted_cross_entropy", 0.5),
    ("logits", "semantic", "boundary_weighted_cross_entropy(w0=5.0)", 0.5),
  )
  config.num_train_steps = 2
  config.eval_splits = ()
  workdir = str(tmp_path / "extra")
  result = train.train_and_evaluate(config, workdir)
  assert not result.preempted and result.metrics == {}
  lines = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  last = [line for line in lines if "train/loss" in line][-1]
  new_term = last["train/loss/logits/centre_weighted_cross_entropy"]
  boundary = last["train/loss/logits/boundary_weighted_cross_entropy"]
  assert np.isfinite(new_term) and new_term > 0 and np.isfinite(boundary) and boundary > 0
  expected = (
    last["train/loss/cross_entropy"]
    + last["train/loss/dice_loss"]
    + 0.5 * new_term
    + 0.5 * boundary
  )
  assert last["train/loss"] == pytest.approx(expected, rel=1e-5)
  recorded = json.load(open(os.path.join(workdir, "config.json")))
  assert recorded["losses"][0][2] == "centre_weighted_cross_entropy"
