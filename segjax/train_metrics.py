"""Training metrics as terms, like the losses: ``config.train_metrics`` lists pure functions
``(outputs, batch, *, num_classes, ignore_label) -> sums`` (a pytree of arrays). The train step adds
each step's sums on the device (`segjax.train_state.MetricSums`); on log steps the host fetches
them and each metric's ``summary(sums, steps, descriptor) -> {name: float}`` makes the logged
scalars (``train/<name>``). Default summary: every leaf divided by the steps (a mean per step).

An entry is a registered name with arguments (``"confusion(output='aux_logits')"``), an importable
``"package.module:function"``, or a function. Registered here:

* ``confusion`` (default): the confusion matrix of ``argmax(outputs[output])`` against
  ``batch[target]`` (ignore label skipped); logged: ``mean_iou`` and ``pixel_accuracy`` of the
  training batches since the last log step;
* ``mask_confusion``: the same for mask-classification outputs (Mask2Former) at the masks' own
  resolution (stride 4): the semantic scores ``Σ_q p_q(k) · sigmoid(m_q)`` of ``class_logits`` and
  ``mask_logits`` against the label at the centre of each stride x stride block — nothing is
  computed at full resolution.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from segjax import metrics
from segjax import registry


def train_metric(name: str | None = None, summary: Callable | None = None):
  """Decorator: registers a training metric and the function that turns its summed values into
  logged scalars (default `mean_per_step`)."""

  def decorator(fn):
    fn.summary = summary or mean_per_step
    return registry.register("train_metric", name)(fn)

  return decorator


def mean_per_step(sums, steps: int, descriptor) -> dict[str, float]:
  """Each leaf of ``sums`` (scalars) over the steps; the leaf's path names it."""
  del descriptor
  leaves = jax.tree_util.tree_flatten_with_path(sums)[0]
  return {
    jax.tree_util.keystr(path, simple=True, separator="/"): float(np.mean(value)) / steps
    for path, value in leaves
  }


def confusion_summary(sums, steps: int, descriptor) -> dict[str, float]:
  """``mean_iou`` and ``pixel_accuracy`` of the summed confusion matrix (NaN without pixels)."""
  del steps
  summary = metrics.summarize(sums, descriptor.class_names)
  return {
    key: float("nan") if summary[key] is None else summary[key]
    for key in ("mean_iou", "pixel_accuracy")
  }


@train_metric(summary=confusion_summary)
def confusion(
  outputs,
  batch,
  *,
  num_classes: int,
  ignore_label: int,
  output: str = "logits",
  target: str = "semantic",
):
  """The confusion matrix ``[C, C]`` (int32) of ``argmax(outputs[output])`` vs ``batch[target]``."""
  if output not in outputs:
    raise KeyError(
      f"Training metric confusion(output={output!r}): the model's training outputs "
      f"are {sorted(outputs)}; name another output, or set config.train_metrics "
      "(mask-classification models: 'mask_confusion')."
    )
  return metrics.confusion_matrix(
    metrics.argmax_prediction(outputs[output]),
    batch[target],
    num_classes,
    ignore_label=ignore_label,
  )


@train_metric(summary=confusion_summary)
def mask_confusion(
  outputs, batch, *, num_classes: int, ignore_label: int, target: str = "semantic"
):
  """The confusion matrix of mask-classification outputs at the masks' resolution: the class of
  ``Σ_q softmax(class_logits_q)[k] · sigmoid(mask_logits_q)`` per mask pixel against the label at
  the centre of the block of input pixels it covers."""
  class_logits, mask_logits = outputs["class_logits"], outputs["mask_logits"]
  labels = batch[target]
  stride_h = labels.shape[1] // mask_logits.shape[2]
  stride_w = labels.shape[2] // mask_logits.shape[3]
  labels = labels[:, stride_h // 2 :: stride_h, stride_w // 2 :: stride_w]
  labels = labels[:, : mask_logits.shape[2], : mask_logits.shape[3]]
  probs = jax.nn.softmax(class_logits.astype(jnp.float32), axis=-1)[..., :-1]
  scores = jnp.einsum("bqk,bqhw->bhwk", probs, jax.nn.sigmoid(mask_logits.astype(jnp.float32)))
  return metrics.confusion_matrix(
    metrics.argmax_prediction(scores), labels, num_classes, ignore_label=ignore_label
  )


class TrainMetrics:
  """The metrics of ``config.train_metrics``, bound to the dataset's classes."""

  def __init__(self, specs: Sequence, num_classes: int, ignore_label: int):
    if isinstance(specs, (str, bytes)) or callable(specs):
      specs = (specs,)
    self.fns, self.summaries = {}, {}
    for i, spec in enumerate(specs):
      try:
        fn = registry.lookup("train_metric", spec)
      except (KeyError, ValueError) as e:
        reason = e.args[0] if e.args else e
        raise ValueError(f"config.train_metrics[{i}]={spec!r}: {reason}") from e
      base = getattr(fn, "func", fn)
      name = base.__name__ if base.__name__ not in self.fns else f"{base.__name__}_{i}"
      self.fns[name] = fn
      self.summaries[name] = getattr(base, "summary", mean_per_step)
    self.num_classes, self.ignore_label = num_classes, ignore_label

  def __call__(self, outputs, batch) -> dict:
    """The sums of one step: ``{metric name: its pytree}``."""
    return {
      name: fn(outputs, batch, num_classes=self.num_classes, ignore_label=self.ignore_label)
      for name, fn in self.fns.items()
    }

  def summarize(self, sums: dict, steps: int, descriptor) -> dict[str, float]:
    """The logged scalars of the fetched ``sums`` over ``steps`` steps."""
    out = {}
    for name, summary in self.summaries.items():
      out.update(summary(sums[name], steps, descriptor))
    return out
