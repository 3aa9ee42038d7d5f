"""Patches of high-resolution images: a grid with overlap, exact reassembly, filtering by labelled
fraction; the training stream samples them (`segjax.data.stream`, with NVIDIA's class-uniform
sampling). This module is numpy only (prediction imports it without TensorFlow); the
training stream cuts patches of tf.data examples in `segjax.data.stream`.

The grid covers every pixel: positions step by ``stride`` and the last row/column of patches is
aligned to the image border (an image smaller than the patch is padded: labels with the ignore
label, instances with 0, the image with 0).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


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
