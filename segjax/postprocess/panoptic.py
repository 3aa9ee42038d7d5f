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

from segjax.models.sampling import resize_bilinear


def group_panoptic(
  semantic,
  center,
  offset,
  *,
  num_classes: int,
  thing_classes: Sequence[int],
  label_divisor: int,
  void_label: int = 255,
  center_threshold: float = 0.1,
  nms_kernel: int = 7,
  top_k: int = 200,
  stuff_area: int = 0,
):
  """Panoptic ids ``[B, H, W]`` from class ids ``[B,H,W]``, heatmap ``[B,H,W]``, offsets
  ``[B,H,W,2]`` (see module docstring). Pure jnp, compiled once per shape and setting."""
  return _group_batch(
    semantic,
    center,
    offset,
    num_classes=num_classes,
    thing_classes=tuple(thing_classes),
    label_divisor=label_divisor,
    void_label=void_label,
    center_threshold=center_threshold,
    nms_kernel=nms_kernel,
    top_k=top_k,
    stuff_area=stuff_area,
  )


@functools.partial(
  jax.jit,
  static_argnames=(
    "num_classes",
    "thing_classes",
    "label_divisor",
    "void_label",
    "center_threshold",
    "nms_kernel",
    "top_k",
    "stuff_area",
  ),
)
def _group_batch(semantic, center, offset, **settings):
  return jax.vmap(lambda s, c, o: _group_one(s, c, o, **settings))(semantic, center, offset)


