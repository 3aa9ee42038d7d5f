import jax
import ml_collections
import numpy as np
import pytest

from segjax import optim
from segjax import sharding
from segjax.data.descriptor import DatasetDescriptor


def _opt(**kwargs):
  return ml_collections.ConfigDict(
    {**dict(name="adamw", learning_rate=1.0, warmup_steps=10), **kwargs}
  )


def test_warmup_then_cosine_schedule_values():
  schedule = optim.make_schedule(_opt(schedule="cosine"), total_steps=110)
  np.testing.assert_allclose(
    [schedule(0), schedule(5), schedule(10), schedule(60), schedule(110)],
    [0.0, 0.5, 1.0, 0.5, 0.0],
    atol=1e-6,
  )


def test_poly_and_constant_schedules():
  poly = optim.make_schedule(_opt(schedule="poly"), total_steps=110)
  np.testing.assert_allclose(poly(60), 0.5**0.9, rtol=1e-5)
  constant = optim.make_schedule(_opt(schedule="constant", warmup_steps=0), total_steps=5)
  assert float(constant(3)) == 1.0


def test_step_schedule_and_per_path_learning_rates():
  step = optim.make_schedule(
    _opt(schedule="step", warmup_steps=0, boundaries=(0.5, 0.75), gamma=0.1), total_steps=100
  )
  np.testing.assert_allclose(
    [step(49), step(50), step(74), step(75), step(99)], [1.0, 0.1, 0.1, 0.01, 0.01], rtol=1e-6
  )
  with pytest.raises(ValueError, match=r"boundaries=\(1.5,\)"):
    optim.make_schedule(_opt(schedule="step", boundaries=(1.5,)), total_steps=100)
  # SGD without momentum at lr 1: the update is -grad, times the factor of the first match
  tx = optim.make_optimizer(
    ml_collections.ConfigDict(
      dict(
        name="sgd",
        learning_rate=1.0,
        momentum=0.0,
        schedule="constant",
        lr_multipliers=(("encoder/", 0.1), ("head", 10.0)),
      )
    ),
    10,
  )
  params = {
    "encoder": {"kernel": np.ones(2)},
    "head": {"kernel": np.ones(2)},
    "neck": {"kernel": np.ones(2)},
  }
  updates, _ = tx.update(jax.tree.map(np.ones_like, params), tx.init(params), params)
  np.testing.assert_allclose(updates["encoder"]["kernel"], [-0.1, -0.1], rtol=1e-6)
  np.testing.assert_allclose(updates["head"]["kernel"], [-10.0, -10.0], rtol=1e-6)
  np.testing.assert_allclose(updates["neck"]["kernel"], [-1.0, -1.0], rtol=1e-6)
  with pytest.raises(ValueError, match=r"\['backbone/'\] match no parameter"):
    optim.make_optimizer(
      ml_collections.ConfigDict(
        dict(name="adam", learning_rate=1.0, lr_multipliers=(("backbone/", 0.1),))
      ),
      10,
    ).init(params)
  with pytest.raises(ValueError, match="expected \\(path pattern, factor\\)"):
    optim.make_optimizer(
      ml_collections.ConfigDict(dict(name="adam", learning_rate=1.0, lr_multipliers=((0.1,),))), 10
    )


def test_unknown_optimizer_and_schedule_are_named():
  with pytest.raises(KeyError, match="'cosinus'"):
    optim.make_schedule(_opt(schedule="cosinus"), 10)
  with pytest.raises(KeyError, match="'adamx'"):
    optim.make_optimizer(ml_collections.ConfigDict(dict(name="adamx", learning_rate=1.0)), 10)


def test_batch_must_divide_over_devices_and_mesh_size_is_checked():
  mesh = sharding.make_mesh(4)
  assert sharding.local_batch_size(8, mesh) == 8 // jax.process_count()
  with pytest.raises(ValueError, match="Batch size 6 .* 4 devices"):
    sharding.local_batch_size(6, mesh)
  with pytest.raises(ValueError, match="num_devices=64"):
    sharding.make_mesh(64)


def test_descriptor_validates_and_colorizes():
  descriptor = DatasetDescriptor(
    "toy", ("a", "b"), ((1, 2, 3), (4, 5, 6)), thing_classes=(1,), stuff_classes=(0,)
  )
  np.testing.assert_array_equal(
    descriptor.colorize(np.array([[0, 1, 255]])), [[[1, 2, 3], [4, 5, 6], [255, 255, 255]]]
  )
  with pytest.raises(ValueError, match="1 colours for 2 classes"):
    DatasetDescriptor("toy", ("a", "b"), ((1, 2, 3),))
  with pytest.raises(ValueError, match="both thing and stuff"):
    DatasetDescriptor(
      "toy", ("a", "b"), ((1, 2, 3), (4, 5, 6)), thing_classes=(1,), stuff_classes=(1,)
    )
  with pytest.raises(ValueError, match="ignore_label 1 is a class id"):
    DatasetDescriptor("toy", ("a", "b"), ((1, 2, 3), (4, 5, 6)), ignore_label=1)
