r"""Measures segjax's speed; writes JSON and a Markdown table.

  python experiments/benchmark.py --sections=metrics --output=/tmp/segjax/bench

Sections:
  pipeline examples/s of the tf.data training pipeline against what the train step consumes, for the
           quickstart config and the patch config (configs/unet_folder.py on --folder_root, e.g. a
           folder from experiments/make_shapes_folder.py).
  inference sliding-window throughput (megapixels/s) of the quickstart UNet against the plain
           batched forward pass over the same tiles; with --large_image_side, the strip-by-strip
           prediction of a large image to a file, run in a subprocess to measure its peak memory.
  metrics  the cost of the on-device metric accumulation (confusion matrix; panoptic-quality sums)
           relative to the evaluation forward pass, for a batch of 19-class 512x1024 images (the
           Cityscapes shape) through a UNet.

Every time is the median of --repeats runs after --warmup runs, each ended by block_until_ready.
"""
import json
import os
import platform
import statistics
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from segjax import metrics
from segjax import models

_SECTIONS = flags.DEFINE_list("sections", ["metrics"], "Which sections to run.")
_OUTPUT = flags.DEFINE_string("output", None, "Directory for benchmark.json and benchmark.md.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs per measurement (the median is kept).")
_WARMUP = flags.DEFINE_integer("warmup", 1, "Untimed runs after compilation.")
_BATCH = flags.DEFINE_integer("metrics_batch", 2, "Images per batch in the metrics section.")
_SIZE = flags.DEFINE_list("metrics_size", ["512", "1024"], "Height,width in the metrics section.")
_FEATURES = flags.DEFINE_integer("metrics_unet_features", 32, "UNet width in the metrics section.")
_FOLDER = flags.DEFINE_string("folder_root", None, "Folder dataset for the pipeline section's patch "
                              "config (skipped when not given).")
_SIDE = flags.DEFINE_integer("inference_side", 2048, "Image side in the inference section.")
_LARGE = flags.DEFINE_integer("large_image_side", 0, "If > 0: also predict a random image of this "
                              "side strip by strip (e.g. 10000) and report its peak memory.")
_BATCHES = flags.DEFINE_integer("pipeline_batches", 100, "Batches timed in the pipeline section.")


def time_call(fn, *args) -> dict:
  """Compile time, then the median wall time of fn(*args) over the repeats."""
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  compile_s = time.perf_counter() - start
  for _ in range(_WARMUP.value):
    jax.block_until_ready(compiled(*args))
  runs = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    runs.append(time.perf_counter() - start)
  return {"compile_s": compile_s, "median_s": statistics.median(runs), "runs_s": runs}


