"""Clicks and boxes on one image give a mask: a trained click model or Segment Anything, with the
per-image work (SAM's image embedding; the click model's prepared image) computed once per image
and kept in a memory-bounded cache.

  predictor = interactive.load_predictor("RUN")                     # a click-model run directory
  predictor = interactive.load_predictor("hf-hub:facebook/sam-vit-base")   # or a SAM checkpoint
  mask = predictor.predict(path, points=[(x, y, True), ...], box=(x0, y0, x1, y1))

Points and boxes are in the image's pixels (``x`` to the right, ``y`` down); ``True`` marks a
positive click. `ClickModelPredictor` draws the clicks as the run was trained (the radius of its
``config.step_inputs``) and reads a box as a positive click at its centre, the mask kept inside
the box; `SamPredictor` prompts SAM as its paper does (one click alone: the best of its three
masks by predicted IoU; otherwise one mask) and upsamples the low-resolution mask as transformers'
``post_process_masks`` does.
"""

from __future__ import annotations

import collections
import os
import threading
from typing import Sequence

import numpy as np


class EmbeddingCache:
  """The per-image work of the last images, least recently used dropped first once the entries
  hold more than ``max_bytes``; keyed by file path and modification time."""

  def __init__(self, max_bytes: int = 512 * 2**20):
    self.max_bytes = max_bytes
    self._entries: collections.OrderedDict = collections.OrderedDict()
    self._lock = threading.Lock()
    self.hits = self.misses = 0

  def get(self, path: str, compute):
    key = (os.path.abspath(path), os.stat(path).st_mtime_ns)
    with self._lock:
      if key in self._entries:
        self._entries.move_to_end(key)
        self.hits += 1
        return self._entries[key][0]
    entry = compute(path)
    size = sum(np.asarray(v).nbytes for v in entry.values() if hasattr(v, "shape"))
    with self._lock:
      self.misses += 1
      self._entries[key] = (entry, size)
      while len(self._entries) > 1 and sum(s for _, s in self._entries.values()) > self.max_bytes:
        self._entries.popitem(last=False)
    return entry

  def __len__(self):
    return len(self._entries)


def _check_prompts(points, box, shape):
  height, width = shape
  points = [(float(x), float(y), bool(p)) for x, y, p in (points or ())]
  for x, y, _ in points:
    if not (0 <= x < width and 0 <= y < height):
      raise ValueError(f"click ({x:g}, {y:g}) is outside the {width}x{height} image")
  if box is not None:
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height):
      raise ValueError(f"box {box} is not inside the {width}x{height} image")
    box = (x0, y0, x1, y1)
  if not points and box is None:
    raise ValueError("give at least one click or a box")
  return points, box


class ClickModelPredictor:
  """A trained click model (`segjax.models.interactive`, a run directory) answering clicks."""

  kind = "click model"

  def __init__(self, run, cache: EmbeddingCache | None = None, max_clicks: int = 64):
    from segjax import predict  # pylint: disable=import-outside-toplevel
    from segjax import registry  # pylint: disable=import-outside-toplevel

    self.predictor = predict.Predictor(run)
    spec = run.config.get("step_inputs") or ""
    if not spec:
      raise ValueError(f"{run.path}: not a click model's run (config.step_inputs is empty)")
    _, _, settings = registry.parse_spec(spec)
    self.radius = float(settings.get("radius", 5.0))
    self.max_clicks = max_clicks
    self.cache = cache or EmbeddingCache()

  def prepare(self, path: str) -> dict:
    from segjax import predict  # pylint: disable=import-outside-toplevel

    return {"image": predict.read_input(self.predictor, path)}

  def predict(self, path: str, points: Sequence = (), box=None, previous=None) -> np.ndarray:
    """The object's mask (bool ``[H, W]``) of the clicks and box on the image file ``path``;
    ``previous`` is the object's mask before these clicks (default empty), as in training."""
    from segjax.interactive import training  # pylint: disable=import-outside-toplevel

    image = self.cache.get(path, self.prepare)["image"]
    points, box = _check_prompts(points, box, image.shape[:2])
    if box is not None:
      x0, y0, x1, y1 = box
      points = [((x0 + x1) / 2, (y0 + y1) / 2, True)] + points
    points = points[-self.max_clicks :]
    encoded = np.zeros((1, self.max_clicks, 3), np.int32)
    for i, (x, y, positive) in enumerate(points):
      encoded[0, i] = (int(y), int(x), 1 if positive else -1)
    if previous is None:
      previous = np.zeros(image.shape[:2], np.float32)
    elif np.shape(previous) != image.shape[:2]:
      raise ValueError(f"previous mask {np.shape(previous)} is not the image's {image.shape[:2]}")
    previous = np.asarray(previous, np.float32)[None]
    inputs = np.asarray(training.prompt_input(image[None], encoded, previous, self.radius))
    mask = self.predictor.predict_batch(inputs)["semantic"][0] == 1
    if box is not None:
      inside = np.zeros_like(mask)
      inside[int(y0) : int(np.ceil(y1)) + 1, int(x0) : int(np.ceil(x1)) + 1] = True
      mask &= inside
    return mask


