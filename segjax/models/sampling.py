"""Bilinear sampling and resizing as PyTorch computes them, for models and losses.

`bilinear_taps` and `bilinear_sample` are PyTorch's ``grid_sample(2 * points - 1,
mode="bilinear", padding_mode="zeros", align_corners=False)`` with points (x, y) in [0, 1];
`separable_point_values` computes the same values as matmuls with hat weights,
which on TPU costs a fraction of the bytes of gathering taps (docs/models.md); `resize_bilinear`
is ``interpolate(mode="bilinear", align_corners=False)`` without antialiasing. (`segjax.models.common.resize` antialiases when
shrinking, as `jax.image.resize` does: the convolutional models' choice.)
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp


def resize_bilinear(x: jax.Array, shape: Sequence[int]) -> jax.Array:
  """Bilinear resize of the two axes before the last of ``x`` (``[..., H, W, C]``) without
  antialiasing: PyTorch's ``interpolate(mode="bilinear", align_corners=False)`` also when
  shrinking (`jax.image.resize` would blur first)."""
  shape = tuple(int(s) for s in shape)
  if tuple(x.shape[-3:-1]) == shape:
    return x
  scale = jnp.array([shape[0] / x.shape[-3], shape[1] / x.shape[-2]], jnp.float32)
  out_shape = (*x.shape[:-3], *shape, x.shape[-1])
  return jax.image.scale_and_translate(
    x,
    out_shape,
    (x.ndim - 3, x.ndim - 2),
    scale,
    jnp.zeros(2, jnp.float32),
    "linear",
    antialias=False,
  ).astype(x.dtype)


def _pixel_coordinates(points: jax.Array, height: int, width: int):
  """(x, y) in [0, 1] → continuous column and row: pixel (i, j) covers [j, j+1) × [i, i+1) / (W,
  H), so x maps to column ``x·W − 0.5``."""
  x = points[..., 0].astype(jnp.float32) * width - 0.5
  y = points[..., 1].astype(jnp.float32) * height - 0.5
  return x, y


def bilinear_taps(points: jax.Array, height: int, width: int):
  """The four taps of bilinear sampling at ``points`` ``[...,2]`` = (x, y) in [0, 1] on a
  ``height`` × ``width`` map: flat pixel indices ``[...,4]`` (int32) and weights ``[...,4]``, zero
  for taps outside the map."""
  x, y = _pixel_coordinates(points, height, width)
  x0, y0 = jnp.floor(x), jnp.floor(y)
  indices, weights = [], []
  for dy in (0, 1):
    for dx in (0, 1):
      xi, yi = x0 + dx, y0 + dy
      inside = (xi >= 0) & (xi <= width - 1) & (yi >= 0) & (yi <= height - 1)
      weight = (1 - jnp.abs(x - xi)) * (1 - jnp.abs(y - yi))
      indices.append(
        (jnp.clip(yi, 0, height - 1) * width + jnp.clip(xi, 0, width - 1)).astype(jnp.int32)
      )
      weights.append(jnp.where(inside, weight, 0.0))
  return jnp.stack(indices, -1), jnp.stack(weights, -1)


def bilinear_sample(value: jax.Array, points: jax.Array) -> jax.Array:
  """``value`` ``[B,H,W,C]`` sampled at ``points`` ``[B,N,2]`` = (x, y) in [0, 1] → ``[B,N,C]``
  (`bilinear_taps`).

  One gathered row per point: a table holds, for each pixel of the zero-padded map, the ``4·C``
  values of its 2×2 neighbourhood, so a point reads its four taps at once (the TPU compiler
  charges about a memory tile per gathered row: 4x fewer rows than one gather per tap)."""
  batch, height, width, channels = value.shape
  padded = jnp.pad(value, ((0, 0), (1, 1), (1, 1), (0, 0)))
  table = jnp.concatenate(
    [padded[:, :-1, :-1], padded[:, :-1, 1:], padded[:, 1:, :-1], padded[:, 1:, 1:]], axis=-1
  )  # taps in bilinear_taps' order
  table = table.reshape(batch, (height + 1) * (width + 1), 4 * channels)
  x, y = _pixel_coordinates(points, height, width)
  _, weight = bilinear_taps(points, height, width)  # [B, N, 4], zero for taps outside the map
  row = (
    jnp.clip(jnp.floor(y) + 1, 0, height) * (width + 1) + jnp.clip(jnp.floor(x) + 1, 0, width)
  ).astype(jnp.int32)
  taps = jnp.take_along_axis(table, row[..., None], axis=1)  # [B, N, 4·C]
  taps = taps.reshape(*taps.shape[:-1], 4, channels).astype(jnp.float32)
  return jnp.einsum("bnkc,bnk->bnc", taps, weight).astype(value.dtype)


def separable_point_values(maps: jax.Array, points: jax.Array) -> jax.Array:
  """``maps`` ``[N,H,W]`` each sampled at its own ``points`` ``[N,P,2]`` → ``[N,P]`` without
  gathers: bilinear interpolation is separable, ``Σ_ij wy[p,i] · maps[i,j] · wx[p,j]`` with the hat
  weights ``wy[p,i] = max(0, 1 − |y_p − i|)`` (zero for taps outside the map, as `bilinear_taps`),
  so one batched matmul ``[P,H] × [H,W]`` and a weighted row sum give the values (matmul
  precision: the backend's default)."""
  height, width = maps.shape[1:]
  x, y = _pixel_coordinates(points, height, width)
  wy = jnp.maximum(0.0, 1.0 - jnp.abs(y[..., None] - jnp.arange(height, dtype=jnp.float32)))
  wx = jnp.maximum(0.0, 1.0 - jnp.abs(x[..., None] - jnp.arange(width, dtype=jnp.float32)))
  rows = jnp.einsum("nph,nhw->npw", wy, maps.astype(jnp.float32))
  return jnp.sum(rows * wx, axis=-1)
