"""Click models: the distances, click maps and RITM's training clicks of
`segjax.interactive.training` by hand and against OpenCV, the wrapper model, the ``interactive``
evaluator against the click protocol run object by object, and a click model trained by the
ordinary trainer (``config.step_inputs``, ``config.evals`` type ``interactive``)."""

import json
import os

import cv2
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax import evaluation
from segjax import models
from segjax import sharding
from segjax import step_inputs
from segjax import train
from segjax.data import pipeline
from segjax.data import shapes
from segjax.data.descriptor import DatasetDescriptor
from segjax.interactive import clicks
from segjax.interactive import training

from conftest import load_config, tiny_config


def test_distances_equal_opencvs_exact_transform():
  rng = np.random.default_rng(0)
  for _ in range(4):
    region = rng.random((23, 31)) < 0.7
    region = cv2.morphologyEx(region.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3))) > 0
    padded = np.pad(region.astype(np.uint8), 1)
    inside = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    np.testing.assert_allclose(training.distance_inside(jnp.asarray(region)), inside, atol=1e-5)
    to_region = cv2.distanceTransform(
      (~region).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE
    )
    np.testing.assert_allclose(training.distance_to(jnp.asarray(region)), to_region, atol=1e-5)
  # By hand: a 1x5 row of sources; no source at all is infinitely far.
  sources = jnp.zeros((3, 5), bool).at[0].set(True)
  np.testing.assert_allclose(training.distance_to(sources)[:, 0], [0, 1, 2])
  assert np.isinf(training.distance_to(jnp.zeros((2, 2), bool))).all()


def test_click_maps_and_prompt_input_by_hand():
  # A positive click at (2, 3) and a negative one at (0, 0), radius 1: a plus sign of 5 pixels
  # and the 3 pixels of the corner; the third slot is empty.
  encoded = jnp.array([[[2, 3, 1], [0, 0, -1], [4, 4, 0]]], jnp.int32)
  maps = np.asarray(training.click_maps(encoded, (5, 6), 1.0))
  positive = np.zeros((5, 6))
  positive[[1, 2, 2, 2, 3], [3, 2, 3, 4, 3]] = 1
  negative = np.zeros((5, 6))
  negative[[0, 0, 1], [0, 1, 0]] = 1
  np.testing.assert_array_equal(maps[0, ..., 0], positive)
  np.testing.assert_array_equal(maps[0, ..., 1], negative)
  image = jnp.full((1, 5, 6, 3), 0.5)
  previous = jnp.zeros((1, 5, 6)).at[0, 4, 5].set(1)
  x = np.asarray(training.prompt_input(image, encoded, previous, 1.0))
  assert x.shape == (1, 5, 6, 6)
  np.testing.assert_array_equal(x[0, ..., 3], positive)
  assert x[0, 4, 5, 5] == 1 and x[0, ..., 5].sum() == 1 and (x[..., :3] == 0.5).all()


def test_ritms_next_training_click():
  target = np.zeros((20, 20), bool)
  target[2:12, 2:12] = True  # a 10x10 object
  keep = np.ones_like(target)
  rng = jax.random.key(0)
  # Nothing predicted: a positive click where the distance to the square's boundary is more
  # than half its largest (5): the 4x4... 6x6 centre of the square.
  for seed in range(8):
    y, x, kind = np.asarray(
      training.next_click(target, np.zeros_like(target), keep, jax.random.key(seed))
    )
    assert kind == 1 and 4 <= y <= 9 and 4 <= x <= 9, (y, x)
  # A false blob wider than anything missed: a negative click in the blob.
  prediction = target.copy()
  prediction[13:20, 10:20] = True
  y, x, kind = np.asarray(training.next_click(target, prediction, keep, rng))
  assert kind == -1 and prediction[y, x] and not target[y, x]
  # No error (or only ignored ones): an empty slot.
  assert np.asarray(training.next_click(target, target, keep, rng))[2] == 0
  assert np.asarray(training.next_click(target, prediction, ~prediction, rng))[2] == 0


