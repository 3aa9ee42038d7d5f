import jax
import numpy as np
import jax.numpy as jnp
import pytest

from segjax import models


def _param_count(model, shape=(1, 64, 64, 3)):
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))
  return models.count_params(variables["params"])


def test_unet_has_the_reference_parameter_count():
  # milesial/Pytorch-UNet (bilinear=False), n_channels=3, n_classes=2.
  assert _param_count(models.create("unet", num_classes=2, features=64, depth=4)) == 31_037_698


@pytest.mark.parametrize("height,width", [(6, 8), (7, 9)])
def test_max_pool_2x2_equals_flax_max_pool_and_routes_gradients_to_the_maxima(height, width):
  import flax.linen as nn
  from segjax.models.common import max_pool_2x2

  x = jax.random.normal(jax.random.key(3), (2, height, width, 3))
  np.testing.assert_array_equal(max_pool_2x2(x), nn.max_pool(x, (2, 2), strides=(2, 2)))
  cotangent = jax.random.normal(jax.random.key(4), (2, height // 2, width // 2, 3))
  got = jax.grad(lambda x: jnp.sum(max_pool_2x2(x) * cotangent))(x)
  want = jax.grad(lambda x: jnp.sum(nn.max_pool(x, (2, 2), strides=(2, 2)) * cotangent))(x)
  np.testing.assert_allclose(got, want)  # random values: no ties
  assert np.count_nonzero(np.asarray(got)) == cotangent.size


def test_upconv2x_equals_flax_conv_transpose_with_its_parameters():
  # UpConv2x is a 2x2 stride-2 transposed convolution written as a per-pixel matmul: same
  # parameter tree, same initial values from the same key, same outputs and gradients.
  import flax.linen as nn
  from segjax.models.common import UpConv2x

  x = jax.random.normal(jax.random.key(1), (2, 5, 7, 6))
  ours, flax_t = UpConv2x(4), nn.ConvTranspose(4, (2, 2), strides=(2, 2))
  params = ours.init(jax.random.key(0), x)
  reference = flax_t.init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, reference)
  np.testing.assert_array_equal(params["params"]["kernel"], reference["params"]["kernel"])
  params = {
    "params": {"kernel": params["params"]["kernel"], "bias": jnp.arange(4.0) / 4}
  }  # a non-zero bias
  np.testing.assert_allclose(ours.apply(params, x), flax_t.apply(params, x), rtol=1e-5, atol=1e-5)
  assert ours.apply(params, x).shape == (2, 10, 14, 4)
  # Output block (2i + a, 2j + b) depends on input pixel (i, j) only.
  y = ours.apply(params, x.at[:, 2, 3].set(0.0)) - ours.apply(params, x)
  changed = np.argwhere(np.abs(np.asarray(y)).sum(axis=(0, 3)) > 0)
  assert {tuple(p) for p in changed} <= {(4, 6), (4, 7), (5, 6), (5, 7)} and len(changed) == 4
  loss = lambda module: lambda p, x: jnp.sum(jnp.sin(module.apply(p, x)))
  got = jax.grad(loss(ours), argnums=(0, 1))(params, x)
  want = jax.grad(loss(flax_t), argnums=(0, 1))(params, x)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  assert UpConv2x(4, jnp.bfloat16).apply(params, x).dtype == jnp.bfloat16


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
  logits = jax.jit(lambda v, x: model.apply(v, x, train=False)["logits"])(variables, image)
  assert logits.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(logits)))


# ------------------------------------------------------------------ reference parameter counts
@pytest.mark.parametrize(
  "spec,kwargs,expected",
  [
    # torchvision.models.resnet50(weights=None) without fc: 25,557,032 - 2,049,000.
    ("resnet50", {}, 23_508_032),
    ("resnet18", {}, 11_176_512),
    # torchvision.models.segmentation.deeplabv3_resnet50/101(num_classes=21, aux_loss=...)
    ("deeplabv3", dict(num_classes=21, backbone="resnet50"), 39_638_869),
    ("deeplabv3", dict(num_classes=21, backbone="resnet101"), 58_630_997),
    ("deeplabv3", dict(num_classes=21, backbone="resnet50", aux_head=True), 42_004_074),
    # VGG16-BN's 13 convolutions (14,723,136) + mirrored decoder + 21-class last conv.
    ("segnet", dict(num_classes=21), 29_455_125),
  ],
)
def test_reference_parameter_counts(spec, kwargs, expected):
  assert _param_count(models.create(spec, **kwargs)) == expected


