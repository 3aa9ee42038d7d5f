"""The one inference protocol and the evaluators by name: the compiled, batched evaluation under
a sliding window, scales and flips equals the per-image prediction of the same images; entries of
``config.evals`` share passes, run when due and name their mistakes."""

import numpy as np
import pytest

from segjax import evaluation, metrics, predict, runs, sharding
from segjax.data import pipeline

PROTOCOL = dict(window=(16, 16), overlap=0.5, scales=(0.75, 1.0, 1.25), tta="flip", window_batch=3)


def per_image_confusion(run, config, source, split="validation"):
  """The confusion matrix of `Predictor.predict_image` on each image of ``split`` at its size."""
  predictor = predict.Predictor(run, config)
  ds, _ = pipeline.eval_dataset(source, config.data, split, local_batch_size=3)
  confusion = np.zeros((5, 5), np.int64)
  for batch in pipeline.as_numpy(ds, source):
    for i in np.flatnonzero(batch["valid"]):
      height, width = batch["size"][i]
      semantic = predictor.predict_image(batch["image"][i, :height, :width])[0]["semantic"][0]
      confusion += np.asarray(
        metrics.confusion_matrix(semantic, batch["semantic"][i, :height, :width], 5)
      )
  return confusion


@pytest.mark.slow
def test_windowed_multiscale_evaluation_equals_per_image_prediction(straight_run):
  # config.evals with a 16x16 window, three scales and flips, on 1 and on 4 devices (batches of
  # 4, the last one padded) == Predictor.predict_image image by image, pixel for pixel.
  config, workdir, final = straight_run
  run = runs.load(workdir)
  source = pipeline.get_source(config.data)
  config = config.copy_and_resolve_references()
  config.evals = {"val": dict(type="semantic", inference=PROTOCOL), "plain": dict(type="semantic")}
  got = {}
  for devices in (1, 4):
    config.num_devices = devices
    got[devices] = evaluation.evaluate_run(workdir, config)
  assert sorted(got[4]) == ["plain", "val"]
  np.testing.assert_array_equal(
    got[4]["plain"]["confusion_matrix"], final["validation"]["confusion_matrix"]
  )
  protocol = config.copy_and_resolve_references()
  protocol.inference.update(PROTOCOL)
  want = per_image_confusion(run, protocol, source)
  for devices in (1, 4):
    np.testing.assert_array_equal(got[devices]["val"]["confusion_matrix"], want)
  assert want.sum() == 10 * 32 * 32
  assert not np.array_equal(want, final["validation"]["confusion_matrix"])  # the spec did work


def test_entries_share_a_pass_run_when_due_and_name_bad_keys(straight_run):
  config, workdir, _ = straight_run
  run = runs.load(workdir)
  source = pipeline.get_source(config.data)
  config = config.copy_and_resolve_references()
  config.eval_every_steps = 4
  config.evals = {
    "a": dict(type="semantic", every_steps=2),
    "b": dict(type=("semantic",)),  # the same split and spec as "a": one evaluator, one pass
    "c": dict(split="test", inference=dict(tta="flip")),
  }
  mesh = sharding.make_mesh()
  made = evaluation.Evaluations(run.model, config, run.descriptor, mesh, (32, 32, 3))
  assert [(split, [e.name for e in group]) for split, group, _ in made.groups] == [
    ("validation", ["a", "b"]),
    ("test", ["c"]),
  ]
  assert [made.due(s) for s in (1, 2, 3, 4)] == [False, True, False, True]
  assert list(made.run(run.variables, source, step=2)) == ["a"]
  every = made.run(run.variables, source)
  assert list(every) == ["a", "b", "c"]
  assert every["a"] == every["b"] and sum(map(sum, every["c"]["confusion_matrix"])) == 6 * 32 * 32
  for evals, error, match in (
    ({"x": dict(kind="semantic")}, KeyError, r"config.evals.x: unknown key\(s\) \['kind'\]"),
    ({"x": dict(type="nope")}, KeyError, r"config.evals.x.type='nope': Unknown evaluator 'nope'"),
    (
      {"x": dict(type="panoptic")},
      ValueError,
      r"config.evals.x.type='panoptic' reads \['panoptic'\]",
    ),
    (
      {"x": dict(inference=dict(tta="d8"))},
      ValueError,
      r"config.evals.x: config.inference.tta='d8'",
    ),
    ({"x": dict(every_steps=-1)}, ValueError, r"config.evals.x.every_steps=-1"),
  ):
    config.evals = evals
    with pytest.raises(error, match=match):
      evaluation.Evaluations(run.model, config, run.descriptor, mesh, (32, 32, 3))
