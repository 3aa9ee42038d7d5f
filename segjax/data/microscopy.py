"""Microscopy frames for experiments/microscopy.py: one annotated frame split into a training and a
held-out region (written as a folder dataset), and the classical baseline, Otsu thresholding,
scored with the metrics and post-processing of a trained model."""

from __future__ import annotations

import os
import zipfile

import cv2
import numpy as np

from segjax import files
from segjax import metrics
from segjax import postprocess
from segjax.data import folder

# The 2018 Data Science Bowl frame that the stardist wheel ships (stardist/data/images/).
WHEEL_MEMBERS = {
  "image": "stardist/data/images/img2d.tif",
  "instances": "stardist/data/images/mask2d.tif",
}


def _decode(data: bytes, where: str) -> np.ndarray:
  array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
  if array is None or array.ndim != 2 or array.dtype not in (np.uint8, np.uint16):
    raise folder.BadFileError(f"{where}: not a single-channel 8- or 16-bit image")
  return array


def read_frame(source: str) -> tuple[np.ndarray, np.ndarray]:
  """``(image, instances)`` ``[H,W]`` of ``source``: the stardist wheel (a zip, read in place) or a
  folder holding ``img2d.tif`` and ``mask2d.tif`` (or ``stardist/data/images/`` below it)."""
  names = {key: os.path.basename(member) for key, member in WHEEL_MEMBERS.items()}
  if os.path.isdir(source):
    inner = os.path.join(source, os.path.dirname(WHEEL_MEMBERS["image"]))
    base = inner if os.path.exists(os.path.join(inner, names["image"])) else source
    found = {}
    for key, name in names.items():
      path = os.path.join(base, name)
      if not os.path.exists(path):
        raise FileNotFoundError(
          f"{path} does not exist (--source needs {names['image']} and {names['instances']})"
        )
      with open(path, "rb") as f:
        found[key] = _decode(f.read(), path)
  elif zipfile.is_zipfile(source):
    with zipfile.ZipFile(source) as wheel:
      missing = sorted(set(WHEEL_MEMBERS.values()) - set(wheel.namelist()))
      if missing:
        raise folder.BadFileError(
          f"{source}: no {', '.join(missing)} in it (stardist wheels 0.9.x ship them)"
        )
      found = {
        key: _decode(wheel.read(member), f"{source}:{member}")
        for key, member in WHEEL_MEMBERS.items()
      }
  else:
    raise FileNotFoundError(f"{source}: neither a folder nor a wheel (zip) file")
  if found["image"].shape != found["instances"].shape:
    raise folder.BadFileError(
      f"{source}: image {found['image'].shape} and instances "
      f"{found['instances'].shape} differ in size"
    )
  return found["image"], found["instances"]


