"""Georeferenced rasters (GeoTIFF orthomosaics) in, classes and polygons out in the same CRS.

`predict_raster` reads a raster of any size through rasterio by windows — only the rows of
sliding windows that overlap the current strip are in memory (`segjax.inference.
sliding_window_rows`), so peak memory grows with the window and the raster's width, not its area —
and writes a tiled, DEFLATE-compressed GeoTIFF of classes (and optionally one of class
probabilities, 0–255 per band) with the input's CRS, transform and size. Pixels the raster marks
as nodata (its nodata value, per-band masks or alpha: GDAL's dataset mask) enter the model as the
training mean (0 after standardisation) and are written as nodata (`nodata_class`), never as a
class. The classes equal those of `segjax.inference.sliding_window_predict` on the whole image in
memory (tested).

`regions` turns a class raster into one polygon per 4-connected region of a class (holes kept),
in map coordinates, optionally simplified (``simplify`` in map units) and scored (the mean
probability of its class over the region); `write_geojson` and `write_gpkg` write them with the
CRS. Needs ``pip install -e '.[geo]'`` (rasterio; shapely and pyogrio for polygons).
"""

from __future__ import annotations

import contextlib
import json
import os

import jax
import numpy as np

from segjax import files
from segjax.data import intensity
from segjax import inference
from segjax import prelabels

# Windows of `predict_raster` when config.inference.window is not set.
DEFAULT_WINDOW = (512, 512)


def _rasterio():
  try:
    import rasterio  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError("georeferenced rasters need rasterio: pip install -e '.[geo]'") from e
  return rasterio


def nodata_class(num_classes: int) -> int:
  """The class raster's nodata value: 255 (uint8) below 255 classes, else 65535 (uint16)."""
  return 255 if num_classes < 255 else 65535


class RasterRows:
  """A raster as the `[H, W, C]` array `segjax.inference.sliding_window_rows` reads rows of:
  ``rows[i]`` reads the window of rows ``min(i)…max(i)`` (all columns) of ``bands``, normalised as
  the run's training images were, nodata pixels set to 0."""

  def __init__(self, dataset, data_config, bands):
    self.dataset, self.data_config, self.bands = dataset, data_config, list(bands)
    channels = data_config.get("channels", 3)
    self.shape = (dataset.height, dataset.width, channels)

  def read(self, top: int, bottom: int) -> tuple[np.ndarray, np.ndarray]:
    """``(normalised image [h, W, C], valid [h, W])`` of rows ``top…bottom-1``."""
    window = _rasterio().windows.Window(0, top, self.dataset.width, bottom - top)
    data = np.moveaxis(self.dataset.read(self.bands, window=window), 0, -1)
    valid = self.dataset.dataset_mask(window=window) > 0
    image = intensity.prepare_image(data, self.data_config)
    image[~valid] = 0.0
    return image, valid

  def __getitem__(self, rows):
    rows = np.asarray(rows)
    top = int(rows.min())
    image, _ = self.read(top, int(rows.max()) + 1)
    return image[rows - top]


def raster_bands(dataset, settings, channels: int) -> list[int]:
  """The 1-based bands the model reads: ``config.predict.bands`` if set (each checked), else the
  first ``channels`` (all of them for a 1-channel model fed a mean; one band repeated for a grey
  raster)."""
  asked = tuple(settings.get("bands") or ())
  if asked:
    for band in asked:
      if not 1 <= int(band) <= dataset.count:
        raise ValueError(
          f"config.predict.bands: {dataset.name} has bands 1..{dataset.count}, not {band}"
        )
    return [int(b) for b in asked]
  if channels == 1 or dataset.count < channels:
    return list(range(1, dataset.count + 1))
  return list(range(1, channels + 1))


def _check_streamable(predictor, path):
  spec, data = predictor.spec, predictor.config.data
  if spec.scales != (1.0,) or spec.tta:
    raise ValueError(
      f"{path}: config.inference.scales / tta do not apply to rasters predicted "
      "by windows; predict them at scale 1 without flips"
    )
  if data.get("normalization", "mean_std") != "mean_std":
    raise ValueError(
      f"{path}: config.data.normalization={data.normalization!r} stretches each "
      "image by its own statistics, which a raster read by windows does not have; "
      "rasters need a run trained with normalization='mean_std'"
    )
  if not predictor.chain.reads() <= {"logits"}:
    raise ValueError(
      f"{path}: rasters are predicted by windows from the logits; this chain "
      f"({predictor.chain.spec!r}) reads {sorted(predictor.chain.reads())}"
    )


