"""experiments/benchmark.py's library times the trainer's own compiled train step (not a copy)."""
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
  rows = benchmark.models_section({"tiny": config}, benchmark.Timing(repeats=2, warmup=0),
                                  batch_per_device=2)
  assert len(made) == 1  # the step compiled and timed is the one the trainer makes
  (row,) = rows
  assert row["config"] == "tiny" and row["params"] > 0 and row["batch_per_device"] == 2
  assert row["train_ms"] > 0 and row["infer_ms"] > 0
  assert row["train_flops"] > row["infer_flops"] > 0  # backward pass costs more than forward
  table = benchmark.markdown(rows)
  assert "| tiny | unet |" in table
