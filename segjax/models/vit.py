"""A plain Vision Transformer as DINOv2 trains it (Oquab et al. 2023), with register tokens (Darcet
et al. 2024), as transformers' ``Dinov2Model`` and ``Dinov2WithRegistersModel`` compute it.

Patch embedding (a ``patch_size`` convolution of stride ``patch_size``), a class token, learned
absolute position embeddings for a square grid of ``position_grid`` patches (interpolated bicubically
to any input size, as the checkpoints do: PyTorch's bicubic for DINOv2, its antialiased bicubic for
DINOv2 with registers), ``num_registers`` register tokens after the class token (they get no
position), then pre-norm blocks (LayerNorm, attention, LayerScale; LayerNorm, MLP or SwiGLU,
LayerScale) and a final LayerNorm. Returns ``{"tokens": [B, 1+R+N, D], "cls": [B, D], "patches":
[B, H/p, W/p, D]}`` (after the final norm; ``patches`` is the stride-``patch_size`` feature map a
head takes).

Every module and parameter carries transformers' name (its version 5 names: ``q_proj``,
``gate_proj``...; the Hub's files use the older ``attention.attention.query`` and ``weights_in``,
which `checkpoint_names` maps), so `segjax.models.from_transformers("Dinov2Model", path)` loads a
checkpoint by name. ``variant`` picks ViT-S/14, B/14, L/14 or g/14 as DINOv2 trained them;
``remat=True`` recomputes each block's activations in the backward pass (gradient checkpointing).
"""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from segjax import registry

# transformers' facebook/dinov2-{small,base,large,giant} configs.
VARIANTS = {
  "vit_s": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6),
  "vit_b": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12),
  "vit_l": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16),
  "vit_g": dict(
    hidden_size=1536, num_hidden_layers=40, num_attention_heads=24, mlp_ratio=4, use_swiglu_ffn=True
  ),
}


def _keys_cubic(x: np.ndarray, a: float) -> np.ndarray:
  """The cubic convolution kernel of Keys (1981) with parameter ``a``."""
  x = np.abs(x)
  near = ((a + 2) * x - (a + 3)) * x * x + 1
  far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
  return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def resize_matrix(size_in: int, size_out: int, antialias: bool) -> np.ndarray:
  """``[size_out, size_in]`` weights of PyTorch's bicubic resize along one axis
  (``align_corners=False``): without ``antialias`` its cubic with a = -0.75 and edge-clamped taps;
  with it, PIL's (a = -0.5, the kernel widened by the scale when shrinking, weights normalised)."""
  scale = size_in / size_out
  matrix = np.zeros((size_out, size_in))
  if antialias:
    stretch = max(scale, 1.0)
    for i in range(size_out):
      center = scale * (i + 0.5)
      weights = _keys_cubic((np.arange(size_in) + 0.5 - center) / stretch, -0.5)
      matrix[i] = weights / weights.sum()
    return matrix
  for i in range(size_out):
    source = scale * (i + 0.5) - 0.5
    start = int(np.floor(source))
    t = source - start
    for tap, distance in zip(range(start - 1, start + 3), (t + 1, t, 1 - t, 2 - t)):
      matrix[i, min(max(tap, 0), size_in - 1)] += _keys_cubic(np.array(distance), -0.75)
  return matrix


class Embeddings(nn.Module):
  hidden_size: int
  patch_size: int
  position_grid: int
  num_registers: int
  antialias: bool
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, image):
    kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
    patches = nn.Conv(
      self.hidden_size,
      (self.patch_size, self.patch_size),
      strides=self.patch_size,
      padding="VALID",
      kernel_init=kernel_init,
      dtype=self.dtype,
      name="patch_embeddings",
    )(image.astype(self.dtype))
    b, h, w, d = patches.shape
    init = nn.initializers.truncated_normal(0.02)
    cls = self.param("cls_token", init, (1, 1, d))
    self.param("mask_token", nn.initializers.zeros, (1, d))  # DINOv2's masked-patch token
    positions = self.param("position_embeddings", init, (1, 1 + self.position_grid**2, d))
    grid = positions[0, 1:].reshape(self.position_grid, self.position_grid, d).astype(jnp.float32)
    if (h, w) != (self.position_grid, self.position_grid):
      rows = jnp.asarray(resize_matrix(self.position_grid, h, self.antialias), jnp.float32)
      cols = jnp.asarray(resize_matrix(self.position_grid, w, self.antialias), jnp.float32)
      grid = jnp.einsum("hi,wj,ijd->hwd", rows, cols, grid, precision="highest")
    tokens = jnp.concatenate(
      [
        jnp.broadcast_to(cls + positions[:, :1], (b, 1, d)).astype(self.dtype),
        patches.reshape(b, h * w, d) + grid.reshape(1, h * w, d).astype(self.dtype),
      ],
      axis=1,
    )
    if self.num_registers:
      registers = self.param("register_tokens", nn.initializers.zeros, (1, self.num_registers, d))
      registers = jnp.broadcast_to(registers, (b, self.num_registers, d)).astype(self.dtype)
      tokens = jnp.concatenate([tokens[:, :1], registers, tokens[:, 1:]], axis=1)
    return tokens, (h, w)


