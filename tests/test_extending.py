"""docs/extending.md as a user runs it: its module and config written from the page, a training run
with them in its own process (dataset, model, loss, op, optimizer, schedule and post-processor all
named by the config), and each piece checked by value."""

import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import tensorflow as tf

from conftest import ROOT

PAGE = os.path.join(ROOT, "docs", "extending.md")


def page_files() -> dict[str, str]:
  """The page's code blocks marked ``<!-- extending: module|config PATH -->``, by path."""
  text = open(PAGE).read()
  blocks = re.findall(r"<!-- extending: \w+ (\S+) -->\s*```python\n(.*?)```", text, re.S)
  return dict(blocks)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
  root = tmp_path_factory.mktemp("project")
  files = page_files()
  assert set(files) == {"my_project/extensions.py", "my_project/stripes_config.py"}
  for path, text in files.items():
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / path).write_text(text)
  (root / "my_project" / "__init__.py").write_text("")
  sys.path.insert(0, str(root))
  import my_project.extensions as extensions

  yield root, extensions
  sys.path.remove(str(root))


@pytest.mark.slow
def test_the_page_trains_with_every_piece_named_in_its_config(project, tmp_path):
  root, _ = project
  workdir = tmp_path / "run"
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), ROOT])}
  result = subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, "experiments", "train.py"),
      f"--config={root / 'my_project' / 'stripes_config.py'}",
      f"--workdir={workdir}",
      f"--config.data.data_dir={tmp_path / 'tfds'}",
    ],
    capture_output=True,
    text=True,
    timeout=600,
    cwd=root,
    env=env,
  )
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  config = json.load(open(workdir / "config.json"))
  assert (
    config["data"]["name"],
    config["model"]["name"],
    config["optimizer"]["name"],
    config["optimizer"]["schedule"],
  ) == ("stripes", "tiny_fcn", "lion", "linear")
  final = json.load(open(workdir / "final_metrics.json"))
  # 30 steps on stripes this easy find them (all background would score 0.38).
  assert final["validation"]["mean_iou"] > 0.9, final["validation"]
  # The page's evaluator, by name in config.evals, under flip TTA: the stripes found image by image.
  assert sorted(final) == ["stripes", "validation"]
  assert final["stripes"]["image_iou"] > 0.8, final["stripes"]


def test_each_piece_by_value(project, tmp_path):
  _, ext = project
  from segjax import models, optim, postprocess
  from segjax.data import datasets, ops
  from segjax.data.descriptor import DatasetDescriptor
  from segjax.losses import terms

  # Model: built by name like a built-in one.
  model = models.create("tiny_fcn", num_classes=2, features=4)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  assert model.apply(variables, jnp.zeros((2, 8, 8, 3)))["logits"].shape == (2, 8, 8, 2)

  # Loss: by hand on two pixels and one ignored pixel.
  logits = jnp.array([[[[2.0, 0.0], [0.0, 1.0], [5.0, -5.0]]]])
  labels = jnp.array([[[0, 1, 255]]])
  fn = terms.make_terms("stripe_focused_ce(stripe_weight=3.0)")[0].loss
  nll0, nll1 = np.log1p(np.exp(-2.0)), np.log1p(np.exp(-1.0))
  np.testing.assert_allclose(fn(logits, labels, ignore_label=255), (nll0 + 3 * nll1) / 4, rtol=1e-6)

  # Preprocessing op: probability 1 inverts the image and leaves the labels.
  descriptor = DatasetDescriptor(
    name="d",
    class_names=("a", "b"),
    colormap=((0, 0, 0),) * 2,
    stuff_classes=(0, 1),
    thing_classes=(),
    ignore_label=255,
    label_divisor=1000,
  )
  op = ops.build("invert(1.0)", ops.Context(descriptor))
  image = tf.random.uniform((4, 4, 3), seed=1)
  out = op({"image": image, "semantic": tf.zeros((4, 4, 1), tf.int32)}, tf.constant([1, 2]))
  np.testing.assert_allclose(out["image"].numpy(), 1.0 - image.numpy(), atol=1e-7)

  # Post-processor: a column is stripe where more than the fraction of its pixels are.
  chain = postprocess.Chain("argmax|stripe_columns(0.5)", descriptor)
  assert len(chain.compiled) == 2  # both steps run inside the compiled step
  semantic = np.array([[[1, 0, 1], [1, 0, 0], [0, 1, 0]]])
  got = chain({"logits": jnp.asarray(np.eye(2)[semantic], jnp.float32)})
  np.testing.assert_array_equal(got["semantic"], [[[1, 0, 0]] * 3])

  # Evaluator: by hand on four 2x3 images (the third a padding example, the fourth without
  # stripes): IoUs 1/3 and 1 (an ignored pixel counts nowhere), mean 2/3.
  from segjax import evaluators, metrics as metrics_lib

  image_iou = evaluators.make("image_iou(class_id=1)", descriptor)
  truth = np.array(
    [[[1, 1, 0], [0, 0, 0]], [[1, 0, 255], [0, 0, 0]], [[1, 1, 1], [1, 1, 1]], [[0] * 3] * 2]
  )
  found = np.array(
    [[[0, 1, 1], [0, 0, 0]], [[1, 0, 1], [0, 0, 0]], [[0, 0, 0], [0, 0, 0]], [[0] * 3] * 2]
  )
  batch = {"semantic": jnp.asarray(truth), "valid": jnp.array([True, True, False, True])}
  totals = metrics_lib.ExactSum.zeros(image_iou.zeros())
  totals = totals.add(jax.jit(image_iou.batch_sums)({"semantic": jnp.asarray(found)}, batch))
  assert image_iou.summarize(totals.value()) == {"image_iou": pytest.approx(2 / 3)}

  # Optimizer and schedule: equal to optax's Lion over a linear decay.
  opt_config = ml_collections.ConfigDict(
    dict(
      name="lion",
      schedule="linear",
      learning_rate=0.1,
      warmup_steps=0,
      weight_decay=0.0,
      end_factor=0.0,
    )
  )
  schedule = optim.make_schedule(opt_config, total_steps=10)
  np.testing.assert_allclose([schedule(0), schedule(5), schedule(10)], [0.1, 0.05, 0.0], atol=1e-7)
  params, grads = {"w": jnp.array([1.0, -2.0])}, {"w": jnp.array([0.5, -0.25])}
  tx, reference = (
    optim.make_optimizer(opt_config, 10),
    optax.lion(optax.linear_schedule(0.1, 0, 10), weight_decay=0.0),
  )
  got, _ = tx.update(grads, tx.init(params), params)
  want, _ = reference.update(grads, reference.init(params), params)
  np.testing.assert_allclose(got["w"], want["w"])

  # Dataset: by name, for planning without data and for training with it.
  data_config = ml_collections.ConfigDict(dict(name="stripes", data_dir=str(tmp_path / "tfds")))
  assert datasets.dataset_info(data_config).descriptor.class_names == ("background", "stripe")
  source = datasets.get_source(data_config)
  assert source.builder.info.splits["train"].num_examples == 48
  for example in source.builder.as_dataset(split="validation").take(3):
    image, label = example["image"].numpy(), example["semantic"].numpy()[..., 0]
    assert label.sum(1).tolist() == [8] * 32  # one stripe 8 pixels wide in every row
    assert image[label == 1].min() >= 180 > 60 > image[label == 0].max()
