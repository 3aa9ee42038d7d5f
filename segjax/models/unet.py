"""UNet (Ronneberger, Fischer, Brox 2015) with same padding and BatchNorm."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from segjax import registry
from segjax.models.common import ConvNormAct, Dtype, UpConv2x, max_pool_2x2, pad_to_shape


class DoubleConv(nn.Module):
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = ConvNormAct(self.features, dtype=self.dtype)(x, train)
    return ConvNormAct(self.features, dtype=self.dtype)(x, train)


@registry.register("model", "unet")
class UNet(nn.Module):
  """UNet: ``depth`` 2x2 max-pool downsamplings, widths ``features * 2**level``.

  Each level holds two bias-free 3x3 conv + BN + ReLU; the decoder upsamples with a 2x2 stride-2
  transposed convolution (``UpConv2x``) that halves the channels, zero-pads to the skip
  connection's size (so any input size works, odd ones included), concatenates and applies two
  convs; a 1x1 conv gives logits.
  With ``features=64, depth=4, num_classes=2`` and RGB input this is the widely used PyTorch
  re-implementation (milesial/Pytorch-UNet, ``bilinear=False``): 31,037,698 parameters.
  """

  num_classes: int
  features: int = 64
  depth: int = 4
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, image, train: bool = False):
    x = image.astype(self.dtype)
    skips = []
    for level in range(self.depth):
      x = DoubleConv(self.features * 2**level, self.dtype, name=f"down{level}")(x, train)
      skips.append(x)
      x = max_pool_2x2(x)
    x = DoubleConv(self.features * 2**self.depth, self.dtype, name="bottleneck")(x, train)
    for level in reversed(range(self.depth)):
      width = self.features * 2**level
      x = UpConv2x(width, self.dtype, name=f"upsample{level}")(x)
      skip = skips[level]
      x = pad_to_shape(x, skip.shape[1:3])
      x = jnp.concatenate([skip, x], axis=-1)
      x = DoubleConv(width, self.dtype, name=f"up{level}")(x, train)
    logits = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="head")(x)
    return {"logits": logits.astype(jnp.float32), "features": x}
