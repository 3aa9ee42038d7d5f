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
  gain_per_click  the tiles with the most uncertainty per expected click: the sum of the
                per-pixel entropy of the model's probabilities over the tile, divided by one
                plus the number of instances it pre-labels there (about a click per object)
  objects_per_pixel  the tiles with the most pre-labelled objects per expected corrected pixel:
                the number of instances the model pre-labels there divided by one plus the
                tile's expected error pixels (the sum over its pixels of one minus the model's
                largest class probability)
  diversity     the tiles farthest from those labelled so far (k-center greedy, Sener & Savarese
                2018), each tile described by its pre-label (foreground fraction, expected error
                fraction, instances) and its intensities (mean, standard deviation), every
                feature standardised over the pool
  random        tiles in a random order
  scratch       the random order's tiles labelled without pre-labels: every non-background
                pixel is painted (same tiles, so the same models as ``random``)

With a click model (``click_run``: trained on the held-out half, so it never saw the tiles it is
measured on), each corrected tile's objects are also corrected by clicks
(`segjax.interactive.clicks`, the standard protocol: each click in the largest error region, at
its point farthest from the region's boundary), and the clicks each object needs to reach IoU
``click_target`` are counted, ``max_clicks`` for an object that never does (a failure):

  prelabel      the pre-label's instance that overlaps the object most, then the click model's
                masks (the previous mask fed back, as the model was trained); each pre-labelled
                instance that covers no object costs one more click (deleting it)
  clicks        the click model from an empty mask
  painting      no model: each click paints (or erases) a disk of ``click_radius`` pixels
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


ORDERS = ("uncertainty", "gain_per_click", "objects_per_pixel", "diversity", "random")


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


def click_costs(
  clicker,
  path: str,
  instances: np.ndarray,
  prelabel: np.ndarray,
  *,
  radius: int,
  target: float,
  max_clicks: int,
) -> dict:
  """The clicks one tile's objects (``instances`` ids) need to reach IoU ``target`` in each mode
  (module docstring), summed over the objects; ``prelabel`` is the tile's pre-labelled instance
  ids. Also ``objects``, and per mode the ``failures`` (objects that never reach ``target`` within
  ``max_clicks``) and ``best_iou`` (the best IoU each object reached, summed over the objects)."""
  from segjax.interactive import clicks  # pylint: disable=import-outside-toplevel

  def clicks_to_target(predict, truth, initial):
    """(clicks, whether the object never reached ``target``, its best IoU)."""
    if initial is not None and clicks.iou(truth, initial) >= target:
      return 0, False, clicks.iou(truth, initial)
    _, ious = clicks.click_sequence(predict, truth, max_clicks=max_clicks, initial=initial)
    return clicks.number_of_clicks(ious, target, max_clicks), max(ious) < target, max(ious)

  def model(initial):
    state = {"previous": initial}

    def predict(sequence):
      points = [(c.x, c.y, c.positive) for c in sequence]
      mask = clicker.predict(path, points, previous=state["previous"])
      state["previous"] = mask
      return mask

    return predict

  costs = {"objects": 0, "prelabel": 0, "clicks": 0, "painting": 0}
  for mode in ("prelabel", "clicks", "painting"):
    costs.update({f"failures_{mode}": 0, f"best_iou_{mode}": 0.0})
  for number in range(1, int(instances.max()) + 1):
    truth = instances == number
    if not truth.any():
      continue
    start = clicks.best_overlap(prelabel, truth)
    counts = {
      "prelabel": clicks_to_target(model(start), truth, start),
      "clicks": clicks_to_target(model(None), truth, None),
      "painting": clicks_to_target(clicks.disk_predictor(truth.shape, radius), truth, None),
    }
    costs["objects"] += 1
    for mode, (count, failed, best) in counts.items():
      costs[mode] += count
      costs[f"failures_{mode}"] += int(failed)
      costs[f"best_iou_{mode}"] += best  # summed over the objects
  for number in np.unique(prelabel[prelabel > 0]):
    if not np.any((prelabel == number) & (instances > 0)):
      costs["prelabel"] += 1  # a false pre-labelled instance: one click deletes it
  return costs


def _tile_scores(predictor, path: str) -> tuple[np.ndarray, int]:
  """``(class probabilities [H,W,C], number of pre-labelled instances)`` of one tile."""
  from segjax import predict  # pylint: disable=import-outside-toplevel

  predictions, probabilities = predict.predict_file(predictor, path)
  instances, _ = predict.instance_map(predictions, 0, predictor.descriptor)
  objects = 0 if instances is None else len(np.unique(instances[instances > 0]))
  return probabilities, objects


def gain_per_click(predictor, path: str) -> float:
  """The ``gain_per_click`` order's score of one tile (module docstring)."""
  probabilities, objects = _tile_scores(predictor, path)
  entropy = -np.sum(probabilities * np.log(np.clip(probabilities, 1e-12, None)), axis=-1)
  return float(entropy.sum()) / (1 + objects)


def objects_per_pixel(predictor, path: str) -> float:
  """The ``objects_per_pixel`` order's score of one tile (module docstring)."""
  probabilities, objects = _tile_scores(predictor, path)
  return objects / (1.0 + float(np.sum(1.0 - probabilities.max(axis=-1))))


def tile_descriptor(predictor, path: str) -> np.ndarray:
  """The ``diversity`` order's description of one tile (module docstring)."""
  from segjax.data import readers  # pylint: disable=import-outside-toplevel

  probabilities, objects = _tile_scores(predictor, path)
  image = readers.read_image(path).astype(np.float64)
  foreground = float(np.mean(1.0 - probabilities[..., 0]))
  error = float(np.mean(1.0 - probabilities.max(axis=-1)))
  return np.array([foreground, error, objects, image.mean(), image.std()])


def farthest_first(descriptors: dict, labelled, count: int) -> list:
  """``count`` keys of ``descriptors`` (key -> feature vector) not in ``labelled``, each the one
  farthest (Euclidean, features standardised over all keys) from the labelled keys and those
  chosen before it: k-center greedy."""
  keys = sorted(descriptors)
  features = np.stack([np.asarray(descriptors[k], np.float64) for k in keys])
  features = (features - features.mean(0)) / np.maximum(features.std(0), 1e-12)
  distance = np.full(len(keys), np.inf)
  for k in labelled:
    distance = np.minimum(distance, np.linalg.norm(features - features[keys.index(k)], axis=1))
  chosen = []
  for _ in range(min(count, len(keys) - len(set(labelled)))):
    candidates = [i for i, k in enumerate(keys) if k not in labelled and k not in chosen]
    best = max(candidates, key=lambda i: (distance[i], -i))
    chosen.append(keys[best])
    distance = np.minimum(distance, np.linalg.norm(features - features[best], axis=1))
  return chosen


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
  clicker=None,
  click_settings: dict | None = None,
  log=print,
) -> list[dict]:
  """One order's rounds from the model of ``base_run``; returns a row per round: tiles labelled,
  cumulative pixels corrected (and painted from scratch), held-out IoU and, with a ``clicker``
  (`segjax.interactive.predictor.ClickModelPredictor`; ``click_settings`` the keywords of
  `click_costs`), the cumulative clicks of each mode."""
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
  spent: dict = {}  # the cumulative click_costs

  def spend(path, prelabel_instances):
    costs = click_costs(clicker, path, tiles["pool"][path], prelabel_instances, **click_settings)
    for key, value in costs.items():
      spent[key] = spent.get(key, 0) + value

  if clicker is not None:  # the initial tiles have no pre-label: every mode starts empty
    for path in initial:
      spend(path, np.zeros_like(tiles["pool"][path]))
  rows = [
    {
      "round": 0,
      "tiles": len(labelled),
      "pixels_corrected": corrected,
      "pixels_from_scratch": scratch,
      "iou": nucleus_iou(served.served()[1], tiles["held_out"]),
      "model_version": served.model_version(),
      **({"clicks": dict(spent)} if clicker is not None else {}),
    }
  ]
  for number in range(1, rounds + 1):
    remaining = [p for p in pool if p not in labelled]
    answer = served.predict({"tasks": [{"id": ids[p], "data": {"image": p}} for p in remaining]})
    scores = {p: r["score"] for p, r in zip(remaining, answer["results"])}
    if order == "uncertainty":
      chosen = sorted(remaining, key=lambda p: scores[p])[:per_round]
    elif order == "gain_per_click":
      gains = {p: gain_per_click(served.served()[1], p) for p in remaining}
      chosen = sorted(remaining, key=lambda p: -gains[p])[:per_round]
    elif order == "objects_per_pixel":
      ratios = {p: objects_per_pixel(served.served()[1], p) for p in remaining}
      chosen = sorted(remaining, key=lambda p: -ratios[p])[:per_round]
    elif order == "diversity":
      described = {p: tile_descriptor(served.served()[1], p) for p in pool}
      chosen = farthest_first(described, labelled, per_round)
    elif order == "random":
      chosen = list(rng.permutation(remaining)[:per_round])
    else:
      raise ValueError(f"order {order!r}: use one of {ORDERS}")
    for path, result in zip(remaining, answer["results"]):
      if path in chosen:
        instances = tiles["pool"][path]
        prelabel, prelabel_instances = ls_tasks.annotation_labels(
          result["result"], served.served()[1].descriptor, *instances.shape
        )
        corrected += int(np.sum(prelabel != (instances > 0)))
        scratch += int(np.sum(instances > 0))
        if clicker is not None:
          spend(path, prelabel_instances)
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
        **({"clicks": dict(spent)} if clicker is not None else {}),
      }
    )
    log(f"{order} round {number}: {rows[-1]}")
  return rows


