"""Mask2Former (Cheng et al. 2022): universal segmentation by mask classification.

A ResNet trunk gives features at strides 4–32. The pixel decoder projects the stride-8/16/32 maps
to ``feature_size`` channels (1x1 convolution + GroupNorm 32), adds sine position and level
embeddings, and refines them jointly with ``encoder_layers`` layers of multi-scale deformable
attention (Zhu et al. 2021: each position attends to ``points`` bilinearly sampled locations per
level and head around its own position, `ms_deform_attn`), then adds the stride-4 map through a
lateral 1x1 convolution and a 3x3 output convolution (FPN) and projects it to the per-pixel
``mask_features``. The transformer decoder refines ``num_queries`` learned queries with
``decoder_layers`` layers (the paper's L = 9; transformers' config says ``decoder_layers=10``,
counting the prediction before the first layer), cycling over the stride-32/16/8 maps: masked
cross-attention (each query attends only where its previous mask's probability is at least 0.5;
a query whose mask is empty attends everywhere), self-attention, FFN, each post-norm. Before the
first layer and after every layer the shared heads predict each query's class (``num_classes`` +
"no object") and mask (an MLP embedding dotted with ``mask_features``).

Outputs: ``class_logits`` ``[B,Q,K+1]`` and ``mask_logits`` ``[B,Q,H/4,W/4]`` of the last layer;
``aux_class_logits`` / ``aux_mask_logits`` stacking the ``decoder_layers`` earlier predictions
(deep supervision, `segjax.losses.mask_classification`); with ``train=False`` also ``logits``
``[B,H,W,K]``, the log of the semantic scores ``Σ_q p(class | q) · sigmoid(mask_q)`` at input
size (transformers' ``post_process_semantic_segmentation``), so evaluation and prediction work
unchanged (training logs ``mask_confusion`` at the masks' resolution, `segjax.train_metrics`);
``features`` = ``mask_features``. Panoptic and instance results come from the post-processors
``mask_panoptic`` and ``mask_instances`` (`segjax.postprocess`).

Module names follow transformers' ``Mask2FormerForUniversalSegmentation`` (`mask2former_weights`)
with its ResNet backbone (``ResNetBackbone``), so its checkpoints load by name
(`segjax.models.from_transformers`); LayerNorm and GroupNorm keep PyTorch's epsilon 1e-5.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from segjax import registry
from segjax.models.backbones import ResNet, depth_of
from segjax.models.common import Dtype
from segjax.models.deformable import ms_deform_attn
from segjax.models.sampling import resize_bilinear

TORCH_EPS = 1e-5
LEVELS = 3  # the pixel decoder's and the transformer decoder's feature levels (strides 32, 16, 8)


def sine_position_embedding(
  height: int, width: int, features: int, temperature: float = 10000.0
) -> np.ndarray:
  """DETR's normalised sine embedding ``[H,W,2·features]`` (y half first; sin/cos interleaved):
  transformers' ``Mask2FormerSinePositionEmbedding(normalize=True)`` for an unpadded map."""
  scale, eps = 2 * math.pi, 1e-6
  y = np.arange(1, height + 1, dtype=np.float32)[:, None].repeat(width, 1)
  x = np.arange(1, width + 1, dtype=np.float32)[None, :].repeat(height, 0)
  y = y / (np.float32(height) + np.float32(eps)) * np.float32(scale)
  x = x / (np.float32(width) + np.float32(eps)) * np.float32(scale)
  dim_t = np.arange(features, dtype=np.float32)
  dim_t = np.float32(temperature) ** (2 * np.floor(dim_t / 2) / np.float32(features))

  def embed(v):
    v = v[..., None] / dim_t
    return np.stack([np.sin(v[..., 0::2]), np.cos(v[..., 1::2])], axis=-1).reshape(
      height, width, features
    )

  return np.concatenate([embed(y), embed(x)], axis=-1).astype(np.float32)


def reference_points(shapes: Sequence[tuple[int, int]]) -> np.ndarray:
  """Each flattened position's centre (x, y) in [0, 1] on its own level: ``[S,2]``."""
  points = []
  for height, width in shapes:
    y, x = np.meshgrid(
      (np.arange(height, dtype=np.float32) + 0.5) / height,
      (np.arange(width, dtype=np.float32) + 0.5) / width,
      indexing="ij",
    )
    points.append(np.stack([x.reshape(-1), y.reshape(-1)], -1))
  return np.concatenate(points, 0)


