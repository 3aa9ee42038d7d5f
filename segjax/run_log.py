"""What a run writes for people: a progress line, TensorBoard events, metrics.jsonl.

Only process 0 writes; every call is a no-op elsewhere.
"""

from __future__ import annotations

import json
import math
import os
import time

import jax


def _is_writer() -> bool:
  return jax.process_index() == 0


def info(message: str, *args) -> None:
  """A timestamped line on stdout from process 0 (library INFO logs stay quiet)."""
  if _is_writer():
    print(time.strftime("%H:%M:%S ") + (message % args if args else message), flush=True)


def check_profile_steps(steps) -> tuple[int, ...]:
  """``config.profile_steps``: ``()`` or ``(first, last)`` with 1 <= first <= last."""
  steps = tuple(steps or ())
  if steps and (
    len(steps) != 2 or not all(isinstance(s, int) for s in steps) or not 1 <= steps[0] <= steps[1]
  ):
    raise ValueError(
      f"config.profile_steps={steps!r}: expected () or (first, last) steps with "
      "1 <= first <= last, e.g. (100, 110)"
    )
  return steps


class Profiler:
  """A JAX profiler trace of training steps ``first..last`` (``config.profile_steps``) in
  ``<workdir>/profile``: open it with TensorBoard's profile plugin (``tensorboard --logdir
  WORKDIR/profile``) or Perfetto (the ``.trace.json.gz`` beside the ``.xplane.pb``)."""

  def __init__(self, workdir: str, steps=()):
    self.steps, self.directory = check_profile_steps(steps), os.path.join(workdir, "profile")
    self.active = False

  def before(self, step: int) -> None:
    if self.steps and step == self.steps[0]:
      jax.profiler.start_trace(self.directory, create_perfetto_trace=True)
      self.active = True

  def after(self, step: int, outputs) -> None:
    if self.active and step == self.steps[1]:
      jax.block_until_ready(outputs)  # the traced steps' device work is inside the trace
      self.stop()

  def stop(self) -> None:
    if self.active:
      jax.profiler.stop_trace()
      self.active = False
      info("Wrote a profile of steps %d-%d to %s", *self.steps, self.directory)


class MetricWriter:
  """Writes scalars to TensorBoard (``<workdir>/tensorboard``) and ``<workdir>/metrics.jsonl``."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self._tb = None
    if _is_writer():
      import tensorflow as tf  # TensorBoard events through tf.summary (TensorFlow is a dependency)

      self._tb = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))

  def write_scalars(self, step: int, scalars: dict, prefix: str = "") -> None:
    if not _is_writer():
      return
    import tensorflow as tf

    flat = {
      f"{prefix}{k}": float(v)
      for k, v in scalars.items()
      if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    with self._tb.as_default():
      for name, value in flat.items():
        tf.summary.scalar(name, value, step=step)
    self._tb.flush()
    clean = {k: (v if math.isfinite(v) else None) for k, v in flat.items()}
    with open(os.path.join(self.workdir, "metrics.jsonl"), "a") as f:
      f.write(json.dumps({"step": step, **clean}) + "\n")

  def close(self):
    if self._tb is not None:
      self._tb.close()


class Progress:
  """A one-line progress report: step, loss, steps/s, ETA."""

  def __init__(self, total_steps: int, start_step: int):
    self.total_steps = total_steps
    self._last_step = start_step
    self._last_time = time.perf_counter()

  def restart(self, step: int) -> None:
    """Measures from ``step`` on (called once the first, compiling, step has finished)."""
    info(
      "step %d/%d ran in %.1f s (compilation included)",
      step,
      self.total_steps,
      time.perf_counter() - self._last_time,
    )
    self._last_step, self._last_time = step, time.perf_counter()

  def exclude(self, seconds: float) -> None:
    """Leaves ``seconds`` (a periodic evaluation) out of the next rate and ETA."""
    self._last_time += seconds

  def report(self, step: int, scalars: dict) -> float:
    now = time.perf_counter()
    if step == self._last_step:  # just restarted: no rate measured yet
      rate = float("nan")
    else:
      rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
      self._last_step, self._last_time = step, now
    eta = (self.total_steps - step) / rate if rate > 0 else float("nan")
    if _is_writer():
      terms = " ".join(f"{k}={v:.4f}" for k, v in scalars.items() if k.startswith("loss"))
      info(
        "step %d/%d  %s  %s steps/s  ETA %s",
        step,
        self.total_steps,
        terms,
        f"{rate:.2f}" if math.isfinite(rate) else "—",
        _format_seconds(eta),
      )
    return rate


def _format_seconds(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  minutes, seconds = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours:d}:{minutes:02d}:{seconds:02d}"
