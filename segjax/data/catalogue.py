"""Adapters from tfds catalogue datasets to segjax's example format.

Each adapter names the tfds builder, publishes a `DatasetDescriptor`, and maps one raw tfds example
to ``{"image": uint8 [H,W,3], "semantic": [H,W,1], "instance": [H,W,1] (if any)}`` in TensorFlow,
so it runs inside the tf.data pipeline. The datasets themselves are prepared by tfds as usual
(some need a manual download); ``config.data.name = "tfds:<name>"`` selects one.

| name                | builder                          | classes                                   |
|---------------------|----------------------------------|-------------------------------------------|
| oxford_iiit_pet     | oxford_iiit_pet                  | background, pet (trimap border: ignored)  |
| cityscapes          | cityscapes/semantic_segmentation | the 19 train ids; the rest ignored (255)  |
| cityscapes_panoptic | cityscapes_panoptic (segjax)     | 19 train ids, 8 thing classes; panoptic   |
| scene_parse150      | scene_parse150 (ADE20K)          | 150 classes; 0 ("other") ignored          |
| voc                 | voc2012_segmentation (segjax)    | 21 (background + 20); border ignored      |
| coco_panoptic       | coco/2017_panoptic               | 133 (80 things first, 53 stuff); panoptic |

The builders marked segjax are defined in `segjax.data.builders` (the catalogue has no such
dataset) and read the official files from tfds's manual directory.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import tensorflow as tf

from segjax.data import builders
from segjax.data.descriptor import DatasetDescriptor

IGNORE = 255
# The builders of segjax.data.builders: prepared on first use from tfds's manual directory.
SEGJAX_BUILDERS = ("voc2012_segmentation", "cityscapes_panoptic")


def _palette(n: int) -> tuple[tuple[int, int, int], ...]:
  """Distinct colours by the PASCAL VOC bit-interleaving scheme."""
  colours = []
  for i in range(n):
    r = g = b = 0
    c = i
    for shift in range(8):
      r |= ((c >> 0) & 1) << (7 - shift)
      g |= ((c >> 1) & 1) << (7 - shift)
      b |= ((c >> 2) & 1) << (7 - shift)
      c >>= 3
    colours.append((r, g, b))
  return tuple(colours)


@dataclasses.dataclass(frozen=True)
class Adapter:
  """A tfds builder, its descriptor, the mapping of its examples, whether they carry instances,
  and for planning: the image size when every image has the same (``None`` when they vary), the
  size the input plan decodes (that size, or a representative one of the official images), and
  the stored image format (``"png"`` or ``"jpeg"``)."""

  builder: str
  descriptor: DatasetDescriptor
  adapt: Callable[[dict], dict]
  instances: bool = False
  image_size: tuple[int, int] | None = None
  plan_size: tuple[int, int] = (512, 512)
  image_format: str = "jpeg"


def _lookup(table: np.ndarray):
  """A tf function mapping integer labels through ``table`` (values beyond it -> IGNORE)."""
  table = tf.constant(np.append(table, IGNORE).astype(np.int32))

  def apply(labels):
    labels = tf.cast(labels, tf.int32)
    labels = tf.where((labels >= 0) & (labels < len(table) - 1), labels, len(table) - 1)
    return tf.gather(table, labels)

  return apply


# ------------------------------------------------------------------------ oxford_iiit_pet
# Trimap values: 1 = pet, 2 = background, 3 = border (ambiguous: ignored).
_PET = _lookup(np.array([IGNORE, 1, 0, IGNORE]))


def _adapt_pet(example):
  return {"image": example["image"], "semantic": _PET(example["segmentation_mask"])}


# ------------------------------------------------------------------------ cityscapes
CITYSCAPES_CLASSES = (
  "road",
  "sidewalk",
  "building",
  "wall",
  "fence",
  "pole",
  "traffic light",
  "traffic sign",
  "vegetation",
  "terrain",
  "sky",
  "person",
  "rider",
  "car",
  "truck",
  "bus",
  "train",
  "motorcycle",
  "bicycle",
)
# label id -> train id (cityscapesScripts' labels.py); everything else is ignored.
_CITYSCAPES_TRAIN_IDS = {
  7: 0,
  8: 1,
  11: 2,
  12: 3,
  13: 4,
  17: 5,
  19: 6,
  20: 7,
  21: 8,
  22: 9,
  23: 10,
  24: 11,
  25: 12,
  26: 13,
  27: 14,
  28: 15,
  31: 16,
  32: 17,
  33: 18,
}
CITYSCAPES_TABLE = np.full(34, IGNORE)
for _label_id, _train_id in _CITYSCAPES_TRAIN_IDS.items():
  CITYSCAPES_TABLE[_label_id] = _train_id
_CITYSCAPES = _lookup(CITYSCAPES_TABLE)


def _adapt_cityscapes(example):
  return {"image": example["image_left"], "semantic": _CITYSCAPES(example["segmentation_label"])}


# ------------------------------------------------------------------------ cityscapes_panoptic
_CITYSCAPES_THINGS = tuple(
  range(11, 19)
)  # person, rider, car, truck, bus, train, motorcycle, bicycle


def _adapt_cityscapes_panoptic(example):
  """``instanceIds`` = label id (stuff, crowd) or ``label_id * 1000 + n`` (thing instance n):
  semantic = train id of the label id; instance = n + 1 on thing classes, 0 elsewhere (crowd)."""
  ids = tf.cast(example["instance_ids"][..., 0], tf.int32)
  label_id = tf.where(ids >= 1000, ids // 1000, ids)
  semantic = _CITYSCAPES(label_id)
  is_thing = (semantic >= _CITYSCAPES_THINGS[0]) & (semantic <= _CITYSCAPES_THINGS[-1])
  instance = tf.where((ids >= 1000) & is_thing, ids % 1000 + 1, 0)
  return {
    "image": example["image_left"],
    "semantic": semantic[..., None],
    "instance": instance[..., None],
  }


# ------------------------------------------------------------------------ voc
def _adapt_voc(example):
  # Class ids 0..20 as stored (palette indices); 255 marks object borders (ignored).
  return {"image": example["image"], "semantic": tf.cast(example["segmentation"], tf.int32)}


# ------------------------------------------------------------------------ scene_parse150
def _adapt_ade(example):
  # ADE20K scene parsing: 0 = "other objects" (ignored), 1..150 the classes -> 0..149.
  labels = tf.cast(example["annotation"][..., :1], tf.int32)
  return {"image": example["image"], "semantic": tf.where(labels == 0, IGNORE, labels - 1)}


# ------------------------------------------------------------------------ coco/2017_panoptic
def _adapt_coco_panoptic(example):
  """Segment ids from the panoptic PNG (R + 256 G + 256^2 B) mapped through ``panoptic_objects``:
  semantic = the object's label; instance = 1..N for things (labels < 80), 0 for stuff and crowd;
  unlabelled pixels (id 0) are ignored."""
  rgb = tf.cast(example["panoptic_image"], tf.int64)
  ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
  objects = example["panoptic_objects"]
  labels = tf.cast(objects["label"], tf.int32)
  thing = (labels < 80) & ~objects["is_crowd"]
  instance_ids = tf.where(thing, tf.range(1, tf.size(labels) + 1), 0)
  match = tf.equal(ids[..., None], objects["id"][None, None, :])  # [H, W, objects]
  found = tf.reduce_any(match, axis=-1)
  index = tf.argmax(tf.cast(match, tf.int32), axis=-1)
  semantic = tf.where(found, tf.gather(labels, index), IGNORE)
  instance = tf.where(found, tf.gather(instance_ids, index), 0)
  return {
    "image": example["image"],
    "semantic": semantic[..., None],
    "instance": instance[..., None],
  }


ADAPTERS = {
  "oxford_iiit_pet": Adapter(
    "oxford_iiit_pet",
    DatasetDescriptor(
      name="oxford_iiit_pet",
      class_names=("background", "pet"),
      colormap=((0, 0, 0), (200, 60, 60)),
      stuff_classes=(0,),
      thing_classes=(1,),
      ignore_label=IGNORE,
      label_divisor=1000,
    ),
    _adapt_pet,
  ),
  "cityscapes": Adapter(
    "cityscapes/semantic_segmentation",
    DatasetDescriptor(
      name="cityscapes",
      class_names=CITYSCAPES_CLASSES,
      colormap=_palette(19),
      stuff_classes=tuple(range(11)),
      thing_classes=_CITYSCAPES_THINGS,
      ignore_label=IGNORE,
      label_divisor=1000,
    ),
    _adapt_cityscapes,
    image_size=(1024, 2048),
    plan_size=(1024, 2048),
    image_format="png",
  ),
  "cityscapes_panoptic": Adapter(
    "cityscapes_panoptic",
    DatasetDescriptor(
      name="cityscapes_panoptic",
      class_names=CITYSCAPES_CLASSES,
      colormap=_palette(19),
      stuff_classes=tuple(range(11)),
      thing_classes=_CITYSCAPES_THINGS,
      ignore_label=IGNORE,
      label_divisor=1000,
    ),
    _adapt_cityscapes_panoptic,
    instances=True,
    image_size=(1024, 2048),
    plan_size=(1024, 2048),
    image_format="png",
  ),
  "voc": Adapter(
    "voc2012_segmentation",
    DatasetDescriptor(
      name="voc",
      class_names=builders.VOC_CLASSES,
      colormap=_palette(21),
      stuff_classes=(0,),
      thing_classes=tuple(range(1, 21)),
      ignore_label=IGNORE,
      label_divisor=1000,
    ),
    _adapt_voc,
    plan_size=(375, 500),
  ),  # VOC: at most 500 pixels
  "scene_parse150": Adapter(
    "scene_parse150",
    DatasetDescriptor(
      name="scene_parse150",
      class_names=tuple(f"ade_{i}" for i in range(1, 151)),
      colormap=_palette(150),
      stuff_classes=tuple(range(150)),
      thing_classes=(),
      ignore_label=IGNORE,
      label_divisor=1000,
    ),
    _adapt_ade,
    plan_size=(512, 683),
  ),
  "coco_panoptic": Adapter(
    "coco/2017_panoptic",
    DatasetDescriptor(
      name="coco_panoptic",
      class_names=tuple(f"coco_{i}" for i in range(133)),
      colormap=_palette(133),
      stuff_classes=tuple(range(80, 133)),
      thing_classes=tuple(range(80)),
      ignore_label=IGNORE,
      label_divisor=1000,
    ),
    _adapt_coco_panoptic,
    instances=True,
    plan_size=(480, 640),
  ),  # COCO: at most 640
}


def get(name: str) -> Adapter:
  if name not in ADAPTERS:
    raise KeyError(f"No catalogue adapter {name!r}; available: {', '.join(sorted(ADAPTERS))}.")
  return ADAPTERS[name]
