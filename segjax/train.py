"""The segjax trainer: ``train_and_evaluate(config, workdir)``.

Read top to bottom: mesh, input, model, state, step, checkpoint, eval, loop. Everything that varies
comes from the ``ml_collections`` config; see ``configs/unet_shapes.py`` for the keys.
"""
from __future__ import annotations

import os
import signal
import threading
from typing import Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from segjax import checkpointing
from segjax import logging as run_logging
from segjax import losses
from segjax import metrics
from segjax import models
from segjax import optim
from segjax import sharding
from segjax.data import pipeline
from segjax.data import targets
from segjax.models import pretrained
from segjax.train_state import MetricSums, TrainState

TRAIN_KEYS = ("image", "semantic")
EVAL_KEYS = ("image", "semantic", "valid")


# ================================================================================================
# Mesh and workdir
# ================================================================================================
def check_workdir(workdir: str) -> str:
  """Creates ``workdir`` if needed; its parent must exist (a typo should not grow directories)."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  parent = os.path.dirname(workdir)
  if not os.path.isdir(parent):
    raise FileNotFoundError(f"The parent directory of --workdir={workdir!r} does not exist "
                            f"({parent!r}). Create it first or choose another workdir.")
  os.makedirs(workdir, exist_ok=True)
  return workdir


# ================================================================================================
# Input
# ================================================================================================
def device_batches(batches: Iterator[dict], mesh, keys) -> Iterator[dict]:
  """Global sharded batches, one transfer ahead of the step that consumes them."""
  pending = None
  for batch in batches:
    ready = sharding.global_batch({k: batch[k] for k in keys}, mesh)
    if pending is not None:
      yield pending
    pending = ready
  if pending is not None:
    yield pending


# ================================================================================================
# Model
# ================================================================================================
def build_model(config, num_classes: int, descriptor=None):
  """The model named by ``config.model.name`` with the other ``config.model`` keys as arguments
  (a panoptic model also gets the dataset's thing classes and label divisor)."""
  kwargs = {k: v for k, v in config.model.to_dict().items()
            if k not in ("name", "dtype", "pretrained")}
  if config.model.name == "panoptic_deeplab" and descriptor is not None:
    kwargs.setdefault("thing_classes", tuple(descriptor.thing_classes))
    kwargs.setdefault("label_divisor", descriptor.label_divisor)
  dtype = jnp.dtype(config.model.get("dtype", "float32"))
  return models.create(config.model.name, num_classes=num_classes, dtype=dtype, **kwargs)


# ================================================================================================
# State
# ================================================================================================
def create_train_state(model, tx, image_shape, seed: int, mesh,
                       min_shard_size: int = 2**12) -> TrainState:
  """Initialises the state directly in its sharding (`sharding.state_shardings`: replicated, or
  split over the mesh's ``fsdp`` axis): eval_shape -> jit(init)."""

  def init(rng):
    variables = model.init(rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params))

  # The "rbg" generator compiles initialisers ~6x faster than threefry on CPU (seconds, not half
  # a minute, for a UNet); the parameters it draws are replicated, so every device agrees.
  rng = jax.random.key(seed, impl="rbg")
  abstract = jax.eval_shape(init, rng)
  return jax.jit(init, out_shardings=sharding.state_shardings(abstract, mesh, min_shard_size))(rng)


# ================================================================================================
# Step
# ================================================================================================
def train_keys(config) -> tuple[str, ...]:
  """The batch entries the train step needs: image and labels, plus the panoptic targets."""
  return TRAIN_KEYS + (targets.TARGET_KEYS if config.get("panoptic") else ())


