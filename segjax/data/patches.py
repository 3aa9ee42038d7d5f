"""Patches of high-resolution images: a grid with overlap, exact reassembly, filtering by labelled
fraction; the training stream samples them (`segjax.data.stream`, with NVIDIA's class-uniform
sampling).

The grid covers every pixel: positions step by ``stride`` and the last row/column of patches is
aligned to the image border (an image smaller than the patch is padded: labels with the ignore
label, instances with 0, the image with 0).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from segjax.data import ops


def grid_starts(length: int, size: int, stride: int) -> list[int]:
  """Start offsets along one axis: 0, stride, 2 stride, ... and ``length - size`` last."""
  if size <= 0 or stride <= 0:
    raise ValueError(f"patch size {size} and stride {stride} must be positive")
  if length <= size:
    return [0]
  starts = list(range(0, length - size + 1, stride))
  if starts[-1] != length - size:
    starts.append(length - size)
  return starts


def grid_positions(height: int, width: int, size: Sequence[int], stride: Sequence[int]):
  return [
    (y, x)
    for y in grid_starts(height, size[0], stride[0])
    for x in grid_starts(width, size[1], stride[1])
  ]


def extract_patches(array: np.ndarray, size: Sequence[int], stride: Sequence[int]):
  """``(patches [N, ph, pw, ...], positions [(y, x)])`` of a numpy ``[H, W, ...]`` array (padded
  with zeros at the bottom/right when smaller than the patch)."""
  height, width = array.shape[:2]
  pad = [(0, max(0, size[0] - height)), (0, max(0, size[1] - width))] + [(0, 0)] * (array.ndim - 2)
  padded = np.pad(array, pad)
  positions = grid_positions(height, width, size, stride)
  patches = np.stack([padded[y : y + size[0], x : x + size[1]] for y, x in positions])
  return patches, positions


def reassemble(patches: np.ndarray, positions, shape: Sequence[int]) -> np.ndarray:
  """The inverse of `extract_patches`: overlaps are averaged (exact when the patches agree there),
  padding is cropped; ``shape`` = (H, W) of the original."""
  height, width = shape[:2]
  full_h = max(height, patches.shape[1])
  full_w = max(width, patches.shape[2])
  total = np.zeros((full_h, full_w) + patches.shape[3:], np.float64)
  count = np.zeros((full_h, full_w) + (1,) * (patches.ndim - 3), np.float64)
  for patch, (y, x) in zip(patches, positions):
    total[y : y + patch.shape[0], x : x + patch.shape[1]] += patch
    count[y : y + patch.shape[0], x : x + patch.shape[1]] += 1
  return (total / count)[:height, :width].astype(patches.dtype)


def pad_to_patch(example: dict, size: Sequence[int], ignore_label: int) -> dict:
  """An (unbatched) example padded at the bottom/right to at least one patch."""
  return ops.pad_example(example, size, ignore_label=ignore_label)


def tf_grid(height, width, size: Sequence[int], stride: Sequence[int]) -> tf.Tensor:
  """`grid_positions` of an image of tensor height/width, as int32 ``[N, 2]`` (y, x)."""
  grid = tf.numpy_function(
    lambda h, w: np.array(grid_positions(int(h), int(w), size, stride), np.int32).reshape(-1, 2),
    [height, width],
    tf.int32,
    stateful=False,
  )
  return tf.ensure_shape(grid, [None, 2])


def cut_patch(example: dict, position, size: Sequence[int]) -> dict:
  """The patch of ``size`` at ``position`` (y, x) of every per-pixel map of a padded example;
  other keys are copied; ``patch_position`` is added."""
  out = dict(example)
  for key in ops.spatial_keys(example):
    value = example[key]
    out[key] = tf.ensure_shape(
      value[position[0] : position[0] + size[0], position[1] : position[1] + size[1]],
      [size[0], size[1]] + value.shape[2:],
    )
  out["patch_position"] = position
  return out
