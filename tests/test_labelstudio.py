"""Label Studio: brush RLE against label-studio-sdk, labelling configs, annotations painted by hand,
exports that train as they are, and the whole labelling loop against a real Label Studio."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest

from segjax import prelabels
from segjax.data import folder
from segjax.data.descriptor import DatasetDescriptor
from segjax.data.shapes import DESCRIPTOR, render_scene
from segjax.labelstudio import rle
from segjax.labelstudio import server
from segjax.labelstudio import serving
from segjax.labelstudio import tasks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Two stuff classes (one of them background) and a thing class.
CELLS = DatasetDescriptor(
  name="cells",
  class_names=("background", "membrane", 'cell "B"<1>'),
  colormap=((0, 0, 0), (255, 0, 0), (0, 128, 255)),
  stuff_classes=(0, 1),
  thing_classes=(2,),
  ignore_label=255,
  label_divisor=1000,
)


@pytest.fixture(scope="session")
def label_studio_python():
  """Label Studio's own cached virtual environment (created on first use; ~1.5 min)."""
  return server.ensure_installed()


# ------------------------------------------------------------------------ brush RLE
# label-studio-sdk's own encodings and decodings of the masks of tools/label_studio_reference.py,
# made by it in Label Studio's environment (--fixture): the quick tier needs no Label Studio.
RLE_FIXTURE = os.path.join(ROOT, "tests", "fixtures", "label_studio_rle.npz")


def rle_reference():
  data = np.load(RLE_FIXTURE)
  names = [k[len("mask_") :] for k in data.files if k.startswith("mask_")]
  return {name: data[f"mask_{name}"].astype(bool) for name in names}, data


def check_rle(cases, sdk):
  for name, mask in cases.items():
    mine = rle.encode(mask)
    assert mine == sdk[f"sdk_rle_{name}"].tolist(), name  # the same bytes as mask2rle
    np.testing.assert_array_equal(rle.decode(sdk[f"sdk_rle_{name}"].tolist(), *mask.shape), mask)
    np.testing.assert_array_equal(rle.decode_values(mine), sdk[f"sdk_decoded_{name}"])


def test_rle_equals_label_studio_sdk_both_ways():
  cases, sdk = rle_reference()
  assert len(cases) == 7 and 4 * cases["full_long_runs"].size == 360_000  # RGBA values
  check_rle(cases, sdk)


@pytest.mark.slow
def test_rle_equals_the_installed_label_studio_sdk(label_studio_python, tmp_path):
  # The same comparison live, with the SDK Label Studio's environment has now.
  cases, _ = rle_reference()
  np.savez(
    tmp_path / "in.npz",
    **{f"mask_{n}": m.astype(np.uint8) for n, m in cases.items()},
    **{f"rle_{n}": np.asarray(rle.encode(m), np.uint8) for n, m in cases.items()},
  )
  subprocess.run(
    [
      label_studio_python,
      os.path.join(ROOT, "tools", "label_studio_reference.py"),
      str(tmp_path / "in.npz"),
      str(tmp_path / "out.npz"),
    ],
    check=True,
  )
  check_rle(cases, np.load(tmp_path / "out.npz"))


def test_rle_hand_computed_and_errors():
  # 1x1 inside pixel: 4 values of 255 = one repeated run of length 4 (field 0, 3 bits: 011).
  bits = f"{4:032b}" + "00111" + "0010001101111111" + "100011" + "11111111"
  bits += "0" * (8 - len(bits) % 8)
  assert rle.encode(np.ones((1, 1), bool)) == [
    int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)
  ]
  # A literal run of three words (as rle-pack writes; mask2rle writes literals of one), then a
  # repeated run of two.
  bits = f"{5:032b}" + "00111" + "0010001101111111" + "000010" + "000000010000001000000011"
  bits += "100001" + "11111110"
  bits += "0" * (8 - len(bits) % 8)
  code = [int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)]
  np.testing.assert_array_equal(rle.decode_values(code), [1, 2, 3, 254, 254])
  values = np.repeat(np.random.default_rng(0).integers(0, 3, 500), 1 + np.arange(500) % 3)
  np.testing.assert_array_equal(rle.decode_values(rle.encode_values(values)), values)
  code = rle.encode(np.ones((3, 3), bool))
  with pytest.raises(ValueError, match="not 2 x 5 x 4"):
    rle.decode(code, 2, 5)
  with pytest.raises(ValueError, match="truncated"):
    rle.decode(code[:6], 3, 3)
  with pytest.raises(ValueError, match="2-D"):
    rle.encode(np.ones((2, 2, 2)))


