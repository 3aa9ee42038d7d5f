"""Self-describing runs: prediction and evaluation from the run directory alone (training data and
optimizer state deleted), exported models, configs recorded so that they reproduce the run."""

import json
import os
import tempfile
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from segjax import models
from segjax import runs
from segjax import train
from segjax.data import shapes

from conftest import ROOT, load_config


def write_shapes_folder(root, counts=(("train", 6), ("val", 2)), size=32):
  """A folder dataset of shapes scenes (images, masks, classes.json), as a user's data."""
  d = shapes.DESCRIPTOR
  os.makedirs(root, exist_ok=True)
  with open(os.path.join(root, "classes.json"), "w") as f:
    json.dump(
      {
        "classes": [
          {
            "id": i,
            "name": n,
            "color": list(d.colormap[i]),
            "kind": "thing" if i in d.thing_classes else "stuff",
          }
          for i, n in enumerate(d.class_names)
        ]
      },
      f,
    )
  for split, count in counts:
    for sub in ("images", "masks"):
      os.makedirs(os.path.join(root, split, sub), exist_ok=True)
    for i in range(count):
      image, semantic, _ = shapes.render_scene(np.random.default_rng([len(split), i]), size, 3)
      cv2.imwrite(os.path.join(root, split, "images", f"{split}_{i}.png"), image[..., ::-1])
      cv2.imwrite(os.path.join(root, split, "masks", f"{split}_{i}.png"), semantic)


def tiny_folder_config(root, data_dir):
  config = load_config("unet_folder")
  config.data.update(
    dict(
      root=root,
      data_dir=data_dir,
      patch_size=(32, 32),
      patch_stride=(32, 32),
      crop_size=(32, 32),
      class_balanced=0.0,
      min_labelled_fraction=0.0,
    )
  )
  config.model.update(dict(features=4, depth=2))
  config.update(
    dict(
      batch_size=4,
      eval_batch_size=2,
      num_train_steps=2,
      log_every_steps=1,
      checkpoint_every_steps=2,
    )
  )
  config.predict.split = "validation"
  return config


def _main(name, *flags, imported=None):
  """The stdout of ``experiments/<name>.py`` with ``flags``; ``imported`` (a set) receives the names
  of the modules loaded when it exits."""
  script = os.path.join(ROOT, "experiments", f"{name}.py")
  command = [sys.executable, script, *flags]
  if imported is not None:
    report = tempfile.mktemp(suffix=".modules")
    command = [
      sys.executable,
      "-c",
      "import atexit, runpy, sys\n"
      f"atexit.register(lambda: open({report!r}, 'w').write(chr(10).join(sys.modules)))\n"
      f"sys.argv = {[script, *flags]!r}\n"
      f"runpy.run_path({script!r}, run_name='__main__')",
    ]
  result = subprocess.run(
    command,
    capture_output=True,
    text=True,
    timeout=600,
    env={**os.environ, "PYTHONPATH": ROOT},
  )
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  if imported is not None:
    with open(report) as f:
      imported.update(f.read().split())
    os.remove(report)
  return result.stdout


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("folder_run")
  root, data_dir, workdir = str(tmp / "data"), str(tmp / "tfds"), str(tmp / "run")
  write_shapes_folder(root)
  config = tiny_folder_config(root, data_dir)
  final = train.train_and_evaluate(config, workdir).metrics
  return tmp, root, data_dir, workdir, final


