"""Exact evaluation of a split through the configured post-processors.

The model's outputs go through ``config.postprocess`` (`segjax.postprocess.Chain`), and the
metrics follow from what the chain produces: ``semantic`` → the confusion matrix (mIoU, pixel
accuracy, ...; `segjax.metrics.summarize`), ``panoptic`` → PQ/SQ/RQ, ``instances`` → COCO mask AP.
The confusion matrix and the PQ sums accumulate on device (exactly, in `segjax.metrics.ExactSum`),
summed by the compiler over the batch, the devices and the hosts; padding examples (``valid = False``) count nowhere. When every step of
the chain is jit-compatible, forward pass, post-processing and metric sums are one compiled step;
host steps (OpenCV) run on each process's own examples between two compiled steps.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from segjax import inference
from segjax import metrics
from segjax import postprocess
from segjax import sharding
from segjax.data import pipeline

# The per-image entries of the chain's output that the metrics read.
METRIC_ENTRIES = ("semantic", "panoptic")


def eval_local_batch_size(eval_batch_size: int, mesh) -> int:
  """This process's share of an evaluation batch of ``eval_batch_size`` rounded up to a multiple
  of the device count (the extra slots are padding, marked invalid), so any eval batch size works
  on any number of devices."""
  devices = mesh.devices.size
  global_batch = math.ceil(eval_batch_size / devices) * devices
  return global_batch // jax.process_count()


class Evaluator:
  """Compiled evaluation of ``model`` with the ``config.postprocess`` chain on ``mesh``."""

  def __init__(self, model, config, descriptor, mesh, image_shape, panoptic_labels: bool = True):
    self.descriptor = descriptor
    self.mesh = mesh
    self.config = config
    self.chain = postprocess.Chain(config.get("postprocess", "argmax"), descriptor)
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
    # PQ needs predicted panoptic maps and panoptic ground truth (instance labels).
    self.panoptic = "panoptic" in produced and panoptic_labels
    self.instances = "instances" in produced
    host_reads = set(METRIC_ENTRIES) | {r for step in self.chain.host for r in step.reads}
    replicated, rows = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    tta = config.get("eval_tta", "")
    if tta not in inference.EVAL_TTA:
      raise ValueError(f"config.eval_tta={tta!r}; use one of {sorted(inference.EVAL_TTA)}")
    if tta and self.chain.reads() != {"logits"}:
      raise ValueError(
        f"config.eval_tta={tta!r} averages class probabilities; the chain "
        f"{self.chain.spec!r} also reads {sorted(self.chain.reads() - {'logits'})}"
      )

    def predict(variables, images):
      apply = lambda x: model.apply(variables, x, train=False)
      # with TTA the chain reads only the logits: those of the averaged passes
      outputs = (
        {"logits": inference.dihedral_tta(lambda x: apply(x)["logits"], images, tta)}
        if tta
        else apply(images)
      )
      predictions = self.chain.apply_compiled(outputs)
      return {k: v for k, v in predictions.items() if k in host_reads}

    def add_metrics(sums, predictions, batch):
      new = {
        "confusion": metrics.confusion_matrix(
          predictions["semantic"],
          batch["semantic"],
          descriptor.num_classes,
          ignore_label=descriptor.ignore_label,
          weights=batch["valid"][:, None, None],
        )
      }
      if self.panoptic:
        new["panoptic"] = metrics.panoptic_sums(
          predictions["panoptic"],
          batch["panoptic"],
          num_classes=descriptor.num_classes,
          label_divisor=descriptor.label_divisor,
          thing_classes=descriptor.thing_classes,
          stuff_classes=descriptor.stuff_classes,
          valid=batch["valid"],
        )
      return sums.add(new)

    self.fused = not self.chain.host
    # fused: step(variables, sums, batch) -> sums; else predict(variables, images) -> predictions
    # on the devices, the host steps, then add_metrics(sums, predictions, batch) -> sums.
    self.step = jax.jit(
      lambda variables, sums, batch: add_metrics(sums, predict(variables, batch["image"]), batch),
      donate_argnums=(1,),
      out_shardings=replicated,
    )
    self.predict = jax.jit(predict, out_shardings=rows)
    self.add_metrics = jax.jit(add_metrics, donate_argnums=(0,), out_shardings=replicated)

  def batch_keys(self) -> tuple[str, ...]:
    return ("image", "semantic", "valid") + (("panoptic",) if self.panoptic else ())

  def zero_sums(self) -> metrics.ExactSum:
    """The split's running totals (`segjax.metrics.ExactSum`: exact past 2**32 pixels per cell)
    of ``{"confusion": [C,C], "panoptic": PanopticSums}``."""
    sums = {"confusion": jnp.zeros((self.descriptor.num_classes,) * 2, jnp.int32)}
    if self.panoptic:
      sums["panoptic"] = metrics.PanopticSums.zeros(self.descriptor.num_classes)
    return metrics.ExactSum.zeros(sums)

  def evaluate(self, variables, source, split: str) -> dict:
    """The metrics of ``split`` (see the module docstring), JSON-ready."""
    config, mesh, descriptor = self.config, self.mesh, self.descriptor
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
    with_ap = self.instances and self.panoptic and config.get("eval_mask_ap", True)
    truths, found = [], []
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
        {k: np.asarray(predictions[k]) for k in METRIC_ENTRIES if k in predictions}, mesh
      )
      sums = self.add_metrics(sums, on_device, batch)
      if with_ap:  # each image within its own size: padding is neither truth nor prediction
        for i in np.flatnonzero(local["valid"]):
          height, width = local["size"][i]
          item = predictions["instances"][i]
          found.append({**item, "masks": np.asarray(item["masks"])[:, :height, :width]})
          truths.append(
            metrics.instances_from_panoptic(
              local["panoptic"][i, :height, :width],
              label_divisor=descriptor.label_divisor,
              thing_classes=descriptor.thing_classes,
            )
          )
    return self._summarize(jax.device_get(sums).value(), truths, found, with_ap)

  def _summarize(self, sums, truths, found, with_ap) -> dict:
    descriptor = self.descriptor
    confusion = np.asarray(sums["confusion"])
    summary = metrics.summarize(confusion, descriptor.class_names)
    summary["confusion_matrix"] = confusion.tolist()
    if self.panoptic:
      summary["panoptic"] = metrics.panoptic_summary(
        sums["panoptic"],
        thing_classes=descriptor.thing_classes,
        stuff_classes=descriptor.stuff_classes,
        class_names=descriptor.class_names,
      )
      for group, suffix in (("all", ""), ("things", "_things"), ("stuff", "_stuff")):
        for key in ("pq", "sq", "rq"):  # flat copies for TensorBoard and metrics.jsonl
          summary[key + suffix] = summary["panoptic"][group][key]
    if with_ap:
      truths, found = gather_instances(truths), gather_instances(found)
      summary["mask_ap"] = metrics.mask_ap(
        truths,
        found,
        class_ids=descriptor.thing_classes,
        class_names=[descriptor.class_names[c] for c in descriptor.thing_classes],
      )
      summary["ap"], summary["ap50"] = summary["mask_ap"]["ap"], summary["mask_ap"]["ap50"]
    return summary


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
  """One readable line of the main metrics and the per-class IoU."""
  number = lambda v: "n/a" if v is None else f"{v:.4f}"
  per_class = ", ".join(f"{name} {number(v)}" for name, v in summary["iou"].items())
  panoptic = (
    f"PQ {number(summary['pq'])} (things {number(summary['pq_things'])}, stuff "
    f"{number(summary['pq_stuff'])}), "
    if "pq" in summary
    else ""
  )
  if "ap" in summary:
    panoptic += f"mask AP {number(summary['ap'])} (AP50 {number(summary['ap50'])}), "
  return (
    f"{panoptic}mIoU {number(summary['mean_iou'])}, pixel accuracy "
    f"{number(summary['pixel_accuracy'])}, mean pixel accuracy "
    f"{number(summary['mean_pixel_accuracy'])}; IoU: {per_class}"
  )


def evaluate_run(path: str, config=None, step: int | None = None) -> dict:
  """Evaluates a trained model (run directory or exported file; `segjax.runs.load`) on
  ``config.eval_splits``; ``config`` (default: the run's) supplies the data location, evaluation
  and post-processing settings, the run the model and the normalisation. Metrics keyed by split."""
  from segjax import runs  # pylint: disable=import-outside-toplevel

  run = runs.load(path, step)
  config = runs.with_run_model(run, config)
  pipeline.check_config(config.data)
  mesh = sharding.make_mesh(config.get("num_devices"))
  source = pipeline.get_source(config.data)
  runs.check_same_classes(run.descriptor, source.descriptor)
  evaluator = Evaluator(
    run.model,
    config,
    run.descriptor,
    mesh,
    runs.input_shape(config),
    panoptic_labels=pipeline.has_instances(source),
  )
  return {split: evaluator.evaluate(run.variables, source, split) for split in config.eval_splits}


def evaluate_predictor(predictor, source, split: str, batch_size: int = 8) -> dict:
  """`segjax.metrics.summarize` of the semantic predictions of ``predictor``
  (`segjax.predict.Predictor`: its multi-scale/flip TTA, sliding window, HMSA ``model_scales``,
  one image at a time on the host) over ``split`` of ``source``, each image at its own size —
  for the prediction settings the compiled `Evaluator` does not run."""
  config, num_classes = predictor.config, source.descriptor.num_classes
  ds, _ = pipeline.eval_dataset(source, config.data, split, local_batch_size=batch_size)
  confusion = np.zeros((num_classes, num_classes), np.int64)
  for batch in pipeline.as_numpy(ds, source):
    for i in np.flatnonzero(batch["valid"]):
      height, width = batch["size"][i]  # without the padding of eval_pad_to / size_multiple
      semantic = predictor.predict_image(batch["image"][i, :height, :width])[0]["semantic"][0]
      confusion += np.asarray(
        metrics.confusion_matrix(
          semantic,
          batch["semantic"][i, :height, :width],
          num_classes,
          ignore_label=source.descriptor.ignore_label,
        )
      )
  return metrics.summarize(confusion, source.descriptor.class_names)
