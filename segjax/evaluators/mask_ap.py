"""``mask_ap``: COCO mask AP of the scored instances (``instances``) against the thing instances
of the panoptic ground truth, on the host, over every process's images
(`segjax.metrics.mask_ap`)."""

from __future__ import annotations

import numpy as np

from segjax import metrics
from segjax.evaluators import evaluator


@evaluator("mask_ap")
class MaskAP:
  reads = ("instances",)
  labels = ("panoptic",)
  host = True

  def __init__(self, descriptor):
    self.descriptor = descriptor
    self.start()

  def zeros(self):
    return {}

  def batch_sums(self, predictions, batch):
    return {}

  def start(self):
    self.truths, self.found = [], []

  def collect(self, predictions, local):
    """Each image within its own size: padding is neither truth nor prediction."""
    d = self.descriptor
    for i in np.flatnonzero(local["valid"]):
      height, width = local["size"][i]
      item = predictions["instances"][i]
      self.found.append({**item, "masks": np.asarray(item["masks"])[:, :height, :width]})
      self.truths.append(
        metrics.instances_from_panoptic(
          local["panoptic"][i, :height, :width],
          label_divisor=d.label_divisor,
          thing_classes=d.thing_classes,
        )
      )

  def summarize(self, sums) -> dict:
    from segjax import evaluation  # pylint: disable=import-outside-toplevel

    d = self.descriptor
    result = metrics.mask_ap(
      evaluation.gather_instances(self.truths),
      evaluation.gather_instances(self.found),
      class_ids=d.thing_classes,
      class_names=[d.class_names[c] for c in d.thing_classes],
    )
    return {"mask_ap": result, "ap": result["ap"], "ap50": result["ap50"]}
