r"""Exports a trained model for inference: one .safetensors file with the model's variables, its
config and its dataset descriptor (no optimizer state).

  python experiments/export.py --workdir=/tmp/segjax/unet --output=/tmp/unet.safetensors
  python experiments/predict.py --model=/tmp/unet.safetensors --input=photos/ --output=labels
"""

import os

from absl import flags

from segjax import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's directory.")
_OUTPUT = flags.DEFINE_string("output", None, "The file to write (.safetensors).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
flags.mark_flags_as_required(["workdir", "output"])
flags.adopt_module_key_flags(cli)  # --config, --verbose, --show_config in --help


def main(argv):
  del argv
  from segjax import runs  # pylint: disable=import-outside-toplevel

  path = runs.export(runs.load(_WORKDIR.value, _STEP.value), _OUTPUT.value)
  print(f"Wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB)")


if __name__ == "__main__":
  cli.run(main)
