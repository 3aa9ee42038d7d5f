r"""Writes the README's two pictures from a finished quickstart run: a prediction picture (image,
ground truth, prediction, errors, legend) and the training curves (loss; mIoU of the training
batches and of the validation split).

  python3 bootstrap.py quickstart          # the run: workdirs/quickstart
  .venv/bin/python experiments/readme_pictures.py --workdir=workdirs/quickstart \
      --output=docs/images

The prediction picture is the run's own ``predictions/<name>.png`` (drawn by `segjax.predict`).
"""

import os
import shutil

from absl import flags

from segjax import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "A finished quickstart run.")
_OUTPUT = flags.DEFINE_string(
  "output", "docs/images", "Where to write quickstart.png and training_curves.png."
)
_PICTURE = flags.DEFINE_string(
  "picture", "", "Which of the run's predictions/*.png to show (default: the first)."
)
flags.mark_flags_as_required(["workdir"])
flags.adopt_module_key_flags(cli)  # --verbose, --show_config in --help


def main(argv):
  del argv
  from segjax import visualize  # pylint: disable=import-outside-toplevel

  workdir = _WORKDIR.value
  predictions = os.path.join(workdir, "predictions")
  names = (
    sorted(n for n in os.listdir(predictions) if n.endswith(".png") and n != "contact_sheet.png")
    if os.path.isdir(predictions)
    else []
  )
  if not names:
    raise FileNotFoundError(
      f"{predictions} holds no prediction pictures: run the quickstart "
      "(experiments/quickstart.py) first."
    )
  picture = _PICTURE.value or names[0]
  if picture not in names:
    raise FileNotFoundError(f"--picture={picture} is not in {predictions} ({', '.join(names)}).")
  os.makedirs(_OUTPUT.value, exist_ok=True)
  shutil.copyfile(os.path.join(predictions, picture), os.path.join(_OUTPUT.value, "quickstart.png"))
  curves = visualize.training_curves(os.path.join(workdir, "metrics.jsonl"))
  visualize.write_png(os.path.join(_OUTPUT.value, "training_curves.png"), curves)
  print(f"Wrote quickstart.png ({picture}) and training_curves.png to {_OUTPUT.value}")


if __name__ == "__main__":
  cli.run(main)
