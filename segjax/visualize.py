"""Pictures of images, labels and predictions."""
from __future__ import annotations

import os

import cv2
import numpy as np

from segjax.data.descriptor import DatasetDescriptor


def denormalize(image: np.ndarray, mean, std) -> np.ndarray:
  """Inverts ``ops.normalize`` to a uint8 RGB picture."""
  pixels = (np.asarray(image, np.float32) * np.asarray(std) + np.asarray(mean)) * 255.0
  return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def colorize_panoptic(panoptic: np.ndarray, descriptor: DatasetDescriptor) -> np.ndarray:
  """RGB ``[H,W,3]`` uint8 of a panoptic id map: stuff in its class colour, each thing instance in
  its own shade of its class colour (brightness by the golden ratio of its id), outlines between
  segments white; void (the ignore label) white."""
  panoptic = np.asarray(panoptic)
  divisor = descriptor.label_divisor
  semantic, instance = panoptic // divisor, panoptic % divisor
  rgb = descriptor.colorize(semantic).astype(np.float32)
  shade = 0.45 + 0.55 * ((instance * 0.6180339887) % 1.0)
  rgb = np.where((instance > 0)[..., None], rgb * shade[..., None], rgb)
  edge = np.zeros(panoptic.shape, bool)
  edge[:-1] |= panoptic[:-1] != panoptic[1:]
  edge[:, :-1] |= panoptic[:, :-1] != panoptic[:, 1:]
  rgb[edge & (instance > 0)] = 255
  return rgb.astype(np.uint8)


def side_by_side(image: np.ndarray, prediction: np.ndarray, descriptor: DatasetDescriptor,
                 label: np.ndarray | None = None, alpha: float = 0.55,
                 panoptic: bool = False) -> np.ndarray:
  """``[H, k*W, 3]`` uint8: the image, the ground truth (if given), the prediction over the image.
  With ``panoptic``, ``prediction`` and ``label`` are panoptic id maps (`colorize_panoptic`)."""
  colorize = (lambda x: colorize_panoptic(x, descriptor)) if panoptic else descriptor.colorize
  overlay = (alpha * colorize(prediction) + (1 - alpha) * image).astype(np.uint8)
  panels = [image] + ([colorize(label)] if label is not None else []) + [overlay]
  gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
  return np.concatenate(sum(([p, gap] for p in panels), [])[:-1], axis=1)


def write_png(path: str, rgb: np.ndarray) -> None:
  """Writes an RGB picture atomically (temporary file, then rename)."""
  tmp = f"{path}.tmp{os.getpid()}.png"
  if not cv2.imwrite(tmp, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
    raise OSError(f"Could not write {path}.")
  os.replace(tmp, path)
