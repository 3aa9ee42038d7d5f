"""Pictures of images, labels and predictions, and a run's training curves."""

from __future__ import annotations

import json

import cv2
import numpy as np

from segjax import files
from segjax.data.descriptor import DatasetDescriptor


def denormalize(image: np.ndarray, mean, std) -> np.ndarray:
  """Inverts the input normalisation (`segjax.data.pipeline.prepare_image`) to a uint8 RGB picture."""
  pixels = (np.asarray(image, np.float32) * np.asarray(std) + np.asarray(mean)) * 255.0
  return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def colorize_panoptic(panoptic: np.ndarray, descriptor: DatasetDescriptor) -> np.ndarray:
  """RGB ``[H,W,3]`` uint8 of a panoptic id map: stuff in its class colour, each thing instance in
  its own shade of its class colour (brightness by the golden ratio of its id), outlines between
  segments white; void (the ignore label) white."""
  panoptic = np.asarray(panoptic)
  divisor = descriptor.label_divisor
  semantic, instance = panoptic // divisor, panoptic % divisor
  rgb = descriptor.colorize(semantic).astype(np.float32)
  shade = 0.45 + 0.55 * ((instance * 0.6180339887) % 1.0)
  rgb = np.where((instance > 0)[..., None], rgb * shade[..., None], rgb)
  edge = np.zeros(panoptic.shape, bool)
  edge[:-1] |= panoptic[:-1] != panoptic[1:]
  edge[:, :-1] |= panoptic[:, :-1] != panoptic[:, 1:]
  rgb[edge & (instance > 0)] = 255
  return rgb.astype(np.uint8)


TITLE_HEIGHT = 22
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _text(canvas: np.ndarray, text: str, origin, scale: float = 0.45) -> None:
  cv2.putText(canvas, text, origin, FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)


OUTLINE = (40, 40, 40)


