"""ResNet-18/34/50/101 backbones (He et al. 2016) with dilation for output stride 8/16/32.

The layout is torchvision's (v1.5: the stride sits on the 3x3 convolution of a bottleneck; explicit
symmetric padding), and so are the module names (``conv1``, ``bn1``, ``layer3/0/downsample/0``, ...),
so that ``segjax.models.pretrained`` maps a torchvision state dict onto the parameters by name.
ResNet-50 without its classifier has 23,508,032 parameters, as torchvision's.

Output stride 16 replaces the stride of ``layer4`` by dilation 2, output stride 8 that of ``layer3``
and ``layer4`` by dilations 2 and 4 (torchvision's ``replace_stride_with_dilation``: the first block
of a dilated layer keeps the previous dilation). ``multi_grid`` (DeepLabV3, e.g. ``(1, 2, 4)``)
multiplies the dilation of the blocks of ``layer4`` instead.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from segjax import registry
from segjax.models.common import Dtype, batch_norm, conv

# depth -> (block kind, blocks per layer)
DEPTHS = {
  18: ("basic", (2, 2, 2, 2)),
  34: ("basic", (3, 4, 6, 3)),
  50: ("bottleneck", (3, 4, 6, 3)),
  101: ("bottleneck", (3, 4, 23, 3)),
}


def depth_of(backbone: str | int) -> int:
  """The depth a backbone name says: ``"resnet50"`` (or ``50``) → 50."""
  depth = (
    backbone[len("resnet") :]
    if isinstance(backbone, str) and backbone.startswith("resnet")
    else backbone
  )
  try:
    depth = int(depth)
  except (TypeError, ValueError):
    depth = None
  if depth not in DEPTHS:
    raise ValueError(
      f"unknown ResNet {backbone!r}; known: {', '.join(f'resnet{d}' for d in DEPTHS)}"
    )
  return depth


class _Block(nn.Module):
  """A residual block of torchvision's layout: ``features`` of its 3x3 convolution, the stride
  and dilation of that convolution, a ``downsample`` shortcut (1x1 convolution + BatchNorm)."""

  features: int
  strides: int = 1
  dilation: int = 1
  downsample: bool = False
  dtype: Dtype = jnp.float32


class BasicBlock(_Block):
  expansion = 1

  @nn.compact
  def __call__(self, x, train: bool):
    identity = x
    y = conv(
      self.features, 3, strides=self.strides, dilation=self.dilation, dtype=self.dtype, name="conv1"
    )(x)
    y = nn.relu(batch_norm(train, self.dtype, "bn1")(y))
    y = conv(self.features, 3, dilation=self.dilation, dtype=self.dtype, name="conv2")(y)
    y = batch_norm(train, self.dtype, "bn2")(y)
    if self.downsample:
      identity = Downsample(self.features, self.strides, self.dtype, name="downsample")(x, train)
    return nn.relu(y + identity)


class Bottleneck(_Block):
  expansion = 4

  @nn.compact
  def __call__(self, x, train: bool):
    identity = x
    y = conv(self.features, 1, dtype=self.dtype, name="conv1")(x)
    y = nn.relu(batch_norm(train, self.dtype, "bn1")(y))
    y = conv(
      self.features, 3, strides=self.strides, dilation=self.dilation, dtype=self.dtype, name="conv2"
    )(y)
    y = nn.relu(batch_norm(train, self.dtype, "bn2")(y))
    y = conv(self.features * 4, 1, dtype=self.dtype, name="conv3")(y)
    y = batch_norm(train, self.dtype, "bn3")(y)
    if self.downsample:
      identity = Downsample(self.features * 4, self.strides, self.dtype, name="downsample")(
        x, train
      )
    return nn.relu(y + identity)


class Downsample(nn.Module):
  """torchvision's ``Sequential(conv1x1(stride), BatchNorm)`` on the shortcut."""

  features: int
  strides: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = conv(self.features, 1, strides=self.strides, dtype=self.dtype, name="0")(x)
    return batch_norm(train, self.dtype, "1")(x)


class _Repeated(nn.Module):
  """One block as the body of `nn.scan` (carry in, carry out)."""

  kind: str
  features: int
  dilation: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    block = BasicBlock if self.kind == "basic" else Bottleneck
    return block(self.features, dilation=self.dilation, dtype=self.dtype, name="block")(
      x, train
    ), None


