"""The ML backend under load: 32 /predict requests at once (64×64 to 1024×1024 images) while an
annotation arrives and a fine-tuning runs; every answer equals its model version's own
prediction and nothing deadlocks."""

import shutil
import threading

import cv2
import numpy as np
import pytest

from segjax.labelstudio import backend
from segjax.labelstudio import load
from segjax.labelstudio import serving
from segjax.labelstudio import tasks

CREDENTIALS = serving.Credentials("loader", "under load")
SIDES = (64, 128, 256, 512, 1024)


@pytest.mark.slow
def test_32_predictions_at_once_while_an_annotation_trains(straight_run, tmp_path):
  from segjax import predict  # pylint: disable=import-outside-toplevel
  from segjax import runs  # pylint: disable=import-outside-toplevel
  from segjax.data.shapes import render_scene  # pylint: disable=import-outside-toplevel

  _, trained_run, _ = straight_run
  workdir = str(tmp_path / "run")
  shutil.copytree(trained_run, workdir)
  data = tmp_path / "images"
  data.mkdir()
  truth = {}
  for side in SIDES:
    image, semantic, instance = render_scene(np.random.default_rng(side), side, 3)
    cv2.imwrite(str(data / f"scene_{side}.png"), image[..., ::-1])
    truth[side] = (semantic, instance)
  served = backend.Backend(workdir, str(data), steps=4, log=lambda _: None)
  http = serving.make_server(served, "127.0.0.1", 0, credentials=CREDENTIALS)
  url = f"http://127.0.0.1:{http.server_address[1]}"
  threading.Thread(target=http.serve_forever, daemon=True).start()
  sides = [SIDES[i % len(SIDES)] for i in range(32)]
  try:
    annotation = {
      "task": {"id": 900, "data": {"image": "/data/upload/scene_64.png"}},
      "annotation": {
        "id": 1,
        "result": tasks.prediction_result(*truth[64], served.predictor.descriptor),
      },
    }
    out = load.run_load(
      url,
      [f"/data/upload/scene_{s}.png" for s in sides],
      CREDENTIALS,
      concurrency=32,
      annotation=annotation,
      train=True,
    )
    assert out["webhook"] == (200, {"action": "ANNOTATION_CREATED", "stored": True})
    assert out["train"] == (200, {"training": "started"})
    served.wait_for_training(timeout=600)
    assert served._training is None, "the fine-tuning did not finish"
    assert [(v["version"], v["state"]) for v in served.versions()] == [
      (0, "trained"),
      (1, "trained"),
    ]
  finally:
    http.shutdown()
    http.server_close()
  predictors = {f"run-v{v}": predict.Predictor(runs.load(served.version_dir(v))) for v in (0, 1)}
  expected = {}
  for side, (status, answer, seconds) in zip(sides, out["predictions"]):
    assert status == 200 and seconds > 0, answer
    [result] = answer["results"]
    version = result["model_version"]
    if (version, side) not in expected:
      expected[version, side] = predict.predict_file(
        predictors[version], str(data / f"scene_{side}.png")
      )[0]["semantic"][0]
    got, _ = tasks.annotation_labels(result["result"], served.predictor.descriptor, side, side)
    np.testing.assert_array_equal(got, expected[version, side])
  assert {v for v, _ in expected} <= {"run-v0", "run-v1"}
  latencies = load.percentiles([s for _, _, s in out["predictions"]])
  assert latencies["p50"] <= latencies["p90"] <= latencies["p99"] <= latencies["max"]
