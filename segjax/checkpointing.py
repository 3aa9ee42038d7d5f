"""The one module that talks to orbax: save, restore, latest; preemption-safe.

A checkpoint holds two items: ``variables`` (the model's ``params`` and ``batch_stats``) and
``training`` (``step`` and the optimizer state), so prediction, evaluation and export restore the
model alone, without reading (or even knowing the shapes of) the optimizer state.

Saves are asynchronous by default: `Checkpointer.save` returns once the state is copied off the
devices, and orbax writes it in a background thread while training goes on; the next save, `wait`
and `close` wait for a write in flight. Orbax writes each checkpoint into a temporary directory
and renames it when complete, so a process killed at any moment (even ``SIGKILL`` during an
asynchronous write) leaves only complete checkpoints behind, and ``latest_step`` never returns a
half-written one. `PreemptionGuard` turns a preemption notice
(SIGTERM) into a question the training loop asks every step.
"""

from __future__ import annotations

import os
import signal
import threading

import jax
import orbax.checkpoint as ocp

from segjax.train_state import TrainState


class Checkpointer:
  """Saves every ``every_steps`` steps (in the background when ``asynchronous``), keeps the
  newest ``keep``, restores the latest."""

  def __init__(
    self, directory: str, *, every_steps: int = 0, keep: int = 2, asynchronous: bool = True
  ):
    self.directory = os.path.abspath(directory)
    self.every_steps = every_steps
    self._manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=asynchronous
      ),
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def should_save(self, step: int) -> bool:
    return self.every_steps > 0 and step % self.every_steps == 0

  def save(self, step: int, state: TrainState) -> None:
    """Writes ``state`` as checkpoint ``step``. Asynchronous: returns when the arrays are copied
    off the devices (so the caller may donate them), the write goes on in the background."""
    self._manager.save(
      step,
      args=ocp.args.Composite(
        variables=ocp.args.StandardSave(state.variables),
        training=ocp.args.StandardSave({"step": state.step, "opt_state": state.opt_state}),
      ),
      force=True,
    )

  def wait(self) -> None:
    """Returns when no write is in flight (every saved checkpoint is complete on disk)."""
    self._manager.wait_until_finished()

  def _step_or_latest(self, step: int | None) -> int:
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(
        f"No checkpoint in {self.directory}; train first "
        "(experiments/train.py) or point --workdir at a training run."
      )
    if step not in self.all_steps():
      raise FileNotFoundError(
        f"No checkpoint {step} in {self.directory}; it has {self.all_steps()}."
      )
    return step

  def restore(self, state: TrainState, step: int | None = None) -> TrainState:
    """Restores ``step`` (default: the latest) into the shapes and shardings of ``state``."""
    step = self._step_or_latest(step)
    training = {"step": state.step, "opt_state": state.opt_state}
    restored = self._manager.restore(
      step,
      args=ocp.args.Composite(
        variables=ocp.args.StandardRestore(_abstract(state.variables)),
        training=ocp.args.StandardRestore(_abstract(training)),
      ),
    )
    return state.replace(
      params=restored.variables["params"],
      batch_stats=restored.variables["batch_stats"],
      step=restored.training["step"],
      opt_state=restored.training["opt_state"],
    )

  def restore_variables(self, variables, step: int | None = None) -> dict:
    """The model variables of ``step`` alone, into the shapes/shardings of ``variables`` (arrays
    or ``jax.ShapeDtypeStruct``s with shardings); the optimizer state is not read."""
    step = self._step_or_latest(step)
    return self._manager.restore(
      step, args=ocp.args.Composite(variables=ocp.args.StandardRestore(_abstract(variables)))
    ).variables

  def close(self):
    """Waits for a write in flight, then releases orbax's resources."""
    self._manager.wait_until_finished()
    self._manager.close()


def _abstract(tree):
  return jax.tree_util.tree_map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree
  )


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