@pytest.mark.slow
def test_prediction_and_evaluation_need_neither_training_data_nor_optimizer_state(folder_run):
  tmp, root, data_dir, workdir, final = folder_run
  photos = str(tmp / "photos")
  shutil.copytree(os.path.join(root, "val", "images"), photos)
  # The training images and the prepared dataset go; so does every checkpoint's optimizer state.
  shutil.rmtree(os.path.join(root, "train"))
  shutil.rmtree(data_dir)
  for step in os.listdir(os.path.join(workdir, "checkpoints")):
    shutil.rmtree(os.path.join(workdir, "checkpoints", step, "training"))
  out, imported = str(tmp / "prelabels"), set()
  printed = _main(
    "predict",
    f"--workdir={workdir}",
    f"--input={photos}",
    f"--output={out}",
    "--format=coco",
    imported=imported,
  )
  assert "Pre-labelled 2 images" in printed
  # Image files are read and normalised without TensorFlow (it takes ~10 s to import).
  assert "segjax.predict" in imported and "tensorflow" not in imported
  coco = json.load(open(os.path.join(out, "annotations.json")))
  assert [c["name"] for c in coco["categories"]] == list(shapes.DESCRIPTOR.class_names)
  assert sorted(os.listdir(os.path.join(out, "masks"))) == ["val_0.png", "val_1.png"]
  # Evaluation re-prepares what is left of the folder (val/) and gets the run's own numbers.
  _main("evaluate", f"--workdir={workdir}")
  again = json.load(open(os.path.join(workdir, "eval_metrics.json")))["validation"]
  assert again["confusion_matrix"] == final["validation"]["confusion_matrix"]


def test_exported_model_predicts_alone_and_holds_only_the_model(folder_run, tmp_path):
  _, root, _, workdir, _ = folder_run
  run = runs.load(workdir)
  path = runs.export(run, str(tmp_path / "model.safetensors"))
  params = models.count_params(run.variables)
  size = os.path.getsize(path)
  assert 4 * params < size < 4 * params + 40_000  # float32 variables + the JSON metadata
  umask = os.umask(0)
  os.umask(umask)
  assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # as any file written with open()
  loaded = runs.load(path)
  assert loaded.descriptor == run.descriptor
  assert loaded.config.data.mean == tuple(run.config.data.mean)
  image = np.random.default_rng(0).normal(size=(1, 32, 32, 3)).astype(np.float32)
  np.testing.assert_array_equal(loaded.apply(image)["logits"], run.apply(image)["logits"])
  with open(str(tmp_path / "other.safetensors"), "wb") as f:
    f.write(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
  with pytest.raises(ValueError, match="other.safetensors.*not a segjax model export"):
    runs.load(str(tmp_path / "other.safetensors"))


def test_config_records_functions_by_importable_name():
  config = load_config("unet_shapes")
  from segjax.losses import functions

  config.losses = (("logits", "semantic", functions.dice_loss, 0.5),)
  recorded = runs.config_to_dict(config)
  assert recorded["losses"][0][2] == "segjax.losses.functions:dice_loss"
  restored = runs.config_from_dict(json.loads(json.dumps(recorded)))
  assert restored.losses[0] == ("logits", "semantic", "segjax.losses.functions:dice_loss", 0.5)
  config.losses = (("logits", "semantic", lambda x, y, **kw: 0.0, 0.5),)
  with pytest.raises(ValueError, match=r"config.losses\[0\]\[2\].*cannot record"):
    runs.config_to_dict(config)
  # config.loss, a string by default, takes a function or the list form in a config file.
  config.losses = ()
  config.loss = [(functions.cross_entropy, 1.0), (functions.dice_loss, 0.5, {"smooth": 1.0})]
  recorded = runs.config_to_dict(config)
  assert recorded["loss"] == [
    ["segjax.losses.functions:cross_entropy", 1.0],
    ["segjax.losses.functions:dice_loss", 0.5, {"smooth": 1.0}],
  ]
  from segjax.losses import terms  # pylint: disable=import-outside-toplevel

  made = terms.make_terms(recorded["loss"])  # the recorded form builds the same terms
  assert [(t.label, t.weight) for t in made] == [("cross_entropy", 1.0), ("dice_loss", 0.5)]
  assert made[1].loss.keywords == {"smooth": 1.0}
  config.loss = functions.dice_loss
  assert runs.config_to_dict(config)["loss"] == "segjax.losses.functions:dice_loss"


def test_missing_run_files_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json does not exist.*segjax run directory"):
    runs.load(str(tmp_path))
