"""Starting the JAX distributed runtime: one process per host (or per GPU), before any JAX call.

``initialize(mode, ...)`` is called by the experiment scripts first thing in ``main``:

* explicit values (the scripts' ``--coordinator_address``, ``--num_processes``, ``--process_id``
  flags) or the environment (``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``,
  ``JAX_PROCESS_ID``) start it on any cluster, e.g. a GPU cluster launched by hand or by
  Kubernetes, or several CPU processes on one machine;
* on TPU pod slices, SLURM (``srun``) and Open MPI (``mpirun``) JAX finds all three itself:
  ``mode="auto"`` (the default) starts it when it sees a multi-process SLURM or Open MPI job,
  ``mode="on"`` always (use it on TPU pods, whose hosts JAX discovers through the TPU metadata);
* ``mode="off"``, or nothing of the above: a single process, nothing to start.

On CPU, cross-process collectives go through gloo (JAX's default CPU collectives).
After it, ``jax.devices()`` lists every device of every process, ``jax.process_index()`` is this
process's id, and the global-view training code (`segjax.train`) runs unchanged.
"""

from __future__ import annotations

import os

MODES = ("auto", "on", "off")


def _env_int(name: str) -> int | None:
  value = os.environ.get(name)
  if value in (None, ""):
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"Environment variable {name}={value!r} is not an integer.") from None


def _multi_process_job() -> bool:
  """A SLURM or Open MPI job with more than one task (JAX reads the rest from their variables)."""
  for name in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
    count = _env_int(name)
    if count is not None and count > 1:
      return True
  return False


def initialize(
  mode: str = "auto",
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
) -> bool:
  """Starts ``jax.distributed`` as described in the module docstring; returns whether it did.

  Must run before anything touches a JAX device (``jax.devices()``, a computation, ...).
  """
  import jax  # pylint: disable=import-outside-toplevel

  if mode not in MODES:
    raise ValueError(f"distributed mode {mode!r} is not one of {MODES}.")
  if mode == "off" or jax.distributed.is_initialized():
    return jax.distributed.is_initialized()
  coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
  num_processes = num_processes if num_processes is not None else _env_int("JAX_NUM_PROCESSES")
  process_id = process_id if process_id is not None else _env_int("JAX_PROCESS_ID")
  explicit = {
    "coordinator_address": coordinator_address,
    "num_processes": num_processes,
    "process_id": process_id,
  }
  given = [k for k, v in explicit.items() if v is not None]
  if given and len(given) < 3 and not (mode == "on" or _multi_process_job()):
    missing = sorted(set(explicit) - set(given))
    raise ValueError(
      f"Distributed training needs coordinator_address, num_processes and "
      f"process_id; got {given} but not {missing} (flags or JAX_* variables)."
    )
  if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
    raise ValueError(f"process_id={process_id} is not in [0, num_processes={num_processes}).")
  if not given and mode == "auto" and not _multi_process_job():
    return False
  if num_processes == 1:
    return False
  jax.distributed.initialize(**{k: v for k, v in explicit.items() if v is not None})
  return True


def define_flags() -> None:
  """``--distributed``, ``--coordinator_address``, ``--num_processes``, ``--process_id``."""
  from absl import flags

  flags.DEFINE_enum(
    "distributed",
    "auto",
    MODES,
    "Start jax.distributed: auto (when flags/JAX_* variables or a SLURM/MPI job "
    "say so), on (always; TPU pods), off.",
  )
  flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 (JAX_COORDINATOR_ADDRESS)."
  )
  flags.DEFINE_integer("num_processes", None, "Number of processes (JAX_NUM_PROCESSES).")
  flags.DEFINE_integer(
    "process_id", None, "This process's id, 0..num_processes-1 (JAX_PROCESS_ID)."
  )


def initialize_from_flags() -> bool:
  """`initialize` with the values of `define_flags`' flags."""
  from absl import flags

  values = flags.FLAGS
  return initialize(
    values.distributed, values.coordinator_address, values.num_processes, values.process_id
  )
