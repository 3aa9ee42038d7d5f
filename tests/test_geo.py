"""Georeferenced rasters (`segjax.geo`, ``--format=geotiff|geojson|gpkg``) on a GeoTIFF the test
writes: a UTM CRS, non-square pixels, an origin far from zero, nodata borders. The class GeoTIFF
keeps the input's georeference and equals the in-memory prediction, nodata is never a class, and
the polygons rasterised back equal the class raster."""

import dataclasses
import json
import os

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
from rasterio import features as rfeatures  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402

from segjax import geo, inference, predict, runs  # noqa: E402
from segjax.data import pipeline  # noqa: E402

CRS = "EPSG:32633"  # WGS 84 / UTM zone 33N
TRANSFORM = from_origin(612345.0, 5812345.0, 0.5, 0.3)  # 0.5 m wide, 0.3 m tall pixels


def write_raster(path, height=70, width=90, bands=3, nodata_top=5, nodata_left=8):
  """A shapes scene as a georeferenced raster; the first rows and columns are nodata (0)."""
  from segjax.data.shapes import render_scene  # pylint: disable=import-outside-toplevel

  image, _, _ = render_scene(np.random.default_rng(11), max(height, width), 6)
  image = np.clip(image[:height, :width].astype(np.int32), 1, 255).astype(np.uint8)
  image = np.concatenate([image, image[..., :1]], -1)[..., :bands]
  image[:nodata_top] = 0
  image[:, :nodata_left] = 0
  with rasterio.open(
    path,
    "w",
    driver="GTiff",
    height=height,
    width=width,
    count=bands,
    dtype="uint8",
    crs=CRS,
    transform=TRANSFORM,
    nodata=0,
  ) as dst:
    dst.write(np.moveaxis(image, -1, 0))
  return image


@pytest.fixture
def predictor(straight_run):
  config, workdir, _ = straight_run
  config = config.copy_and_resolve_references()
  config.predict.probabilities = True
  config.inference.window = (32, 32)
  return predict.Predictor(runs.load(workdir), config)


