"""Speed measurements behind experiments/benchmark.py (every table of docs/performance.md).

Sections (each a function returning rows of a table):

* ``models``: for each config, the trainer's own compiled train step (`segjax.train.
  make_train_step` with the config's model, optimizer and objective) and the evaluator's compiled
  forward pass with post-processing, on random data of the pipeline's shapes: compile seconds,
  median step time, images/s, FLOPs (XLA's cost analysis) and utilisation against the device's
  peak (datasheet; on CPU a measured float32 matmul);
* ``scaling``: one config's train step on 1, 2, 4, ... devices at a fixed batch per device;
* ``metrics``: the on-device metric accumulation against the evaluation forward pass;
* ``pipeline``: tf.data examples/s against what the train step consumes;
* ``resume``: seconds to the first training batch at step 0 and at step 50,000 (the stream is
  indexed: nothing before the start is read);
* ``inference``: the padded sliding window against the plain forward pass, and a large image
  written strip by strip (peak memory measured in a fresh process);
* ``backend``: the Label Studio ML backend's /predict latency under concurrent load while an
  annotation arrives and a fine-tuning runs.

Every time is the median of ``repeats`` runs after ``warmup`` runs, each ended by
``block_until_ready``.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from segjax import chips
from segjax import metrics
from segjax import models
from segjax import runs
from segjax import sharding
from segjax import train
from segjax.data import pipeline
from segjax.data import shapes


@dataclasses.dataclass
class Timing:
  repeats: int = 5
  warmup: int = 1

  def run(self, compiled, *args, feed=None) -> list[float]:
    """Seconds of ``compiled(*args)`` per run; ``feed(out, args) -> args`` passes donated state
    on (the train step donates its state)."""
    runs_s = []
    for i in range(self.warmup + self.repeats):
      start = time.perf_counter()
      out = jax.block_until_ready(compiled(*args))
      if i >= self.warmup:
        runs_s.append(time.perf_counter() - start)
      if feed is not None:
        args = feed(out, args)
    return runs_s

  def call(self, fn, *args) -> dict:
    """Compile seconds and the median seconds of ``jax.jit(fn)(*args)``."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    return {"compile_s": compile_s, "median_s": statistics.median(self.run(compiled, *args))}


def peak_flops(dtype: str, timing: Timing) -> tuple[float, str]:
  kind = jax.devices()[0].device_kind
  chip = chips.for_device_kind(kind)  # float32 on NVIDIA tensor cores: TF32 at JAX's default
  if chip is not None:
    peak = chip.peak_flops if dtype == "bfloat16" else (chip.peak_flops_f32 or chip.peak_flops)
    return peak, f"{kind} datasheet"
  a = jnp.asarray(np.random.default_rng(0).normal(size=(2048, 2048)), jnp.float32)
  seconds = timing.call(lambda x: x @ x, a)["median_s"]
  return 2 * 2048**3 / seconds, f"measured {jax.devices()[0].platform} float32 matmul"


def random_batch(abstract: dict, num_classes: int, seed: int = 0) -> dict:
  """Random numpy arrays of the shapes and dtypes of ``abstract`` (class ids for ``semantic``)."""
  rng = np.random.default_rng(seed)
  out = {}
  for key, spec in abstract.items():
    if key == "semantic":
      out[key] = rng.integers(0, num_classes, spec.shape).astype(spec.dtype)
    elif np.issubdtype(spec.dtype, np.integer) or spec.dtype == np.bool_:
      out[key] = np.zeros(spec.shape, spec.dtype)
    else:
      out[key] = rng.normal(size=spec.shape).astype(spec.dtype)
  return out


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get("flops", float("nan")))