def test_object_choice_is_uniform_and_initial_clicks_are_where_they_belong():
  instance = np.zeros((16, 16), np.int32)
  instance[1:13, 1:13] = 3  # a large object and a small one: each drawn about half the time
  instance[14:16, 14:16] = 7
  picks = [
    int(
      np.asarray(instance[np.asarray(training.choose_object(instance, jax.random.key(s), 8)[0])])[0]
    )
    for s in range(200)
  ]
  assert 70 < picks.count(7) < 130 and picks.count(3) + picks.count(7) == 200
  mask, present = training.choose_object(np.zeros_like(instance), jax.random.key(0), 8)
  assert not present and not np.asarray(mask).any()
  target = instance == 3
  keep = np.ones_like(target)
  for seed in range(10):
    first = np.asarray(
      training.initial_clicks(target, keep, jax.random.key(seed), 3, 2, negative_band=2.0)
    )
    positive, negative = first[:3], first[3:]
    assert 1 <= (positive[:, 2] == 1).sum() <= 3 and set(positive[:, 2]) <= {0, 1}
    assert all(target[y, x] for y, x, k in positive if k)
    assert set(negative[:, 2]) <= {0, -1}
    distance = cv2.distanceTransform((~target).astype(np.uint8), cv2.DIST_L2, 5)
    assert all(not target[y, x] and distance[y, x] <= 2.5 for y, x, k in negative if k)


def test_iterative_clicks_make_the_inputs_of_the_step():
  # Three examples: one object, two objects, none (ignored entirely). The stub model predicts
  # nothing, so each iteration adds a positive click inside the chosen object.
  instance = np.zeros((3, 24, 24), np.int32)
  instance[0, 4:14, 4:14] = 1
  instance[1, 2:8, 2:8], instance[1, 12:22, 12:22] = 5, 9
  semantic = (instance > 0).astype(np.int32) * 2
  semantic[0, 0, :] = 255  # ignored pixels stay ignored
  batch = {
    "image": np.zeros((3, 24, 24, 3), np.float32),
    "semantic": semantic,
    "instance": instance,
  }
  seen = []

  def forward(image):
    seen.append(image.shape)
    return {"logits": jnp.zeros((*image.shape[:3], 2)).at[..., 0].set(1.0)}

  out = jax.jit(
    lambda b, r: training.iterative_clicks(
      forward, b, r, ignore_label=255, max_positive=2, max_negative=1, max_iterations=2
    )
  )(batch, jax.random.key(1))
  assert out["image"].shape == (3, 24, 24, 6) and seen == [(3, 24, 24, 6)]
  labels, encoded = np.asarray(out["semantic"]), np.asarray(out["clicks"])
  assert encoded.shape == (3, 5, 3)
  assert (labels[2] == 255).all() and (encoded[2, :, 2] == 0).all()
  assert (labels[0, 0] == 255).all() and set(np.unique(labels[0, 1:])) == {0, 1}
  for b in range(2):
    obj = labels[b] == 1
    assert len(np.unique(instance[b][obj])) == 1 and obj.sum() in (36, 100)
    for y, x, kind in encoded[b]:
      if kind == 1:
        assert obj[y, x]
    # The prompt channels are the clicks' disks; no previous mask from a model that saw nothing.
    maps = np.asarray(training.click_maps(encoded[b : b + 1], (24, 24), 5.0))[0]
    np.testing.assert_array_equal(np.asarray(out["image"])[b, ..., 3:5], maps)
    assert (np.asarray(out["image"])[b, ..., 5] == 0).all()
  # Bad input is named where it enters.
  with pytest.raises(ValueError, match=r"config.step_inputs='clicks_please'"):
    step_inputs.make("clicks_please", 255)
  with pytest.raises(KeyError, match="instance labels"):
    training.iterative_clicks(
      forward, {"image": batch["image"], "semantic": semantic}, None, ignore_label=255
    )