def cost_to_reach(rows: list[dict], target: float, cost) -> int | None:
  """``cost(row)`` (cumulative) at the first round whose held-out IoU reaches ``target``."""
  return next((cost(r) for r in rows if r["iou"] >= target), None)


# (column, order whose runs it reads, cumulative cost of a row)
PIXEL_COLUMNS = (
  ("(a) uncertainty", "uncertainty", lambda r: r["pixels_corrected"]),
  ("(a) gain per click", "gain_per_click", lambda r: r["pixels_corrected"]),
  ("(a) objects per pixel", "objects_per_pixel", lambda r: r["pixels_corrected"]),
  ("(b) random", "random", lambda r: r["pixels_corrected"]),
  ("(c) scratch", "random", lambda r: r["pixels_from_scratch"]),
)
CLICK_COLUMNS = (
  ("uncertainty, pre-labels + clicks", "uncertainty", lambda r: r["clicks"]["prelabel"]),
  ("gain per click, pre-labels + clicks", "gain_per_click", lambda r: r["clicks"]["prelabel"]),
  (
    "objects per pixel, pre-labels + clicks",
    "objects_per_pixel",
    lambda r: r["clicks"]["prelabel"],
  ),
  ("random, pre-labels + clicks", "random", lambda r: r["clicks"]["prelabel"]),
  ("random, clicks only", "random", lambda r: r["clicks"]["clicks"]),
  ("random, painting", "random", lambda r: r["clicks"]["painting"]),
)


