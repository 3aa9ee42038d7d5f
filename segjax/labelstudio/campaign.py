"""A simulated labelling campaign through segjax's ML backend: how many pixels an annotator must
correct to reach a held-out IoU, when the backend pre-labels and ranks the images
(``experiments/labelling_campaign.py``).

A frame with true instances is cut into square tiles; the left half's tiles are the pool to
label, the right half's are held out. A model is trained from scratch on ``initial`` tiles labelled
from scratch. Then each round the annotator takes ``per_round`` tiles of the pool that are not
labelled yet and corrects them — the correction replaces the pre-label by the truth, and its
effort is the number of pixels whose class changes — and the backend fine-tunes the next version
on every tile labelled so far (`segjax.labelstudio.backend.Backend.train_version`: the same
annotations, versions and fine-tuning process as with Label Studio). Orders:

  uncertainty   the tiles the backend scores least confident first (its /predict score)
  random        tiles in a random order
  scratch       the random order's tiles labelled without pre-labels: every non-background
                pixel is painted (same tiles, so the same models as ``random``)
"""

from __future__ import annotations

import os
import shutil

import cv2
import numpy as np

from segjax import prelabels
from segjax import files
from segjax.labelstudio import backend as ls_backend
from segjax.labelstudio import tasks as ls_tasks


def write_tiles(root: str, image: np.ndarray, instances: np.ndarray, size: int):
  """Cuts ``image`` into ``size`` x ``size`` tiles, written to ``root/pool`` (left half) and
  ``root/held_out`` (right half) as TIFFs; returns ``{split: {path: instances of the tile}}``."""
  from segjax.data import microscopy  # pylint: disable=import-outside-toplevel

  tiles = {"pool": {}, "held_out": {}}
  height, width = image.shape[:2]
  for top in range(0, height - size + 1, size):
    for left in range(0, width - size + 1, size):
      split = "pool" if left + size <= width // 2 else "held_out"
      os.makedirs(os.path.join(root, split), exist_ok=True)
      path = os.path.join(root, split, f"tile_{top:04d}_{left:04d}.tif")
      if not cv2.imwrite(path, image[top : top + size, left : left + size]):
        raise OSError(f"could not write {path}")
      tiles[split][path] = microscopy.renumber(instances[top : top + size, left : left + size])
  return tiles


def nucleus_iou(predictor, held_out: dict) -> float:
  """IoU of the non-background class, pooled over the held-out tiles."""
  from segjax import predict  # pylint: disable=import-outside-toplevel

  inter = union = 0
  for path, instances in held_out.items():
    predicted = np.asarray(predict.predict_file(predictor, path)[0]["semantic"][0]) > 0
    inter += int(np.sum(predicted & (instances > 0)))
    union += int(np.sum(predicted | (instances > 0)))
  return inter / max(union, 1)


def annotate(served: ls_backend.Backend, task_id: int, path: str, instances: np.ndarray) -> None:
  """The annotator's correction of one tile, received as Label Studio sends it."""
  descriptor = served.served()[1].descriptor
  truth = (instances > 0).astype(np.int32)
  served.webhook(
    {
      "action": "ANNOTATION_CREATED",
      "task": {"id": task_id, "data": {"image": path}},
      "annotation": {
        "id": task_id,
        "completed_by": 1,
        "result": ls_tasks.prediction_result(truth, instances, descriptor),
      },
    }
  )


def train_initial(config, tiles: dict, chosen: list[str], workdir: str):
  """The first model, trained from scratch on the ``chosen`` tiles, labelled from scratch."""
  from segjax import train  # pylint: disable=import-outside-toplevel

  split = os.path.join(workdir, "data", "train")
  for path in chosen:
    stem = os.path.splitext(os.path.basename(path))[0]
    shutil.copyfile(path, prelabels.output_path(split, "images", stem, ".tif"))
    instances = tiles["pool"][path]
    cv2.imwrite(
      prelabels.output_path(split, "masks", stem, ".png"), (instances > 0).astype(np.uint8)
    )
    prelabels.write_instance_png(prelabels.output_path(split, "instances", stem, ".png"), instances)
  config.data.root = os.path.join(workdir, "data")
  config.data.data_dir = os.path.join(workdir, "data", ".prepared")
  config.eval_splits = ()
  run = os.path.join(workdir, "run")
  train.train_and_evaluate(config, run)
  return run