def test_the_wrapper_reads_the_image_alone_or_with_prompts():
  model = models.create(
    "interactive", num_classes=6, base="unet", base_kwargs=dict(features=4, depth=2)
  )
  image = jnp.ones((2, 16, 16, 3))
  variables = model.init(jax.random.key(0), image)
  assert model.apply(variables, image)["logits"].shape == (2, 16, 16, 2)
  zeros = jnp.concatenate([image, jnp.zeros((2, 16, 16, 3))], -1)
  np.testing.assert_allclose(
    model.apply(variables, image)["logits"], model.apply(variables, zeros)["logits"], atol=1e-6
  )
  with pytest.raises(ValueError, match="input with 4 channels"):
    model.apply(variables, jnp.ones((2, 16, 16, 4)))
  # "project": the prompts start ignored, the image passed through to a 3-channel base.
  projected = models.create(
    "interactive", num_classes=2, fusion="project", base_kwargs=dict(features=4, depth=2)
  )
  v = projected.init(jax.random.key(0), image)
  prompts = jnp.concatenate([image, jnp.ones((2, 16, 16, 3))], -1)
  np.testing.assert_allclose(
    projected.apply(v, image)["logits"], projected.apply(v, prompts)["logits"], atol=1e-6
  )
  assert v["params"]["prompt_fusion"]["kernel"].shape == (1, 1, 6, 3)


class DiskModel(nn.Module):
  """A click 'model' without parameters: the object is the positive disks minus the negative
  ones (the previous mask is not read)."""

  @nn.compact
  def __call__(self, image, train=False):
    if image.shape[-1] == 3:
      image = jnp.concatenate([image, jnp.zeros((*image.shape[:3], 3))], -1)
    score = image[..., 3] - 2 * image[..., 4] - 0.5
    return {"logits": jnp.stack([jnp.zeros_like(score), score], -1)}


def _disk_minus_predictor(shape, radius):
  rows, cols = np.ogrid[: shape[0], : shape[1]]

  def predict(made):
    positive, negative = np.zeros(shape, bool), np.zeros(shape, bool)
    for c in made:
      disk = (rows - c.y) ** 2 + (cols - c.x) ** 2 <= radius**2
      positive |= disk & c.positive
      negative |= disk & (not c.positive)
    return positive & ~negative

  return predict


def test_interactive_evaluator_equals_the_protocol_object_by_object(config):
  # Three images of 30x36 (the last padded from 24x28), squares and discs as instances, a band
  # of ignored pixels; batches of 3 objects on 4 devices (padded rows), 12 clicks.
  rng = np.random.default_rng(3)
  instance = np.zeros((3, 30, 36), np.int32)
  for b in range(3):
    for k in range(1, 4 + b):
      y, x, r = (int(v) for v in (rng.integers(3, 22), rng.integers(3, 26), rng.integers(2, 6)))
      if k % 2:
        cv2.circle(instance[b], (x, y), r, k, -1)
      else:
        instance[b, y : y + r + 2, x : x + r + 3] = k
  semantic = (instance > 0).astype(np.int32)
  semantic[1, 10, :] = 255
  sizes = np.array([[30, 36], [30, 36], [24, 28]])
  instance[2, 24:], instance[2, :, 28:] = 0, 0
  local = {
    "image": rng.random((3, 30, 36, 3)).astype(np.float32),
    "semantic": semantic,
    "instance": instance,
    "valid": np.array([True, True, True]),
    "size": sizes,
  }
  descriptor = DatasetDescriptor("objects", ("background", "object"), ((0, 0, 0), (255, 0, 0)))
  mesh = sharding.make_mesh(4)
  evaluator = evaluation.Evaluator(
    DiskModel(),
    config,
    descriptor,
    mesh,
    (30, 36, 3),
    named={"clicks": ["interactive(radius=2, max_clicks=12, object_batch=3)"]},
  )
  (e,) = evaluator.named["clicks"]
  e.start(evaluator._prompter(evaluator.prompted[id(e)], {}))
  e.collect({}, local)
  got = e.summarize({})
  curves = []
  for b in range(3):
    height, width = sizes[b]
    ignore = np.ones((30, 36), bool)
    ignore[:height, :width] = semantic[b, :height, :width] == 255
    objects = np.where(ignore, 0, instance[b])
    for value in np.unique(objects[objects > 0]):
      predict = _disk_minus_predictor((30, 36), 2)
      curves.append(
        clicks.click_sequence(predict, objects == value, max_clicks=12, ignore=ignore)[1]
      )
  expected = clicks.summarize_clicks(curves, 12)
  assert got == expected and got["objects"] == len(curves) >= 9
  assert got["miou_at_k"][-1] > got["miou_at_k"][0]


