"""The user's own images and masks as a tfds dataset, prepared once and re-prepared when files change.

Layout (a missing split is fine)::

  ROOT/
    train/images/NAME.(png|jpg|jpeg|tif|tiff)  8- or 16-bit, grey / RGB / RGBA, any size
    train/masks/NAME.png       class id per pixel (uint8/uint16); in a palette PNG the index is
                               the class id (PASCAL VOC); an RGB mask maps colours to ids through
                               classes.json
    train/instances/NAME.png   optional, uint16 instance ids, 0 = none
    train/annotations.json     COCO instead of masks/ and instances/ (polygons or RLE)
    train/labelme/NAME.json    or labelme polygons (label = class name); beside masks/, the file
                               changed since the pre-labels were written is read (records/)
    val/...  test/...
    classes.json               optional: {"classes": [{"id", "name", "color", "kind"}...],
                               "ignore_label": 255}

GeoTIFF tiles (with rasterio installed) keep their georeference: the prepared examples then hold
``crs`` (WKT) and ``transform`` (the affine's a, b, c, d, e, f) of each tile.

Every file is checked while preparing; a bad one raises `BadFileError` naming it, or, with
``skip_bad=True``, is skipped and listed in ``<prepared dir>/report.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Iterable, Sequence

import cv2
import numpy as np
import tensorflow_datasets as tfds

from segjax import files
from segjax.data.descriptor import DatasetDescriptor
from segjax.data.readers import (
  IMAGE_EXTENSIONS,
  BadFileError,
  read_georeference,
  read_image,
  read_labelme,
  read_mask,
)

SPLITS = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}
DEFAULT_COLORMAP = (
  (0, 0, 0),
  (230, 25, 75),
  (60, 180, 75),
  (255, 225, 25),
  (0, 130, 200),
  (245, 130, 48),
  (145, 30, 180),
  (70, 240, 240),
  (240, 50, 230),
  (210, 245, 60),
)


# ---------------------------------------------------------------------------------------- classes
@dataclasses.dataclass(frozen=True)
class FolderClasses:
  ids: tuple[int, ...]
  names: tuple[str, ...]
  colours: tuple[tuple[int, int, int], ...]
  kinds: tuple[str, ...]
  ignore_label: int


def configured_classes(
  names: Sequence[str], thing_classes: Sequence[int] = (), ignore_label: int = 255
) -> FolderClasses:
  """The classes named in the config (``data.classes``, ``data.thing_classes``), ids 0..n-1."""
  ids = tuple(range(len(names)))
  bad = [c for c in thing_classes if c not in ids]
  if bad:
    raise ValueError(
      f"config.data.thing_classes {list(bad)} are not class ids of "
      f"config.data.classes (0..{len(names) - 1})."
    )
  return FolderClasses(
    ids,
    tuple(str(n) for n in names),
    tuple(DEFAULT_COLORMAP[i % 10] for i in ids),
    tuple("thing" if i in thing_classes else "stuff" for i in ids),
    ignore_label,
  )


def classes_file(root: str) -> str | None:
  """``root/classes.json``, else the one ``classes.json`` of its split folders (``train/``, ...):
  several must be equal (the error names two that differ)."""
  path = os.path.join(root, "classes.json")
  if os.path.exists(path):
    return path
  found = [
    os.path.join(root, folder, "classes.json")
    for folder in SPLITS
    if os.path.exists(os.path.join(root, folder, "classes.json"))
  ]
  for other in found[1:]:
    with open(found[0]) as a, open(other) as b:
      if json.load(a) != json.load(b):
        raise BadFileError(
          f"{found[0]} and {other} give different classes: keep one, at {root}/classes.json"
        )
  return found[0] if found else None


def read_classes(
  root: str,
  observed_ids: Iterable[int] = (),
  coco_categories: dict[int, str] | None = None,
  configured: FolderClasses | None = None,
) -> FolderClasses:
  """``classes.json`` if present (at the root, or in the splits, as `segjax.prelabels` writes it with
  pre-labels; the splits' must then agree); else ``configured`` (the config's class names); else
  classes 0..max(observed) named ``class_<id>``, or, with COCO annotations, 0 = ``background``
  (stuff) and the COCO category ids (things, named)."""
  path = classes_file(root)
  if path is not None:
    try:
      with open(path) as f:
        spec = json.load(f)
      entries = sorted(spec["classes"], key=lambda c: int(c["id"]))
      ids = tuple(int(c["id"]) for c in entries)
      names = tuple(str(c.get("name", f"class_{c['id']}")) for c in entries)
      colours = tuple(
        tuple(int(v) for v in c.get("color", DEFAULT_COLORMAP[i % 10]))
        for i, c in enumerate(entries)
      )
      kinds = tuple(c.get("kind", "stuff") for c in entries)
      ignore = int(spec.get("ignore_label", 255))
    except (ValueError, KeyError, TypeError) as e:
      raise BadFileError(
        f"{path}: expected {{\"classes\": [{{\"id\": 0, \"name\": ..., \"color\": "
        f"[r, g, b], \"kind\": \"stuff\"|\"thing\"}}], \"ignore_label\": 255}} ({e})"
      ) from e
    if ids != tuple(range(len(ids))):
      raise BadFileError(
        f"{path}: class ids must be 0..{len(ids) - 1} without gaps; got {list(ids)}"
      )
    bad = [k for k in kinds if k not in ("stuff", "thing")]
    if bad:
      raise BadFileError(f"{path}: kind must be 'stuff' or 'thing', not {bad[0]!r}")
    return FolderClasses(ids, names, colours, kinds, ignore)
  if configured is not None:
    return configured
  coco_categories = coco_categories or {}
  top = max([i for i in observed_ids if i != 255] + list(coco_categories) or [1])
  ids = tuple(range(top + 1))
  names = tuple(
    "background" if i == 0 and coco_categories else coco_categories.get(i, f"class_{i}")
    for i in ids
  )
  kinds = tuple("thing" if i in coco_categories else "stuff" for i in ids)
  return FolderClasses(ids, names, tuple(DEFAULT_COLORMAP[i % 10] for i in ids), kinds, 255)


def descriptor_of(classes: FolderClasses, name: str = "folder") -> DatasetDescriptor:
  return DatasetDescriptor(
    name=name,
    class_names=classes.names,
    colormap=classes.colours,
    stuff_classes=tuple(i for i, k in zip(classes.ids, classes.kinds) if k == "stuff"),
    thing_classes=tuple(i for i, k in zip(classes.ids, classes.kinds) if k == "thing"),
    ignore_label=classes.ignore_label,
    label_divisor=1000,
  )


# ---------------------------------------------------------------------------------------- scanning
def _split_dirs(root: str) -> dict[str, str]:
  if not os.path.isdir(root):
    raise FileNotFoundError(f"folder dataset root {root} does not exist")
  found = {}
  for folder, split in SPLITS.items():
    path = os.path.join(root, folder)
    if os.path.isdir(os.path.join(path, "images")):
      if split in found:
        raise BadFileError(f"{root}: both {found[split]} and {path} give the {split} split")
      found[split] = path
  if not found:
    raise BadFileError(
      f"{root}: no split found (expected train/images/, val/images/ or test/images/)"
    )
  return found


def _by_stem(folder: str, extensions: Sequence[str]) -> dict[str, str]:
  if not os.path.isdir(folder):
    return {}
  out = {}
  for name in sorted(os.listdir(folder)):
    stem, ext = os.path.splitext(name)
    if ext.lower() in extensions:
      if stem in out:
        raise BadFileError(
          f"{folder}: two files named {stem}.* ({os.path.basename(out[stem])}, {name})"
        )
      out[stem] = os.path.join(folder, name)
  return out


def fingerprint(root: str) -> str:
  """A hash of every file's path, size and modification time: changes when the data changes."""
  digest = hashlib.sha256()
  for folder, _, names in sorted(os.walk(root)):
    if os.path.basename(folder).startswith("."):
      continue
    for name in sorted(names):
      path = os.path.join(folder, name)
      stat = os.stat(path)
      digest.update(f"{os.path.relpath(path, root)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
  return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------------- examples
def _coco_masks(path: str, images_dir: str):
  """{stem: (semantic, instance)} from a COCO annotations file (crowd regions: instance 0)."""
  from pycocotools.coco import COCO  # pylint: disable=import-outside-toplevel
  import contextlib  # pylint: disable=import-outside-toplevel
  import io  # pylint: disable=import-outside-toplevel

  try:
    with contextlib.redirect_stdout(io.StringIO()):
      coco = COCO(path)
  except (ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
    raise BadFileError(f"{path}: not a COCO annotations file ({e})") from e
  out = {}
  for image_id, info in coco.imgs.items():
    height, width = int(info["height"]), int(info["width"])
    semantic = np.zeros((height, width), np.int32)
    instance = np.zeros((height, width), np.int32)
    next_id = 1
    for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])):
      where = (
        f"{path}: annotation id {ann.get('id')} of {info.get('file_name')} "
        f"(category {ann.get('category_id')})"
      )
      segmentation = ann.get("segmentation")
      if not segmentation or (isinstance(segmentation, list) and not any(segmentation)):
        raise BadFileError(
          f"{where} has an empty segmentation: give its polygons or RLE, or remove the annotation"
        )
      try:
        mask = coco.annToMask(ann).astype(bool)
      except (IndexError, KeyError, TypeError, ValueError) as e:
        raise BadFileError(f"{where}: its segmentation cannot be read ({e!r})") from e
      semantic[mask] = int(ann["category_id"])
      if ann.get("iscrowd", 0):
        instance[mask] = 0
      else:
        instance[mask] = next_id
        next_id += 1
    stem = os.path.splitext(info["file_name"])[0]
    if not os.path.exists(os.path.join(images_dir, info["file_name"])):
      raise BadFileError(
        f"{path}: annotations for {info['file_name']}, which is not in {images_dir}"
      )
    out[stem] = (semantic, instance)
  return out


