r"""The quickstart in one process: train (ending with the evaluation), then draw predictions.

  python experiments/quickstart.py --config=configs/unet_shapes.py --workdir=/tmp/segjax/quickstart

The same as experiments/train.py followed by experiments/predict.py, with one start-up instead of
two; experiments/evaluate.py re-evaluates any checkpoint afterwards.
"""

import os

from absl import flags

from segjax import cli

_CONFIG = cli.config_flag()
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
flags.mark_flags_as_required(["workdir"])
flags.adopt_module_key_flags(cli)  # --config, --verbose, --show_config in --help


def main(argv):
  del argv
  # pylint: disable=import-outside-toplevel
  from segjax import predict
  from segjax import pictures  # pylint: disable=import-outside-toplevel
  from segjax import runs
  from segjax import train
  from segjax import visualize
  from segjax.data import pipeline

  config, workdir = _CONFIG.value, _WORKDIR.value
  if train.train_and_evaluate(config, workdir).preempted:
    return  # stopped by SIGTERM after a checkpoint; run again to resume
  predictor = predict.Predictor(runs.load(workdir))
  output = os.path.join(os.path.abspath(workdir), "predictions")
  paths = pictures.draw_split(predictor, pipeline.get_source(predictor.config.data), output)
  curves = os.path.join(os.path.abspath(workdir), "training_curves.png")
  visualize.write_png(curves, visualize.training_curves(os.path.join(workdir, "metrics.jsonl")))
  print(f"Wrote {len(paths)} pictures to {output} and the training curves to {curves}")


if __name__ == "__main__":
  cli.run(main)
