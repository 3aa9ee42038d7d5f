r"""Trains a model from a config, resuming from the latest checkpoint in --workdir.

  python experiments/train.py --config=configs/unet_shapes.py --workdir=/tmp/segjax/unet \
      [--config.num_train_steps=2000 --config.optimizer.learning_rate=1e-3 ...]
"""
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from segjax import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # orbax and tfds are chatty at INFO
  train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
