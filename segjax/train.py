"""The segjax trainer: ``train_and_evaluate(config, workdir)``.

Read top to bottom: workdir, input, state, step, setup, loop. Everything that varies comes from the
``ml_collections`` config (see ``configs/`` and segjax/config_defaults.py): the model is built by
name (`segjax.models.from_config`), the objective from loss terms over the model's outputs
(`segjax.losses.terms`), the input from composable preprocessing ops (`segjax.data.ops`) and the
evaluation from post-processors (`segjax.evaluation`, `segjax.postprocess`). Nothing here knows a
model, a head or a dataset by name.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
import time
from typing import Iterator

import jax
import jax.numpy as jnp
import ml_collections
import optax

from segjax import checkpointing
from segjax import evaluation
from segjax import files
from segjax import run_log
from segjax import losses
from segjax import models
from segjax import optim
from segjax import postprocess
from segjax import runs
from segjax import sharding
from segjax import step_inputs as step_inputs_lib
from segjax import train_metrics as train_metrics_lib
from segjax.data import datasets
from segjax.data import pipeline
from segjax.models import pretrained
from segjax.step_inputs import forward_without_gradient
from segjax.train_state import MetricSums, TrainState


# ================================================================================================
# Workdir
# ================================================================================================
def prepare_workdir(workdir: str) -> str:
  """The absolute ``workdir``, created with its parents."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise NotADirectoryError(f"--workdir={workdir} exists and is not a directory.")
  os.makedirs(workdir, exist_ok=True)
  return workdir


# ================================================================================================
# Input
# ================================================================================================
def device_batches(batches: Iterator[dict], mesh, prefetch: int = 2) -> Iterator[dict]:
  """Global sharded batches, their transfers issued ``prefetch`` batches ahead of the step that
  consumes them (``config.device_prefetch``): the host prepares and sends batch k + prefetch while
  the devices compute step k."""
  pending = collections.deque()
  for batch in batches:
    pending.append(sharding.global_batch(batch, mesh))
    if len(pending) > max(1, prefetch):
      yield pending.popleft()
  while pending:
    yield pending.popleft()


def abstract_batch(element_spec, global_batch_size: int) -> dict:
  """Shapes and dtypes of a global training batch from the pipeline's (local) element spec."""
  return {
    k: jax.ShapeDtypeStruct((global_batch_size, *spec.shape[1:]), spec.dtype.as_numpy_dtype)
    for k, spec in element_spec.items()
  }


# ================================================================================================
# State
# ================================================================================================
def _init_fn(model, tx, image_shape):
  def init(rng):
    variables = model.init(rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
    params = variables["params"]
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=variables.get("batch_stats", {}),
      opt_state=tx.init(params),
    )

  return init


def abstract_train_state(model, tx, image_shape, mesh, min_shard_size: int = 2**12):
  """The train state's shapes and dtypes with their shardings (`sharding.state_shardings`);
  nothing is allocated."""
  abstract = jax.eval_shape(_init_fn(model, tx, image_shape), jax.random.key(0, impl="rbg"))
  shardings = sharding.state_shardings(abstract, mesh, min_shard_size)
  return jax.tree_util.tree_map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings
  )


def state_initializer(model, tx, image_shape, mesh, min_shard_size: int = 2**12):
  """The compiled ``init(rng) -> TrainState`` whose outputs land in their shardings (replicated,
  or split over the mesh's ``fsdp`` axis): eval_shape -> jit(init, out_shardings)."""
  abstract = abstract_train_state(model, tx, image_shape, mesh, min_shard_size)
  return jax.jit(_init_fn(model, tx, image_shape), out_shardings=sharding.shardings_of(abstract))


def create_train_state(
  model, tx, image_shape, seed: int, mesh, min_shard_size: int = 2**12
) -> TrainState:
  """The initial state, directly in its sharding. The "rbg" generator compiles initialisers ~6x
  faster than threefry on CPU; the parameters it draws are replicated, so every device agrees."""
  init = state_initializer(model, tx, image_shape, mesh, min_shard_size)
  return init(jax.random.key(seed, impl="rbg"))


