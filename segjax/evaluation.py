"""Exact evaluation of a split: the inference spec, the post-processors, the evaluators by name.

``config.evals`` names the evaluations of a run, as big_vision's ``config.evals`` does::

  config.evals = {
    "val": dict(type="semantic", split="validation", every_steps=500,
                inference=dict(window=(1024, 1024), scales=(0.75, 1.0, 1.25), tta="flip")),
    "pq": dict(type="panoptic", split="validation"),
    "ap": dict(type="mask_ap", split="validation"),
  }

Each entry's ``type`` is a registered evaluator (`segjax.evaluators`: ``semantic``, ``panoptic``,
``mask_ap``, or ``"my_project.evals:MyEvaluator(...)"``), or a tuple of them whose metrics share one
summary; without ``type`` an entry gets every evaluator the chain and the labels allow. ``split``
defaults to the first of ``config.eval_splits``, ``every_steps`` to ``config.eval_every_steps``
(every entry also runs at the end of training) and ``inference`` overrides fields of
``config.inference`` (`segjax.inference.Spec`). Without ``config.evals`` each split of
``config.eval_splits`` is one entry of that name without ``type``.

The model's outputs go through the inference spec and ``config.postprocess``
(`segjax.postprocess.Chain`); the evaluators' sums accumulate on device (exactly, in
`segjax.metrics.ExactSum`), summed by the compiler over the batch, the devices and the hosts;
padding examples (``valid = False``) count nowhere. Entries with the same split and inference spec
share one pass over the split. When every step of the chain is jit-compatible and no evaluator
works on the host, forward pass, post-processing and sums are one compiled step; host steps
(OpenCV) run on each process's own examples between two compiled steps.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from segjax import evaluators as evaluators_lib
from segjax import inference
from segjax import metrics
from segjax import postprocess
from segjax import sharding
from segjax.data import pipeline

ENTRY_KEYS = ("type", "split", "every_steps", "inference")


def eval_local_batch_size(eval_batch_size: int, mesh) -> int:
  """This process's share of an evaluation batch of ``eval_batch_size`` rounded up to a multiple
  of the device count (the extra slots are padding, marked invalid), so any eval batch size works
  on any number of devices."""
  devices = mesh.devices.size
  global_batch = math.ceil(eval_batch_size / devices) * devices
  return global_batch // jax.process_count()


@dataclasses.dataclass(frozen=True)
class Entry:
  """One entry of ``config.evals``: its evaluators (``None``: all that apply), split, period and
  inference spec."""

  name: str
  types: tuple | None
  split: str
  every_steps: int
  spec: inference.Spec


def entries(config) -> list[Entry]:
  """The evaluations ``config`` asks for (see the module docstring), checked key by key."""
  splits = tuple(config.get("eval_splits", ("validation",)) or ())
  every = int(config.get("eval_every_steps", 0) or 0)
  evals = config.get("evals")
  if not evals:
    spec = inference.Spec.from_config(config)
    return [Entry(split, None, split, every, spec) for split in splits]
  found = []
  for name, entry in dict(evals).items():
    entry = dict(entry or {})
    unknown = sorted(set(entry) - set(ENTRY_KEYS))
    if unknown:
      raise KeyError(
        f"config.evals.{name}: unknown key(s) {unknown}; the keys are {list(ENTRY_KEYS)}"
      )
    types = entry.get("type")
    if types is not None:
      types = (types,) if isinstance(types, str) or callable(types) else tuple(types)
    split = entry.get("split") or (splits[0] if splits else "validation")
    if not isinstance(split, str):
      raise ValueError(f"config.evals.{name}.split={split!r}: give the split's name")
    every_steps = entry.get("every_steps", every)
    if not isinstance(every_steps, int) or every_steps < 0:
      raise ValueError(f"config.evals.{name}.every_steps={every_steps!r}: give a step count >= 0")
    try:
      spec = inference.Spec.from_config(config, entry.get("inference"))
    except (KeyError, ValueError) as e:
      raise type(e)(f"config.evals.{name}: {e}") from e
    found.append(Entry(str(name), types, split, every_steps, spec))
  return found


class Evaluator:
  """Compiled evaluation of ``model`` under one inference spec (default ``config.inference``)
  and the ``config.postprocess`` chain on ``mesh``, for the evaluators of each name in
  ``named`` (``{name: evaluator specs or None}``; default ``{"": None}``, ``None`` meaning every
  evaluator the chain and the labels allow)."""

  def __init__(
    self,
    model,
    config,
    descriptor,
    mesh,
    image_shape,
    panoptic_labels: bool = True,
    named=None,
    spec: inference.Spec | None = None,
  ):
    self.descriptor = descriptor
    self.mesh = mesh
    self.config = config
    self.spec = spec or inference.Spec.from_config(config)
    self.chain = postprocess.Chain(config.get("postprocess", "argmax"), descriptor)
    self.spec.check_chain(self.chain)
    image = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    outputs = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False),
      jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(image.shape), train=False)),
      image,
    )
    self.chain.check_outputs(outputs)
    produced = set(outputs) | {a for step in self.chain.steps for a in step.adds}
    if "semantic" not in produced:
      raise ValueError(
        f"config.postprocess={self.chain.spec!r} makes no 'semantic' map; start it with 'argmax'."
      )
    self.named = {
      name: self._evaluators(name, types, produced, panoptic_labels)
      for name, types in (named or {"": None}).items()
    }
    every = [e for group in self.named.values() for e in group]
    self.host_evaluators = [e for e in every if getattr(e, "host", False)]
    self.labels = tuple(dict.fromkeys(k for e in every for k in e.labels))
    device_reads = {r for e in every if not getattr(e, "host", False) for r in e.reads}
    host_reads = {r for e in every for r in e.reads} | {r for s in self.chain.host for r in s.reads}
    replicated, rows = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    self.device_reads = tuple(sorted(device_reads))

    def predict(variables, images):
      apply = lambda x, **kwargs: model.apply(variables, x, train=False, **kwargs)
      predictions = self.chain.apply_compiled(self.spec.outputs(apply, images, rows))
      return {k: v for k, v in predictions.items() if k in host_reads}

    def add_metrics(sums, predictions, batch):
      new = {
        name: [e.batch_sums(predictions, batch) for e in group]
        for name, group in self.named.items()
      }
      return sums.add(new)

    self.fused = not self.chain.host and not self.host_evaluators
    # fused: step(variables, sums, batch) -> sums; else predict(variables, images) -> predictions
    # on the devices, the host steps, then add_metrics(sums, predictions, batch) -> sums.
    self.step = jax.jit(
      lambda variables, sums, batch: add_metrics(sums, predict(variables, batch["image"]), batch),
      donate_argnums=(1,),
      out_shardings=replicated,
    )
    self.predict = jax.jit(predict, out_shardings=rows)
    # Evaluators that prompt the model themselves (``model_inputs``: an interactive evaluator's
    # clicks) get the same spec and chain on inputs they make.
    self.prompted = {
      id(e): jax.jit(
        lambda variables, arrays, e=e: predict(variables, e.model_inputs(*arrays)),
        out_shardings=rows,
      )
      for e in self.host_evaluators
      if hasattr(e, "model_inputs")
    }
    self.add_metrics = jax.jit(add_metrics, donate_argnums=(0,), out_shardings=replicated)

  def _evaluators(self, name, types, produced, panoptic_labels):
    where = f"config.evals.{name}" if name else "the evaluation"
    labels = {"semantic"} | ({"panoptic", "instance"} if panoptic_labels else set())
    if types is None:  # every evaluator the chain and the labels allow
      types = ["semantic"]
      if "panoptic" in produced and panoptic_labels:
        types.append("panoptic")
        if "instances" in produced and self.config.get("eval_mask_ap", True):
          types.append("mask_ap")
    made = []
    for spec in types:
      try:
        made.append(evaluators_lib.make(spec, self.descriptor))
      except KeyError as e:
        raise KeyError(f"{where}.type={spec!r}: {e.args[0]}") from e
      missing = sorted(set(made[-1].reads) - produced)
      if missing:
        raise ValueError(
          f"{where}.type={spec!r} reads {missing}, which config.postprocess="
          f"{self.chain.spec!r} does not make"
        )
      absent = sorted(set(made[-1].labels) - labels)
      if absent:
        raise ValueError(f"{where}.type={spec!r} needs {absent} labels; the dataset has none")
    return made

  def batch_keys(self) -> tuple[str, ...]:
    return ("image", "valid") + self.labels

  def zero_sums(self) -> metrics.ExactSum:
    """The split's running totals (`segjax.metrics.ExactSum`: exact past 2**32 pixels per cell)
    of every evaluator, ``{name: [sums of each evaluator]}``."""
    return metrics.ExactSum.zeros(
      {name: [e.zeros() for e in group] for name, group in self.named.items()}
    )

  def evaluate_named(self, variables, source, split: str) -> dict:
    """``{name: metrics}`` of ``split`` (see the module docstring), JSON-ready."""
    config, mesh = self.config, self.mesh
    ds, _ = pipeline.eval_dataset(
      source,
      config.data,
      split,
      local_batch_size=eval_local_batch_size(config.eval_batch_size, mesh),
      process_index=jax.process_index(),
      process_count=jax.process_count(),
    )
    variables = sharding.on_mesh(variables, mesh)
    sums = jax.device_put(self.zero_sums(), sharding.replicated(mesh))
    for e in self.host_evaluators:
      if id(e) in self.prompted:
        e.start(self._prompter(self.prompted[id(e)], variables))
      else:
        e.start()
    for local in pipeline.as_numpy(ds, source):
      batch = sharding.global_batch({k: local[k] for k in self.batch_keys()}, mesh)
      if self.fused:
        sums = self.step(variables, sums, batch)
        continue
      predictions = {
        k: sharding.local_rows(v) for k, v in self.predict(variables, batch["image"]).items()
      }
      predictions = self.chain.apply_host(predictions)
      on_device = sharding.global_batch(
        {k: np.asarray(predictions[k]) for k in self.device_reads}, mesh
      )
      sums = self.add_metrics(sums, on_device, batch)
      for e in self.host_evaluators:
        e.collect(predictions, local)
    totals = jax.device_get(sums).value()
    results = {}
    for name, group in self.named.items():
      summary = {}
      for e, e_sums in zip(group, totals[name]):
        summary.update(e.summarize(e_sums))
      results[name] = summary
    return results

  def _prompter(self, compiled, variables):
    """``predict(*arrays) -> predictions`` of this process's rows (numpy), for an evaluator
    that prompts the model (rows padded to a multiple of the local devices, then dropped)."""
    devices = len(self.mesh.local_devices)

    def predict(*arrays):
      count = len(arrays[0])
      pad = (-count) % devices
      arrays = [np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)]) for a in arrays]
      out = compiled(variables, sharding.global_batch(arrays, self.mesh))
      out = self.chain.apply_host({k: sharding.local_rows(v) for k, v in out.items()})
      return {k: np.asarray(v)[:count] for k, v in out.items()}

    return predict

  def evaluate(self, variables, source, split: str) -> dict:
    """The metrics of ``split`` of every evaluator, in one summary."""
    summary = {}
    for result in self.evaluate_named(variables, source, split).values():
      summary.update(result)
    return summary


class Evaluations:
  """The evaluations of ``config.evals`` (`entries`) of ``model``: one `Evaluator` per split and
  inference spec, shared by the entries that name both."""

  def __init__(self, model, config, descriptor, mesh, image_shape, panoptic_labels: bool = True):
    self.entries = entries(config)
    groups: dict[tuple, list[Entry]] = {}
    for entry in self.entries:
      groups.setdefault((entry.split, entry.spec), []).append(entry)
    self.groups = [
      (
        split,
        group,
        Evaluator(
          model,
          config,
          descriptor,
          mesh,
          image_shape,
          panoptic_labels,
          named={e.name: e.types for e in group},
          spec=spec,
        ),
      )
      for (split, spec), group in groups.items()
    ]

  def due(self, step: int) -> bool:
    return any(e.every_steps and step % e.every_steps == 0 for e in self.entries)

  def run(self, variables, source, step: int | None = None) -> dict:
    """``{name: metrics}`` of the entries due at ``step`` (every entry when ``step`` is None)."""
    results = {}
    for split, group, evaluator in self.groups:
      wanted = [
        e.name for e in group if step is None or (e.every_steps and step % e.every_steps == 0)
      ]
      if wanted:
        named = evaluator.evaluate_named(variables, source, split)
        results.update({name: named[name] for name in wanted})
    return {e.name: results[e.name] for e in self.entries if e.name in results}


def gather_instances(per_image: list[dict]) -> list[dict]:
  """Every process's per-image instances (``{"masks": [N,H,W], ...}``), in process order, so
  that host-side metrics (mask AP) see all images, as one process does. Masks travel as COCO
  RLE."""
  if jax.process_count() == 1:
    return per_image
  import pickle  # pylint: disable=import-outside-toplevel
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  from pycocotools import mask as mask_utils  # pylint: disable=import-outside-toplevel

  def encode(item):
    masks = np.asarray(item["masks"], np.uint8)
    rle = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0))) if len(masks) else []
    return {**item, "masks": (rle, masks.shape)}

  def decode(item):
    rle, shape = item["masks"]
    masks = (
      mask_utils.decode(rle).transpose(2, 0, 1).astype(bool) if shape[0] else np.zeros(shape, bool)
    )
    return {**item, "masks": masks}

  payload = np.frombuffer(pickle.dumps([encode(i) for i in per_image]), np.uint8)
  sizes = np.asarray(multihost_utils.process_allgather(np.array([payload.size], np.int64)))
  padded = np.zeros(int(sizes.max()), np.uint8)
  padded[: payload.size] = payload
  everything = np.asarray(multihost_utils.process_allgather(padded))
  return [
    decode(item)
    for p in range(len(sizes))
    for item in pickle.loads(everything[p, : int(sizes[p, 0])].tobytes())
  ]


def format_summary(summary: dict) -> str:
  """One readable line of the main metrics (PQ, mask AP, mIoU and per-class IoU), or of every
  number at the top level of a summary without them (a user's evaluator)."""
  number = lambda v: "n/a" if v is None else f"{v:.4f}"
  parts = []
  if "pq" in summary:
    parts.append(
      f"PQ {number(summary['pq'])} (things {number(summary['pq_things'])}, stuff "
      f"{number(summary['pq_stuff'])})"
    )
  if "ap" in summary:
    parts.append(f"mask AP {number(summary['ap'])} (AP50 {number(summary['ap50'])})")
  if "mean_iou" in summary:
    per_class = ", ".join(f"{name} {number(v)}" for name, v in summary["iou"].items())
    parts.append(
      f"mIoU {number(summary['mean_iou'])}, pixel accuracy "
      f"{number(summary['pixel_accuracy'])}, mean pixel accuracy "
      f"{number(summary['mean_pixel_accuracy'])}; IoU: {per_class}"
    )
  if not parts:
    parts = [
      f"{k} {number(v)}"
      for k, v in summary.items()
      if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
    ]
  return ", ".join(parts)


def evaluate_run(path: str, config=None, step: int | None = None) -> dict:
  """Evaluates a trained model (run directory or exported file; `segjax.runs.load`) as
  ``config.evals`` (or ``config.eval_splits``) says; ``config`` (default: the run's) supplies the
  data location, evaluation, inference and post-processing settings, the run the model and the
  normalisation. Metrics keyed by evaluation name (the split, without ``config.evals``)."""
  from segjax import runs  # pylint: disable=import-outside-toplevel

  run = runs.load(path, step)
  config = runs.with_run_model(run, config)
  pipeline.check_config(config.data)
  mesh = sharding.make_mesh(config.get("num_devices"))
  source = pipeline.get_source(config.data)
  runs.check_same_classes(run.descriptor, source.descriptor)
  evaluations = Evaluations(
    run.model,
    config,
    run.descriptor,
    mesh,
    runs.input_shape(config),
    panoptic_labels=pipeline.has_instances(source),
  )
  return evaluations.run(run.variables, source)
