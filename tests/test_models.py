import jax
import jax.numpy as jnp
import pytest

from segjax import models


def _param_count(model, shape=(1, 64, 64, 3)):
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))
  return models.count_params(variables["params"])


def test_unet_has_the_reference_parameter_count():
  # milesial/Pytorch-UNet (bilinear=False), n_channels=3, n_classes=2.
  assert _param_count(models.create("unet", num_classes=2, features=64, depth=4)) == 31_037_698


def _init(model, image):
  return jax.jit(lambda rng: model.init(rng, image, train=False))(jax.random.key(0, impl="rbg"))


@pytest.mark.parametrize("height,width", [(97, 131), (32, 32), (7, 9)])
def test_unet_logits_at_input_resolution_for_any_size(height, width):
  model = models.create("unet(features=4, depth=2)", num_classes=3)
  image = jnp.ones((2, height, width, 3))
  variables = _init(model, image)
  out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, image)
  assert out["logits"].shape == (2, height, width, 3)
  assert out["logits"].dtype == jnp.float32


def test_unet_bf16_computation_keeps_float32_params():
  model = models.create("unet", num_classes=3, features=4, depth=2, dtype=jnp.bfloat16)
  image = jnp.ones((1, 16, 16, 3))
  variables = _init(model, image)
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(variables["params"]))
  logits = model.apply(variables, image, train=False)["logits"]
  assert logits.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(logits)))
