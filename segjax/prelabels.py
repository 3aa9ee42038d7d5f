"""Pre-labels for annotation tools: masks, instances, COCO JSON and labelme JSON, plus a ranking of
images by uncertainty so that people correct the worst predictions first.

An export directory is laid out like one split of a folder dataset (`segjax.data.folder`), so the
corrected labels train the next model directly::

  OUT/images/NAME.png        the input (copied)
  OUT/masks/NAME.png         indexed-palette PNG: index = class id, palette = the class colours
  OUT/instances/NAME.png     16-bit instance ids (0 = none), when instances were extracted
  OUT/annotations.json       COCO (--format=coco): RLE masks (pycocotools) and polygons
  OUT/labelme/NAME.json      labelme polygons (--format=labelme)
  OUT/classes.json           the class table (read from here when OUT is a split of a dataset)
  OUT/review.csv             images from least to most confident
  OUT/records/NAME.json      each image's review row and COCO regions, written last: an image
                             with a record is done (a run started again skips it)
"""

from __future__ import annotations

import csv
import os
from typing import Sequence

import cv2
import numpy as np

from segjax import files
from segjax.data.descriptor import DatasetDescriptor


def safe_name(name: str) -> str:
  """``name`` if it is a plain file stem; refuses anything that could leave the output directory."""
  if (
    not name
    or name in (".", "..")
    or "/" in name
    or "\\" in name
    or "\x00" in name
    or os.path.isabs(name)
    or name.startswith("..")
  ):
    raise ValueError(
      f"refusing output file name {name!r}: it must be a plain name, without directories or '..'"
    )
  return name


def output_path(directory: str, sub: str, name: str, suffix: str) -> str:
  """``directory/sub/name+suffix``, created, and checked to lie inside ``directory``."""
  folder = os.path.join(directory, sub) if sub else directory
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, safe_name(name) + suffix)
  if os.path.commonpath([os.path.realpath(path), os.path.realpath(directory)]) != os.path.realpath(
    directory
  ):
    raise ValueError(f"refusing to write {path}: outside {directory}")
  return path


def write_indexed_png(path: str, labels: np.ndarray, colormap: Sequence[Sequence[int]]) -> str:
  """A palette PNG whose pixel values are the class ids (as PASCAL VOC masks)."""
  from PIL import Image  # pylint: disable=import-outside-toplevel

  labels = np.asarray(labels)
  if labels.max(initial=0) > 255:
    raise ValueError(f"{path}: class ids above 255 do not fit an indexed PNG")
  pil = Image.fromarray(labels.astype(np.uint8), mode="P")
  palette = [v for colour in colormap for v in colour][:768]
  pil.putpalette(palette + [0] * (768 - len(palette)))
  return files.write_atomic(path, lambda tmp: pil.save(tmp, format="PNG"))


def write_instance_png(path: str, instance: np.ndarray) -> str:
  """16-bit PNG of instance ids (0 = none)."""

  def write(tmp):
    if not cv2.imwrite(tmp, np.asarray(instance, np.uint16)):
      raise OSError(f"could not write {path}")

  return files.write_atomic(path, write)


# ------------------------------------------------------------------------ regions and polygons
def background_class(descriptor: DatasetDescriptor) -> int | None:
  """The id of the class named "background" (any case), which annotation files leave out."""
  names = [n.lower() for n in descriptor.class_names]
  return names.index("background") if "background" in names else None


def export_stuff(descriptor: DatasetDescriptor, asked: bool | None = None) -> bool:
  """Whether pre-labels carry stuff regions: as ``asked`` (``config.predict.export_stuff``); by
  default only for datasets without thing classes (semantic segmentation), where every class is
  stuff; datasets with things get instance annotations of their things."""
  return (not descriptor.thing_classes) if asked is None else bool(asked)


def regions(
  labels: np.ndarray, instance: np.ndarray | None, descriptor: DatasetDescriptor, stuff: bool = True
):
  """``(class_id, instance_id, mask)`` for every thing instance (when ``instance`` is given) and,
  with ``stuff``, every stuff class present (one region each); the ignore label and the
  background class are skipped (an annotation covering the image's background would only be
  noise to correct)."""
  labels = np.asarray(labels)
  out = []
  for c in np.unique(labels):
    c = int(c)
    if c in (descriptor.ignore_label, background_class(descriptor)):
      continue
    if not stuff and c not in descriptor.thing_classes:
      continue
    mask = labels == c
    if instance is not None and c in descriptor.thing_classes:
      for i in np.unique(instance[mask]):
        if i > 0:
          out.append((c, int(i), mask & (instance == i)))
    else:
      out.append((c, 0, mask))
  return out