def metrics_section() -> list[dict]:
  """Eval forward vs metric accumulation on [B, 512, 1024] with 19 classes (Cityscapes)."""
  num_classes, batch = 19, _BATCH.value
  height, width = (int(v) for v in _SIZE.value)
  things, stuff = list(range(11, 19)), list(range(11))  # Cityscapes: 8 thing classes
  model = models.create("unet", num_classes=num_classes, features=_FEATURES.value, depth=4)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(batch, height, width, 3)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, num_classes, (batch, height, width)), jnp.int32)
  panoptic = labels * 1000 + jnp.asarray(rng.integers(0, 20, (batch, height, width)) // 4)
  variables = jax.jit(lambda x: model.init(jax.random.key(0, impl="rbg"), x, train=False))(
      images[:1])
  confusion = jnp.zeros((num_classes, num_classes), jnp.int32)
  forward = lambda v, x: metrics.argmax_prediction(model.apply(v, x, train=False)["logits"])
  accumulate = lambda cm, p, l: cm + metrics.confusion_matrix(p, l, num_classes)
  pq_sums = lambda p, g: metrics.panoptic_sums(p, g, num_classes=num_classes, label_divisor=1000,
                                               thing_classes=things, stuff_classes=stuff)
  predictions = jax.jit(forward)(variables, images)
  timings = {
      "eval forward (UNet, argmax)": time_call(forward, variables, images),
      "confusion matrix": time_call(accumulate, confusion, predictions, labels),
      "forward + confusion matrix": time_call(
          lambda v, x, cm, l: accumulate(cm, forward(v, x), l), variables, images, confusion,
          labels),
      "panoptic-quality sums": time_call(pq_sums, panoptic, panoptic),
  }
  base = timings["eval forward (UNet, argmax)"]["median_s"]
  rows = []
  for name, timing in timings.items():
    rows.append({"section": "metrics", "what": name,
                 "shape": f"{batch}x{height}x{width}, {num_classes} classes",
                 "median_ms": 1e3 * timing["median_s"], "compile_s": timing["compile_s"],
                 "relative_to_forward": timing["median_s"] / base})
  return rows


def _load_config(name):
  import importlib.util  # pylint: disable=import-outside-toplevel
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                      f"{name}.py")
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def pipeline_section() -> list[dict]:
  """Input pipeline examples/s vs the train step's consumption (examples/s) on this machine."""
  from segjax import sharding  # pylint: disable=import-outside-toplevel
  from segjax import train  # pylint: disable=import-outside-toplevel
  from segjax.data import pipeline  # pylint: disable=import-outside-toplevel
  configs = [("quickstart (unet_shapes)", _load_config("unet_shapes"))]
  if _FOLDER.value:
    config = _load_config("unet_folder")
    config.data.root = _FOLDER.value
    configs.append(("patches (unet_folder)", config))
  rows = []
  for label, config in configs:
    mesh, source, model, tx, state = train.setup(config)
    batches = pipeline.as_numpy(pipeline.train_dataset(
        source, config.data, local_batch_size=config.batch_size, seed=0))
    for _ in range(10):  # warm-up: fills caches and shuffle buffers
      batch = next(batches)
    start = time.perf_counter()
    for _ in range(_BATCHES.value):
      next(batches)
    pipeline_rate = _BATCHES.value * config.batch_size / (time.perf_counter() - start)
    step = train.make_train_step(model, tx, train.make_model_loss(config, 255),
                                 source.descriptor.num_classes, 255, mesh)
    device_batch = sharding.global_batch({k: batch[k] for k in train.TRAIN_KEYS}, mesh)
    term_names = ["loss"] + [f"loss/{k}" for k in train._loss_terms(  # pylint: disable=protected-access
        model, train.make_model_loss(config, 255), state, config)]
    sums = jax.device_put(train.MetricSums.zeros(term_names, source.descriptor.num_classes),
                          sharding.replicated(mesh))
    for _ in range(3):
      state, sums = step(state, sums, device_batch)
    jax.block_until_ready(state)
    times = []
    for _ in range(_REPEATS.value * 4):
      begin = time.perf_counter()
      state, sums = step(state, sums, device_batch)
      jax.block_until_ready(state)
      times.append(time.perf_counter() - begin)
    step_rate = config.batch_size / statistics.median(times)
    rows.append({"section": "pipeline", "what": label,
                 "shape": f"batch {config.batch_size} of {tuple(config.data.crop_size)}",
                 "median_ms": 1e3 * statistics.median(times), "pipeline_examples_per_s": pipeline_rate,
                 "step_examples_per_s": step_rate, "pipeline_over_step": pipeline_rate / step_rate})
  return rows


def _quickstart_model():
  model = models.create("unet", num_classes=5, features=8, depth=4)
  variables = jax.jit(lambda x: model.init(jax.random.key(0, impl="rbg"), x, train=False))(
      jnp.zeros((1, 64, 64, 3)))
  return model, variables


