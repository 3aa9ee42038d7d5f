"""A load test of a running ML backend: many /predict requests at once while an annotation
arrives and a fine-tuning runs (``segjax.benchmark.backend_section``, tests/test_labelstudio_load.py).
"""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
import urllib.error
import urllib.request

import numpy as np


def post(url: str, payload: dict, credentials=None, timeout: float = 600) -> tuple[int, dict]:
  """``(status, JSON answer)`` of a POST to the backend (HTTP errors included)."""
  headers = {"Content-Type": "application/json"}
  if credentials is not None:
    headers["Authorization"] = credentials.header()
  request = urllib.request.Request(
    url, data=json.dumps(payload).encode(), headers=headers, method="POST"
  )
  try:
    with urllib.request.urlopen(request, timeout=timeout) as response:
      return response.status, json.load(response)
  except urllib.error.HTTPError as e:
    return e.code, json.load(e)


def percentiles(seconds, qs=(50, 90, 99)) -> dict:
  """``{"p50": s, "p90": s, "p99": s, "max": s}`` of a list of latencies."""
  values = np.asarray(seconds, np.float64)
  return {**{f"p{q}": float(np.percentile(values, q)) for q in qs}, "max": float(values.max())}


def run_load(
  url: str,
  images: list[str],
  credentials=None,
  *,
  concurrency: int = 32,
  annotation: dict | None = None,
  train: bool = False,
) -> dict:
  """Sends one /predict per task image URL of ``images``, ``concurrency`` at once (all released
  together), and meanwhile — once the first requests are in — the webhook of ``annotation``
  (``{"task": ..., "annotation": ...}``) and, with ``train``, a POST /train. Returns
  ``{"predictions": [(status, answer, seconds) per image, in order], "webhook": (status,
  answer), "webhook_s", "train": (status, answer), "wall_s"}``."""
  start_line = threading.Barrier(min(concurrency, len(images)) + 1)

  def one(index):
    if index < concurrency:
      start_line.wait()
    start = time.perf_counter()
    status, answer = post(
      url + "/predict",
      {"tasks": [{"id": index + 1, "data": {"image": images[index]}}]},
      credentials,
    )
    return status, answer, time.perf_counter() - start

  out = {"webhook": None, "train": None}
  with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
    futures = [pool.submit(one, i) for i in range(len(images))]
    start_line.wait()
    began = time.perf_counter()
    time.sleep(0.05)  # the predictions are in flight
    if annotation is not None:
      sent = time.perf_counter()
      out["webhook"] = post(
        url + "/webhook", {"action": "ANNOTATION_CREATED", **annotation}, credentials
      )
      out["webhook_s"] = time.perf_counter() - sent
    if train:
      out["train"] = post(url + "/train", {}, credentials)
    out["predictions"] = [f.result() for f in futures]
  out["wall_s"] = time.perf_counter() - began
  return out