def _dense(features, name, dtype, kernel_init=nn.initializers.xavier_uniform()):
  return nn.Dense(features, dtype=dtype, name=name, kernel_init=kernel_init)


def _layer_norm(name, dtype):
  return nn.LayerNorm(epsilon=TORCH_EPS, dtype=dtype, name=name)


def _group_norm(name, dtype):
  return nn.GroupNorm(num_groups=32, epsilon=TORCH_EPS, dtype=dtype, name=name)


def _offset_bias_init(heads: int, levels: int, points: int):
  """Deformable DETR's initial sampling offsets: head h looks along direction 2πh/heads, point p
  at p + 1 cells, on every level."""

  def init(key, shape, dtype=jnp.float32):
    del key
    theta = np.arange(heads, dtype=np.float64) * (2.0 * math.pi / heads)
    grid = np.stack([np.cos(theta), np.sin(theta)], -1)
    grid = grid / np.abs(grid).max(-1, keepdims=True)
    grid = np.tile(grid[:, None, None, :], (1, levels, points, 1))
    grid = grid * np.arange(1, points + 1)[None, None, :, None]
    return jnp.asarray(grid.reshape(shape), dtype)

  return init


class MultiScaleDeformableAttention(nn.Module):
  """Deformable DETR's attention over ``levels`` maps: offsets and weights (softmax over levels ×
  points) predicted from the query, values projected per head."""

  dim: int
  heads: int
  levels: int = LEVELS
  points: int = 4
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, query, value, reference, shapes):
    batch, queries, _ = query.shape
    head_dim = self.dim // self.heads
    value = _dense(self.dim, "value_proj", self.dtype)(value)
    value = value.reshape(batch, value.shape[1], self.heads, head_dim)
    offsets = nn.Dense(
      self.heads * self.levels * self.points * 2,
      dtype=self.dtype,
      kernel_init=nn.initializers.zeros,
      bias_init=_offset_bias_init(self.heads, self.levels, self.points),
      name="sampling_offsets",
    )(query)
    offsets = offsets.reshape(batch, queries, self.heads, self.levels, self.points, 2)
    weights = nn.Dense(
      self.heads * self.levels * self.points,
      dtype=self.dtype,
      kernel_init=nn.initializers.zeros,
      name="attention_weights",
    )(query)
    weights = jax.nn.softmax(weights.reshape(batch, queries, self.heads, -1).astype(jnp.float32))
    weights = weights.reshape(batch, queries, self.heads, self.levels, self.points)
    normalizer = jnp.asarray([[w, h] for h, w in shapes], jnp.float32)
    locations = (
      reference[:, :, None, :, None, :]
      + offsets.astype(jnp.float32) / normalizer[None, None, None, :, None, :]
    )
    out = ms_deform_attn(value, shapes, locations, weights)
    return _dense(self.dim, "output_proj", self.dtype)(out)


class _Layer(nn.Module):
  """The sizes of a transformer layer: width, heads, FFN width, dropout."""

  dim: int
  heads: int
  ffn: int
  dropout: float = 0.0
  dtype: Dtype = jnp.float32


class _Stack(nn.Module):
  """The sizes of a stack of transformer layers (each rematerialised in the backward pass with
  ``remat``)."""

  heads: int = 8
  layers: int = 6
  ffn: int = 1024
  dropout: float = 0.0
  remat: bool = False
  dtype: Dtype = jnp.float32


class PixelDecoderLayer(_Layer):
  """Deformable self-attention over the three levels, then a ReLU FFN; post-norm residuals."""

  @nn.compact
  def __call__(self, x, pos, reference, shapes, train):
    drop = nn.Dropout(self.dropout, deterministic=not train)
    y = MultiScaleDeformableAttention(self.dim, self.heads, dtype=self.dtype, name="self_attn")(
      x + pos, x, reference, shapes
    )
    x = _layer_norm("self_attn_layer_norm", self.dtype)(x + drop(y))
    y = nn.relu(_dense(self.ffn, "fc1", self.dtype)(x))
    y = _dense(self.dim, "fc2", self.dtype)(drop(y))
    return _layer_norm("final_layer_norm", self.dtype)(x + drop(y))