# ------------------------------------------------------------------------ config and regions
def test_labelling_config_lists_the_classes_and_polygons_for_things():
  view = ET.fromstring(tasks.labelling_config(CELLS))
  brush, polygon = view.find("BrushLabels"), view.find("PolygonLabels")
  assert brush.get("toName") == view.find("Image").get("name") == "image"
  assert [(l.get("value"), l.get("background")) for l in brush] == [
    ("membrane", "#ff0000"),
    ('cell "B"<1>', "#0080ff"),
  ]  # background is what is left unpainted
  assert [l.get("value") for l in polygon] == ['cell "B"<1>']
  assert ET.fromstring(tasks.labelling_config(DESCRIPTOR)).find("PolygonLabels") is not None
  stuff_only = DatasetDescriptor(
    name="s",
    class_names=("a", "b"),
    colormap=((1, 2, 3), (4, 5, 6)),
    stuff_classes=(0, 1),
    thing_classes=(),
    ignore_label=255,
    label_divisor=1000,
  )
  assert ET.fromstring(tasks.labelling_config(stuff_only)).find("PolygonLabels") is None


def test_prediction_regions_read_back_to_the_same_labels():
  labels = np.zeros((12, 10), np.int32)
  labels[:, 5:] = 1
  labels[2:5, 1:4] = 2
  labels[7:10, 6:9] = 2
  instance = np.zeros_like(labels)
  instance[2:5, 1:4], instance[7:10, 6:9] = 1, 2
  probs = np.full((12, 10, 3), 0.1)
  probs[..., 1] = np.where(labels == 1, 0.75, 0.1)
  result = tasks.prediction_result(labels, instance, CELLS, probs, scores={(2, 2): 0.3})
  assert [r["value"]["brushlabels"] for r in result] == [
    ["membrane"],
    ['cell "B"<1>'],
    ['cell "B"<1>'],
  ]  # no background region
  assert [r.get("score") for r in result] == [pytest.approx(0.75), pytest.approx(0.1), 0.3]
  semantic, painted = tasks.annotation_labels(result, CELLS, 12, 10)
  np.testing.assert_array_equal(semantic, labels)
  np.testing.assert_array_equal(painted, instance)


def test_annotation_painted_by_hand():
  """Regions paint in order; a polygon covers the pixels whose centres it contains; unpainted
  pixels are background (or, without a background class, the ignore label)."""
  membrane = np.zeros((6, 8), bool)
  membrane[:, :3] = True
  polygon = {
    "type": "polygonlabels",
    "original_width": 8,
    "original_height": 6,
    "value": {"points": [[25, 0], [75, 0], [75, 50], [25, 50]], "polygonlabels": ['cell "B"<1>']},
  }
  brush = {
    "type": "brushlabels",
    "original_width": 8,
    "original_height": 6,
    "value": {"format": "rle", "rle": rle.encode(membrane), "brushlabels": ["membrane"]},
  }
  choice = {"type": "choices", "value": {"choices": ["blurry"]}}
  semantic, instance = tasks.annotation_labels([brush, polygon, choice], CELLS, 6, 8)
  expected = np.zeros((6, 8), np.int32)
  expected[:, :3] = 1
  expected[0:3, 2:6] = 2  # x 2..6 and y 0..3 in pixels: centres 2.5..5.5 and 0.5..2.5
  np.testing.assert_array_equal(semantic, expected)
  np.testing.assert_array_equal(instance, (expected == 2).astype(np.int32))
  triangle = tasks.polygon_mask([[0, 0], [100, 0], [0, 100]], 4, 4)  # centres with x + y < 4
  np.testing.assert_array_equal(triangle, np.add.outer(np.arange(4), np.arange(4)) <= 2)
  semantic, _ = tasks.annotation_labels([polygon, brush], CELLS, 6, 8)  # the brush on top
  np.testing.assert_array_equal(semantic[:3, 2], [1, 1, 1])
  no_background = DESCRIPTOR  # shapes: every class is painted, the rest is unlabelled
  semantic, _ = tasks.annotation_labels([], no_background, 2, 3)
  np.testing.assert_array_equal(semantic, np.full((2, 3), 255))


def test_annotation_errors_name_the_annotation():
  brush = {
    "id": "r1",
    "type": "brushlabels",
    "original_width": 8,
    "original_height": 6,
    "value": {"format": "rle", "rle": rle.encode(np.ones((6, 8))), "brushlabels": ["nuclei"]},
  }
  with pytest.raises(ValueError, match=r"task 7, annotation 3: label 'nuclei' is not a class"):
    tasks.annotation_labels([brush], CELLS, 6, 8, where="task 7, annotation 3")
  with pytest.raises(ValueError, match="region r1 is drawn on a 8x6 image, but the image is 8x5"):
    tasks.annotation_labels([brush], CELLS, 5, 8)


