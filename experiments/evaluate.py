r"""Evaluates the latest checkpoint of a training run on config.eval_splits.

  python experiments/evaluate.py --config=configs/unet_shapes.py --workdir=/tmp/segjax/unet

Prints the metrics and writes them to <workdir>/eval_metrics.json.
"""
import os

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from segjax import distributed
from segjax import logging as run_logging
from segjax import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's directory.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: the latest).")
flags.mark_flags_as_required(["config", "workdir"])
distributed.define_flags()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  distributed.initialize_from_flags()  # before anything touches a device
  logging.set_verbosity(logging.WARNING)
  results = train.evaluate_checkpoint(_CONFIG.value, _WORKDIR.value, _STEP.value)
  for split, summary in results.items():
    run_logging.info("%s: %s", split, train.format_summary(summary))
  if jax.process_index() == 0:
    path = os.path.join(os.path.abspath(_WORKDIR.value), "eval_metrics.json")
    run_logging.write_json_atomic(path, results)
    print(f"Wrote {path}")


if __name__ == "__main__":
  app.run(main)
