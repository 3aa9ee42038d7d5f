"""DeepLabV3 (Chen et al. 2017) and DeepLabV3+ (Chen et al. 2018) on a dilated ResNet.

DeepLabV3 follows torchvision's ``deeplabv3_resnet50/101`` layout and module names (``backbone``,
``classifier/0/convs/...``, ``aux_classifier``), so torchvision's weights load by name:
``create("deeplabv3", num_classes=21, backbone="resnet50")`` has 39,638,869 parameters, 58,630,997
with ResNet-101, and 42,004,074 with the auxiliary FCN head on ``layer3`` (``aux_head=True``).
ASPP rates are (6, 12, 18) at output stride 16 and doubled at 8 (torchvision's 12/24/36 at 8).
DeepLabV3+ adds the decoder: ASPP output upsampled to the stride-4 ``layer1`` features (reduced to
48 channels), two 3x3 convolutions, then the classifier.
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from segjax import registry
from segjax.models.backbones import ResNet, depth_of
from segjax.models.common import ConvNormAct, Dtype, batch_norm, conv, resize


# torchvision's ``Sequential(conv, BatchNorm, ReLU)``: children named ``0`` and ``1``.
ConvBN = functools.partial(ConvNormAct, conv_name="0", norm_name="1")


class ASPP(nn.Module):
  """Atrous spatial pyramid pooling: 1x1, three dilated 3x3, image pooling; projected + dropout."""

  rates: Sequence[int]
  features: int = 256
  dropout: float = 0.5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    branches = [ConvBN(self.features, 1, dtype=self.dtype, name="convs_0")(x, train)]
    for i, rate in enumerate(self.rates):
      branches.append(
        ConvBN(self.features, 3, dilation=rate, dtype=self.dtype, name=f"convs_{i + 1}")(x, train)
      )
    pooled = jnp.mean(x, axis=(1, 2), keepdims=True)  # image pooling
    pooled = ConvBN(
      self.features,
      1,
      dtype=self.dtype,
      conv_name="1",
      norm_name="2",
      name=f"convs_{len(self.rates) + 1}",
    )(pooled, train)
    branches.append(jnp.broadcast_to(pooled, branches[0].shape))
    x = ConvBN(self.features, 1, dtype=self.dtype, name="project")(
      jnp.concatenate(branches, axis=-1), train
    )
    return nn.Dropout(self.dropout, deterministic=not train)(x)


def _aspp_rates(output_stride: int):
  return {8: (12, 24, 36), 16: (6, 12, 18), 32: (3, 6, 9)}[output_stride]


class DeepLabHead(nn.Module):
  """torchvision's ``DeepLabHead``: ASPP (``0``), 3x3 conv (``1``) + BN (``2``), classifier (``4``)."""

  num_classes: int
  rates: Sequence[int]
  features: int = 256
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = ASPP(self.rates, self.features, dtype=self.dtype, name="0")(x, train)
    x = conv(self.features, 3, dtype=self.dtype, name="1")(x)
    features = nn.relu(batch_norm(train, self.dtype, "2")(x))
    logits = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="4")(features)
    return logits, features


class FCNHead(nn.Module):
  """torchvision's auxiliary ``FCNHead``: 3x3 conv to in/4 channels, BN, ReLU, dropout 0.1, 1x1."""

  num_classes: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = conv(x.shape[-1] // 4, 3, dtype=self.dtype, name="0")(x)
    x = nn.relu(batch_norm(train, self.dtype, "1")(x))
    x = nn.Dropout(0.1, deterministic=not train)(x)
    return nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="4")(x)


@registry.register("model", "deeplabv3")
class DeepLabV3(nn.Module):
  """DeepLabV3: dilated ResNet + ASPP head; logits bilinearly upsampled to the input size.

  Returns ``logits``, ``features`` (the 256-channel map the classifier reads, for HMSA) and, with
  ``aux_head``, ``aux_logits`` from ``layer3`` (weight them by a loss term, e.g.
  ``config.losses = (("aux_logits", "semantic", "cross_entropy", 0.4),)``).
  """

  num_classes: int
  backbone: str = "resnet50"
  output_stride: int = 8
  multi_grid: Sequence[int] | None = None
  width: int = 64
  blocks: Sequence[int] | None = None  # four counts replacing the depth's blocks per stage
  aspp_features: int = 256
  aux_head: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, image, train: bool = False):
    feats = _backbone(self, image, train)
    logits, features = DeepLabHead(
      self.num_classes,
      _aspp_rates(self.output_stride),
      self.aspp_features,
      self.dtype,
      name="classifier",
    )(feats["layer4"], train)
    return _outputs(self, image, logits, features, feats, train)


@registry.register("model", "deeplabv3plus")
class DeepLabV3Plus(DeepLabV3):
  """DeepLabV3+: DeepLabV3's encoder (its fields; output stride 16 by default) and a decoder that
  refines the ASPP output with the stride-4 ``layer1`` features."""

  output_stride: int = 16
  low_level_features: int = 48
  decoder_features: int = 256

  @nn.compact
  def __call__(self, image, train: bool = False):
    feats = _backbone(self, image, train)
    x = ASPP(_aspp_rates(self.output_stride), self.aspp_features, dtype=self.dtype, name="aspp")(
      feats["layer4"], train
    )
    low = ConvBN(self.low_level_features, 1, dtype=self.dtype, name="low_level")(
      feats["layer1"], train
    )
    x = jnp.concatenate([resize(x, low.shape[1:3]), low], axis=-1)
    x = ConvBN(self.decoder_features, 3, dtype=self.dtype, name="decoder_0")(x, train)
    features = ConvBN(self.decoder_features, 3, dtype=self.dtype, name="decoder_1")(x, train)
    logits = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="head")(features)
    return _outputs(self, image, logits, features, feats, train)


def _backbone(model, image, train):
  """The dilated ResNet trunk of a DeepLab ``model`` (created inside its compact ``__call__``)."""
  return ResNet(
    depth_of(model.backbone),
    model.output_stride,
    model.multi_grid,
    model.width,
    model.dtype,
    model.blocks,
    name="backbone",
  )(image, train)


def _outputs(model, image, logits, features, feats, train):
  """Logits at input size, the classifier's features and, with ``aux_head``, the FCN head's."""
  size = image.shape[1:3]
  out = {"logits": resize(logits, size).astype(jnp.float32), "features": features}
  if model.aux_head:
    aux = FCNHead(model.num_classes, model.dtype, name="aux_classifier")(feats["layer3"], train)
    out["aux_logits"] = resize(aux, size).astype(jnp.float32)
  return out
