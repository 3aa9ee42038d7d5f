"""Prediction with a trained model: pictures of a split, and pre-labels of image files.

A `Predictor` wraps a trained model (`segjax.runs.Run`: from a run directory or an exported file)
with its ``config.postprocess`` chain and ``config.predict`` settings. Semantic models (whose chain
reads only ``logits``) predict any image size through the padded sliding window and test-time
augmentation (`segjax.inference`); models with more heads (Panoptic-DeepLab) predict whole images.
"""
from __future__ import annotations

import json
import os
import shutil

import jax
import numpy as np

from segjax import export
from segjax import files
from segjax import inference
from segjax import postprocess
from segjax import visualize
from segjax.data import pipeline


def local_data_parallel(fn, devices):
  """``fn`` compiled with its batch split over ``devices`` (this process's: in a multi-process
  run each host predicts its own images on its own devices); batches are padded to a multiple of
  the device count and the padding cut from the outputs. Called inside another ``jax.jit`` (the
  sliding window's), it constrains the batch to the same split when the count divides it."""
  sharding = jax.sharding.NamedSharding(jax.sharding.Mesh(np.asarray(devices), ("batch",)),
                                        jax.sharding.PartitionSpec("batch"))
  compiled = jax.jit(fn, in_shardings=sharding)

  def call(images):
    if isinstance(images, jax.core.Tracer):
      if images.shape[0] % len(devices) == 0:
        images = jax.lax.with_sharding_constraint(images, sharding)
      return fn(images)
    images = np.asarray(images, np.float32)
    count, pad = len(images), -len(images) % len(devices)
    if pad:
      images = np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)])
    return jax.tree.map(lambda a: a[:count], compiled(jax.device_put(images, sharding)))
  return call


class Predictor:
  """``run``'s model, post-processors and prediction settings (``config.predict``)."""

  def __init__(self, run, config=None):
    from segjax import runs  # pylint: disable=import-outside-toplevel
    self.run = run
    self.config = runs.with_run_model(run, config)
    self.descriptor = run.descriptor
    self.chain = postprocess.Chain(self.config.get("postprocess", "argmax"), self.descriptor)
    settings = self.config.get("predict", {})
    self.settings = settings
    apply_kwargs = {}
    if settings.get("model_scales"):  # HMSA: the model's own learned combination of these scales
      apply_kwargs["scales"] = tuple(settings.model_scales)
    model, variables = run.model, run.variables
    self.devices = jax.local_devices()
    self.logits_fn = local_data_parallel(
        lambda x: model.apply(variables, x, train=False, **apply_kwargs)["logits"], self.devices)
    self._compiled = local_data_parallel(lambda x: self.chain.apply_compiled(
        model.apply(variables, x, train=False, **apply_kwargs)), self.devices)
    self.semantic_only = self.chain.reads() <= {"logits"}
    window, tta = settings.get("window"), (tuple(settings.get("scales", (1.0,))) != (1.0,)
                                           or settings.get("flip", False))
    if (window or tta) and not self.semantic_only:
      raise ValueError(f"config.predict.window / scales / flip apply to semantic models; this "
                       f"chain ({self.chain.spec!r}) reads {sorted(self.chain.reads())}.")

  def predict_batch(self, images: np.ndarray) -> dict:
    """Predictions (numpy, every post-processing step applied) of a batch of normalised images."""
    predictions = jax.device_get(self._compiled(images))
    return self.chain.apply_host(predictions)

  def batches_whole_images(self) -> bool:
    """Whether images are predicted whole in batches (no sliding window or test-time
    augmentation), so that images of one size can share a batch."""
    p = self.settings
    return not self.semantic_only or not (
        p.get("window") or tuple(p.get("scales", (1.0,))) != (1.0,) or p.get("flip", False))

  def predict_image(self, image: np.ndarray) -> tuple[dict, np.ndarray]:
    """``(predictions of one normalised image [H,W,C] (batch of 1), class probabilities)``, with
    the sliding window and test-time augmentation of ``config.predict`` for semantic models."""
    if not self.semantic_only:
      predictions = self.predict_batch(image[None])
      return predictions, np.asarray(jax.nn.softmax(predictions["logits"][0], axis=-1))
    p = self.settings
    kwargs = dict(scales=tuple(p.get("scales", (1.0,))), flip=bool(p.get("flip", False)))
    if p.get("window"):
      kwargs.update(window=tuple(p.window), overlap=p.get("overlap", 0.25),
                    blend=p.get("blend", "gaussian"), pad_mode=p.get("pad_mode", "reflect"),
                    batch_size=p.get("batch_size", 8))
    probs = inference.tta_predict(self.logits_fn, image, **kwargs)
    logits = np.log(np.clip(probs, 1e-30, 1.0))[None]  # softmax(log p) = p
    return self.chain(dict(logits=logits)), probs