def inference_section() -> list[dict]:
  """Sliding window vs the plain batched forward pass on the same tiles (quickstart UNet)."""
  from segjax import inference  # pylint: disable=import-outside-toplevel
  model, variables = _quickstart_model()
  apply_fn = lambda x: model.apply(variables, x, train=False)["logits"]
  side, window, batch = _SIDE.value, (256, 256), 8
  image = np.random.default_rng(0).normal(size=(side, side, 3)).astype(np.float32)
  megapixels = side * side / 1e6
  sliding = lambda: inference.sliding_window_predict(apply_fn, image, window=window, overlap=0.25,
                                                     batch_size=batch)
  sliding()  # compile
  runs = []
  for _ in range(max(1, _REPEATS.value // 2)):
    start = time.perf_counter()
    sliding()
    runs.append(time.perf_counter() - start)
  grid = inference.SlidingWindow(side, side, window, 0.25)
  tiles = len(grid.rows) * len(grid.cols)
  forward = jax.jit(apply_fn)
  x = jnp.asarray(image[:window[0], :window[1]][None].repeat(batch, 0))
  plain = time_call(lambda v: forward(v), x)["median_s"] * -(-tiles // batch)
  rows = [{"section": "inference", "what": f"sliding window {window[0]}² overlap 0.25, Gaussian",
           "shape": f"{side}×{side}, {tiles} windows", "seconds": statistics.median(runs),
           "megapixels_per_s": megapixels / statistics.median(runs)},
          {"section": "inference", "what": "plain batched forward, same windows",
           "shape": f"{tiles} windows of {window[0]}²", "seconds": plain,
           "megapixels_per_s": megapixels / plain}]
  if _LARGE.value:
    rows.append(_large_image_row(_LARGE.value, window))
  return rows


def _large_image_row(side, window) -> dict:
  """Predicts a random side×side image strip by strip in a fresh process; reports its peak RSS."""
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  import tempfile  # pylint: disable=import-outside-toplevel
  folder = tempfile.mkdtemp()
  code = f"""
import resource, time, numpy as np, jax, jax.numpy as jnp
from segjax import inference, models
side = {side}
image = np.lib.format.open_memmap("{folder}/image.npy", "w+", np.uint8, (side, side, 3))
for y in range(0, side, 1000):
  image[y:y + 1000] = np.random.default_rng(y).integers(0, 256, (min(1000, side - y), side, 3))
image.flush(); del image
image = np.load("{folder}/image.npy", mmap_mode="r")
model = models.create("unet", num_classes=5, features=8, depth=4)
variables = jax.jit(lambda x: model.init(jax.random.key(0, impl="rbg"), x, train=False))(jnp.zeros((1, 64, 64, 3)))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
inference.sliding_window_to_file(lambda x: model.apply(variables, x, train=False)["logits"], image,
                                 "{folder}/labels.npy", window={tuple(window)}, batch_size=8)
print(time.perf_counter() - start, before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
  out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
  seconds, before_kb, peak_kb = (float(v) for v in out.stdout.split()[-3:])
  return {"section": "inference", "what": "strips to file (memory-mapped image and labels)",
          "shape": f"{side}×{side}", "seconds": seconds, "megapixels_per_s": side * side / 1e6 / seconds,
          "peak_rss_gb": peak_kb / 1e6, "rss_before_gb": before_kb / 1e6}


SECTIONS = {"metrics": metrics_section, "pipeline": pipeline_section,
            "inference": inference_section}


def machine() -> dict:
  device = jax.devices()[0]
  return {"platform": device.platform, "device_kind": device.device_kind,
          "devices": jax.device_count(), "cpu": platform.processor() or platform.machine(),
          "cpu_count": os.cpu_count(), "jax": jax.__version__}


def markdown(rows: list[dict]) -> str:
  lines = []
  metric_rows = [r for r in rows if r["section"] == "metrics"]
  if metric_rows:
    lines += ["| what | shape | median ms | compile s | × forward |", "|---|---|---:|---:|---:|"]
    lines += [f"| {r['what']} | {r['shape']} | {r['median_ms']:.1f} | {r['compile_s']:.1f} | "
              f"{r['relative_to_forward']:.3f} |" for r in metric_rows]
  pipeline_rows = [r for r in rows if r["section"] == "pipeline"]
  if pipeline_rows:
    lines += ["", "| config | batch | pipeline examples/s | train step examples/s | pipeline ÷ step |",
              "|---|---|---:|---:|---:|"]
    lines += [f"| {r['what']} | {r['shape']} | {r['pipeline_examples_per_s']:.0f} | "
              f"{r['step_examples_per_s']:.0f} | {r['pipeline_over_step']:.1f} |"
              for r in pipeline_rows]
  inference_rows = [r for r in rows if r["section"] == "inference"]
  if inference_rows:
    lines += ["", "| inference | image | seconds | megapixels/s | peak RSS |", "|---|---|---:|---:|---:|"]
    lines += [f"| {r['what']} | {r['shape']} | {r['seconds']:.2f} | {r['megapixels_per_s']:.2f} | "
              f"{r.get('peak_rss_gb', float('nan')):.2f} GB |" for r in inference_rows]
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  unknown = [s for s in _SECTIONS.value if s not in SECTIONS]
  if unknown:
    raise app.UsageError(f"Unknown sections {unknown}; known: {sorted(SECTIONS)}")
  rows = [row for name in _SECTIONS.value for row in SECTIONS[name]()]
  table = markdown(rows)
  print(json.dumps(machine()))
  print(table)
  if _OUTPUT.value:
    os.makedirs(_OUTPUT.value, exist_ok=True)
    with open(os.path.join(_OUTPUT.value, "benchmark.json"), "w") as f:
      json.dump({"machine": machine(), "rows": rows}, f, indent=1)
    with open(os.path.join(_OUTPUT.value, "benchmark.md"), "w") as f:
      f.write(table + "\n")


if __name__ == "__main__":
  app.run(main)
