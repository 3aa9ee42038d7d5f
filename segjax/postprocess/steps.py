"""The registered post-processing steps (see `segjax.postprocess` for the chain they form).

Each is a factory: called with the settings of its spec (``"remove_small(30)"``), it returns
``step(predictions, descriptor) -> dict``.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from segjax.postprocess import morphology
from segjax.postprocess import panoptic
from segjax.postprocess import per_image
from segjax.postprocess import register_postprocessor


@register_postprocessor(jit=True, reads=("logits",), adds=("semantic",))
def argmax():
  """``semantic`` = the most probable class of each pixel."""
  return lambda predictions, descriptor: {
    "semantic": jnp.argmax(predictions["logits"], axis=-1).astype(jnp.int32)
  }


@register_postprocessor(jit=True, reads=("semantic", "center", "offset"), adds=("panoptic",))
def panoptic_deeplab(
  center_threshold: float = 0.1, nms_kernel: int = 7, top_k: int = 200, stuff_area: int = 0
):
  """``panoptic`` ids by Panoptic-DeepLab's grouping (`segjax.postprocess.panoptic.group_panoptic`)
  of ``semantic``, the ``center`` heatmap and the ``offset`` vectors; the defaults are deeplab2's
  (threshold 0.1, NMS kernel 7, 200 centres); ``stuff_area`` in pixels (deeplab2: 2048 on
  Cityscapes, 4096 on COCO)."""

  def step(predictions, descriptor):
    return {
      "panoptic": panoptic.group_panoptic(
        predictions["semantic"],
        predictions["center"],
        predictions["offset"],
        num_classes=descriptor.num_classes,
        thing_classes=descriptor.thing_classes,
        label_divisor=descriptor.label_divisor,
        void_label=descriptor.ignore_label,
        center_threshold=center_threshold,
        nms_kernel=nms_kernel,
        top_k=top_k,
        stuff_area=stuff_area,
      )
    }

  return step


@register_postprocessor(
  jit=True, reads=("class_logits", "mask_logits", "logits"), adds=("panoptic",)
)
def mask_panoptic(object_threshold: float = 0.8, overlap_threshold: float = 0.8):
  """``panoptic`` ids of a mask-classification model (Mask2Former) from its per-query
  ``class_logits`` and ``mask_logits`` at the size of ``logits``
  (`segjax.postprocess.panoptic.mask_classification_panoptic`); the thresholds are the paper's
  (queries above 0.8 probability; a query keeps its pixels if they are 80% of its mask)."""

  def step(predictions, descriptor):
    return {
      "panoptic": panoptic.mask_classification_panoptic(
        predictions["class_logits"],
        predictions["mask_logits"],
        size=predictions["logits"].shape[1:3],
        thing_classes=descriptor.thing_classes,
        label_divisor=descriptor.label_divisor,
        void_label=descriptor.ignore_label,
        object_threshold=object_threshold,
        overlap_threshold=overlap_threshold,
      )
    }

  return step


@register_postprocessor(reads=("class_logits", "mask_logits", "logits"), adds=("instances",))
def mask_instances(top_k: int = 100):
  """``instances`` of a mask-classification model: per image the ``top_k`` (query, thing class)
  pairs scored by class × mask probability
  (`segjax.postprocess.panoptic.mask_classification_instances`), for mask AP and pre-labels."""

  def step(predictions, descriptor):
    size = predictions["logits"].shape[1:3]
    return {
      "instances": per_image(
        lambda c, m: panoptic.mask_classification_instances(
          c,
          m,
          size=size,
          thing_classes=descriptor.thing_classes,
          label_divisor=descriptor.label_divisor,
          top_k=top_k,
        ),
        predictions["class_logits"],
        predictions["mask_logits"],
      )
    }

  return step


INSTANCE_METHODS = ("components", "watershed")


@register_postprocessor(reads=("semantic",), adds=("instance", "panoptic"))
def semantic_instances(method: str = "components", min_area: int = 0, min_distance: float = 0.6):
  """Instances of the thing classes of ``semantic``: 8-connected components (``"components"``) or
  a watershed on the distance transform that splits touching round objects (``"watershed"``,
  markers above ``min_distance`` × each component's largest distance); components under
  ``min_area`` pixels become void. Adds ``instance`` (uint16 ids, unique over the image) and
  ``panoptic`` (``class * label_divisor + instance``; stuff: instance 0), so semantic models get PQ
  and instance pre-labels."""
  if method not in INSTANCE_METHODS:
    raise ValueError(
      f"semantic_instances: method must be one of {INSTANCE_METHODS}, not {method!r}"
    )
  split = {
    "components": morphology.connected_instances,
    "watershed": lambda mask, min_area: morphology.watershed_instances(
      mask, min_distance=min_distance, min_area=min_area
    ),
  }[method]

  def one(labels, descriptor):
    instance = np.zeros(labels.shape, np.int32)
    for c in descriptor.thing_classes:
      ids = split(labels == c, min_area=min_area).astype(np.int32)
      instance = np.where(ids > 0, ids + instance.max(), instance)
    void = np.isin(labels, descriptor.thing_classes) & (instance == 0)
    ids = np.where(
      void,
      descriptor.ignore_label * descriptor.label_divisor,
      labels.astype(np.int32) * descriptor.label_divisor + instance,
    )
    return instance.astype(np.uint16), ids

  def step(predictions, descriptor):
    results = per_image(lambda labels: one(labels, descriptor), predictions["semantic"])
    return {
      "instance": np.stack([r[0] for r in results]),
      "panoptic": np.stack([r[1] for r in results]),
    }

  return step


@register_postprocessor(reads=("panoptic", "logits"), adds=("instances",))
def scored_instances():
  """``instances``: per image the thing instances of ``panoptic`` with scores (heatmap maximum
  over the mask, if the model has a ``center`` head, × the mean probability of the instance's class
  from ``logits``; `segjax.postprocess.panoptic.instance_predictions`), for mask AP and COCO
  pre-labels."""

  def step(predictions, descriptor):
    probs = jax.nn.softmax(jnp.asarray(predictions["logits"], jnp.float32), axis=-1)
    return {
      "instances": per_image(
        lambda p, c, q: panoptic.instance_predictions(
          p, c, q, label_divisor=descriptor.label_divisor, thing_classes=descriptor.thing_classes
        ),
        predictions["panoptic"],
        predictions.get("center"),
        probs,
      )
    }

  return step


def _on_semantic(fn):
  """A host step that replaces ``semantic`` by ``fn(labels)``, image by image."""
  return lambda predictions, descriptor: {
    "semantic": np.stack(per_image(fn, predictions["semantic"]))
  }


def _register_morphology(op: str):
  def factory(
    classes: Sequence[int] | None = None, kernel: str = "ellipse", size: int = 3, fill: int = 0
  ):
    morphology.kernel(kernel, size)  # checks the settings now
    return _on_semantic(
      lambda labels: morphology.morphology(
        labels, op, classes=classes, kernel_shape=kernel, size=size, fill=fill
      )
    )

  factory.__name__ = op
  factory.__doc__ = (
    f"Morphological {op} of each class's mask in ``semantic`` (OpenCV; kernel "
    "``ellipse``/``rect``/``cross`` of ``size``): pixels a class loses take the "
    "surrounding label (`segjax.postprocess.morphology.morphology`)."
  )
  register_postprocessor(factory, name=op, reads=("semantic",))


for _op in morphology.MORPHOLOGY:
  _register_morphology(_op)


@register_postprocessor(reads=("semantic",))
def remove_small(min_area: int = 16, classes: Sequence[int] | None = None, fill="surrounding"):
  """Removes 8-connected components of ``semantic`` under ``min_area`` pixels; their pixels take
  the surrounding label (or the class ``fill``)."""
  return _on_semantic(
    lambda labels: morphology.remove_small(labels, min_area, classes=classes, fill=fill)
  )


@register_postprocessor(reads=("semantic",))
def fill_holes(classes: Sequence[int] | None = None, max_area: int | None = None):
  """Fills the holes of each class's regions in ``semantic`` (up to ``max_area`` pixels)."""
  return _on_semantic(
    lambda labels: morphology.fill_holes(labels, classes=classes, max_area=max_area)
  )
