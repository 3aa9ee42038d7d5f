"""Panoptic-DeepLab training targets (Cheng et al. 2020), built in tf.data from instance masks.

For every instance (``instance > 0`` on a thing class) the centre is its centre of mass; the
targets are

* ``center``: ``[H, W]`` the maximum over instances of a Gaussian (sigma = 8 px by default) around
  each centre, 1 at the centre;
* ``offset``: ``[H, W, 2]`` (dy, dx) from each instance pixel to its instance's centre, 0 elsewhere;
* ``center_weight``: ``[H, W]`` 0 on ignored pixels, else 1;
* ``offset_weight``: ``[H, W]`` 1 on instance pixels, else 0 (crowd regions: 0);
* ``semantic_weight``: ``[H, W]`` ``small_instance_weight`` (3 in the paper) on the pixels of
  instances smaller than ``small_instance_area`` pixels, 0 on ignored pixels, 1 elsewhere.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

TARGET_KEYS = ("center", "offset", "center_weight", "offset_weight", "semantic_weight")


def panoptic_targets(
  semantic,
  instance,
  *,
  thing_classes: Sequence[int],
  ignore_label: int = 255,
  sigma: float = 8.0,
  small_instance_area: int = 4096,
  small_instance_weight: float = 3.0,
) -> dict:
  """The targets of one example (``semantic``, ``instance``: int ``[H, W]``); see module doc."""
  semantic = tf.cast(semantic, tf.int32)
  instance = tf.cast(instance, tf.int32)
  is_thing = tf.reduce_any(
    tf.equal(semantic[..., None], tf.constant(list(thing_classes) or [-1], tf.int32)), axis=-1
  )
  labelled = is_thing & (instance > 0)
  ids = tf.where(labelled, instance, 0)
  unique, index = tf.unique(tf.reshape(ids, [-1]))
  count = tf.shape(unique)[0]
  shape = tf.shape(semantic)
  yy, xx = tf.meshgrid(
    tf.range(shape[0], dtype=tf.float32), tf.range(shape[1], dtype=tf.float32), indexing="ij"
  )
  coords = tf.stack([tf.reshape(yy, [-1]), tf.reshape(xx, [-1])], -1)
  centres = tf.math.unsorted_segment_mean(coords, index, count)  # [K, 2]
  areas = tf.math.unsorted_segment_sum(tf.ones_like(index, tf.float32), index, count)
  real = tf.not_equal(unique, 0)  # K: is an instance
  d2 = (yy[None] - centres[:, 0, None, None]) ** 2 + (xx[None] - centres[:, 1, None, None]) ** 2
  gauss = tf.exp(-d2 / (2.0 * sigma * sigma)) * tf.cast(real, tf.float32)[:, None, None]
  center = tf.reduce_max(tf.concat([gauss, tf.zeros_like(yy)[None]], 0), axis=0)
  pixel_centre = tf.reshape(tf.gather(centres, index), [shape[0], shape[1], 2])
  offset = tf.where(labelled[..., None], pixel_centre - tf.stack([yy, xx], -1), 0.0)
  pixel_area = tf.reshape(tf.gather(areas, index), [shape[0], shape[1]])
  ignored = tf.equal(semantic, ignore_label)
  small = labelled & (pixel_area < small_instance_area)
  semantic_weight = tf.where(ignored, 0.0, tf.where(small, small_instance_weight, 1.0))
  return {
    "center": center,
    "offset": offset,
    "center_weight": tf.where(ignored, 0.0, 1.0),
    "offset_weight": tf.cast(labelled, tf.float32),
    "semantic_weight": semantic_weight,
  }