def predict_raster(
  predictor, path: str, classes_path: str, probabilities_path: str | None = None
) -> dict:
  """Predicts the raster at ``path`` by sliding windows (``config.inference.window``, default
  ``DEFAULT_WINDOW``; ``overlap``, ``blend``, ``pad_mode``, ``window_batch``) and writes the class
  GeoTIFF (and the probabilities') with the input's georeference; each file appears only when
  complete. Returns the input's ``{"crs", "transform", "height", "width"}``."""
  rasterio = _rasterio()
  _check_streamable(predictor, path)
  spec = predictor.spec
  window = spec.window or DEFAULT_WINDOW
  descriptor = predictor.descriptor
  nodata = nodata_class(descriptor.num_classes)
  try:
    src = rasterio.open(path)
  except rasterio.errors.RasterioIOError as e:
    raise ValueError(f"{path} is not a raster rasterio can read ({e})") from e
  with src:
    rows = RasterRows(
      src,
      predictor.config.data,
      raster_bands(src, predictor.settings, predictor.config.data.get("channels", 3)),
    )
    profile = dict(
      driver="GTiff",
      height=src.height,
      width=src.width,
      crs=src.crs,
      transform=src.transform,
      tiled=True,
      blockxsize=256,
      blockysize=256,
      compress="deflate",
      BIGTIFF="IF_SAFER",
    )
    with contextlib.ExitStack() as stack:  # each file renamed into place once complete
      out = stack.enter_context(
        rasterio.open(
          stack.enter_context(files.atomic_path(classes_path)),
          "w",
          count=1,
          nodata=nodata,
          dtype="uint8" if nodata == 255 else "uint16",
          **profile,
        )
      )
      probs_out = None
      if probabilities_path:
        probs_out = stack.enter_context(
          rasterio.open(
            stack.enter_context(files.atomic_path(probabilities_path)),
            "w",
            count=descriptor.num_classes,
            dtype="uint8",
            **profile,
          )
        )
      for top, bottom, scores in inference.sliding_window_rows(
        predictor.logits_fn,
        rows,
        window=window,
        overlap=spec.overlap,
        blend=spec.blend,
        pad_mode=spec.pad_mode,
        batch_size=spec.window_batch,
      ):
        strip = rasterio.windows.Window(0, top, src.width, bottom - top)
        valid = src.dataset_mask(window=strip) > 0
        labels = np.where(valid, np.argmax(scores, axis=-1), nodata)
        out.write(labels.astype(out.dtypes[0])[None], window=strip)
        if probs_out is not None:
          probs_out.write(
            np.moveaxis(np.rint(np.clip(scores, 0, 1) * 255).astype(np.uint8), -1, 0), window=strip
          )
    return {"crs": src.crs, "transform": src.transform, "height": src.height, "width": src.width}


def regions(
  classes_path: str, class_names, *, probabilities_path: str | None = None, simplify: float = 0.0
) -> tuple[list[dict], object]:
  """``(features, crs)``: one GeoJSON-like feature per 4-connected region of one class of the
  class raster (nodata left out), its polygon (holes kept) in the raster's map coordinates,
  simplified to ``simplify`` map units (topology kept; 0: the pixel outline), with ``class``,
  ``class_name`` and, given the probability raster, ``score`` (the class's mean probability over
  the region). Reads the class raster whole."""
  rasterio = _rasterio()
  import cv2  # pylint: disable=import-outside-toplevel
  from rasterio import features as rfeatures  # pylint: disable=import-outside-toplevel
  from shapely import geometry  # pylint: disable=import-outside-toplevel

  with rasterio.open(classes_path) as src:
    labels, nodata, transform, crs = src.read(1), src.nodata, src.transform, src.crs
  components = np.zeros(labels.shape, np.int32)
  component_class, offset = [0], 0
  for cls in np.unique(labels):
    if cls == nodata:
      continue
    count, numbered = cv2.connectedComponents(
      (labels == cls).astype(np.uint8), connectivity=4, ltype=cv2.CV_32S
    )
    inside = numbered > 0
    components[inside] = numbered[inside] + offset
    component_class += [int(cls)] * (count - 1)
    offset += count - 1
  scores = None
  if probabilities_path:
    with rasterio.open(probabilities_path) as probs:
      chosen = np.zeros(labels.shape, np.float64)
      for cls in set(component_class[1:]):
        band = probs.read(cls + 1).astype(np.float64) / 255.0
        chosen[labels == cls] = band[labels == cls]
    area = np.bincount(components.ravel(), minlength=offset + 1)
    scores = np.bincount(components.ravel(), chosen.ravel(), minlength=offset + 1) / np.maximum(
      area, 1
    )
  found = []
  for geom, number in rfeatures.shapes(
    components, mask=components > 0, connectivity=4, transform=transform
  ):
    number = int(number)
    shape = geometry.shape(geom)
    if simplify > 0:
      shape = shape.simplify(simplify, preserve_topology=True)
    cls = component_class[number]
    properties = {"class": cls, "class_name": class_names[cls], "region": number}
    if scores is not None:
      properties["score"] = round(float(scores[number]), 6)
    found.append({"type": "Feature", "properties": properties, "geometry": geometry.mapping(shape)})
  found.sort(key=lambda f: f["properties"]["region"])
  return found, crs