def test_chosen_annotation_latest_or_by_annotator_never_cancelled():
  item = {
    "annotations": [
      {"id": 1, "completed_by": 1, "updated_at": "2026-12-01T10:00:00Z"},
      {
        "id": 2,
        "completed_by": {"id": 2, "email": "b@x.org"},
        "updated_at": "2026-12-01T12:00:00Z",
      },
      {"id": 3, "completed_by": 1, "updated_at": "2026-12-01T11:00:00Z"},
      {"id": 4, "completed_by": 1, "updated_at": "2026-12-01T13:00:00Z", "was_cancelled": True},
    ]
  }
  assert tasks.chosen_annotation(item)["id"] == 2
  assert tasks.chosen_annotation(item, annotator=1)["id"] == 3
  assert tasks.chosen_annotation(item, annotator="b@x.org")["id"] == 2
  assert tasks.chosen_annotation(item, annotator=9) is None
  assert tasks.chosen_annotation({"annotations": []}) is None


def write_scenes(folder_path, count, size=32, seed=9):
  """Shapes scenes as PNG files; returns {stem: (semantic, instance)}."""
  os.makedirs(folder_path, exist_ok=True)
  truth = {}
  for i in range(count):
    image, semantic, instance = render_scene(np.random.default_rng([seed, i]), size, 3)
    cv2.imwrite(os.path.join(folder_path, f"scene_{i}.png"), image[..., ::-1])
    truth[f"scene_{i}"] = (semantic, instance)
  return truth


def test_export_to_folder_reads_back_as_a_folder_dataset(tmp_path):
  truth = write_scenes(tmp_path / "images", 3)
  items = []
  for number, (stem, (semantic, instance)) in enumerate(truth.items(), start=1):
    stale = {
      "id": 1,
      "completed_by": 1,
      "updated_at": "2026-12-01T09:00:00Z",
      "result": tasks.prediction_result(np.zeros_like(semantic), None, DESCRIPTOR),
    }
    latest = {
      "id": 2,
      "completed_by": 1,
      "updated_at": "2026-12-01T10:00:00Z",
      "result": tasks.prediction_result(semantic, instance, DESCRIPTOR),
    }
    items.append(
      {
        "id": number,
        "data": {"image": f"/data/local-files/?d=images/{stem}.png"},
        "annotations": [latest, stale],
      }
    )
  items.append(
    {"id": 9, "data": {"image": "/data/local-files/?d=images/none.png"}, "annotations": []}
  )  # not annotated: left out, never fetched
  images = tasks.TaskImages(str(tmp_path / "cache"), document_root=str(tmp_path))
  written = tasks.export_to_folder(items, str(tmp_path / "data" / "train"), DESCRIPTOR, images.path)
  assert written == {"scene_0": 1, "scene_1": 2, "scene_2": 3}
  with open(tmp_path / "data" / "classes.json") as f:
    assert [c["name"] for c in json.load(f)["classes"]] == list(DESCRIPTOR.class_names)
  ds = folder.folder_dataset(str(tmp_path / "data"), "train", data_dir=str(tmp_path / "tfds"))
  got = {ex["name"].decode(): ex for ex in ds.as_numpy_iterator()}
  assert sorted(got) == sorted(truth)
  for stem, (semantic, instance) in truth.items():
    np.testing.assert_array_equal(got[stem]["semantic"][..., 0], semantic)
    pairs = set(
      zip(instance[instance > 0].tolist(), got[stem]["instance"][..., 0][instance > 0].tolist())
    )
    assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})


def test_init_from_starts_from_the_runs_variables(straight_run, tmp_path):
  import jax  # pylint: disable=import-outside-toplevel
  from segjax import runs  # pylint: disable=import-outside-toplevel
  from segjax import train  # pylint: disable=import-outside-toplevel
  from segjax.labelstudio import backend  # pylint: disable=import-outside-toplevel

  config, workdir, _ = straight_run
  truth = write_scenes(tmp_path / "data" / "train" / "images", 2)
  for stem, (semantic, _) in truth.items():
    prelabels.write_indexed_png(
      prelabels.output_path(str(tmp_path / "data" / "train"), "masks", stem, ".png"),
      semantic,
      DESCRIPTOR.colormap,
    )
  tuned = backend.finetune_config(
    runs.read_config(workdir), str(tmp_path / "data"), init_from=workdir, steps=7
  )
  assert (tuned.data.name, tuned.num_train_steps, tuned.eval_splits) == ("folder", 7, ())
  assert tuned.data.patch_size == tuned.data.crop_size == config.data.crop_size
  trainer = train.setup(tuned)
  trained = runs.load(workdir).variables
  jax.tree_util.tree_map(
    np.testing.assert_array_equal, jax.device_get(trainer.state.variables), jax.device_get(trained)
  )
  assert int(trainer.state.step) == 0
  other = runs.config_from_dict(runs.config_to_dict(tuned))
  other.model.features = 8
  with pytest.raises(ValueError, match="config.init_from=.*differ"):
    train.setup(other)


