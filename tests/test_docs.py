"""The README and docs/ keep their promises: the README is short, its Python tour runs, every script,
config and config key they name exists, and the calls they show are real."""

import ast
import glob
import importlib
import os
import re
import subprocess
import sys
import types

import cv2
import numpy as np
import pytest

from conftest import DOCS, ROOT, documented_commands, load_config


def _text(path):
  with open(path) as f:
    return f.read()


def _all_text():
  return "\n".join(_text(p) for p in DOCS)


def test_readme_fits_on_a_few_screens():
  assert len(_text(DOCS[0]).splitlines()) <= 200


def test_named_scripts_configs_and_doc_links_exist():
  text = _all_text()
  for script in set(re.findall(r"experiments/(\w+)\.py", text)):
    assert os.path.exists(os.path.join(ROOT, "experiments", f"{script}.py")), script
  for config in set(re.findall(r"configs/(\w+)\.py", text)):
    assert os.path.exists(os.path.join(ROOT, "configs", f"{config}.py")), config
  for path in DOCS:
    for link in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", _text(path)):
      assert os.path.exists(os.path.join(os.path.dirname(path), link)), (path, link)


def test_config_keys_the_docs_override_exist():
  configs = [
    load_config(os.path.basename(p)[:-3]) for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
  ]
  for key in sorted(set(re.findall(r"--config\.([a-z_][\w.]*)=", _all_text()))):

    def has(config, parts=key.split(".")):
      for part in parts:
        if part not in config:
          return False
        config = config[part]
      return True

    assert any(has(c) for c in configs), f"--config.{key} is in no config"


def test_named_calls_exist():
  import segjax  # pylint: disable=import-outside-toplevel

  text = _all_text()
  for dotted in sorted(set(re.findall(r"`(segjax(?:\.\w+)+)\(", text))):
    obj, parts = segjax, dotted.split(".")
    for i, part in enumerate(parts[1:], start=2):
      if not hasattr(obj, part) and isinstance(obj, types.ModuleType):
        try:  # a submodule its package does not import (segjax.labelstudio.server)
          importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
          pass
      assert hasattr(obj, part), f"{dotted}: no {part}"
      obj = getattr(obj, part)
    assert callable(obj), dotted


def test_readme_tour_runs(straight_run, tmp_path, monkeypatch):
  _, workdir, _ = straight_run
  data = tmp_path / "DATA"
  for i in range(2):
    os.makedirs(data / "train" / "images", exist_ok=True)
    os.makedirs(data / "train" / "masks", exist_ok=True)
    cv2.imwrite(
      str(data / "train" / "images" / f"{i}.png"),
      np.random.default_rng(i).integers(0, 255, (32, 32, 3), np.uint8),
    )
    cv2.imwrite(str(data / "train" / "masks" / f"{i}.png"), np.eye(32, dtype=np.uint8))
  block = re.search(r"```python\n(import jax.*?)```", _text(DOCS[0]), re.S).group(1)
  block = block.replace('"workdirs/quickstart"', repr(workdir))
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  namespace = {}
  exec(compile(block, "README.md", "exec"), namespace)  # pylint: disable=exec-used
  assert sorted(os.listdir(tmp_path / "labels" / "masks")) == ["0.png", "1.png"]
  assert len(namespace["rows"]) == 2
  assert namespace["model"].num_classes == 19


@pytest.mark.slow
def test_every_documented_command_line_parses():
  """Each ``experiments/`` command line of the docs, as written (``--config=...`` stands for a
  config file), with ``--show_config``: its flags exist, its config loads and takes its overrides.
  The quickstart chain's commands also run, at tiny sizes, in test_experiments.py."""
  commands = [
    (os.path.basename(doc), words)
    for doc in DOCS
    for words in documented_commands(doc)
    # the user's own files of extending.md: tests/test_extending.py runs that command
    if not any(w.startswith("--config=my_project/") for w in words)
  ]
  assert len(commands) >= 20 and {w[0] for _, w in commands} >= {
    f"experiments/{m}.py"
    for m in ("train", "evaluate", "predict", "export", "plan", "benchmark", "make_shapes_folder")
  }
  for doc, words in commands:
    args = [("--config=configs/unet_shapes.py" if a == "--config=..." else a) for a in words[1:]]
    result = subprocess.run(
      [sys.executable, os.path.join(ROOT, words[0]), *args, "--show_config"],
      capture_output=True,
      text=True,
      cwd=ROOT,
      timeout=120,
      env={**os.environ, "PYTHONPATH": ROOT},
    )
    assert result.returncode == 0, (doc, words, result.stderr[-1500:])
    for arg in (a for a in args if a.startswith("--")):  # not a sub-command (label_studio.py)
      name, _, value = arg[2:].partition("=")
      if name.startswith("config."):  # an override: the key holds the value in the config shown
        try:
          value = str(ast.literal_eval(value))  # 1e-3 is shown as 0.001
        except (ValueError, SyntaxError):
          pass
        assert re.search(
          rf"^ *{name.split('.')[-1]}: '?{re.escape(value)}'?$", result.stdout, re.M
        ), (doc, arg)
      elif name not in ("config", "click_config", "show_config", "verbose") and "," not in value:
        assert f"--{name}=" in result.stdout, (doc, arg)


