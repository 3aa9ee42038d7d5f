"""Every experiments/ main as a user runs it, in its own process, on the tiny config (the ones
other tests launch: train.py in test_multihost, plan.py in test_plan, --help and config errors in
test_cli): quickstart -> evaluate -> export -> predict (pictures and pre-labels from the exported
file), with the command lines of docs/training.md; readme_pictures; make_shapes_folder, benchmark."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, documented_commands


def _main(script, *args, cwd=None):
  result = subprocess.run(
    [sys.executable, os.path.join(ROOT, "experiments", script), *args],
    capture_output=True,
    text=True,
    timeout=600,
    cwd=cwd,
    env={**os.environ, "PYTHONPATH": ROOT},
  )
  assert result.returncode == 0, f"{script} {args}:\n{result.stdout[-2000:]}{result.stderr[-3000:]}"
  return result.stdout + result.stderr


def _documented(script, *, replace, extra=()):
  """The arguments of the command line of docs/training.md that runs experiments/``script`` with
  ``--workdir=W`` or ``--model=...``, its placeholders replaced."""
  for words in documented_commands(os.path.join(ROOT, "docs", "training.md")):
    if words[0] == f"experiments/{script}" and any(
      a in ("--workdir=W", "--model=model.safetensors") for a in words
    ):
      args = []
      for arg in words[1:]:
        name, _, value = arg.partition("=")
        args.append(f"{name}={replace.get(value, value)}")
      return [*args, *extra]
  raise AssertionError(f"docs/training.md has no {script} command with --workdir=W")


def _config_file(tmp_path, data_dir):
  path = tmp_path / "tiny_config.py"
  path.write_text(
    f"import sys\nsys.path.insert(0, {os.path.join(ROOT, 'tests')!r})\n"
    "from conftest import tiny_config\n\n"
    f"def get_config():\n  return tiny_config({data_dir!r})\n"
  )
  return str(path)


@pytest.mark.slow
def test_quickstart_evaluate_export_predict(data_dir, tmp_path):
  config, workdir = _config_file(tmp_path, data_dir), str(tmp_path / "runs" / "quick")
  out = _main("quickstart.py", f"--config={config}", f"--workdir={workdir}")
  final = json.load(open(os.path.join(workdir, "final_metrics.json")))["validation"]
  pictures = sorted(os.listdir(os.path.join(workdir, "predictions")))
  assert "contact_sheet.png" in pictures and len(pictures) >= 3
  assert f"Wrote {len(pictures) - 1} pictures" in out
  assert os.path.exists(os.path.join(workdir, "training_curves.png"))
  # The README's two pictures, from this run.
  _main("readme_pictures.py", f"--workdir={workdir}", f"--output={tmp_path / 'images'}")
  first = sorted(p for p in pictures if p != "contact_sheet.png")[0]
  assert (tmp_path / "images" / "quickstart.png").read_bytes() == open(
    os.path.join(workdir, "predictions", first), "rb"
  ).read()
  assert np.asarray(Image.open(tmp_path / "images" / "training_curves.png")).shape[1] > 800
  # evaluate.py re-scores the checkpoint: the same confusion matrix as the run's own evaluation.
  images, output = tmp_path / "to_label", tmp_path / "prelabels"
  replace = {
    "W": workdir,
    "model.safetensors": str(tmp_path / "tiny.safetensors"),
    "photos/": str(images),
    "labels": str(output),
  }
  out = _main("evaluate.py", *_documented("evaluate.py", replace=replace))
  again = json.load(open(os.path.join(workdir, "eval_metrics.json")))["validation"]
  assert again["confusion_matrix"] == final["confusion_matrix"] and "mIoU" in out
  _main("export.py", *_documented("export.py", replace=replace))
  assert os.path.getsize(replace["model.safetensors"]) > 0
  images.mkdir()
  rng = np.random.default_rng(0)
  for i in range(2):
    Image.fromarray(rng.integers(0, 255, (40, 56, 3), np.uint8)).save(images / f"img{i}.png")
  out = _main("predict.py", *_documented("predict.py", replace=replace, extra=["--format=coco"]))
  assert "Pre-labelled 2 images" in out
  coco = json.load(open(output / "annotations.json"))
  assert sorted(i["file_name"] for i in coco["images"]) == ["img0.png", "img1.png"]
  assert [c["name"] for c in json.load(open(output / "classes.json"))["classes"]] == [
    "stripes",
    "speckle",
    "disc",
    "triangle",
    "square",
  ]
  assert len(list(csv.DictReader(open(output / "review.csv")))) == 2


@pytest.mark.slow
def test_make_shapes_folder_and_benchmark(data_dir, tmp_path):
  root = tmp_path / "folder"
  _main(
    "make_shapes_folder.py",
    f"--output={root}",
    "--image_size=48",
    "--num_train=2",
    "--num_validation=1",
    "--max_things=4",
  )
  for split, count in (("train", 2), ("val", 1)):
    assert (
      len(os.listdir(root / split / "images")) == len(os.listdir(root / split / "masks")) == count
    )
  mask = np.asarray(Image.open(next((root / "train" / "masks").iterdir())))
  assert mask.shape == (48, 48) and mask.max() < 5
  assert [c["name"] for c in json.load(open(root / "classes.json"))["classes"]][0] == "stripes"
  output, config = tmp_path / "bench", _config_file(tmp_path, data_dir)
  _main(
    "benchmark.py",
    "--sections=models",
    f"--configs={config}",
    "--batch_size=1",
    "--repeats=1",
    "--warmup=0",
    f"--output={output}",
  )
  (row,) = json.load(open(output / "benchmark.json"))["rows"]
  assert row["model"] == "unet" and row["train_ms"] > 0 and row["params"] > 0
  assert row["train_flops"] > row["infer_flops"] > 0
  assert "| tiny_config | unet |" in (output / "benchmark.md").read_text()