def test_import_prelabels_then_export_annotations(straight_run, tmp_path):
  """``label_studio.py import`` writes tasks whose predictions are the run's; the same regions,
  exported as annotations, come back as a folder split of those masks."""
  from segjax import predict  # pylint: disable=import-outside-toplevel
  from segjax import runs  # pylint: disable=import-outside-toplevel
  from segjax.labelstudio import session  # pylint: disable=import-outside-toplevel

  _, workdir, _ = straight_run
  truth = write_scenes(tmp_path / "served" / "images", 2)
  count = session.import_prelabels(
    workdir, str(tmp_path / "served" / "images"), str(tmp_path / "tasks.json")
  )
  with open(tmp_path / "tasks.json") as f:
    imported = json.load(f)
  assert count == len(imported) == 2
  predictor = predict.Predictor(runs.load(workdir))
  for number, item in enumerate(imported, start=1):
    assert item["data"]["image"].startswith("/data/local-files/?d=images/scene_")
    [prediction] = item.pop("predictions")
    stem = item["data"]["image"].rsplit("/", 1)[1][:-4]
    expected, probs = predict.predict_file(
      predictor, str(tmp_path / "served" / "images" / f"{stem}.png")
    )
    assert prediction["score"] == pytest.approx(1 - prelabels.uncertainty(probs))
    item.update(id=number, annotations=[{"id": number, "result": prediction["result"]}])
    item["expected"] = expected["semantic"][0]
  with open(tmp_path / "export.json", "w") as f:
    json.dump([{k: v for k, v in item.items() if k != "expected"} for item in imported], f)
  written = session.export_annotations(
    workdir,
    str(tmp_path / "DATA" / "train"),
    path=str(tmp_path / "export.json"),
    document_root=str(tmp_path / "served"),
  )
  assert sorted(written) == sorted(truth)
  for item in imported:
    stem = item["data"]["image"].rsplit("/", 1)[1][:-4]
    np.testing.assert_array_equal(
      folder.read_mask(str(tmp_path / "DATA" / "train" / "masks" / f"{stem}.png")), item["expected"]
    )
  with pytest.raises(ValueError, match="either --input=export.json or --url"):
    session.export_annotations(workdir, str(tmp_path / "x"))


def _post(url, payload):
  request = urllib.request.Request(
    url, data=payload if isinstance(payload, bytes) else json.dumps(payload).encode(), method="POST"
  )
  try:
    with urllib.request.urlopen(request, timeout=60) as response:
      return response.status, json.load(response)
  except urllib.error.HTTPError as e:
    return e.code, json.load(e)


def test_backend_protocol_in_process(straight_run, tmp_path):
  import threading  # pylint: disable=import-outside-toplevel
  from segjax import predict  # pylint: disable=import-outside-toplevel
  from segjax.labelstudio import backend  # pylint: disable=import-outside-toplevel

  _, trained_run, _ = straight_run
  workdir = str(tmp_path / "cells")
  shutil.copytree(trained_run, workdir)
  truth = write_scenes(tmp_path / "images", 2)
  served = backend.Backend(workdir, str(tmp_path / "images"), log=lambda _: None)
  http = backend.make_server(served, "127.0.0.1", 0)
  url = f"http://127.0.0.1:{http.server_address[1]}"
  threading.Thread(target=http.serve_forever, daemon=True).start()
  try:
    assert _get(url + "/health") == {
      "status": "UP",
      "model_class": "segjax",
      "model_version": "cells-v0",
    }
    assert _post(
      url + "/setup", {"project": "1.1", "hostname": "http://127.0.0.1:1", "access_token": "abc"}
    ) == (200, {"model_version": "cells-v0"})
    assert (
      oct(os.stat(os.path.join(workdir, "labelstudio", "connection.json")).st_mode)[-3:] == "600"
    )
    assert _post(url + "/nothing", {})[0] == 404
    status, answer = _post(url + "/webhook", b"{not json")
    assert status == 400 and "not JSON" in answer["error"]
    status, answer = _post(url + "/webhook", {"action": "ANNOTATION_CREATED"})
    assert status == 400 and "without the 'task' and 'annotation'" in answer["error"]
    tasks_ = [
      {"id": i, "data": {"image": f"/data/local-files/?d=images/{stem}.png"}}
      for i, stem in enumerate(sorted(truth), start=1)
    ]
    status, answer = _post(url + "/predict", {"tasks": tasks_})
    assert status == 200 and len(answer["results"]) == 2
    predictor = predict.Predictor(served.served()[1].run)
    for stem, result in zip(sorted(truth), answer["results"]):
      expected, _ = predict.predict_file(predictor, str(tmp_path / "images" / f"{stem}.png"))
      got, _ = tasks.annotation_labels(result["result"], DESCRIPTOR, 32, 32)
      np.testing.assert_array_equal(got, expected["semantic"][0])
      assert result["model_version"] == "cells-v0" and 0 <= result["score"] <= 1
    annotation = {"id": 5, "result": tasks.prediction_result(*truth["scene_0"], DESCRIPTOR)}
    assert _post(
      url + "/webhook",
      {"action": "ANNOTATION_CREATED", "task": tasks_[0], "annotation": annotation},
    )[1]["stored"]
    [item] = served.annotated_tasks()
    assert item["id"] == 1 and item["annotations"] == [annotation]
    _post(url + "/webhook", {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 5}]})
    assert served.annotated_tasks() == []
  finally:
    http.shutdown()
    http.server_close()