def split_examples(
  split_dir: str,
  classes: FolderClasses | None,
  *,
  skip_bad: bool = False,
  skipped: list | None = None,
):
  """Yields ``(stem, {"image", "semantic", "instance"})`` for one split folder, checking every
  file. A bad file raises `BadFileError`, or with ``skip_bad`` is left out and its message appended
  to ``skipped``."""
  images = _by_stem(os.path.join(split_dir, "images"), IMAGE_EXTENSIONS)
  masks = _by_stem(os.path.join(split_dir, "masks"), (".png",))
  instances = _by_stem(os.path.join(split_dir, "instances"), (".png",))
  coco_path = os.path.join(split_dir, "annotations.json")
  coco = (
    _coco_masks(coco_path, os.path.join(split_dir, "images")) if os.path.exists(coco_path) else None
  )
  colours = {c: i for i, c in zip(classes.ids, classes.colours)} if classes else None

  def fail(message):
    if not skip_bad:
      raise BadFileError(message)
    if skipped is not None:
      skipped.append(message)

  for stem, path in {**masks, **instances}.items():
    if stem not in images:
      fail(f"{path}: mask without an image (no {split_dir}/images/{stem}.*)")
  for stem, image_path in images.items():
    try:
      yield (
        stem,
        _load_example(
          stem, image_path, masks, instances, coco, coco_path, colours, classes, split_dir
        ),
      )
    except BadFileError as e:
      fail(str(e))