def config_row(config, mesh, batch_per_device: int, timing: Timing) -> dict:
  """The trainer's train step and the evaluator's compiled forward pass of ``config`` on
  ``mesh``, timed on random data of the pipeline's shapes (no dataset is read)."""
  info = pipeline.dataset_info(config.data)
  descriptor = info.descriptor
  config = config.copy_and_resolve_references()
  config.batch_size = batch_per_device * mesh.devices.size
  trainer = train.setup(config, mesh=mesh, data=False)
  abstract = pipeline.abstract_train_batch(config.data, info, config.batch_size)
  batch = sharding.global_batch(random_batch(abstract, descriptor.num_classes), mesh)
  sums = trainer.zero_sums(abstract)
  row = {
    "model": config.model.name,
    "dtype": config.model.get("dtype", "float32"),
    "params": models.count_params(trainer.state.params),
    "image": list(config.data.crop_size),
    "batch_per_device": batch_per_device,
    "devices": mesh.devices.size,
  }
  start = time.perf_counter()
  step = trainer.train_step().lower(trainer.state, sums, batch).compile()
  row["train_compile_s"] = time.perf_counter() - start
  row["train_flops"] = _flops(step)
  last = {}

  def feed(out, args):  # the step donates its state: go on with the one it returned
    last["state"] = out[0]
    return out[0], out[1], args[2]

  train_s = statistics.median(timing.run(step, trainer.state, sums, batch, feed=feed))
  variables = last["state"].variables
  evaluator = trainer.evaluator(panoptic_labels=info.instances)
  images = batch["image"]
  start = time.perf_counter()
  predict = evaluator.predict.lower(variables, images).compile()
  row["infer_compile_s"] = time.perf_counter() - start
  row["infer_flops"] = _flops(predict)
  infer_s = statistics.median(timing.run(predict, variables, images))
  for what, seconds in (("train", train_s), ("infer", infer_s)):
    row[f"{what}_ms"] = 1e3 * seconds
    row[f"{what}_images_per_s"] = config.batch_size / seconds
    row[f"{what}_flops_per_s"] = row[f"{what}_flops"] / seconds
  return row


def models_section(configs: dict, timing: Timing, batch_per_device: int = 8) -> list[dict]:
  """`config_row` of every ``{name: config}`` on one device, with utilisation."""
  mesh = sharding.make_mesh(1)
  rows = []
  for name, config in configs.items():
    row = config_row(config, mesh, batch_per_device, timing)
    peak, source = peak_flops(row["dtype"], timing)
    row.update(
      section="models",
      config=name,
      peak_flops=peak,
      peak_source=source,
      train_utilisation=row["train_flops_per_s"] / peak,
      infer_utilisation=row["infer_flops_per_s"] / peak,
    )
    rows.append(row)
  return rows


def scaling_section(config, timing: Timing, batch_per_device: int = 8) -> list[dict]:
  """Weak scaling of ``config``'s train step over 1, 2, 4, ... of the devices."""
  counts = [n for n in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if n <= jax.device_count()]
  if counts[-1] != jax.device_count():
    counts.append(jax.device_count())
  rows = []
  for n in counts:
    row = config_row(config, sharding.make_mesh(n), batch_per_device, timing)
    base = rows[0]["train_images_per_s"] if rows else row["train_images_per_s"]
    row.update(section="scaling", efficiency=row["train_images_per_s"] / (base * n))
    rows.append(row)
  return rows