def test_interactive_predict_in_process_and_its_hostile_contexts(straight_run, tmp_path):
  """/predict with Label Studio's ``context`` (smart key points and rectangles, in percent)
  answers the mask of the backend's SAM for those prompts in pixels; a context off the protocol
  is a 400 naming the field, and a backend without a click model says so."""
  from segjax.interactive import predictor as interactive  # pylint: disable=import-outside-toplevel
  from segjax.labelstudio import backend  # pylint: disable=import-outside-toplevel

  _, trained_run, _ = straight_run
  workdir = str(tmp_path / "cells")
  shutil.copytree(trained_run, workdir)
  write_scenes(tmp_path / "images", 1)
  sam = interactive.load_predictor(SAM_TINY)
  served = backend.Backend(workdir, str(tmp_path / "images"), interactive=sam, log=lambda _: None)
  task = {"id": 1, "data": {"image": "/data/local-files/?d=images/scene_0.png"}}
  point = lambda x, y, positive=True, label="disc", **extra: {
    "type": "keypointlabels",
    "original_width": 32,
    "original_height": 32,
    "is_positive": positive,
    "value": {"x": x, "y": y, "keypointlabels": [label]},
    **extra,
  }
  answer = served.predict({"tasks": [task], "params": {"context": {"result": [point(25.0, 50.0)]}}})
  [region] = answer["results"][0]["result"]
  expected = sam.predict(str(tmp_path / "images" / "scene_0.png"), [(8.0, 16.0, True)])
  np.testing.assert_array_equal(rle.decode(region["value"]["rle"], 32, 32), expected)
  assert region["value"]["brushlabels"] == ["disc"] and sam.cache.misses == 1
  served.predict(
    {"tasks": [task], "params": {"context": {"result": [point(25.0, 50.0), point(60, 60, False)]}}}
  )
  assert sam.cache.hits >= 2 and len(sam.cache) == 1  # the embedding computed once per image
  bad = {
    "predict.context.result: a list": {"result": "all"},
    r"predict.context.result\[0\].value: x, y in percent": {"result": [point(120.0, 5.0)]},
    r"predict.context.result\[0\].value.keypointlabels: one of the classes": {
      "result": [point(5.0, 5.0, label="<script>")]
    },
    r"predict.context.result\[0\].type": {"result": [{"type": "polygonlabels", "value": {}}]},
    r"predict.context.result\[1\]: another image size": {
      "result": [point(5.0, 5.0), point(5.0, 5.0, original_width=64)]
    },
    r"1 to 64 regions, got 65": {"result": [point(5.0, 5.0)] * 65},
  }
  for message, context in bad.items():
    with pytest.raises(backend.BadRequest, match=message):
      served.predict({"tasks": [task], "params": {"context": context}})
  with pytest.raises(backend.BadRequest, match="one task with a context, got 2"):
    served.predict({"tasks": [task, task], "params": {"context": {"result": [point(5.0, 5.0)]}}})
  with pytest.raises(backend.BadRequest, match="the image is 32x32, the regions say 64x64"):
    served.predict(
      {
        "tasks": [task],
        "params": {"context": {"result": [point(5.0, 5.0, original_width=64, original_height=64)]}},
      }
    )
  plain = backend.Backend(workdir, str(tmp_path / "images"), log=lambda _: None)
  with pytest.raises(backend.BadRequest, match="serves no click model or SAM"):
    plain.predict({"tasks": [task], "params": {"context": {"result": [point(5.0, 5.0)]}}})
  config = tasks.labelling_config(DESCRIPTOR, interactive=True)
  root = ET.fromstring(config)
  assert root.find("KeyPointLabels").get("smart") == "true"
  assert [label.get("smart") for label in root.find("RectangleLabels")] == ["true"] * len(
    root.find("BrushLabels")
  )


# ------------------------------------------------------------------------ the loop, live
USER, PASSWORD = "segjax-test", "correct horse battery"