def test_segnet_encoder_is_vgg16_bn():
  params = jax.eval_shape(
    lambda: models.create("segnet", num_classes=2).init(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False
    )
  )["params"]
  encoder = {k: v for k, v in params.items() if k.startswith("encoder")}
  assert len(encoder) == 13 and all(set(block) == {"conv", "bn"} for block in encoder.values())
  assert all(
    "bias" in block["conv"] for block in encoder.values()
  )  # VGG's convolutions carry biases
  assert models.count_params(encoder) == 14_723_136


# ------------------------------------------------------------------ shapes at odd sizes
@pytest.mark.parametrize(
  "spec",
  [
    "segnet(width=4)",
    "deeplabv3(backbone='resnet18', width=8, aspp_features=8, aux_head=True)",
    "deeplabv3plus(backbone='resnet18', width=8, aspp_features=8, decoder_features=8)",
    "hmsa(trunk='deeplabv3plus', trunk_kwargs={'backbone': 'resnet18', 'width': 8, "
    "'aspp_features': 8, 'decoder_features': 8}, attention_features=8, eval_scales=(0.5, 1.0))",
  ],
)
def test_models_give_logits_at_input_resolution(spec):
  model = models.create(spec, num_classes=3)
  image = jnp.ones((1, 97, 131, 3))
  out, _ = jax.jit(lambda rng: model.init_with_output(rng, image, train=False))(
    jax.random.key(0, impl="rbg")
  )  # one compilation, not two
  assert out["logits"].shape == (1, 97, 131, 3) and out["logits"].dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(out["logits"])))
  if "aux_head=True" in spec:
    assert out["aux_logits"].shape == (1, 97, 131, 3)


