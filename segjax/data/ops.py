"""Preprocessing ops for tf.data, composed from a string as in big_vision::

  config.data.train_pp = "random_scale(0.5, 2.0)|random_crop(512)|flip_lr|photometric(0.2)"

Each name is a registered *op factory* (``@register_op``): called with the spec's arguments, it
returns ``op(example, seed, context) -> example``. An example is a dict of tensors: ``image``
(float32 in [0, 1] here: ops run after the intensities are mapped to the unit range and before the
mean/std standardisation) and per-pixel maps such as ``semantic``, ``instance``, ``panoptic`` or
targets made by earlier ops. Geometric ops move the image and **every** per-pixel map with one
random draw (labels with nearest neighbour; padding with the ignore label for ``semantic`` and
``panoptic``, 0 for the rest, the dataset mean for the image). Random ops are stateless: the
chain's seed ``[2]`` (from ``(config.seed, example index)``) is split into one seed per op, so the
stream is reproducible and a resumed run sees the same examples.

A new op is one factory::

  @register_op
  def my_op(strength=0.1):
    def op(example, seed, context):
      return {**example, "image": ...}
    return op
"""

from __future__ import annotations

import dataclasses
import functools
import types
from typing import Callable

import tensorflow as tf

from segjax import registry
from segjax.data import intensity
from segjax.data import targets
from segjax.data.descriptor import IMAGENET_MEAN, DatasetDescriptor

Op = Callable[[dict, tf.Tensor, "Context"], dict]


@dataclasses.dataclass(frozen=True)
class Context:
  """What ops may read besides the example: the dataset descriptor and the image fill value."""

  descriptor: DatasetDescriptor
  image_fill: tuple[float, ...] = IMAGENET_MEAN

  @property
  def ignore_label(self) -> int:
    return self.descriptor.ignore_label


def register_op(fn=None, *, name: str | None = None):
  """Decorator registering an op factory for ``config.data.*_pp`` strings."""
  if fn is None:
    return lambda f: register_op(f, name=name)
  return registry.register("pp", name)(fn)


def parse_chain(spec: str) -> list[str]:
  return [part.strip() for part in (spec or "").split("|") if part.strip()]


def build(spec: str, context: Context) -> Callable[[dict, tf.Tensor], dict]:
  """``apply(example, seed)`` for a ``"op1|op2(...)"`` chain. Unknown names and bad arguments fail
  here, when the config is read, with the list of registered ops."""
  ops = []
  for part in parse_chain(spec):
    factory = registry.lookup("pp", part)
    try:
      ops.append(factory())
    except (TypeError, ValueError) as e:
      raise ValueError(f"Preprocessing op {part!r}: {e}") from e

  def apply(example, seed):
    if not ops:
      return example
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), len(ops))
    for i, op in enumerate(ops):
      example = op(example, seeds[i], context)
    return example

  return apply


def spatial_keys(example) -> list[str]:
  """The per-pixel entries: the image and every map of rank >= 2."""
  return [k for k, v in example.items() if v.shape.rank is not None and v.shape.rank >= 2]


# ------------------------------------------------------------------------ intensities
# The numpy functions `segjax.data.intensity` uses, as TensorFlow ops (its ``xp`` in tf.data).
TF_NUMPY = types.SimpleNamespace(
  float32=tf.float32,
  int32=tf.int32,
  asarray=tf.cast,
  min=tf.reduce_min,
  max=tf.reduce_max,
  mean=tf.reduce_mean,
  sort=tf.sort,
  reshape=tf.reshape,
  size=tf.size,
  round=tf.round,
  clip=tf.clip_by_value,
  maximum=tf.maximum,
  tile=tf.tile,
)
NORMALIZATIONS, check_normalization = intensity.NORMALIZATIONS, intensity.check_normalization
to_unit = functools.partial(intensity.to_unit, xp=TF_NUMPY)
standardize = functools.partial(intensity.standardize, xp=TF_NUMPY)