def _get(url, auth=None):
  headers = {"Authorization": auth.header()} if auth else {}
  with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as response:
    return json.load(response)


SAM_TINY = os.path.join(ROOT, "tests", "fixtures", "sam_tiny")


def start_backend(workdir, port, log_path):
  """experiments/label_studio_backend.py serving ``workdir`` (and the tiny SAM fixture for clicks
  and boxes) with the credentials USER and PASSWORD (from the environment); returns the process
  and its /health."""
  log = open(log_path, "ab")  # pylint: disable=consider-using-with
  process = subprocess.Popen(
    [
      sys.executable,
      os.path.join(ROOT, "experiments", "label_studio_backend.py"),
      f"--workdir={workdir}",
      f"--port={port}",
      "--steps=4",
      f"--interactive={SAM_TINY}",
    ],
    stdout=log,
    stderr=subprocess.STDOUT,
    cwd=ROOT,
    env=dict(os.environ, SEGJAX_BACKEND_USER=USER, SEGJAX_BACKEND_PASSWORD=PASSWORD),
  )
  deadline = time.time() + 180
  while time.time() < deadline:
    assert process.poll() is None, open(log_path).read()[-2000:]
    try:
      return process, _get(f"http://127.0.0.1:{port}/health")
    except OSError:
      time.sleep(0.5)
  process.kill()
  raise TimeoutError(open(log_path).read()[-2000:])