def with_variables(state: TrainState, tx, variables: dict) -> TrainState:
  """``state`` with the model ``variables`` (params, batch_stats) put in its shardings and a
  fresh optimizer state for them."""
  variables = jax.device_put(variables, sharding.shardings_of(state.variables))
  opt_state = jax.jit(tx.init, out_shardings=sharding.shardings_of(state.opt_state))(
    variables["params"]
  )
  return state.replace(
    params=variables["params"], batch_stats=variables["batch_stats"], opt_state=opt_state
  )


def init_from_run(state: TrainState, tx, path: str) -> TrainState:
  """``state`` with every model variable of the trained run (or exported model) at ``path``
  (``config.init_from``: fine-tuning), its optimizer state fresh and its step 0."""
  trained = runs.load(path)
  expected = jax.tree_util.tree_map(lambda x: (x.shape, x.dtype), state.variables)
  found = jax.tree_util.tree_map(lambda x: (x.shape, x.dtype), trained.variables)
  if expected != found:
    raise ValueError(
      f"config.init_from={path}: its model's variables differ from this config's "
      f"model ({trained.config.model.to_dict()} vs. this config's config.model)."
    )
  return with_variables(state, tx, trained.variables)


# ================================================================================================
# Step
# ================================================================================================
def zero_sums(model, objective, train_metrics, variables, batch, step_inputs=None) -> MetricSums:
  """Zero `MetricSums` for one run: ``loss`` and ``loss/<term>`` for each term of the objective,
  and the sums of each training metric (`segjax.train_metrics`), their shapes traced from
  ``batch`` (a dict of `jax.ShapeDtypeStruct`, made into the step's inputs by ``step_inputs``);
  wrap in `jax.eval_shape` for shapes only. The trainer, the plan and the benchmark all build
  their sums here."""
  if step_inputs is not None:
    batch = jax.eval_shape(
      lambda v, b: step_inputs(forward_without_gradient(model, v), b, jax.random.key(0)),
      variables,
      batch,
    )
  outputs = jax.eval_shape(
    lambda v, x: model.apply(
      v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)}
    )[0],
    variables,
    batch["image"],
  )
  names = ["loss"] + [f"loss/{k}" for k in objective.term_labels(outputs, batch)]
  return MetricSums.zeros(names, jax.eval_shape(train_metrics, outputs, batch))


def make_train_step(
  model,
  tx,
  objective,
  train_metrics,
  mesh,
  seed: int = 0,
  state_sharding=None,
  step_inputs=None,
):
  """The compiled train step ``(state, sums, batch) -> (state, sums)``; state and sums donated.

  ``step_inputs(forward, batch, rng) -> batch`` (`segjax.step_inputs`, optional) makes the
  step's inputs first; ``objective(outputs, batch) -> (total, terms)`` (`segjax.losses.Objective`);
  ``train_metrics(outputs, batch) -> sums`` (`segjax.train_metrics.TrainMetrics`) are added to
  ``sums``; dropout draws from ``(seed, step)``. The new state keeps ``state_sharding`` (default:
  replicated). Nothing leaves the device: the host reads the sums only when it logs."""

  def step(state: TrainState, sums: MetricSums, batch):
    dropout = jax.random.fold_in(jax.random.key(seed, impl="rbg"), state.step)
    if step_inputs is not None:
      forward = forward_without_gradient(model, state.variables)
      batch = step_inputs(forward, batch, jax.random.fold_in(dropout, 2))

    def compute_loss(params):
      outputs, updates = model.apply(
        {"params": params, "batch_stats": state.batch_stats},
        batch["image"],
        train=True,
        mutable=["batch_stats"],
        rngs={"dropout": dropout},
      )
      total, terms = objective(outputs, batch, rng=jax.random.fold_in(dropout, 1))
      return total, (terms, updates, outputs)

    (total, (terms, updates, outputs)), grads = jax.value_and_grad(compute_loss, has_aux=True)(
      state.params
    )
    param_updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(
      step=state.step + 1,
      params=jax.tree_util.tree_map(jnp.add, state.params, param_updates),
      batch_stats=updates.get("batch_stats", state.batch_stats),
      opt_state=opt_state,
    )
    terms = {"loss": total, **{f"loss/{k}": v for k, v in terms.items()}}
    # A step is good when its loss and the parameters it produced are finite.
    finite = jnp.isfinite(total) & jnp.isfinite(optax.global_norm(new_state.params))
    new_sums = MetricSums(
      loss_sums={k: sums.loss_sums[k] + terms[k] for k in sums.loss_sums},
      steps=sums.steps + 1,
      metric_sums=jax.tree_util.tree_map(
        jnp.add, sums.metric_sums, train_metrics(jax.lax.stop_gradient(outputs), batch)
      ),
      first_nonfinite_step=jnp.where(
        (sums.first_nonfinite_step < 0) & ~finite, state.step + 1, sums.first_nonfinite_step
      ),
    )
    return new_state, new_sums

  replicated = sharding.replicated(mesh)
  return jax.jit(
    step, donate_argnums=(0, 1), out_shardings=(state_sharding or replicated, replicated)
  )


