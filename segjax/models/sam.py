"""Segment Anything (Kirillov et al. 2023) in Flax, as transformers' ``SamModel`` computes it.

Three parts, each usable alone (``model.apply(variables, ..., method=Sam.embed_image)``):

- `Sam.embed_image`: the image encoder, a ViT (16x16 patches, learned absolute position
  embeddings, attention in 14x14 windows with global attention in some blocks, decomposed
  relative position biases) and a neck (1x1 and 3x3 convolutions with LayerNorms): the image
  ``[B, 1024, 1024, 3]`` (normalised as SAM's processor does) to embeddings ``[B, 64, 64, 256]``;
- `Sam.decode`: the prompt encoder (points with labels — 1 positive, 0 negative, -1 "not a
  point", -10 padding — and boxes as random Fourier features of their coordinates plus learned
  embeddings; a low-resolution mask ``[B, 256, 256]`` through strided convolutions) and the mask
  decoder (a two-way transformer between the prompt tokens and the image embeddings, 2x2
  transposed convolutions to stride 4, one hypernetwork MLP per output mask, an IoU head): masks
  ``[B, P, M, 256, 256]`` (logits, low resolution) and their predicted IoU ``[B, P, M]``, M = 3
  (``multimask_output``) or 1, for P prompts per image;
- ``__call__`` = both.

Coordinates are ``(x, y)`` pixels of the 1024x1024 input (SAM's processor resizes the long side to
1024 and pads). Every module and parameter carries transformers' name, so
`segjax.models.from_transformers("SamModel", path)` maps a checkpoint by name
(`segjax.models.sam.hf_key`). ``variant`` chooses ViT-B/L/H.
"""

from __future__ import annotations

import re
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from segjax import registry

VARIANTS = {  # transformers' facebook/sam-vit-{base,large,huge} vision configs
  "vit_b": dict(
    hidden_size=768, num_hidden_layers=12, num_attention_heads=12, global_attn_indexes=(2, 5, 8, 11)
  ),
  "vit_l": dict(
    hidden_size=1024,
    num_hidden_layers=24,
    num_attention_heads=16,
    global_attn_indexes=(5, 11, 17, 23),
  ),
  "vit_h": dict(
    hidden_size=1280,
    num_hidden_layers=32,
    num_attention_heads=16,
    global_attn_indexes=(7, 15, 23, 31),
  ),
}
# SAM's processor: the ImageNet mean and standard deviation on 0..255 images.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)

_gelu = lambda x: nn.gelu(x, approximate=False)


def LayerNorm(epsilon: float, name: str | None = None) -> nn.LayerNorm:  # noqa: N802
  """transformers' LayerNorm: the variance as the mean squared deviation (Flax's default
  ``E[x²] - E[x]²`` loses float32 digits on few channels: the mask embedding's 2 to 4)."""
  return nn.LayerNorm(epsilon, use_fast_variance=False, name=name)


class Embedding(nn.Module):
  """A table of learned vectors (transformers' ``nn.Embedding``; the parameter ``weight``)."""

  num: int
  features: int

  @nn.compact
  def __call__(self):
    return self.param("weight", nn.initializers.normal(1.0), (self.num, self.features))


class TransposedConv2x2(nn.Module):
  """A 2x2 transposed convolution of stride 2 (each input pixel becomes a 2x2 block); the kernel
  ``[in, 2, 2, out]``."""

  features: int

  @nn.compact
  def __call__(self, x):
    kernel = self.param(
      "kernel", nn.initializers.lecun_normal(), (x.shape[-1], 2, 2, self.features)
    )
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    b, h, w, _ = x.shape
    y = jnp.einsum("bhwc,cijo->bhiwjo", x, kernel.astype(x.dtype))
    return y.reshape(b, 2 * h, 2 * w, self.features) + bias.astype(x.dtype)


class MLPBlock(nn.Module):
  hidden: int
  mlp_dim: int

  @nn.compact
  def __call__(self, x):
    return nn.Dense(self.hidden, name="lin2")(_gelu(nn.Dense(self.mlp_dim, name="lin1")(x)))