def _crs_name(crs) -> str:
  epsg = crs.to_epsg() if crs else None
  return f"urn:ogc:def:crs:EPSG::{epsg}" if epsg else (crs.to_wkt() if crs else "")


def write_geojson(path: str, features: list[dict], crs) -> str:
  """A FeatureCollection in the raster's CRS, named by its ``crs`` member (GDAL, QGIS and
  geopandas read it; RFC 7946 readers assume WGS 84, so reproject before sharing with those)."""
  collection = {"type": "FeatureCollection", "features": features}
  if crs:
    collection["crs"] = {"type": "name", "properties": {"name": _crs_name(crs)}}
  with files.atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
    json.dump(collection, f)
  return path


def write_gpkg(path: str, features: list[dict], crs, layer: str = "regions") -> str:
  """The features as a GeoPackage layer (pyogrio) with the raster's CRS."""
  import pyogrio.raw  # pylint: disable=import-outside-toplevel
  from shapely import geometry, to_wkb  # pylint: disable=import-outside-toplevel

  geometries = np.array([to_wkb(geometry.shape(f["geometry"])) for f in features], dtype=object)
  names = ["class", "class_name", "region"] + (
    ["score"] if features and "score" in features[0]["properties"] else []
  )
  columns = []
  for name in names:
    values = [f["properties"][name] for f in features]
    columns.append(np.array(values, dtype=object if name == "class_name" else None))
  with files.atomic_path(path) as tmp:
    pyogrio.raw.write(
      tmp,
      geometries,
      columns,
      names,
      layer=layer,
      driver="GPKG",
      geometry_type="Polygon",
      crs=crs.to_wkt() if crs else None,
      promote_to_multi=False,
    )
  return path


def merge_geojson(path: str, sources, names) -> str | None:
  """One FeatureCollection of the features of the GeoJSON files ``sources`` (each feature's
  ``source``: its file's name in ``names``), when they share one CRS; otherwise none is written
  and the CRSs are printed (reproject before merging)."""
  features, crs_names = [], set()
  for source, name in zip(sources, names):
    with open(source, encoding="utf-8") as f:
      collection = json.load(f)
    crs_names.add(json.dumps(collection.get("crs"), sort_keys=True))
    for feature in collection["features"]:
      features.append({**feature, "properties": {**feature["properties"], "source": name}})
  if len(crs_names) > 1:
    print(
      f"Not merging {len(sources)} GeoJSON files into {path}: they have {len(crs_names)} "
      "different CRSs"
    )
    return None
  merged = {"type": "FeatureCollection", "features": features}
  crs = json.loads(crs_names.pop()) if crs_names else None
  if crs:
    merged["crs"] = crs
  with files.atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
    json.dump(merged, f)
  return path


GEO_FORMATS = ("geotiff", "geojson", "gpkg")


def predict_rasters(predictor, inputs, output: str, fmt: str = "geotiff") -> list[str]:
  """Georeferenced prediction (`segjax.geo`) of each raster of ``inputs``: ``NAME_classes.tif``
  (and ``NAME_probabilities.tif`` with ``config.predict.probabilities``) in ``output``, and for
  ``fmt`` ``geojson``/``gpkg`` the regions as ``NAME_regions.geojson``/``.gpkg`` in the raster's
  CRS (``config.predict.simplify`` map units). In a multi-process run each process takes every
  ``process_count``-th raster; a raster whose files all exist is skipped (each file appears only
  when complete); with ``geojson``, process 0 then merges every raster's regions into
  ``regions.geojson`` (with a ``source`` property) when they share one CRS. Returns the paths of
  this process's rasters' files."""
  if fmt not in GEO_FORMATS:
    raise ValueError(f"--format must be one of {', '.join(GEO_FORMATS)} here, not {fmt!r}")
  settings, written = predictor.settings, []
  simplify = float(settings.get("simplify", 0.0))
  if simplify < 0:
    raise ValueError(f"config.predict.simplify must be >= 0 map units, not {simplify}")
  os.makedirs(output, exist_ok=True)
  paths = [inputs] if isinstance(inputs, str) else list(inputs)
  names = [prelabels.safe_name(os.path.splitext(os.path.basename(p))[0]) for p in paths]
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
    predict_raster(predictor, path, classes, probabilities)
    if fmt != "geotiff":
      features, crs = regions(
        classes,
        predictor.descriptor.class_names,
        probabilities_path=probabilities,
        simplify=simplify,
      )
      (write_geojson if fmt == "geojson" else write_gpkg)(files_of[-1], features, crs)
  if count > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

    multihost_utils.sync_global_devices("segjax predict_rasters: every raster written")
  if fmt == "geojson" and process == 0 and len(paths) > 1:
    merge_geojson(
      os.path.join(output, "regions.geojson"), [files_of[-1] for files_of in outputs], names
    )
  return written
