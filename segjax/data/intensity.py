"""Image intensities as the model sees them: to float32 in [0, 1] (`to_unit`) with the model's
channel count (`unit_image`), then ``(x - mean) / std`` (`standardize`); `prepare_image` is all
three.

One implementation serves the input pipeline and prediction: every function takes ``xp``, the
array namespace — numpy (the default: prediction, with no TensorFlow imported) or
`segjax.data.ops.TF_NUMPY` (the same few numpy functions as TensorFlow ops, inside tf.data
graphs) — so a file is normalised for prediction exactly as the run's training images were."""

from __future__ import annotations

from typing import Sequence

import numpy as np

NORMALIZATIONS = ("mean_std", "minmax", "percentile")


def check_normalization(mode) -> None:
  if mode not in NORMALIZATIONS:
    raise ValueError(
      f"config.data.normalization={mode!r}: use one of {', '.join(repr(m) for m in NORMALIZATIONS)}"
    )


def to_unit(
  image,
  *,
  scale: float = 255.0,
  mode: str = "mean_std",
  percentiles: Sequence[float] = (1.0, 99.0),
  xp=np,
):
  """Intensities to [0, 1] in float32: ``"mean_std"`` divides by ``scale`` (255 for 8-bit, 65535 for
  16-bit images); ``"minmax"`` stretches each image between its minimum and maximum;
  ``"percentile"`` clips each image to its ``percentiles`` (e.g. 1st and 99th) and stretches between
  them — for microscopy and other 16-bit images that use a narrow part of their range."""
  check_normalization(mode)
  image = xp.asarray(image, xp.float32)
  if mode == "mean_std":
    return image / scale
  if mode == "minmax":
    low, high = xp.min(image), xp.max(image)
  else:
    values = xp.sort(xp.reshape(image, [-1]))
    last = xp.asarray(xp.size(values) - 1, xp.float32)
    pick = lambda p: values[xp.asarray(xp.round(last * p / 100.0), xp.int32)]
    low, high = pick(percentiles[0]), pick(percentiles[1])
  return xp.clip((image - low) / xp.maximum(high - low, 1e-6), 0.0, 1.0)


def unit_image(image, data_config, xp=np):
  """The image ``[H, W, C]`` as float32 in [0, 1] with ``data.channels`` channels (grey images feed
  3-channel models by repetition; RGB(A) feeds 1-channel models as its mean, taken first, so that
  a stretch spans the grey image), from ``data.normalization``: ``"mean_std"`` divides by the
  dtype's maximum, ``"minmax"`` and ``"percentile"`` (``data.percentiles``) stretch each image."""
  scale = 65535.0 if image.dtype.name == "uint16" else 255.0
  channels = data_config.get("channels", 3)
  if channels == 1 and image.shape[-1] != 1:
    image = xp.mean(xp.asarray(image[..., :3], xp.float32), axis=-1, keepdims=True)
  image = to_unit(
    image,
    scale=scale,
    mode=data_config.get("normalization", "mean_std"),
    percentiles=tuple(data_config.get("percentiles", (1.0, 99.0))),
    xp=xp,
  )
  if channels == 3 and image.shape[-1] == 1:
    image = xp.tile(image, [1, 1, 3])
  return image


def standardize(image, mean: Sequence[float], std: Sequence[float], xp=np):
  """``(image - mean) / std`` per channel."""
  return (image - xp.asarray(mean, xp.float32)) / xp.asarray(std, xp.float32)


def prepare_image(image, data_config, xp=np):
  """`unit_image` then `standardize` with ``data.mean``/``data.std``: an image as the model sees
  it. The settings are saved with the run, so prediction uses the training's."""
  return standardize(unit_image(image, data_config, xp), data_config.mean, data_config.std, xp)