def _load_example(stem, image_path, masks, instances, coco, coco_path, colours, classes, split_dir):
  image = read_image(image_path)
  georeference = read_georeference(image_path)
  instance, instance_path = None, None
  if coco is not None:
    if stem not in coco:
      raise BadFileError(f"{image_path}: no annotations in {coco_path}")
    semantic, instance = coco[stem]
    label_path = instance_path = coco_path
    if stem in masks:  # pre-labels carry both: one was corrected, the other is stale
      mask = read_mask(masks[stem], colours)
      differ = int(np.sum(mask != semantic)) if mask.shape == semantic.shape else mask.size
      if differ:
        raise BadFileError(
          f"{masks[stem]} and {coco_path} disagree on {differ} pixels of "
          f"{stem}: keep the one you corrected and delete the other"
        )
  elif masks or os.path.isdir(os.path.join(split_dir, "labelme")):
    label_path = _label_source(stem, image_path, masks, split_dir)
    semantic = (
      read_mask(label_path, colours)
      if label_path.endswith(".png")
      else read_labelme(label_path, classes.names if classes else (), image.shape[:2])
    )
    if stem in instances:
      instance_path = instances[stem]
      instance = read_image(instance_path)[..., 0].astype(np.int32)
  else:  # an unlabelled split (e.g. test images only)
    return {"image": image, "semantic": None, "instance": None, "georeference": georeference}
  for what, array, where in (
    ("mask", semantic, label_path),
    ("instance mask", instance, instance_path),
  ):
    if array is not None and array.shape[:2] != image.shape[:2]:
      raise BadFileError(
        f"{where}: {what} size {array.shape[1]}x{array.shape[0]} differs from "
        f"the image's {image.shape[1]}x{image.shape[0]} ({image_path})"
      )
  if classes is not None:
    bad = np.setdiff1d(np.unique(semantic), list(classes.ids) + [classes.ignore_label])
    if bad.size:
      raise BadFileError(
        f"{label_path}: label {int(bad[0])} is neither a class "
        f"(0..{len(classes.ids) - 1}) nor the ignore label {classes.ignore_label}"
      )
  return {"image": image, "semantic": semantic, "instance": instance, "georeference": georeference}