# ================================================================================================
# Setup
# ================================================================================================
@dataclasses.dataclass
class Trainer:
  """What a training run is made of; `setup` builds it from a config (also for benchmarks)."""

  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  descriptor: object
  source: pipeline.Source | None  # None when built without data (benchmarks)
  model: object
  tx: optax.GradientTransformation
  objective: losses.Objective
  train_metrics: train_metrics_lib.TrainMetrics
  state: TrainState
  pretrained: dict | None = None  # the hub weights it started from (revision, hash), if any
  step_inputs: object = None  # config.step_inputs (segjax.step_inputs), if any

  def train_dataset(self, start_step: int = 0):
    return pipeline.train_dataset(
      self.source,
      self.config.data,
      local_batch_size=sharding.local_batch_size(self.config.batch_size, self.mesh),
      seed=self.config.seed,
      start_step=start_step,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
    )

  def train_step(self):
    return make_train_step(
      self.model,
      self.tx,
      self.objective,
      self.train_metrics,
      self.mesh,
      self.config.seed,
      state_sharding=sharding.shardings_of(self.state),
      step_inputs=self.step_inputs,
    )

  def zero_sums(self, batch) -> MetricSums:
    """Zero sums on the devices (replicated); ``batch``: shapes of a global batch."""
    sums = zero_sums(
      self.model,
      self.objective,
      self.train_metrics,
      self.state.variables,
      batch,
      self.step_inputs,
    )
    return jax.device_put(sums, sharding.replicated(self.mesh))

  def evaluator(self, panoptic_labels: bool | None = None) -> evaluation.Evaluator:
    """One compiled evaluation (``config.inference``, every evaluator that applies)."""
    if panoptic_labels is None:
      panoptic_labels = pipeline.has_instances(self.source)
    return evaluation.Evaluator(
      self.model,
      self.config,
      self.descriptor,
      self.mesh,
      runs.input_shape(self.config),
      panoptic_labels=panoptic_labels,
    )

  def evaluations(self) -> evaluation.Evaluations:
    """The evaluations of ``config.evals`` (or ``config.eval_splits``)."""
    return evaluation.Evaluations(
      self.model,
      self.config,
      self.descriptor,
      self.mesh,
      runs.input_shape(self.config),
      panoptic_labels=pipeline.has_instances(self.source),
    )


def check_config(config) -> list:
  """Checks ``config`` before anything is built (loss names and terms, data sizes and ops, the
  post-processing chain), naming the key and value at fault; returns the loss terms."""
  terms = losses.make_terms(config.get("loss"), config.get("losses"))
  datasets.dataset(config.data)  # the name is known
  pipeline.check_config(config.data)
  optim.make_optimizer(config.optimizer, config.num_train_steps)  # names and settings
  run_log.check_profile_steps(config.get("profile_steps"))
  postprocess.validate(config.get("postprocess", "argmax"))
  make_train_metrics(config, 1, 255)
  step_inputs_lib.make(config.get("step_inputs"), 255)
  return terms


