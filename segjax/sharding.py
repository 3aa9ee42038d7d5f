"""Device mesh, shardings and global batches (global-view SPMD: ``jax.jit`` + ``NamedSharding``).

The mesh has two axes, ``("data", "fsdp")``. The batch is split over both (every device gets its
own examples). Parameters and optimizer state are replicated when ``fsdp == 1`` (data parallel,
the default) and, with ``fsdp > 1``, each array of at least ``min_size`` elements is split along
its largest dimension that the ``fsdp`` axis divides (FSDP / ZeRO-3 style: XLA gathers weights for
the forward pass and reduce-scatters gradients). Both give the same numbers; FSDP trades
communication for ``fsdp``-times less memory per device for the state.

The same code runs on one CPU, on 8 GPUs and on a multi-host TPU pod: each process passes its
process-local slice of the batch and ``jax.make_array_from_process_local_data`` assembles the
global array. The mesh follows the topology (`make_mesh`): ``fsdp`` groups on neighbouring TPU
chips and inside one slice, ``data`` across slices (`axis_links` says which link each axis
crosses); elsewhere devices are ordered by process, so an ``fsdp`` group that divides the local
device count stays within one host.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)


def make_mesh(num_devices: int | None = None, fsdp: int = 1, devices=None) -> Mesh:
  """A ``(data, fsdp)`` mesh over all (or the first ``num_devices``) devices, or over ``devices``
  (e.g. the devices of a TPU topology that is compiled for, not attached), laid out by the
  topology (`jax.experimental.mesh_utils`): on a TPU slice ``create_device_mesh`` puts each
  ``fsdp`` group on neighbouring chips of the torus; across slices (devices with several
  ``slice_index``) ``create_hybrid_device_mesh`` keeps every ``fsdp`` group inside a slice and
  splits ``data`` over the slices, so that only the data axis's gradient all-reduce crosses the
  data-centre network (`axis_links`). Other platforms keep the device order (by process)."""
  devices = list(jax.devices() if devices is None else devices)
  if num_devices is not None and num_devices > 0:
    if num_devices > len(devices):
      raise ValueError(f"config.num_devices={num_devices} but only {len(devices)} devices exist.")
    devices = devices[:num_devices]
  if fsdp < 1 or len(devices) % fsdp:
    raise ValueError(f"config.sharding.fsdp={fsdp} does not divide the {len(devices)} devices.")
  slices = sorted({getattr(d, "slice_index", 0) for d in devices})
  if len(slices) > 1:
    per_slice = len(devices) // len(slices)
    if per_slice % fsdp:
      raise ValueError(
        f"config.sharding.fsdp={fsdp} does not divide the {per_slice} devices of a slice "
        f"({len(slices)} slices): an fsdp group must stay inside a slice."
      )
    array = mesh_utils.create_hybrid_device_mesh(
      (per_slice // fsdp, fsdp), (len(slices), 1), devices, allow_split_physical_axes=True
    )
  elif devices[0].platform == "tpu":
    try:
      array = mesh_utils.create_device_mesh(
        (len(devices) // fsdp, fsdp), devices, allow_split_physical_axes=True
      )
    except (AssertionError, ValueError, NotImplementedError):
      # mesh_utils lays out one device per chip (TPU v4 with two cores a chip is not): the
      # devices' own order, which follows the chips' coordinates
      array = np.asarray(devices).reshape(-1, fsdp)
  else:
    array = np.asarray(devices).reshape(-1, fsdp)
  return Mesh(array, BATCH_AXES)


def axis_links(mesh: Mesh) -> dict[str, str]:
  """The slowest link each mesh axis's collectives cross: ``"DCN"`` (between TPU slices),
  ``"ICI"`` (inside a TPU slice, across its hosts too), ``"network"`` (between processes
  elsewhere), ``"local"`` (among one process's devices), or ``"none"`` (an axis of size 1)."""
  links = {}
  devices = mesh.devices
  for axis, name in enumerate(mesh.axis_names):
    if devices.shape[axis] == 1:
      links[name] = "none"
      continue
    groups = np.moveaxis(devices, axis, -1).reshape(-1, devices.shape[axis])
    spans = lambda attribute, groups=groups: any(
      len({getattr(d, attribute, 0) for d in group}) > 1 for group in groups
    )
    if spans("slice_index"):
      links[name] = "DCN"
    elif devices.flat[0].platform == "tpu":
      links[name] = "ICI"
    elif spans("process_index"):
      links[name] = "network"
    else:
      links[name] = "local"
  return links


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over all devices."""
  return NamedSharding(mesh, P(BATCH_AXES))


def param_sharding(shape, mesh: Mesh, min_size: int = 2**12) -> NamedSharding:
  """Replicated, or (``fsdp > 1``) split along the largest dimension the ``fsdp`` axis divides."""
  fsdp = mesh.shape[FSDP_AXIS]
  if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return replicated(mesh)
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % fsdp == 0:
      spec = [None] * len(shape)
      spec[dim] = FSDP_AXIS
      return NamedSharding(mesh, P(*spec))
  return replicated(mesh)


def state_shardings(abstract_state, mesh: Mesh, min_size: int = 2**12):
  """`param_sharding` for every array of a (train state) pytree of shapes."""
  return jax.tree_util.tree_map(lambda x: param_sharding(x.shape, mesh, min_size), abstract_state)


def local_batch_size(global_batch_size: int, mesh: Mesh) -> int:
  """This process's share of the global batch; checks that it divides over the devices."""
  num_devices = mesh.devices.size
  if global_batch_size % num_devices:
    raise ValueError(
      f"Batch size {global_batch_size} is not divisible by the {num_devices} devices "
      "of the mesh; choose a multiple."
    )
  return global_batch_size // jax.process_count()


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """Turns a process-local numpy batch into globally sharded ``jax.Array``s."""
  sharding = batch_sharded(mesh)
  return jax.tree_util.tree_map(
    lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch
  )


def shardings_of(tree):
  """The ``.sharding`` of every array in ``tree`` (e.g. to keep a state's layout through a step)."""
  return jax.tree_util.tree_map(lambda x: x.sharding, tree)


def local_rows(array: jax.Array) -> np.ndarray:
  """This process's rows of a batch-sharded global array, in order (the inverse of
  `global_batch` for the process-local part)."""
  if array.is_fully_addressable:
    return np.asarray(array)
  shards, seen = [], set()
  for shard in sorted(array.addressable_shards, key=lambda s: s.index[0].start or 0):
    start = shard.index[0].start or 0
    if start not in seen:
      seen.add(start)
      shards.append(np.asarray(shard.data))
  return np.concatenate(shards)


def on_mesh(tree, mesh: Mesh):
  """``tree`` as is when its arrays already live on the mesh's devices (e.g. an FSDP-sharded
  train state), else replicated over the mesh (e.g. variables restored onto one device)."""
  devices = set(mesh.devices.flat)
  leaves = jax.tree_util.tree_leaves(tree)
  if all(isinstance(x, jax.Array) and x.sharding.device_set == devices for x in leaves):
    return tree
  if jax.process_count() > 1:  # each process holds the whole tree: build the global arrays from it
    target = replicated(mesh)
    return jax.tree_util.tree_map(
      lambda x: jax.make_array_from_callback(
        np.shape(x), target, lambda index, x=np.asarray(x): x[index]
      ),
      tree,
    )
  return jax.device_put(tree, replicated(mesh))
