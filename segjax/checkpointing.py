"""The one module that talks to orbax: save, restore, latest; preemption-safe.

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a
process killed at any moment (even ``SIGKILL`` mid-write) leaves only complete checkpoints behind,
and ``latest_step`` never returns a half-written one.
"""
from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves every ``every_steps`` steps, keeps the newest ``keep``, restores the latest."""

  def __init__(self, directory: str, *, every_steps: int, keep: int):
    self.directory = os.path.abspath(directory)
    self.every_steps = every_steps
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=False))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def should_save(self, step: int) -> bool:
    return self.every_steps > 0 and step % self.every_steps == 0

  def save(self, step: int, state) -> None:
    """Writes ``state`` as checkpoint ``step`` (blocking until it is complete on disk)."""
    self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
    self._manager.wait_until_finished()

  def restore(self, abstract_state, step: int | None = None):
    """Restores ``step`` (default: the latest) into the shapes/shardings of ``abstract_state``."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"No checkpoint in {self.directory}; train first "
                              "(experiments/train.py) or point --workdir at a training run.")
    target = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), abstract_state)
    return self._manager.restore(step, args=ocp.args.StandardRestore(target))

  def close(self):
    self._manager.close()