class Attention(nn.Module):
  heads: int
  qkv_bias: bool
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x):
    b, n, c = x.shape
    head_dim = c // self.heads
    dense = lambda name, bias=True: nn.Dense(c, use_bias=bias, dtype=self.dtype, name=name)
    split = lambda y: y.reshape(b, n, self.heads, head_dim)
    q = split(dense("q_proj", self.qkv_bias)(x))
    k = split(dense("k_proj", self.qkv_bias)(x))
    v = split(dense("v_proj", self.qkv_bias)(x))
    logits = jnp.einsum("bqhd,bkhd->bhqk", q * head_dim**-0.5, k)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, n, c)
    return dense("o_proj")(out)


class LayerScale(nn.Module):
  value: float

  @nn.compact
  def __call__(self, x):
    scale = self.param("lambda1", nn.initializers.constant(self.value), (x.shape[-1],))
    return x * scale.astype(x.dtype)


class MLP(nn.Module):
  """GELU MLP (``fc1``, ``fc2``) or SwiGLU (``gate_proj``, ``up_proj``, ``down_proj``: hidden width
  2/3 of the ratio's, rounded up to a multiple of 8)."""

  ratio: float
  swiglu: bool
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    hidden = int(c * self.ratio)
    dense = lambda n, name: nn.Dense(n, dtype=self.dtype, name=name)
    if self.swiglu:
      hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
      return dense(c, "down_proj")(
        nn.silu(dense(hidden, "gate_proj")(x)) * dense(hidden, "up_proj")(x)
      )
    return dense(c, "fc2")(nn.gelu(dense(hidden, "fc1")(x), approximate=False))


class Block(nn.Module):
  heads: int
  mlp_ratio: float
  swiglu: bool
  qkv_bias: bool
  layerscale: float
  epsilon: float
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x):
    norm = lambda name: nn.LayerNorm(
      self.epsilon, dtype=self.dtype, use_fast_variance=False, name=name
    )
    y = Attention(self.heads, self.qkv_bias, self.dtype, name="attention")(norm("norm1")(x))
    x = x + LayerScale(self.layerscale, name="layer_scale1")(y)
    y = MLP(self.mlp_ratio, self.swiglu, self.dtype, name="mlp")(norm("norm2")(x))
    return x + LayerScale(self.layerscale, name="layer_scale2")(y)


class Encoder(nn.Module):
  depth: int
  block: dict
  remat: bool

  @nn.compact
  def __call__(self, x):
    layer = nn.remat(Block) if self.remat else Block
    for i in range(self.depth):
      x = layer(**self.block, name=str(i))(x)
    return x


@registry.register("model", "vit")
class ViT(nn.Module):
  """A DINOv2 ViT (module docstring); ``variant`` sets the width, depth and heads of ViT-S/B/L/g
  (``vit_s``...), or give them."""

  variant: str | None = None
  hidden_size: int = 384
  num_hidden_layers: int = 12
  num_attention_heads: int = 6
  mlp_ratio: float = 4.0
  use_swiglu_ffn: bool = False
  patch_size: int = 14
  position_grid: int = 37  # DINOv2's 518 / 14
  num_registers: int = 0
  antialias: bool | None = None  # of the position interpolation; default: with registers
  qkv_bias: bool = True
  layerscale_value: float = 1.0
  layer_norm_eps: float = 1e-6
  remat: bool = False
  num_classes: int | None = None  # a backbone: no classifier
  dtype: jnp.dtype = jnp.float32

  def sizes(self) -> dict:
    fields = dict(
      hidden_size=self.hidden_size,
      num_hidden_layers=self.num_hidden_layers,
      num_attention_heads=self.num_attention_heads,
      mlp_ratio=self.mlp_ratio,
      use_swiglu_ffn=self.use_swiglu_ffn,
    )
    if self.variant is not None:
      if self.variant not in VARIANTS:
        raise ValueError(f"ViT variant {self.variant!r}: use one of {sorted(VARIANTS)}")
      fields.update(VARIANTS[self.variant])
    return fields

  @nn.compact
  def __call__(self, image, train: bool = False):
    del train  # no dropout, no batch statistics
    sizes = self.sizes()
    if sizes["hidden_size"] % sizes["num_attention_heads"]:
      raise ValueError(
        f"ViT: hidden_size {sizes['hidden_size']} is not a multiple of "
        f"num_attention_heads {sizes['num_attention_heads']}"
      )
    if image.shape[1] < self.patch_size or image.shape[2] < self.patch_size:
      raise ValueError(f"ViT: the image {image.shape[1:3]} is smaller than a patch")
    antialias = self.num_registers > 0 if self.antialias is None else self.antialias
    tokens, (h, w) = Embeddings(
      sizes["hidden_size"],
      self.patch_size,
      self.position_grid,
      self.num_registers,
      antialias,
      self.dtype,
      name="embeddings",
    )(image)
    block = dict(
      heads=sizes["num_attention_heads"],
      mlp_ratio=sizes["mlp_ratio"],
      swiglu=sizes["use_swiglu_ffn"],
      qkv_bias=self.qkv_bias,
      layerscale=self.layerscale_value,
      epsilon=self.layer_norm_eps,
      dtype=self.dtype,
    )
    x = Encoder(sizes["num_hidden_layers"], block, self.remat, name="encoder")(tokens)
    x = nn.LayerNorm(
      self.layer_norm_eps, dtype=self.dtype, use_fast_variance=False, name="layernorm"
    )(x)
    x = x.astype(jnp.float32)
    patches = x[:, 1 + self.num_registers :].reshape(x.shape[0], h, w, x.shape[-1])
    return {"tokens": x, "cls": x[:, 0], "patches": patches}