# ------------------------------------------------------------------------ geometry
def resize_example(example, shape):
  """Image bilinear, every other per-pixel map nearest neighbour, to ``shape`` = (H, W)."""
  out = dict(example)
  for key in spatial_keys(example):
    value = example[key]
    if key == "image":
      out[key] = tf.image.resize(value, shape, method="bilinear")
    else:
      expanded = value if value.shape.rank == 3 else value[..., None]
      resized = tf.image.resize(expanded, shape, method="nearest")
      out[key] = tf.cast(resized if value.shape.rank == 3 else resized[..., 0], value.dtype)
  return out


def pad_example(
  example,
  size,
  *,
  ignore_label: int,
  image_fill=0.0,
  label_divisor: int = 1,
  mode: str = "constant",
):
  """Pads every per-pixel map at the bottom/right up to at least ``size`` = (H, W): the image with
  ``image_fill`` (a value or one per channel; ``mode="reflect"``: its own mirror image, repeated
  as far as needed), ``semantic`` with ``ignore_label``, ``panoptic`` with the void segment
  ``ignore_label x label_divisor``, every other map with 0."""
  _check_pad_mode(mode)
  shape = tf.shape(example["image"])[:2]
  pad_h, pad_w = tf.maximum(size[0] - shape[0], 0), tf.maximum(size[1] - shape[1], 0)
  out = dict(example)
  for key in spatial_keys(example):
    value = example[key]
    padding = [[0, pad_h], [0, pad_w]] + [[0, 0]] * (value.shape.rank - 2)
    if key == "image" and mode == "reflect":
      rows = _mirrored(shape[0], shape[0] + pad_h)
      out[key] = tf.gather(
        tf.gather(value, rows, axis=0), _mirrored(shape[1], shape[1] + pad_w), axis=1
      )
    elif key == "image":  # pad with 0, then add the (per-channel) fill where padded
      padded_area = tf.pad(
        tf.zeros(tf.shape(value)[:2], value.dtype), padding[:2], constant_values=1
      )
      fill = tf.cast(tf.constant(image_fill, tf.float32), value.dtype)
      if fill.shape.rank == 1 and value.shape[-1] is not None:
        fill = fill[: value.shape[-1]]
      out[key] = tf.pad(value, padding) + padded_area[..., None] * fill
    else:
      fill = {"semantic": ignore_label, "panoptic": ignore_label * label_divisor}.get(key, 0)
      out[key] = tf.pad(value, padding, constant_values=tf.cast(fill, value.dtype))
  return out


PAD_MODES = ("constant", "reflect")


def _mirrored(length, total):
  """Indices ``0..total-1`` into an axis of ``length``, reflected at its ends (``0 1 2 1 0 1
  ...``; a length of 1 repeats its one pixel)."""
  period = tf.maximum(2 * length - 2, 1)
  index = tf.range(total) % period
  return tf.minimum(tf.where(index >= length, period - index, index), length - 1)


def _pad(example, size, context: Context, mode: str = "constant"):
  return pad_example(
    example,
    size,
    ignore_label=context.ignore_label,
    image_fill=context.image_fill,
    label_divisor=context.descriptor.label_divisor,
    mode=mode,
  )


def crop_example(example, offset, size):
  out = dict(example)
  for key in spatial_keys(example):
    value = example[key]
    begin = tf.concat([offset, tf.zeros([value.shape.rank - 2], tf.int32)], 0)
    out[key] = tf.slice(value, begin, list(size) + [-1] * (value.shape.rank - 2))
  return out


def size_pair(size) -> tuple[int, int]:
  size = (size, size) if isinstance(size, int) else tuple(size)
  if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
    raise ValueError(f"size must be an int or (height, width) of positive ints, not {size!r}")
  return size


@register_op
def random_scale(low: float = 0.5, high: float = 2.0):
  """Resizes image (bilinear) and maps (nearest) by one factor drawn uniformly from [low, high]."""
  if not 0 < low <= high:
    raise ValueError(f"random_scale needs 0 < low <= high, not ({low}, {high})")

  def op(example, seed, context):
    del context
    factor = tf.random.stateless_uniform([], seed, low, high)
    shape = tf.cast(tf.shape(example["image"])[:2], tf.float32)
    return resize_example(example, tf.cast(tf.round(shape * factor), tf.int32))

  return op


