"""Joint image/label preprocessing ops for tf.data.

Each op maps an example dict to an example dict. Random ops are *stateless*: they take a seed
tensor ``[2]`` and apply one draw to the image and to every label map alike, so the input pipeline
is reproducible from ``(config.seed, example index)``, which is what exact resumption needs.
Label maps (``semantic``, ``instance``, ``panoptic``) are resized with nearest neighbour and padded
with the ignore label (instance maps with 0 = no instance).
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf

LABEL_KEYS = ("semantic", "instance", "panoptic")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _label_fill(key: str, ignore_label: int) -> int:
  return 0 if key == "instance" else ignore_label


def normalize(example, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
              scale: float = 255.0, mode: str = "mean_std",
              percentiles: Sequence[float] = (1.0, 99.0)):
  """``image = (unit(image) - mean) / std`` in float32, where ``unit`` maps intensities to [0, 1]:

  * ``"mean_std"``: ``image / scale`` (255 for 8-bit, 65535 for 16-bit images);
  * ``"minmax"``: per image, ``(image - min) / (max - min)``;
  * ``"percentile"``: per image, clipped to the ``percentiles`` (e.g. 1st and 99th) and stretched
    between them — for microscopy and other 16-bit images that use a narrow part of their range.
  """
  image = tf.cast(example["image"], tf.float32)
  if mode == "mean_std":
    image = image / scale
  elif mode in ("minmax", "percentile"):
    if mode == "minmax":
      low, high = tf.reduce_min(image), tf.reduce_max(image)
    else:
      values = tf.sort(tf.reshape(image, [-1]))
      last = tf.cast(tf.size(values) - 1, tf.float32)
      pick = lambda p: values[tf.cast(tf.round(last * p / 100.0), tf.int32)]
      low, high = pick(percentiles[0]), pick(percentiles[1])
    image = tf.clip_by_value((image - low) / tf.maximum(high - low, 1e-6), 0.0, 1.0)
  else:
    raise ValueError(f"config.data.normalization must be 'mean_std', 'minmax' or 'percentile', "
                     f"not {mode!r}")
  image = (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
  return {**example, "image": image}


def random_scale(example, seed, scale_range=(0.5, 2.0)):
  """Resizes image (bilinear) and labels (nearest) by one random factor from ``scale_range``."""
  lo, hi = scale_range
  if lo == hi == 1.0:
    return example
  factor = tf.random.stateless_uniform([], seed, lo, hi)
  shape = tf.shape(example["image"])[:2]
  new_shape = tf.cast(tf.round(tf.cast(shape, tf.float32) * factor), tf.int32)
  out = dict(example)
  out["image"] = tf.image.resize(example["image"], new_shape, method="bilinear")
  for key in LABEL_KEYS:
    if key in example:
      out[key] = tf.image.resize(example[key][..., None], new_shape, method="nearest")[..., 0]
  return out


def pad_to_size(example, size, ignore_label: int, image_fill: float = 0.0):
  """Pads at the bottom/right up to at least ``size`` = (H, W); labels padded with the ignore label."""
  shape = tf.shape(example["image"])[:2]
  pad_h = tf.maximum(size[0] - shape[0], 0)
  pad_w = tf.maximum(size[1] - shape[1], 0)
  out = dict(example)
  out["image"] = tf.pad(example["image"], [[0, pad_h], [0, pad_w], [0, 0]], constant_values=image_fill)
  for key in LABEL_KEYS:
    if key in example:
      out[key] = tf.pad(example[key], [[0, pad_h], [0, pad_w]],
                        constant_values=tf.cast(_label_fill(key, ignore_label), example[key].dtype))
  return out


def random_crop(example, seed, size, ignore_label: int):
  """Pads to at least ``size`` then takes one random ``size`` window from image and labels alike."""
  example = pad_to_size(example, size, ignore_label)
  shape = tf.shape(example["image"])[:2]
  limit = shape - tf.constant(size, tf.int32) + 1
  offset = tf.random.stateless_uniform([2], seed, 0, tf.int32.max, dtype=tf.int32) % limit
  out = dict(example)
  out["image"] = tf.slice(example["image"], [offset[0], offset[1], 0], [size[0], size[1], -1])
  for key in LABEL_KEYS:
    if key in example:
      out[key] = tf.slice(example[key], offset, size)
  return out


def random_flip(example, seed):
  """Flips image and labels left-right together with probability 1/2."""
  flip = tf.random.stateless_uniform([], seed) < 0.5
  out = dict(example)
  for key in ("image",) + LABEL_KEYS:
    if key in example:
      out[key] = tf.cond(flip, lambda x=example[key]: tf.reverse(x, [1]), lambda x=example[key]: x)
  return out


def train_augment(example, seed, *, crop_size, scale_range, flip: bool, ignore_label: int):
  """Random scale, crop (padding with the ignore label) and flip, with one draw per op."""
  seeds = tf.random.experimental.stateless_split(seed, 3)
  example = random_scale(example, seeds[0], scale_range)
  example = random_crop(example, seeds[1], crop_size, ignore_label)
  if flip:
    example = random_flip(example, seeds[2])
  return example