def make_train_metrics(config, num_classes: int, ignore_label: int):
  """The metrics of ``config.train_metrics`` (default: the confusion of ``logits``)."""
  return train_metrics_lib.TrainMetrics(
    config.get("train_metrics", ("confusion",)), num_classes, ignore_label
  )


def parts(config, descriptor, terms=None):
  """``(model, optimizer, objective, training metrics)`` of ``config`` for ``descriptor``'s
  dataset: what `setup` builds and `segjax.plan` compiles (``terms``: the loss terms, default
  ``config.loss`` and ``config.losses``)."""
  terms = losses.make_terms(config.get("loss"), config.get("losses")) if terms is None else terms
  return (
    models.from_config(config.model, descriptor.num_classes),
    optim.make_optimizer(config.optimizer, config.num_train_steps),
    losses.Objective(terms, descriptor.ignore_label),
    make_train_metrics(config, descriptor.num_classes, descriptor.ignore_label),
  )


def setup(config, mesh=None, data: bool = True) -> Trainer:
  """Mesh, data source, model, optimizer, objective and initial state of ``config`` (``data=False``:
  no source, the descriptor from the config alone, for benchmarks on random data)."""
  terms = check_config(config)
  options = config.get("sharding") or {}
  if mesh is None:
    mesh = sharding.make_mesh(config.get("num_devices"), fsdp=options.get("fsdp", 1))
  source = pipeline.get_source(config.data) if data else None
  descriptor = source.descriptor if data else pipeline.dataset_info(config.data).descriptor
  model, tx, objective, metric_terms = parts(config, descriptor, terms)
  state = create_train_state(
    model,
    tx,
    runs.input_shape(config),
    config.seed,
    mesh,
    min_shard_size=options.get("fsdp_min_size", 2**12),
  )
  record = None
  if config.model.get("pretrained"):
    variables, record = pretrained.load_pretrained(state.variables, config.model.pretrained, model)
    state = with_variables(state, tx, variables)
  if config.get("init_from"):
    state = init_from_run(state, tx, config.init_from)
  inputs = step_inputs_lib.make(config.get("step_inputs"), descriptor.ignore_label)
  return Trainer(
    config, mesh, descriptor, source, model, tx, objective, metric_terms, state, record, inputs
  )


# ================================================================================================
# Loop
# ================================================================================================
@dataclasses.dataclass
class TrainResult:
  """How a run ended: ``metrics`` of ``config.evals`` by name (by split without them; empty
  without evaluations);
  ``preempted`` when a SIGTERM stopped it after saving checkpoint ``step`` (run again to resume)."""

  metrics: dict
  preempted: bool
  step: int


def _fetch_sums(sums: MetricSums, trainer: Trainer) -> tuple[dict, int]:
  host = jax.device_get(sums)
  steps = max(int(host.steps), 1)
  scalars = {k: float(v) / steps for k, v in host.loss_sums.items()}
  scalars.update(trainer.train_metrics.summarize(host.metric_sums, steps, trainer.descriptor))
  return scalars, int(host.first_nonfinite_step)