def polygons(mask: np.ndarray, min_points: int = 3) -> list[list[float]]:
  """Outer contours of a binary mask as flat ``[x1, y1, x2, y2, ...]`` lists (pixel corners)."""
  contours, _ = cv2.findContours(
    np.asarray(mask, np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
  )
  return [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= min_points]


# ------------------------------------------------------------------------ COCO and labelme
class CocoWriter:
  """Accumulates images and their regions into one COCO annotations dict (RLE + polygons)."""

  def __init__(self, descriptor: DatasetDescriptor, stuff: bool = True):
    self.descriptor, self.stuff = descriptor, stuff
    self.data = {
      "images": [],
      "annotations": [],
      "categories": [
        {"id": i, "name": n, "isthing": int(i in descriptor.thing_classes)}
        for i, n in enumerate(descriptor.class_names)
        if i != background_class(descriptor)
      ],
    }

  def add(
    self,
    file_name: str,
    labels: np.ndarray,
    instance: np.ndarray | None = None,
    scores: dict | None = None,
  ) -> None:
    from pycocotools import mask as mask_utils  # pylint: disable=import-outside-toplevel

    image_id = len(self.data["images"]) + 1
    height, width = labels.shape
    self.data["images"].append(
      {"id": image_id, "file_name": file_name, "height": height, "width": width}
    )
    for class_id, instance_id, mask in regions(labels, instance, self.descriptor, self.stuff):
      rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
      rle["counts"] = rle["counts"].decode("ascii")
      ann = {
        "id": len(self.data["annotations"]) + 1,
        "image_id": image_id,
        "category_id": class_id,
        "iscrowd": 0,
        "segmentation": rle,
        "polygons": polygons(mask),
        "area": int(mask.sum()),
        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
      }
      if scores is not None and (class_id, instance_id) in scores:
        ann["score"] = float(scores[(class_id, instance_id)])
      self.data["annotations"].append(ann)

  def extend(self, regions: dict) -> None:
    """Adds one image and its annotations written by another writer (``{"image", "annotations"}``
    of a one-image `CocoWriter`), renumbering their ids after those already here."""
    image_id = len(self.data["images"]) + 1
    self.data["images"].append({**regions["image"], "id": image_id})
    for ann in regions["annotations"]:
      self.data["annotations"].append(
        {**ann, "id": len(self.data["annotations"]) + 1, "image_id": image_id}
      )


def labelme(
  file_name: str,
  labels: np.ndarray,
  instance: np.ndarray | None,
  descriptor: DatasetDescriptor,
  stuff: bool = True,
) -> dict:
  """A labelme document: one polygon shape per region outline (``group_id`` = instance id)."""
  shapes = []
  for class_id, instance_id, mask in regions(labels, instance, descriptor, stuff):
    for flat in polygons(mask):
      points = np.asarray(flat).reshape(-1, 2).tolist()
      shapes.append(
        {
          "label": descriptor.class_names[class_id],
          "points": points,
          "group_id": instance_id or None,
          "shape_type": "polygon",
          "flags": {},
        }
      )
  height, width = labels.shape
  return {
    "version": "5.4.1",
    "flags": {},
    "shapes": shapes,
    "imagePath": f"../images/{file_name}",
    "imageData": None,
    "imageHeight": height,
    "imageWidth": width,
  }


# ------------------------------------------------------------------------ uncertainty
def uncertainty(probs: np.ndarray, kind: str = "entropy") -> float:
  """One number per image, higher = less confident: the mean per-pixel entropy of the class
  probabilities divided by log C (``"entropy"``, in [0, 1]), or the mean of 1 − (top-1 − top-2
  probability) (``"margin"``)."""
  probs = np.asarray(probs, np.float64)
  if kind == "entropy":
    entropy = -np.sum(probs * np.log(np.clip(probs, 1e-12, 1.0)), axis=-1)
    return float(entropy.mean() / np.log(probs.shape[-1]))
  if kind == "margin":
    top = np.sort(probs, axis=-1)
    return float(np.mean(1.0 - (top[..., -1] - top[..., -2])))
  raise ValueError(f"uncertainty must be 'entropy' or 'margin', not {kind!r}")


def write_review(path: str, rows: Sequence[dict]) -> str:
  """``review.csv``: one row per image (``name``, ``uncertainty``, ...), least confident first."""
  rows = sorted(rows, key=lambda r: -r["uncertainty"])
  fields = list(rows[0]) if rows else ["name", "uncertainty"]

  def write(tmp):
    with open(tmp, "w", newline="") as f:
      writer = csv.DictWriter(f, fieldnames=["rank"] + fields)
      writer.writeheader()
      for rank, row in enumerate(rows, start=1):
        writer.writerow({"rank": rank, **row})

  return files.write_atomic(path, write)


def classes_json(descriptor: DatasetDescriptor) -> dict:
  return {
    "classes": [
      {
        "id": i,
        "name": n,
        "color": list(descriptor.colormap[i]),
        "kind": "thing" if i in descriptor.thing_classes else "stuff",
      }
      for i, n in enumerate(descriptor.class_names)
    ],
    "ignore_label": descriptor.ignore_label,
  }