def make_model_loss(config, ignore_label: int):
  """``(outputs, batch) -> (total, terms)``: ``config.loss`` on the model's ``logits``, plus
  ``config.aux_loss_weight`` (default 0.4) times the main loss on ``aux_logits`` (DeepLab's FCN
  head) and ``config.scale_loss_weight`` (default 0.05) times it on each of HMSA's
  ``scale_logits``, when the model returns them.

  Panoptic-DeepLab (outputs ``center``/``offset``; ``config.panoptic``): the semantic term is
  ``config.loss``, or with ``semantic_top_k`` the paper's bootstrapped cross-entropy with the
  small-instance pixel weights; plus
  ``center_loss_weight`` (200) × the heatmap MSE and ``offset_loss_weight`` (0.01) × the offset L1,
  each averaged over the pixels their weights select (the paper's losses and weights)."""
  loss_fn = losses.make_loss(config.loss, ignore_label=ignore_label)
  aux_weight = config.get("aux_loss_weight", 0.4)
  scale_weight = config.get("scale_loss_weight", 0.05)
  panoptic = config.get("panoptic") or {}

  def panoptic_loss(outputs, batch):
    labels = batch["semantic"]
    if panoptic.get("semantic_top_k"):  # the paper's semantic loss
      terms = {"semantic": losses.cross_entropy(
          outputs["logits"], labels, ignore_label=ignore_label,
          top_k_percent=panoptic.semantic_top_k, pixel_weights=batch["semantic_weight"])}
    else:  # config.loss, as for semantic models
      semantic_total, terms = loss_fn(outputs["logits"], labels)
      terms = {"semantic": semantic_total, **{f"semantic/{k}": v for k, v in terms.items()}}
    w = batch["center_weight"]
    terms["center"] = losses._safe_divide(  # pylint: disable=protected-access
        jnp.sum(w * (outputs["center"] - batch["center"]) ** 2), jnp.sum(w))
    w = batch["offset_weight"][..., None]
    terms["offset"] = losses._safe_divide(  # pylint: disable=protected-access
        jnp.sum(w * jnp.abs(outputs["offset"] - batch["offset"])), 2.0 * jnp.sum(w))
    total = (terms["semantic"] + panoptic.get("center_loss_weight", 200.0) * terms["center"]
             + panoptic.get("offset_loss_weight", 0.01) * terms["offset"])
    return total, terms

  def model_loss(outputs, batch):
    if "center" in outputs:
      return panoptic_loss(outputs, batch)
    labels = batch["semantic"]
    total, terms = loss_fn(outputs["logits"], labels)
    extra = {}
    if "aux_logits" in outputs and aux_weight:
      extra["aux"] = (aux_weight, outputs["aux_logits"])
    for scale, logits in sorted(outputs.get("scale_logits", {}).items()):
      if scale_weight:
        extra[f"scale_{scale}"] = (scale_weight, logits)
    for name, (weight, logits) in extra.items():
      terms[name] = loss_fn(logits, labels)[0]
      total = total + weight * terms[name]
    return total, terms

  return model_loss


def make_train_step(model, tx, loss_fn, num_classes: int, ignore_label: int, mesh, seed: int = 0,
                    state_sharding=None):
  """The compiled train step ``(state, sums, batch) -> (state, sums)``; state and sums donated.

  ``loss_fn(outputs, batch)`` is `make_model_loss`'s; dropout draws from ``(seed, step)``. The new
  state keeps ``state_sharding`` (the state's shardings, `sharding.shardings_of`; default:
  replicated). Nothing leaves the device: the host reads the sums only when it logs."""

  def step(state: TrainState, sums: MetricSums, batch):
    dropout = jax.random.fold_in(jax.random.key(seed, impl="rbg"), state.step)

    def compute_loss(params):
      outputs, updates = model.apply({"params": params, "batch_stats": state.batch_stats},
                                     batch["image"], train=True, mutable=["batch_stats"],
                                     rngs={"dropout": dropout})
      total, terms = loss_fn(outputs, batch)
      return total, (terms, updates, outputs["logits"])

    (total, (terms, updates, logits)), grads = jax.value_and_grad(compute_loss, has_aux=True)(
        state.params)
    param_updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(step=state.step + 1,
                              params=jax.tree_util.tree_map(jnp.add, state.params, param_updates),
                              batch_stats=updates.get("batch_stats", state.batch_stats),
                              opt_state=opt_state)
    terms = {"loss": total, **{f"loss/{k}": v for k, v in terms.items()}}
    # A step is good when its loss and the parameters it produced are finite.
    finite = jnp.isfinite(total) & jnp.isfinite(optax.global_norm(new_state.params))
    new_sums = MetricSums(
        loss_sums={k: sums.loss_sums[k] + terms[k] for k in sums.loss_sums},
        steps=sums.steps + 1,
        confusion=sums.confusion + metrics.confusion_matrix(
            metrics.argmax_prediction(logits), batch["semantic"], num_classes,
            ignore_label=ignore_label),
        first_nonfinite_step=jnp.where((sums.first_nonfinite_step < 0) & ~finite, state.step + 1,
                                       sums.first_nonfinite_step))
    return new_state, new_sums

  replicated = sharding.replicated(mesh)
  return jax.jit(step, donate_argnums=(0, 1),
                 out_shardings=(state_sharding or replicated, replicated))