class Layer(nn.Module):
  """One ResNet stage: block ``0`` (stride, shortcut projection; a dilated stage's first block
  keeps the previous dilation, as in torchvision), then the stage's identical blocks as one
  `nn.scan` named ``blocks`` whose parameters are stacked along a leading axis (``layer3/blocks``
  holds torchvision's ``layer3.1`` … ``layer3.22`` of ResNet-101). Compiled once instead of once
  per block, a ResNet-101 compiles about 4x faster (XLA on CPU and TPU). With ``multi_grid``
  the blocks differ in dilation and are named ``1``, ``2``, ... instead."""

  kind: str
  features: int
  blocks: int
  strides: int
  dilation: int
  first_dilation: int
  in_features: int
  multi_grid: Sequence[int] | None = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    block = BasicBlock if self.kind == "basic" else Bottleneck
    grid = lambda i: self.dilation * self.multi_grid[i % len(self.multi_grid)]
    first = grid(0) if self.multi_grid is not None else self.first_dilation
    downsample = self.strides != 1 or self.in_features != self.features * block.expansion
    x = block(
      self.features,
      strides=self.strides,
      dilation=first,
      downsample=downsample,
      dtype=self.dtype,
      name="0",
    )(x, train)
    dilations = [
      grid(i) if self.multi_grid is not None else self.dilation for i in range(1, self.blocks)
    ]
    if len(set(dilations)) == 1:
      repeat = nn.scan(
        _Repeated,
        variable_axes={"params": 0, "batch_stats": 0},
        split_rngs={"params": True},
        in_axes=nn.broadcast,
        length=len(dilations),
      )
      x, _ = repeat(self.kind, self.features, dilations[0], self.dtype, name="blocks")(x, train)
    else:
      for i, dilation in enumerate(dilations, start=1):
        x = block(self.features, dilation=dilation, dtype=self.dtype, name=str(i))(x, train)
    return x


class ResNet(nn.Module):
  """A ResNet trunk returning ``{"stem", "layer1", ..., "layer4"}`` features (strides 4 to 32 or
  less with dilation) — no classifier. ``width`` scales every stage (64 = the paper's);
  ``blocks`` (four counts) replaces the depth's blocks per stage (small test models)."""

  depth: int = 50
  output_stride: int = 32
  multi_grid: Sequence[int] | None = None
  width: int = 64
  dtype: Dtype = jnp.float32
  blocks: Sequence[int] | None = None

  @nn.compact
  def __call__(self, image, train: bool = False):
    if self.depth not in DEPTHS:
      raise ValueError(f"unknown ResNet depth {self.depth!r}; known: {sorted(DEPTHS)}")
    if self.output_stride not in (8, 16, 32):
      raise ValueError(f"output_stride must be 8, 16 or 32, not {self.output_stride}")
    kind, blocks = DEPTHS[self.depth]
    if self.blocks is not None:
      if len(self.blocks) != 4 or min(self.blocks) < 1:
        raise ValueError(f"blocks must be four counts >= 1, not {self.blocks}")
      blocks = tuple(self.blocks)
    expansion = 1 if kind == "basic" else 4
    dilate = {8: (False, True, True), 16: (False, False, True), 32: (False, False, False)}[
      self.output_stride
    ]
    x = image.astype(self.dtype)
    x = conv(self.width, 7, strides=2, dtype=self.dtype, name="conv1")(x)
    x = nn.relu(batch_norm(train, self.dtype, "bn1")(x))
    features = {"stem": x}
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    in_features, dilation = self.width, 1
    for stage in range(4):
      strides = 1 if stage == 0 else 2
      first_dilation = dilation
      if stage > 0 and dilate[stage - 1]:
        dilation, strides = dilation * strides, 1
      x = Layer(
        kind,
        self.width * 2**stage,
        blocks[stage],
        strides,
        dilation,
        first_dilation,
        in_features,
        self.multi_grid if stage == 3 else None,
        self.dtype,
        name=f"layer{stage + 1}",
      )(x, train)
      in_features = self.width * 2**stage * expansion
      features[f"layer{stage + 1}"] = x
    return features


for _depth in DEPTHS:
  registry.register("model", f"resnet{_depth}")(
    lambda depth=_depth, num_classes=None, **kwargs: ResNet(depth=depth, **kwargs)
  )
