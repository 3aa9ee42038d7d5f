r"""Trains a model from a config, resuming from the latest checkpoint in --workdir.

  python experiments/train.py --config=configs/unet_shapes.py --workdir=/tmp/segjax/unet \
      [--config.num_train_steps=2000 --config.optimizer.learning_rate=1e-3 ...]

On several hosts, run the same command on every host (one process per host, or per GPU) with a
shared --workdir; the JAX distributed runtime starts from --coordinator_address/--num_processes/
--process_id (or JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID), by itself under SLURM
and Open MPI, and with --distributed=on on TPU pod slices (docs/training.md: "Many devices and
hosts").
"""

from absl import flags

from segjax import cli

_CONFIG = cli.config_flag()
_WORKDIR = flags.DEFINE_string(
  "workdir", None, "Directory for checkpoints, logs and results (created with its parents)."
)
flags.mark_flags_as_required(["workdir"])
cli.define_distributed_flags()
flags.adopt_module_key_flags(cli)  # --config, --verbose, --show_config, --distributed... in --help


def main(argv):
  del argv
  cli.start_distributed()
  from segjax import train  # pylint: disable=import-outside-toplevel

  train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  cli.run(main)
