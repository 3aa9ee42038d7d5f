"""Trains one model version of the labelling loop, in its own process:

  python -m segjax.labelstudio.finetune VERSION_DIR

reads ``VERSION_DIR/finetune.json`` (written by `segjax.labelstudio.backend.Backend`: the parent's
config on the corrected images, ``init_from`` the parent) and trains into ``VERSION_DIR``.
"""

import os
import sys


def main(argv) -> None:
  if len(argv) != 2:
    sys.exit("usage: python -m segjax.labelstudio.finetune VERSION_DIR")
  import json  # pylint: disable=import-outside-toplevel
  from segjax import runs  # pylint: disable=import-outside-toplevel
  from segjax import train  # pylint: disable=import-outside-toplevel

  directory = os.path.abspath(argv[1])
  with open(os.path.join(directory, "finetune.json")) as f:
    config = runs.config_from_dict(json.load(f))
  train.train_and_evaluate(config, directory)


if __name__ == "__main__":
  main(sys.argv)
