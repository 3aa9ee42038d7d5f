"""Cut-outs for photo editing: the subject as an RGBA image whose alpha is the model's probability,
its edges refined on the image.

`alpha_matte` turns a class probability map into an alpha matte: the guided filter (He, Sun and
Tang, "Guided Image Filtering", ECCV 2010 / TPAMI 2013; the colour-guide form, their Eq. 14–16)
with the image as guide makes the probability's soft, blocky transition follow the image's own
edges (each side of an image edge takes the probability's local mean on that side, so the matte
jumps where the image does); an optional Gaussian feather softens it again. `cutouts` makes one RGBA image per chosen
class (alpha: that class's probability) or instance (alpha: its class's probability inside the
instance, grown by the filter's radius so that refinement can reach the true edge).
`experiments/predict.py --format=cutout` writes them as ``cutouts/NAME_CLASS.png`` and
``cutouts/NAME_CLASS_N.png``.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from segjax import prelabels
from segjax import visualize

REFINEMENTS = ("guided", "none")


def box_mean(x: np.ndarray, radius: int) -> np.ndarray:
  """The mean over the ``(2r+1)²`` window around each pixel, the window clipped at the borders
  (each pixel averages the pixels that exist), of ``x`` ``[H,W,...]``."""
  size = (2 * radius + 1, 2 * radius + 1)
  total = cv2.boxFilter(
    x.astype(np.float64), -1, size, normalize=False, borderType=cv2.BORDER_CONSTANT
  )
  count = cv2.boxFilter(
    np.ones(x.shape[:2], np.float64), -1, size, normalize=False, borderType=cv2.BORDER_CONSTANT
  )
  return total / (count[..., None] if total.ndim == 3 else count)


def guided_filter(guide: np.ndarray, source: np.ndarray, radius: int, eps: float) -> np.ndarray:
  """He et al.'s guided filter of ``source`` ``[H,W]`` with the colour ``guide`` ``[H,W,3]`` (values
  in [0, 1]): in each window, ``source ≈ a·guide + b`` by ridge regression (``eps`` the
  regulariser), ``a = (Σ + eps·I)⁻¹ cov(guide, source)``, ``b = mean(source) − a·mean(guide)``; the
  output is ``mean(a)·guide + mean(b)``, the means over the windows covering each pixel."""
  guide = np.asarray(guide, np.float64)
  source = np.asarray(source, np.float64)
  mean_i = box_mean(guide, radius)  # [H, W, 3]
  mean_p = box_mean(source, radius)  # [H, W]
  cov_ip = box_mean(guide * source[..., None], radius) - mean_i * mean_p[..., None]
  outer = np.stack(
    [box_mean(guide[..., i] * guide[..., j], radius) for i in range(3) for j in range(3)], axis=-1
  ).reshape(*guide.shape[:2], 3, 3)
  sigma = outer - mean_i[..., :, None] * mean_i[..., None, :] + eps * np.eye(3)
  a = np.linalg.solve(sigma, cov_ip[..., None])[..., 0]  # [H, W, 3]
  b = mean_p - np.sum(a * mean_i, axis=-1)
  return np.sum(box_mean(a, radius) * guide, axis=-1) + box_mean(b, radius)


def alpha_matte(
  image: np.ndarray,
  probability: np.ndarray,
  *,
  refine: str = "guided",
  radius: int = 8,
  eps: float = 1e-3,
  feather: float = 0.0,
) -> np.ndarray:
  """An alpha matte in [0, 1] ``[H,W]`` from a class ``probability`` ``[H,W]`` and the ``image``
  (``[H,W,3]`` uint8 RGB, or ``[H,W]``/``[H,W,1]`` grey): refined by `guided_filter`
  (``refine="guided"``; ``"none"`` keeps the probability), then blurred by a Gaussian of
  ``feather`` pixels (standard deviation; 0: none)."""
  if refine not in REFINEMENTS:
    raise ValueError(f"config.predict.cutout_refine must be one of {REFINEMENTS}, not {refine!r}")
  alpha = np.asarray(probability, np.float64)
  if refine == "guided":
    guide = np.asarray(image, np.float64) / 255.0
    if guide.ndim == 2 or guide.shape[-1] == 1:
      guide = np.repeat(guide.reshape(*alpha.shape, 1), 3, axis=-1)
    alpha = guided_filter(guide[..., :3], alpha, int(radius), float(eps))
  if feather > 0:
    alpha = cv2.GaussianBlur(alpha, (0, 0), float(feather))
  return np.clip(alpha, 0.0, 1.0)


def rgba(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
  """``image`` (uint8 RGB or grey) with ``alpha`` in [0, 1] as its fourth channel, uint8 RGBA."""
  image = np.asarray(image)
  if image.ndim == 2 or image.shape[-1] == 1:
    image = np.repeat(image.reshape(*alpha.shape, 1), 3, axis=-1)
  return np.concatenate(
    [image[..., :3].astype(np.uint8), np.rint(alpha * 255.0).astype(np.uint8)[..., None]], axis=-1
  )


def cutouts(
  image: np.ndarray,
  probs: np.ndarray,
  labels: np.ndarray,
  instance: np.ndarray | None,
  classes: Sequence[int],
  *,
  refine: str = "guided",
  radius: int = 8,
  eps: float = 1e-3,
  feather: float = 0.0,
) -> list[tuple[int, int | None, np.ndarray]]:
  """``[(class, instance number or None, RGBA uint8)]``: for each of ``classes`` present in
  ``labels``, the image with alpha from `alpha_matte` of ``probs[..., class]``; where ``instance``
  (1..M) holds instances of that class, one cut-out per instance instead, its alpha zero beyond
  the instance's pixels grown by ``radius``."""
  out = []
  for cls in classes:
    if not np.any(labels == cls):
      continue
    alpha = alpha_matte(
      image, probs[..., cls], refine=refine, radius=radius, eps=eps, feather=feather
    )
    numbers = (
      [] if instance is None else [int(n) for n in np.unique(instance[labels == cls]) if n > 0]
    )
    if not numbers:
      out.append((int(cls), None, rgba(image, alpha)))
      continue
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    for number in numbers:
      region = cv2.dilate((instance == number).astype(np.uint8), kernel) > 0
      out.append((int(cls), number, rgba(image, np.where(region, alpha, 0.0))))
  return out


