"""Morphological clean-up of predicted label maps and instances from semantic masks, with OpenCV.

Binary operations act per class on the class's mask; where a class loses pixels they take the
class that surrounds them (the most frequent label of the removed region's 1-pixel border), so the
map stays a full labelling. Instances come from a semantic mask by connected components or by a
watershed on the distance transform (which splits touching round objects: nuclei, buildings).
In a config they are steps of ``config.postprocess`` (`segjax.postprocess`), e.g.
``"argmax|opening(classes=(2, 3), size=5)|remove_small(30)|fill_holes(max_area=200)"``.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

KERNELS = {"ellipse": cv2.MORPH_ELLIPSE, "rect": cv2.MORPH_RECT, "cross": cv2.MORPH_CROSS}
MORPHOLOGY = {
  "opening": cv2.MORPH_OPEN,
  "closing": cv2.MORPH_CLOSE,
  "erosion": cv2.MORPH_ERODE,
  "dilation": cv2.MORPH_DILATE,
}


def kernel(shape: str = "ellipse", size: int = 3) -> np.ndarray:
  if shape not in KERNELS:
    raise ValueError(f"kernel must be one of {sorted(KERNELS)}, not {shape!r}")
  if size < 1:
    raise ValueError(f"kernel size must be >= 1, not {size}")
  return cv2.getStructuringElement(KERNELS[shape], (size, size))


def _classes(labels, classes):
  return [int(c) for c in (np.unique(labels) if classes is None else classes)]


def _fill_from_surroundings(
  labels: np.ndarray, region: np.ndarray, fallback: int, exclude: int | None = None
) -> np.ndarray:
  """Gives each connected part of ``region`` the most frequent label on its outer 1-px border
  (other than ``exclude``; ``fallback`` when there is none)."""
  out = labels.copy()
  count, parts = cv2.connectedComponents(region.astype(np.uint8), connectivity=8)
  ring_kernel = np.ones((3, 3), np.uint8)
  for part in range(1, count):
    mask = parts == part
    ring = cv2.dilate(mask.astype(np.uint8), ring_kernel).astype(bool) & ~region
    if exclude is not None:
      ring &= labels != exclude
    values = labels[ring].astype(np.int64)
    out[mask] = np.bincount(values).argmax() if values.size else fallback
  return out


def morphology(
  labels: np.ndarray,
  op: str,
  *,
  classes: Sequence[int] | None = None,
  kernel_shape: str = "ellipse",
  size: int = 3,
  fill: int = 0,
) -> np.ndarray:
  """Opening / closing / erosion / dilation of each class's mask in turn. Pixels a class gains
  are taken from others; pixels it loses get the surrounding label (``fill`` if there is none)."""
  if op not in MORPHOLOGY:
    raise ValueError(f"morphology op must be one of {sorted(MORPHOLOGY)}, not {op!r}")
  out = np.asarray(labels).copy()
  structure = kernel(kernel_shape, size)
  for c in _classes(out, classes):
    mask = (out == c).astype(np.uint8)
    changed = cv2.morphologyEx(mask, MORPHOLOGY[op], structure, borderType=cv2.BORDER_REPLICATE)
    gained, lost = (changed == 1) & (mask == 0), (changed == 0) & (mask == 1)
    out[gained] = c
    if lost.any():
      out = _fill_from_surroundings(out, lost, fill, exclude=c)
  return out


def remove_small(
  labels: np.ndarray,
  min_area: int,
  *,
  classes: Sequence[int] | None = None,
  fill: int | str = "surrounding",
) -> np.ndarray:
  """Removes 8-connected components smaller than ``min_area`` pixels; their pixels get the
  surrounding label (``fill="surrounding"``) or the class ``fill``."""
  out = np.asarray(labels).copy()
  for c in _classes(out, classes):
    count, parts, stats, _ = cv2.connectedComponentsWithStats(
      (out == c).astype(np.uint8), connectivity=8
    )
    small = np.isin(parts, [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] < min_area])
    if not small.any():
      continue
    if fill == "surrounding":
      out = _fill_from_surroundings(out, small, fallback=c, exclude=c)
    else:
      out[small] = int(fill)
  return out


def fill_holes(
  labels: np.ndarray, *, classes: Sequence[int] | None = None, max_area: int | None = None
) -> np.ndarray:
  """Fills the holes of each class's regions (parts of other labels enclosed by it, not touching
  the image border), those up to ``max_area`` pixels if given."""
  out = np.asarray(labels).copy()
  for c in _classes(out, classes):
    outside = (out != c).astype(np.uint8)
    count, parts, stats, _ = cv2.connectedComponentsWithStats(outside, connectivity=4)
    height, width = out.shape
    for i in range(1, count):
      x, y, w, h, area = stats[i]
      touches_border = x == 0 or y == 0 or x + w == width or y + h == height
      if not touches_border and (max_area is None or area <= max_area):
        out[parts == i] = c
  return out


def connected_instances(mask: np.ndarray, *, min_area: int = 0) -> np.ndarray:
  """Instance ids 1..N (uint16; 0 = background) of the 8-connected components of a binary mask."""
  count, parts, stats, _ = cv2.connectedComponentsWithStats(
    np.asarray(mask, np.uint8), connectivity=8
  )
  keep = [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= min_area]
  lookup = np.zeros(count, np.uint16)
  lookup[keep] = np.arange(1, len(keep) + 1)
  return lookup[parts]


def watershed_instances(
  mask: np.ndarray, *, min_distance: float = 0.6, min_area: int = 0
) -> np.ndarray:
  """Instances of a binary mask split by a watershed on its distance transform: markers are the
  regions farther than ``min_distance`` × (the component's largest distance) from the
  background, so touching round objects separate at their neck. Returns uint16 ids 1..N."""
  mask = np.asarray(mask, np.uint8)
  if not mask.any():
    return np.zeros(mask.shape, np.uint16)
  distance = cv2.distanceTransform(mask, cv2.DIST_L2, 5)
  components = connected_instances(mask)
  peaks = np.zeros(mask.shape, np.uint8)
  for i in range(1, int(components.max()) + 1):
    part = components == i
    peaks |= (part & (distance >= min_distance * distance[part].max())).astype(np.uint8)
  count, markers = cv2.connectedComponents(peaks, connectivity=8)
  markers = markers.astype(np.int32)
  markers[(mask == 1) & (peaks == 0)] = 0  # to be flooded
  markers[mask == 0] = count  # background marker
  relief = cv2.cvtColor(np.uint8(255 * (1 - distance / distance.max())), cv2.COLOR_GRAY2BGR)
  cv2.watershed(relief, markers)
  markers[(markers == count) | (markers < 0) | (mask == 0)] = 0
  # watershed lines (-1) inside the mask: give them a neighbouring instance
  out = markers.astype(np.int64)
  lines = (mask == 1) & (out == 0)
  if lines.any():
    grown = cv2.dilate(out.astype(np.float32), np.ones((3, 3), np.uint8)).astype(np.int64)
    out[lines] = grown[lines]
  ids = np.unique(out[out > 0])
  areas = {i: int((out == i).sum()) for i in ids}
  keep = [i for i in ids if areas[i] >= min_area]
  lookup = np.zeros(int(out.max()) + 1, np.uint16)
  lookup[keep] = np.arange(1, len(keep) + 1)
  return lookup[out]