def restore_or_keep(checkpointer, state: TrainState) -> TrainState:
  """The latest checkpoint if there is one (automatic resumption), else ``state``."""
  step = checkpointer.latest_step()
  if step is None:
    return state
  try:
    restored = checkpointer.restore(state, step)
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(
      f"Checkpoint {step} in {checkpointer.directory} does not fit the model of "
      "this config (was the workdir used with another model?). Use a new --workdir "
      f"or the config that wrote it. Orbax said: {e}"
    ) from e
  run_log.info("Resumed from checkpoint %d in %s", step, checkpointer.directory)
  return restored


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainResult:
  """Trains per ``config`` in ``workdir`` (resuming from its latest checkpoint), then runs
  ``config.evals`` (or evaluates ``config.eval_splits``); the metrics also go to ``<workdir>/final_metrics.json``."""
  workdir = prepare_workdir(workdir)
  trainer = setup(config)
  descriptor, mesh = trainer.descriptor, trainer.mesh
  runs.write(workdir, config, descriptor, pretrained=trainer.pretrained)
  writer = run_log.MetricWriter(workdir)
  checkpointer = checkpointing.Checkpointer(
    os.path.join(workdir, "checkpoints"),
    every_steps=config.checkpoint_every_steps,
    keep=config.keep_checkpoints,
    asynchronous=config.get("checkpoint_async", True),
  )
  state = restore_or_keep(checkpointer, trainer.state)
  start_step, total_steps = int(jax.device_get(state.step)), config.num_train_steps
  train_ds = trainer.train_dataset(start_step)
  train_step, evaluations = trainer.train_step(), trainer.evaluations()
  new_sums = functools.partial(
    trainer.zero_sums, abstract_batch(train_ds.element_spec, config.batch_size)
  )
  sums, progress, last_saved = new_sums(), run_log.Progress(total_steps, start_step), None

  def log_and_check(step):
    nonlocal sums
    scalars, bad_step = _fetch_sums(sums, trainer)
    if bad_step >= 0:
      checkpointer.wait()  # the last good checkpoint may still be being written
      raise FloatingPointError(
        f"The training loss became NaN or infinite at step {bad_step} ({scalars}). Training "
        f"stopped; the last good checkpoint (step {last_saved}) in {checkpointer.directory} is "
        "intact. Lower config.optimizer.learning_rate, set config.optimizer.grad_clip_norm, or "
        "check the input data."
      )
    scalars["steps_per_second"] = progress.report(step, scalars)
    writer.write_scalars(step, scalars, prefix="train/")
    sums = new_sums()

  def evaluate_all(step):
    start = time.perf_counter()
    final = step == total_steps
    results = evaluations.run(state.variables, trainer.source, None if final else step)
    for name, summary in results.items():
      writer.write_scalars(step, summary, prefix=f"{name}/")
      if not final:  # the final evaluation is printed below
        run_log.info("step %d %s: %s", step, name, evaluation.format_summary(summary))
    progress.exclude(time.perf_counter() - start)  # steps/s and the ETA count training only
    return results

  batches = device_batches(
    pipeline.as_numpy(train_ds, trainer.source), mesh, config.get("device_prefetch", 2)
  )
  profiler = run_log.Profiler(workdir, config.get("profile_steps") or ())
  with checkpointing.PreemptionGuard() as preemption:
    for step in range(start_step + 1, total_steps + 1):
      profiler.before(step)
      state, sums = train_step(state, sums, next(batches))
      profiler.after(step, sums)
      if step == start_step + 1 and step < total_steps:  # the ETA leaves compilation out
        jax.block_until_ready(sums)
        progress.restart(step)
      stopping = preemption.stop_at(step)
      saving = checkpointer.should_save(step) or step == total_steps or stopping
      if saving or step % config.log_every_steps == 0:
        log_and_check(step)  # never checkpoint a state that saw a non-finite loss
      if saving:
        checkpointer.save(step, state)
        last_saved = step
      if (stopping or (saving and preemption.requested)) and step < total_steps:
        checkpointer.close()  # waits for the write in flight
        run_log.info(
          "SIGTERM received: saved checkpoint %d in %s and stopped.", step, checkpointer.directory
        )
        profiler.stop()
        writer.close()
        return TrainResult({}, preempted=True, step=step)
      if step < total_steps and evaluations.due(step):
        evaluate_all(step)

  profiler.stop()
  final = evaluate_all(total_steps)
  for split, summary in final.items():
    run_log.info("%s: %s", split, evaluation.format_summary(summary))
  if jax.process_index() == 0:
    files.write_json(os.path.join(workdir, "final_metrics.json"), final)
  checkpointer.close()
  writer.close()
  return TrainResult(final, preempted=False, step=total_steps)