def make_eval_step(model, descriptor, mesh):
  """Compiled ``(state, sums, batch) -> sums``; padding examples (valid=False) are not counted.

  ``sums["confusion"]`` is the semantic confusion matrix; when the model returns a ``"panoptic"``
  id map, ``sums["panoptic"]`` holds the panoptic-quality sums against the batch's ``panoptic``.
  Both are summed on device across batches, devices and hosts.
  """
  num_classes = descriptor.num_classes

  def step(state: TrainState, sums, batch):
    outputs = model.apply(state.variables, batch["image"], train=False)
    new = {"confusion": sums["confusion"] + metrics.confusion_matrix(
        metrics.argmax_prediction(outputs["logits"]), batch["semantic"], num_classes,
        ignore_label=descriptor.ignore_label, weights=batch["valid"][:, None, None])}
    if "panoptic" in sums:
      new["panoptic"] = sums["panoptic"] + metrics.panoptic_sums(
          outputs["panoptic"], batch["panoptic"], num_classes=num_classes,
          label_divisor=descriptor.label_divisor, thing_classes=descriptor.thing_classes,
          stuff_classes=descriptor.stuff_classes, valid=batch["valid"])
    return new

  return jax.jit(step, donate_argnums=(1,), out_shardings=sharding.replicated(mesh))


def returns_panoptic(model, state, image_shape) -> bool:
  """Whether the model's evaluation outputs include a ``"panoptic"`` id map."""
  image = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
  outputs = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), state.variables, image)
  return "panoptic" in outputs


# ================================================================================================
# Checkpoint
# ================================================================================================
def make_checkpointer(config, workdir: str) -> checkpointing.Checkpointer:
  return checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"),
                                    every_steps=config.checkpoint_every_steps,
                                    keep=config.keep_checkpoints)


def restore_or_keep(checkpointer, state: TrainState) -> TrainState:
  """The latest checkpoint if there is one (automatic resumption), else ``state``."""
  step = checkpointer.latest_step()
  if step is None:
    return state
  try:
    restored = checkpointer.restore(state, step)
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f"Checkpoint {step} in {checkpointer.directory} does not fit the model of "
                     "this config (was the workdir used with another model?). Use a new --workdir "
                     f"or the config that wrote it. Orbax said: {e}") from e
  run_logging.info("Resumed from checkpoint %d in %s", step, checkpointer.directory)
  return restored


class PreemptionGuard:
  """Preemption notices (SIGTERM) as a question the loop asks every step: ``stop_at(step)``.

  One process: a SIGTERM handler sets a flag (the old handler is restored on exit). Several
  processes: the JAX distributed runtime's preemption service, which spreads a notice received by
  any host to all and agrees on one step at which every process saves and stops
  (``multihost_utils.reached_preemption_sync_point``); a per-process flag would leave the others
  waiting in a collective."""

  def __init__(self):
    self.requested = False
    self._previous = None
    self._multi_process = jax.process_count() > 1 and jax.distributed.is_initialized()

  def __enter__(self):
    if not self._multi_process and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def stop_at(self, step: int) -> bool:
    if self._multi_process:
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
      self.requested = self.requested or multihost_utils.reached_preemption_sync_point(step)
    return self.requested

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


