"""SegFormer (Xie et al. 2021): a Mix Transformer encoder and an all-MLP decoder.

Module names follow Hugging Face transformers' ``SegformerForSemanticSegmentation``, so that its
checkpoints map onto the variables by name (`segjax.models.segformer_weights`,
`segjax.models.from_transformers`): a Flax path ``("params", "segformer", "encoder", "block_2_0", "attention", "self", "query", "kernel")`` is
the key ``segformer.encoder.block.2.0.attention.self.query.weight``.

Encoder (MiT): four stages, each an overlapping patch embedding (a strided convolution, kernel 7
then 3, with LayerNorm) and blocks of efficient self-attention (keys and values from the map
reduced by a ``sr_ratio``-strided convolution + LayerNorm) and a Mix-FFN (Linear, 3x3 depthwise
convolution, GELU, Linear), pre-norm residuals with stochastic depth, and a final LayerNorm.
Decoder: each stage projected to ``decoder_hidden_size`` by a Linear, upsampled to 1/4 of the
input, concatenated (deepest first), fused by a 1x1 convolution + BatchNorm + ReLU, classified by a
1x1 convolution; segjax upsamples those stride-4 logits to the input size (``logits``) and keeps
them as ``logits_4x`` (what transformers returns).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax import registry
from segjax.models.common import Dtype, resize

# Hidden sizes, depths and decoder width of MiT-B0..B5 (the paper's Table 6 and transformers'
# configs); every variant has patch sizes (7, 3, 3, 3), strides (4, 2, 2, 2), heads (1, 2, 5, 8),
# reduction ratios (8, 4, 2, 1) and MLP ratio 4.
VARIANTS = {
  "b0": dict(hidden_sizes=(32, 64, 160, 256), depths=(2, 2, 2, 2), decoder_hidden_size=256),
  "b1": dict(hidden_sizes=(64, 128, 320, 512), depths=(2, 2, 2, 2), decoder_hidden_size=256),
  "b2": dict(hidden_sizes=(64, 128, 320, 512), depths=(3, 4, 6, 3), decoder_hidden_size=768),
  "b3": dict(hidden_sizes=(64, 128, 320, 512), depths=(3, 4, 18, 3), decoder_hidden_size=768),
  "b4": dict(hidden_sizes=(64, 128, 320, 512), depths=(3, 8, 27, 3), decoder_hidden_size=768),
  "b5": dict(hidden_sizes=(64, 128, 320, 512), depths=(3, 6, 40, 3), decoder_hidden_size=768),
}
# transformers' SegFormer keeps PyTorch's LayerNorm epsilon everywhere.
TORCH_LAYER_NORM_EPS = 1e-5


def _layer_norm(name, dtype, epsilon=TORCH_LAYER_NORM_EPS):
  return nn.LayerNorm(epsilon=epsilon, dtype=dtype, name=name)


def _gelu(x):
  return jax.nn.gelu(x, approximate=False)  # torch's default GELU (erf)


class EfficientSelfAttention(nn.Module):
  """Multi-head attention whose keys and values come from the map reduced ``sr_ratio`` times."""

  hidden_size: int
  num_heads: int
  sr_ratio: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, height: int, width: int):
    batch, length, channels = x.shape
    head = channels // self.num_heads
    dense = lambda name: nn.Dense(self.hidden_size, dtype=self.dtype, name=name)
    split = lambda t: t.reshape(batch, -1, self.num_heads, head)
    query = split(dense("query")(x))
    context = x
    if self.sr_ratio > 1:
      grid = x.reshape(batch, height, width, channels)
      grid = nn.Conv(
        channels,
        (self.sr_ratio, self.sr_ratio),
        strides=self.sr_ratio,
        padding="VALID",
        dtype=self.dtype,
        name="sr",
      )(grid)
      context = _layer_norm("layer_norm", self.dtype)(grid.reshape(batch, -1, channels))
    key, value = split(dense("key")(context)), split(dense("value")(context))
    scores = jnp.einsum("bqhd,bkhd->bhqk", query, key) / jnp.sqrt(head).astype(self.dtype)
    weights = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(self.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, value).reshape(batch, length, channels)


class Attention(nn.Module):
  hidden_size: int
  num_heads: int
  sr_ratio: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, height, width):
    x = EfficientSelfAttention(
      self.hidden_size, self.num_heads, self.sr_ratio, self.dtype, name="self"
    )(x, height, width)
    return Output(self.hidden_size, self.dtype, name="output")(x)


class Output(nn.Module):
  hidden_size: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    return nn.Dense(self.hidden_size, dtype=self.dtype, name="dense")(x)


class DepthwiseConv(nn.Module):
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, height, width):
    batch, _, channels = x.shape
    grid = x.reshape(batch, height, width, channels)
    grid = nn.Conv(
      channels, (3, 3), padding=1, feature_group_count=channels, dtype=self.dtype, name="dwconv"
    )(grid)
    return grid.reshape(batch, height * width, channels)


class MixFFN(nn.Module):
  hidden_size: int
  mlp_ratio: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, height, width):
    x = nn.Dense(self.hidden_size * self.mlp_ratio, dtype=self.dtype, name="dense1")(x)
    x = _gelu(DepthwiseConv(self.dtype, name="dwconv")(x, height, width))
    return nn.Dense(self.hidden_size, dtype=self.dtype, name="dense2")(x)


class Layer(nn.Module):
  """Pre-norm attention and Mix-FFN, each a residual with stochastic depth ``drop_path``."""

  hidden_size: int
  num_heads: int
  sr_ratio: int
  mlp_ratio: int
  drop_path: float
  dtype: Dtype = jnp.float32

  def _drop(self, x, train):
    if not train or self.drop_path == 0.0:
      return x
    keep = 1.0 - self.drop_path
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0], 1, 1))
    return jnp.where(mask, x / keep, 0).astype(x.dtype)

  @nn.compact
  def __call__(self, x, height, width, train):
    y = _layer_norm("layer_norm_1", self.dtype)(x)
    x = x + self._drop(
      Attention(self.hidden_size, self.num_heads, self.sr_ratio, self.dtype, name="attention")(
        y, height, width
      ),
      train,
    )
    y = _layer_norm("layer_norm_2", self.dtype)(x)
    return x + self._drop(
      MixFFN(self.hidden_size, self.mlp_ratio, self.dtype, name="mlp")(y, height, width), train
    )


class PatchEmbedding(nn.Module):
  hidden_size: int
  patch_size: int
  stride: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    pad = self.patch_size // 2
    x = nn.Conv(
      self.hidden_size,
      (self.patch_size,) * 2,
      strides=self.stride,
      padding=((pad, pad), (pad, pad)),
      dtype=self.dtype,
      name="proj",
    )(x)
    batch, height, width, channels = x.shape
    x = _layer_norm("layer_norm", self.dtype)(x.reshape(batch, height * width, channels))
    return x, height, width


class MixTransformer(nn.Module):
  """The MiT encoder: feature maps ``[B,H/s,W/s,C_i]`` at strides 4, 8, 16, 32."""

  hidden_sizes: Sequence[int] = (32, 64, 160, 256)
  depths: Sequence[int] = (2, 2, 2, 2)
  num_heads: Sequence[int] = (1, 2, 5, 8)
  sr_ratios: Sequence[int] = (8, 4, 2, 1)
  patch_sizes: Sequence[int] = (7, 3, 3, 3)
  strides: Sequence[int] = (4, 2, 2, 2)
  mlp_ratio: int = 4
  drop_path_rate: float = 0.1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    total = sum(self.depths)  # stochastic depth rising linearly over the blocks, as the paper's
    rates = [self.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
    features, index = [], 0
    for stage, (size, depth) in enumerate(zip(self.hidden_sizes, self.depths)):
      x, height, width = PatchEmbedding(
        size,
        self.patch_sizes[stage],
        self.strides[stage],
        self.dtype,
        name=f"patch_embeddings_{stage}",
      )(x)
      for j in range(depth):
        x = Layer(
          size,
          self.num_heads[stage],
          self.sr_ratios[stage],
          self.mlp_ratio,
          rates[index],
          self.dtype,
          name=f"block_{stage}_{j}",
        )(x, height, width, train)
        index += 1
      x = _layer_norm(f"stage_norm_{stage}", self.dtype)(x)
      x = x.reshape(x.shape[0], height, width, size)
      features.append(x)
    return features


class DecodeHead(nn.Module):
  """The all-MLP decoder: logits at stride 4."""

  num_classes: int
  decoder_hidden_size: int = 256
  dropout: float = 0.1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features, train: bool = False):
    size = features[0].shape[1:3]
    projected = []
    for i, x in enumerate(features):
      x = nn.Dense(self.decoder_hidden_size, dtype=self.dtype, name=f"linear_c_{i}_proj")(x)
      projected.append(resize(x, size))
    x = jnp.concatenate(projected[::-1], axis=-1)
    x = nn.Conv(
      self.decoder_hidden_size, (1, 1), use_bias=False, dtype=self.dtype, name="linear_fuse"
    )(x)
    x = nn.BatchNorm(
      use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype, name="batch_norm"
    )(x)
    x = nn.Dropout(self.dropout, deterministic=not train)(nn.relu(x))
    return nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="classifier")(x), x


@registry.register("model", "segformer")
class SegFormer(nn.Module):
  """SegFormer ``variant`` ``"b0"``..``"b5"`` (`VARIANTS`); ``hidden_sizes``, ``depths`` and
  ``decoder_hidden_size`` override it (small test models)."""

  num_classes: int
  variant: str = "b0"
  hidden_sizes: Sequence[int] | None = None
  depths: Sequence[int] | None = None
  decoder_hidden_size: int | None = None
  num_heads: Sequence[int] = (1, 2, 5, 8)
  sr_ratios: Sequence[int] = (8, 4, 2, 1)
  drop_path_rate: float = 0.1
  dtype: Dtype = jnp.float32
  # config.model.pretrained: a transformers checkpoint (nvidia/mit-b0 ...) for the encoder
  pretrained_subtree = "segformer"
  pretrained_format = "transformers"

  @nn.compact
  def __call__(self, image, train: bool = False):
    if self.variant not in VARIANTS:
      raise ValueError(f"segformer variant {self.variant!r}; known: {sorted(VARIANTS)}")
    spec = VARIANTS[self.variant]
    hidden = tuple(self.hidden_sizes or spec["hidden_sizes"])
    bad = [(h, n) for h, n in zip(hidden, self.num_heads) if h % n]
    if bad:
      raise ValueError(
        f"segformer: hidden sizes {hidden} are not multiples of the attention "
        f"heads {tuple(self.num_heads)}"
      )
    encoder = dict(
      hidden_sizes=hidden,
      depths=tuple(self.depths or spec["depths"]),
      num_heads=tuple(self.num_heads),
      sr_ratios=tuple(self.sr_ratios),
      drop_path_rate=self.drop_path_rate,
      dtype=self.dtype,
    )
    features = _Segformer(encoder, name="segformer")(image.astype(self.dtype), train)
    logits, fused = DecodeHead(
      self.num_classes,
      self.decoder_hidden_size or spec["decoder_hidden_size"],
      dtype=self.dtype,
      name="decode_head",
    )(features, train)
    return {
      "logits": resize(logits, image.shape[1:3]).astype(jnp.float32),
      "logits_4x": logits.astype(jnp.float32),
      "features": fused,
    }


class _Segformer(nn.Module):
  """transformers' ``SegformerModel``: the ``segformer.encoder`` prefix of the keys."""

  encoder: dict

  @nn.compact
  def __call__(self, image, train):
    return MixTransformer(**self.encoder, name="encoder")(image, train)