def regions(width: int) -> dict[str, slice]:
  """Columns of each split: the left half trains, the right half is held out (``val``)."""
  return {"train": slice(0, width // 2), "val": slice(width // 2, width)}


def renumber(instances: np.ndarray) -> np.ndarray:
  """Instance ids 1..N in order of first appearance in the ids' sorted order; 0 stays 0."""
  ids = np.unique(instances[instances > 0])
  lookup = np.zeros(int(instances.max()) + 1, np.uint16)
  lookup[ids] = np.arange(1, len(ids) + 1)
  return lookup[instances]


def write_regions(root: str, image: np.ndarray, instances: np.ndarray, name: str = "frame") -> str:
  """Writes the `regions` of a frame as a folder dataset under ``root``: ``<split>/images/NAME.tif``
  (as stored), ``masks/NAME.png`` (1 = nucleus) and ``instances/NAME.png`` (renumbered per
  region; a nucleus cut by the border is one instance on each side). Returns ``root``."""
  for split, columns in regions(image.shape[1]).items():
    ids = renumber(instances[:, columns])
    for kind, array, ext in (
      ("images", image[:, columns], ".tif"),
      ("masks", (ids > 0).astype(np.uint8), ".png"),
      ("instances", ids, ".png"),
    ):
      path = os.path.join(root, split, kind, name + ext)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with files.atomic_path(path) as tmp:
        if not cv2.imwrite(tmp, np.ascontiguousarray(array)):
          raise OSError(f"could not write {path}")
  return root


def held_out(image: np.ndarray, instances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The held-out region's image and renumbered instances."""
  columns = regions(image.shape[1])["val"]
  return image[:, columns], renumber(instances[:, columns])


def otsu_threshold(values: np.ndarray) -> float:
  """Otsu's threshold of integer intensities: the ``t`` maximising the between-class variance
  ``w0 w1 (mu0 - mu1)²`` of ``values <= t`` against ``values > t``, over every integer level
  (exact for 8- and 16-bit images; no binning). Pixels above ``t`` are foreground."""
  values = np.asarray(values)
  if values.dtype.kind not in "iu":
    raise ValueError(f"otsu_threshold needs integer intensities, not {values.dtype}")
  low = int(values.min())
  counts = np.bincount((values.ravel() - low).astype(np.int64)).astype(np.float64)
  levels = np.arange(len(counts), dtype=np.float64)
  w0 = np.cumsum(counts)[:-1]
  s0 = np.cumsum(counts * levels)[:-1]
  total, s_total = counts.sum(), (counts * levels).sum()
  w1 = total - w0
  with np.errstate(divide="ignore", invalid="ignore"):
    between = w0 * w1 * (s0 / w0 - (s_total - s0) / w1) ** 2
  if not np.isfinite(between).any():
    raise ValueError("otsu_threshold: the image has a single intensity")
  return float(low + np.nanargmax(np.where(np.isfinite(between), between, np.nan)))


def _instance_chain(config) -> str:
  """``config.postprocess`` without its ``argmax`` step: what turns a class map into instances."""
  return "|".join(p for p in config.postprocess.split("|") if p.strip() and p.strip() != "argmax")


def score(semantic: np.ndarray, instances: np.ndarray, config) -> dict:
  """Nucleus IoU, and PQ of the instances ``config.postprocess`` makes of ``semantic`` (0/1)."""
  descriptor = folder.descriptor_of(
    folder.configured_classes(config.data.classes, config.data.thing_classes)
  )
  chain = postprocess.Chain(_instance_chain(config), descriptor)
  predicted = chain({"semantic": semantic[None].astype(np.int32)})["panoptic"][0]
  truth = np.where(instances > 0, descriptor.label_divisor + instances.astype(np.int32), 0)
  cm = metrics.confusion_matrix(semantic.ravel(), (instances > 0).astype(np.int32).ravel(), 2)
  pq = metrics.panoptic_quality(
    predicted,
    truth,
    label_divisor=descriptor.label_divisor,
    thing_classes=descriptor.thing_classes,
    stuff_classes=descriptor.stuff_classes,
  )
  return {"iou": float(metrics.iou(np.asarray(cm))[1]), **_pq_fields(pq["things"])}


def _pq_fields(things: dict) -> dict:
  return {"pq": float(things["pq"]), "sq": float(things["sq"]), "rq": float(things["rq"])}


def threshold_row(region: tuple[np.ndarray, np.ndarray], config, *, sigma: float = 0.0) -> dict:
  """Otsu's threshold of the held-out image (after a Gaussian of ``sigma`` when > 0), scored by
  `score`."""
  image, instances = region
  if sigma > 0:
    image = np.round(cv2.GaussianBlur(image.astype(np.float32), (0, 0), sigma)).astype(image.dtype)
  threshold = otsu_threshold(image)
  return {"threshold": threshold, **score((image > threshold).astype(np.int32), instances, config)}


def model_row(summary: dict, config) -> dict:
  """The trained model's row from its evaluation ``summary`` (final_metrics.json)."""
  name = config.data.classes[config.data.thing_classes[0]]
  return {"iou": float(summary["iou"][name]), **_pq_fields(summary["panoptic"]["things"])}


def markdown(rows: dict[str, dict]) -> str:
  lines = ["| method | nucleus IoU | PQ | SQ | RQ |", "|---|---:|---:|---:|---:|"]
  for name, row in rows.items():
    lines.append(
      f"| {name} | {row['iou']:.3f} | {row['pq']:.3f} | {row['sq']:.3f} | {row['rq']:.3f} |"
    )
  return "\n".join(lines)
