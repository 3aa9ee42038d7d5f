r"""The cut-out picture of docs/inference.md: a built-in scene, the model's cut-out of one class
(`experiments/predict.py --format=cutout`), its alpha, and the cut-out over a checkerboard.

  python tools/cutout_picture.py --workdir=W --output=docs/images/cutout.png [--class_name=disc]
"""

import os
import subprocess
import sys
import tempfile

from absl import app
from absl import flags
import cv2
import numpy as np

_WORKDIR = flags.DEFINE_string(
  "workdir", None, "A run trained on the built-in dataset.", required=True
)
_OUTPUT = flags.DEFINE_string("output", "docs/images/cutout.png", "The picture.")
_CLASS = flags.DEFINE_string("class_name", "disc", "The class to cut out.")
_SEED = flags.DEFINE_integer("seed", 4, "The scene.")


def main(argv):
  del argv
  from segjax.data.shapes import render_scene  # pylint: disable=import-outside-toplevel

  with tempfile.TemporaryDirectory() as tmp:
    image, _, _ = render_scene(np.random.default_rng(_SEED.value), 128, 6)
    cv2.imwrite(os.path.join(tmp, "scene.png"), image[..., ::-1])
    subprocess.run(
      [
        sys.executable,
        "experiments/predict.py",
        f"--workdir={_WORKDIR.value}",
        f"--input={tmp}/scene.png",
        f"--output={tmp}/out",
        "--format=cutout",
        "--config=configs/unet_shapes.py",
        f"--config.predict.cutout_classes=('{_CLASS.value}',)",
        "--config.predict.cutout_radius=4",
      ],
      check=True,
    )
    rgba = cv2.imread(
      os.path.join(tmp, "out", "cutouts", f"scene_{_CLASS.value}.png"), cv2.IMREAD_UNCHANGED
    )
  rgba = cv2.cvtColor(rgba, cv2.COLOR_BGRA2RGBA).astype(np.float64)
  alpha = rgba[..., 3:] / 255.0
  y, x = np.mgrid[:128, :128]
  board = np.where(((y // 8) + (x // 8)) % 2 == 0, 200.0, 255.0)[..., None].repeat(3, -1)
  over = rgba[..., :3] * alpha + board * (1 - alpha)
  gap = np.full((128, 4, 3), 255.0)
  picture = np.concatenate([image, gap, np.repeat(alpha * 255, 3, -1), gap, over], axis=1)
  picture = cv2.resize(picture.astype(np.uint8), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
  cv2.imwrite(_OUTPUT.value, picture[..., ::-1])
  print(f"Wrote {_OUTPUT.value}")


if __name__ == "__main__":
  app.run(main)
