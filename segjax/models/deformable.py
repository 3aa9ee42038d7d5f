"""Multi-scale deformable attention's sampling (Zhu et al. 2021), shaped for the TPU.

Each query has ``heads × levels × points`` samples; sample s of head h reads the 2×2 bilinear
neighbourhood of its location on its level and weighs it with its attention weight. The values
are arranged so that the per-sample work is one gathered row and small matmuls:

1. a table holds, for each pixel of each zero-padded level and each head, the ``4·d`` values of the
   head's 2×2 neighbourhood (taps in `segjax.models.sampling.bilinear_taps` order), so a sample
   reads its four taps as one row (the TPU compiler charges about a memory tile per gathered row);
2. the bilinear weights times the attention weight, per tap, form a ``[4·heads, samples]`` matrix
   per query whose row (t, h) is zero outside head h's samples; one batched matmul with the
   query's ``[samples, 4·d]`` gathered rows gives every (tap, head) pair's weighted sum at once,
   and the diagonal blocks (tap t's channels in row t) are the heads' outputs.

No per-sample array is ever laid out with a short minor axis (which the TPU pads to 128 lanes),
and the gradient is the same matmuls transposed plus one scatter-add into the table. Bytes and
FLOPs before/after: docs/models.md; equal to the sample-by-sample definition:
tests/test_mask2former.py.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def neighbourhood_table(value: jax.Array, shapes: Sequence[tuple[int, int]]) -> jax.Array:
  """``value`` ``[B,S,heads,d]`` (the levels' maps of ``shapes`` flattened and concatenated) →
  ``[B,S'·heads,4·d]``: row ``r·heads + h`` holds head h's values at the 2×2 neighbourhood whose
  top-left pixel is r of the levels' zero-padded maps (``S' = Σ (H+1)(W+1)``)."""
  batch, _, heads, dim = value.shape
  tables, start = [], 0
  for height, width in shapes:
    level = value[:, start : start + height * width].reshape(batch, height, width, heads, dim)
    start += height * width
    padded = jnp.pad(level, ((0, 0), (1, 1), (1, 1), (0, 0), (0, 0)))
    taps = [padded[:, :-1, :-1], padded[:, :-1, 1:], padded[:, 1:, :-1], padded[:, 1:, 1:]]
    tables.append(jnp.concatenate(taps, -1).reshape(batch, -1, heads, 4 * dim))
  return jnp.concatenate(tables, 1).reshape(batch, -1, 4 * dim)


def ms_deform_attn(
  value: jax.Array, shapes: Sequence[tuple[int, int]], locations: jax.Array, weights: jax.Array
) -> jax.Array:
  """``value`` ``[B,S,heads,d]``, ``locations`` ``[B,N,heads,levels,points,2]`` ((x, y) in [0, 1],
  PyTorch's ``grid_sample`` convention: zeros outside, ``align_corners=False``) and ``weights``
  ``[B,N,heads,levels,points]`` → ``[B,N,heads·d]``: per head, the weighted sum of the values
  bilinearly sampled at the locations (module docstring)."""
  batch, _, heads, dim = value.shape
  _, queries, _, levels, points, _ = locations.shape
  samples = heads * levels * points
  # Per-sample constants, samples in (head, level, point) order.
  level = np.tile(np.repeat(np.arange(levels), points), heads)
  head = np.repeat(np.arange(heads), levels * points)
  height = np.array([h for h, _ in shapes], np.float32)[level]
  width = np.array([w for _, w in shapes], np.float32)[level]
  sizes = [(h + 1) * (w + 1) for h, w in shapes]
  first_row = np.cumsum([0] + sizes)[:-1][level]
  locations = locations.reshape(batch, queries, samples, 2).astype(jnp.float32)
  x = locations[..., 0] * width - 0.5
  y = locations[..., 1] * height - 0.5
  x0, y0 = jnp.floor(x), jnp.floor(y)
  row = (first_row + jnp.clip(y0 + 1, 0, height) * (width + 1) + jnp.clip(x0 + 1, 0, width)).astype(
    jnp.int32
  )
  index = row * heads + head  # [B, N, samples]
  attention = weights.reshape(batch, queries, samples).astype(jnp.float32)
  tap_weights = []
  for dy in (0, 1):
    for dx in (0, 1):
      xi, yi = x0 + dx, y0 + dy
      inside = (xi >= 0) & (xi <= width - 1) & (yi >= 0) & (yi <= height - 1)
      weight = (1 - jnp.abs(x - xi)) * (1 - jnp.abs(y - yi)) * attention
      tap_weights.append(jnp.where(inside, weight, 0.0))
  own_head = jnp.asarray(
    head[None, :] == np.arange(heads)[:, None], jnp.float32
  )  # [heads, samples]
  mixing = (jnp.stack(tap_weights, 2)[:, :, :, None, :] * own_head).reshape(
    batch, queries, 4 * heads, samples
  )
  # Per image (a batch dimension of the gather): a batch sharded over devices stays local.
  rows = jax.vmap(lambda table, i: jnp.take(table, i, axis=0))(
    neighbourhood_table(value, shapes), index
  )  # [B, N, samples, 4·d]
  exact = value.dtype == jnp.float32  # bf16 models: one MXU pass, weights rounded to bf16
  mixed = jnp.einsum(
    "bnrs,bnsx->bnrx",
    mixing if exact else mixing.astype(rows.dtype),
    rows,
    precision=jax.lax.Precision.HIGHEST if exact else None,
    preferred_element_type=jnp.float32,
  ).reshape(batch, queries, 4, heads, 4 * dim)
  out = sum(mixed[:, :, t, :, t * dim : (t + 1) * dim] for t in range(4))  # [B, N, heads, d]
  return out.reshape(batch, queries, heads * dim).astype(value.dtype)
