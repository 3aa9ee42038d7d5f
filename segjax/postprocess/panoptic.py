"""Panoptic-DeepLab's grouping (Cheng et al. 2020) and instance scoring, apart from the network.

`group_panoptic` (pure ``jnp``, compiled): centres = local maxima of the heatmap (max-pool NMS,
``nms_kernel``) above ``center_threshold``, at most ``top_k``; every thing pixel joins the centre
nearest to ``pixel + offset``; each instance takes the majority class of its pixels; stuff classes
covering fewer than ``stuff_area`` pixels become void; ids are ``class * label_divisor + instance``.

`instance_predictions` (numpy): the scored thing instances of a panoptic map, for mask AP and
COCO export.
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def group_panoptic(semantic, center, offset, *, num_classes: int, thing_classes: Sequence[int],
                   label_divisor: int, void_label: int = 255, center_threshold: float = 0.1,
                   nms_kernel: int = 7, top_k: int = 64, stuff_area: int = 0):
  """Panoptic ids ``[B, H, W]`` from class ids ``[B,H,W]``, heatmap ``[B,H,W]``, offsets
  ``[B,H,W,2]`` (see module docstring). Pure jnp, compiled once per shape and setting."""
  return _group_batch(semantic, center, offset, num_classes=num_classes,
                      thing_classes=tuple(thing_classes), label_divisor=label_divisor,
                      void_label=void_label, center_threshold=center_threshold,
                      nms_kernel=nms_kernel, top_k=top_k, stuff_area=stuff_area)


@functools.partial(jax.jit, static_argnames=("num_classes", "thing_classes", "label_divisor",
                                             "void_label", "center_threshold", "nms_kernel",
                                             "top_k", "stuff_area"))
def _group_batch(semantic, center, offset, **settings):
  return jax.vmap(lambda s, c, o: _group_one(s, c, o, **settings))(semantic, center, offset)


def _group_one(semantic, center, offset, *, num_classes, thing_classes, label_divisor, void_label,
               center_threshold, nms_kernel, top_k, stuff_area):
  height, width = semantic.shape
  semantic = semantic.astype(jnp.int32)
  is_thing_class = jnp.zeros((num_classes,), bool).at[jnp.asarray(thing_classes, jnp.int32)].set(
      True) if thing_classes else jnp.zeros((num_classes,), bool)
  thing = is_thing_class[semantic]
  # Centres: local maxima above the threshold, the top_k strongest.
  pooled = jax.lax.reduce_window(center, -jnp.inf, jax.lax.max, (nms_kernel, nms_kernel), (1, 1),
                                 "SAME")
  peak = (center == pooled) & (center > center_threshold)
  scores = jnp.where(peak, center, -1.0).reshape(-1)
  k = min(top_k, height * width)
  top_scores, top_index = jax.lax.top_k(scores, k)
  valid = top_scores > 0
  centres = jnp.stack([top_index // width, top_index % width], -1).astype(jnp.float32)  # [K, 2]
  # Each pixel's predicted centre, and the nearest kept centre.
  yy, xx = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                        jnp.arange(width, dtype=jnp.float32), indexing="ij")
  target = jnp.stack([yy, xx], -1) + offset                                 # [H, W, 2]
  d2 = jnp.sum((target[:, :, None, :] - centres[None, None]) ** 2, -1)     # [H, W, K]
  d2 = jnp.where(valid[None, None], d2, jnp.inf)
  nearest = jnp.argmin(d2, axis=-1)
  has_centre = jnp.any(valid)
  instance = jnp.where(thing & has_centre, nearest + 1, 0)                 # 1..K
  # Majority class of each instance among its pixels.
  votes = jnp.zeros((k + 1, num_classes), jnp.int32).at[instance.reshape(-1),
                                                         semantic.reshape(-1)].add(1)
  votes = jnp.where(is_thing_class[None], votes, 0)
  instance_class = jnp.argmax(votes, axis=-1)
  thing_ids = instance_class[instance] * label_divisor + instance
  # Stuff: semantic class, instance 0; segments below stuff_area are void.
  stuff_counts = jnp.zeros((num_classes,), jnp.int32).at[semantic.reshape(-1)].add(
      (~thing).reshape(-1).astype(jnp.int32))
  small_stuff = stuff_counts[semantic] < stuff_area
  stuff_ids = jnp.where(small_stuff, void_label * label_divisor, semantic * label_divisor)
  void = void_label * label_divisor
  return jnp.where(thing, jnp.where(has_centre, thing_ids, void), stuff_ids).astype(jnp.int32)


def instance_predictions(panoptic, center, probs, *, label_divisor: int,
                         thing_classes: Sequence[int]) -> dict:
  """The thing instances of one predicted panoptic map ``[H, W]`` with confidence scores (numpy),
  for mask AP and annotation export: ``masks`` ``[M,H,W]``, ``classes``, ``ids`` (panoptic ids)
  and ``scores`` ``[M]`` = the instance's centre score (heatmap maximum over its mask; 1 without a
  ``center`` heatmap, e.g. for instances of a semantic model) times the mean probability of its
  class over its mask (``probs``: softmax ``[H, W, C]``), as the paper scores instances for
  instance-segmentation AP."""
  panoptic, probs = np.asarray(panoptic), np.asarray(probs)
  center = None if center is None else np.asarray(center)
  things = set(int(c) for c in thing_classes)
  ids = [int(i) for i in np.unique(panoptic)
         if i % label_divisor > 0 and int(i) // label_divisor in things]
  masks = (np.stack([panoptic == i for i in ids]) if ids
           else np.zeros((0,) + panoptic.shape, bool))
  classes = np.array([i // label_divisor for i in ids], np.int64)
  centre_score = (lambda m: center[m].max()) if center is not None else (lambda m: 1.0)
  scores = np.array([centre_score(m) * probs[..., c][m].mean() for m, c in zip(masks, classes)],
                    np.float32)
  return {"masks": masks, "classes": classes, "ids": np.array(ids, np.int64), "scores": scores}
