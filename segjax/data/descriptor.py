"""The dataset descriptor: what every builder publishes and every config reads."""

from __future__ import annotations

import dataclasses

import numpy as np

# The input standardisation of ImageNet-pretrained models (config.data.mean / std by default).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class DatasetDescriptor:
  """Classes and label conventions of a segmentation dataset (as in deeplab2's DatasetDescriptor).

  ``panoptic = class_id * label_divisor + instance_id``; stuff classes always have instance 0; a thing
  pixel with instance 0 is crowd. Pixels equal to ``ignore_label`` are void.
  """

  name: str
  class_names: tuple[str, ...]
  colormap: tuple[tuple[int, int, int], ...]
  thing_classes: tuple[int, ...] = ()
  stuff_classes: tuple[int, ...] = ()
  ignore_label: int = 255
  label_divisor: int = 1000

  def __post_init__(self):
    if len(self.colormap) != len(self.class_names):
      raise ValueError(
        f"Dataset {self.name!r}: {len(self.colormap)} colours for {len(self.class_names)} classes."
      )
    overlap = set(self.thing_classes) & set(self.stuff_classes)
    if overlap:
      raise ValueError(
        f"Dataset {self.name!r}: classes {sorted(overlap)} are both thing and stuff."
      )
    if 0 <= self.ignore_label < self.num_classes:
      raise ValueError(f"Dataset {self.name!r}: ignore_label {self.ignore_label} is a class id.")

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  def colorize(self, semantic: np.ndarray) -> np.ndarray:
    """RGB picture ``[H,W,3]`` uint8 of a class-id map; ignored pixels are white."""
    palette = np.full((256 if self.ignore_label < 256 else self.ignore_label + 1, 3), 255, np.uint8)
    palette[: self.num_classes] = np.asarray(self.colormap, np.uint8)
    return palette[np.clip(semantic, 0, len(palette) - 1)]