def simulate(
  tiles: dict,
  base_run: str,
  workdir: str,
  order: str,
  initial: list[str],
  *,
  per_round: int,
  rounds: int,
  steps: int,
  seed: int,
  log=print,
) -> list[dict]:
  """One order's rounds from the model of ``base_run``; returns a row per round: tiles labelled,
  cumulative pixels corrected (and painted from scratch), held-out IoU."""
  run = os.path.join(workdir, order, "run")
  shutil.rmtree(os.path.join(workdir, order), ignore_errors=True)
  shutil.copytree(base_run, run)
  pool = sorted(tiles["pool"])
  served = ls_backend.Backend(run, os.path.dirname(pool[0]), steps=steps, log=log)
  ids = {path: i + 1 for i, path in enumerate(pool)}
  rng = np.random.default_rng(seed)
  labelled = list(initial)
  for path in initial:
    annotate(served, ids[path], path, tiles["pool"][path])
  painted = sum(int(np.sum(tiles["pool"][p] > 0)) for p in initial)
  corrected, scratch = painted, painted
  rows = [
    {
      "round": 0,
      "tiles": len(labelled),
      "pixels_corrected": corrected,
      "pixels_from_scratch": scratch,
      "iou": nucleus_iou(served.served()[1], tiles["held_out"]),
      "model_version": served.model_version(),
    }
  ]
  for number in range(1, rounds + 1):
    remaining = [p for p in pool if p not in labelled]
    answer = served.predict({"tasks": [{"id": ids[p], "data": {"image": p}} for p in remaining]})
    scores = {p: r["score"] for p, r in zip(remaining, answer["results"])}
    if order == "uncertainty":
      chosen = sorted(remaining, key=lambda p: scores[p])[:per_round]
    else:
      chosen = list(rng.permutation(remaining)[:per_round])
    for path, result in zip(remaining, answer["results"]):
      if path in chosen:
        instances = tiles["pool"][path]
        prelabel, _ = ls_tasks.annotation_labels(
          result["result"], served.served()[1].descriptor, *instances.shape
        )
        corrected += int(np.sum(prelabel != (instances > 0)))
        scratch += int(np.sum(instances > 0))
        annotate(served, ids[path], path, instances)
    labelled += chosen
    served.train_version()
    rows.append(
      {
        "round": number,
        "tiles": len(labelled),
        "pixels_corrected": corrected,
        "pixels_from_scratch": scratch,
        "iou": nucleus_iou(served.served()[1], tiles["held_out"]),
        "model_version": served.model_version(),
        "mean_score_chosen": float(np.mean([scores[p] for p in chosen])),
      }
    )
    log(f"{order} round {number}: {rows[-1]}")
  return rows


def pixels_to_reach(rows: list[dict], target: float, key: str) -> int | None:
  """The cumulative pixels (``key``) at the first round whose held-out IoU reaches ``target``."""
  return next((r[key] for r in rows if r["iou"] >= target), None)