def instance_map(predictions: dict, index: int, descriptor) -> tuple[np.ndarray | None, dict]:
  """Image ``index``'s instance ids (1..M, uint16; None without instances) and their scores
  ``{(class, id): score}``, from ``instances`` (scored), ``instance`` or ``panoptic``."""
  if "instances" in predictions:
    found = predictions["instances"][index]
    instance = np.zeros(predictions["semantic"][index].shape, np.uint16)
    scores = {}
    for number, (mask, cls, score) in enumerate(zip(found["masks"], found["classes"],
                                                    found["scores"]), start=1):
      instance[mask] = number
      scores[(int(cls), number)] = float(score)
    return instance, scores
  if "instance" in predictions:
    return np.asarray(predictions["instance"][index], np.uint16), {}
  if "panoptic" in predictions:
    ids = np.asarray(predictions["panoptic"][index])
    thing = np.isin(ids // descriptor.label_divisor, descriptor.thing_classes) & (
        ids % descriptor.label_divisor > 0)
    _, numbered = np.unique(np.where(thing, ids, -1), return_inverse=True)
    return np.where(thing, numbered.reshape(ids.shape), 0).astype(np.uint16), {}
  return None, {}


def draw_split(predictor: Predictor, source, output_dir: str) -> list[str]:
  """Pictures of ``config.predict.num_images`` images of ``config.predict.split`` (in the order of
  `segjax.data.pipeline.eval_dataset`: grouped by size): image, ground truth and prediction
  (with the sliding window and test-time augmentation of ``config.predict``; panoptic maps when
  the chain makes them), each at the image's own size, one file each, and all of them in
  ``contact_sheet.png``."""
  config, descriptor = predictor.config, predictor.descriptor
  os.makedirs(output_dir, exist_ok=True)
  ds, _ = pipeline.eval_dataset(source, config.data, config.predict.split,
                                local_batch_size=config.predict.get("batch_size", 8))
  paths, pictures = [], []
  whole = predictor.batches_whole_images()
  for batch in pipeline.as_numpy(ds, source):
    if len(paths) >= config.predict.num_images:
      break
    if whole:
      predictions = predictor.predict_batch(batch["image"])
    for i in np.flatnonzero(batch["valid"])[:config.predict.num_images - len(paths)]:
      own = np.s_[:batch["size"][i][0], :batch["size"][i][1]]  # the image, not its padding
      if not whole:  # the sliding window / test-time augmentation of config.predict
        predictions, _ = predictor.predict_image(batch["image"][i][own])
      j = i if whole else 0
      panoptic = "panoptic" in predictions and "panoptic" in batch
      shown = (predictions["panoptic"] if panoptic else predictions["semantic"])[j][own]
      truth = batch["panoptic" if panoptic else "semantic"][i][own]
      image = visualize.denormalize(batch["image"][i][own], config.data.mean, config.data.std)
      picture = visualize.side_by_side(image, shown, descriptor, truth, panoptic=panoptic)
      path = os.path.join(output_dir, f"{config.predict.split}_{len(paths):04d}.png")
      if jax.process_index() == 0:
        visualize.write_png(path, picture)
      paths.append(path)
      pictures.append(picture)
  if pictures and jax.process_index() == 0:
    visualize.write_png(os.path.join(output_dir, "contact_sheet.png"),
                        visualize.contact_sheet(pictures))
  return paths


