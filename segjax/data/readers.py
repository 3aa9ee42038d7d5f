"""Reading one image or mask file of a folder dataset as stored (8/16-bit, grey/RGB/RGBA,
palette or colour masks, GeoTIFF georeference), each failure a `BadFileError` naming the file."""

from __future__ import annotations

import os

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


class BadFileError(ValueError):
  """A file of a folder dataset that cannot be used; the message names it."""


def read_image(path: str) -> np.ndarray:
  """``[H,W,C]`` uint8/uint16 in RGB(A) order (C = 1, 3 or 4), as stored."""
  data = np.fromfile(path, np.uint8) if os.path.exists(path) else None
  image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data is not None and data.size else None
  if image is None:
    raise BadFileError(f"{path}: unreadable image (not a PNG/JPEG/TIFF OpenCV can decode)")
  if image.dtype not in (np.uint8, np.uint16):
    raise BadFileError(f"{path}: pixel type {image.dtype} (8- or 16-bit integers expected)")
  if image.ndim == 2:
    image = image[..., None]
  elif image.shape[-1] == 3:
    image = image[..., ::-1]  # BGR -> RGB
  elif image.shape[-1] == 4:
    image = image[..., [2, 1, 0, 3]]  # BGRA -> RGBA
  return np.ascontiguousarray(image)


def image_size(path: str) -> tuple[int, int]:
  """``(width, height)`` of an image file from its header alone (nothing is decoded, so a
  decompression bomb costs nothing to measure)."""
  import warnings  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel

  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      with Image.open(path) as pil:
        return pil.size
  except Image.DecompressionBombError as e:  # PIL's own bound, over 2x Image.MAX_IMAGE_PIXELS
    raise BadFileError(f"{path}: {e}") from None
  except (OSError, ValueError, SyntaxError) as e:
    raise BadFileError(f"{path}: unreadable image header ({e})") from None


def read_georeference(path: str) -> tuple[str, tuple[float, ...]] | None:
  """``(CRS as WKT, the affine transform's six coefficients a, b, c, d, e, f)`` of a georeferenced
  TIFF (rasterio), or None: another format, no CRS, or rasterio not installed."""
  if os.path.splitext(path)[1].lower() not in (".tif", ".tiff"):
    return None
  try:
    import rasterio  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  import warnings  # pylint: disable=import-outside-toplevel

  try:
    with warnings.catch_warnings():  # a plain TIFF is no error here
      warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
      dataset = rasterio.open(path)
    with dataset:
      if dataset.crs is None:
        return None
      return dataset.crs.to_wkt(), tuple(float(v) for v in tuple(dataset.transform)[:6])
  except rasterio.errors.RasterioIOError:
    return None  # unreadable: reported with its name when the examples are generated


def read_mask(path: str, colours: dict[tuple[int, int, int], int] | None = None) -> np.ndarray:
  """Class ids ``[H,W]`` (int32) from a grey, palette (index = id) or RGB colour PNG."""
  from PIL import Image  # pylint: disable=import-outside-toplevel  (OpenCV expands palettes)

  try:
    with Image.open(path) as pil:
      if pil.mode == "P":
        return np.asarray(pil, np.int32)
  except (OSError, ValueError) as e:
    raise BadFileError(f"{path}: unreadable mask ({e})") from e
  mask = read_image(path)
  if mask.shape[-1] == 1:
    return mask[..., 0].astype(np.int32)
  if not colours:
    raise BadFileError(f"{path}: a colour mask needs the class colours in classes.json")
  rgb = mask[..., :3].astype(np.int64)
  codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
  lookup = {(r << 16) | (g << 8) | b: i for (r, g, b), i in colours.items()}
  out = np.full(codes.shape, -1, np.int32)
  for code, class_id in lookup.items():
    out[codes == code] = class_id
  if (out < 0).any():
    y, x = np.argwhere(out < 0)[0]
    raise BadFileError(
      f"{path}: colour {tuple(int(v) for v in rgb[y, x])} at (row {y}, column {x}) "
      "is not a class colour in classes.json"
    )
  return out


def read_labelme(path: str, class_names, size: tuple[int, int]) -> np.ndarray:
  """The class map ``[H,W]`` (int32) of a labelme document: each ``polygon`` or ``rectangle``
  shape filled with the id of its ``label`` (a class name), later shapes over earlier ones,
  pixels no shape covers 0. ``size`` (H, W) is the image's; the document must agree."""
  import json  # pylint: disable=import-outside-toplevel

  try:
    with open(path) as f:
      document = json.load(f)
    shapes = document["shapes"]
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise BadFileError(f"{path}: not a labelme document ({e})") from e
  stated = (document.get("imageHeight"), document.get("imageWidth"))
  if None not in stated and tuple(stated) != tuple(size):
    raise BadFileError(
      f"{path}: imageHeight x imageWidth {stated[0]}x{stated[1]} differs from "
      f"the image's {size[0]}x{size[1]}"
    )
  ids = {name: i for i, name in enumerate(class_names)}
  out = np.zeros(size, np.int32)
  for number, shape in enumerate(shapes):
    label, kind = shape.get("label"), shape.get("shape_type", "polygon")
    if label not in ids:
      raise BadFileError(
        f"{path}: shape {number} has label {label!r}, which is not a class "
        f"({', '.join(class_names)})"
      )
    points = np.asarray(shape.get("points", []), np.float64)
    if kind == "rectangle" and points.shape == (2, 2):
      (x0, y0), (x1, y1) = points
      points = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    elif kind != "polygon":
      raise BadFileError(f"{path}: shape {number} is a {kind!r}; polygons and rectangles are read")
    if points.ndim != 2 or points.shape[0] < 3 or points.shape[1] != 2:
      raise BadFileError(f"{path}: shape {number} ({label!r}) needs at least 3 (x, y) points")
    cv2.fillPoly(out, [np.round(points).astype(np.int32)], int(ids[label]))
  return out