# ================================================================================================
# Eval
# ================================================================================================
def evaluate(eval_step, state, source, config, split: str, mesh, *, panoptic: bool = False,
             model=None) -> dict:
  """Exact evaluation of ``split``: summed confusion matrix -> ``metrics.summarize``; with
  ``panoptic``, also PQ/SQ/RQ (``summary["panoptic"]``, `metrics.panoptic_summary`) and, given the
  ``model`` (one process), the mask AP of its instances (``summary["mask_ap"]``)."""
  ds, _ = pipeline.eval_dataset(source, config.data, split,
                                local_batch_size=sharding.local_batch_size(config.eval_batch_size, mesh),
                                process_index=jax.process_index(),
                                process_count=jax.process_count())
  descriptor = source.descriptor
  sums = {"confusion": jnp.zeros((descriptor.num_classes,) * 2, jnp.int32)}
  if panoptic:
    sums["panoptic"] = metrics.PanopticSums.zeros(descriptor.num_classes)
  sums = jax.device_put(sums, sharding.replicated(mesh))
  keys = EVAL_KEYS + (("panoptic",) if panoptic else ())
  for batch in device_batches(pipeline.as_numpy(ds), mesh, keys):
    sums = eval_step(state, sums, batch)
  sums = jax.device_get(sums)
  confusion = np.asarray(sums["confusion"])
  summary = metrics.summarize(confusion, descriptor.class_names)
  summary["confusion_matrix"] = confusion.tolist()
  if panoptic:
    summary["panoptic"] = metrics.panoptic_summary(
        sums["panoptic"], thing_classes=descriptor.thing_classes,
        stuff_classes=descriptor.stuff_classes, class_names=descriptor.class_names)
    for group, suffix in (("all", ""), ("things", "_things"), ("stuff", "_stuff")):
      for key in ("pq", "sq", "rq"):  # flat copies for TensorBoard and metrics.jsonl
        summary[key + suffix] = summary["panoptic"][group][key]
    if model is not None and config.get("eval_mask_ap", True) and jax.process_count() == 1:
      summary["mask_ap"] = instance_mask_ap(state, source, config, split, mesh, model)
      summary["ap"], summary["ap50"] = summary["mask_ap"]["ap"], summary["mask_ap"]["ap50"]
  return summary


def instance_mask_ap(state, source, config, split: str, mesh, model) -> dict:
  """COCO mask AP (`metrics.mask_ap`, pycocotools) of a panoptic model's scored thing instances
  (`panoptic.instance_predictions`) on ``split``; host-side, so single-process only."""
  from segjax.models import panoptic as panoptic_lib  # pylint: disable=import-outside-toplevel
  descriptor = source.descriptor
  ds, _ = pipeline.eval_dataset(source, config.data, split,
                                local_batch_size=sharding.local_batch_size(config.eval_batch_size, mesh))
  forward = jax.jit(lambda variables, image: {
      k: v for k, v in model.apply(variables, image, train=False).items()
      if k in ("logits", "center", "panoptic")})
  truths, predictions = [], []
  for batch in pipeline.as_numpy(ds):
    out = jax.device_get(forward(state.variables,
                                 sharding.global_batch({"image": batch["image"]}, mesh)["image"]))
    probs = np.asarray(jax.nn.softmax(out["logits"], axis=-1))
    for i in np.flatnonzero(batch["valid"]):
      predictions.append(panoptic_lib.instance_predictions(
          out["panoptic"][i], out["center"][i], probs[i], label_divisor=descriptor.label_divisor,
          thing_classes=descriptor.thing_classes))
      truths.append(metrics.instances_from_panoptic(
          batch["panoptic"][i], label_divisor=descriptor.label_divisor,
          thing_classes=descriptor.thing_classes))
  return metrics.mask_ap(truths, predictions, class_ids=descriptor.thing_classes,
                         class_names=[descriptor.class_names[c] for c in descriptor.thing_classes])


