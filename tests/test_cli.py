"""The experiments/ mains as a user runs them: --help without loading JAX, --show_config, errors in
one line naming the bad value (folder datasets of every pixel format train in
test_folder_training.py)."""

import os
import subprocess
import sys

import pytest

from segjax import cli

from conftest import ROOT

TRAIN = os.path.join(ROOT, "experiments", "train.py")


def _run(*args, timeout=600):
  return subprocess.run(
    [sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
  )


def test_help_lists_the_config_flags_without_importing_jax():
  result = _run(TRAIN, "--help")
  assert "--config" in result.stdout and "--show_config" in result.stdout
  assert "--workdir" in result.stdout and "--distributed" in result.stdout
  # The mains import JAX only inside main(): --help does not pay for it.
  probe = _run(
    "-c",
    "import sys; sys.argv = ['train.py', '--help']; import runpy\n"
    "try:\n  runpy.run_path(%r, run_name='__main__')\nexcept SystemExit: pass\n"
    "print('jax' in sys.modules, 'tensorflow' in sys.modules)" % TRAIN,
  )
  assert probe.stdout.strip().splitlines()[-1] == "False False"


def test_show_config_prints_every_key_after_overrides():
  result = _run(
    TRAIN,
    f"--config={ROOT}/configs/unet_shapes.py",
    "--workdir=/nonexistent/x",
    "--config.num_train_steps=17",
    "--show_config",
  )
  assert result.returncode == 0, result.stderr
  assert "num_train_steps: 17" in result.stdout and "train_pp:" in result.stdout
  assert not os.path.exists("/nonexistent/x")


def test_unknown_config_key_is_one_line_naming_it(tmp_path):
  result = _run(
    TRAIN,
    f"--config={ROOT}/configs/unet_shapes.py",
    f"--workdir={tmp_path / 'run'}",
    "--config.model.featurs=8",
  )
  assert result.returncode == 1
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr
  assert lines[0].startswith("error: no config key 'featurs'. Did you mean \"features\"")
  assert not (tmp_path / "run").exists()  # nothing was started


@pytest.mark.parametrize(
  "error, expected",
  [
    (
      KeyError("'num_train_step'\nDid you mean \"num_train_steps\" instead?"),
      "no config key 'num_train_step'. Did you mean \"num_train_steps\" instead?",
    ),
    (AttributeError(repr("'x'\nDid you mean \"y\"?")), "no config key 'x'. Did you mean \"y\"?"),
    (
      ValueError("a/b.png: mask size 80x96\ndiffers from the image's"),
      "a/b.png: mask size 80x96. differs from the image's",
    ),
    (FileNotFoundError(2, "No such file or directory"), "[Errno 2] No such file or directory"),
  ],
)
def test_one_line(error, expected):
  assert cli.one_line(error) == expected


@pytest.mark.parametrize(
  "key, value, message",
  [
    (
      "data.crop_size",
      (64, 64, 3),
      "config.data.crop_size=(64, 64, 3): expected an int or (height, width)",
    ),
    (
      "data.train_pp",
      "flip_lr|random_crp(64)",
      "config.data.train_pp='flip_lr|random_crp(64)': Unknown preprocessing op 'random_crp'",
    ),
    ("postprocess", "argmax|semantic_instances(methd='watershed')", "semantic_instances"),
    ("loss", "cross_entropy + dice_los", "Unknown loss 'dice_los'"),
    (
      "data.normalization",
      "min_max",
      "config.data.normalization='min_max': use one of 'mean_std', 'minmax', 'percentile'",
    ),
    ("optimizer.name", "adamx", "config.optimizer.name: Unknown optimizer 'adamx'"),
    ("data.name", "tfds:cityscape", "config.data.name: Unknown dataset 'tfds:cityscape'"),
  ],
)
def test_bad_config_values_are_named_before_anything_is_built(tmp_path, key, value, message):
  from segjax import train  # pylint: disable=import-outside-toplevel
  from conftest import tiny_config  # pylint: disable=import-outside-toplevel

  config = tiny_config(str(tmp_path / "tfds"))
  parent, _, leaf = key.rpartition(".")
  (config[parent] if parent else config)[leaf] = value
  with pytest.raises((ValueError, KeyError)) as raised:
    train.setup(config)
  assert message in cli.one_line(raised.value)
  assert not (tmp_path / "tfds").exists()  # no dataset was prepared, no model built


@pytest.mark.slow
def test_a_cpu_machine_with_the_tpu_compiler_installed_prints_one_line(tmp_path):
  """libtpu is installed here (the test extra) and there is no TPU: a main that starts JAX and
  TensorFlow and then fails prints the one error line and nothing else — no libtpu start-up
  errors, no TensorFlow notices."""
  script = tmp_path / "main.py"
  script.write_text(
    "from segjax import cli\n\n"
    "def main(argv):\n"
    "  import jax\n"
    "  import tensorflow as tf\n"
    "  assert jax.devices()[0].platform == 'cpu' and tf.constant(1).numpy() == 1\n"
    "  raise FileNotFoundError('photos/a.png does not exist')\n\n"
    "if __name__ == '__main__':\n"
    "  cli.run(main)\n"
  )
  env = {
    k: v
    for k, v in os.environ.items()
    if k not in ("JAX_PLATFORMS", "TF_CPP_MIN_LOG_LEVEL", "XLA_FLAGS")
  }
  result = subprocess.run(
    [sys.executable, str(script)],
    capture_output=True,
    text=True,
    timeout=600,
    cwd=ROOT,
    env={**env, "PYTHONPATH": ROOT},
  )
  assert result.returncode == 1
  assert result.stdout + result.stderr == (
    "error: photos/a.png does not exist  [--verbose: traceback]\n"
  )