def panel(
  picture: np.ndarray, title: str, height: int, labels: np.ndarray | None = None
) -> np.ndarray:
  """``picture`` scaled (nearest neighbour, whole pixels visible) to ``height`` rows, with
  ``title`` above it on white; with ``labels`` (the map ``picture`` draws), the boundaries between
  regions outlined in dark grey on the last row/column of the scaled pixels before each change."""
  factor = max(1, height // picture.shape[0])
  picture = np.repeat(np.repeat(picture, factor, 0), factor, 1)
  if labels is not None and factor > 1:
    big = np.repeat(np.repeat(labels, factor, 0), factor, 1)
    edge = np.zeros(big.shape, bool)
    edge[:, :-1] |= (big[:, :-1] != big[:, 1:]) & (
      np.arange(big.shape[1] - 1) % factor == factor - 1
    )
    edge[:-1] |= (big[:-1] != big[1:]) & (np.arange(big.shape[0] - 1) % factor == factor - 1)[
      :, None
    ]
    picture = np.where(edge[..., None], np.array(OUTLINE, np.uint8), picture)
  canvas = np.full((TITLE_HEIGHT + picture.shape[0], picture.shape[1], 3), 255, np.uint8)
  canvas[TITLE_HEIGHT:] = picture
  _text(canvas, title, (4, TITLE_HEIGHT - 7))
  return canvas


def legend(descriptor: DatasetDescriptor, classes, width: int) -> np.ndarray:
  """Rows of colour swatches with class names (``classes``: ids), wrapped at ``width`` pixels."""
  entries = [(descriptor.colormap[c], descriptor.class_names[c]) for c in classes]
  entries.append(((255, 255, 255), "ignored"))
  rows, row, x = [], [], 4
  for colour, name in entries:
    size = 18 + 8 + cv2.getTextSize(name, FONT, 0.45, 1)[0][0] + 14
    if row and x + size > width:
      rows.append(row)
      row, x = [], 4
    row.append((x, colour, name))
    x += size
  rows.append(row)
  canvas = np.full((22 * len(rows) + 4, width, 3), 255, np.uint8)
  for r, row in enumerate(rows):
    y = 4 + 22 * r
    for x, colour, name in row:
      cv2.rectangle(canvas, (x, y), (x + 17, y + 17), tuple(int(v) for v in colour), -1)
      cv2.rectangle(canvas, (x, y), (x + 17, y + 17), (0, 0, 0), 1)
      _text(canvas, name, (x + 24, y + 14))
  return canvas


def side_by_side(
  image: np.ndarray,
  prediction: np.ndarray,
  descriptor: DatasetDescriptor,
  label: np.ndarray | None = None,
  panoptic: bool = False,
  height: int = 256,
) -> np.ndarray:
  """A figure of one prediction: titled panels "image", "ground truth" (if given), "prediction"
  (each in the dataset's class colours, regions outlined; panoptic id maps with `panoptic`, each
  instance its own shade; the prediction titled with the image's mIoU) and, with a ground truth,
  "errors" (the image in grey, wrongly predicted pixels red),
  scaled by whole pixels to about ``height`` rows; below them a legend of the classes shown."""
  colorize = (lambda x: colorize_panoptic(x, descriptor)) if panoptic else descriptor.colorize
  divisor = descriptor.label_divisor if panoptic else 1
  panels = [("image", image, None)]
  if label is not None:
    panels.append(("ground truth", colorize(label), label))
  title = "prediction"
  if label is not None:
    score = image_miou(
      prediction // divisor, label // divisor, descriptor.num_classes, descriptor.ignore_label
    )  # void: class ignore_label in both maps
    title = f"prediction (mIoU {score:.2f})" if score is not None else title
  panels.append((title, colorize(prediction), prediction))
  if label is not None:
    grey = np.repeat(np.mean(image, -1, keepdims=True), 3, -1) * 0.6 + 100
    wrong = (prediction // divisor != label // divisor) & (
      label // divisor != descriptor.ignore_label
    )
    panels.append(
      ("errors (red)", np.where(wrong[..., None], (230, 0, 0), grey).astype(np.uint8), None)
    )
  panels = [panel(p, title, height, labels) for title, p, labels in panels]
  gap = np.full((panels[0].shape[0], 6, 3), 255, np.uint8)
  top = np.concatenate(sum(([p, gap] for p in panels), [])[:-1], axis=1)
  shown = [prediction // divisor] + ([label // divisor] if label is not None else [])
  classes = sorted({int(c) for m in shown for c in np.unique(m) if c < descriptor.num_classes})
  return np.concatenate([top, legend(descriptor, classes, top.shape[1])], axis=0)


def image_miou(
  prediction: np.ndarray, label: np.ndarray, num_classes: int, ignore_label: int
) -> float | None:
  """The mean IoU of one image over the classes in its ground truth or its prediction (labelled
  pixels only; `segjax.metrics`); None without labelled pixels."""
  from segjax import metrics  # pylint: disable=import-outside-toplevel

  cm = metrics.confusion_matrix(prediction, label, num_classes, ignore_label=ignore_label)
  score = metrics.mean_iou(np.asarray(cm))
  return None if np.isnan(score) else score


def contact_sheet(pictures: list[np.ndarray], gap: int = 8) -> np.ndarray:
  """``pictures`` (RGB, any sizes) one under the other on white, ``gap`` rows apart: every
  prediction of a split in one file."""
  width = max(p.shape[1] for p in pictures)
  rows = []
  for picture in pictures:
    rows.append(
      np.pad(picture, ((0, gap), (0, width - picture.shape[1]), (0, 0)), constant_values=255)
    )
  return np.concatenate(rows)[:-gap]


def panel_offsets(
  num_panels: int, image_width: int, height: int = 256, image_height: int | None = None
) -> list[tuple[int, int]]:
  """``(row, column)`` of the top-left pixel of each panel of a `side_by_side` figure."""
  factor = max(1, height // (image_height or image_width))
  width = image_width * factor
  return [(TITLE_HEIGHT, i * (width + 6)) for i in range(num_panels)]


def write_png(path: str, rgb: np.ndarray) -> str:
  """Writes an RGB (or RGBA) uint8 picture atomically (temporary file, then rename)."""
  order = cv2.COLOR_RGBA2BGRA if rgb.shape[-1] == 4 else cv2.COLOR_RGB2BGR

  def write(tmp):
    if not cv2.imwrite(tmp, cv2.cvtColor(rgb, order)):
      raise OSError(f"Could not write {path}.")

  return files.write_atomic(path, write)


def read_curves(metrics_jsonl: str, keys) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """``{key: (steps, values)}`` of each of ``keys`` (e.g. ``"train/loss"``,
  ``"validation/mean_iou"``) in a run's ``metrics.jsonl``; non-finite values are left out."""
  curves = {key: ([], []) for key in keys}
  with open(metrics_jsonl) as f:
    for line in f:
      row = json.loads(line)
      for key in keys:
        value = row.get(key)
        if value is not None and np.isfinite(value):
          curves[key][0].append(row["step"])
          curves[key][1].append(value)
  return {k: (np.asarray(s), np.asarray(v, np.float64)) for k, (s, v) in curves.items()}


CURVE_COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189))


def _nice_ticks(low: float, high: float, count: int = 5) -> np.ndarray:
  raw = (high - low) / max(count - 1, 1) or 1.0
  step = min(
    (
      m * 10 ** np.floor(np.log10(raw))
      for m in (1, 2, 2.5, 5, 10)
      if m * 10 ** np.floor(np.log10(raw)) >= raw
    )
  )
  return np.arange(np.ceil(low / step) * step, high + step * 1e-6, step)


def line_plot(
  curves: dict[str, tuple[np.ndarray, np.ndarray]],
  title: str,
  size=(300, 460),
  y_range=None,
  x_label: str = "step",
  legend: str = "upper left",
) -> np.ndarray:
  """One plot of ``curves`` (``{label: (x, y)}``) against ``x_label``: axes with ticks, a legend
  (``"upper left"`` or ``"lower right"``), a title; RGB, ``size`` = (height, width). A curve of
  at most 20 points also marks each point."""
  height, width = size
  left, right, top, bottom = 52, 12, TITLE_HEIGHT + 6, 34
  canvas = np.full((height, width, 3), 255, np.uint8)
  xs = np.concatenate([x for x, _ in curves.values() if len(x)] or [np.zeros(1)])
  ys = np.concatenate([y for _, y in curves.values() if len(y)] or [np.zeros(1)])
  x0, x1 = 0.0, float(max(xs.max(), 1))
  y0, y1 = y_range or (float(min(ys.min(), 0.0)), float(ys.max()) * 1.05 or 1.0)
  to_px = lambda x, y: (
    int(round(left + (x - x0) / (x1 - x0) * (width - left - right))),
    int(round(height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom))),
  )
  for y in _nice_ticks(y0, y1):
    _, py = to_px(x0, y)
    cv2.line(canvas, (left, py), (width - right, py), (230, 230, 230), 1)
    _text(canvas, f"{y:g}", (4, py + 4), 0.38)
  for x in _nice_ticks(x0, x1):
    px, _ = to_px(x, y0)
    cv2.line(canvas, (px, height - bottom), (px, height - bottom + 4), (0, 0, 0), 1)
    _text(canvas, f"{x:g}", (px - 10, height - bottom + 17), 0.38)
  cv2.rectangle(canvas, (left, top), (width - right, height - bottom), (0, 0, 0), 1)
  _text(canvas, x_label, (width // 2 - 3 * len(x_label), height - 4), 0.4)
  _text(canvas, title, (4, TITLE_HEIGHT - 7))
  for i, (label, (x, y)) in enumerate(curves.items()):
    colour = CURVE_COLOURS[i % len(CURVE_COLOURS)]
    points = np.array([to_px(a, b) for a, b in zip(x, y)], np.int32)
    if len(points) > 1:
      cv2.polylines(canvas, [points], False, colour, 2, cv2.LINE_AA)
    for point in points if len(points) <= 20 else ():
      cv2.circle(canvas, tuple(int(v) for v in point), 3, colour, -1, cv2.LINE_AA)
    if legend == "lower right":
      lx = width - right - 46 - 7 * max(len(k) for k in curves)
      ly = height - bottom - 10 - 16 * (len(curves) - 1 - i)
    else:
      lx, ly = left + 10, top + 14 + 16 * i
    cv2.line(canvas, (lx, ly), (lx + 20, ly), colour, 2)
    _text(canvas, label, (lx + 26, ly + 4), 0.4)
  return canvas


def training_curves(metrics_jsonl: str, split: str = "validation") -> np.ndarray:
  """A run's training curve: the training loss, and the mIoU of the training batches and of
  ``split`` (wherever the run evaluated it), side by side; RGB."""
  curves = read_curves(metrics_jsonl, ("train/loss", "train/mean_iou", f"{split}/mean_iou"))
  loss = line_plot({"training loss": curves["train/loss"]}, "loss")
  miou = line_plot(
    {"training batches": curves["train/mean_iou"], split: curves[f"{split}/mean_iou"]},
    "mIoU",
    y_range=(0.0, 1.0),
  )
  gap = np.full((loss.shape[0], 8, 3), 255, np.uint8)
  return np.concatenate([loss, gap, miou], axis=1)