def list_inputs(pattern: str) -> list[str]:
  """The image files of a directory, or of a glob pattern, sorted."""
  import glob  # pylint: disable=import-outside-toplevel
  from segjax.data.folder import IMAGE_EXTENSIONS  # pylint: disable=import-outside-toplevel
  if os.path.isdir(pattern):
    pattern = os.path.join(pattern, "*")
  paths = sorted(p for p in glob.glob(pattern)
                 if os.path.splitext(p)[1].lower() in IMAGE_EXTENSIONS)
  if not paths:
    raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) match {pattern}")
  return paths


def read_input(predictor: Predictor, path: str) -> np.ndarray:
  """One image file (its alpha channel dropped) normalised as the run's training images were."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from segjax.data import folder  # pylint: disable=import-outside-toplevel
  raw = folder.read_image(path)
  image = raw[..., :3] if raw.shape[-1] == 4 else raw
  return pipeline.prepare_image({"image": tf.constant(image)},
                                predictor.config.data)["image"].numpy()


def predict_file(predictor: Predictor, path: str) -> tuple[dict, np.ndarray]:
  """``(predictions, class probabilities [H,W,C])`` of one image file (`read_input`)."""
  return predictor.predict_image(read_input(predictor, path))


def predict_group(predictor: Predictor, paths) -> list[tuple[dict, int, np.ndarray]]:
  """``[(predictions, index in them, probabilities)]`` of image files: whole images of one size
  share a batch split over the process's devices (`Predictor.batches_whole_images`); otherwise
  one image at a time (its sliding windows split over the devices)."""
  images = [read_input(predictor, path) for path in paths]
  if not predictor.batches_whole_images():
    return [_single(predictor.predict_image(image)) for image in images]
  out = [None] * len(images)
  shapes: dict[tuple, list[int]] = {}
  for i, image in enumerate(images):
    shapes.setdefault(image.shape, []).append(i)
  for indices in shapes.values():
    predictions = predictor.predict_batch(np.stack([images[i] for i in indices]))
    for k, i in enumerate(indices):
      out[i] = (predictions, k, np.asarray(jax.nn.softmax(predictions["logits"][k], axis=-1)))
  return out


def _single(result):
  predictions, probs = result
  return predictions, 0, probs


FORMATS = ("png", "coco", "labelme", "cutout")
GEO_FORMATS = ("geotiff", "geojson", "gpkg")


def predict_rasters(predictor: Predictor, inputs, output: str, fmt: str = "geotiff") -> list[str]:
  """Georeferenced prediction (`segjax.geo`) of each raster of ``inputs``: ``NAME_classes.tif``
  (and ``NAME_probabilities.tif`` with ``config.predict.probabilities``) in ``output``, and for
  ``fmt`` ``geojson``/``gpkg`` the regions as ``NAME_regions.geojson``/``.gpkg`` in the raster's
  CRS (``config.predict.simplify`` map units). In a multi-process run each process takes every
  ``process_count``-th raster; a raster whose files all exist is skipped (each file appears only
  when complete); with ``geojson``, process 0 then merges every raster's regions into
  ``regions.geojson`` (with a ``source`` property) when they share one CRS. Returns the paths of
  this process's rasters' files."""
  from segjax import geo  # pylint: disable=import-outside-toplevel
  if fmt not in GEO_FORMATS:
    raise ValueError(f"--format must be one of {', '.join(GEO_FORMATS)} here, not {fmt!r}")
  settings, written = predictor.settings, []
  simplify = float(settings.get("simplify", 0.0))
  if simplify < 0:
    raise ValueError(f"config.predict.simplify must be >= 0 map units, not {simplify}")
  os.makedirs(output, exist_ok=True)
  paths = [inputs] if isinstance(inputs, str) else list(inputs)
  names = [export.safe_name(os.path.splitext(os.path.basename(p))[0]) for p in paths]
  outputs = []
  for name in names:
    files_of = [os.path.join(output, f"{name}_classes.tif")]
    if settings.get("probabilities", False):
      files_of.append(os.path.join(output, f"{name}_probabilities.tif"))
    if fmt != "geotiff":
      files_of.append(os.path.join(output, f"{name}_regions.{fmt}"))
    outputs.append(files_of)
  process, count = jax.process_index(), jax.process_count()
  for path, files_of in list(zip(paths, outputs))[process::count]:
    written += files_of
    if all(os.path.exists(f) for f in files_of):
      continue
    classes = files_of[0]
    probabilities = files_of[1] if settings.get("probabilities", False) else None
    geo.predict_raster(predictor, path, classes, probabilities)
    if fmt != "geotiff":
      features, crs = geo.regions(classes, predictor.descriptor.class_names,
                                  probabilities_path=probabilities, simplify=simplify)
      (geo.write_geojson if fmt == "geojson" else geo.write_gpkg)(files_of[-1], features, crs)
  if count > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices("segjax predict_rasters: every raster written")
  if fmt == "geojson" and process == 0 and len(paths) > 1:
    geo.merge_geojson(os.path.join(output, "regions.geojson"),
                      [files_of[-1] for files_of in outputs], names)
  return written


def cutout_classes(asked, descriptor) -> list[int]:
  """The class ids ``config.predict.cutout_classes`` names (names or ids; default: every class but
  the background), each checked."""
  if not asked:
    background = export.background_class(descriptor)
    return [c for c in range(descriptor.num_classes) if c != background]
  ids = []
  for item in asked:
    if isinstance(item, str) and item in descriptor.class_names:
      ids.append(list(descriptor.class_names).index(item))
    elif isinstance(item, int) and 0 <= item < descriptor.num_classes:
      ids.append(item)
    else:
      raise ValueError(f"config.predict.cutout_classes: {item!r} is neither a class name "
                       f"({', '.join(descriptor.class_names)}) nor an id below "
                       f"{descriptor.num_classes}")
  return ids


def write_cutouts(output, name, path, probs, labels, instance, classes, settings,
                  descriptor) -> list[str]:
  """The cut-outs of one image (`segjax.cutout.cutouts`) as ``cutouts/NAME_CLASS[_N].png``."""
  from segjax import cutout  # pylint: disable=import-outside-toplevel
  from segjax.data import folder  # pylint: disable=import-outside-toplevel
  image = folder.read_image(path)
  if image.dtype != np.uint8:  # 16-bit or float pictures: shown at 8 bits
    image = np.clip(image.astype(np.float64) / max(float(image.max()), 1e-12) * 255, 0, 255)
  pieces = cutout.cutouts(image.astype(np.uint8), probs, labels, instance, classes,
                          refine=settings.get("cutout_refine", "guided"),
                          radius=settings.get("cutout_radius", 8),
                          eps=settings.get("cutout_eps", 1e-3),
                          feather=settings.get("cutout_feather", 0.0))
  written = []
  for cls, number, picture in pieces:
    stem = f"{name}_{export.safe_name(descriptor.class_names[cls])}" + (
        f"_{number}" if number is not None else "")
    written.append(visualize.write_png(export.output_path(output, "cutouts", stem, ".png"),
                                       picture))
  return written


def predict_files(predictor: Predictor, inputs, output: str, fmt: str = "png",
                  progress: bool = True) -> list[dict]:
  """Predicts every file of ``inputs`` and writes pre-labels in ``fmt`` (``png``, ``coco`` or
  ``labelme``) or cut-outs (``cutout``: RGBA images, `segjax.cutout`) to ``output`` (see
  `segjax.export`); returns the review rows, least confident first.

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
  cut_classes = cutout_classes(config.predict.get("cutout_classes"), descriptor)
  paths = [inputs] if isinstance(inputs, str) else list(inputs)
  names = [export.safe_name(os.path.splitext(os.path.basename(p))[0]) for p in paths]
  if len(set(names)) < len(names):
    twice = sorted({n for n in names if names.count(n) > 1})
    raise ValueError(f"input files share the names {', '.join(twice[:5])}: their outputs would "
                     "overwrite each other; rename them or predict them into separate outputs")
  os.makedirs(output, exist_ok=True)
  stuff = export.export_stuff(descriptor, config.predict.get("export_stuff"))
  record = lambda name: export.output_path(output, "records", name, ".json")
  process, count = jax.process_index(), jax.process_count()
  settings = prediction_settings(predictor, fmt)
  todo = [(p, n) for p, n in list(zip(paths, names))[process::count]
          if _recorded_settings(record(n)) != settings]
  for _, name in todo:  # what a killed run left half-written of this process's images
    remove_partial_files(output, name)
  group = len(predictor.devices)
  with tqdm.tqdm(total=len(todo), desc="predict", unit="image", disable=not progress) as bar:
    for start in range(0, len(todo), group):
      chunk = todo[start:start + group]
      for (path, name), result in zip(chunk, predict_group(predictor, [p for p, _ in chunk])):
        _write_image(predictor, path, name, *result, output, fmt, stuff, cut_classes,
                     record(name), settings)
        bar.update(1)
  if count > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices("segjax predict_files: every image written")
  rows, coco = [], export.CocoWriter(descriptor, stuff)
  for name in names:
    with open(record(name), encoding="utf-8") as f:
      done = json.load(f)
    rows.append(done["row"])
    if fmt == "coco":
      coco.extend(done["coco"])
  if process == 0:
    if fmt == "coco":
      files.write_json(os.path.join(output, "annotations.json"), coco.data)
    files.write_json(os.path.join(output, "classes.json"), export.classes_json(descriptor))
    export.write_review(os.path.join(output, "review.csv"), rows)
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