class SamPredictor:
  """Segment Anything (`segjax.models.sam`) answering clicks and boxes."""

  kind = "sam"

  def __init__(self, model, variables, cache: EmbeddingCache | None = None):
    import jax  # pylint: disable=import-outside-toplevel

    from segjax.models import sam  # pylint: disable=import-outside-toplevel

    self.model, self.variables = model, variables
    self.size = dict(model.vision or {}).get("image_size", 1024)
    self.cache = cache or EmbeddingCache()
    self._embed = jax.jit(lambda v, x: model.apply(v, x, method=sam.Sam.embed_image))
    self._decode = jax.jit(
      lambda v, e, p, l, b, multimask: model.apply(
        v, e, p, l, b, multimask_output=multimask, method=sam.Sam.decode
      ),
      static_argnums=(5,),
    )

  def prepare(self, path: str) -> dict:
    from segjax.data import folder  # pylint: disable=import-outside-toplevel
    from segjax.models import sam  # pylint: disable=import-outside-toplevel

    raw = folder.read_image(path)
    rgb = raw[..., :3] if raw.shape[-1] >= 3 else np.repeat(raw[..., :1], 3, axis=-1)
    if rgb.dtype == np.uint16:
      rgb = rgb / 257.0
    image, scale = sam.prepare_image(rgb, self.size)
    embeddings = np.asarray(self._embed(self.variables, image[None]))
    return {"embeddings": embeddings, "scale": scale, "shape": np.asarray(rgb.shape[:2])}

  def predict(self, path: str, points: Sequence = (), box=None) -> np.ndarray:
    import cv2  # pylint: disable=import-outside-toplevel

    entry = self.cache.get(path, self.prepare)
    height, width = (int(v) for v in entry["shape"])
    points, box = _check_prompts(points, box, (height, width))
    scale = entry["scale"]
    coords = np.asarray([(x * scale, y * scale) for x, y, _ in points], np.float32)
    labels = np.asarray([1 if p else 0 for _, _, p in points], np.int32)
    boxes = None if box is None else np.asarray(box, np.float32)[None, None] * scale
    multimask = len(points) == 1 and box is None
    out = self._decode(
      self.variables,
      entry["embeddings"],
      coords[None, None] if len(points) else None,
      labels[None, None] if len(points) else None,
      boxes,
      multimask,
    )
    masks, iou = np.asarray(out["pred_masks"])[0, 0], np.asarray(out["iou_scores"])[0, 0]
    low = masks[int(np.argmax(iou))]
    full = cv2.resize(low, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
    crop = full[: int(round(height * scale)), : int(round(width * scale))]
    return cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR) > 0


def load_predictor(source: str, cache_bytes: int = 512 * 2**20):
  """A `ClickModelPredictor` of a click-model run directory, or a `SamPredictor` of a SAM
  checkpoint (a directory with ``config.json`` naming ``SamModel``, or a hub name)."""
  from segjax import models  # pylint: disable=import-outside-toplevel
  from segjax import runs  # pylint: disable=import-outside-toplevel

  cache = EmbeddingCache(cache_bytes)
  if os.path.isdir(source) and os.path.exists(os.path.join(source, "descriptor.json")):
    return ClickModelPredictor(runs.load(source), cache)
  model, variables = models.from_pretrained(source)
  if type(model).__name__ != "Sam":
    raise ValueError(f"{source}: neither a click model's run nor a SAM checkpoint")
  return SamPredictor(model, variables, cache)
