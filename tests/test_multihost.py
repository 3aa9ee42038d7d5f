"""Multi-process training on the JAX distributed runtime: 2 processes x 2 CPU devices (gloo
collectives on localhost, launched through experiments/train.py) against 1 process x 4 devices."""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from segjax import distributed

from conftest import ROOT, tiny_config, xla_flags


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _config(data_dir):
  """The shared straight run's config (`conftest.tiny_config`: 6 steps, checkpoints at 3 and 6,
  logs at 2, 3, 4, 6), reading one global stream: with one process it gives the same batches."""
  config = tiny_config(data_dir)
  config.data.process_data = "stream"
  return config


def _start(tmp_path, data_dir, workdir, *flags, num_processes: int = 2, overrides: str = ""):
  """experiments/train.py in ``num_processes`` processes with 2 CPU devices each, on `_config`
  (``overrides``: Python statements on ``c``, the config)."""
  config_file = tmp_path / "multihost_config.py"
  config_file.write_text(
    f"import sys\nsys.path.insert(0, {os.path.join(ROOT, 'tests')!r})\n"
    "from test_multihost import _config\n\n"
    f"def get_config():\n  c = _config({data_dir!r})\n  {overrides}\n  return c\n"
  )
  address = f"localhost:{_free_port()}"
  env = {**os.environ, "XLA_FLAGS": xla_flags(2), "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
  return [
    subprocess.Popen(
      [
        sys.executable,
        os.path.join(ROOT, "experiments", "train.py"),
        f"--config={config_file}",
        f"--workdir={workdir}",
        f"--coordinator_address={address}",
        f"--num_processes={num_processes}",
        f"--process_id={i}",
        *flags,
      ],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(num_processes)
  ]


def _launch(tmp_path, data_dir, workdir, *flags, num_processes: int = 2):
  """`_start`, then waits: every process must exit 0; returns their outputs."""
  procs = _start(tmp_path, data_dir, workdir, *flags, num_processes=num_processes)
  outputs = [p.communicate(timeout=300)[0] for p in procs]
  for i, (p, out) in enumerate(zip(procs, outputs)):
    assert p.returncode == 0, f"process {i} failed:\n{out[-3000:]}"
  return outputs


def _losses(workdir):
  """train/loss by step; the last line wins (a resumed run logs its steps again)."""
  lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  return {l["step"]: l["train/loss"] for l in lines if "train/loss" in l}


@pytest.mark.slow
def test_two_processes_match_one_process_and_resume(straight_run, data_dir, tmp_path):
  _, single, expected = straight_run  # 1 process x 4 devices, the same global batches
  multi = str(tmp_path / "multi")
  # 2 processes x 2 devices, all 6 steps (no evaluation) ...
  first = _launch(tmp_path, data_dir, multi, "--config.eval_splits=()")
  assert sorted(os.listdir(os.path.join(multi, "checkpoints"))) == ["3", "6"]
  assert "step 6/6" in first[0] and "step 6/6" not in first[1]  # only process 0 logs
  want, got = _losses(single), _losses(multi)
  assert sorted(want) == sorted(got) == [2, 3, 4, 6]
  np.testing.assert_allclose(
    [got[s] for s in sorted(got)], [want[s] for s in sorted(want)], rtol=2e-5
  )
  assert want[2] != want[6]  # it trained
  # ... then, without the last checkpoint, a new 2-process launch resumes from step 3.
  shutil.rmtree(os.path.join(multi, "checkpoints", "6"))
  # Its evaluation batch of 5 does not divide over the 4 devices: it is padded to 8.
  second = _launch(tmp_path, data_dir, multi, "--config.eval_batch_size=5")
  assert "Resumed from checkpoint 3" in second[0]
  resumed = _losses(multi)
  np.testing.assert_allclose([resumed[4], resumed[6]], [got[4], got[6]], rtol=1e-6)
  final = json.load(open(os.path.join(multi, "final_metrics.json")))["validation"]
  # The two trainings agree to float32 rounding (rtol 2e-5 above), not bit for bit, so a pixel whose
  # two top classes are that close may flip: allow 0.05% of the pixels to move.
  got_cm = np.asarray(final["confusion_matrix"])
  want_cm = np.asarray(expected["validation"]["confusion_matrix"])
  assert got_cm.sum() == want_cm.sum() == final["pixels"]
  np.testing.assert_array_equal(got_cm.sum(axis=1), want_cm.sum(axis=1))  # same ground truth
  assert np.abs(got_cm - want_cm).sum() <= 2 * max(1, int(0.0005 * final["pixels"]))
  assert final["mean_iou"] == pytest.approx(expected["validation"]["mean_iou"], abs=2e-3)


def test_distributed_settings_are_checked(monkeypatch):
  for name in (
    "JAX_COORDINATOR_ADDRESS",
    "JAX_NUM_PROCESSES",
    "JAX_PROCESS_ID",
    "SLURM_NTASKS",
    "OMPI_COMM_WORLD_SIZE",
  ):
    monkeypatch.delenv(name, raising=False)
  assert distributed.initialize("auto") is False  # nothing asks for it: a single process
  assert distributed.initialize("off", "localhost:1", 2, 0) is False
  with pytest.raises(ValueError, match=r"not \['process_id'\]"):
    distributed.initialize("auto", "localhost:1234", 2)
  monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
  with pytest.raises(ValueError, match="JAX_NUM_PROCESSES='two'"):
    distributed.initialize("auto")
  with pytest.raises(ValueError, match=r"process_id=2 is not in \[0, num_processes=2\)"):
    distributed.initialize("auto", "localhost:1234", 2, 2)
  with pytest.raises(ValueError, match="'sometimes'"):
    distributed.initialize("sometimes")


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_one_saved_step(data_dir, tmp_path):
  """A preemption notice (SIGTERM) reaches process 1 only: the distributed runtime spreads it,
  both processes save the same checkpoint step, stop, and exit 0."""
  import re
  import signal

  workdir = str(tmp_path / "preempted")
  procs = _start(
    tmp_path,
    data_dir,
    workdir,
    overrides=(
      "c.update(dict(num_train_steps=100000, log_every_steps=1, checkpoint_every_steps=100000))"
    ),
  )
  try:
    lines = []
    for line in procs[0].stdout:  # process 0 logs the steps
      lines.append(line)
      if re.search(r"step 3/100000", line):
        break
    procs[1].send_signal(signal.SIGTERM)
    rest = procs[0].communicate(timeout=300)[0]
    other = procs[1].communicate(timeout=300)[0]
  finally:
    for p in procs:
      p.kill()
  out = "".join(lines) + rest
  assert [p.returncode for p in procs] == [0, 0], out[-2000:] + other[-2000:]
  saved = int(re.search(r"SIGTERM received: saved checkpoint (\d+)", out).group(1))
  assert 3 <= saved < 100000
  assert os.listdir(os.path.join(workdir, "checkpoints")) == [str(saved)]
  assert not os.path.exists(os.path.join(workdir, "final_metrics.json"))  # stopped, not finished


def _start_predict(workdir, inputs, output, num_processes=2):
  """experiments/predict.py in ``num_processes`` processes with 2 CPU devices each."""
  address = f"localhost:{_free_port()}"
  env = {**os.environ, "XLA_FLAGS": xla_flags(2), "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
  return [
    subprocess.Popen(
      [
        sys.executable,
        os.path.join(ROOT, "experiments", "predict.py"),
        f"--workdir={workdir}",
        f"--input={inputs}",
        f"--output={output}",
        "--format=coco",
        f"--coordinator_address={address}",
        f"--num_processes={num_processes}",
        f"--process_id={i}",
      ],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(num_processes)
  ]


def _tree(root):
  """{relative path: bytes} of every file under ``root``."""
  out = {}
  for folder, _, names in os.walk(root):
    for name in names:
      path = os.path.join(folder, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, root)] = f.read()
  return out


@pytest.mark.slow
def test_two_process_prediction_equals_one_process_and_resumes_after_a_kill(straight_run, tmp_path):
  """Pre-labels of 40 images of two sizes: 2 processes x 2 devices (each its share, batched over
  its devices), killed once some images are done and started again, write the same files, byte
  for byte, as 1 process x 4 devices; the images done before the kill are not written again."""
  import signal
  import time
  import cv2
  from segjax import predict, runs
  from segjax import predict_files  # pylint: disable=import-outside-toplevel
  from segjax.data.shapes import render_scene

  _, workdir, _ = straight_run
  inputs = tmp_path / "inputs"
  inputs.mkdir()
  for i in range(40):
    image, _, _ = render_scene(np.random.default_rng(i), 52, 5)
    cv2.imwrite(
      str(inputs / f"scene_{i:02d}.png"), image[:40, :52, ::-1] if i % 3 else image[:33, :33, ::-1]
    )
  single = str(tmp_path / "single")
  predict_files.predict_files(
    predict.Predictor(runs.load(workdir)),
    predict.list_inputs(str(inputs)),
    single,
    "coco",
    progress=False,
  )
  multi = tmp_path / "multi"
  procs = _start_predict(workdir, str(inputs), str(multi))
  records = multi / "records"
  try:
    deadline = time.time() + 300
    while time.time() < deadline and not (records.exists() and len(os.listdir(records)) >= 4):
      assert all(p.poll() is None for p in procs), procs[0].communicate()[0][-3000:]
      time.sleep(0.02)
  finally:
    for p in procs:
      p.send_signal(signal.SIGKILL)
      p.communicate(timeout=60)
  done = {
    name: os.stat(records / name).st_mtime_ns
    for name in os.listdir(records)
    if name.endswith(".json") and ".tmp" not in name
  }  # not a record the kill cut short
  assert 4 <= len(done) < 40, len(done)
  assert not (multi / "review.csv").exists()  # killed before the merge
  procs = _start_predict(workdir, str(inputs), str(multi))
  outputs = [p.communicate(timeout=300)[0] for p in procs]
  for i, (p, out) in enumerate(zip(procs, outputs)):
    assert p.returncode == 0, f"process {i} failed:\n{out[-3000:]}"
  assert {name: os.stat(records / name).st_mtime_ns for name in done} == done  # not redone
  want, got = _tree(single), _tree(str(multi))
  assert sorted(got) == sorted(want)
  assert len([k for k in want if k.startswith("masks")]) == 40
  for name in want:
    assert got[name] == want[name], name


@pytest.mark.slow
def test_mask_ap_of_two_processes_equals_one_process(straight_run, data_dir, tmp_path):
  """experiments/evaluate.py with a chain that makes scored instances, in 2 processes x 2 devices:
  each process post-processes its own images, the instances are gathered, and mask AP (and every
  other metric) equals the single-process evaluation; so does the confusion matrix of an entry
  under a sliding window with scales and flips, which equals the per-image prediction."""
  from segjax import evaluation
  from segjax import runs
  from segjax.data import pipeline
  from test_evaluation import PROTOCOL, per_image_confusion

  config, workdir, _ = straight_run
  chain = "argmax|remove_small(6)|semantic_instances|scored_instances"
  evals = {"validation": {}, "protocol": dict(type="semantic", inference=PROTOCOL)}
  single = config.copy_and_resolve_references()
  single.postprocess = chain
  single.evals = evals
  both = evaluation.evaluate_run(workdir, single)
  want = both["validation"]
  assert want["mask_ap"]["ap50"] is not None
  protocol = single.copy_and_resolve_references()
  protocol.inference.update(PROTOCOL)
  per_image = per_image_confusion(runs.load(workdir), protocol, pipeline.get_source(config.data))
  np.testing.assert_array_equal(both["protocol"]["confusion_matrix"], per_image)
  copy = str(tmp_path / "run")
  shutil.copytree(workdir, copy)
  config_file = tmp_path / "eval_config.py"
  config_file.write_text(
    f"import sys\nsys.path.insert(0, {os.path.join(ROOT, 'tests')!r})\n"
    "from conftest import tiny_config\n\n"
    f"def get_config():\n  c = tiny_config({data_dir!r})\n  c.postprocess = {chain!r}\n"
    f"  c.evals = {evals!r}\n  return c\n"
  )
  address = f"localhost:{_free_port()}"
  env = {**os.environ, "XLA_FLAGS": xla_flags(2), "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
  procs = [
    subprocess.Popen(
      [
        sys.executable,
        os.path.join(ROOT, "experiments", "evaluate.py"),
        f"--workdir={copy}",
        f"--config={config_file}",
        f"--coordinator_address={address}",
        "--num_processes=2",
        f"--process_id={i}",
      ],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(2)
  ]
  outputs = [p.communicate(timeout=300)[0] for p in procs]
  for i, (p, out) in enumerate(zip(procs, outputs)):
    assert p.returncode == 0, f"process {i} failed:\n{out[-3000:]}"
  got_all = json.load(open(os.path.join(copy, "eval_metrics.json")))
  assert got_all["protocol"]["confusion_matrix"] == per_image.tolist()
  got = got_all["validation"]
  assert got["mask_ap"].keys() == want["mask_ap"].keys()
  for key, value in want["mask_ap"].items():
    assert got["mask_ap"][key] == (pytest.approx(value) if isinstance(value, float) else value), key
  assert got["confusion_matrix"] == want["confusion_matrix"]
  assert got["pq"] == pytest.approx(want["pq"])


def test_a_restart_removes_what_a_kill_left_half_written_of_its_images(tmp_path):
  from segjax import predict_files

  for name in (
    "records/scene_08.json.tmp20921-140245.json",
    "masks/scene_08.png.tmp5.png",
    "records/scene_08.json",
    "masks/scene_080.png.tmp5.png",
    "records/scene_08_x.json.tmp3.json",
  ):
    (tmp_path / name).parent.mkdir(exist_ok=True)
    (tmp_path / name).write_text("")
  predict_files.remove_partial_files(str(tmp_path), "scene_08")
  left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
  # Only scene_08's temporary files go: its finished record and other images' files stay.
  assert left == [
    "masks/scene_080.png.tmp5.png",
    "records/scene_08.json",
    "records/scene_08_x.json.tmp3.json",
  ]