def _reach_table(results: dict, targets, columns, unit: str) -> list[str]:
  columns = [c for c in columns if results.get(c[1])]
  lines = [
    "| held-out IoU reached | " + " | ".join(name for name, _, _ in columns) + " |",
    "|---|" + "---:|" * len(columns),
  ]
  for target in targets:
    cells = []
    for _, order, cost in columns:
      found = [cost_to_reach(rows, target, cost) for rows in results[order]]
      reached = [f for f in found if f is not None]
      cells.append(
        f"{np.mean(reached):,.0f} {unit} ({len(reached)}/{len(found)} seeds)"
        if reached
        else f"not reached (0/{len(found)})"
      )
    lines.append(f"| {target:g} | " + " | ".join(cells) + " |")
  return lines


def clicks_per_object(results: dict) -> dict:
  """Per order and mode: the mean clicks per object over every object of every corrected tile
  (all rounds and seeds: the last row's cumulative counts), and the failures."""
  table = {}
  for order, runs in results.items():
    last = [rows[-1]["clicks"] for rows in runs if rows and "clicks" in rows[-1]]
    if not last:
      continue
    objects = sum(c["objects"] for c in last)
    table[order] = {
      mode: {
        "clicks_per_object": sum(c[mode] for c in last) / max(objects, 1),
        "failures": sum(c[f"failures_{mode}"] for c in last),
        "mean_best_iou": sum(c[f"best_iou_{mode}"] for c in last) / max(objects, 1),
        "objects": objects,
      }
      for mode in ("prelabel", "clicks", "painting")
    }
  return table