@pytest.mark.parametrize(
  "output_stride,multi_grid", [(8, None), (16, None), (32, None), (16, (1, 2, 4))]
)
def test_dilation_gives_the_output_stride(output_stride, multi_grid):
  model = models.create("resnet50", output_stride=output_stride, multi_grid=multi_grid, width=4)
  feats = jax.eval_shape(
    lambda: model.init_with_output(jax.random.key(0), jnp.zeros((1, 64, 96, 3)), train=False)
  )[0]
  assert feats["layer1"].shape[1:3] == (16, 24)
  assert feats["layer4"].shape[1:3] == (64 // output_stride, 96 // output_stride)
  assert feats["layer4"].shape[-1] == 4 * 8 * 4


def test_unpooling_puts_values_at_the_pooled_positions():
  from segjax.models.segnet import max_pool_with_indices, max_unpool

  x = jnp.array([[1.0, 5.0, 2.0, 0.0, 9.0], [3.0, 4.0, 8.0, 1.0, 9.0], [0.0, 2.0, 7.0, 6.0, 9.0]])[
    None, :, :, None
  ]
  pooled, index = max_pool_with_indices(x)
  assert pooled[0, :, :, 0].tolist() == [[5.0, 8.0]]
  assert index[0, :, :, 0].tolist() == [[1, 2]]  # window positions (0,1) and (1,0)
  up = max_unpool(pooled * 10, index, (3, 5))[0, :, :, 0]
  assert up.tolist() == [
    [0.0, 50.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, 80.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 0.0, 0.0],
  ]


# ------------------------------------------------------------------ HMSA
HMSA_SPEC = "hmsa(trunk='unet', trunk_kwargs={'features': 4, 'depth': 2}, attention_features=4)"


def test_hmsa_with_one_scale_equals_its_trunk():
  hmsa = models.create(HMSA_SPEC, num_classes=3)
  image = jax.random.normal(jax.random.key(1), (2, 24, 20, 3))
  variables = _init(hmsa, image)
  trunk = models.create("unet", num_classes=3, features=4, depth=2)
  trunk_variables = {k: v["trunk"] for k, v in variables.items()}
  expected = jax.jit(lambda v, x: trunk.apply(v, x, train=False)["logits"])(trunk_variables, image)
  got = jax.jit(lambda v, x: hmsa.apply(v, x, train=False, scales=(1.0,))["logits"])(
    variables, image
  )
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_hmsa_two_scale_combination_matches_the_paper():
  from segjax.models.hmsa import combine_scales

  # L_1 = 1 everywhere; L_0.5 = 3 on a 1x1 map; a_0.5 = 0.25.
  # P = up(a * L_0.5) + (1 - up(a)) * L_1 = 0.75 + 0.75 = 1.5 at every pixel.
  low = (jnp.full((1, 1, 1, 1), 3.0), jnp.full((1, 1, 1, 1), 0.25))
  high = (jnp.ones((1, 2, 2, 1)), jnp.full((1, 2, 2, 1), 0.9))  # a_1 unused with two scales
  np.testing.assert_allclose(combine_scales({0.5: low, 1.0: high}, (2, 2)), 1.5)
  # Three scales: 2.0 first, then P <- a_1 L_1 + (1 - a_1) down(P), then the 0.5 step.
  top = (jnp.full((1, 4, 4, 1), 5.0), jnp.ones((1, 4, 4, 1)))
  p1 = 0.9 * 1 + 0.1 * 5.0
  np.testing.assert_allclose(
    combine_scales({0.5: low, 1.0: high, 2.0: top}, (2, 2)), 0.75 + 0.75 * p1, rtol=1e-6
  )
  # The weight of each scale: a_0.5 = 0.25, then (1 - 0.25) * a_1 = 0.675, the rest 0.075 for 2.0.
  from segjax.models.hmsa import scale_weights

  weights = scale_weights({"0.5": 0.25, "1.0": 0.9, "2.0": 1.0})
  assert weights == pytest.approx({"0.5": 0.25, "1.0": 0.675, "2.0": 0.075})
  same_size = {
    s: (jnp.full((1, 2, 2, 1), v), jnp.full((1, 2, 2, 1), a))
    for s, v, a in ((0.5, 3.0, 0.25), (1.0, 1.0, 0.9), (2.0, 5.0, 0.3))
  }
  np.testing.assert_allclose(
    combine_scales(same_size, (2, 2)), 0.25 * 3.0 + 0.675 * 1.0 + 0.075 * 5.0, rtol=1e-6
  )
  # And through the module: its output is combine_scales of the trunk's and the attention
  # head's outputs at each scale, recomputed here from the same weights.
  from segjax.models.common import resize
  from segjax.models.hmsa import AttentionHead

  hmsa = models.create(HMSA_SPEC, num_classes=3)
  image = jax.random.normal(jax.random.key(2), (1, 16, 16, 3))
  variables = _init(hmsa, image)
  trunk = models.create("unet", num_classes=3, features=4, depth=2)
  part = lambda name: {k: v[name] for k, v in variables.items()}
  per_scale = {}

  @jax.jit
  def scale_outputs(trunk_vars, head_vars, x):
    out = trunk.apply(trunk_vars, x, train=False)
    attention = AttentionHead(4).apply(head_vars, out["features"], False)
    return out["logits"], resize(attention, x.shape[1:3])

  for scale, size in ((0.5, (8, 8)), (1.0, (16, 16))):
    per_scale[scale] = scale_outputs(part("trunk"), part("attention"), resize(image, size))
  got = jax.jit(lambda v, x: hmsa.apply(v, x, train=False, scales=(0.5, 1.0)))(variables, image)
  np.testing.assert_allclose(
    got["logits"], combine_scales(per_scale, (16, 16)), rtol=1e-5, atol=1e-5
  )
  assert set(got["scale_logits"]) == {"0.5", "1.0"} and got["attention"]["0.5"].shape == (
    1,
    16,
    16,
    1,
  )
