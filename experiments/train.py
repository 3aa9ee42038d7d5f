r"""Trains a model from a config, resuming from the latest checkpoint in --workdir.

  python experiments/train.py --config=configs/unet_shapes.py --workdir=/tmp/segjax/unet \
      [--config.num_train_steps=2000 --config.optimizer.learning_rate=1e-3 ...]

On several hosts, run the same command on every host (one process per host, or per GPU) with a
shared --workdir; the JAX distributed runtime starts from --coordinator_address/--num_processes/
--process_id (or JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID), by itself under SLURM
and Open MPI, and with --distributed=on on TPU pod slices (README: "Many devices and hosts").
"""
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from segjax import distributed
from segjax import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
flags.mark_flags_as_required(["config", "workdir"])
distributed.define_flags()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  distributed.initialize_from_flags()  # before anything touches a device
  logging.set_verbosity(logging.WARNING)  # orbax and tfds are chatty at INFO
  train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
