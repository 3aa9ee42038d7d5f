"""Device mesh, shardings and global batches (global-view SPMD: ``jax.jit`` + ``NamedSharding``).

The batch is sharded over the ``data`` mesh axis; parameters and optimizer state are replicated.
The same code runs on one CPU, on 8 GPUs and on a multi-host TPU pod: each process passes its
process-local slice of the batch and ``jax.make_array_from_process_local_data`` assembles the
global array.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None) -> Mesh:
  """A 1-D ``data`` mesh over all (or the first ``num_devices``) devices."""
  devices = jax.devices()
  if num_devices is not None and num_devices > 0:
    if num_devices > len(devices):
      raise ValueError(f"config.num_devices={num_devices} but only {len(devices)} devices exist.")
    devices = devices[:num_devices]
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over the ``data`` axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def local_batch_size(global_batch_size: int, mesh: Mesh) -> int:
  """This process's share of the global batch; checks that it divides over the devices."""
  num_devices = mesh.devices.size
  if global_batch_size % num_devices:
    raise ValueError(f"Batch size {global_batch_size} is not divisible by the {num_devices} devices "
                     "of the mesh; choose a multiple.")
  return global_batch_size // jax.process_count()


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """Turns a process-local numpy batch into globally sharded ``jax.Array``s."""
  sharding = batch_sharded(mesh)
  return jax.tree_util.tree_map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)
