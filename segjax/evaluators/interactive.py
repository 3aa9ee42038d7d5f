"""``interactive``: a click model measured in clicks, per object of the ground-truth instances.

Each instance of each image is one object; a simulated annotator clicks as the standard protocol
says (`segjax.interactive.clicks`: the first click on an empty mask, each next one inside the
largest error region at its point farthest from the region's boundary, positive on missed pixels
and negative on false ones; pixels of the ignore label and the padding are never errors), for
``max_clicks`` clicks. After each click the model predicts the object from the image, the click
disks of ``radius`` pixels and its previous mask (`segjax.interactive.training.prompt_input`),
through the run's inference spec and post-processing (``semantic == 1`` is the object).

The objects of a batch go through the model ``object_batch`` at a time; every process runs the
same number of passes (the largest of any process), so it works on any number of hosts. Metrics:
``noc85``, ``noc90`` (mean clicks to reach IoU 0.85 / 0.90, ``max_clicks`` when never reached),
``failures90``, ``objects``, and ``miou_at_k`` (mean IoU after k = 1..max_clicks clicks).
"""

from __future__ import annotations

import math

import jax
import numpy as np

from segjax.evaluators import evaluator
from segjax.interactive import clicks as clicks_lib
from segjax.interactive import training


@evaluator("interactive")
class Interactive:
  reads = ("semantic",)
  labels = ("semantic", "instance")
  host = True

  def __init__(
    self,
    descriptor,
    radius: float = 5.0,
    max_clicks: int = 20,
    mode: str = "largest",
    object_batch: int = 32,
    max_objects: int = 256,
  ):
    if mode not in ("largest", "farthest"):
      raise ValueError(f"interactive: mode={mode!r}; use 'largest' or 'farthest'")
    if max_clicks < 1 or object_batch < 1:
      raise ValueError(f"interactive: max_clicks={max_clicks}, object_batch={object_batch}: >= 1")
    self.descriptor = descriptor
    self.radius, self.max_clicks, self.mode = radius, max_clicks, mode
    self.object_batch, self.max_objects = object_batch, max_objects
    self.predict = None
    self.start()

  def model_inputs(self, images, clicks, previous):
    """The click model's input (``jnp``, compiled with the model by `segjax.evaluation`)."""
    return training.prompt_input(images, clicks, previous, self.radius)

  def zeros(self):
    return {}

  def batch_sums(self, predictions, batch):
    return {}

  def start(self, predict=None):
    """``predict(images, clicks, previous) -> predictions`` (numpy, this process's rows)."""
    self.curves, self.predict = [], predict

  def collect(self, predictions, local):
    del predictions  # the model is prompted here, object by object
    if self.predict is None:
      raise RuntimeError("interactive evaluator: started without the model (segjax.evaluation)")
    ignore_label = self.descriptor.ignore_label
    objects = []  # (image index, truth, ignore)
    for i in np.flatnonzero(local["valid"]):
      height, width = local["size"][i]
      ignore = np.ones(local["semantic"].shape[1:], bool)
      ignore[:height, :width] = local["semantic"][i, :height, :width] == ignore_label
      instance = np.where(ignore, 0, local["instance"][i])
      for value in np.unique(instance[instance > 0])[: self.max_objects]:
        objects.append((i, instance == value, ignore))
    passes = _agreed(math.ceil(len(objects) / self.object_batch))
    for p in range(passes):
      self._click(local["image"], objects[p * self.object_batch : (p + 1) * self.object_batch])

  def _click(self, images, objects):
    """The protocol for up to ``object_batch`` objects at once (empty slots are padding)."""
    n, shape = self.object_batch, images.shape[1:3]
    rows = np.array([o[0] for o in objects] + [0] * (n - len(objects)), np.int64)
    batch_images = images[rows]
    prediction = np.zeros((n, *shape), bool)
    clicked = [[] for _ in range(n)]
    ious = [[] for _ in range(len(objects))]
    for k in range(self.max_clicks):
      for j, (_, truth, ignore) in enumerate(objects):
        click = clicks_lib.next_click(truth, prediction[j], ignore, clicked[j], self.mode)
        if click is not None:
          clicked[j].append(click)
      encoded = np.zeros((n, self.max_clicks, 3), np.int32)
      for j, sequence in enumerate(clicked):
        for c, click in enumerate(sequence):
          encoded[j, c] = (click.y, click.x, 1 if click.positive else -1)
      out = self.predict(batch_images, encoded, prediction.astype(np.float32))
      new = np.asarray(out["semantic"]) == 1
      for j, (_, truth, ignore) in enumerate(objects):
        if len(clicked[j]) == k + 1:  # a click was given: the model answers it
          prediction[j] = new[j]
        ious[j].append(clicks_lib.iou(truth, prediction[j], ignore))
    self.curves.extend(ious)

  def summarize(self, sums) -> dict:
    del sums
    curves = _gather_rows(np.asarray(self.curves, np.float64).reshape(-1, self.max_clicks))
    return clicks_lib.summarize_clicks(list(curves), self.max_clicks)


def _agreed(count: int) -> int:
  """The largest ``count`` of any process (each process runs that many passes)."""
  if jax.process_count() == 1:
    return count
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

  return int(np.max(multihost_utils.process_allgather(np.array([count], np.int64))))


def _gather_rows(rows: np.ndarray) -> np.ndarray:
  """Every process's ``rows`` ``[n_p, k]``, in process order."""
  if jax.process_count() == 1:
    return rows
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

  counts = np.asarray(multihost_utils.process_allgather(np.array([len(rows)], np.int64)))[:, 0]
  padded = np.zeros((int(counts.max()), rows.shape[1]), rows.dtype)
  padded[: len(rows)] = rows
  everything = np.asarray(multihost_utils.process_allgather(padded))
  return np.concatenate([everything[p, : counts[p]] for p in range(len(counts))])
