"""Pre-labels of image files: a trained model's predictions written in an annotation format, image
by image, each with a record that marks it done (a run started again resumes)."""

from __future__ import annotations

import json
import os
import shutil

import jax
import numpy as np

from segjax import cutout
from segjax import files
from segjax import predict
from segjax import prelabels
from segjax import visualize


FORMATS = ("png", "coco", "labelme", "cutout")


def predict_files(
  predictor: predict.Predictor, inputs, output: str, fmt: str = "png", progress: bool = True
) -> list[dict]:
  """Predicts every file of ``inputs`` and writes pre-labels in ``fmt`` (``png``, ``coco`` or
  ``labelme``) or cut-outs (``cutout``: RGBA images, `segjax.cutout`) to ``output`` (see
  `segjax.prelabels`); returns the review rows, least confident first.

  In a multi-process run (`segjax.distributed`) each process takes every ``process_count``-th
  file of the list and batches its images over its own devices. Each image's files are written
  first and its record (``records/NAME.json``: review row and COCO regions) last, atomically, so
  a run started again skips the images whose record exists with the same settings
  (`prediction_settings`: model source, ``config.predict``, post-processing, format); when every
  process is done,
  process 0 merges the records, in input order, into ``review.csv`` and ``annotations.json``
  (the same files as one process writes)."""
  import tqdm  # pylint: disable=import-outside-toplevel

  if fmt not in FORMATS:
    raise ValueError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
  config, descriptor = predictor.config, predictor.descriptor
  cut_classes = cutout.cutout_classes(config.predict.get("cutout_classes"), descriptor)
  paths = [inputs] if isinstance(inputs, str) else list(inputs)
  names = [prelabels.safe_name(os.path.splitext(os.path.basename(p))[0]) for p in paths]
  if len(set(names)) < len(names):
    twice = sorted({n for n in names if names.count(n) > 1})
    raise ValueError(
      f"input files share the names {', '.join(twice[:5])}: their outputs would "
      "overwrite each other; rename them or predict them into separate outputs"
    )
  os.makedirs(output, exist_ok=True)
  stuff = prelabels.export_stuff(descriptor, config.predict.get("export_stuff"))
  record = lambda name: prelabels.output_path(output, "records", name, ".json")
  process, count = jax.process_index(), jax.process_count()
  settings = prediction_settings(predictor, fmt)
  todo = [
    (p, n)
    for p, n in list(zip(paths, names))[process::count]
    if _recorded_settings(record(n)) != settings
  ]
  for _, name in todo:  # what a killed run left half-written of this process's images
    remove_partial_files(output, name)
  group = len(predictor.devices)
  with tqdm.tqdm(total=len(todo), desc="predict", unit="image", disable=not progress) as bar:
    for start in range(0, len(todo), group):
      chunk = todo[start : start + group]
      for (path, name), result in zip(
        chunk, predict.predict_group(predictor, [p for p, _ in chunk])
      ):
        _write_image(
          predictor, path, name, *result, output, fmt, stuff, cut_classes, record(name), settings
        )
        bar.update(1)
  if count > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

    multihost_utils.sync_global_devices("segjax predict_files: every image written")
  rows, coco = [], prelabels.CocoWriter(descriptor, stuff)
  for name in names:
    with open(record(name), encoding="utf-8") as f:
      done = json.load(f)
    rows.append(done["row"])
    if fmt == "coco":
      coco.extend(done["coco"])
  if process == 0:
    if fmt == "coco":
      files.write_json(os.path.join(output, "annotations.json"), coco.data)
    files.write_json(os.path.join(output, "classes.json"), prelabels.classes_json(descriptor))
    prelabels.write_review(os.path.join(output, "review.csv"), rows)
  return sorted(rows, key=lambda r: -r["uncertainty"])


def remove_partial_files(output: str, name: str) -> None:
  """Removes the temporary files (`segjax.files.atomic_path`: ``NAME.ext.tmpPID-THREAD.ext``) a
  killed run left for image ``name`` in the subdirectories of ``output``."""
  import glob  # pylint: disable=import-outside-toplevel
  import re  # pylint: disable=import-outside-toplevel

  pattern = re.compile(re.escape(name) + r"\.[^/]+\.tmp\d+(-\d+)?(\.[^/]*)?$")
  for path in glob.glob(os.path.join(glob.escape(output), "*", glob.escape(name) + ".*.tmp*")):
    if pattern.match(os.path.basename(path)):
      os.remove(path)


def prediction_settings(predictor: predict.Predictor, fmt: str) -> str:
  """A digest of what decides an image's outputs: the model's source, the prediction and
  post-processing settings and the format. A record with another digest is predicted again."""
  import hashlib  # pylint: disable=import-outside-toplevel

  config = predictor.config
  what = {
    "model": str(predictor.run.path),
    "format": fmt,
    "predict": config.predict.to_dict(),
    "postprocess": config.get("postprocess"),
  }
  return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _recorded_settings(path: str) -> str | None:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f).get("settings")
  except (OSError, ValueError):
    return None


def _write_image(
  predictor,
  path,
  name,
  predictions,
  index,
  probs,
  output,
  fmt,
  stuff,
  cut_classes,
  record_path,
  settings,
) -> None:
  """One image's outputs, then its record (which marks it done)."""
  config, descriptor = predictor.config, predictor.descriptor
  labels = np.asarray(predictions["semantic"][index], np.int32)
  instance, scores = predict.instance_map(predictions, index, descriptor)
  if "panoptic" in predictions:
    visualize.write_png(
      prelabels.output_path(output, "panoptic", name, ".png"),
      visualize.colorize_panoptic(predictions["panoptic"][index], descriptor),
    )
  files.write_atomic(
    prelabels.output_path(output, "images", name, os.path.splitext(path)[1]),
    lambda tmp: shutil.copyfile(path, tmp),
  )
  prelabels.write_indexed_png(
    prelabels.output_path(output, "masks", name, ".png"), labels, descriptor.colormap
  )
  if instance is not None:
    prelabels.write_instance_png(prelabels.output_path(output, "instances", name, ".png"), instance)
  regions = None
  if fmt == "coco":
    single = prelabels.CocoWriter(descriptor, stuff)
    single.add(os.path.basename(path), labels, instance, scores)
    regions = {"image": single.data["images"][0], "annotations": single.data["annotations"]}
  elif fmt == "labelme":
    files.write_json(
      prelabels.output_path(output, "labelme", name, ".json"),
      prelabels.labelme(os.path.basename(path), labels, instance, descriptor, stuff),
    )
  elif fmt == "cutout":
    cutout.write_cutouts(
      output, name, path, probs, labels, instance, cut_classes, config.predict, descriptor
    )
  # Six decimals: the ranking's precision, and the same digits whichever devices computed it
  # (batches split differently may round the float32 probabilities differently in the last bit).
  row = {
    "name": name,
    "uncertainty": round(
      prelabels.uncertainty(probs, config.predict.get("uncertainty", "entropy")), 6
    ),
    "height": labels.shape[0],
    "width": labels.shape[1],
  }
  labels_written = {}
  if fmt == "labelme":  # which file a person corrects decides what the folder dataset reads
    for sub, suffix in (("masks", ".png"), ("labelme", ".json")):
      written = prelabels.output_path(output, sub, name, suffix)
      labels_written[os.path.relpath(written, output)] = files.sha256(written)
  files.write_json(
    record_path, {"row": row, "coco": regions, "settings": settings, "labels": labels_written}
  )
