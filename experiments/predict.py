r"""Predicts with the latest checkpoint.

Pictures of a split (image | ground truth | prediction overlay):
  python experiments/predict.py --config=configs/unet_shapes.py --workdir=/tmp/segjax/unet \
      [--output=DIR] [--config.predict.num_images=16]

Pre-labels for annotation tools, for any images of any size:
  python experiments/predict.py --config=configs/unet_shapes.py --workdir=/tmp/segjax/unet \
      --input='photos/*.jpg' --output=prelabels --format=png|coco|labelme \
      [--config.predict.window=(256,256)] [--config.predict.flip=True] \
      [--config.predict.scales=(0.75,1.0,1.25)] [--config.predict.instances=watershed]
writes masks, instances, COCO / labelme JSON and review.csv (least confident first); see
segjax/export.py.
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
_OUTPUT = flags.DEFINE_string("output", None, "Where to write the pictures or pre-labels "
                              "(default: <workdir>/predictions).")
_INPUT = flags.DEFINE_string("input", None, "A directory or glob of images to pre-label.")
_FORMAT = flags.DEFINE_enum("format", "png", ["png", "coco", "labelme"], "Pre-label format.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  output = _OUTPUT.value or os.path.join(os.path.abspath(_WORKDIR.value), "predictions")
  model, state, source, mesh = train.load_trained(config, _WORKDIR.value)
  if _INPUT.value:
    rows = inference.predict_files(model, state.variables, config, source.descriptor,
                                   inference.list_inputs(_INPUT.value), output, _FORMAT.value)
    print(f"Pre-labelled {len(rows)} images in {output}; least confident first: "
          f"{output}/review.csv")
    return
  paths = inference.draw_split_predictions(model, state.variables, source, config, mesh, output)
  print(f"Wrote {len(paths)} pictures to {output}")


if __name__ == "__main__":
  app.run(main)