@pytest.mark.slow
def test_labelling_loop_with_a_real_label_studio(label_studio_python, straight_run, tmp_path):
  """Label Studio, connected with the backend's user and password (Basic Authentication), asks
  segjax for pre-labels, a person's correction reaches the backend (and survives a SIGKILL right
  after), Start Training fine-tunes a new version, which then serves."""
  from segjax import predict  # pylint: disable=import-outside-toplevel
  from segjax import runs  # pylint: disable=import-outside-toplevel

  del label_studio_python
  _, trained_run, _ = straight_run
  workdir = str(tmp_path / "run")
  shutil.copytree(trained_run, workdir)
  images = str(tmp_path / "served" / "images")
  truth = write_scenes(images, 3)
  port, backend_port = server.free_port(), server.free_port()
  backend_url = f"http://127.0.0.1:{backend_port}"
  studio = server.LabelStudio(
    str(tmp_path / "studio"), port=port, document_root=str(tmp_path / "served")
  )
  backend, processes = None, []
  try:
    studio.start()
    backend, health = start_backend(workdir, backend_port, tmp_path / "backend.log")
    processes.append(backend)
    assert health["model_version"] == "run-v0"
    run = runs.load(workdir)
    project = studio.create_project(
      "cells", tasks.labelling_config(run.descriptor, interactive=True)
    )
    studio.add_local_storage(project, images)
    studio.import_tasks(
      project,
      [
        tasks.task(tasks.local_file_url(os.path.join(images, f"{stem}.png"), studio.document_root))
        for stem in truth
      ],
    )
    ml = studio.connect_backend(
      project, backend_url, user=USER, password=PASSWORD, interactive=True
    )
    studio.retrieve_predictions(project)  # the backend fetches each image from Label Studio

    predictor = predict.Predictor(run)
    items = {os.path.basename(item["data"]["image"])[:-4]: item for item in studio.export(project)}
    assert sorted(items) == sorted(truth)
    for stem, item in items.items():
      [prediction] = studio.api("GET", f"/api/predictions?task={item['id']}")
      assert prediction["model_version"] == "run-v0"
      expected, probs = predict.predict_file(predictor, os.path.join(images, f"{stem}.png"))
      got, _ = tasks.annotation_labels(prediction["result"], run.descriptor, 32, 32)
      np.testing.assert_array_equal(got, expected["semantic"][0])
      assert prediction["score"] == pytest.approx(1 - prelabels.uncertainty(probs), abs=1e-6)

    # Smart tools: a click, then a negative click and a box, through Label Studio to the
    # backend's SAM; the brush mask that comes back is SAM's answer to the same prompts here.
    from segjax.interactive import predictor as interactive  # pylint: disable=import-outside-toplevel

    sam = interactive.load_predictor(SAM_TINY)
    stem = sorted(truth)[0]
    path = os.path.join(images, f"{stem}.png")
    label = run.descriptor.class_names[run.descriptor.thing_classes[0]]
    click = lambda x, y, positive: {
      "type": "keypointlabels",
      "original_width": 32,
      "original_height": 32,
      "is_positive": positive,
      "value": {"x": x / 32 * 100, "y": y / 32 * 100, "width": 1, "keypointlabels": [label]},
    }
    box = {
      "type": "rectanglelabels",
      "original_width": 32,
      "original_height": 32,
      "value": {"x": 12.5, "y": 25.0, "width": 50.0, "height": 37.5, "rectanglelabels": [label]},
    }
    for regions, points, expected_box in (
      ([click(10, 12, True)], [(10, 12, True)], None),
      (
        [click(10, 12, True), click(20, 5, False), box],
        [(10, 12, True), (20, 5, False)],
        (4, 8, 20, 20),
      ),
    ):
      answer = studio.interactive(ml, items[stem]["id"], {"result": regions})
      [region] = answer["result"]
      assert region["value"]["brushlabels"] == [label] and region["from_name"] == tasks.BRUSH
      got = rle.decode(region["value"]["rle"], 32, 32)
      np.testing.assert_array_equal(got, sam.predict(path, points, expected_box))
      assert answer["model_version"] == "run-v0+sam"

    # A person corrects the first image: its ground truth, drawn as brush regions.
    correction = tasks.prediction_result(truth[stem][0], truth[stem][1], run.descriptor)
    annotation = studio.annotate(items[stem]["id"], correction)  # returns after the webhook
    backend.send_signal(signal.SIGKILL)
    backend.wait()
    stored = os.path.join(
      workdir, "labelstudio", "annotations", f"{items[stem]['id']}-{annotation['id']}.json"
    )
    with open(stored) as f:
      kept = json.load(f)
    semantic, _ = tasks.annotation_labels(kept["annotation"]["result"], run.descriptor, 32, 32)
    np.testing.assert_array_equal(semantic, truth[stem][0])

    backend, health = start_backend(workdir, backend_port, tmp_path / "backend.log")
    processes.append(backend)
    studio.train(ml)  # Start Training: a fine-tuning in a separate process
    deadline = time.time() + 300
    while _get(backend_url + "/health")["model_version"] == "run-v0":
      assert time.time() < deadline, open(tmp_path / "backend.log").read()[-3000:]
      time.sleep(1)
    with pytest.raises(urllib.error.HTTPError, match="401"):
      _get(backend_url + "/versions")
    versions = _get(backend_url + "/versions", serving.Credentials(USER, PASSWORD))["versions"]
    assert [(v["version"], v["state"]) for v in versions] == [(0, "trained"), (1, "trained")]
    assert versions[1]["images"] == 1
    version_dir = os.path.join(workdir, "labelstudio", "versions", "v1")
    assert sorted(os.listdir(os.path.join(version_dir, "data", "train", "masks"))) == [
      f"{stem}.png"
    ]
    np.testing.assert_array_equal(
      folder.read_mask(os.path.join(version_dir, "data", "train", "masks", f"{stem}.png")),
      truth[stem][0],
    )
    studio.retrieve_predictions(project)
    newest = studio.api("GET", f"/api/predictions?task={items[stem]['id']}")
    assert sorted(p["model_version"] for p in newest) == ["run-v0", "run-v1"]
    tuned = predict.Predictor(runs.load(version_dir))
    expected, _ = predict.predict_file(tuned, os.path.join(images, f"{stem}.png"))
    [v1] = [p for p in newest if p["model_version"] == "run-v1"]
    got, _ = tasks.annotation_labels(v1["result"], run.descriptor, 32, 32)
    np.testing.assert_array_equal(got, expected["semantic"][0])
  finally:
    for process in processes:
      if process.poll() is None:
        process.terminate()
        process.wait(timeout=30)
    studio.stop()
  assert studio.process.poll() is not None


def test_campaign_tiles_and_pixels_to_reach(tmp_path):
  from segjax.labelstudio import campaign  # pylint: disable=import-outside-toplevel

  image = np.arange(8 * 16, dtype=np.uint16).reshape(8, 16)
  instances = np.zeros((8, 16), np.uint16)
  instances[0:2, 0:2], instances[5:7, 9:11] = 7, 9
  tiles = campaign.write_tiles(str(tmp_path), image, instances, 4)
  assert sorted(os.path.basename(p) for p in tiles["pool"]) == [
    "tile_0000_0000.tif",
    "tile_0000_0004.tif",
    "tile_0004_0000.tif",
    "tile_0004_0004.tif",
  ]
  assert len(tiles["held_out"]) == 4  # the right half's columns 8..15
  first = os.path.join(str(tmp_path), "pool", "tile_0000_0000.tif")
  np.testing.assert_array_equal(folder.read_image(first)[..., 0], image[:4, :4])
  assert tiles["pool"][first].max() == 1 and tiles["pool"][first][:2, :2].all()  # renumbered
  held = tiles["held_out"][os.path.join(str(tmp_path), "held_out", "tile_0004_0008.tif")]
  assert held.sum() == 4 and held[1:3, 1:3].all()
  rows = [
    {"iou": 0.5, "pixels_corrected": 10},
    {"iou": 0.72, "pixels_corrected": 25},
    {"iou": 0.81, "pixels_corrected": 40},
  ]
  pixels = lambda row: row["pixels_corrected"]
  assert campaign.cost_to_reach(rows, 0.7, pixels) == 25
  assert campaign.cost_to_reach(rows, 0.8, pixels) == 40
  assert campaign.cost_to_reach(rows, 0.9, pixels) is None