def _label_source(stem, image_path, masks, split_dir) -> str:
  """The file that labels ``stem``: its mask, or its labelme document when that is the one a
  person corrected. Pre-labels record both files' SHA-256 in ``records/NAME.json``
  (`segjax.predict`): the file whose hash changed wins; both changed is an error naming them."""
  labelme = os.path.join(split_dir, "labelme", stem + ".json")
  if not os.path.exists(labelme):
    if stem not in masks:
      raise BadFileError(f"{image_path}: image without a mask (no {split_dir}/masks/{stem}.png)")
    return masks[stem]
  if stem not in masks:
    return labelme
  record = os.path.join(split_dir, "records", stem + ".json")
  written = {}
  if os.path.exists(record):
    with open(record) as f:
      written = json.load(f).get("labels", {})
  changed = [
    path
    for path in (masks[stem], labelme)
    if written.get(os.path.relpath(path, split_dir)) != files.sha256(path)
  ]
  if len(changed) == 2:
    raise BadFileError(
      f"{masks[stem]} and {labelme} both differ from the pre-labels of {record}"
      " (or it is missing): keep the one you corrected and delete the other"
    )
  return labelme if changed == [labelme] else masks[stem]


# ---------------------------------------------------------------------------------------- builder
class FolderConfig(tfds.core.BuilderConfig):
  def __init__(
    self, *, root: str, skip_bad: bool = False, classes: FolderClasses | None = None, **kwargs
  ):
    root = os.path.abspath(os.path.expanduser(root))
    tag = hashlib.sha256((root + repr(classes)).encode()).hexdigest()[:8]
    super().__init__(
      name=f"{os.path.basename(root) or 'root'}_{tag}_{fingerprint(root)}"
      f"{'_skip' if skip_bad else ''}",
      **kwargs,
    )
    self.root = root
    self.skip_bad = skip_bad
    self.classes = classes


