"""tfds builders for benchmarks the tfds catalogue lacks in the form segmentation needs.

* ``voc2012_segmentation``: PASCAL VOC 2012 semantic segmentation (``train``/``val`` of
  ``ImageSets/Segmentation``), or with ``SegmentationClassAug/`` beside it (the SBD-augmented
  labels) the 10,582-image ``trainaug`` split that the DeepLab papers train on.
* ``cityscapes_panoptic``: Cityscapes images with the ``*_gtFine_instanceIds.png`` maps, from
  which panoptic labels follow (the tfds ``cityscapes`` builder keeps only semantic labels).

Both read the extracted official files from tfds's manual directory
(``<data_dir>/downloads/manual/``): ``VOCdevkit/VOC2012/`` (``JPEGImages``, ``SegmentationClass``,
``ImageSets``), and ``leftImg8bit/`` + ``gtFine/`` for Cityscapes; prepare them once with
``tfds build`` or by naming them in a config (``config.data.name = "tfds:voc"``), which prepares
them on first use. The adapters that map their examples to segjax's format are in
`segjax.data.catalogue`.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

VOC_CLASSES = (
  "background",
  "aeroplane",
  "bicycle",
  "bird",
  "boat",
  "bottle",
  "bus",
  "car",
  "cat",
  "chair",
  "cow",
  "diningtable",
  "dog",
  "horse",
  "motorbike",
  "person",
  "pottedplant",
  "sheep",
  "sofa",
  "train",
  "tvmonitor",
)


def _manual(dl_manager, *parts) -> str:
  path = os.path.join(dl_manager.manual_dir, *parts)
  if not os.path.exists(path):
    raise FileNotFoundError(
      f"{path} does not exist: extract the official files into "
      f"{dl_manager.manual_dir} first (see segjax/data/builders.py)."
    )
  return path


def _read_palette_png(path: str) -> np.ndarray:
  """The pixel indices of a palette PNG (VOC's class ids), as ``[H, W, 1]`` uint8."""
  from PIL import Image  # pylint: disable=import-outside-toplevel

  with Image.open(path) as pil:
    return np.asarray(pil, np.uint8)[..., None]


class Voc2012Segmentation(tfds.core.GeneratorBasedBuilder):
  """PASCAL VOC 2012 semantic segmentation, with the SBD-augmented ``trainaug`` split if present."""

  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Extract VOCtrainval_11-May-2012.tar into the manual directory "
    "(giving VOCdevkit/VOC2012/); for trainaug also put "
    "SegmentationClassAug/ and ImageSets/Segmentation/trainaug.txt "
    "into VOCdevkit/VOC2012/."
  )

  def _info(self):
    return self.dataset_info_from_configs(
      description=__doc__,
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(None, None, 3)),
          "segmentation": tfds.features.Image(shape=(None, None, 1), dtype=np.uint8),
          "image_id": tfds.features.Text(),
        }
      ),
    )

  def _split_generators(self, dl_manager):
    root = _manual(dl_manager, "VOCdevkit", "VOC2012")
    lists = os.path.join(root, "ImageSets", "Segmentation")
    splits = {
      "train": self._generate_examples(root, os.path.join(lists, "train.txt"), "SegmentationClass"),
      "validation": self._generate_examples(
        root, os.path.join(lists, "val.txt"), "SegmentationClass"
      ),
    }
    if os.path.exists(os.path.join(lists, "trainaug.txt")):
      splits["trainaug"] = self._generate_examples(
        root, os.path.join(lists, "trainaug.txt"), "SegmentationClassAug"
      )
    return splits

  def _generate_examples(self, root, list_file, label_dir):
    with open(list_file) as f:
      ids = [line.strip() for line in f if line.strip()]
    for image_id in ids:
      yield (
        image_id,
        {
          "image": os.path.join(root, "JPEGImages", image_id + ".jpg"),
          "segmentation": _read_palette_png(os.path.join(root, label_dir, image_id + ".png")),
          "image_id": image_id,
        },
      )


class CityscapesPanoptic(tfds.core.GeneratorBasedBuilder):
  """Cityscapes fine annotations with instance ids (``label_id * 1000 + n`` for thing instances,
  ``label_id`` elsewhere), for panoptic training."""

  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Extract leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip "
    "into the manual directory (giving leftImg8bit/ and gtFine/)."
  )

  def _info(self):
    return self.dataset_info_from_configs(
      description=__doc__,
      features=tfds.features.FeaturesDict(
        {
          "image_left": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
          "instance_ids": tfds.features.Image(
            shape=(None, None, 1), dtype=np.uint16, encoding_format="png"
          ),
          "image_id": tfds.features.Text(),
        }
      ),
    )

  def _split_generators(self, dl_manager):
    images, labels = _manual(dl_manager, "leftImg8bit"), _manual(dl_manager, "gtFine")
    return {
      name: self._generate_examples(os.path.join(images, folder), os.path.join(labels, folder))
      for name, folder in (("train", "train"), ("validation", "val"))
    }

  def _generate_examples(self, images, labels):
    import cv2  # pylint: disable=import-outside-toplevel

    for city in sorted(os.listdir(images)):
      for name in sorted(os.listdir(os.path.join(images, city))):
        if not name.endswith("_leftImg8bit.png"):
          continue
        image_id = name[: -len("_leftImg8bit.png")]
        path = os.path.join(labels, city, image_id + "_gtFine_instanceIds.png")
        ids = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if ids is None:
          raise FileNotFoundError(f"{path}: missing or unreadable instance-id map")
        yield (
          image_id,
          {
            "image_left": os.path.join(images, city, name),
            "instance_ids": ids.astype(np.uint16)[..., None],
            "image_id": image_id,
          },
        )
