"""DINOv2's ViT (segjax.models.vit) against Hugging Face transformers, without PyTorch: the fixtures
of tools/transformers_reference.py (a tiny Dinov2Model and a tiny Dinov2WithRegistersModel with
SwiGLU: config.json, model.safetensors in the Hub's names, images and transformers' outputs at the
position grid's size and interpolated up and down) and transformers' parameter counts of DINOv2
ViT-S/B/L/g."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import ROOT
from segjax import models
from segjax.models import vit

FIXTURES = os.path.join(ROOT, "tests", "fixtures")
CASES = (("dinov2_tiny", "Dinov2Model"), ("dinov2_registers_tiny", "Dinov2WithRegistersModel"))


@pytest.mark.parametrize("name, architecture", CASES)
def test_dinov2_from_transformers_equals_its_tokens_at_any_input_size(name, architecture):
  model, variables = models.from_transformers(architecture, os.path.join(FIXTURES, name))
  registers = 2 if "registers" in name else 0
  assert (model.hidden_size, model.num_hidden_layers, model.patch_size) == (32, 2, 8)
  assert (model.position_grid, model.num_registers, model.use_swiglu_ffn) == (
    5,
    registers,
    bool(registers),
  )
  data = np.load(os.path.join(FIXTURES, "dinov2_tiny_io.npz"))
  for size in ("40x40", "56x48", "24x32"):  # the grid's 5x5 patches; 7x6 (up) and 3x4 (down)
    image, want = data[f"image_{name}_{size}"], data[f"tokens_{name}_{size}"]
    out = jax.jit(model.apply)(variables, jnp.asarray(image))
    np.testing.assert_allclose(out["tokens"], want, atol=2e-5, rtol=1e-5)
    h, w = image.shape[1] // 8, image.shape[2] // 8
    assert out["patches"].shape == (image.shape[0], h, w, 32)
    np.testing.assert_array_equal(
      out["patches"].reshape(image.shape[0], h * w, 32), out["tokens"][:, 1 + registers :]
    )
    np.testing.assert_array_equal(out["cls"], out["tokens"][:, 0])


def test_dinov2_parameter_counts_equal_transformers():
  with open(os.path.join(FIXTURES, "dinov2_sizes.json"), encoding="utf-8") as f:
    sizes = json.load(f)
  for variant in ("vit_s", "vit_b", "vit_l", "vit_g"):
    model = models.create("vit", variant=variant)
    shapes = jax.eval_shape(lambda m=model: m.init(jax.random.key(0), jnp.zeros((1, 28, 28, 3))))
    assert models.count_params(shapes["params"]) == sizes[variant], variant


def test_position_interpolation_matrices_are_pytorchs_bicubic():
  # Same size: the identity. Upsampling 2 -> 4 (scale 0.5), by hand: output 0 samples input
  # -0.25, so t = 0.75 from input -1 (clamped to 0): cubic a = -0.75 weights of distances
  # 1.75, 0.75, 0.25, 1.25 on inputs -2, -1, 0, 1 -> clamped onto 0, 0, 0, 1.
  np.testing.assert_allclose(vit.resize_matrix(5, 5, False), np.eye(5), atol=1e-12)
  np.testing.assert_allclose(vit.resize_matrix(5, 5, True), np.eye(5), atol=1e-12)
  cubic = lambda x: vit._keys_cubic(np.array(x), -0.75)  # pylint: disable=protected-access
  row = vit.resize_matrix(2, 4, False)[0]
  np.testing.assert_allclose(row, [cubic(1.75) + cubic(0.75) + cubic(0.25), cubic(1.25)])
  # Every row sums to one (both kernels), and the antialiased one widens when shrinking: 8 -> 2
  # reaches 8 inputs per output (support 2 x scale 4 each side), the plain one 4.
  for antialias in (False, True):
    for n_in, n_out in ((5, 7), (7, 3), (8, 2)):
      np.testing.assert_allclose(vit.resize_matrix(n_in, n_out, antialias).sum(1), 1.0)
  assert np.count_nonzero(vit.resize_matrix(8, 2, True)[0]) > np.count_nonzero(
    vit.resize_matrix(8, 2, False)[0]
  )


def test_hub_names_and_swiglu_halves_map_to_transformers_5_names():
  state = load_file(os.path.join(FIXTURES, "dinov2_registers_tiny", "model.safetensors"))
  renamed = vit.checkpoint_names({"dinov2." + k: v for k, v in state.items()})
  gate, up = (
    renamed["encoder.layer.0.mlp.gate_proj.weight"],
    renamed["encoder.layer.0.mlp.up_proj.weight"],
  )
  np.testing.assert_array_equal(
    np.concatenate([gate, up]), state["encoder.layer.0.mlp.weights_in.weight"]
  )
  assert "encoder.layer.1.attention.q_proj.bias" in renamed and not any(
    "weights_in" in k for k in renamed
  )
  with pytest.raises(ValueError, match="variant"):
    models.create("vit", variant="vit_x").init(jax.random.key(0), jnp.zeros((1, 28, 28, 3)))


def test_remat_blocks_give_the_same_values_and_gradients():
  model, variables = models.from_transformers("Dinov2Model", os.path.join(FIXTURES, "dinov2_tiny"))
  remat = model.clone(remat=True)
  image = jnp.asarray(
    np.load(os.path.join(FIXTURES, "dinov2_tiny_io.npz"))["image_dinov2_tiny_56x48"]
  )
  loss = lambda m: lambda v: jnp.sum(m.apply(v, image)["patches"] ** 2)
  g, g_remat = jax.grad(loss(model))(variables), jax.grad(loss(remat))(variables)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), g, g_remat)
  # One rematerialised call per block in the program (none without remat).
  count = lambda m: str(jax.make_jaxpr(loss(m))(variables)).count("remat")
  assert (count(model), count(remat)) == (0, 2)
