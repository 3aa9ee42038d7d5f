r"""Interactive segmentation measured in clicks, per nucleus of the held-out half of a real frame.

  pip download stardist==0.9.2 --no-deps -d /tmp/wheels     # ships a 2018 Data Science Bowl frame
  python experiments/evaluate_interactive.py --source=/tmp/wheels/stardist-0.9.2-*.whl \
      --workdir=/tmp/segjax/clicks [--run=/tmp/segjax/nuclei/run]

Each nucleus of the frame's right half (the held-out region of experiments/microscopy.py) is one
object; the simulated annotator clicks as the standard protocol says (`segjax.interactive.clicks`:
each next click inside the largest error region, at its point farthest from the region's boundary,
positive on missed pixels, negative on false ones; at most ``--max_clicks``). Rows:

* ``disk``: no model, each click paints or erases a disk of ``--radius`` pixels;
* ``prelabel+disk`` (with ``--run``, a trained run such as experiments/microscopy.py's): the run's
  automatic pre-label of the region (its instances: ``config.postprocess``), the predicted
  instance that overlaps the nucleus most as the starting mask, then the same disk clicks;
* ``click model`` (with ``--click_config``, e.g. configs/interactive_microscopy.py): a click model
  trained on the frame's left half (written as a folder dataset in ``WORKDIR/data``) in
  ``WORKDIR/click_run`` (resumed if there), then measured by its ``config.evals`` (type
  ``interactive``, `segjax.evaluators.interactive`): the same protocol, the model answering each
  click.

Writes ``WORKDIR/clicks.json`` (NoC@85, NoC@90, failures at 90 %, mean IoU after k clicks per row),
``WORKDIR/clicks.md`` and ``WORKDIR/clicks.png`` (the mean IoU after k clicks).
"""

import os

from absl import flags

from segjax import cli

_SOURCE = flags.DEFINE_string(
  "source", None, "The stardist wheel, or a folder with img2d.tif and mask2d.tif."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the results.")
_RUN = flags.DEFINE_string("run", None, "A trained run whose pre-labels the clicks correct.")
_RADIUS = flags.DEFINE_integer("radius", 3, "Radius in pixels of the disk a click paints.")
_MAX_CLICKS = flags.DEFINE_integer("max_clicks", 20, "Clicks per object at most.")
_CLICK_CONFIG = cli.config_flag(
  "click_config", "A click model's config to train and measure (configs/interactive_*.py).", False
)
flags.mark_flags_as_required(["source", "workdir"])
flags.adopt_module_key_flags(cli)


def prelabel_instances(run_dir: str, image, workdir: str):
  """The run's predicted instance ids ``[H, W]`` of the held-out region ``image``."""
  # pylint: disable=import-outside-toplevel
  import cv2

  from segjax import files
  from segjax import predict
  from segjax import runs

  path = os.path.join(workdir, "held_out.tif")
  with files.atomic_path(path) as tmp:
    cv2.imwrite(tmp, image)
  predictor = predict.Predictor(runs.load(run_dir))
  predictions, _ = predict.predict_file(predictor, path)
  instances, _ = predict.instance_map(predictions, 0, predictor.descriptor)
  if instances is None:
    raise SystemExit(f"--run={run_dir}: its config.postprocess makes no instances")
  return instances


def main(argv):
  del argv
  # pylint: disable=import-outside-toplevel
  import numpy as np

  from segjax import files
  from segjax import visualize
  from segjax.data import microscopy
  from segjax.interactive import clicks
  from segjax.interactive import training

  workdir = os.path.abspath(_WORKDIR.value)
  os.makedirs(workdir, exist_ok=True)
  frame = microscopy.read_frame(_SOURCE.value)
  image, instances = microscopy.held_out(*frame)
  objects = [instances == i for i in range(1, int(instances.max()) + 1)]
  starts = {"disk": [None] * len(objects)}
  if _RUN.value:
    predicted = prelabel_instances(_RUN.value, image, workdir)
    starts["prelabel+disk"] = [clicks.best_overlap(predicted, truth) for truth in objects]
  results = {}
  for row, initial in starts.items():
    curves = []
    for truth, start in zip(objects, initial):
      predict = clicks.disk_predictor(truth.shape, _RADIUS.value, initial=start)
      _, ious = clicks.click_sequence(predict, truth, max_clicks=_MAX_CLICKS.value, initial=start)
      curves.append(ious)
    results[row] = clicks.summarize_clicks(curves, _MAX_CLICKS.value)
    if _RUN.value:
      results[row]["iou_before_clicks"] = float(
        np.mean(
          [
            clicks.iou(t, s if s is not None else np.zeros_like(t))
            for t, s in zip(objects, initial)
          ]
        )
      )
  if _CLICK_CONFIG.value is not None:
    try:
      _, results["click model"] = training.train_on_frame(_CLICK_CONFIG.value, workdir, *frame)
    except ValueError as e:
      raise SystemExit(f"--click_config: {e}") from e
  lines = [
    "| start | objects | NoC@85 | NoC@90 | failures (90 %, of the objects) | mIoU after 1 / 5 / 20 clicks |",
    "|---|---|---|---|---|---|",
  ]
  for row, r in results.items():
    k = r["miou_at_k"]
    lines.append(
      f"| {row} | {r['objects']} | {r['noc85']:.2f} | {r['noc90']:.2f} | {r['failures90']} | "
      f"{k[0]:.3f} / {k[min(4, len(k) - 1)]:.3f} / {k[-1]:.3f} |"
    )
  table = "\n".join(lines)
  print(table)
  files.write_json(os.path.join(workdir, "clicks.json"), results)
  files.write_text(os.path.join(workdir, "clicks.md"), table + "\n")
  steps = np.arange(1, _MAX_CLICKS.value + 1)
  picture = visualize.line_plot(
    {row: (steps, np.asarray(r["miou_at_k"])) for row, r in results.items()},
    "mean IoU per nucleus after k clicks",
    y_range=(0.0, 1.0),
    x_label="clicks",
    legend="lower right",
  )
  visualize.write_png(os.path.join(workdir, "clicks.png"), picture)
  print(f"Wrote {workdir}/clicks.json, clicks.md and clicks.png")


if __name__ == "__main__":
  cli.run(main)
