r"""Nuclei on a real fluorescence frame: the microscopy recipe against Otsu thresholding.

  pip download stardist==0.9.2 --no-deps -d /tmp/wheels     # ships a 2018 Data Science Bowl frame
  python experiments/microscopy.py --source=/tmp/wheels/stardist-0.9.2-*.whl \
      --workdir=/tmp/segjax/nuclei

``--source`` is that wheel (read as a zip, nothing is installed) or a folder holding ``img2d.tif``
(16-bit grey) and ``mask2d.tif`` (16-bit instance ids). The frame's left half becomes the training
region and its right half the held-out region, written as a folder dataset under
``WORKDIR/data`` (``train/`` and ``val/``: images, masks, instances). The config (default
``configs/unet_microscopy.py:cpu``) trains on patches of the training region and is evaluated on
the whole held-out region: nucleus IoU, and PQ of the instances its post-processing makes
(watershed). Beside it, on the same region, Otsu's threshold of the raw intensities and of the
frame smoothed by a Gaussian (sigma 1), each followed by the same post-processing after its
``argmax`` step, and the true nucleus mask through that post-processing (what the instance step
alone loses). Writes ``WORKDIR/nuclei.json`` and ``WORKDIR/nuclei.md``.
"""

import json
import os

from absl import flags

from segjax import cli

_CONFIG = cli.config_flag(default="configs/unet_microscopy.py:cpu")
_SOURCE = flags.DEFINE_string(
  "source", None, "The stardist wheel, or a folder with img2d.tif and mask2d.tif."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the data, the run and the results.")
_SMOOTHING = flags.DEFINE_float("otsu_sigma", 1.0, "Gaussian sigma of the smoothed Otsu baseline.")
flags.mark_flags_as_required(["source", "workdir"])
flags.adopt_module_key_flags(cli)


def main(argv):
  del argv
  # pylint: disable=import-outside-toplevel
  from segjax import files
  from segjax.data import microscopy
  from segjax import train

  config, workdir = _CONFIG.value, os.path.abspath(_WORKDIR.value)
  image, instances = microscopy.read_frame(_SOURCE.value)
  config.data.root = microscopy.write_regions(os.path.join(workdir, "data"), image, instances)
  run_dir = os.path.join(workdir, "run")
  if train.train_and_evaluate(config, run_dir).preempted:
    return
  with open(os.path.join(run_dir, "final_metrics.json"), encoding="utf-8") as f:
    summary = json.load(f)["validation"]
  held_out = microscopy.held_out(image, instances)
  rows = {
    "model": microscopy.model_row(summary, config),
    "otsu": microscopy.threshold_row(held_out, config, sigma=0.0),
    f"otsu_gaussian{_SMOOTHING.value:g}": microscopy.threshold_row(
      held_out, config, sigma=_SMOOTHING.value
    ),
    # the post-processing's ceiling: the true nucleus mask, split by the same watershed
    "true_mask": microscopy.score((held_out[1] > 0).astype(int), held_out[1], config),
  }
  files.write_json(os.path.join(workdir, "nuclei.json"), rows)
  table = microscopy.markdown(rows)
  with open(os.path.join(workdir, "nuclei.md"), "w", encoding="utf-8") as f:
    f.write(table + "\n")
  print(table)


if __name__ == "__main__":
  cli.run(main)
