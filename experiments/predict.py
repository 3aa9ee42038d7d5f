r"""Predicts with a trained model (a run directory or an exported file).

Pictures of a split (image | ground truth | prediction):
  python experiments/predict.py --workdir=/tmp/segjax/unet [--output=DIR]

Pre-labels for annotation tools, for any images of any size:
  python experiments/predict.py --workdir=/tmp/segjax/unet --input='photos/*.jpg' \
      --output=prelabels --format=png|coco|labelme
  python experiments/predict.py --model=unet.safetensors --input=photos/ --output=prelabels

writes masks, instances, COCO / labelme JSON and review.csv (least confident first); see
segjax/prelabels.py.

Aerial rasters (any size, read by windows) to a class GeoTIFF and polygons in their CRS:
  python experiments/predict.py --workdir=W --input=ortho.tif --output=out --format=gpkg \
      --config=configs/unet_shapes.py --config.inference.window='(512, 512)' \
      --config.predict.simplify=0.5 --config.predict.probabilities=True

On many hosts (the distributed flags of experiments/train.py): each process predicts its share
of --input on its own devices, a restarted run skips the images already written, and process 0
merges review.csv and annotations.json:
  python experiments/predict.py --workdir=W --input=tiles/ --output=out --format=coco \
      --coordinator_address=host0:1234 --num_processes=2 --process_id=0   # and 1 on the other

Cut-outs for photo editing (RGBA, alpha from the model's probability, edges refined on the image):
  python experiments/predict.py --model=unet.safetensors --input=photos/ --output=cutouts \
      --format=cutout --config=configs/unet_shapes.py --config.predict.cutout_feather=1.0

Prediction and post-processing settings can be changed with a config file and its overrides,
e.g. --config=configs/unet_shapes.py --config.inference.window='(256, 256)'
--config.inference.tta=flip --config.postprocess="argmax|semantic_instances('watershed')";
the model, its classes and its normalisation always come from the run.
"""

import os

from absl import app
from absl import flags

from segjax import cli

_CONFIG = cli.config_flag(
  help_text="Optional config file: prediction and post-processing "
  "settings (--config.<key>=... overrides them).",
  required=False,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's directory.")
_MODEL = flags.DEFINE_string("model", None, "Or: a model exported by experiments/export.py.")
_OUTPUT = flags.DEFINE_string(
  "output", None, "Where to write the pictures or pre-labels (default: <workdir>/predictions)."
)
_INPUT = flags.DEFINE_string("input", None, "A directory or glob of images to pre-label.")
_FORMAT = flags.DEFINE_enum(
  "format",
  "png",
  ["png", "coco", "labelme", "cutout", "geotiff", "geojson", "gpkg"],
  "Pre-label format; cutout: RGBA cut-outs of the chosen classes "
  "(config.predict.cutout_*); geotiff, geojson, gpkg: georeferenced "
  "rasters in, a class GeoTIFF (and polygons) out in their CRS.",
)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
flags.mark_flags_as_mutual_exclusive(["workdir", "model"], required=True)
cli.define_distributed_flags()
flags.adopt_module_key_flags(cli)  # --config, --verbose, --show_config, --distributed... in --help


def main(argv):
  del argv
  if not (_OUTPUT.value or _WORKDIR.value):
    raise app.UsageError("--output is needed with --model.")
  cli.start_distributed()
  # pylint: disable=import-outside-toplevel
  from segjax import geo
  from segjax import predict
  from segjax import predict_files
  from segjax import runs

  output = _OUTPUT.value or os.path.join(os.path.abspath(_WORKDIR.value), "predictions")
  predictor = predict.Predictor(
    runs.load(_WORKDIR.value or _MODEL.value, _STEP.value), _CONFIG.value
  )
  if _INPUT.value and _FORMAT.value in geo.GEO_FORMATS:
    written = geo.predict_rasters(
      predictor, predict.list_inputs(_INPUT.value), output, _FORMAT.value
    )
    print(f"Wrote {len(written)} files to {output}: {', '.join(map(os.path.basename, written))}")
    return
  if _INPUT.value:
    rows = predict_files.predict_files(
      predictor, predict.list_inputs(_INPUT.value), output, _FORMAT.value
    )
    print(
      f"Pre-labelled {len(rows)} images in {output}; least confident first: {output}/review.csv"
    )
    return
  # A split of the run's dataset: its input pipeline (TensorFlow; image files need none).
  from segjax import pictures
  from segjax.data import pipeline

  paths = pictures.draw_split(predictor, pipeline.get_source(predictor.config.data), output)
  print(f"Wrote {len(paths)} pictures to {output}")


if __name__ == "__main__":
  cli.run(main)
