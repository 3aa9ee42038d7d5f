"""Pictures of images, labels and predictions."""
from __future__ import annotations


import cv2
import numpy as np

from segjax import files
from segjax.data.descriptor import DatasetDescriptor


def denormalize(image: np.ndarray, mean, std) -> np.ndarray:
  """Inverts ``ops.normalize`` to a uint8 RGB picture."""
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


def _panel(picture: np.ndarray, title: str, height: int,
           labels: np.ndarray | None = None) -> np.ndarray:
  """``picture`` scaled (nearest neighbour, whole pixels visible) to ``height`` rows, with
  ``title`` above it on white; with ``labels`` (the map ``picture`` draws), the boundaries between
  regions outlined in dark grey on the last row/column of the scaled pixels before each change."""
  factor = max(1, height // picture.shape[0])
  picture = np.repeat(np.repeat(picture, factor, 0), factor, 1)
  if labels is not None and factor > 1:
    big = np.repeat(np.repeat(labels, factor, 0), factor, 1)
    edge = np.zeros(big.shape, bool)
    edge[:, :-1] |= (big[:, :-1] != big[:, 1:]) & (np.arange(big.shape[1] - 1) % factor
                                                   == factor - 1)
    edge[:-1] |= (big[:-1] != big[1:]) & (np.arange(big.shape[0] - 1) % factor
                                          == factor - 1)[:, None]
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


def side_by_side(image: np.ndarray, prediction: np.ndarray, descriptor: DatasetDescriptor,
                 label: np.ndarray | None = None, panoptic: bool = False,
                 height: int = 256) -> np.ndarray:
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
    score = image_miou(prediction // divisor, label // divisor, descriptor.num_classes,
                       descriptor.ignore_label // divisor if panoptic else descriptor.ignore_label)
    title = f"prediction (mIoU {score:.2f})" if score is not None else title
  panels.append((title, colorize(prediction), prediction))
  if label is not None:
    grey = np.repeat(np.mean(image, -1, keepdims=True), 3, -1) * 0.6 + 100
    wrong = (prediction // divisor != label // divisor) & (label != descriptor.ignore_label)
    panels.append(("errors (red)", np.where(wrong[..., None], (230, 0, 0), grey).astype(np.uint8),
                   None))
  panels = [_panel(p, title, height, labels) for title, p, labels in panels]
  gap = np.full((panels[0].shape[0], 6, 3), 255, np.uint8)
  top = np.concatenate(sum(([p, gap] for p in panels), [])[:-1], axis=1)
  shown = [prediction // divisor] + ([label // divisor] if label is not None else [])
  classes = sorted({int(c) for m in shown for c in np.unique(m) if c < descriptor.num_classes})
  return np.concatenate([top, legend(descriptor, classes, top.shape[1])], axis=0)


def image_miou(prediction: np.ndarray, label: np.ndarray, num_classes: int,
               ignore_label: int) -> float | None:
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
    rows.append(np.pad(picture, ((0, gap), (0, width - picture.shape[1]), (0, 0)),
                       constant_values=255))
  return np.concatenate(rows)[:-gap]


def panel_offsets(num_panels: int, image_width: int, height: int = 256,
                  image_height: int | None = None) -> list[tuple[int, int]]:
  """``(row, column)`` of the top-left pixel of each panel of a `side_by_side` figure."""
  factor = max(1, height // (image_height or image_width))
  width = image_width * factor
  return [(TITLE_HEIGHT, i * (width + 6)) for i in range(num_panels)]


def write_png(path: str, rgb: np.ndarray) -> None:
  """Writes an RGB picture atomically (temporary file, then rename)."""
  def write(tmp):
    if not cv2.imwrite(tmp, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
      raise OSError(f"Could not write {path}.")
  files.write_atomic(path, write)