# ------------------------------------------------------------------------ transformers' names
_RENAMES = (  # the Hub's files -> transformers 5's modules (its conversion_mapping for Dinov2)
  (r"attention\.attention\.query", "attention.q_proj"),
  (r"attention\.attention\.key", "attention.k_proj"),
  (r"attention\.attention\.value", "attention.v_proj"),
  (r"attention\.output\.dense", "attention.o_proj"),
  (r"mlp\.weights_out", "mlp.down_proj"),
)


def checkpoint_names(state: dict) -> dict:
  """A ``Dinov2Model`` / ``Dinov2WithRegistersModel`` state dict in transformers 5's names: the
  Hub's ``attention.attention.query`` ... renamed, SwiGLU's ``weights_in`` split in two halves
  (``gate_proj``, ``up_proj``), a leading ``dinov2.`` (a task model's backbone) dropped."""
  out = {}
  for key, value in state.items():
    key = re.sub(r"^dinov2\.", "", key)
    for pattern, replacement in _RENAMES:
      key = re.sub(pattern, replacement, key)
    if ".mlp.weights_in." in key:
      gate, up = np.split(np.asarray(value), 2, axis=0)
      out[key.replace("weights_in", "gate_proj")] = gate
      out[key.replace("weights_in", "up_proj")] = up
      continue
    out[key] = value
  return out


def hf_key(path: tuple) -> str:
  """transformers' key of a Flax variable path ``(collection, *modules, leaf)``:
  ``("params", "embeddings", "patch_embeddings", "kernel")`` ->
  ``embeddings.patch_embeddings.projection.weight``."""
  _, *modules, leaf = path
  if modules[:2] == ["embeddings", "patch_embeddings"]:
    modules = ["embeddings", "patch_embeddings", "projection"]
  if modules and modules[0] == "encoder":
    modules = ["encoder", "layer", *modules[1:]]
  leaf = {"kernel": "weight", "scale": "weight"}.get(leaf, leaf)
  return ".".join([*modules, leaf])


def sizes_from_state_dict(state: dict, config: dict | None = None) -> dict:
  """The ViT fields a state dict (transformers 5 names) and its ``config.json`` imply."""
  config = config or {}
  layers = {int(m.group(1)) for k in state for m in [re.match(r"encoder\.layer\.(\d+)\.", k)] if m}
  projection = np.shape(state["embeddings.patch_embeddings.projection.weight"])
  positions = np.shape(state["embeddings.position_embeddings"])[1] - 1
  swiglu = any(".mlp.gate_proj." in k for k in state)
  hidden = projection[0]
  mlp = np.shape(state["encoder.layer.0.mlp." + ("gate_proj" if swiglu else "fc1") + ".weight"])[0]
  fields = dict(
    hidden_size=hidden,
    num_hidden_layers=len(layers),
    num_attention_heads=config.get("num_attention_heads", max(1, hidden // 64)),
    mlp_ratio=config.get("mlp_ratio", mlp / hidden),
    use_swiglu_ffn=swiglu,
    patch_size=projection[-1],
    position_grid=int(round(positions**0.5)),
    num_registers=(
      np.shape(state["embeddings.register_tokens"])[1]
      if "embeddings.register_tokens" in state
      else 0
    ),
    qkv_bias="encoder.layer.0.attention.q_proj.bias" in state,
    layer_norm_eps=config.get("layer_norm_eps", 1e-6),
  )
  return fields