class PixelDecoder(_Stack):
  """transformers' ``Mask2FormerPixelDecoder`` (``MSDeformAttnPixelDecoder`` of the paper's code):
  ``features`` are the trunk's maps at strides 4, 8, 16, 32. Returns ``mask_features`` (stride 4)
  and the three refined maps, deepest first."""

  feature_size: int = 256
  mask_feature_size: int = 256
  common_stride: int = 4

  @nn.compact
  def __call__(self, features: Sequence[jax.Array], train: bool):
    deepest = list(features[::-1][:LEVELS])  # strides 32, 16, 8
    level_embed = self.param(
      "level_embed", nn.initializers.normal(1.0), (LEVELS, self.feature_size)
    )
    shapes = tuple(tuple(x.shape[1:3]) for x in deepest)
    embeds, positions = [], []
    for i, x in enumerate(deepest):
      x = nn.Conv(
        self.feature_size,
        (1, 1),
        dtype=self.dtype,
        kernel_init=nn.initializers.xavier_uniform(),
        name=f"input_projections_{i}_conv",
      )(x)
      x = _group_norm(f"input_projections_{i}_norm", self.dtype)(x)
      embeds.append(x.reshape(x.shape[0], -1, self.feature_size))
      pos = sine_position_embedding(*shapes[i], self.feature_size // 2).reshape(
        -1, self.feature_size
      )
      positions.append(pos + level_embed[i])
    x = jnp.concatenate(embeds, axis=1)
    pos = jnp.concatenate(positions, axis=0)[None].astype(x.dtype)
    reference = jnp.asarray(reference_points(shapes))
    reference = jnp.broadcast_to(
      reference[None, :, None, :], (x.shape[0], reference.shape[0], LEVELS, 2)
    )
    layer = nn.remat(PixelDecoderLayer, static_argnums=(4, 5)) if self.remat else PixelDecoderLayer
    for i in range(self.layers):
      x = layer(
        self.feature_size,
        self.heads,
        self.ffn,
        self.dropout,
        self.dtype,
        name=f"encoder_layers_{i}",
      )(x, pos, reference, shapes, train)
    outputs, start = [], 0
    for height, width in shapes:
      outputs.append(
        x[:, start : start + height * width].reshape(x.shape[0], height, width, self.feature_size)
      )
      start += height * width
    fpn_levels = int(np.log2(8) - np.log2(self.common_stride))
    for idx in reversed(range(fpn_levels)):  # stride 4 (and finer), deepest first
      lateral = nn.Conv(
        self.feature_size, (1, 1), use_bias=False, dtype=self.dtype, name=f"adapter_{idx + 1}_conv"
      )(features[idx])
      lateral = _group_norm(f"adapter_{idx + 1}_norm", self.dtype)(lateral)
      y = lateral + resize_bilinear(outputs[-1], lateral.shape[1:3])
      y = nn.Conv(
        self.feature_size,
        (3, 3),
        padding=((1, 1), (1, 1)),
        use_bias=False,
        dtype=self.dtype,
        name=f"layer_{idx + 1}_conv",
      )(y)
      outputs.append(nn.relu(_group_norm(f"layer_{idx + 1}_norm", self.dtype)(y)))
    mask_features = nn.Conv(
      self.mask_feature_size,
      (1, 1),
      dtype=self.dtype,
      kernel_init=nn.initializers.xavier_uniform(),
      name="mask_projection",
    )(outputs[-1])
    return mask_features, outputs[:LEVELS]


class Attention(nn.Module):
  """Multi-head attention with separate query/key/value inputs and an optional boolean mask
  ``[B,Nq,Nk]`` (True = may attend) shared by the heads."""

  dim: int
  heads: int
  dropout: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, query, key, value, mask=None, train: bool = False):
    batch, nq, _ = query.shape
    head_dim = self.dim // self.heads
    split = lambda x: x.reshape(batch, x.shape[1], self.heads, head_dim)
    q = split(_dense(self.dim, "q_proj", self.dtype)(query)) * head_dim**-0.5
    k = split(_dense(self.dim, "k_proj", self.dtype)(key))
    v = split(_dense(self.dim, "v_proj", self.dtype)(value))
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32)
    if mask is not None:
      logits = jnp.where(mask[:, None], logits, -1e30)
    weights = nn.Dropout(self.dropout, deterministic=not train)(jax.nn.softmax(logits, axis=-1))
    out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(v.dtype), v).reshape(batch, nq, self.dim)
    return _dense(self.dim, "out_proj", self.dtype)(out)