class Folder(tfds.core.GeneratorBasedBuilder):
  """A folder dataset (see module docstring); one prepared version per content fingerprint."""

  VERSION = tfds.core.Version("1.0.0")

  def _survey(self):
    """Channels, bit depth, class table and instance presence, from a first pass over the files."""
    if hasattr(self, "_survey_cache"):
      return self._survey_cache
    root = self.builder_config.root
    splits = _split_dirs(root)
    channels, depth, observed, has_instances = set(), np.uint8, set(), False
    categories, georeferenced = {}, False
    for split_dir in splits.values():
      images = _by_stem(os.path.join(split_dir, "images"), IMAGE_EXTENSIONS)
      if not images:
        raise BadFileError(
          f"{os.path.join(split_dir, 'images')} holds no images (files ending in "
          f"{', '.join(IMAGE_EXTENSIONS)}): add them, or remove the folder"
        )
      for path in images.values():
        header = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if header is None:
          continue  # reported with its name when the examples are generated
        channels.add(1 if header.ndim == 2 else header.shape[-1])
        depth = np.uint16 if header.dtype == np.uint16 else depth
        georeferenced = georeferenced or read_georeference(path) is not None
      has_instances |= bool(_by_stem(os.path.join(split_dir, "instances"), (".png",)))
      coco_path = os.path.join(split_dir, "annotations.json")
      if os.path.exists(coco_path):
        has_instances = True
        try:
          with open(coco_path) as f:
            categories.update({int(c["id"]): str(c["name"]) for c in json.load(f)["categories"]})
        except (ValueError, KeyError, TypeError) as e:
          raise BadFileError(f"{coco_path}: not a COCO annotations file ({e})") from e
      if classes_file(root) is None and not self.builder_config.classes:
        for path in _by_stem(os.path.join(split_dir, "masks"), (".png",)).values():
          try:
            observed |= set(np.unique(read_mask(path)).tolist())
          except BadFileError:
            pass
    classes = read_classes(root, observed, categories, configured=self.builder_config.classes)
    num_channels = 1 if channels <= {1} else 3  # grey stays grey; RGBA loses alpha
    self._survey_cache = (splits, num_channels, depth, classes, has_instances)
    self.georeferenced = georeferenced
    return self._survey_cache

  def descriptor(self) -> DatasetDescriptor:
    return descriptor_of(
      self._survey()[3], name=f"folder:{os.path.basename(self.builder_config.root)}"
    )

  def _info(self):
    _, channels, depth, _, has_instances = self._survey()
    features = {
      "image": tfds.features.Image(shape=(None, None, channels), dtype=depth),
      "semantic": tfds.features.Image(shape=(None, None, 1), dtype=np.uint16),
      "labelled": np.bool_,
      "name": tfds.features.Text(),
    }
    if has_instances:
      features["instance"] = tfds.features.Image(shape=(None, None, 1), dtype=np.uint16)
    if self.georeferenced:  # GeoTIFF tiles: each one's CRS (WKT) and affine transform
      features["crs"] = tfds.features.Text()
      features["transform"] = tfds.features.Tensor(
        shape=(6,),
        dtype=np.float64,  # exact doubles
        encoding=tfds.features.Encoding.BYTES,
      )
    return self.dataset_info_from_configs(
      description=__doc__, features=tfds.features.FeaturesDict(features)
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    splits = self._survey()[0]
    self.skipped = {}
    return {split: self._generate_examples(path) for split, path in splits.items()}

  def _generate_examples(self, split_dir):
    _, channels, depth, classes, has_instances = self._survey()
    skipped = []
    for stem, ex in split_examples(
      split_dir, classes, skip_bad=self.builder_config.skip_bad, skipped=skipped
    ):
      image = ex["image"]
      if image.shape[-1] == 4:
        image = image[..., :3]
      if channels == 3 and image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
      height, width = image.shape[:2]
      labelled = ex["semantic"] is not None
      semantic = ex["semantic"] if labelled else np.full((height, width), classes.ignore_label)
      out = {
        "image": image.astype(depth),
        "semantic": semantic.astype(np.uint16)[..., None],
        "labelled": labelled,
        "name": stem,
      }
      if has_instances:
        instance = ex["instance"] if ex["instance"] is not None else np.zeros((height, width))
        out["instance"] = instance.astype(np.uint16)[..., None]
      if self.georeferenced:  # tiles without a georeference: "" and NaNs
        crs, transform = ex.get("georeference") or ("", (np.nan,) * 6)
        out["crs"], out["transform"] = crs, np.asarray(transform, np.float64)
      yield stem, out
    self.skipped[os.path.basename(split_dir)] = skipped


def folder_dataset(
  root: str, split: str = "train", *, data_dir: str | None = None, skip_bad: bool = False
):
  """The ``tf.data.Dataset`` of unbatched examples of ``split`` (``image`` as stored, ``semantic``,
  ``instance`` when present, ``name``), preparing the folder first if needed."""
  builder = prepare(root, data_dir=data_dir, skip_bad=skip_bad)
  return builder.as_dataset(split=SPLITS.get(split, split), shuffle_files=False)


def prepare(
  root: str,
  *,
  data_dir: str | None = None,
  skip_bad: bool = False,
  classes: Sequence[str] | None = None,
  thing_classes: Sequence[int] = (),
) -> "Folder":
  """Prepares (once per content fingerprint) and returns the builder; with ``skip_bad`` the
  skipped files are listed in ``<builder.data_dir>/report.json``. ``classes`` (names) and
  ``thing_classes`` (ids) stand for a ``classes.json`` the folder lacks."""
  configured = configured_classes(classes, thing_classes) if classes else None
  builder = Folder(
    config=FolderConfig(root=root, skip_bad=skip_bad, classes=configured), data_dir=data_dir
  )
  if not builder.is_prepared():
    from segjax import run_log  # pylint: disable=import-outside-toplevel
    from segjax.data import preparing  # pylint: disable=import-outside-toplevel

    preparing.prepare_quietly(builder, f"the folder dataset {root}")
    counts = ", ".join(f"{n} {s.num_examples}" for n, s in builder.info.splits.items())
    run_log.info("Prepared the folder dataset %s (%s images) in %s", root, counts, builder.data_dir)
    _, _, _, found, _ = builder._survey()  # pylint: disable=protected-access
    if not os.path.exists(os.path.join(root, "classes.json")) and configured is None:
      run_log.info(
        "No classes.json: %d classes from the label values found (%s); name them "
        "in %s or with config.data.classes",
        len(found.names),
        ", ".join(found.names),
        os.path.join(root, "classes.json"),
      )
    pixels, images = class_pixels(builder, found.names)
    labelled = sum(pixels.values()) or 1
    run_log.info(
      "Labelled training pixels by class: %s",
      ", ".join(f"{name} {count / labelled:.1%}" for name, count in pixels.items()),
    )
    total = builder.info.splits["train"].num_examples if pixels else 0
    rare = [f"{name} ({images[name]} of {total})" for name in pixels if images[name] < 0.01 * total]
    if rare:
      run_log.info(
        "Classes in under 1%% of the training images: %s. Consider patches with "
        "config.data.class_balanced, or class weights in the loss.",
        ", ".join(rare),
      )
    report = {"class_pixels": pixels, "class_images": images}
    if skip_bad:
      report.update(skipped=builder.skipped, count=sum(map(len, builder.skipped.values())))
      run_log.info(
        "Skipped %d bad files (skip_bad=True); each with its reason in %s",
        report["count"],
        os.path.join(builder.data_dir, "report.json"),
      )
    files.write_json(os.path.join(builder.data_dir, "report.json"), report)
  return builder


def class_pixels(
  builder, class_names: Sequence[str], split: str = "train"
) -> tuple[dict[str, int], dict[str, int]]:
  """Labelled pixels of each class in ``split`` of a prepared folder dataset, and the number of
  its images that contain the class (one pass over the masks)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from segjax.data.stream import graph  # pylint: disable=import-outside-toplevel

  if split not in builder.info.splits:
    return {}, {}
  n = len(class_names)

  def add(totals, example):
    counts = tf.math.bincount(
      tf.reshape(tf.cast(example["semantic"], tf.int32), [-1]),
      minlength=n,
      maxlength=n,
      dtype=tf.int64,
    )
    return totals[0] + counts, totals[1] + tf.cast(counts > 0, tf.int64)

  ds = builder.as_dataset(split=split, shuffle_files=False)
  pixels, images = ds.reduce((tf.zeros([n], tf.int64), tf.zeros([n], tf.int64)), graph(add))
  return (
    {name: int(c) for name, c in zip(class_names, pixels.numpy())},
    {name: int(c) for name, c in zip(class_names, images.numpy())},
  )


__all__ = [
  "BadFileError",
  "Folder",
  "FolderClasses",
  "configured_classes",
  "descriptor_of",
  "folder_dataset",
  "prepare",
  "read_classes",
  "read_image",
  "read_mask",
  "split_examples",
]
