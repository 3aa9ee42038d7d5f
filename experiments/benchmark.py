r"""Measures segjax's speed (segjax/benchmark.py); writes benchmark.json and benchmark.md.

  python experiments/benchmark.py --sections=models --output=/tmp/segjax/bench
  python experiments/benchmark.py --sections=models --configs=deeplabv3_cityscapes --batch_size=2
  python experiments/benchmark.py --sections=metrics,pipeline,inference --large_image_side=10000
  python experiments/benchmark.py --sections=resume --repeats=3
  python experiments/benchmark.py --sections=raster --raster_side=20000
  python experiments/benchmark.py --sections=backend --backend_workdir=workdirs/quickstart
  python experiments/benchmark.py --sections=interactive --click_run=/tmp/segjax/clicks/click_run

models: the trainer's train step and the evaluator's forward pass of each config (default: every
configs/*_shapes.py); scaling: --scaling_config over 1, 2, 4, ... devices; metrics, pipeline,
resume (--configs: unet_folder), inference, raster (needs .[geo]), backend (the Label Studio ML
backend of --backend_workdir under load), interactive (per-click latency of --click_run's click
model and of a SAM ViT-B): see segjax/benchmark.py.
"""

import glob
import json
import os

from absl import app
from absl import flags

from segjax import cli

_SECTIONS = flags.DEFINE_list(
  "sections",
  ["models"],
  "models, scaling, metrics, pipeline, resume, inference, raster, backend, interactive",
)
_CONFIGS = flags.DEFINE_list(
  "configs",
  None,
  "Configs of the models/pipeline sections: names in "
  "configs/ or paths of config files (default: every "
  "configs/*_shapes.py; pipeline: unet_shapes).",
)
_SCALING = flags.DEFINE_string("scaling_config", "unet_shapes", "Config of the scaling section.")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Images per device per step.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs per measurement (the median is kept).")
_WARMUP = flags.DEFINE_integer("warmup", 1, "Untimed runs after compilation.")
_LARGE = flags.DEFINE_integer("large_image_side", 0, "Inference: also a side x side image to file.")
_RASTER_SIDE = flags.DEFINE_integer("raster_side", 20_000, "Raster: the GeoTIFF's side.")
_BACKEND_WORKDIR = flags.DEFINE_string(
  "backend_workdir", "workdirs/quickstart", "Backend: the trained run to serve (a copy)."
)
_CONCURRENCY = flags.DEFINE_integer("concurrency", 32, "Backend: /predict requests at once.")
_CLICK_RUN = flags.DEFINE_string("click_run", None, "Interactive: a click model's run directory.")
_OUTPUT = flags.DEFINE_string("output", None, "Directory for benchmark.json and benchmark.md.")


def main(argv):
  del argv
  # pylint: disable=import-outside-toplevel
  from segjax import benchmark
  from segjax import config_defaults
  from segjax import files

  timing = benchmark.Timing(_REPEATS.value, _WARMUP.value)
  root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
  names = _CONFIGS.value or sorted(
    os.path.basename(p)[:-3] for p in glob.glob(os.path.join(root, "*_shapes.py"))
  )
  load = lambda name: config_defaults.load_config(
    name if name.endswith(".py") else os.path.join(root, f"{name}.py")
  )
  sections = {
    "models": lambda: benchmark.models_section(
      {os.path.basename(n).removesuffix(".py"): load(n) for n in names}, timing, _BATCH.value
    ),
    "scaling": lambda: benchmark.scaling_section(load(_SCALING.value), timing, _BATCH.value),
    "metrics": lambda: benchmark.metrics_section(timing),
    "pipeline": lambda: benchmark.pipeline_section(
      {n: load(n) for n in (_CONFIGS.value or ["unet_shapes"])}, timing
    ),
    "resume": lambda: benchmark.resume_section(
      load((_CONFIGS.value or ["unet_folder"])[0]), timing
    ),
    "inference": lambda: benchmark.inference_section(
      load("unet_shapes"), timing, large_side=_LARGE.value
    ),
    "raster": lambda: benchmark.raster_section(_RASTER_SIDE.value),
    "backend": lambda: benchmark.backend_section(_BACKEND_WORKDIR.value, _CONCURRENCY.value),
    "interactive": lambda: benchmark.interactive_section(timing, _CLICK_RUN.value),
  }
  unknown = sorted(set(_SECTIONS.value) - set(sections))
  if unknown:
    raise app.UsageError(f"Unknown sections {unknown}; known: {sorted(sections)}")
  rows = [row for name in _SECTIONS.value for row in sections[name]()]
  table = benchmark.markdown(rows)
  print(json.dumps(benchmark.machine()))
  print(table)
  if _OUTPUT.value:
    os.makedirs(_OUTPUT.value, exist_ok=True)
    files.write_json(
      os.path.join(_OUTPUT.value, "benchmark.json"), {"machine": benchmark.machine(), "rows": rows}
    )
    files.write_text(os.path.join(_OUTPUT.value, "benchmark.md"), table + "\n")


if __name__ == "__main__":
  cli.run(main)