def _rel_pos(size: int, table: jnp.ndarray) -> jnp.ndarray:
  """``[size, size, C]`` relative position embeddings for a query and key axis of ``size`` (the
  table holds ``2·size - 1`` rows: the configured size; others are not SAM's 1024 input)."""
  if table.shape[0] != 2 * size - 1:
    raise ValueError(
      f"SAM: an attention axis of {size} positions needs {2 * size - 1} relative positions, the "
      f"weights hold {table.shape[0]}: give the input size the model was built for (1024)"
    )
  coords = np.arange(size)[:, None] - np.arange(size)[None, :] + size - 1
  return table[coords]


class VisionAttention(nn.Module):
  heads: int
  window: int  # 0: global
  input_size: int  # positions per axis the relative tables cover
  qkv_bias: bool = True

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    head_dim = c // self.heads
    qkv = nn.Dense(3 * c, use_bias=self.qkv_bias, name="qkv")(x)
    qkv = qkv.reshape(b, h * w, 3, self.heads, head_dim).transpose(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]  # [B, heads, HW, d]
    logits = jnp.einsum("bnqd,bnkd->bnqk", q * head_dim**-0.5, k)
    size = 2 * self.input_size - 1
    table_h = self.param("rel_pos_h", nn.initializers.zeros, (size, head_dim))
    table_w = self.param("rel_pos_w", nn.initializers.zeros, (size, head_dim))
    rq = q.reshape(b, self.heads, h, w, head_dim)
    rel_h = jnp.einsum("bnhwc,hkc->bnhwk", rq, _rel_pos(h, table_h).astype(x.dtype))
    rel_w = jnp.einsum("bnhwc,wkc->bnhwk", rq, _rel_pos(w, table_w).astype(x.dtype))
    bias = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(b, self.heads, h * w, h * w)
    weights = jax.nn.softmax((logits + bias).astype(jnp.float32), axis=-1).astype(x.dtype)
    out = jnp.einsum("bnqk,bnkd->bnqd", weights, v).reshape(b, self.heads, h, w, head_dim)
    out = out.transpose(0, 2, 3, 1, 4).reshape(b, h, w, c)
    return nn.Dense(c, name="proj")(out)


class VisionLayer(nn.Module):
  heads: int
  mlp_dim: int
  window: int
  input_size: int
  eps: float = 1e-6
  qkv_bias: bool = True

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    y = LayerNorm(self.eps, name="layer_norm1")(x)
    attention = VisionAttention(
      self.heads, self.window, self.window or self.input_size, self.qkv_bias, name="attn"
    )
    if self.window:
      s = self.window
      ph, pw = -h % s, -w % s
      y = jnp.pad(y, ((0, 0), (0, ph), (0, pw), (0, 0)))
      hh, ww = (h + ph) // s, (w + pw) // s
      y = y.reshape(b, hh, s, ww, s, c).transpose(0, 1, 3, 2, 4, 5).reshape(-1, s, s, c)
      y = attention(y)
      y = y.reshape(b, hh, ww, s, s, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, hh * s, ww * s, c)
      y = y[:, :h, :w]
    else:
      y = attention(y)
    x = x + y
    return x + MLPBlock(c, self.mlp_dim, name="mlp")(LayerNorm(self.eps, name="layer_norm2")(x))


class VisionEncoder(nn.Module):
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  global_attn_indexes: Sequence[int] = (2, 5, 8, 11)
  window_size: int = 14
  patch_size: int = 16
  image_size: int = 1024
  output_channels: int = 256
  mlp_dim: int | None = None
  qkv_bias: bool = True
  eps: float = 1e-6

  @nn.compact
  def __call__(self, image):
    if image.shape[1:3] != (self.image_size, self.image_size):
      raise ValueError(
        f"SAM: the image is {image.shape[1]}x{image.shape[2]}; the model reads "
        f"{self.image_size}x{self.image_size} (segjax.models.sam.prepare_image resizes the long "
        "side and pads, as SAM's processor does)"
      )
    grid = self.image_size // self.patch_size
    p = self.patch_size
    x = nn.Conv(self.hidden_size, (p, p), (p, p), padding="VALID", name="patch_embed_projection")(
      image
    )
    x = x + self.param("pos_embed", nn.initializers.zeros, (1, grid, grid, self.hidden_size))
    mlp_dim = self.mlp_dim or 4 * self.hidden_size
    for i in range(self.num_hidden_layers):
      window = 0 if i in self.global_attn_indexes else self.window_size
      x = VisionLayer(
        self.num_attention_heads, mlp_dim, window, grid, self.eps, self.qkv_bias, name=f"layers_{i}"
      )(x)
    x = nn.Conv(self.output_channels, (1, 1), use_bias=False, name="neck_conv1")(x)
    x = LayerNorm(1e-6, name="neck_layer_norm1")(x)
    x = nn.Conv(self.output_channels, (3, 3), padding=1, use_bias=False, name="neck_conv2")(x)
    return LayerNorm(1e-6, name="neck_layer_norm2")(x)


