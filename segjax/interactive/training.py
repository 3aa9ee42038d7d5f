"""Training click models: RITM's iterative click simulation, in ``jnp``, inside the train step.

A click model (`segjax.models.interactive`) reads the image and three prompt channels
(`prompt_input`): positive clicks, negative clicks (disks of ``radius`` pixels) and the previous
mask. ``config.step_inputs = "iterative_clicks(...)"`` (`segjax.step_inputs`) turns each training
batch into such inputs, as RITM trains (Sofiiuk, Petrov, Konushin 2022, "Reviving Iterative
Training with Mask Guidance for Interactive Segmentation", ``isegm/engine/trainer.py``):

1. one object per example, drawn uniformly among the instances of ``batch["instance"]`` (an
   example without one is ignored); the target becomes ``semantic`` 1 on the object, 0 elsewhere,
   the ignore label where it was;
2. initial clicks: 1..``max_positive`` positive clicks inside the object (drawn with weights
   proportional to the distance from its boundary) and 0..``max_negative`` negative clicks on the
   background within ``negative_band`` pixels of it;
3. 0..``max_iterations`` iterations (one draw per batch) without gradient: the model predicts
   from the clicks so far and its previous mask, and the next click goes where RITM's
   ``get_next_points`` puts it: the error type (missed or false) whose distance transform has the
   larger maximum, at a random pixel of it farther than half that maximum from the error's
   boundary (the image border counts as boundary);
4. the train step's forward pass (with gradient) reads the clicks and the last previous mask.

Distances are exact Euclidean (`distance_to`). Examples without any object, and iterations on
examples without errors, leave their click slots empty. The training metric ``object_iou`` logs
the IoU of the object class over the training batches.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from segjax import registry
from segjax import train_metrics

PROMPT_CHANNELS = 3  # positive clicks, negative clicks, previous mask


def distance_to(sources: jnp.ndarray, border: bool = False) -> jnp.ndarray:
  """Exact Euclidean distance ``[H, W]`` of each pixel to the nearest pixel of ``sources`` (bool
  ``[H, W]``; with ``border``, the ring of pixels just outside the image counts as a source too);
  0 on the sources, ``inf`` where there is none. Two separable passes of ``min((i - j)² + f(j))``,
  ``O(H·W·(H + W))``: exact, and plain array operations for the compiler."""
  height, width = sources.shape
  far = jnp.float32((height + width + 2) ** 2)
  rows, cols = jnp.arange(height), jnp.arange(width)
  # Along each row: the squared distance to the nearest source of the row.
  squares = ((cols[:, None] - cols[None, :]) ** 2).astype(jnp.float32)
  g = jnp.min(jnp.where(sources[:, None, :], squares[None], far), axis=-1)
  if border:
    g = jnp.minimum(g, (jnp.minimum(cols + 1, width - cols) ** 2).astype(jnp.float32)[None])
  # Along each column: the nearest row's value plus the squared row distance.
  squares = ((rows[:, None] - rows[None, :]) ** 2).astype(jnp.float32)
  d = jnp.min(squares[:, :, None] + g[None, :, :], axis=1)
  if border:
    d = jnp.minimum(d, (jnp.minimum(rows + 1, height - rows) ** 2).astype(jnp.float32)[:, None])
  return jnp.where(d >= far, jnp.inf, jnp.sqrt(d))


def distance_inside(region: jnp.ndarray) -> jnp.ndarray:
  """Distance of each pixel of ``region`` to the nearest pixel outside it (the image border
  counts as outside; OpenCV's ``distanceTransform`` of the zero-padded region); 0 outside."""
  return jnp.where(region, distance_to(~region, border=True), 0.0)


def click_maps(clicks: jnp.ndarray, size, radius: float) -> jnp.ndarray:
  """``[B, H, W, 2]`` float32 maps of ``clicks`` (int32 ``[B, N, 3]``: row, column, kind with 1
  positive, -1 negative, 0 an empty slot): channel 0 is 1 within ``radius`` of a positive click,
  channel 1 of a negative one."""
  rows = jnp.arange(size[0])[None, None, :, None]
  cols = jnp.arange(size[1])[None, None, None, :]
  y, x, kind = (clicks[..., i][..., None, None] for i in range(3))
  disk = (rows - y) ** 2 + (cols - x) ** 2 <= radius**2  # [B, N, H, W]
  positive = jnp.any(disk & (kind > 0), axis=1)
  negative = jnp.any(disk & (kind < 0), axis=1)
  return jnp.stack([positive, negative], axis=-1).astype(jnp.float32)


def prompt_input(image, clicks, previous, radius: float) -> jnp.ndarray:
  """The click model's input ``[B, H, W, C + 3]``: ``image``, the click maps (`click_maps`) and
  ``previous`` (``[B, H, W]``, the previous mask, 0/1)."""
  maps = click_maps(clicks, image.shape[1:3], radius)
  previous = previous.astype(image.dtype)[..., None]
  return jnp.concatenate([image, maps.astype(image.dtype), previous], axis=-1)


def _sample(rng, weights: jnp.ndarray, count: int) -> tuple[jnp.ndarray, jnp.ndarray]:
  """``count`` distinct pixels ``[count, 2]`` drawn with probability proportional to ``weights``
  (``[H, W]``, >= 0; Gumbel top-k), and whether each was drawable (weight > 0)."""
  flat = weights.reshape(-1)
  keys = jnp.where(flat > 0, jnp.log(jnp.maximum(flat, 1e-30)), -jnp.inf)
  keys = keys + jax.random.gumbel(rng, flat.shape)
  values, index = jax.lax.top_k(keys, count)
  return jnp.stack(jnp.unravel_index(index, weights.shape), axis=-1), values > -jnp.inf


def choose_object(instance: jnp.ndarray, rng, max_objects: int) -> tuple[jnp.ndarray, jnp.ndarray]:
  """One instance of ``instance`` (int32 ``[H, W]``, 0 = none) drawn uniformly among the first
  ``max_objects`` ids present: ``(its mask [H, W], whether there was one)``."""
  ids = jnp.unique(instance, size=max_objects + 1, fill_value=0)
  present = ids > 0
  pick = jnp.argmax(jnp.where(present, jax.random.gumbel(rng, ids.shape), -jnp.inf))
  return (instance == ids[pick]) & present[pick], jnp.any(present)


def initial_clicks(target, keep, rng, max_positive: int, max_negative: int, negative_band: float):
  """The first clicks ``[max_positive + max_negative, 3]`` of one example (see the module
  docstring): 1..``max_positive`` positive, 0..``max_negative`` negative."""
  rngs = jax.random.split(rng, 4)
  inside = distance_inside(target)
  positive, ok_positive = _sample(rngs[0], inside, max_positive)
  background = ~target & keep
  near = (distance_to(target) <= negative_band) & background
  negative, ok_negative = _sample(rngs[1], near.astype(jnp.float32), max(max_negative, 1))
  negative, ok_negative = negative[:max_negative], ok_negative[:max_negative]
  count_positive = jax.random.randint(rngs[2], (), 1, max_positive + 1)
  count_negative = jax.random.randint(rngs[3], (), 0, max_negative + 1)
  kind_positive = (ok_positive & (jnp.arange(max_positive) < count_positive)).astype(jnp.int32)
  kind_negative = -(ok_negative & (jnp.arange(max_negative) < count_negative)).astype(jnp.int32)
  return jnp.concatenate(
    [
      jnp.concatenate([positive, kind_positive[:, None]], axis=-1),
      jnp.concatenate([negative, kind_negative[:, None]], axis=-1),
    ]
  ).astype(jnp.int32)


def next_click(target, prediction, keep, rng) -> jnp.ndarray:
  """RITM's next training click ``[3]`` on one example's errors (module docstring, step 3); an
  empty slot (kind 0) when the prediction has no error."""
  missed = distance_inside(target & ~prediction & keep)
  false = distance_inside(~target & prediction & keep)
  positive = missed.max() > false.max()
  distance = jnp.where(positive, missed, false)
  largest = jnp.maximum(missed.max(), false.max())
  where, drawable = _sample(rng, (distance > largest / 2).astype(jnp.float32), 1)
  kind = jnp.where(drawable[0] & (largest > 0), jnp.where(positive, 1, -1), 0)
  return jnp.concatenate([where[0], kind[None]]).astype(jnp.int32)


@registry.register("step_inputs", "iterative_clicks")
def iterative_clicks(
  forward,
  batch: dict,
  rng,
  *,
  ignore_label: int,
  radius: float = 5.0,
  max_positive: int = 3,
  max_negative: int = 3,
  negative_band: float = 20.0,
  max_iterations: int = 3,
  max_objects: int = 64,
) -> dict:
  """RITM's training inputs of ``batch`` (module docstring): ``image`` with the prompt channels,
  ``semantic`` the chosen object (1) on background (0), ``clicks`` ``[B, N, 3]``.
  ``forward(image) -> outputs`` is the model without gradient (`segjax.step_inputs`)."""
  if "instance" not in batch:
    raise KeyError(
      "config.step_inputs=iterative_clicks draws objects from instance labels; this dataset's "
      f"training batches hold {sorted(batch)} (a folder dataset: add instances/ masks)"
    )
  image, semantic = batch["image"], batch["semantic"]
  keep = semantic != ignore_label
  batch_size = image.shape[0]
  rng_object, rng_first, rng_count, rng_next = jax.random.split(rng, 4)
  target, has_object = jax.vmap(lambda i, r: choose_object(i, r, max_objects))(
    batch["instance"], jax.random.split(rng_object, batch_size)
  )
  first = jax.vmap(
    lambda t, k, r: initial_clicks(t, k, r, max_positive, max_negative, negative_band)
  )(target, keep, jax.random.split(rng_first, batch_size))
  first = first * has_object[:, None, None].astype(jnp.int32)
  slots = jnp.zeros((batch_size, max_iterations, 3), jnp.int32)
  clicks = jnp.concatenate([first, slots], axis=1)
  previous = jnp.zeros(semantic.shape, jnp.float32)
  iterations = jax.random.randint(rng_count, (), 0, max_iterations + 1)

  def iterate(i, carry):
    clicks, previous = carry
    logits = forward(prompt_input(image, clicks, previous, radius))["logits"]
    prediction = jnp.argmax(logits, axis=-1) == 1
    new = jax.vmap(next_click)(
      target, prediction, keep, jax.random.split(jax.random.fold_in(rng_next, i), batch_size)
    )
    new = new * has_object[:, None].astype(jnp.int32)
    clicks = jax.lax.dynamic_update_slice(clicks, new[:, None], (0, first.shape[1] + i, 0))
    return clicks, prediction.astype(jnp.float32)

  clicks, previous = jax.lax.fori_loop(0, iterations, iterate, (clicks, previous))
  clicks, previous = jax.lax.stop_gradient((clicks, previous))
  labels = jnp.where(keep & has_object[:, None, None], target.astype(semantic.dtype), ignore_label)
  return {
    **batch,
    "image": prompt_input(image, clicks, previous, radius),
    "semantic": labels,
    "clicks": clicks,
  }


def object_iou_summary(sums, steps: int, descriptor) -> dict[str, float]:
  del steps, descriptor
  union = float(sums["union"])
  return {"object_iou": float(sums["intersection"]) / union if union else float("nan")}


@train_metrics.train_metric(summary=object_iou_summary)
def object_iou(outputs, batch, *, num_classes: int, ignore_label: int, output: str = "logits"):
  """Intersection and union (pixels) of the predicted object (``argmax == 1``) and the target
  object (``semantic == 1``), the ignore label left out; logged: ``object_iou``, their ratio over
  the training batches since the last log step."""
  del num_classes
  keep = batch["semantic"] != ignore_label
  predicted = (jnp.argmax(outputs[output], axis=-1) == 1) & keep
  truth = (batch["semantic"] == 1) & keep
  return {
    "intersection": jnp.sum(predicted & truth, dtype=jnp.int32),
    "union": jnp.sum(predicted | truth, dtype=jnp.int32),
  }


def train_on_frame(config, workdir: str, image, instances):
  """A click model (``config``, with an ``interactive`` evaluator first in ``config.evals``)
  trained on the left half of a frame (``image``, ``instances`` ``[H, W]``: the whole frame,
  written as a folder dataset in ``workdir/data`` by `segjax.data.microscopy.write_regions`) and
  evaluated by clicks on its right half, in ``workdir/click_run`` (resumed if there). Returns
  ``(run directory, the evaluator's metrics)``."""
  # pylint: disable=import-outside-toplevel
  import os

  from segjax import train
  from segjax.data import microscopy

  (name, entry), *_ = config.evals.items()
  if not str(entry.type).startswith("interactive"):
    raise ValueError(f"config.evals.{name} is of type {entry.type!r}, not 'interactive'")
  config.data.root = microscopy.write_regions(os.path.join(workdir, "data"), image, instances)
  run = os.path.join(workdir, "click_run")
  result = train.train_and_evaluate(config, run)
  if result.preempted:
    raise SystemExit("preempted: run again to resume")
  return run, result.metrics[name]