class DecoderLayer(_Layer):
  """Masked cross-attention to one level, self-attention among the queries, FFN (post-norm)."""

  @nn.compact
  def __call__(self, x, query_pos, memory, memory_pos, mask, train):
    drop = nn.Dropout(self.dropout, deterministic=not train)
    y = Attention(self.dim, self.heads, self.dropout, self.dtype, name="cross_attn")(
      x + query_pos, memory + memory_pos, memory, mask, train
    )
    x = _layer_norm("cross_attn_layer_norm", self.dtype)(x + drop(y))
    y = Attention(self.dim, self.heads, self.dropout, self.dtype, name="self_attn")(
      x + query_pos, x + query_pos, x, None, train
    )
    x = _layer_norm("self_attn_layer_norm", self.dtype)(x + drop(y))
    y = nn.relu(_dense(self.ffn, "fc1", self.dtype)(x))
    y = _dense(self.dim, "fc2", self.dtype)(drop(y))
    return _layer_norm("final_layer_norm", self.dtype)(x + drop(y))


class MaskPredictor(nn.Module):
  """A 3-layer MLP embedding of each query dotted with the per-pixel mask features."""

  dim: int
  mask_feature_size: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, queries, mask_features):
    x = queries
    for i, out in enumerate((self.dim, self.dim, self.mask_feature_size)):
      x = nn.Dense(out, dtype=self.dtype, name=f"mask_embedder_{i}")(x)
      x = nn.relu(x) if i < 2 else x
    return jnp.einsum("bqc,bhwc->bqhw", x, mask_features).astype(jnp.float32)


