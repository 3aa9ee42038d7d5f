"""The training state: one typed pytree that is sharded, donated and checkpointed as a whole."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any

  @property
  def variables(self) -> dict:
    """The model variables for ``model.apply``."""
    return {"params": self.params, "batch_stats": self.batch_stats}


@flax.struct.dataclass
class MetricSums:
  """On-device training metrics summed between two log steps (fetched only when logging)."""

  loss_sums: dict  # term name -> sum over steps (includes "loss", the total)
  steps: jax.Array
  metric_sums: dict  # training metric name -> its pytree of sums (segjax/train_metrics.py)
  first_nonfinite_step: jax.Array  # -1 while every loss was finite

  @classmethod
  def zeros(cls, loss_names, metric_shapes: dict) -> "MetricSums":
    """Zero sums for the loss terms ``loss_names`` and metrics of ``metric_shapes`` (a pytree of
    `jax.ShapeDtypeStruct`, as `jax.eval_shape` of the metrics gives)."""
    return cls(
      loss_sums={name: jnp.zeros((), jnp.float32) for name in loss_names},
      steps=jnp.zeros((), jnp.int32),
      metric_sums=jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), metric_shapes),
      first_nonfinite_step=jnp.full((), -1, jnp.int32),
    )
