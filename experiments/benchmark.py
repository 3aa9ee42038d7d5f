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

  models   every registered model: compile time, train step (forward, backward, AdamW update) and
           eval forward (median ms), images/s per device, peak device memory, FLOPs from XLA's cost
           analysis and the utilisation they imply against the device's peak (PEAK_FLOPS; on CPU a
           measured float32 matmul peak). --preset=small: the widths the configs/*_shapes.py train
           at 64x64; --preset=paper: the published widths (e.g. UNet 64, ResNet-50).
  scaling  train-step images/s of one model over 1, 2, 4, ... devices at a fixed per-device batch
           (weak scaling) and the efficiency against perfect scaling.

Every time is the median of --repeats runs after --warmup runs, each ended by block_until_ready.
--plot also draws benchmark.png (needs matplotlib, which segjax does not depend on).

  python experiments/benchmark.py --sections=models,scaling,pipeline --output=/tmp/segjax/bench
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

_SECTIONS = flags.DEFINE_list("sections", ["models"], "Which sections to run.")
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
_MODELS = flags.DEFINE_list("models", None, "Models of the models section (default: all registered).")
_PRESET = flags.DEFINE_enum("preset", "small", ["small", "paper"], "Model widths (see above).")
_IMAGE = flags.DEFINE_integer("image_size", None, "Square image side (default: 64 small, 512 paper).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Images per device per step.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Computation dtype.")
_SCALING_MODEL = flags.DEFINE_string("scaling_model", "unet", "Model of the scaling section.")
_PLOT = flags.DEFINE_bool("plot", False, "Also draw benchmark.png (needs matplotlib).")


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
    trainer = train.setup(config)
    mesh, source, state = trainer.mesh, trainer.source, trainer.state
    train_ds = trainer.train_dataset()
    batches = pipeline.as_numpy(train_ds)
    for _ in range(10):  # warm-up: fills caches and shuffle buffers
      batch = next(batches)
    start = time.perf_counter()
    for _ in range(_BATCHES.value):
      next(batches)
    pipeline_rate = _BATCHES.value * config.batch_size / (time.perf_counter() - start)
    step = trainer.train_step()
    device_batch = sharding.global_batch(batch, mesh)
    term_names = trainer.term_names(train_ds.element_spec)
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


# Dense peak FLOP/s per chip by device_kind prefix: (bfloat16, float32). float32 matmuls on NVIDIA
# tensor cores run as TF32 at JAX's default precision, so the TF32 peak is the float32 roof there.
PEAK_FLOPS = {
    "TPU v4": (275e12, 275e12), "TPU v5 lite": (197e12, 197e12), "TPU v5e": (197e12, 197e12),
    "TPU v5p": (459e12, 459e12), "TPU v5": (459e12, 459e12), "TPU v6 lite": (918e12, 918e12),
    "NVIDIA A100": (312e12, 156e12), "NVIDIA H100": (989e12, 494e12),
    "NVIDIA H200": (989e12, 494e12),
}


def measured_matmul_peak(size: int = 2048) -> float:
  """FLOP/s of a float32 ``size``-square matmul on the default device (the CPU roof we compare to)."""
  a = jnp.asarray(np.random.default_rng(0).normal(size=(size, size)), jnp.float32)
  return 2 * size**3 / time_call(lambda x: x @ x, a)["median_s"]


def peak_flops(dtype: str) -> tuple[float, str]:
  kind = jax.devices()[0].device_kind
  for prefix, (bf16, fp32) in PEAK_FLOPS.items():
    if kind.startswith(prefix):
      return (bf16 if dtype == "bfloat16" else fp32), f"{kind} datasheet"
  return measured_matmul_peak(), f"measured {jax.devices()[0].platform} float32 matmul"


def _model_kwargs(name: str, preset: str) -> dict:
  """Constructor arguments of ``name`` for the preset (small: the shapes configs' models)."""
  if name.startswith("resnet"):
    return {"width": 16} if preset == "small" else {}
  if preset == "paper":
    return {"unet": dict(features=64, depth=4), "segnet": dict(),
            "deeplabv3": dict(backbone="resnet50"), "deeplabv3plus": dict(backbone="resnet50"),
            "hmsa": dict(trunk_kwargs=dict(backbone="resnet50")),
            "panoptic_deeplab": dict(trunk_kwargs=dict(backbone="resnet50"),
                                     thing_classes=(2, 3, 4))}.get(name, {})
  config_name = "panoptic_deeplab_shapes" if name == "panoptic_deeplab" else f"{name}_shapes"
  kwargs = _load_config(config_name).model.to_dict()
  for key in ("name", "dtype", "pretrained"):
    kwargs.pop(key, None)
  if name == "panoptic_deeplab":
    kwargs["thing_classes"] = (2, 3, 4)
  return kwargs


def _device_memory_peak():
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


def _compiled_stats(compiled) -> dict:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  memory = compiled.memory_analysis()
  live = None
  if memory is not None:
    live = (memory.argument_size_in_bytes + memory.output_size_in_bytes
            + memory.temp_size_in_bytes - memory.alias_size_in_bytes)
  return {"flops": float((cost or {}).get("flops", float("nan"))), "compiled_bytes": live}


def _train_and_infer(name: str, kwargs: dict, image_size: int, batch: int, mesh) -> dict:
  """Compiles and times one model's train step and eval forward on ``mesh`` (batch per device)."""
  import optax  # pylint: disable=import-outside-toplevel
  from segjax import losses  # pylint: disable=import-outside-toplevel
  from segjax import sharding  # pylint: disable=import-outside-toplevel
  from segjax import train  # pylint: disable=import-outside-toplevel
  num_classes = 5
  dtype = jnp.dtype(_DTYPE.value)
  model = models.create(name, num_classes=num_classes, dtype=dtype, **kwargs)
  tx = optax.adamw(1e-3)
  state = train.create_train_state(model, tx, (image_size, image_size, 3), 0, mesh)
  global_batch = batch * mesh.devices.size
  rng = np.random.default_rng(0)
  data = sharding.global_batch({
      "image": rng.normal(size=(global_batch, image_size, image_size, 3)).astype(np.float32),
      "semantic": rng.integers(0, num_classes, (global_batch, image_size, image_size))}, mesh)

  def loss_fn(outputs, labels):
    if "logits" in outputs:
      return losses.cross_entropy(outputs["logits"], labels)
    return jnp.mean(jnp.square(outputs["layer4"].astype(jnp.float32)))  # backbones: a stand-in

  def train_step(state, data):
    def compute(params):
      outputs, updates = model.apply({"params": params, "batch_stats": state.batch_stats},
                                     data["image"], train=True, mutable=["batch_stats"],
                                     rngs={"dropout": jax.random.key(0)})
      return loss_fn(outputs, data["semantic"]), updates
    (loss, updates), grads = jax.value_and_grad(compute, has_aux=True)(state.params)
    delta, opt_state = tx.update(grads, state.opt_state, state.params)
    return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, delta),
                         batch_stats=updates.get("batch_stats", state.batch_stats),
                         opt_state=opt_state), loss

  def infer(variables, image):
    outputs = model.apply(variables, image, train=False)
    return outputs.get("logits", outputs.get("layer4"))

  row = {"model": name, "kwargs": kwargs, "dtype": _DTYPE.value,
         "params": models.count_params(state.params), "image": image_size,
         "batch_per_device": batch, "devices": mesh.devices.size}
  for what, fn, args, donate in (("infer", infer, (state.variables, data["image"]), ()),
                                 ("train", train_step, (state, data), (0,))):  # donates state
    start = time.perf_counter()
    compiled = jax.jit(fn, donate_argnums=donate).lower(*args).compile()
    row[f"{what}_compile_s"] = time.perf_counter() - start
    stats = _compiled_stats(compiled)
    row[f"{what}_flops"] = stats["flops"]
    row[f"{what}_compiled_bytes"] = stats["compiled_bytes"]
    runs = []
    for i in range(_WARMUP.value + _REPEATS.value):
      begin = time.perf_counter()
      out = compiled(*args)
      jax.block_until_ready(out)
      if i >= _WARMUP.value:
        runs.append(time.perf_counter() - begin)
      if what == "train":
        args = (out[0], data)  # the donated state is replaced by the new one
    median = statistics.median(runs)
    row[f"{what}_ms"] = 1e3 * median
    row[f"{what}_images_per_s_per_device"] = batch / median
    row[f"{what}_flops_per_s"] = stats["flops"] / median
  row["peak_device_bytes"] = _device_memory_peak()
  return row


def models_section() -> list[dict]:
  """Every registered model (or --models) at --image_size, --batch_size per device, one device."""
  from segjax import registry  # pylint: disable=import-outside-toplevel
  from segjax import sharding  # pylint: disable=import-outside-toplevel
  image_size = _IMAGE.value or (64 if _PRESET.value == "small" else 512)
  names = _MODELS.value or registry.names("model")
  peak, peak_source = peak_flops(_DTYPE.value)
  mesh = sharding.make_mesh(1)
  rows = []
  for name in names:
    row = _train_and_infer(name, _model_kwargs(name, _PRESET.value), image_size,
                           _BATCH_SIZE.value, mesh)
    row.update(section="models", preset=_PRESET.value, peak_flops=peak, peak_source=peak_source,
               train_utilisation=row["train_flops_per_s"] / peak,
               infer_utilisation=row["infer_flops_per_s"] / peak)
    print(f"{name}: train {row['train_ms']:.1f} ms, infer {row['infer_ms']:.1f} ms", flush=True)
    rows.append(row)
  return rows


def scaling_section() -> list[dict]:
  """Weak scaling of --scaling_model's train step over 1, 2, 4, ... of the devices."""
  from segjax import sharding  # pylint: disable=import-outside-toplevel
  image_size = _IMAGE.value or (64 if _PRESET.value == "small" else 512)
  counts = [n for n in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if n <= jax.device_count()]
  if counts[-1] != jax.device_count():
    counts.append(jax.device_count())
  rows = []
  for n in counts:
    row = _train_and_infer(_SCALING_MODEL.value, _model_kwargs(_SCALING_MODEL.value, _PRESET.value),
                           image_size, _BATCH_SIZE.value, sharding.make_mesh(n))
    rate = row["train_images_per_s_per_device"] * n
    base = rows[0]["train_images_per_s"] if rows else rate
    row.update(section="scaling", train_images_per_s=rate, efficiency=rate / (base * n))
    rows.append(row)
  return rows


SECTIONS = {"metrics": metrics_section, "pipeline": pipeline_section,
            "inference": inference_section, "models": models_section,
            "scaling": scaling_section}


def machine() -> dict:
  device = jax.devices()[0]
  return {"platform": device.platform, "device_kind": device.device_kind,
          "devices": jax.device_count(), "cpu": platform.processor() or platform.machine(),
          "cpu_count": os.cpu_count(), "jax": jax.__version__,
          "xla_flags": os.environ.get("XLA_FLAGS", "")}


def _bytes(value) -> str:
  return "n/a" if value is None else f"{value / 2**20:.0f} MiB"


def markdown(rows: list[dict]) -> str:
  lines = []
  model_rows = [r for r in rows if r["section"] == "models"]
  if model_rows:
    r0 = model_rows[0]
    lines += [f"Models ({r0['preset']} preset, {r0['image']}×{r0['image']}, batch "
              f"{r0['batch_per_device']} per device, {r0['dtype']}; utilisation against "
              f"{r0['peak_flops'] / 1e9:.0f} GFLOP/s, {r0['peak_source']}):", "",
              "| model | params | compile s (train/infer) | train step ms | train img/s | "
              "infer ms | infer img/s | train GFLOP | util. train/infer | memory |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['params'] / 1e6:.2f} M | {r['train_compile_s']:.1f} / "
              f"{r['infer_compile_s']:.1f} | {r['train_ms']:.1f} | "
              f"{r['train_images_per_s_per_device']:.1f} | {r['infer_ms']:.1f} | "
              f"{r['infer_images_per_s_per_device']:.1f} | {r['train_flops'] / 1e9:.2f} | "
              f"{100 * r['train_utilisation']:.0f}% / {100 * r['infer_utilisation']:.0f}% | "
              f"{_bytes(r['peak_device_bytes'] or r['train_compiled_bytes'])} |"
              for r in model_rows]
  scaling_rows = [r for r in rows if r["section"] == "scaling"]
  if scaling_rows:
    lines += ["", f"Scaling ({scaling_rows[0]['model']}, batch {scaling_rows[0]['batch_per_device']}"
              " per device):", "", "| devices | train img/s | efficiency |", "|---:|---:|---:|"]
    lines += [f"| {r['devices']} | {r['train_images_per_s']:.1f} | {100 * r['efficiency']:.0f}% |"
              for r in scaling_rows]
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
    if _PLOT.value:
      plot(rows, os.path.join(_OUTPUT.value, "benchmark.png"))


def plot(rows: list[dict], path: str) -> None:
  """Bar chart of train/infer images/s per model and the scaling curve."""
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise app.UsageError("--plot needs matplotlib: pip install matplotlib") from None
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  model_rows = [r for r in rows if r["section"] == "models"]
  scaling_rows = [r for r in rows if r["section"] == "scaling"]
  fig, axes = plt.subplots(1, 2, figsize=(12, 4))
  if model_rows:
    x = np.arange(len(model_rows))
    axes[0].bar(x - 0.2, [r["train_images_per_s_per_device"] for r in model_rows], 0.4,
                label="train")
    axes[0].bar(x + 0.2, [r["infer_images_per_s_per_device"] for r in model_rows], 0.4,
                label="infer")
    axes[0].set_xticks(x, [r["model"] for r in model_rows], rotation=45, ha="right")
    axes[0].set_ylabel("images/s per device")
    axes[0].set_yscale("log")
    axes[0].legend()
  if scaling_rows:
    devices = [r["devices"] for r in scaling_rows]
    axes[1].plot(devices, [r["train_images_per_s"] for r in scaling_rows], "o-", label="measured")
    axes[1].plot(devices, [scaling_rows[0]["train_images_per_s"] * n for n in devices], "--",
                 label="perfect")
    axes[1].set_xlabel("devices")
    axes[1].set_ylabel("train images/s")
    axes[1].legend()
  fig.suptitle(json.dumps(machine()))
  fig.tight_layout()
  fig.savefig(path, dpi=100)


if __name__ == "__main__":
  app.run(main)