class TransformerModule(_Stack):
  """Learned queries refined by `DecoderLayer`\\ s; returns the class-head inputs (the normalised
  queries) and the mask logits of every prediction (before the first layer and after each)."""

  layers: int = 9
  ffn: int = 2048
  hidden_dim: int = 256
  mask_feature_size: int = 256
  num_queries: int = 100

  @nn.compact
  def __call__(self, multi_scale, mask_features, train: bool):
    batch = mask_features.shape[0]
    memories, memory_pos, sizes = [], [], []
    level_embed = nn.Embed(LEVELS, self.hidden_dim, name="level_embed")
    for i, x in enumerate(multi_scale):
      sizes.append(tuple(x.shape[1:3]))
      pos = sine_position_embedding(*sizes[-1], self.hidden_dim // 2)
      memory_pos.append(jnp.asarray(pos.reshape(1, -1, self.hidden_dim), x.dtype))
      if x.shape[-1] != self.hidden_dim:
        x = nn.Conv(
          self.hidden_dim,
          (1, 1),
          dtype=self.dtype,
          kernel_init=nn.initializers.xavier_uniform(),
          name=f"input_projections_{i}",
        )(x)
      x = x.reshape(batch, -1, self.hidden_dim) + level_embed(jnp.asarray(i))
      memories.append(x)
    query_pos = nn.Embed(self.num_queries, self.hidden_dim, name="queries_embedder").embedding
    queries = nn.Embed(self.num_queries, self.hidden_dim, name="queries_features").embedding
    query_pos = jnp.broadcast_to(query_pos[None], (batch, *query_pos.shape)).astype(self.dtype)
    x = jnp.broadcast_to(queries[None], (batch, *queries.shape)).astype(self.dtype)
    norm = _layer_norm("layernorm", self.dtype)
    predictor = MaskPredictor(
      self.hidden_dim, self.mask_feature_size, self.dtype, name="mask_predictor"
    )
    states, masks = [], []

    def predict(x, size):
      state = norm(x)
      mask = predictor(state, mask_features)
      states.append(state)
      masks.append(mask)
      # Attend only where the mask's probability is at least 0.5, on the next layer's level; a
      # query that covers no position there attends everywhere.
      allowed = resize_bilinear(mask[..., None], size)[..., 0].reshape(batch, mask.shape[1], -1)
      allowed = jax.lax.stop_gradient(allowed >= 0.0)
      return allowed | ~allowed.any(-1, keepdims=True)

    allowed = predict(x, sizes[0])
    layer = nn.remat(DecoderLayer, static_argnums=(6,)) if self.remat else DecoderLayer
    for i in range(self.layers):
      level = i % LEVELS
      x = layer(
        self.hidden_dim, self.heads, self.ffn, self.dropout, self.dtype, name=f"layers_{i}"
      )(x, query_pos, memories[level], memory_pos[level], allowed, train)
      allowed = predict(x, sizes[(i + 1) % LEVELS])
    return states, masks


class _PixelLevelModule(nn.Module):
  trunk: dict
  decoder: dict

  @nn.compact
  def __call__(self, image, train):
    feats = ResNet(**self.trunk, name="encoder")(image, train)
    features = [feats[f"layer{i}"] for i in range(1, 5)]
    return PixelDecoder(**self.decoder, name="decoder")(features, train)


class _Model(nn.Module):
  trunk: dict
  decoder: dict
  transformer: dict

  @nn.compact
  def __call__(self, image, train):
    mask_features, multi_scale = _PixelLevelModule(
      self.trunk, self.decoder, name="pixel_level_module"
    )(image, train)
    states, masks = TransformerModule(**self.transformer, name="transformer_module")(
      multi_scale, mask_features, train
    )
    return mask_features, states, masks


@registry.register("model", "mask2former")
class Mask2Former(nn.Module):
  """Mask2Former on a ResNet trunk (``backbone`` ``"resnet18"``..``"resnet101"``, ``width``,
  ``blocks``); defaults are the paper's (256 channels, 6 deformable encoder layers of FFN 1024,
  9 decoder layers of FFN 2048, 8 heads, 100 queries, dropout 0)."""

  num_classes: int
  backbone: str = "resnet50"
  width: int = 64
  blocks: Sequence[int] | None = None
  feature_size: int = 256
  mask_feature_size: int = 256
  hidden_dim: int = 256
  num_queries: int = 100
  num_heads: int = 8
  encoder_layers: int = 6
  encoder_ffn: int = 1024
  decoder_layers: int = 9
  decoder_ffn: int = 2048
  common_stride: int = 4
  dropout: float = 0.0
  remat: bool = False  # recompute each encoder/decoder layer's activations in the backward pass
  dtype: Dtype = jnp.float32
  # where config.model.pretrained (torchvision ResNet weights) goes
  pretrained_subtree = "model/pixel_level_module/encoder"

  @nn.compact
  def __call__(self, image, train: bool = False):
    if self.feature_size % 32:
      raise ValueError(
        f"mask2former: feature_size {self.feature_size} must be a multiple of 32 "
        "(GroupNorm of 32 groups)"
      )
    for name, dim in (("feature_size", self.feature_size), ("hidden_dim", self.hidden_dim)):
      if dim % self.num_heads:
        raise ValueError(
          f"mask2former: {name} {dim} is not a multiple of num_heads {self.num_heads}"
        )
    if self.common_stride not in (4, 8):
      raise ValueError(f"mask2former: common_stride must be 4 or 8, not {self.common_stride}")
    trunk = dict(
      depth=depth_of(self.backbone),
      output_stride=32,
      width=self.width,
      dtype=self.dtype,
      blocks=tuple(self.blocks) if self.blocks else None,
    )
    decoder = dict(
      feature_size=self.feature_size,
      mask_feature_size=self.mask_feature_size,
      heads=self.num_heads,
      layers=self.encoder_layers,
      ffn=self.encoder_ffn,
      common_stride=self.common_stride,
      dropout=self.dropout,
      remat=self.remat,
      dtype=self.dtype,
    )
    transformer = dict(
      hidden_dim=self.hidden_dim,
      mask_feature_size=self.mask_feature_size,
      num_queries=self.num_queries,
      heads=self.num_heads,
      layers=self.decoder_layers,
      ffn=self.decoder_ffn,
      dropout=self.dropout,
      remat=self.remat,
      dtype=self.dtype,
    )
    mask_features, states, masks = _Model(trunk, decoder, transformer, name="model")(
      image.astype(self.dtype), train
    )
    classifier = nn.Dense(self.num_classes + 1, dtype=self.dtype, name="class_predictor")
    class_logits = jnp.stack([classifier(s) for s in states]).astype(jnp.float32)
    mask_logits = jnp.stack(masks)
    outputs = {
      "class_logits": class_logits[-1],
      "mask_logits": mask_logits[-1],
      "aux_class_logits": class_logits[:-1],
      "aux_mask_logits": mask_logits[:-1],
      "features": mask_features,
    }
    if not train:  # full-resolution scores for evaluation and prediction only
      outputs["logits"] = semantic_logits(class_logits[-1], mask_logits[-1], image.shape[1:3])
    return outputs


def semantic_logits(class_logits, mask_logits, size, eps: float = 1e-6):
  """``log(Σ_q softmax(class_q)[k] · sigmoid(mask_q))`` ``[B,H,W,K]`` with the masks resized to
  ``size`` first (transformers' ``post_process_semantic_segmentation``); ``eps`` keeps it finite."""
  probs = jax.nn.softmax(class_logits, axis=-1)[..., :-1]
  masks = jax.nn.sigmoid(resize_bilinear(mask_logits.transpose(0, 2, 3, 1), size))
  scores = jnp.einsum("bqk,bhwq->bhwk", probs, masks)
  return jnp.log(scores + eps)