@register_op
def random_crop(size):
  """Pads to at least ``size`` (int or (H, W)), then one random window of image and maps alike."""
  size = size_pair(size)

  def op(example, seed, context):
    example = _pad(example, size, context)
    limit = tf.shape(example["image"])[:2] - tf.constant(size, tf.int32) + 1
    offset = tf.random.stateless_uniform([2], seed, 0, tf.int32.max, dtype=tf.int32) % limit
    return crop_example(example, offset, size)

  return op


@register_op
def center_crop(size):
  """Pads to at least ``size``, then the central window."""
  size = size_pair(size)

  def op(example, seed, context):
    del seed
    example = _pad(example, size, context)
    offset = (tf.shape(example["image"])[:2] - tf.constant(size, tf.int32)) // 2
    return crop_example(example, offset, size)

  return op


@register_op
def resize(size):
  """Resizes to ``size`` (int or (H, W)): image bilinear, maps nearest."""
  size = size_pair(size)
  return lambda example, seed, context: resize_example(example, size)


@register_op
def resize_keep_ratio(short: int | None = None, long: int | None = None):
  """Resizes by the largest factor that keeps the short side <= ``short`` and the long side <=
  ``long`` (either may be None): MMSegmentation's ``Resize(scale=(long, short), keep_ratio=True)``,
  and deeplab2's ``max_resize_value`` with ``long`` alone."""
  if short is None and long is None:
    raise ValueError("resize_keep_ratio needs short, long or both")

  def op(example, seed, context):
    del seed, context
    shape = tf.cast(tf.shape(example["image"])[:2], tf.float32)
    factors = []
    if short is not None:
      factors.append(short / tf.reduce_min(shape))
    if long is not None:
      factors.append(long / tf.reduce_max(shape))
    factor = tf.reduce_min(tf.stack(factors))
    return resize_example(example, tf.cast(tf.round(shape * factor), tf.int32))

  return op


@register_op
def pad_to(size, mode: str = "constant"):
  """Pads at the bottom/right to at least ``size``: images of several sizes batch together; the
  padded labels are the ignore label, so metrics and losses skip them. The image is padded with
  the mean (``mode="constant"``) or its mirror image (``"reflect"``)."""
  size = size_pair(size)
  _check_pad_mode(mode)
  return lambda example, seed, context: _pad(example, size, context, mode)