@pytest.mark.slow
def test_a_click_model_trained_and_evaluated_by_the_trainer(data_dir, tmp_path):
  config = tiny_config(data_dir)
  interactive = load_config("interactive_shapes")
  for key in ("model", "step_inputs", "train_metrics", "evals"):
    config[key] = interactive[key]
  config.model.base_kwargs = dict(features=4, depth=2)
  config.evals.clicks.type = "interactive(radius=3, max_clicks=4)"
  config.num_train_steps = 4
  workdir = str(tmp_path / "run")
  result = train.train_and_evaluate(config, workdir)
  clicks_metrics = result.metrics["clicks"]
  # Every instance of the test split is one object.
  ds, _ = pipeline.eval_dataset(
    pipeline.get_source(config.data), config.data, "test", local_batch_size=4
  )
  objects = sum(
    len(np.unique(b["instance"][i][b["instance"][i] > 0]))
    for b in pipeline.as_numpy(ds)
    for i in np.flatnonzero(b["valid"])
  )
  assert clicks_metrics["objects"] == objects > 0 and len(clicks_metrics["miou_at_k"]) == 4
  lines = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  ious = [line["train/object_iou"] for line in lines if "train/object_iou" in line]
  assert len(ious) == 3 and all(0 <= v <= 1 for v in ious)  # log steps 2, 3 (checkpoint), 4
  assert json.load(open(os.path.join(workdir, "final_metrics.json")))["clicks"] == clicks_metrics

  # The run answers clicks on an image file as its model does on the same prompt channels.
  from segjax import predict, runs  # pylint: disable=import-outside-toplevel
  from segjax.interactive import predictor as interactive  # pylint: disable=import-outside-toplevel

  image, _, _ = shapes.render_scene(np.random.default_rng(5), 32, 3)
  path = str(tmp_path / "scene.png")
  cv2.imwrite(path, image[..., ::-1])
  served = interactive.load_predictor(workdir)
  assert isinstance(served, interactive.ClickModelPredictor) and served.radius == 3.0
  mask = served.predict(path, [(10, 12, True), (3, 3, False)])
  run = runs.load(workdir)
  encoded = np.zeros((1, served.max_clicks, 3), np.int32)
  encoded[0, :2] = [(12, 10, 1), (3, 3, -1)]
  x = training.prompt_input(
    predict.read_input(served.predictor, path)[None], encoded, np.zeros((1, 32, 32)), 3.0
  )
  logits = run.model.apply(run.variables, x, train=False)["logits"]
  np.testing.assert_array_equal(mask, np.asarray(jnp.argmax(logits, -1) == 1)[0])
  boxed = served.predict(path, box=(4, 6, 20, 22))  # a box: a click at its centre, kept inside
  outside = np.ones((32, 32), bool)
  outside[6:23, 4:21] = False
  assert not (boxed & outside).any()
  with pytest.raises(ValueError, match=r"click \(40, 3\) is outside the 32x32 image"):
    served.predict(path, [(40, 3, True)])
  with pytest.raises(ValueError, match="give at least one click or a box"):
    served.predict(path, [])
  # The previous mask is the third prompt channel.
  previous = np.zeros((32, 32), np.float32)
  previous[8:16, 8:16] = 1
  x = x.at[..., -1].set(previous)
  logits = run.model.apply(run.variables, x, train=False)["logits"]
  np.testing.assert_array_equal(
    served.predict(path, [(10, 12, True), (3, 3, False)], previous=previous),
    np.asarray(jnp.argmax(logits, -1) == 1)[0],
  )
  with pytest.raises(ValueError, match=r"previous mask \(16, 16\) is not the image's \(32, 32\)"):
    served.predict(path, [(10, 12, True)], previous=np.zeros((16, 16)))