# ================================================================================================
# Loop
# ================================================================================================
def format_summary(summary: dict) -> str:
  """One readable line of the main metrics and the per-class IoU."""
  number = lambda v: "n/a" if v is None else f"{v:.4f}"
  per_class = ", ".join(f"{name} {number(v)}" for name, v in summary["iou"].items())
  panoptic = (f"PQ {number(summary['pq'])} (things {number(summary['pq_things'])}, stuff "
              f"{number(summary['pq_stuff'])}), " if "pq" in summary else "")
  if "ap" in summary:
    panoptic += f"mask AP {number(summary['ap'])} (AP50 {number(summary['ap50'])}), "
  return (f"{panoptic}mIoU {number(summary['mean_iou'])}, pixel accuracy "
          f"{number(summary['pixel_accuracy'])}, mean pixel accuracy "
          f"{number(summary['mean_pixel_accuracy'])}; IoU: {per_class}")


def _fetch_sums(sums: MetricSums, descriptor) -> tuple[dict, int]:
  host = jax.device_get(sums)
  steps = max(int(host.steps), 1)
  scalars = {k: float(v) / steps for k, v in host.loss_sums.items()}
  train_metrics = metrics.summarize(host.confusion, descriptor.class_names)
  for key in ("mean_iou", "pixel_accuracy"):
    scalars[key] = float("nan") if train_metrics[key] is None else train_metrics[key]
  return scalars, int(host.first_nonfinite_step)


def _loss_terms(model, loss_fn, state, config):
  """The names of the loss terms, from the shapes the model returns in training."""
  image = jax.ShapeDtypeStruct((1, *config.data.crop_size, 3), jnp.float32)

  def terms(variables, image):
    outputs, _ = model.apply(variables, image, train=True, mutable=["batch_stats"],
                             rngs={"dropout": jax.random.key(0)})
    spatial = image.shape[:3]
    batch = {"semantic": jnp.zeros(spatial, jnp.int32), "center": jnp.zeros(spatial),
             "offset": jnp.zeros(spatial + (2,)), "center_weight": jnp.zeros(spatial),
             "offset_weight": jnp.zeros(spatial), "semantic_weight": jnp.zeros(spatial)}
    return loss_fn(outputs, batch)[1]

  return list(jax.eval_shape(terms, state.variables, image))


