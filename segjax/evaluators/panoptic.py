"""``panoptic``: panoptic quality (PQ = SQ × RQ) of the panoptic map against the panoptic ground
truth, for all classes, things and stuff, and per class (`segjax.metrics.panoptic_sums`)."""

from __future__ import annotations

from segjax import metrics
from segjax.evaluators import evaluator


@evaluator("panoptic")
class Panoptic:
  reads = ("panoptic",)
  labels = ("panoptic",)

  def __init__(self, descriptor):
    self.descriptor = descriptor

  def zeros(self):
    return {"panoptic": metrics.PanopticSums.zeros(self.descriptor.num_classes)}

  def batch_sums(self, predictions, batch):
    d = self.descriptor
    return {
      "panoptic": metrics.panoptic_sums(
        predictions["panoptic"],
        batch["panoptic"],
        num_classes=d.num_classes,
        label_divisor=d.label_divisor,
        thing_classes=d.thing_classes,
        stuff_classes=d.stuff_classes,
        valid=batch["valid"],
      )
    }

  def summarize(self, sums) -> dict:
    d = self.descriptor
    panoptic = metrics.panoptic_summary(
      sums["panoptic"],
      thing_classes=d.thing_classes,
      stuff_classes=d.stuff_classes,
      class_names=d.class_names,
    )
    summary = {"panoptic": panoptic}
    for group, suffix in (("all", ""), ("things", "_things"), ("stuff", "_stuff")):
      for key in ("pq", "sq", "rq"):  # flat copies for TensorBoard and metrics.jsonl
        summary[key + suffix] = panoptic[group][key]
    return summary
