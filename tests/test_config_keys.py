"""Every config key the code reads is declared in the config a run starts from (so that the
command line can set it): the reads of a run are traced at the ConfigDict and any read of a key
the dict does not hold is reported."""

import contextlib

import ml_collections
import numpy as np
import pytest

from segjax import config_defaults
from segjax import optim
from segjax import registry

from conftest import tiny_config


@contextlib.contextmanager
def undeclared_reads():
  """Records ``(key, sorted keys of the dict)`` for each read (``[]``, ``.``, ``get``, ``in``) of
  a key a ConfigDict does not hold, while the block runs."""
  misses = []
  cls = ml_collections.ConfigDict
  getitem, contains = cls.__getitem__, cls.__contains__

  def traced_getitem(self, key):
    try:
      return getitem(self, key)
    except KeyError:
      if not str(key).startswith("_"):
        misses.append((key, tuple(sorted(self._fields))))  # pylint: disable=protected-access
      raise

  def traced_contains(self, key):
    found = contains(self, key)
    if not found:
      misses.append((key, tuple(sorted(self._fields))))  # pylint: disable=protected-access
    return found

  cls.__getitem__, cls.__contains__ = traced_getitem, traced_contains
  try:
    yield misses
  finally:
    cls.__getitem__, cls.__contains__ = getitem, contains


def describe(misses) -> list[str]:
  """Each missing key once, with three keys of the dict it was read from."""
  return sorted({f"{key} (beside {', '.join(fields[:3])})" for key, fields in misses})


def test_the_optimizers_and_schedules_read_only_declared_keys():
  # Each registered optimizer and schedule built from base_config's optimizer with only its name
  # changed: every key it reads is there.
  for name in registry.names("optimizer"):
    for schedule in registry.names("schedule"):
      config = config_defaults.base_config().optimizer
      config.update(
        dict(name=name, schedule=schedule, boundaries=(0.5,) if schedule == "step" else ())
      )
      with undeclared_reads() as misses:
        tx = optim.make_optimizer(config, 10)
        tx.init({"w": {"kernel": np.zeros(2)}})
      assert not misses, (name, schedule, describe(misses))


@pytest.mark.slow
def test_a_run_evaluation_and_prediction_read_only_declared_keys(data_dir, tmp_path):
  # The tiny quickstart run (training with periodic evaluation, checkpoints, the final
  # evaluation), its evaluation again from the run directory, pictures of a split and pre-labels
  # of image files, all traced.
  import cv2  # pylint: disable=import-outside-toplevel
  from segjax import evaluation, pictures, predict, predict_files, runs, train  # pylint: disable=import-outside-toplevel
  from segjax.data import pipeline  # pylint: disable=import-outside-toplevel

  config = tiny_config(data_dir)
  config.update(dict(num_train_steps=2, eval_every_steps=2, checkpoint_every_steps=2))
  workdir = str(tmp_path / "run")
  images = tmp_path / "images"
  images.mkdir()
  for i in range(2):
    cv2.imwrite(str(images / f"scene_{i}.png"), np.full((40, 48, 3), 60 * i, np.uint8))
  with undeclared_reads() as misses:
    train.train_and_evaluate(config, workdir)
    evaluation.evaluate_run(workdir)
    predictor = predict.Predictor(runs.load(workdir))
    pictures.draw_split(
      predictor, pipeline.get_source(predictor.config.data), str(tmp_path / "pictures")
    )
    predict_files.predict_files(
      predictor,
      sorted(str(p) for p in images.iterdir()),
      str(tmp_path / "prelabels"),
      progress=False,
    )
  assert not misses, describe(misses)


def test_optimizer_config_names_an_unknown_key():
  config = config_defaults.optimizer_config(name="sgd", nesterov=True)
  assert config.nesterov is True and config.b2 == 0.999  # declared, with its neutral value
  try:
    config_defaults.optimizer_config(name="sgd", nestrov=True)
  except KeyError as e:
    assert "nestrov" in str(e) and "nesterov" in str(e)
  else:
    raise AssertionError("an unknown optimizer key was accepted")
