"""SegNet (Badrinarayanan, Kendall, Cipolla 2017): VGG16-BN encoder, mirrored decoder that upsamples
with max-unpooling by the encoder's pooling indices."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax import registry
from segjax.models.common import ConvNormAct, Dtype, conv

# VGG16's 13 convolutions as (stage widths relative to `width`, convs per stage).
VGG16_STAGES = ((1, 2), (2, 2), (4, 3), (8, 3), (8, 3))


def max_pool_with_indices(x):
  """2x2 stride-2 max-pool of ``[B,H,W,C]`` (H, W floored to even) and, per output, which of the 4
  window positions (0..3, row-major) held the maximum — the first one on ties."""
  b, h, w, c = x.shape
  h2, w2 = h // 2, w // 2
  windows = x[:, : h2 * 2, : w2 * 2].reshape(b, h2, 2, w2, 2, c).transpose(0, 1, 3, 5, 2, 4)
  windows = windows.reshape(b, h2, w2, c, 4)
  index = jnp.argmax(windows, axis=-1)
  return jnp.max(windows, axis=-1), index


def max_unpool(x, index, shape):
  """Inverse of `max_pool_with_indices`: each value goes back to the position its maximum came
  from, zeros elsewhere; ``shape`` = (H, W) of the map before pooling (an odd last row/column is 0)."""
  b, h2, w2, c = x.shape
  one_hot = jax.nn.one_hot(index, 4, dtype=x.dtype) * x[..., None]  # [B,h2,w2,C,4]
  out = (
    one_hot.reshape(b, h2, w2, c, 2, 2).transpose(0, 1, 4, 2, 5, 3).reshape(b, h2 * 2, w2 * 2, c)
  )
  return jnp.pad(out, ((0, 0), (0, shape[0] - h2 * 2), (0, shape[1] - w2 * 2), (0, 0)))


@registry.register("model", "segnet")
class SegNet(nn.Module):
  """SegNet with a VGG16-BN encoder (``width=64``: the 13 convolutions hold 14,723,136 parameters,
  biases and BN included as in torchvision's ``vgg16_bn``) and a mirrored decoder whose last
  convolution gives the logits (29,455,125 parameters for 21 classes).

  ``num_stages`` < 5 keeps only the first VGG stages (and their mirrors): on small images the
  decoder then starts from a map that still resolves the scene. Convolutions carry biases, as VGG's. Any input size works: a stage whose input has an odd size
  pools the even part and unpools back to the odd size (the last row/column gets zeros and is then
  filled by the following convolutions).
  """

  num_classes: int
  width: int = 64
  num_stages: int = 5  # fewer for small images: 5 poolings leave 2x2 of a 64x64 input
  dtype: Dtype = jnp.float32

  def _block(self, features, name):
    return ConvNormAct(
      features, 3, use_bias=True, dtype=self.dtype, conv_name="conv", norm_name="bn", name=name
    )

  @nn.compact
  def __call__(self, image, train: bool = False):
    x = image.astype(self.dtype)
    if not 1 <= self.num_stages <= len(VGG16_STAGES):
      raise ValueError(f"num_stages must be in 1..{len(VGG16_STAGES)}, not {self.num_stages}")
    stages = VGG16_STAGES[: self.num_stages]
    pooled = []
    for s, (mult, convs) in enumerate(stages):
      for i in range(convs):
        x = self._block(self.width * mult, f"encoder{s}_{i}")(x, train)
      shape = x.shape[1:3]
      x, index = max_pool_with_indices(x)
      pooled.append((index, shape))
    for s in reversed(range(len(stages))):
      index, shape = pooled[s]
      x = max_unpool(x, index, shape)
      mult, convs = stages[s]
      out_mult = stages[s - 1][0] if s > 0 else None
      for i in range(convs):
        last = i == convs - 1
        if last and s == 0:
          features = x
          x = conv(self.num_classes, 3, use_bias=True, dtype=self.dtype, name=f"decoder{s}_{i}")(x)
        else:
          x = self._block(self.width * (out_mult if last else mult), f"decoder{s}_{i}")(x, train)
    return {"logits": x.astype(jnp.float32), "features": features}
