"""Panoptic-DeepLab (Cheng et al. 2020): semantic, instance-centre and centre-offset heads on a
segmentation trunk, and the jit-compiled grouping into a panoptic id map.

The trunk is any registered model returning ``logits`` and ``features`` (DeepLabV3+ or UNet). With
``dual_decoder`` the instance branch runs on a second trunk of its own (the paper's separate
instance decoder; here the backbone is not shared), else on the semantic trunk's features.

Post-processing (`group_panoptic`, inside the model's eval pass so the trainer's evaluation gets a
``panoptic`` map): centres = local maxima of the heatmap (max-pool NMS, ``nms_kernel``) above
``center_threshold``, at most ``top_k``; every thing pixel joins the centre nearest to
``pixel + offset``; each instance takes the majority semantic class of its pixels; stuff segments
smaller than ``stuff_area`` become void; ids are ``class * label_divisor + instance``.
"""
from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.models.common import ConvNormAct, Dtype, resize


class Head(nn.Module):
  features: int
  out: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = ConvNormAct(self.features, kernel_size=5, dtype=self.dtype)(x, train)
    return nn.Conv(self.out, (1, 1), dtype=self.dtype)(x).astype(jnp.float32)


def group_panoptic(semantic_logits, center, offset, *, thing_classes: Sequence[int],
                   label_divisor: int, void_label: int = 255, center_threshold: float = 0.1,
                   nms_kernel: int = 7, top_k: int = 64, stuff_area: int = 0):
  """Panoptic ids ``[B, H, W]`` from logits ``[B,H,W,C]``, heatmap ``[B,H,W]``, offsets
  ``[B,H,W,2]`` (see module docstring). Pure jnp, compiled once per shape and setting."""
  return _group_batch(semantic_logits, center, offset, thing_classes=tuple(thing_classes),
                      label_divisor=label_divisor, void_label=void_label,
                      center_threshold=center_threshold, nms_kernel=nms_kernel, top_k=top_k,
                      stuff_area=stuff_area)


@functools.partial(jax.jit, static_argnames=("thing_classes", "label_divisor", "void_label",
                                             "center_threshold", "nms_kernel", "top_k",
                                             "stuff_area"))
def _group_batch(semantic_logits, center, offset, **settings):
  return jax.vmap(lambda l, c, o: _group_one(l, c, o, **settings))(semantic_logits, center, offset)


def _group_one(logits, center, offset, *, thing_classes, label_divisor, void_label,
               center_threshold, nms_kernel, top_k, stuff_area):
  height, width, num_classes = logits.shape
  semantic = jnp.argmax(logits, axis=-1).astype(jnp.int32)
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


class PanopticDeepLab(nn.Module):
  """Panoptic-DeepLab heads on ``trunk`` (and ``instance_trunk`` with a dual decoder).

  Returns ``logits`` (semantic), ``center`` ``[B,H,W]``, ``offset`` ``[B,H,W,2]`` (pixels, at input
  resolution) and, outside training, ``panoptic`` ids from `group_panoptic`.
  """
  trunk: nn.Module
  instance_trunk: nn.Module | None = None
  thing_classes: Sequence[int] = ()
  label_divisor: int = 1000
  head_features: int = 32
  center_threshold: float = 0.1
  nms_kernel: int = 7
  top_k: int = 64
  stuff_area: int = 0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, image, train: bool = False):
    size = image.shape[1:3]
    out = self.trunk(image, train=train)
    features = out["features"]
    if self.instance_trunk is not None:
      features = self.instance_trunk(image, train=train)["features"]
    center = Head(self.head_features, 1, self.dtype, name="center_head")(features, train)
    offset = Head(self.head_features, 2, self.dtype, name="offset_head")(features, train)
    center = resize(center, size)[..., 0]
    offset = resize(offset, size)
    result = {"logits": out["logits"], "features": out["features"], "center": center,
              "offset": offset}
    if not train:
      result["panoptic"] = group_panoptic(
          out["logits"], center, offset, thing_classes=self.thing_classes,
          label_divisor=self.label_divisor, center_threshold=self.center_threshold,
          nms_kernel=self.nms_kernel, top_k=self.top_k, stuff_area=self.stuff_area)
    return result


def instance_predictions(panoptic, center, probs, *, label_divisor: int,
                         thing_classes: Sequence[int]) -> dict:
  """The thing instances of one predicted panoptic map ``[H, W]`` with confidence scores (numpy),
  for mask AP and annotation export: ``masks`` ``[M,H,W]``, ``classes``, ``ids`` (panoptic ids)
  and ``scores`` ``[M]`` = the instance's centre score (heatmap maximum over its mask) times the
  mean probability of its class over its mask (``probs``: softmax ``[H, W, C]``), as the paper
  scores instances for instance-segmentation AP."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  panoptic, center, probs = np.asarray(panoptic), np.asarray(center), np.asarray(probs)
  things = set(int(c) for c in thing_classes)
  ids = [int(i) for i in np.unique(panoptic)
         if i % label_divisor > 0 and int(i) // label_divisor in things]
  masks = (np.stack([panoptic == i for i in ids]) if ids
           else np.zeros((0,) + panoptic.shape, bool))
  classes = np.array([i // label_divisor for i in ids], np.int64)
  scores = np.array([center[m].max() * probs[..., c][m].mean() for m, c in zip(masks, classes)],
                    np.float32)
  return {"masks": masks, "classes": classes, "ids": np.array(ids, np.int64), "scores": scores}