def markdown(results: dict, targets) -> str:
  """Tables: pixels needed per order to reach each target IoU (mean over seeds that reach it),
  and each seed's rounds."""
  orders = (
    ("uncertainty", "pixels_corrected"),
    ("random", "pixels_corrected"),
    ("scratch", "pixels_from_scratch"),
  )
  lines = [
    "| held-out IoU reached | "
    + " | ".join(f"({'abc'[i]}) {name}" for i, (name, _) in enumerate(orders))
    + " |",
    "|---|" + "---:|" * len(orders),
  ]
  for target in targets:
    cells = []
    for name, key in orders:
      runs = results[name if name != "scratch" else "random"]
      found = [pixels_to_reach(rows, target, key) for rows in runs]
      reached = [f for f in found if f is not None]
      cells.append(
        f"{np.mean(reached):,.0f} ({len(reached)}/{len(found)} seeds)"
        if reached
        else f"not reached (0/{len(found)})"
      )
    lines.append(f"| {target:g} | " + " | ".join(cells) + " |")
  lines += [
    "",
    "| seed | round | tiles | (a) pixels | (a) IoU | (b) pixels | (b) IoU | (c) pixels |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for seed, (a_rows, b_rows) in enumerate(zip(results["uncertainty"], results["random"])):
    for a, b in zip(a_rows, b_rows):
      lines.append(
        f"| {seed} | {a['round']} | {a['tiles']} | {a['pixels_corrected']:,} | "
        f"{a['iou']:.3f} | {b['pixels_corrected']:,} | {b['iou']:.3f} | "
        f"{b['pixels_from_scratch']:,} |"
      )
  return "\n".join(lines)


def plot(results: dict, path: str) -> str:
  """Held-out IoU against pixels corrected, each order's mean over seeds, as a PNG."""
  from segjax import visualize  # pylint: disable=import-outside-toplevel

  curves = {}
  for label, name, key in (
    ("(a) uncertainty", "uncertainty", "pixels_corrected"),
    ("(b) random", "random", "pixels_corrected"),
    ("(c) from scratch", "random", "pixels_from_scratch"),
  ):
    x = np.mean([[r[key] for r in rows] for rows in results[name]], axis=0) / 1000.0
    y = np.mean([[r["iou"] for r in rows] for rows in results[name]], axis=0)
    curves[label] = (x, y)
  picture = visualize.line_plot(
    curves, "held-out nucleus IoU", x_label="thousand pixels labelled", y_range=(0.0, 1.0)
  )
  visualize.write_png(path, picture)
  return path


def run(
  config,
  image: np.ndarray,
  instances: np.ndarray,
  workdir: str,
  *,
  tile: int = 64,
  initial: int = 2,
  per_round: int = 4,
  rounds: int = 5,
  initial_steps: int = 300,
  steps: int = 150,
  seeds=(0, 1, 2),
  targets=(0.8, 0.84, 0.85, 0.86, 0.865),
  log=print,
) -> dict:
  """The whole campaign: tiles, then for each seed an initial model and the two orders' rounds;
  writes ``campaign.json``, ``campaign.md`` and ``campaign.png`` into ``workdir``."""
  tiles = write_tiles(os.path.join(workdir, "tiles"), image, instances, tile)
  results = {"uncertainty": [], "random": []}
  config.num_train_steps = initial_steps
  # Whole tiles are the training crops: the augmentation without scaling and cropping.
  config.data.update(
    dict(
      crop_size=(tile, tile),
      patch_size=(tile, tile),
      patch_stride=(tile, tile),
      train_pp="|".join(
        op
        for op in config.data.train_pp.split("|")
        if not op.startswith(("random_scale", "random_crop"))
      ),
    )
  )
  for seed in seeds:
    seed_dir = os.path.join(workdir, f"seed{seed}")
    chosen = list(np.random.default_rng([seed, 0]).permutation(sorted(tiles["pool"]))[:initial])
    config.seed = seed
    base = train_initial(config, tiles, chosen, os.path.join(seed_dir, "initial"))
    for order in results:
      results[order].append(
        simulate(
          tiles,
          base,
          seed_dir,
          order,
          chosen,
          per_round=per_round,
          rounds=rounds,
          steps=steps,
          seed=seed,
          log=log,
        )
      )
  summary = {
    "settings": dict(
      tile=tile,
      initial=initial,
      per_round=per_round,
      rounds=rounds,
      initial_steps=initial_steps,
      steps=steps,
      seeds=list(seeds),
      pool=len(tiles["pool"]),
      held_out=len(tiles["held_out"]),
    ),
    "results": results,
  }
  files.write_json(os.path.join(workdir, "campaign.json"), summary)
  files.write_text(os.path.join(workdir, "campaign.md"), markdown(results, targets) + "\n")
  plot(results, os.path.join(workdir, "campaign.png"))
  return summary