def markdown(results: dict, targets, click_target: float = 0.9) -> str:
  """Tables: pixels (and, with clicks, clicks) needed per order to reach each held-out IoU (mean
  over the seeds that reach it), clicks per object, and each seed's rounds."""
  lines = _reach_table(results, targets, PIXEL_COLUMNS, "px")
  per_object = clicks_per_object(results)
  if per_object:
    lines += ["", *_reach_table(results, targets, CLICK_COLUMNS, "clicks"), ""]
    lines += [
      "| order | objects | (a) pre-labels + clicks | (b) clicks only | (c) painting |",
      "|---|---:|---:|---:|---:|",
    ]
    for order, modes in per_object.items():
      cells = [
        f"{m['clicks_per_object']:.2f} ({m['failures']} failures; best IoU {m['mean_best_iou']:.3f})"
        for m in (modes["prelabel"], modes["clicks"], modes["painting"])
      ]
      lines.append(f"| {order} | {modes['prelabel']['objects']} | " + " | ".join(cells) + " |")
    lines.append(
      f"\nclicks per object to IoU {click_target:g} (failures: never reached; best IoU: the mean"
      " over the objects of the best IoU each reached)"
    )
  orders = [o for o in ORDERS if results.get(o)]
  lines += [
    "",
    "| seed | round | tiles | "
    + " | ".join(f"{o} pixels | {o} IoU" for o in orders)
    + " | scratch pixels |",
    "|---:|---:|---:|" + "---:|" * (2 * len(orders) + 1),
  ]
  for seed in range(len(results[orders[0]])):
    for number, row in enumerate(results[orders[0]][seed]):
      cells = []
      for order in orders:
        r = results[order][seed][number]
        cells += [f"{r['pixels_corrected']:,}", f"{r['iou']:.3f}"]
      scratch = results["random"][seed][number]["pixels_from_scratch"]
      lines.append(
        f"| {seed} | {row['round']} | {row['tiles']} | " + " | ".join(cells) + f" | {scratch:,} |"
      )
  return "\n".join(lines)


def plot(results: dict, path: str) -> str:
  """Held-out IoU against pixels corrected, each order's mean over seeds, as a PNG."""
  from segjax import visualize  # pylint: disable=import-outside-toplevel

  curves = {}
  for label, name, cost in PIXEL_COLUMNS:
    if not results.get(name):
      continue
    x = np.mean([[cost(r) for r in rows] for rows in results[name]], axis=0) / 1000.0
    y = np.mean([[r["iou"] for r in rows] for rows in results[name]], axis=0)
    curves[label] = (x, y)
  picture = visualize.line_plot(
    curves,
    "held-out nucleus IoU",
    x_label="thousand pixels labelled",
    y_range=(0.0, 1.0),
    legend="lower right",
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
  orders=ORDERS,
  click_run: str | None = None,
  click_radius: int = 3,
  click_target: float = 0.9,
  max_clicks: int = 20,
  log=print,
) -> dict:
  """The whole campaign: tiles, then for each seed an initial model and each order's rounds
  (``orders``, ``random`` among them: the scratch row reads its tiles), with clicks counted when
  ``click_run`` names a click model's run; writes ``campaign.json``, ``campaign.md`` and
  ``campaign.png`` into ``workdir``."""
  unknown = sorted(set(orders) - set(ORDERS))
  if unknown or "random" not in orders:
    raise ValueError(f"orders={tuple(orders)}: choose among {ORDERS}, 'random' included")
  clicker, click_settings = None, None
  if click_run:
    from segjax import runs  # pylint: disable=import-outside-toplevel
    from segjax.interactive import predictor  # pylint: disable=import-outside-toplevel

    clicker = predictor.ClickModelPredictor(runs.load(click_run))
    click_settings = dict(radius=click_radius, target=click_target, max_clicks=max_clicks)
  tiles = write_tiles(os.path.join(workdir, "tiles"), image, instances, tile)
  results = {order: [] for order in orders}
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
          clicker=clicker,
          click_settings=click_settings,
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
      click_run=click_run,
      **(click_settings or {}),
    ),
    "results": results,
    "clicks_per_object": clicks_per_object(results),
  }
  files.write_json(os.path.join(workdir, "campaign.json"), summary)
  files.write_text(
    os.path.join(workdir, "campaign.md"), markdown(results, targets, click_target) + "\n"
  )
  plot(results, os.path.join(workdir, "campaign.png"))
  return summary
