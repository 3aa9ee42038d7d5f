"""``semantic``: the confusion matrix of the semantic map, and what follows from it (mIoU, pixel
accuracy, mean pixel accuracy, precision, recall, F1, Dice per class; `segjax.metrics.summarize`)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from segjax import metrics
from segjax.evaluators import evaluator


@evaluator("semantic")
class Semantic:
  reads = ("semantic",)
  labels = ("semantic",)

  def __init__(self, descriptor):
    self.descriptor = descriptor

  def zeros(self):
    return {"confusion": jnp.zeros((self.descriptor.num_classes,) * 2, jnp.int32)}

  def batch_sums(self, predictions, batch):
    return {
      "confusion": metrics.confusion_matrix(
        predictions["semantic"],
        batch["semantic"],
        self.descriptor.num_classes,
        ignore_label=self.descriptor.ignore_label,
        weights=batch["valid"][:, None, None],
      )
    }

  def summarize(self, sums) -> dict:
    confusion = np.asarray(sums["confusion"])
    summary = metrics.summarize(confusion, self.descriptor.class_names)
    summary["confusion_matrix"] = confusion.tolist()
    return summary
