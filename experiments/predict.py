r"""Draws predictions of the latest checkpoint: image | ground truth | prediction overlay.

  python experiments/predict.py --config=configs/unet_shapes.py --workdir=/tmp/segjax/unet \
      [--output=DIR] [--config.predict.num_images=16]
"""
import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from segjax import inference
from segjax import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's directory.")
_OUTPUT = flags.DEFINE_string("output", None, "Where to write the pictures "
                              "(default: <workdir>/predictions).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  output = _OUTPUT.value or os.path.join(os.path.abspath(_WORKDIR.value), "predictions")
  model, state, source, mesh = train.load_trained(config, _WORKDIR.value)
  paths = inference.draw_split_predictions(model, state.variables, source, config, mesh, output)
  print(f"Wrote {len(paths)} pictures to {output}")


if __name__ == "__main__":
  app.run(main)