def in_memory(predictor, image):
  """The whole raster in memory: normalised, nodata set to 0, one sliding window."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  data = predictor.config.data
  normalised = pipeline.prepare_image({"image": tf.constant(image[..., :3])}, data)["image"]
  normalised = normalised.numpy()
  normalised[np.all(image == 0, axis=-1)] = 0
  probs = inference.sliding_window_predict(predictor.logits_fn, normalised, window=(32, 32))
  return probs


def test_the_class_geotiff_keeps_the_georeference_and_equals_the_in_memory_prediction(
  predictor, tmp_path
):
  image = write_raster(str(tmp_path / "ortho.tif"), bands=4)  # RGB + one more band: 3 read
  written = geo.predict_rasters(
    predictor, [str(tmp_path / "ortho.tif")], str(tmp_path / "out"), "geotiff"
  )
  assert [os.path.basename(p) for p in written] == ["ortho_classes.tif", "ortho_probabilities.tif"]
  with rasterio.open(written[0]) as out:
    assert out.crs.to_epsg() == 32633 and out.transform == TRANSFORM
    assert (out.height, out.width, out.count, out.nodata) == (70, 90, 1, 255)
    assert out.profile["tiled"] and out.profile["compress"] == "deflate"
    labels = out.read(1)
  nodata = np.all(image == 0, axis=-1)
  assert nodata.sum() == 5 * 90 + 8 * 65
  np.testing.assert_array_equal(labels[nodata], 255)
  probs = in_memory(predictor, image)
  np.testing.assert_array_equal(labels[~nodata], np.argmax(probs, -1)[~nodata])
  assert len(np.unique(labels[~nodata])) >= 2
  with rasterio.open(written[1]) as out:
    assert out.count == predictor.descriptor.num_classes and out.transform == TRANSFORM
    np.testing.assert_allclose(np.moveaxis(out.read(), 0, -1) / 255.0, probs, atol=0.5 / 255 + 1e-6)


def test_polygons_in_the_rasters_crs_rasterise_back_to_the_class_raster(predictor, tmp_path):
  write_raster(str(tmp_path / "ortho.tif"))
  out = str(tmp_path / "out")
  written = geo.predict_rasters(predictor, [str(tmp_path / "ortho.tif")], out, "geojson")
  with rasterio.open(written[0]) as src:
    labels = src.read(1)
  with open(written[-1], encoding="utf-8") as f:
    collection = json.load(f)
  assert collection["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"
  features = collection["features"]
  names = predictor.descriptor.class_names
  assert all(f["properties"]["class_name"] == names[f["properties"]["class"]] for f in features)
  assert all(0 <= f["properties"]["score"] <= 1 for f in features)
  x, y = features[0]["geometry"]["coordinates"][0][0]  # map coordinates, not pixels
  assert 612345.0 <= x <= 612345.0 + 90 * 0.5 and 5812345.0 - 70 * 0.3 <= y <= 5812345.0
  back = rfeatures.rasterize(
    [(f["geometry"], f["properties"]["class"]) for f in features],
    out_shape=labels.shape,
    transform=TRANSFORM,
    fill=255,
    dtype="uint8",
  )
  np.testing.assert_array_equal(back, labels)
  # A score is the mean probability of the region's class over its pixels.
  with rasterio.open(written[1]) as src:
    probs = src.read().astype(np.float64) / 255.0
  first = features[0]
  region = (
    rfeatures.rasterize(
      [(first["geometry"], 1)], out_shape=labels.shape, transform=TRANSFORM, fill=0, dtype="uint8"
    )
    > 0
  )
  assert first["properties"]["score"] == pytest.approx(
    probs[first["properties"]["class"]][region].mean(), abs=1e-6
  )
  # GeoPackage, simplified: the same regions, fewer vertices, the CRS kept.
  predictor.config.predict.simplify = 1.0  # map units (2 pixels wide, 3.3 tall)
  gpkg = geo.predict_rasters(predictor, [str(tmp_path / "ortho.tif")], out, "gpkg")[-1]
  import pyogrio  # pylint: disable=import-outside-toplevel

  meta, _, geometries, fields = pyogrio.raw.read(gpkg)
  assert "32633" in meta["crs"] and len(geometries) == len(features)
  np.testing.assert_array_equal(fields[0], [f["properties"]["class"] for f in features])
  from shapely import from_wkb  # pylint: disable=import-outside-toplevel

  vertices = lambda g: sum(len(r.coords) for r in [g.exterior, *g.interiors])
  simplified = sum(vertices(from_wkb(g)) for g in geometries)
  from shapely import geometry  # pylint: disable=import-outside-toplevel

  full = sum(vertices(geometry.shape(f["geometry"])) for f in features)
  assert simplified < full


def test_raster_errors_name_the_file_and_the_setting(predictor, tmp_path):
  path = str(tmp_path / "ortho.tif")
  write_raster(path)
  predictor.config.predict.bands = (1, 5)
  with pytest.raises(ValueError, match=r"config.predict.bands: .*ortho.tif has bands 1..3, not 5"):
    geo.predict_rasters(predictor, [path], str(tmp_path / "out"))
  predictor.config.predict.bands = ()
  spec = predictor.spec
  predictor.spec = dataclasses.replace(spec, tta="flip")
  with pytest.raises(ValueError, match=r"ortho.tif: config.inference.scales / tta do not apply"):
    geo.predict_rasters(predictor, [path], str(tmp_path / "out"))
  predictor.spec = spec
  broken = tmp_path / "broken.tif"
  broken.write_bytes(b"not a tiff")
  with pytest.raises(ValueError, match="broken.tif is not a raster rasterio can read"):
    geo.predict_rasters(predictor, [str(broken)], str(tmp_path / "out"))
  assert not os.path.exists(tmp_path / "out" / "broken_classes.tif")


def test_a_folder_dataset_of_geotiff_tiles_keeps_each_tiles_crs_and_transform(tmp_path):
  """Two tiles of one orthomosaic (the second 40 pixels east) and their masks: the prepared
  examples hold each tile's CRS and transform; images and masks as written."""
  import cv2  # pylint: disable=import-outside-toplevel
  from segjax.data import folder  # pylint: disable=import-outside-toplevel

  root = tmp_path / "tiles"
  (root / "train" / "images").mkdir(parents=True)
  (root / "train" / "masks").mkdir(parents=True)
  written = {}
  for i in range(2):
    transform = TRANSFORM @ rasterio.Affine.translation(40 * i, 0)
    image = np.random.default_rng(i).integers(0, 255, (24, 40, 3), dtype=np.uint8)
    with rasterio.open(
      root / "train" / "images" / f"tile_{i}.tif",
      "w",
      driver="GTiff",
      height=24,
      width=40,
      count=3,
      dtype="uint8",
      crs=CRS,
      transform=transform,
    ) as dst:
      dst.write(np.moveaxis(image, -1, 0))
    cv2.imwrite(
      str(root / "train" / "masks" / f"tile_{i}.png"), (image[..., 0] > 127).astype(np.uint8)
    )
    written[f"tile_{i}"] = (image, transform)
  examples = list(
    folder.folder_dataset(str(root), "train", data_dir=str(tmp_path / "tfds")).as_numpy_iterator()
  )
  assert sorted(e["name"].decode() for e in examples) == ["tile_0", "tile_1"]
  for example in examples:
    image, transform = written[example["name"].decode()]
    np.testing.assert_array_equal(example["image"], image)
    assert rasterio.crs.CRS.from_wkt(example["crs"].decode()).to_epsg() == 32633
    np.testing.assert_array_equal(example["transform"], tuple(transform)[:6])
  assert {tuple(e["transform"])[2] for e in examples} == {612345.0, 612365.0}


def test_rasters_already_written_are_skipped_and_the_regions_merge(predictor, tmp_path):
  """Two rasters into one output: a second call rewrites nothing; regions.geojson holds both
  rasters' regions, each with its source."""
  for name in ("west", "east"):
    write_raster(str(tmp_path / f"{name}.tif"))
  paths = [str(tmp_path / "east.tif"), str(tmp_path / "west.tif")]
  out = tmp_path / "out"
  written = geo.predict_rasters(predictor, paths, str(out), "geojson")
  assert sorted(os.path.basename(p) for p in written) == sorted(
    f"{n}_{kind}"
    for n in ("east", "west")
    for kind in ("classes.tif", "probabilities.tif", "regions.geojson")
  )
  times = {p: os.stat(p).st_mtime_ns for p in written}
  assert geo.predict_rasters(predictor, paths, str(out), "geojson") == written
  assert {p: os.stat(p).st_mtime_ns for p in written} == times  # nothing redone
  with open(out / "regions.geojson", encoding="utf-8") as f:
    merged = json.load(f)
  each = {}
  for name in ("east", "west"):
    with open(out / f"{name}_regions.geojson", encoding="utf-8") as f:
      each[name] = json.load(f)["features"]
  assert [f["properties"]["source"] for f in merged["features"]] == (
    ["east"] * len(each["east"]) + ["west"] * len(each["west"])
  )
  assert merged["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"