def test_every_config_block_of_the_docs_is_a_valid_config():
  """The ``config.… = …`` Python blocks, applied to a shapes config: the checks the trainer makes
  before building anything pass, and the model they describe builds."""
  import jax  # pylint: disable=import-outside-toplevel
  from segjax import models, train  # pylint: disable=import-outside-toplevel

  blocks = [
    (os.path.basename(doc), block)
    for doc in DOCS
    for block in re.findall(r"```python\n(config\..*?)```", _text(doc), re.S)
  ]
  assert len(blocks) >= 4
  for doc, block in blocks:
    config = load_config("panoptic_deeplab_shapes" if "center" in block else "deeplabv3_shapes")
    exec(compile(block, doc, "exec"), {"config": config})  # pylint: disable=exec-used
    train.check_config(config)
    model = models.from_config(config.model, 5)
    variables = jax.eval_shape(
      lambda m=model: m.init(jax.random.key(0), jax.numpy.zeros((1, 64, 64, 3)), train=False)
    )
    assert models.count_params(variables["params"]) > 0, doc


@pytest.mark.parametrize("doc", DOCS, ids=os.path.basename)
def test_no_placeholders_left(doc):
  assert not re.search(r"\b(PLAN_TABLE\w*|MODELS_TABLE|SUITE_LINE|TODO)\b", _text(doc))


def test_parameter_counts_in_the_docs_are_the_configs():
  """Each table row ``| `<config>.py` | model | <count> | ...`` (README, docs/models.md) gives the
  parameter count of that config's model on the built-in dataset's 5 classes."""
  import jax
  from segjax import models

  rows = re.findall(r"^\| `(\w+)\.py`[^|\n]*\|[^|\n]*\| ([\d,]{5,}) \|", _all_text(), re.M)
  names = {name for name, _ in rows}
  assert {"unet_shapes", "segnet_shapes", "deeplabv3plus_shapes"} <= names, names
  for name, count in rows:
    config = load_config(name)
    model = models.from_config(config.model, 5)
    size = tuple(config.data.get("crop_size") or (64, 64))
    params = jax.eval_shape(
      lambda m=model, s=size: m.init(jax.random.key(0), jax.numpy.zeros((1, *s, 3)), train=False)
    )["params"]
    assert models.count_params(params) == int(count.replace(",", "")), name


def test_plan_tables_are_the_plans_in_docs_plans():
  """The recipe × slice tables of the README (one slice) and docs/recipes.md (all) are the
  output of the command their marker names, ``experiments/plan.py --table=docs/plans
  [--topology=...]``: the plan JSON files kept in the repository."""
  import json  # pylint: disable=import-outside-toplevel
  from segjax import plan_table  # pylint: disable=import-outside-toplevel

  paths = sorted(glob.glob(os.path.join(ROOT, "docs", "plans", "plan_*.json")))
  assert len(paths) >= 8
  results = [json.load(open(p)) for p in paths]
  for doc, topology in (("README.md", "v5e:4x8"), (os.path.join("docs", "recipes.md"), None)):
    marker = "experiments/plan.py --table=docs/plans" + (
      f" --topology={topology}" if topology else ""
    )
    block = re.search(
      r"<!-- plan table: ([^>]*) -->\n(.*?)\n<!-- /plan table -->",
      _text(os.path.join(ROOT, doc)),
      re.S,
    )
    assert block.group(1) == marker, doc
    assert block.group(2) == plan_table.markdown_table(results, topology=topology), doc