@register_op
def pad_to_multiple(multiple, mode: str = "constant"):
  """Pads at the bottom/right up to the next multiple of ``multiple`` (an int or (h, w)), with
  ignored labels (image: as `pad_to`): images of nearby sizes share a size while each keeps its
  own padding."""
  multiple = size_pair(multiple)
  _check_pad_mode(mode)

  def op(example, seed, context):
    step = tf.constant(multiple, tf.int32)
    return _pad(example, (tf.shape(example["image"])[:2] + step - 1) // step * step, context, mode)

  return op


def _check_pad_mode(mode):
  if mode not in PAD_MODES:
    raise ValueError(f"mode={mode!r}: use one of {', '.join(map(repr, PAD_MODES))}")


def _flip(example, flip):
  out = dict(example)
  for key in spatial_keys(example):
    out[key] = tf.cond(flip, lambda x=example[key]: tf.reverse(x, [1]), lambda x=example[key]: x)
  return out


@register_op
def flip_lr(probability: float = 0.5):
  """Flips image and maps left-right together with ``probability``."""
  return lambda example, seed, context: _flip(
    example, tf.random.stateless_uniform([], seed) < probability
  )


@register_op
def random_rot90():
  """Rotates image and maps together by 0, 90, 180 or 270 degrees (square crops keep their shape):
  for microscopy and aerial images, which have no up."""

  def op(example, seed, context):
    del context
    k = tf.random.stateless_uniform([], seed, 0, 4, dtype=tf.int32)
    out = dict(example)
    for key in spatial_keys(example):
      value = example[key]
      expanded = value if value.shape.rank == 3 else value[..., None]
      rotated = tf.image.rot90(expanded, k)
      out[key] = rotated if value.shape.rank == 3 else rotated[..., 0]
    return out

  return op


@register_op
def photometric(
  brightness: float = 0.2, contrast: float | None = None, saturation: float | None = None
):
  """Random brightness (+ U(-b, b)), contrast and saturation (× U(1 - c, 1 + c), × U(1 - s, 1 + s);
  both default to ``brightness``) of the image in [0, 1], one draw each, clipped to [0, 1];
  labels are untouched. ``photometric(0.125, 0.5, 0.5)`` is MMSegmentation's
  PhotoMetricDistortion without its hue jitter (brightness 32/255, contrast and saturation
  0.5-1.5)."""
  contrast = brightness if contrast is None else contrast
  saturation = brightness if saturation is None else saturation
  for name, value in (
    ("brightness", brightness),
    ("contrast", contrast),
    ("saturation", saturation),
  ):
    if not 0 <= value < 1:
      raise ValueError(f"photometric {name} must be in [0, 1), not {value}")

  def op(example, seed, context):
    del context
    seeds = tf.random.experimental.stateless_split(seed, 3)
    image = example["image"]
    image = image + tf.random.stateless_uniform([], seeds[0], -brightness, brightness)
    mean = tf.reduce_mean(image)
    image = (image - mean) * tf.random.stateless_uniform(
      [], seeds[1], 1 - contrast, 1 + contrast
    ) + mean
    if image.shape[-1] == 3:
      grey = tf.reduce_mean(image, axis=-1, keepdims=True)
      image = (image - grey) * tf.random.stateless_uniform(
        [], seeds[2], 1 - saturation, 1 + saturation
      ) + grey
    return {**example, "image": tf.clip_by_value(image, 0.0, 1.0)}

  return op


# ------------------------------------------------------------------------ targets
@register_op(name="panoptic_targets")
def panoptic_targets_op(
  sigma: float = 8.0, small_instance_area: int = 4096, small_instance_weight: float = 3.0
):
  """Panoptic-DeepLab's targets (`segjax.data.targets.panoptic_targets`: ``center``, ``offset``
  and their weights) from ``semantic`` and ``instance``; put it after the geometric ops."""

  def op(example, seed, context):
    del seed
    return {
      **example,
      **targets.panoptic_targets(
        example["semantic"],
        example["instance"],
        thing_classes=context.descriptor.thing_classes,
        ignore_label=context.ignore_label,
        sigma=sigma,
        small_instance_area=small_instance_area,
        small_instance_weight=small_instance_weight,
      ),
    }

  return op


@register_op
def boundary_distance(max_distance: int = 16):
  """``boundary_distance`` ``[H, W]`` float32: the chessboard distance in pixels from each pixel to
  the nearest pixel of another class (``max_distance`` where there is none closer; ignored pixels
  count as no class), for boundary-aware losses (`segjax.losses.boundary_weighted_cross_entropy`)."""
  if max_distance < 1:
    raise ValueError(f"max_distance must be >= 1, not {max_distance}")

  def op(example, seed, context):
    del seed
    labels = tf.cast(example["semantic"], tf.float32)[None, ..., None]
    valid = labels != context.ignore_label
    big = tf.constant(1e9, tf.float32)
    high = tf.nn.max_pool2d(tf.where(valid, labels, -big), 3, 1, "SAME")
    low = -tf.nn.max_pool2d(tf.where(valid, -labels, -big), 3, 1, "SAME")
    # A pixel next to another class: its 3x3 window holds two different valid labels.
    edge = tf.cast(valid & (high > low), tf.float32)
    distance = tf.fill(tf.shape(edge), float(max_distance))
    reached = edge
    for d in range(max_distance):
      distance = tf.where((reached > 0) & (distance > d), float(d), distance)
      reached = tf.nn.max_pool2d(reached, 3, 1, "SAME")
    return {**example, "boundary_distance": distance[0, ..., 0]}

  return op