def cutout_classes(asked, descriptor) -> list[int]:
  """The class ids ``config.predict.cutout_classes`` names (names or ids; default: every class but
  the background), each checked."""
  if not asked:
    background = prelabels.background_class(descriptor)
    return [c for c in range(descriptor.num_classes) if c != background]
  ids = []
  for item in asked:
    if isinstance(item, str) and item in descriptor.class_names:
      ids.append(list(descriptor.class_names).index(item))
    elif isinstance(item, int) and 0 <= item < descriptor.num_classes:
      ids.append(item)
    else:
      raise ValueError(
        f"config.predict.cutout_classes: {item!r} is neither a class name "
        f"({', '.join(descriptor.class_names)}) nor an id below "
        f"{descriptor.num_classes}"
      )
  return ids


def write_cutouts(
  output, name, path, probs, labels, instance, classes, settings, descriptor
) -> list[str]:
  """The cut-outs of one image (`segjax.cutout.cutouts`) as ``cutouts/NAME_CLASS[_N].png``."""
  from segjax.data import folder  # pylint: disable=import-outside-toplevel

  image = folder.read_image(path)
  if image.dtype != np.uint8:  # 16-bit or float pictures: shown at 8 bits
    image = np.clip(image.astype(np.float64) / max(float(image.max()), 1e-12) * 255, 0, 255)
  pieces = cutouts(
    image.astype(np.uint8),
    probs,
    labels,
    instance,
    classes,
    refine=settings.get("cutout_refine", "guided"),
    radius=settings.get("cutout_radius", 8),
    eps=settings.get("cutout_eps", 1e-3),
    feather=settings.get("cutout_feather", 0.0),
  )
  written = []
  for cls, number, picture in pieces:
    stem = f"{name}_{prelabels.safe_name(descriptor.class_names[cls])}" + (
      f"_{number}" if number is not None else ""
    )
    written.append(
      visualize.write_png(prelabels.output_path(output, "cutouts", stem, ".png"), picture)
    )
  return written
