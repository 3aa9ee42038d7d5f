"""Panoptic-DeepLab (Cheng et al. 2020): semantic, instance-centre and centre-offset heads on a
segmentation trunk.

`PanopticDeepLabResNet` is the published architecture: a shared ResNet backbone with two
decoders (semantic and instance). `PanopticDeepLab` puts the heads on any registered trunk that
returns ``logits`` and ``features`` (e.g. a UNet for small images); with ``dual_decoder`` the
instance branch runs on a second trunk of its own, else on the semantic trunk's features. The
model returns raw heads; grouping them into panoptic ids is the ``panoptic_deeplab``
post-processor (`segjax.postprocess`), whose thresholds live in ``config.postprocess``.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from segjax import registry
from segjax.models.backbones import ResNet, depth_of
from segjax.models.common import ConvNormAct, Dtype, resize
from segjax.models.deeplab import ASPP, ConvBN


class PredictionHead(nn.Module):
  """A 5×5 convolution to ``features`` channels (deeplab2's heads: depthwise-separable; the heads
  beside another trunk: a plain one), BatchNorm, ReLU, then a 1×1 convolution to ``out``."""

  features: int
  out: int
  dtype: Dtype = jnp.float32
  separable: bool = True

  @nn.compact
  def __call__(self, x, train: bool):
    x = ConvNormAct(
      self.features,
      5,
      separable=self.separable,
      dtype=self.dtype,
      conv_name="pointwise" if self.separable else None,
      name="conv",
    )(x, train)
    return nn.Conv(self.out, (1, 1), dtype=self.dtype, name="predict")(x).astype(jnp.float32)


class PanopticDeepLab(nn.Module):
  """Panoptic-DeepLab heads on ``trunk`` (and ``instance_trunk`` with a dual decoder).

  Returns ``logits`` (semantic), ``features``, ``center`` ``[B,H,W]`` (the instance-centre
  heatmap) and ``offset`` ``[B,H,W,2]`` ((dy, dx) from each pixel to its centre, in pixels), all at
  input resolution.
  """

  trunk: nn.Module
  instance_trunk: nn.Module | None = None
  head_features: int = 32
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, image, train: bool = False):
    size = image.shape[1:3]
    out = self.trunk(image, train=train)
    features = out["features"]
    if self.instance_trunk is not None:
      features = self.instance_trunk(image, train=train)["features"]
    center = PredictionHead(self.head_features, 1, self.dtype, separable=False, name="center_head")(
      features, train
    )
    offset = PredictionHead(self.head_features, 2, self.dtype, separable=False, name="offset_head")(
      features, train
    )
    return {
      "logits": out["logits"],
      "features": out["features"],
      "center": resize(center, size)[..., 0],
      "offset": resize(offset, size),
    }


class PanopticDecoder(nn.Module):
  """ASPP on the stride-32/16 features, then two fusions with projected stride-8 and stride-4
  features (upsample, concatenate, 5×5 separable convolution): one branch of the paper's dual
  decoder."""

  aspp_rates: Sequence[int]
  aspp_features: int = 256
  features: int = 256
  low_level: Sequence[tuple[str, int]] = (("layer2", 64), ("layer1", 32))
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, feats, train: bool):
    x = ASPP(self.aspp_rates, self.aspp_features, dropout=0.0, dtype=self.dtype, name="aspp")(
      feats["layer4"], train
    )
    for i, (key, channels) in enumerate(self.low_level):
      low = ConvBN(channels, 1, dtype=self.dtype, name=f"project_{i}")(feats[key], train)
      x = jnp.concatenate([resize(x, low.shape[1:3]), low], axis=-1)
      x = ConvNormAct(
        self.features, 5, separable=True, dtype=self.dtype, conv_name="pointwise", name=f"fuse_{i}"
      )(x, train)
    return x


class PanopticDeepLabResNet(nn.Module):
  """Panoptic-DeepLab as published (Cheng et al. 2020; deeplab2's configuration): one shared
  ResNet backbone, a semantic decoder (ASPP 256, fusions with the stride-8/4 features projected to
  64/32 channels, 256 channels) and an instance decoder (128 channels, projections 32/16), a
  semantic head (256) and centre/offset heads (32 each). ASPP rates (3, 6, 9) at output stride
  32, (6, 12, 18) at 16. Returns ``logits``, ``features``, ``center``, ``offset`` at input size."""

  num_classes: int
  backbone: str = "resnet50"
  output_stride: int = 32
  width: int = 64
  blocks: Sequence[int] | None = None  # four counts replacing the depth's blocks per stage
  aspp_features: int = 256
  semantic_features: int = 256
  instance_features: int = 128
  semantic_head_features: int = 256
  instance_head_features: int = 32
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, image, train: bool = False):
    size = image.shape[1:3]
    feats = ResNet(
      depth_of(self.backbone),
      self.output_stride,
      None,
      self.width,
      self.dtype,
      self.blocks,
      name="backbone",
    )(image, train)
    rates = {32: (3, 6, 9), 16: (6, 12, 18), 8: (12, 24, 36)}[self.output_stride]
    semantic = PanopticDecoder(
      rates,
      self.aspp_features,
      self.semantic_features,
      (("layer2", 64), ("layer1", 32)),
      self.dtype,
      name="semantic_decoder",
    )(feats, train)
    instance = PanopticDecoder(
      rates,
      self.aspp_features,
      self.instance_features,
      (("layer2", 32), ("layer1", 16)),
      self.dtype,
      name="instance_decoder",
    )(feats, train)
    logits = PredictionHead(
      self.semantic_head_features, self.num_classes, self.dtype, name="semantic_head"
    )(semantic, train)
    center = PredictionHead(self.instance_head_features, 1, self.dtype, name="center_head")(
      instance, train
    )
    offset = PredictionHead(self.instance_head_features, 2, self.dtype, name="offset_head")(
      instance, train
    )
    return {
      "logits": resize(logits, size),
      "features": semantic,
      "center": resize(center, size)[..., 0],
      "offset": resize(offset, size),
    }


@registry.register("model", "panoptic_deeplab")
def _panoptic_deeplab(
  num_classes: int,
  trunk: str | None = None,
  trunk_kwargs: dict | None = None,
  dual_decoder: bool = False,
  dtype=jnp.float32,
  **kwargs,
) -> nn.Module:
  """The published Panoptic-DeepLab (`PanopticDeepLabResNet`: ``backbone="resnet50"``,
  ``output_stride``, ...) or, with ``trunk``, its heads on the registered model ``trunk`` (a
  second trunk with ``dual_decoder``)."""
  if trunk is None:
    return PanopticDeepLabResNet(num_classes=num_classes, dtype=dtype, **kwargs)
  make = registry.lookup(
    "model", trunk, num_classes=num_classes, dtype=dtype, **(trunk_kwargs or {})
  )
  return PanopticDeepLab(
    trunk=make(), instance_trunk=make() if dual_decoder else None, dtype=dtype, **kwargs
  )
