"""experiments/benchmark.py's library times the trainer's own compiled train step (not a copy)."""

import pytest

from segjax import benchmark
from segjax import train

from conftest import tiny_config


def test_models_section_times_the_trainers_train_step(tmp_path, monkeypatch):
  config = tiny_config(str(tmp_path))
  made = []
  original = train.Trainer.train_step

  def spy(self, *args, **kwargs):
    made.append(self)
    return original(self, *args, **kwargs)

  monkeypatch.setattr(train.Trainer, "train_step", spy)
  rows = benchmark.models_section(
    {"tiny": config}, benchmark.Timing(repeats=2, warmup=0), batch_per_device=2
  )
  assert len(made) == 1  # the step compiled and timed is the one the trainer makes
  (row,) = rows
  assert row["config"] == "tiny" and row["params"] > 0 and row["batch_per_device"] == 2
  assert row["train_ms"] > 0 and row["infer_ms"] > 0
  assert row["train_flops"] > row["infer_flops"] > 0  # backward pass costs more than forward
  table = benchmark.markdown(rows)
  assert "| tiny | unet |" in table


@pytest.mark.slow
def test_scaling_metrics_pipeline_and_inference_sections(tmp_path):
  import jax

  config = tiny_config(str(tmp_path))
  timing = benchmark.Timing(repeats=2, warmup=0)
  rows = benchmark.scaling_section(config, timing, batch_per_device=2)
  counts = [r["devices"] for r in rows]
  assert counts == [n for n in (1, 2, 4, 8) if n <= jax.device_count()]
  assert rows[0]["efficiency"] == 1.0 and all(r["efficiency"] > 0 for r in rows)
  assert [r["batch_per_device"] for r in rows] == [2] * len(rows)  # weak scaling

  rows = benchmark.metrics_section(timing, batch=1, size=(32, 64), features=4)
  assert [r["what"] for r in rows] == [
    "eval forward (UNet, argmax)",
    "confusion matrix",
    "forward + confusion matrix",
    "panoptic-quality sums",
  ]
  assert rows[0]["relative_to_forward"] == 1.0 and all(r["median_ms"] > 0 for r in rows)

  (row,) = benchmark.pipeline_section({"tiny": config}, timing, batches=3)
  assert row["shape"] == "batch 4 of (32, 32)" and row["pipeline_examples_per_s"] > 0

  rows = benchmark.inference_section(config, timing, side=384)
  # 384 = windows of 256 with overlap 0.25 at strides 192: two rows, two columns.
  assert rows[0]["shape"] == "384×384, 4 windows" and rows[1]["shape"] == "4 windows of 256²"
  assert all(row["seconds"] > 0 for row in rows)
