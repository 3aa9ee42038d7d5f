"""Prediction with a trained model: pictures of a split, and pre-labels of image files.

A `Predictor` wraps a trained model (`segjax.runs.Run`: from a run directory or an exported file)
with its ``config.postprocess`` chain and ``config.predict`` settings. Semantic models (whose chain
reads only ``logits``) predict any image size through the padded sliding window and test-time
augmentation (`segjax.inference`); models with more heads (Panoptic-DeepLab) predict whole images.
"""
from __future__ import annotations

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
    self.logits_fn = jax.jit(
        lambda x: model.apply(variables, x, train=False, **apply_kwargs)["logits"])
    self._compiled = jax.jit(lambda x: self.chain.apply_compiled(
        model.apply(variables, x, train=False, **apply_kwargs)))
    self.semantic_only = self.chain.reads() <= {"logits"}
    window, tta = settings.get("window"), (tuple(settings.get("scales", (1.0,))) != (1.0,)
                                           or settings.get("flip", False))
    if (window or tta) and not self.semantic_only:
      raise ValueError(f"config.predict.window / scales / flip apply to semantic models; this "
                       f"chain ({self.chain.spec!r}) reads {sorted(self.chain.reads())}.")

  def predict_batch(self, images: np.ndarray) -> dict:
    """Predictions (numpy, every post-processing step applied) of a batch of normalised images."""
    predictions = jax.device_get(self._compiled(np.asarray(images, np.float32)))
    return self.chain.apply_host(predictions)

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
  """Pictures of ``config.predict.num_images`` images of ``config.predict.split``: image, ground
  truth and prediction (panoptic maps when the chain makes them), one file each, and all of them
  in ``contact_sheet.png``."""
  config, descriptor = predictor.config, predictor.descriptor
  os.makedirs(output_dir, exist_ok=True)
  ds, _ = pipeline.eval_dataset(source, config.data, config.predict.split,
                                local_batch_size=config.predict.get("batch_size", 8))
  paths, pictures = [], []
  for batch in pipeline.as_numpy(ds, source):
    if len(paths) >= config.predict.num_images:
      break
    predictions = predictor.predict_batch(batch["image"])
    panoptic = "panoptic" in predictions and "panoptic" in batch
    shown, truth = ((predictions["panoptic"], batch["panoptic"]) if panoptic
                    else (predictions["semantic"], batch["semantic"]))
    for i in np.flatnonzero(batch["valid"])[:config.predict.num_images - len(paths)]:
      image = visualize.denormalize(batch["image"][i], config.data.mean, config.data.std)
      picture = visualize.side_by_side(image, shown[i], descriptor, truth[i], panoptic=panoptic)
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


def predict_file(predictor: Predictor, path: str) -> tuple[dict, np.ndarray]:
  """``(predictions, class probabilities [H,W,C])`` of one image file (its alpha channel
  dropped), normalised as the run's training images were."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from segjax.data import folder  # pylint: disable=import-outside-toplevel
  raw = folder.read_image(path)
  image = raw[..., :3] if raw.shape[-1] == 4 else raw
  normalised = pipeline.prepare_image({"image": tf.constant(image)},
                                      predictor.config.data)["image"].numpy()
  return predictor.predict_image(normalised)


def predict_files(predictor: Predictor, inputs, output: str, fmt: str = "png",
                  progress: bool = True) -> list[dict]:
  """Predicts every file of ``inputs`` and writes pre-labels in ``fmt`` (``png``, ``coco`` or
  ``labelme``) to ``output`` (see `segjax.export`); returns the review rows, least confident
  first."""
  import tqdm  # pylint: disable=import-outside-toplevel

  if fmt not in ("png", "coco", "labelme"):
    raise ValueError(f"--format must be png, coco or labelme, not {fmt!r}")
  config, descriptor = predictor.config, predictor.descriptor
  os.makedirs(output, exist_ok=True)
  stuff = export.export_stuff(descriptor, config.predict.get("export_stuff"))
  coco = export.CocoWriter(descriptor, stuff)
  rows = []
  paths = [inputs] if isinstance(inputs, str) else list(inputs)
  for path in tqdm.tqdm(paths, desc="predict", unit="image", disable=not progress):
    name = export.safe_name(os.path.splitext(os.path.basename(path))[0])
    predictions, probs = predict_file(predictor, path)
    labels = np.asarray(predictions["semantic"][0], np.int32)
    instance, scores = instance_map(predictions, 0, descriptor)
    if "panoptic" in predictions:
      visualize.write_png(export.output_path(output, "panoptic", name, ".png"),
                          visualize.colorize_panoptic(predictions["panoptic"][0], descriptor))
    shutil.copyfile(path, export.output_path(output, "images", name, os.path.splitext(path)[1]))
    export.write_indexed_png(export.output_path(output, "masks", name, ".png"), labels,
                             descriptor.colormap)
    if instance is not None:
      export.write_instance_png(export.output_path(output, "instances", name, ".png"), instance)
    if fmt == "coco":
      coco.add(os.path.basename(path), labels, instance, scores)
    elif fmt == "labelme":
      files.write_json(export.output_path(output, "labelme", name, ".json"),
                        export.labelme(os.path.basename(path), labels, instance, descriptor,
                                       stuff))
    rows.append({"name": name, "uncertainty": export.uncertainty(
        probs, config.predict.get("uncertainty", "entropy")),
                 "height": labels.shape[0], "width": labels.shape[1]})
  if fmt == "coco":
    files.write_json(os.path.join(output, "annotations.json"), coco.data)
  files.write_json(os.path.join(output, "classes.json"), export.classes_json(descriptor))
  export.write_review(os.path.join(output, "review.csv"), rows)
  return sorted(rows, key=lambda r: -r["uncertainty"])
