r"""Writes the built-in shapes scenes as a folder dataset (images/, masks/, instances/, classes.json):
a stand-in for the user's own high-resolution data, e.g. to try patch training.

  python experiments/make_shapes_folder.py --output=/tmp/segjax/shapes_folder --image_size=1024 \
      --num_train=8 --num_validation=2 --max_things=60
"""

from absl import flags

from segjax import cli

_OUTPUT = flags.DEFINE_string("output", None, "Folder dataset root to write.")
_SIZE = flags.DEFINE_integer("image_size", 1024, "Side of each square image.")
_TRAIN = flags.DEFINE_integer("num_train", 8, "Training images.")
_VAL = flags.DEFINE_integer("num_validation", 2, "Validation images.")
_THINGS = flags.DEFINE_integer("max_things", 60, "Most shapes per image.")
_SEED = flags.DEFINE_integer("seed", 0, "Scene seed.")
flags.mark_flag_as_required("output")
flags.adopt_module_key_flags(cli)  # --verbose, --show_config in --help


def main(argv):
  del argv
  from segjax.data import shapes  # pylint: disable=import-outside-toplevel

  shapes.write_folder(
    _OUTPUT.value,
    _SIZE.value,
    {"train": _TRAIN.value, "val": _VAL.value},
    max_things=_THINGS.value,
    seed=_SEED.value,
  )
  print(f"Wrote {_TRAIN.value} + {_VAL.value} images of {_SIZE.value}^2 to {_OUTPUT.value}")


if __name__ == "__main__":
  cli.run(main)