def setup(config):
  """Shared by training, evaluation and prediction: mesh, data source, model, optimizer, state."""
  options = config.get("sharding") or {}
  mesh = sharding.make_mesh(config.get("num_devices"), fsdp=options.get("fsdp", 1))
  source = pipeline.get_source(config.data)
  model = build_model(config, source.descriptor.num_classes, source.descriptor)
  tx = optim.make_optimizer(config.optimizer, config.num_train_steps)
  state = create_train_state(model, tx, (*config.data.crop_size, 3), config.seed, mesh,
                             min_shard_size=options.get("fsdp_min_size", 2**12))
  if config.model.get("pretrained"):  # a torchvision ResNet (or DeepLab) file for the backbone
    variables = pretrained.load_backbone({"params": state.params, "batch_stats": state.batch_stats},
                                         config.model.pretrained)
    variables = jax.device_put(variables, sharding.shardings_of(state.variables))
    state = state.replace(params=variables["params"], batch_stats=variables["batch_stats"],
                          opt_state=jax.jit(tx.init, out_shardings=sharding.shardings_of(
                              state.opt_state))(variables["params"]))
  return mesh, source, model, tx, state


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains per ``config`` in ``workdir`` (resuming from its latest checkpoint) and evaluates.

  Returns the final metrics keyed by split (also written to ``<workdir>/final_metrics.json``), or
  ``{}`` when stopped early by SIGTERM after saving a checkpoint.
  """
  workdir = check_workdir(workdir)
  loss_fn = make_model_loss(config, ignore_label=config.data.get("ignore_label", 255))
  mesh, source, model, tx, state = setup(config)
  descriptor = source.descriptor
  writer = run_logging.MetricWriter(workdir)
  writer.write_config(config)
  checkpointer = make_checkpointer(config, workdir)
  state = restore_or_keep(checkpointer, state)
  start_step = int(jax.device_get(state.step))
  total_steps = config.num_train_steps

  local_batch = sharding.local_batch_size(config.batch_size, mesh)
  train_ds = pipeline.train_dataset(source, config.data, local_batch_size=local_batch,
                                    seed=config.seed, start_step=start_step,
                                    process_index=jax.process_index(),
                                    process_count=jax.process_count())
  train_step = make_train_step(model, tx, loss_fn, descriptor.num_classes, descriptor.ignore_label,
                               mesh, config.seed, state_sharding=sharding.shardings_of(state))
  eval_step = make_eval_step(model, descriptor, mesh)
  panoptic = returns_panoptic(model, state, (*config.data.crop_size, 3))
  term_names = ["loss"] + [f"loss/{k}" for k in _loss_terms(model, loss_fn, state, config)]
  new_sums = lambda: jax.device_put(MetricSums.zeros(term_names, descriptor.num_classes),
                                    sharding.replicated(mesh))
  sums = new_sums()
  progress = run_logging.Progress(total_steps, start_step)
  last_saved = checkpointer.latest_step()

  def log_and_check(step):
    nonlocal sums
    scalars, bad_step = _fetch_sums(sums, descriptor)
    if bad_step >= 0:
      raise FloatingPointError(
          f"The training loss became NaN or infinite at step {bad_step} ({scalars}). Training "
          f"stopped; the last good checkpoint (step {last_saved}) in {checkpointer.directory} is "
          "intact. Lower config.optimizer.learning_rate, set config.optimizer.grad_clip_norm, or "
          "check the input data.")
    scalars["steps_per_second"] = progress.report(step, scalars)
    writer.write_scalars(step, scalars, prefix="train/")
    sums = new_sums()

  batches = device_batches(pipeline.as_numpy(train_ds), mesh, train_keys(config))
  with PreemptionGuard() as preemption:
    for step in range(start_step + 1, total_steps + 1):
      state, sums = train_step(state, sums, next(batches))
      is_last = step == total_steps
      stopping = preemption.stop_at(step)
      saving = checkpointer.should_save(step) or is_last or stopping
      if saving or step % config.log_every_steps == 0:
        log_and_check(step)  # never checkpoint a state that saw a non-finite loss
      if saving:
        checkpointer.save(step, state)
        last_saved = step
      if (stopping or (saving and preemption.requested)) and not is_last:
        run_logging.info("SIGTERM received: saved checkpoint %d in %s and stopped.", step,
                         checkpointer.directory)
        checkpointer.close()
        writer.close()
        return {}
      if config.eval_every_steps and step % config.eval_every_steps == 0 and not is_last:
        for split in config.eval_splits:
          summary = evaluate(eval_step, state, source, config, split, mesh, panoptic=panoptic,
                             model=model)
          writer.write_scalars(step, summary, prefix=f"{split}/")

  final = {split: evaluate(eval_step, state, source, config, split, mesh, panoptic=panoptic,
                            model=model)
           for split in config.eval_splits}
  for split, summary in final.items():
    writer.write_scalars(total_steps, summary, prefix=f"{split}/")
    run_logging.info("%s: %s", split, format_summary(summary))
  if jax.process_index() == 0:
    run_logging.write_json_atomic(os.path.join(workdir, "final_metrics.json"), final)
  checkpointer.close()
  writer.close()
  return final


def load_trained(config, workdir: str, step: int | None = None):
  """Model, restored state, data source and mesh of a training run (latest checkpoint by default)."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  mesh, source, model, _, state = setup(config)
  checkpointer = make_checkpointer(config, workdir)
  try:
    state = checkpointer.restore(state, step)
  finally:
    checkpointer.close()
  return model, state, source, mesh


def evaluate_checkpoint(config, workdir: str, step: int | None = None) -> dict:
  """Evaluates a saved checkpoint on ``config.eval_splits``; returns metrics keyed by split."""
  model, state, source, mesh = load_trained(config, workdir, step)
  descriptor = source.descriptor
  eval_step = make_eval_step(model, descriptor, mesh)
  panoptic = returns_panoptic(model, state, (*config.data.crop_size, 3))
  return {split: evaluate(eval_step, state, source, config, split, mesh, panoptic=panoptic,
                            model=model)
          for split in config.eval_splits}