def metrics_section(timing: Timing, batch: int = 2, size=(512, 1024), features: int = 32):
  """Evaluation forward pass vs metric accumulation on 19-class images (the Cityscapes shape)."""
  num_classes, (height, width) = 19, size
  things, stuff = list(range(11, 19)), list(range(11))
  model = models.create("unet", num_classes=num_classes, features=features, depth=4)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(batch, height, width, 3)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, num_classes, (batch, height, width)), jnp.int32)
  panoptic = labels * 1000 + jnp.asarray(rng.integers(0, 20, (batch, height, width)) // 4)
  variables = jax.jit(lambda x: model.init(jax.random.key(0, impl="rbg"), x, train=False))(
    images[:1]
  )
  confusion = jnp.zeros((num_classes, num_classes), jnp.int32)
  forward = lambda v, x: metrics.argmax_prediction(model.apply(v, x, train=False)["logits"])
  accumulate = lambda cm, p, l: cm + metrics.confusion_matrix(p, l, num_classes)
  pq_sums = lambda p, g: metrics.panoptic_sums(
    p, g, num_classes=num_classes, label_divisor=1000, thing_classes=things, stuff_classes=stuff
  )
  predictions = jax.jit(forward)(variables, images)
  timings = {
    "eval forward (UNet, argmax)": timing.call(forward, variables, images),
    "confusion matrix": timing.call(accumulate, confusion, predictions, labels),
    "forward + confusion matrix": timing.call(
      lambda v, x, cm, l: accumulate(cm, forward(v, x), l), variables, images, confusion, labels
    ),
    "panoptic-quality sums": timing.call(pq_sums, panoptic, panoptic),
  }
  base = timings["eval forward (UNet, argmax)"]["median_s"]
  return [
    {
      "section": "metrics",
      "what": name,
      "shape": f"{batch}x{height}x{width}, {num_classes} classes",
      "median_ms": 1e3 * t["median_s"],
      "compile_s": t["compile_s"],
      "relative_to_forward": t["median_s"] / base,
    }
    for name, t in timings.items()
  ]


def pipeline_section(configs: dict, timing: Timing, batches: int = 100) -> list[dict]:
  """Input pipeline examples/s vs the train step's consumption (examples/s)."""
  rows = []
  for label, config in configs.items():
    trainer = train.setup(config)
    train_ds = trainer.train_dataset()
    iterator = pipeline.as_numpy(train_ds)
    for _ in range(10):  # warm-up: fills caches and shuffle buffers
      batch = next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
      next(iterator)
    pipeline_rate = batches * config.batch_size / (time.perf_counter() - start)
    abstract = train.abstract_batch(train_ds.element_spec, config.batch_size)
    sums = trainer.zero_sums(abstract)
    device_batch = sharding.global_batch(batch, trainer.mesh)
    step = trainer.train_step().lower(trainer.state, sums, device_batch).compile()
    seconds = statistics.median(
      timing.run(
        step, trainer.state, sums, device_batch, feed=lambda out, args: (out[0], out[1], args[2])
      )
    )
    step_rate = config.batch_size / seconds
    rows.append(
      {
        "section": "pipeline",
        "what": label,
        "shape": f"batch {config.batch_size} of {tuple(config.data.crop_size)}",
        "median_ms": 1e3 * seconds,
        "pipeline_examples_per_s": pipeline_rate,
        "step_examples_per_s": step_rate,
        "pipeline_over_step": pipeline_rate / step_rate,
      }
    )
  return rows


def resume_section(
  config, timing: Timing, steps=(0, 50_000), num_images: int = 2000, side: int = 256
) -> list[dict]:
  """Seconds from building the training stream to its first batch, started at each of ``steps``,
  on a folder dataset of ``num_images`` scenes of ``side``² (written and prepared first, untimed):
  whole images, and ``config``'s patches (its grid, labelled-fraction filter and class-balanced
  sampling). Also the stream's examples/s and what skipping the examples before the last step
  at that rate would take."""
  root = tempfile.mkdtemp(prefix="segjax-resume-")
  try:
    return _resume_rows(config, timing, root, steps, num_images, side)
  finally:
    shutil.rmtree(root, ignore_errors=True)


def _resume_rows(config, timing, root, steps, num_images, side) -> list[dict]:
  shapes.write_folder(root, side, {"train": num_images, "val": 2}, max_things=12)
  data = config.data.copy_and_resolve_references()
  data.update(dict(name="folder", root=root, data_dir=os.path.join(root, ".prepared")))
  source = pipeline.get_source(data)
  batch = config.batch_size
  rows = []
  variants = {
    "whole images": dict(
      patch_size=None, crop_size=(side, side), train_pp=f"flip_lr|random_crop({side})"
    ),
    "patches, class-balanced": {},
  }
  for variant, changes in variants.items():
    variant_data = data.copy_and_resolve_references()
    variant_data.update(changes)

    def first_batch(step, data=variant_data):
      start = time.perf_counter()
      ds = pipeline.train_dataset(source, data, local_batch_size=batch, seed=0, start_step=step)
      iterator = pipeline.as_numpy(ds, source)
      next(iterator)
      return time.perf_counter() - start, iterator

    first_batch(steps[0])  # warm-up
    runs_ = [[first_batch(step)[0] for step in steps] for _ in range(timing.repeats)]  # alternating
    seconds = {step: statistics.median(r[i] for r in runs_) for i, step in enumerate(steps)}
    _, iterator = first_batch(0)
    start = time.perf_counter()
    for _ in range(20):
      next(iterator)
    rate = 20 * batch / (time.perf_counter() - start)
    rows.append(
      {
        "section": "resume",
        "what": variant,
        "images": num_images,
        "shape": f"{side}×{side}, batch {batch}",
        "first_batch_s": seconds,
        "ratio": seconds[steps[-1]] / seconds[steps[0]],
        "examples_per_s": rate,
        "skip_s": steps[-1] * batch / rate,
      }
    )
  return rows


def _quickstart_model(config):
  model = models.from_config(config.model, 5)
  variables = jax.jit(lambda x: model.init(jax.random.key(0, impl="rbg"), x, train=False))(
    jnp.zeros((1, *runs.input_shape(config)))
  )
  return model, variables


def inference_section(config, timing: Timing, side: int = 2048, large_side: int = 0):
  """Sliding window vs the plain batched forward pass on the same tiles (``config``'s model)."""
  from segjax import inference  # pylint: disable=import-outside-toplevel

  model, variables = _quickstart_model(config)
  apply_fn = lambda x: model.apply(variables, x, train=False)["logits"]
  window, batch = (256, 256), 8
  image = np.random.default_rng(0).normal(size=(side, side, 3)).astype(np.float32)
  sliding = lambda: inference.sliding_window_predict(
    apply_fn, image, window=window, overlap=0.25, batch_size=batch
  )
  sliding()  # compile
  runs_s = []
  for _ in range(max(1, timing.repeats // 2)):
    start = time.perf_counter()
    sliding()
    runs_s.append(time.perf_counter() - start)
  grid = inference.SlidingWindow(side, side, window, 0.25)
  tiles = len(grid.rows) * len(grid.cols)
  x = jnp.asarray(image[: window[0], : window[1]][None].repeat(batch, 0))
  plain = timing.call(apply_fn, x)["median_s"] * -(-tiles // batch)
  megapixels = side * side / 1e6
  rows = [
    {
      "section": "inference",
      "what": f"sliding window {window[0]}² overlap 0.25, Gaussian",
      "shape": f"{side}×{side}, {tiles} windows",
      "seconds": statistics.median(runs_s),
      "megapixels_per_s": megapixels / statistics.median(runs_s),
    },
    {
      "section": "inference",
      "what": "plain batched forward, same windows",
      "shape": f"{tiles} windows of {window[0]}²",
      "seconds": plain,
      "megapixels_per_s": megapixels / plain,
    },
  ]
  if large_side:
    rows.append(_large_image_row(large_side, window))
  return rows


_LARGE_IMAGE = """
import resource, sys, time, numpy as np, jax, jax.numpy as jnp
from segjax import inference, models
side, folder = int(sys.argv[1]), sys.argv[2]
image = np.lib.format.open_memmap(folder + "/image.npy", "w+", np.uint8, (side, side, 3))
for y in range(0, side, 1000):
  image[y:y + 1000] = np.random.default_rng(y).integers(0, 256, (min(1000, side - y), side, 3))
image.flush(); del image
image = np.load(folder + "/image.npy", mmap_mode="r")
model = models.create("unet", num_classes=5, features=8, depth=4)
variables = jax.jit(lambda x: model.init(jax.random.key(0, impl="rbg"), x, train=False))(
    jnp.zeros((1, 64, 64, 3)))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
inference.sliding_window_to_file(lambda x: model.apply(variables, x, train=False)["logits"],
                                 image, folder + "/labels.npy", window=(256, 256), batch_size=8)
print(time.perf_counter() - start, before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _large_image_row(side, window) -> dict:
  """Predicts a random side×side image strip by strip in a fresh process; reports its peak RSS."""
  with tempfile.TemporaryDirectory(prefix="segjax-large-image-") as folder:
    out = subprocess.run(
      [sys.executable, "-c", _LARGE_IMAGE, str(side), folder],
      check=True,
      capture_output=True,
      text=True,
    )
  seconds, before_kb, peak_kb = (float(v) for v in out.stdout.split()[-3:])
  return {
    "section": "inference",
    "what": "strips to file (memory-mapped image and labels)",
    "shape": f"{side}×{side}, window {window[0]}²",
    "seconds": seconds,
    "megapixels_per_s": side * side / 1e6 / seconds,
    "peak_rss_gb": peak_kb / 1e6,
    "rss_before_gb": before_kb / 1e6,
  }


_RASTER = """
import resource, sys, time, numpy as np, jax, jax.numpy as jnp, rasterio
from rasterio.transform import from_origin
from segjax import config_defaults, geo, models, predict, runs
from segjax.data import shapes
side, folder = int(sys.argv[1]), sys.argv[2]
profile = dict(driver="GTiff", height=side, width=side, count=3, dtype="uint8", crs="EPSG:32633",
               transform=from_origin(600000.0, 5800000.0, 0.1, 0.1), tiled=True, blockxsize=512,
               blockysize=512, compress="deflate", BIGTIFF="YES", nodata=0)
with rasterio.open(folder + "/ortho.tif", "w", **profile) as dst:
  for y in range(0, side, 1024):
    rows = min(1024, side - y)
    block = np.random.default_rng(y).integers(1, 256, (3, rows, side), dtype=np.uint8)
    dst.write(block, window=rasterio.windows.Window(0, y, side, rows))
config = config_defaults.load_config("configs/unet_shapes.py")
config.inference.window = (512, 512)
model = models.from_config(config.model, 5)
variables = jax.jit(lambda x: model.init(jax.random.key(0, impl="rbg"), x, train=False))(
    jnp.zeros((1, 64, 64, 3)))
predictor = predict.Predictor(runs.Run(config, shapes.DESCRIPTOR, model, variables), config)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
geo.predict_raster(predictor, folder + "/ortho.tif", folder + "/classes.tif")
print(time.perf_counter() - start, before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def raster_section(side: int = 20_000) -> list[dict]:
  """A side×side 3-band GeoTIFF (random, tiled, DEFLATE) predicted by windows of 512² into a class
  GeoTIFF (`segjax.geo.predict_raster`, the quickstart's UNet, untrained) in a fresh process: time
  and peak RSS. The input alone would take side²·3 bytes in memory."""
  folder = tempfile.mkdtemp()
  try:
    out = subprocess.run(
      [sys.executable, "-c", _RASTER, str(side), folder],
      check=True,
      capture_output=True,
      text=True,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
  finally:
    shutil.rmtree(folder, ignore_errors=True)
  seconds, before_kb, peak_kb = (float(v) for v in out.stdout.split()[-3:])
  return [
    {
      "section": "raster",
      "what": "GeoTIFF by windows to a class GeoTIFF",
      "shape": f"{side}×{side}×3 ({side * side * 3 / 1e9:.1f} GB raw), window 512²",
      "seconds": seconds,
      "megapixels_per_s": side * side / 1e6 / seconds,
      "peak_rss_gb": peak_kb / 1e6,
      "rss_before_gb": before_kb / 1e6,
    }
  ]


def backend_section(
  workdir: str, concurrency: int = 32, sides=(64, 128, 256, 512, 1024), steps: int = 20
) -> list[dict]:
  """The Label Studio ML backend serving the run at ``workdir`` (a copy, removed after) on
  loopback with credentials: ``concurrency`` /predict requests at once, one image each, sides
  cycling through ``sides``, while an annotation webhook arrives and a fine-tuning of ``steps``
  steps runs (`segjax.labelstudio.load.run_load`; each size predicted once before, so compiling
  is not timed). Rows: latency percentiles of all requests and of each size, the webhook's, and
  the fine-tuning's seconds."""
  import threading  # pylint: disable=import-outside-toplevel
  from segjax.labelstudio import backend  # pylint: disable=import-outside-toplevel
  from segjax.labelstudio import load  # pylint: disable=import-outside-toplevel
  from segjax.labelstudio import serving  # pylint: disable=import-outside-toplevel
  from segjax.labelstudio import tasks  # pylint: disable=import-outside-toplevel
  import cv2  # pylint: disable=import-outside-toplevel

  folder = tempfile.mkdtemp()
  try:
    run_copy = os.path.join(folder, os.path.basename(os.path.abspath(workdir)))
    shutil.copytree(workdir, run_copy, ignore=shutil.ignore_patterns("labelstudio"))
    os.makedirs(os.path.join(folder, "images"))
    truth = {}
    for side in sides:
      image, semantic, instance = shapes.render_scene(np.random.default_rng(side), side, 3)
      cv2.imwrite(os.path.join(folder, "images", f"scene_{side}.png"), image[..., ::-1])
      truth[side] = (semantic, instance)
    served = backend.Backend(
      run_copy, os.path.join(folder, "images"), steps=steps, log=lambda _: None
    )
    credentials = serving.Credentials("benchmark", "benchmark")
    http = serving.make_server(served, "127.0.0.1", 0, credentials=credentials)
    url = f"http://127.0.0.1:{http.server_address[1]}"
    threading.Thread(target=http.serve_forever, daemon=True).start()
    try:
      for side in sides:  # compiled before the clock starts
        load.post(
          url + "/predict",
          {"tasks": [{"data": {"image": f"/data/upload/scene_{side}.png"}}]},
          credentials,
        )
      asked = [sides[i % len(sides)] for i in range(concurrency)]
      annotation = {
        "task": {"id": 1, "data": {"image": f"/data/upload/scene_{sides[0]}.png"}},
        "annotation": {
          "id": 1,
          "result": tasks.prediction_result(*truth[sides[0]], served.predictor.descriptor),
        },
      }
      start = time.perf_counter()
      out = load.run_load(
        url,
        [f"/data/upload/scene_{s}.png" for s in asked],
        credentials,
        concurrency=concurrency,
        annotation=annotation,
        train=True,
      )
      served.wait_for_training()
      train_s = time.perf_counter() - start
      versions = served.versions()
    finally:
      http.shutdown()
      http.server_close()
  finally:
    shutil.rmtree(folder, ignore_errors=True)
  failed = [answer for status, answer, _ in out["predictions"] if status != 200]
  if failed or out["webhook"][0] != 200 or versions[-1]["state"] != "trained":
    raise RuntimeError(
      f"the backend failed under load: {failed[:3]}, webhook {out['webhook']}, versions {versions}"
    )
  served_by = sorted({a["results"][0]["model_version"] for _, a, _ in out["predictions"]})

  def row(what, seconds):
    return {
      "section": "backend",
      "what": what,
      "requests": len(seconds),
      "concurrency": concurrency,
      **load.percentiles(seconds),
    }

  rows = [row(f"/predict, {min(sides)}² to {max(sides)}²", [s for _, _, s in out["predictions"]])]
  rows += [
    row(f"/predict, {side}²", [s for (_, _, s), a in zip(out["predictions"], asked) if a == side])
    for side in sides
  ]
  rows[0].update(
    wall_s=out["wall_s"],
    webhook_s=out["webhook_s"],
    served_by=served_by,
    fine_tune_s=train_s,
    fine_tune_steps=steps,
  )
  return rows


def interactive_section(timing: Timing, click_run: str | None = None, side: int = 512):
  """Per-click latency on a ``side`` x ``side`` image file, after its per-image work, and that
  work itself (SAM's image embedding; the click model's reading and normalisation), of the
  click model of ``click_run`` (if given) and of a randomly initialised SAM ViT-B at 1024x1024:
  medians of ``timing.repeats`` runs after ``timing.warmup``."""
  import cv2  # pylint: disable=import-outside-toplevel

  from segjax import runs as runs_lib  # pylint: disable=import-outside-toplevel
  from segjax.interactive import predictor as interactive  # pylint: disable=import-outside-toplevel
  from segjax.models import sam  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(0)
  predictors = []
  if click_run:
    predictors.append(
      (
        "click model (" + os.path.basename(click_run.rstrip("/")) + ")",
        interactive.ClickModelPredictor(runs_lib.load(click_run)),
      )
    )
  model = models.create("sam", variant="vit_b")
  variables = jax.jit(lambda k: sam.init_variables(model, k))(jax.random.key(0))
  predictors.append(("SAM ViT-B (random weights)", interactive.SamPredictor(model, variables)))
  rows = []
  with tempfile.TemporaryDirectory(prefix="segjax-bench-clicks-") as directory:
    path = os.path.join(directory, "image.png")
    cv2.imwrite(path, rng.integers(0, 255, (side, side, 3), dtype=np.uint8))
    for name, predictor in predictors:
      start = time.perf_counter()
      predictor.predict(path, [(side / 2, side / 2, True)])  # compiles, fills the cache
      first_s = time.perf_counter() - start
      prepare = [predictor.prepare(path) for _ in range(timing.warmup)]
      embed_s = []
      for _ in range(timing.repeats):
        start = time.perf_counter()
        prepare = predictor.prepare(path)
        embed_s.append(time.perf_counter() - start)
      del prepare
      clicks, click_s = [(side / 2, side / 2, True)], []
      for i in range(timing.warmup + timing.repeats):
        clicks.append((float(rng.integers(0, side)), float(rng.integers(0, side)), bool(i % 2)))
        start = time.perf_counter()
        predictor.predict(path, clicks[:3])
        if i >= timing.warmup:
          click_s.append(time.perf_counter() - start)
      rows.append(
        {
          "section": "interactive",
          "what": name,
          "shape": f"{side}x{side}",
          "first_call_s": first_s,
          "embedding_ms": 1000 * statistics.median(embed_s),
          "click_ms": 1000 * statistics.median(click_s),
        }
      )
  return rows


def machine() -> dict:
  device = jax.devices()[0]
  return {
    "platform": device.platform,
    "device_kind": device.device_kind,
    "devices": jax.device_count(),
    "cpu": platform.processor() or platform.machine(),
    "cpu_count": os.cpu_count(),
    "jax": jax.__version__,
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }


def markdown(rows: list[dict]) -> str:
  """The tables of the rows, one per section."""
  lines = []
  model_rows = [r for r in rows if r["section"] == "models"]
  if model_rows:
    r0 = model_rows[0]
    lines += [
      f"Configs' train steps (batch {r0['batch_per_device']}, one device; utilisation "
      f"against {r0['peak_flops'] / 1e9:.0f} GFLOP/s, {r0['peak_source']}):",
      "",
      "| config | model | params | input | compile s (train/infer) | train step ms | "
      "train img/s | infer ms | infer img/s | util. train/infer |",
      "|---|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
      f"| {r['config']} | {r['model']} | {r['params'] / 1e6:.2f} M | "
      f"{r['image'][0]}×{r['image'][1]} | {r['train_compile_s']:.1f} / "
      f"{r['infer_compile_s']:.1f} | {r['train_ms']:.1f} | {r['train_images_per_s']:.1f} | "
      f"{r['infer_ms']:.1f} | {r['infer_images_per_s']:.1f} | "
      f"{100 * r['train_utilisation']:.0f}% / {100 * r['infer_utilisation']:.0f}% |"
      for r in model_rows
    ]
  scaling_rows = [r for r in rows if r["section"] == "scaling"]
  if scaling_rows:
    lines += ["", "| devices | train img/s | efficiency |", "|---:|---:|---:|"]
    lines += [
      f"| {r['devices']} | {r['train_images_per_s']:.1f} | {100 * r['efficiency']:.0f}% |"
      for r in scaling_rows
    ]
  metric_rows = [r for r in rows if r["section"] == "metrics"]
  if metric_rows:
    lines += [
      "",
      "| what | shape | median ms | compile s | × forward |",
      "|---|---|---:|---:|---:|",
    ]
    lines += [
      f"| {r['what']} | {r['shape']} | {r['median_ms']:.1f} | {r['compile_s']:.1f} | "
      f"{r['relative_to_forward']:.3f} |"
      for r in metric_rows
    ]
  pipeline_rows = [r for r in rows if r["section"] == "pipeline"]
  if pipeline_rows:
    lines += [
      "",
      "| config | batch | pipeline examples/s | train step examples/s | pipeline ÷ step |",
      "|---|---|---:|---:|---:|",
    ]
    lines += [
      f"| {r['what']} | {r['shape']} | {r['pipeline_examples_per_s']:.0f} | "
      f"{r['step_examples_per_s']:.0f} | {r['pipeline_over_step']:.1f} |"
      for r in pipeline_rows
    ]
  resume_rows = [r for r in rows if r["section"] == "resume"]
  if resume_rows:
    first, last = list(resume_rows[0]["first_batch_s"])[:: len(resume_rows[0]["first_batch_s"]) - 1]
    lines += [
      "",
      f"| training stream of {resume_rows[0]['images']} images | images, batch | "
      f"first batch at step {first:,} (s) | at step {last:,} (s) | ratio | examples/s | "
      f"skipping {last:,} steps at that rate (s) |",
      "|---|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
      f"| {r['what']} | {r['shape']} | {r['first_batch_s'][first]:.2f} | "
      f"{r['first_batch_s'][last]:.2f} | {r['ratio']:.2f} | {r['examples_per_s']:.0f} | "
      f"{r['skip_s']:,.0f} |"
      for r in resume_rows
    ]
  inference_rows = [r for r in rows if r["section"] in ("inference", "raster")]
  if inference_rows:
    lines += [
      "",
      "| inference | image | seconds | megapixels/s | peak RSS |",
      "|---|---|---:|---:|---:|",
    ]
    lines += [
      f"| {r['what']} | {r['shape']} | {r['seconds']:.2f} | {r['megapixels_per_s']:.2f} | "
      f"{r.get('peak_rss_gb', float('nan')):.2f} GB |"
      for r in inference_rows
    ]
  interactive_rows = [r for r in rows if r["section"] == "interactive"]
  if interactive_rows:
    lines += [
      "",
      "| interactive | image | per image (embedding) ms | per click ms | first call s |",
      "|---|---|---:|---:|---:|",
    ]
    lines += [
      f"| {r['what']} | {r['shape']} | {r['embedding_ms']:.0f} | {r['click_ms']:.0f} | "
      f"{r['first_call_s']:.1f} |"
      for r in interactive_rows
    ]
  backend_rows = [r for r in rows if r["section"] == "backend"]
  if backend_rows:
    r0 = backend_rows[0]
    lines += [
      "",
      f"{r0['concurrency']} requests at once while an annotation arrives and a "
      f"{r0['fine_tune_steps']}-step fine-tuning runs ({r0['fine_tune_s']:.0f} s; answered "
      f"by {', '.join(r0['served_by'])}; all {r0['requests']} in {r0['wall_s']:.1f} s; "
      f"the webhook answered in {r0['webhook_s']:.2f} s):",
      "",
      "| requests | n | p50 s | p90 s | p99 s | max s |",
      "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
      f"| {r['what']} | {r['requests']} | {r['p50']:.2f} | {r['p90']:.2f} | "
      f"{r['p99']:.2f} | {r['max']:.2f} |"
      for r in backend_rows
    ]
  return "\n".join(lines)