def prediction_settings(predictor: Predictor, fmt: str) -> str:
  """A digest of what decides an image's outputs: the model's source, the prediction and
  post-processing settings and the format. A record with another digest is predicted again."""
  import hashlib  # pylint: disable=import-outside-toplevel
  config = predictor.config
  what = {"model": str(predictor.run.path), "format": fmt,
          "predict": config.predict.to_dict(), "postprocess": config.get("postprocess")}
  return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _recorded_settings(path: str) -> str | None:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f).get("settings")
  except (OSError, ValueError):
    return None


def _write_image(predictor, path, name, predictions, index, probs, output, fmt, stuff,
                 cut_classes, record_path, settings) -> None:
  """One image's outputs, then its record (which marks it done)."""
  config, descriptor = predictor.config, predictor.descriptor
  labels = np.asarray(predictions["semantic"][index], np.int32)
  instance, scores = instance_map(predictions, index, descriptor)
  if "panoptic" in predictions:
    visualize.write_png(export.output_path(output, "panoptic", name, ".png"),
                        visualize.colorize_panoptic(predictions["panoptic"][index], descriptor))
  files.write_atomic(export.output_path(output, "images", name, os.path.splitext(path)[1]),
                     lambda tmp: shutil.copyfile(path, tmp))
  export.write_indexed_png(export.output_path(output, "masks", name, ".png"), labels,
                           descriptor.colormap)
  if instance is not None:
    export.write_instance_png(export.output_path(output, "instances", name, ".png"), instance)
  regions = None
  if fmt == "coco":
    single = export.CocoWriter(descriptor, stuff)
    single.add(os.path.basename(path), labels, instance, scores)
    regions = {"image": single.data["images"][0], "annotations": single.data["annotations"]}
  elif fmt == "labelme":
    files.write_json(export.output_path(output, "labelme", name, ".json"),
                     export.labelme(os.path.basename(path), labels, instance, descriptor, stuff))
  elif fmt == "cutout":
    write_cutouts(output, name, path, probs, labels, instance, cut_classes, config.predict,
                  descriptor)
  # Six decimals: the ranking's precision, and the same digits whichever devices computed it
  # (batches split differently may round the float32 probabilities differently in the last bit).
  row = {"name": name, "uncertainty": round(export.uncertainty(
      probs, config.predict.get("uncertainty", "entropy")), 6),
         "height": labels.shape[0], "width": labels.shape[1]}
  labels_written = {}
  if fmt == "labelme":  # which file a person corrects decides what the folder dataset reads
    for sub, suffix in (("masks", ".png"), ("labelme", ".json")):
      written = export.output_path(output, sub, name, suffix)
      labels_written[os.path.relpath(written, output)] = files.sha256(written)
  files.write_json(record_path, {"row": row, "coco": regions, "settings": settings,
                                 "labels": labels_written})