class PositionalEmbedding(nn.Module):
  """Random Fourier features of coordinates in [0, 1] (the Gaussian matrix is a parameter)."""

  num_pos_feats: int = 128
  scale: float = 384.0

  @nn.compact
  def __call__(self, coords):
    gaussian = self.param(
      "positional_embedding",
      lambda key, shape: self.scale * jax.random.normal(key, shape),
      (2, self.num_pos_feats),
    )
    coords = (2 * coords - 1).astype(gaussian.dtype) @ gaussian
    coords = 2 * np.pi * coords
    return jnp.concatenate([jnp.sin(coords), jnp.cos(coords)], axis=-1)


class Attention(nn.Module):
  """The decoder's attention: projections to ``hidden / downsample_rate`` features."""

  hidden: int
  heads: int
  downsample_rate: int = 1

  @nn.compact
  def __call__(self, q, k, v):
    inner = self.hidden // self.downsample_rate
    q, k, v = (nn.Dense(inner, name=n)(t) for n, t in (("q_proj", q), ("k_proj", k), ("v_proj", v)))
    split = lambda t: t.reshape(*t.shape[:-1], self.heads, inner // self.heads)
    logits = jnp.einsum("bqnd,bknd->bnqk", split(q), split(k)) * (inner // self.heads) ** -0.5
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(q.dtype)
    out = jnp.einsum("bnqk,bknd->bqnd", weights, split(v)).reshape(*q.shape[:-1], inner)
    return nn.Dense(self.hidden, name="out_proj")(out)


class FeedForward(nn.Module):
  hidden: int
  out: int
  num_layers: int

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(self.hidden, name="proj_in")(x))
    for i in range(self.num_layers - 2):
      x = nn.relu(nn.Dense(self.hidden, name=f"layers_{i}")(x))
    return nn.Dense(self.out, name="proj_out")(x)


class TwoWayBlock(nn.Module):
  hidden: int
  heads: int
  mlp_dim: int
  downsample_rate: int
  skip_first_layer_pe: bool
  eps: float = 1e-6

  @nn.compact
  def __call__(self, queries, keys, query_pe, key_pe):
    norm = lambda i: LayerNorm(self.eps, name=f"layer_norm{i}")
    self_attn = Attention(self.hidden, self.heads, 1, name="self_attn")
    if self.skip_first_layer_pe:
      queries = self_attn(queries, queries, queries)
    else:
      q = queries + query_pe
      queries = queries + self_attn(q, q, queries)
    queries = norm(1)(queries)
    q, k = queries + query_pe, keys + key_pe
    attn = Attention(
      self.hidden, self.heads, self.downsample_rate, name="cross_attn_token_to_image"
    )
    queries = norm(2)(queries + attn(q, k, keys))
    mlp = nn.Dense(self.hidden, name="mlp_lin2")(
      nn.relu(nn.Dense(self.mlp_dim, name="mlp_lin1")(queries))
    )
    queries = norm(3)(queries + mlp)
    q, k = queries + query_pe, keys + key_pe
    attn = Attention(
      self.hidden, self.heads, self.downsample_rate, name="cross_attn_image_to_token"
    )
    keys = norm(4)(keys + attn(k, q, queries))
    return queries, keys


class MaskDecoder(nn.Module):
  hidden_size: int = 256
  mlp_dim: int = 2048
  num_hidden_layers: int = 2
  num_attention_heads: int = 8
  attention_downsample_rate: int = 2
  num_multimask_outputs: int = 3
  iou_head_depth: int = 3
  iou_head_hidden_dim: int = 256
  eps: float = 1e-6

  @nn.compact
  def __call__(self, image_embeddings, image_pe, sparse, dense, multimask_output: bool):
    """``image_embeddings`` ``[B, h, w, C]``, ``image_pe`` ``[h, w, C]``, ``sparse`` ``[B, P, N,
    C]``, ``dense`` ``[B, h, w, C]`` → masks ``[B, P, M, 4h, 4w]``, IoU ``[B, P, M]``."""
    c, count = self.hidden_size, self.num_multimask_outputs + 1
    b, h, w, _ = image_embeddings.shape
    points = sparse.shape[1]
    tokens = jnp.concatenate(
      [Embedding(1, c, name="iou_token")(), Embedding(count, c, name="mask_tokens")()], axis=0
    )
    tokens = jnp.broadcast_to(tokens, (b, points, *tokens.shape))
    tokens = jnp.concatenate([tokens, sparse.astype(tokens.dtype)], axis=2).reshape(
      b * points, -1, c
    )
    keys = jnp.repeat((image_embeddings + dense).reshape(b, h * w, c), points, axis=0)
    key_pe = jnp.broadcast_to(image_pe.reshape(1, h * w, c), keys.shape)
    queries = tokens
    for i in range(self.num_hidden_layers):
      queries, keys = TwoWayBlock(
        c,
        self.num_attention_heads,
        self.mlp_dim,
        self.attention_downsample_rate,
        skip_first_layer_pe=i == 0,
        eps=self.eps,
        name=f"transformer_layers_{i}",
      )(queries, keys, tokens, key_pe)
    attn = Attention(
      c,
      self.num_attention_heads,
      self.attention_downsample_rate,
      name="transformer_final_attn_token_to_image",
    )
    queries = queries + attn(queries + tokens, keys + key_pe, keys)
    queries = LayerNorm(1e-5, name="transformer_layer_norm_final_attn")(queries)
    iou_out, mask_out = queries[:, 0], queries[:, 1 : 1 + count]
    x = keys.reshape(b * points, h, w, c)
    x = TransposedConv2x2(c // 4, name="upscale_conv1")(x)
    x = _gelu(LayerNorm(1e-6, name="upscale_layer_norm")(x))
    x = _gelu(TransposedConv2x2(c // 8, name="upscale_conv2")(x))
    hyper = jnp.stack(
      [
        FeedForward(c, c // 8, 3, name=f"output_hypernetworks_mlps_{i}")(mask_out[:, i])
        for i in range(count)
      ],
      axis=1,
    )
    masks = jnp.einsum("bmc,bhwc->bmhw", hyper, x).reshape(b, points, count, 4 * h, 4 * w)
    iou = FeedForward(
      self.iou_head_hidden_dim, count, self.iou_head_depth, name="iou_prediction_head"
    )(iou_out)
    iou = iou.reshape(b, points, count)
    keep = slice(1, None) if multimask_output else slice(0, 1)
    return masks[:, :, keep], iou[:, :, keep]


class MaskEmbedding(nn.Module):
  hidden_size: int = 256
  mask_input_channels: int = 16
  eps: float = 1e-6

  @nn.compact
  def __call__(self, masks):
    x = nn.Conv(self.mask_input_channels // 4, (2, 2), (2, 2), padding="VALID", name="conv1")(
      masks[..., None]
    )
    x = _gelu(LayerNorm(self.eps, name="layer_norm1")(x))
    x = nn.Conv(self.mask_input_channels, (2, 2), (2, 2), padding="VALID", name="conv2")(x)
    x = _gelu(LayerNorm(self.eps, name="layer_norm2")(x))
    return nn.Conv(self.hidden_size, (1, 1), name="conv3")(x)


class PromptEncoder(nn.Module):
  hidden_size: int = 256
  image_size: int = 1024
  mask_input_channels: int = 16
  eps: float = 1e-6

  def setup(self):
    self.mask_embed = MaskEmbedding(self.hidden_size, self.mask_input_channels, self.eps)
    self.no_mask_embed = Embedding(1, self.hidden_size)
    self.point_embed = [Embedding(1, self.hidden_size) for _ in range(4)]
    self.not_a_point_embed = Embedding(1, self.hidden_size)

  def __call__(self, positional, grid, points=None, labels=None, boxes=None, masks=None):
    """``positional``: the shared `PositionalEmbedding`; ``grid``: the embeddings' size. Returns
    ``(sparse [B, P, N, C], dense [B, h, w, C])``."""
    sparse = []
    if points is not None:
      points = points.astype(jnp.float32) + 0.5
      labels = labels.astype(jnp.int32)
      if boxes is None:  # a "not a point" pads the prompt, as SAM does without a box
        points = jnp.concatenate([points, jnp.zeros((*points.shape[:2], 1, 2))], axis=2)
        labels = jnp.concatenate([labels, -jnp.ones((*labels.shape[:2], 1), jnp.int32)], axis=2)
      embedding = positional(points / self.image_size)
      label = labels[..., None]
      embedding = jnp.where(label == -1, self.not_a_point_embed()[0], embedding)
      embedding = jnp.where(label == -10, 0.0, embedding)
      embedding = embedding + jnp.where(label == 0, self.point_embed[0]()[0], 0.0)
      embedding = embedding + jnp.where(label == 1, self.point_embed[1]()[0], 0.0)
      sparse.append(embedding)
    if boxes is not None:
      corners = (boxes.astype(jnp.float32) + 0.5).reshape(*boxes.shape[:2], 2, 2)
      embedding = positional(corners / self.image_size)
      corner = jnp.stack([self.point_embed[2]()[0], self.point_embed[3]()[0]])
      sparse.append(embedding + corner)
    if not sparse:
      raise ValueError("SAM: give points (with labels) or boxes")
    sparse = jnp.concatenate(sparse, axis=2)
    batch = sparse.shape[0]
    no_mask = self.no_mask_embed()[0]  # (made even when a mask is given: every parameter exists)
    if masks is not None:
      dense = self.mask_embed(masks.astype(jnp.float32))
    else:
      dense = jnp.broadcast_to(no_mask, (batch, grid, grid, self.hidden_size))
    return sparse, dense


class Sam(nn.Module):
  """SAM (module docstring). ``vision``, ``prompt``, ``decoder``: transformers' config fields of
  ``SamVisionConfig``, ``SamPromptEncoderConfig``, ``SamMaskDecoderConfig`` (their defaults:
  ViT-B)."""

  vision: dict | None = None
  prompt: dict | None = None
  decoder: dict | None = None
  num_pos_feats: int = 128

  def setup(self):
    vision = dict(self.vision or {})
    self.vision_encoder = VisionEncoder(**vision)
    hidden = vision.get("hidden_size", 768)
    self.shared_image_embedding = PositionalEmbedding(self.num_pos_feats, hidden // 2)
    self.prompt_encoder = PromptEncoder(**dict(self.prompt or {}))
    self.mask_decoder = MaskDecoder(**dict(self.decoder or {}))
    self.grid = vision.get("image_size", 1024) // vision.get("patch_size", 16)

  def embed_image(self, image):
    """``[B, 1024, 1024, 3]`` (normalised) → image embeddings ``[B, 64, 64, 256]``."""
    return self.vision_encoder(image)

  def image_positional_embeddings(self):
    centres = (jnp.arange(self.grid, dtype=jnp.float32) + 0.5) / self.grid
    y, x = jnp.meshgrid(centres, centres, indexing="ij")
    return self.shared_image_embedding(jnp.stack([x, y], axis=-1))

  def decode(
    self,
    image_embeddings,
    points=None,
    labels=None,
    boxes=None,
    masks=None,
    multimask_output: bool = True,
  ) -> dict:
    """Masks of the prompts on ``image_embeddings`` (module docstring): ``pred_masks``
    ``[B, P, M, 256, 256]`` (logits) and ``iou_scores`` ``[B, P, M]``."""
    if points is not None and labels is None:
      labels = jnp.ones(points.shape[:-1], jnp.int32)
    sparse, dense = self.prompt_encoder(
      self.shared_image_embedding, self.grid, points, labels, boxes, masks
    )
    pred_masks, iou = self.mask_decoder(
      image_embeddings, self.image_positional_embeddings(), sparse, dense, multimask_output
    )
    return {"pred_masks": pred_masks, "iou_scores": iou}

  def __call__(
    self,
    image,
    points=None,
    labels=None,
    boxes=None,
    masks=None,
    multimask_output=True,
    train=False,
  ):
    del train
    embeddings = self.embed_image(image)
    out = self.decode(embeddings, points, labels, boxes, masks, multimask_output)
    return {**out, "image_embeddings": embeddings}


@registry.register("model", "sam")
def _sam(num_classes: int = 2, variant: str = "vit_b", dtype=jnp.float32, **kwargs) -> Sam:
  """SAM of ``variant`` (``vit_b``/``vit_l``/``vit_h``); ``vision``/``prompt``/``decoder`` dicts
  override transformers' config fields. Prompted, not a class-map model: ``num_classes`` and
  ``dtype`` do not apply (float32)."""
  del num_classes, dtype
  if variant not in VARIANTS:
    raise ValueError(f"sam: variant={variant!r}; one of {sorted(VARIANTS)}")
  vision = {**VARIANTS[variant], **dict(kwargs.pop("vision", None) or {})}
  return Sam(vision=vision, **kwargs)


def prepare_image(image: np.ndarray, size: int = 1024) -> tuple[np.ndarray, float]:
  """A 0..255 RGB image ``[H, W, 3]`` as SAM's processor prepares it: the long side resized to
  ``size`` (bilinear), normalised by SAM's mean and deviation, padded with zeros at the bottom
  and right to ``size x size``; and the scale (a point ``(x, y)`` of the image is ``(x, y) *
  scale`` in the model's input)."""
  import cv2  # pylint: disable=import-outside-toplevel

  image = np.asarray(image, np.float32)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"SAM reads RGB images [H, W, 3], got {image.shape}")
  scale = size / max(image.shape[:2])
  height, width = (int(round(n * scale)) for n in image.shape[:2])
  resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
  out = np.zeros((size, size, 3), np.float32)
  out[:height, :width] = (resized - np.float32(PIXEL_MEAN)) / np.float32(PIXEL_STD)
  return out, scale


# Flax module names that stand for a dotted transformers path.
_HF_NAMES = (
  (r"^patch_embed_projection$", "patch_embed.projection"),
  (r"^neck_(.*)$", r"neck.\1"),
  (r"^mlp_(lin\d)$", r"mlp.\1"),
  (r"^transformer_layers_(\d+)$", r"transformer.layers.\1"),
  (r"^transformer_(.*)$", r"transformer.\1"),
  (r"^(layers|point_embed|output_hypernetworks_mlps)_(\d+)$", r"\1.\2"),
)
_LEAVES = {"kernel": "weight", "scale": "weight", "bias": "bias", "weight": "weight"}


def hf_key(path: tuple[str, ...]) -> str:
  """transformers' ``SamModel`` key of a Flax variable path ``("params", *modules, leaf)``."""
  _, *modules, leaf = path
  names = []
  for module in modules:
    for pattern, replacement in _HF_NAMES:
      module = re.sub(pattern, replacement, module)
    names.append(module)
  return ".".join(names + [_LEAVES.get(leaf, leaf)])


def to_flax_layout(path: tuple[str, ...], tensor: np.ndarray) -> np.ndarray:
  """A transformers tensor in the layout of the Flax leaf at ``path``."""
  if path[-1] != "kernel":
    return tensor
  if path[-2].startswith("upscale_conv"):  # ConvTranspose2d [in, out, 2, 2] → [in, 2, 2, out]
    return tensor.transpose(0, 2, 3, 1)
  return tensor.transpose(2, 3, 1, 0) if tensor.ndim == 4 else tensor.T


def to_torch_layout(path: tuple[str, ...], tensor: np.ndarray) -> np.ndarray:
  """The inverse of `to_flax_layout`."""
  if path[-1] != "kernel":
    return tensor
  if path[-2].startswith("upscale_conv"):
    return tensor.transpose(0, 3, 1, 2)
  return tensor.transpose(3, 2, 0, 1) if tensor.ndim == 4 else tensor.T


def sizes_from_state_dict(state: dict, hf_config: dict | None = None) -> dict:
  """`Sam` arguments of a transformers ``SamModel`` state dict: the encoder's width, depth,
  windowed and global blocks and the decoder's sizes from the tensors' shapes; attention heads
  from ``hf_config`` (default ViT-B/L/H's by width)."""
  if "vision_encoder.patch_embed.projection.weight" not in state:
    raise ValueError("not a SamModel state dict: no vision_encoder.patch_embed.projection.weight")
  hf_config = hf_config or {}
  vision_config = hf_config.get("vision_config") or {}
  hidden, _, patch, _ = state["vision_encoder.patch_embed.projection.weight"].shape
  grid = state["vision_encoder.pos_embed"].shape[1]
  layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("vision_encoder.layers."))
  window_tables = {
    i: state[f"vision_encoder.layers.{i}.attn.rel_pos_h"].shape[0] for i in range(layers)
  }
  global_layers = tuple(i for i, n in window_tables.items() if n == 2 * grid - 1)
  windows = {(n + 1) // 2 for i, n in window_tables.items() if i not in global_layers}
  default_heads = {768: 12, 1024: 16, 1280: 16}.get(int(hidden), 12)
  vision = dict(
    hidden_size=int(hidden),
    num_hidden_layers=int(layers),
    num_attention_heads=int(vision_config.get("num_attention_heads", default_heads)),
    global_attn_indexes=global_layers,
    window_size=int(windows.pop()) if windows else 14,
    patch_size=int(patch),
    image_size=int(grid * patch),
    output_channels=int(state["vision_encoder.neck.conv1.weight"].shape[0]),
    mlp_dim=int(state["vision_encoder.layers.0.mlp.lin1.weight"].shape[0]),
    qkv_bias="vision_encoder.layers.0.attn.qkv.bias" in state,
  )
  decoder_config = hf_config.get("mask_decoder_config") or {}
  d = int(state["mask_decoder.iou_token.weight"].shape[1])
  decoder = dict(
    hidden_size=d,
    mlp_dim=int(state["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0]),
    num_hidden_layers=1
    + max(int(k.split(".")[3]) for k in state if k.startswith("mask_decoder.transformer.layers.")),
    num_attention_heads=int(decoder_config.get("num_attention_heads", 8)),
    attention_downsample_rate=d
    // int(
      state["mask_decoder.transformer.layers.0.cross_attn_token_to_image.q_proj.weight"].shape[0]
    ),
    num_multimask_outputs=int(state["mask_decoder.mask_tokens.weight"].shape[0]) - 1,
    iou_head_depth=2
    + sum(
      1 for k in state if re.match(r"mask_decoder\.iou_prediction_head\.layers\.\d+\.weight$", k)
    ),
    iou_head_hidden_dim=int(state["mask_decoder.iou_prediction_head.proj_in.weight"].shape[0]),
  )
  prompt = dict(
    hidden_size=int(state["prompt_encoder.no_mask_embed.weight"].shape[1]),
    image_size=int(grid * patch),
    mask_input_channels=int(state["prompt_encoder.mask_embed.conv2.weight"].shape[0]),
  )
  key = "shared_image_embedding.positional_embedding"
  return dict(vision=vision, prompt=prompt, decoder=decoder, num_pos_feats=int(state[key].shape[1]))


def load_variables(model: Sam, state: dict) -> dict:
  """``model``'s variables from a transformers ``SamModel`` state dict, every tensor by name and
  checked by shape (missing, misshapen and left over keys are listed)."""
  import flax  # pylint: disable=import-outside-toplevel

  abstract = jax.eval_shape(lambda: init_variables(model, jax.random.key(0)))
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(abstract))
  out, missing, wrong, used = {}, [], [], set()
  for path, value in flat.items():
    key = hf_key(path)
    if key not in state:
      missing.append(key)
      continue
    tensor = to_flax_layout(path, np.asarray(state[key]))
    used.add(key)
    if tensor.shape != tuple(value.shape):
      wrong.append(f"{key}: file {tensor.shape} vs model {tuple(value.shape)}")
      continue
    out[path] = jnp.asarray(tensor, value.dtype)
  # The prompt encoder shares the image's positional embedding (tied in transformers).
  left = sorted(set(state) - used - {"prompt_encoder.shared_embedding.positional_embedding"})
  problems = [
    f"{len(v)} {what}: {', '.join(v[:6])}"
    for what, v in (("missing", missing), ("of another shape", wrong), ("left over", left))
    if v
  ]
  if problems:
    raise ValueError("the weights do not fit SAM — " + " | ".join(problems))
  return flax.traverse_util.unflatten_dict(out)


def init_variables(model: Sam, rng) -> dict:
  """Random variables of ``model`` (every part: points, a box and a mask prompt)."""
  vision = dict(model.vision or {})
  size, patch = vision.get("image_size", 1024), vision.get("patch_size", 16)
  low = 4 * (size // patch)
  return model.init(
    rng,
    jnp.zeros((1, size, size, 3)),
    points=jnp.zeros((1, 1, 1, 2)),
    boxes=jnp.zeros((1, 1, 4)),
    masks=jnp.zeros((1, low, low)),
  )