def _group_one(
  semantic,
  center,
  offset,
  *,
  num_classes,
  thing_classes,
  label_divisor,
  void_label,
  center_threshold,
  nms_kernel,
  top_k,
  stuff_area,
):
  height, width = semantic.shape
  semantic = semantic.astype(jnp.int32)
  is_thing_class = (
    jnp.zeros((num_classes,), bool).at[jnp.asarray(thing_classes, jnp.int32)].set(True)
    if thing_classes
    else jnp.zeros((num_classes,), bool)
  )
  thing = is_thing_class[semantic]
  # Centres: local maxima above the threshold, the top_k strongest.
  pooled = jax.lax.reduce_window(
    center, -jnp.inf, jax.lax.max, (nms_kernel, nms_kernel), (1, 1), "SAME"
  )
  peak = (center == pooled) & (center > center_threshold)
  scores = jnp.where(peak, center, -1.0).reshape(-1)
  k = min(top_k, height * width)
  top_scores, top_index = jax.lax.top_k(scores, k)
  valid = top_scores > 0
  centres = jnp.stack([top_index // width, top_index % width], -1).astype(jnp.float32)  # [K, 2]
  # Each pixel's predicted centre, and the nearest kept centre.
  yy, xx = jnp.meshgrid(
    jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32), indexing="ij"
  )
  target = jnp.stack([yy, xx], -1) + offset  # [H, W, 2]
  d2 = jnp.sum((target[:, :, None, :] - centres[None, None]) ** 2, -1)  # [H, W, K]
  d2 = jnp.where(valid[None, None], d2, jnp.inf)
  nearest = jnp.argmin(d2, axis=-1)
  has_centre = jnp.any(valid)
  instance = jnp.where(thing & has_centre, nearest + 1, 0)  # 1..K
  # Majority class of each instance among its pixels.
  votes = (
    jnp.zeros((k + 1, num_classes), jnp.int32).at[instance.reshape(-1), semantic.reshape(-1)].add(1)
  )
  votes = jnp.where(is_thing_class[None], votes, 0)
  instance_class = jnp.argmax(votes, axis=-1)
  thing_ids = instance_class[instance] * label_divisor + instance
  # Stuff: semantic class, instance 0; segments below stuff_area are void.
  stuff_counts = (
    jnp.zeros((num_classes,), jnp.int32)
    .at[semantic.reshape(-1)]
    .add((~thing).reshape(-1).astype(jnp.int32))
  )
  small_stuff = stuff_counts[semantic] < stuff_area
  stuff_ids = jnp.where(small_stuff, void_label * label_divisor, semantic * label_divisor)
  void = void_label * label_divisor
  return jnp.where(thing, jnp.where(has_centre, thing_ids, void), stuff_ids).astype(jnp.int32)


def instance_predictions(
  panoptic, center, probs, *, label_divisor: int, thing_classes: Sequence[int]
) -> dict:
  """The thing instances of one predicted panoptic map ``[H, W]`` with confidence scores (numpy),
  for mask AP and annotation export: ``masks`` ``[M,H,W]``, ``classes``, ``ids`` (panoptic ids)
  and ``scores`` ``[M]`` = the instance's centre score (heatmap maximum over its mask; 1 without a
  ``center`` heatmap, e.g. for instances of a semantic model) times the mean probability of its
  class over its mask (``probs``: softmax ``[H, W, C]``), as the paper scores instances for
  instance-segmentation AP."""
  panoptic, probs = np.asarray(panoptic), np.asarray(probs)
  center = None if center is None else np.asarray(center)
  things = set(int(c) for c in thing_classes)
  ids = [
    int(i)
    for i in np.unique(panoptic)
    if i % label_divisor > 0 and int(i) // label_divisor in things
  ]
  masks = np.stack([panoptic == i for i in ids]) if ids else np.zeros((0,) + panoptic.shape, bool)
  classes = np.array([i // label_divisor for i in ids], np.int64)
  centre_score = (lambda m: center[m].max()) if center is not None else (lambda m: 1.0)
  scores = np.array(
    [centre_score(m) * probs[..., c][m].mean() for m, c in zip(masks, classes)], np.float32
  )
  return {"masks": masks, "classes": classes, "ids": np.array(ids, np.int64), "scores": scores}


def mask_classification_panoptic(
  class_logits,
  mask_logits,
  *,
  size,
  thing_classes,
  label_divisor: int,
  void_label: int,
  object_threshold: float = 0.8,
  overlap_threshold: float = 0.8,
  mask_threshold: float = 0.5,
):
  """Panoptic ids ``[B,H,W]`` from per-query classes ``[B,Q,K+1]`` and mask logits ``[B,Q,h,w]``
  (Mask2Former's ``panoptic_inference``, in ``jnp``): queries whose most probable class is not
  "no object" and whose probability exceeds ``object_threshold`` compete for each pixel by
  probability × mask probability (masks resized to ``size``); a query keeps the pixels it wins
  where its mask probability is at least ``mask_threshold``, if those it wins are at least
  ``overlap_threshold`` of its own mask. Stuff queries of one class merge into one segment (id
  ``class * label_divisor``), thing queries become instances ``class * label_divisor + query +
  1``; pixels no query keeps are ``void_label * label_divisor``."""
  queries = class_logits.shape[1]
  if queries >= label_divisor:
    raise ValueError(
      f"mask_panoptic: {queries} queries need label_divisor > {queries}, not {label_divisor}"
    )
  probs = jax.nn.softmax(class_logits.astype(jnp.float32), axis=-1)
  scores, labels = probs.max(-1), probs.argmax(-1)
  keep = (labels != probs.shape[-1] - 1) & (scores > object_threshold)  # [B, Q]
  masks = jax.nn.sigmoid(
    resize_bilinear(mask_logits.astype(jnp.float32).transpose(0, 2, 3, 1), size)
  )  # [B, H, W, Q]
  ranked = jnp.where(keep[:, None, None, :], scores[:, None, None, :] * masks, -1.0)
  winner = jnp.argmax(ranked, axis=-1)  # [B, H, W]
  wins = winner[..., None] == jnp.arange(queries)  # [B, H, W, Q]
  inside = masks >= mask_threshold
  won_area = wins.sum((1, 2))
  own_area = inside.sum((1, 2))
  kept_area = (wins & inside).sum((1, 2))
  valid = (
    keep
    & (won_area > 0)
    & (own_area > 0)
    & (kept_area > 0)
    & (won_area >= overlap_threshold * own_area)
  )  # [B, Q]
  is_thing = jnp.isin(labels, jnp.asarray(list(thing_classes) or [-1]))
  ids = labels * label_divisor + jnp.where(is_thing, jnp.arange(1, queries + 1), 0)  # [B, Q]
  pixel_valid = (
    jnp.take_along_axis(valid, winner.reshape(winner.shape[0], -1), axis=1).reshape(winner.shape)
    & jnp.take_along_axis(inside, winner[..., None], axis=-1)[..., 0]
  )
  pixel_ids = jnp.take_along_axis(ids, winner.reshape(winner.shape[0], -1), axis=1).reshape(
    winner.shape
  )
  return jnp.where(pixel_valid, pixel_ids, void_label * label_divisor).astype(jnp.int32)


def mask_classification_instances(
  class_logits, mask_logits, *, size, thing_classes, label_divisor: int, top_k: int = 100
) -> dict:
  """One image's scored instances from per-query classes ``[Q,K+1]`` and mask logits
  ``[Q,h,w]`` (numpy; Mask2Former's ``instance_inference``): the ``top_k`` (query, class) pairs
  of thing classes by class probability, each mask = its query's mask logits > 0 at ``size``,
  score = class probability × the mean mask probability inside the mask. Keys as
  `instance_predictions`; ``ids`` are ``class * label_divisor + rank + 1``."""
  class_logits = np.asarray(class_logits, np.float32)
  probs = np.exp(class_logits - class_logits.max(-1, keepdims=True))
  probs = (probs / probs.sum(-1, keepdims=True))[:, :-1]  # [Q, K]
  things = np.zeros(probs.shape[1], bool)
  things[[c for c in thing_classes if c < probs.shape[1]]] = True
  flat = np.where(things[None], probs, -1.0).reshape(-1)
  order = np.argsort(-flat, kind="stable")[: min(top_k, int((flat >= 0).sum()))]
  query, classes = order // probs.shape[1], order % probs.shape[1]
  logits = np.asarray(
    resize_bilinear(jnp.asarray(mask_logits, jnp.float32).transpose(1, 2, 0), size)
  ).transpose(2, 0, 1)[query]  # [M, H, W]
  masks = logits > 0
  mask_probs = 1 / (1 + np.exp(-logits))
  mask_score = (mask_probs * masks).sum((1, 2)) / (masks.sum((1, 2)) + 1e-6)
  scores = (flat[order] * mask_score).astype(np.float32)
  ids = classes.astype(np.int64) * label_divisor + np.arange(1, len(order) + 1)
  return {"masks": masks, "classes": classes.astype(np.int64), "ids": ids, "scores": scores}
