"""Building blocks shared by the segmentation models."""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


def conv(
  features, kernel, *, strides=1, dilation=1, dtype=jnp.float32, name=None, use_bias=False, groups=1
):
  """A convolution padded like PyTorch's ``padding=dilation*(kernel-1)//2`` (symmetric; for odd
  kernels at stride 1 the same as "SAME")."""
  pad = dilation * (kernel - 1) // 2
  return nn.Conv(
    features,
    (kernel, kernel),
    strides=strides,
    kernel_dilation=dilation,
    padding=((pad, pad), (pad, pad)),
    use_bias=use_bias,
    dtype=dtype,
    name=name,
    feature_group_count=groups,
  )


def batch_norm(train, dtype, name=None, epsilon=1e-5):
  """BatchNorm with PyTorch's defaults (momentum 0.1 there = 0.9 here, eps 1e-5); statistics in
  float32 even for bfloat16 activations."""
  return nn.BatchNorm(
    use_running_average=not train, momentum=0.9, epsilon=epsilon, dtype=dtype, name=name
  )


class ConvNormAct(nn.Module):
  """Convolution, BatchNorm, ReLU: the unit the segmentation networks are built from, in the
  layouts they mirror through ``conv_name``/``norm_name`` (None: Flax's ``Conv_0`` and
  ``BatchNorm_0``; torchvision's ``Sequential`` children ``"0"`` and ``"1"``), ``use_bias``
  (VGG's convolutions carry one), ``separable`` (deeplab2: a depthwise ``kernel_size`` convolution
  named ``depthwise`` before the 1x1 one) and ``epsilon`` (1e-5: PyTorch's and Flax's)."""

  features: int
  kernel_size: int = 3
  strides: int = 1
  dilation: int = 1
  use_bias: bool = False
  separable: bool = False
  epsilon: float = 1e-5
  dtype: Dtype = jnp.float32
  conv_name: str | None = None
  norm_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool):
    kernel = self.kernel_size
    if self.separable:
      x = conv(
        x.shape[-1],
        kernel,
        strides=self.strides,
        dilation=self.dilation,
        dtype=self.dtype,
        groups=x.shape[-1],
        name="depthwise",
      )(x)
      kernel = 1
    x = conv(
      self.features,
      kernel,
      strides=1 if self.separable else self.strides,
      dilation=1 if self.separable else self.dilation,
      use_bias=self.use_bias,
      dtype=self.dtype,
      name=self.conv_name,
    )(x)
    return nn.relu(batch_norm(train, self.dtype, self.norm_name, self.epsilon)(x))


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 stride-2 max-pool of ``[B,H,W,C]`` (an odd last row/column is dropped, as with VALID).

  Equal to ``nn.max_pool(x, (2, 2), strides=(2, 2))``; as a reshape and a max its gradient is an
  element-wise select instead of XLA's select-and-scatter, which ran 4-7x slower on CPU.
  """
  b, h, w, c = x.shape
  return x[:, : h // 2 * 2, : w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class UpConv2x(nn.Module):
  """2x2 transposed convolution with stride 2: each input pixel becomes its own 2x2 output block.

  The blocks do not overlap, so this is one matrix product per pixel followed by depth-to-space.
  Written so, XLA compiles a dot instead of an input-dilated convolution, whose kernel gradient
  XLA:CPU ran 20-45x slower (README, "Speed"). Parameters (``kernel`` [2, 2, in, out] with
  ``lecun_normal`` init, ``bias`` zeros) and outputs equal those of
  ``nn.ConvTranspose(features, (2, 2), strides=(2, 2))``, which applies its kernel flipped.
  """

  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param(
      "kernel", nn.initializers.lecun_normal(), (2, 2, x.shape[-1], self.features)
    )
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    batch, height, width, _ = x.shape
    blocks = jnp.einsum("bhwc,ijco->bhiwjo", x, kernel[::-1, ::-1])
    return blocks.reshape(batch, 2 * height, 2 * width, self.features) + bias


def resize(x: jax.Array, shape: Sequence[int], method: str = "bilinear") -> jax.Array:
  """Resizes the spatial dims of a channels-last batch ``[B,H,W,C]`` to ``shape`` = (H', W')."""
  out_shape = (x.shape[0], *shape, x.shape[-1])
  if tuple(x.shape) == out_shape:
    return x
  return jax.image.resize(x, out_shape, method=method).astype(x.dtype)


def pad_to_shape(x: jax.Array, shape: Sequence[int]) -> jax.Array:
  """Zero-pads ``[B,H,W,C]`` at the bottom/right up to spatial ``shape`` (H', W') >= (H, W)."""
  dh, dw = shape[0] - x.shape[1], shape[1] - x.shape[2]
  if dh == 0 and dw == 0:
    return x
  return jnp.pad(x, ((0, 0), (dh // 2, dh - dh // 2), (dw // 2, dw - dw // 2), (0, 0)))


def count_params(params) -> int:
  """Number of scalars in a parameter tree."""
  return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))