class _PerfectClicker:
  """A click "model" that answers with the whole true object under its first positive click."""

  def __init__(self, instances):
    self.instances, self.previous = instances, []

  def predict(self, path, points, previous=None):
    del path
    self.previous.append(None if previous is None else previous.copy())
    positive = [(x, y) for x, y, p in points if p]
    if not positive:
      return np.zeros(self.instances.shape, bool)
    x, y = positive[0]
    number = self.instances[y, x]
    return (self.instances == number) & (number > 0)


def test_campaign_counts_clicks_per_object_in_each_mode():
  from segjax.labelstudio import campaign  # pylint: disable=import-outside-toplevel

  instances = np.zeros((40, 40), np.int32)
  rows, cols = np.ogrid[:40, :40]
  instances[(rows - 8) ** 2 + (cols - 8) ** 2 <= 9] = 1  # the disk one radius-3 click paints
  instances[20:30, 20:30] = 2  # 100 pixels: one disk (29 pixels, inside it) gives IoU 0.29
  prelabel = np.zeros_like(instances)
  prelabel[instances == 1] = 5  # exact: no click
  prelabel[20:30, 20:25] = 6  # half of object 2 (IoU 0.5): one positive click in the missed half
  prelabel[35:38, 2:5] = 7  # covers no object: one click deletes it
  clicker = _PerfectClicker(instances)
  costs = campaign.click_costs(
    clicker, "tile.tif", instances, prelabel, radius=3, target=0.9, max_clicks=1
  )
  assert costs == {
    "objects": 2,
    "prelabel": 0 + 1 + 1,
    "clicks": 1 + 1,
    "painting": 1 + 1,
    "failures_prelabel": 0,
    "failures_clicks": 0,
    "failures_painting": 1,
    "best_iou_prelabel": 1.0 + 1.0,
    "best_iou_clicks": 1.0 + 1.0,
    "best_iou_painting": 1.0 + 29 / 100,
  }
  # The model reads the pre-label as the object's previous mask, else an empty one.
  assert sum(p is not None and np.array_equal(p, prelabel == 6) for p in clicker.previous) == 1


def test_gain_per_click_and_objects_per_pixel_on_a_hand_made_tile(monkeypatch):
  from segjax import predict  # pylint: disable=import-outside-toplevel
  from segjax.labelstudio import campaign  # pylint: disable=import-outside-toplevel

  probabilities = np.zeros((4, 4, 2))
  probabilities[..., 0] = 1.0
  probabilities[:2, :, :] = 0.5  # 8 pixels of entropy log 2
  instance = np.zeros((4, 4), np.uint16)
  instance[0, 0], instance[3, 3] = 1, 2
  monkeypatch.setattr(
    predict, "predict_file", lambda predictor, path: ({"instance": [instance]}, probabilities)
  )
  predictor = types.SimpleNamespace(descriptor=None)
  assert campaign.gain_per_click(predictor, "tile.tif") == pytest.approx(8 * np.log(2) / 3)
  # objects_per_pixel: 2 objects over 1 + 8 x (1 - 0.5) expected error pixels.
  assert campaign.objects_per_pixel(predictor, "tile.tif") == pytest.approx(2 / 5)


def test_farthest_first_is_k_center_greedy_on_standardised_features():
  from segjax.labelstudio import campaign  # pylint: disable=import-outside-toplevel

  # One feature at 0, 1, 2, 10 (and a constant one, which standardisation ignores): from "a" the
  # farthest is "d"; then "c" (2 from "a"; "b" is 1 from it).
  descriptors = {"a": [0.0, 5.0], "b": [1.0, 5.0], "c": [2.0, 5.0], "d": [10.0, 5.0]}
  assert campaign.farthest_first(descriptors, ["a"], 2) == ["d", "c"]
  assert campaign.farthest_first(descriptors, ["a", "d"], 1) == ["c"]
  # Standardised (z-scores: b is 2.31 from a, d 2.24, c 1.68), not raw (d 40, c 30, b 1).
  scaled = {"a": [0.0, 0.0], "b": [1.0, 0.0], "c": [0.0, 30.0], "d": [0.0, 40.0]}
  assert campaign.farthest_first(scaled, ["a"], 1) == ["b"]
  # More asked than remain: every remaining key, once.
  assert campaign.farthest_first(descriptors, ["a", "b"], 5) == ["d", "c"]
