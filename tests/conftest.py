"""Test set-up: 4 simulated CPU devices (before JAX starts) and shared tiny fixtures."""

import os


def xla_flags(devices: int) -> str:
  """``XLA_FLAGS`` of the tests (and of the processes they start): ``devices`` simulated CPU
  devices, and XLA:CPU's code generated at LLVM level 1, which compiles the suite's many small
  programs ~20% faster than the default level; the tests assert values, not speed. (Level 0
  compiles faster still, but its code made the tiny UNet's parameters non-finite on the third
  step.)"""
  return f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=1"


os.environ.setdefault("XLA_FLAGS", xla_flags(4))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402

# Tests compile the same programs again (resumed runs, sub-processes): JAX's persistent compilation
# cache, in a directory of this session's, serves the repeats.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="segjax-test-jax-cache-")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The longest tests start first, longest first (their durations on the 2-core CI machine), so
# that the two xdist workers finish together.
SLOW_FIRST = (
  "test_recipes.py::test_recipe_trains_and_evaluates_at_its_crop_size[hmsa",
  "test_recipes.py",
  "test_labelstudio_load.py",
  "test_labelstudio.py::test_labelling_loop",
  "test_experiments.py::test_quickstart",
  "test_multihost.py::test_two_processes",
  "test_train.py::test_a_tiny_unet_learns",
  "test_multihost.py::test_two_process_prediction",
  "test_multihost.py::test_mask_ap",
  "test_multihost.py::test_sigterm",
  "test_microscopy.py::test_microscopy_script",
  "test_runs.py::test_prediction_and_evaluation_need",
  "test_plan.py::test_plan_main",
  "test_benchmark.py::test_scaling",
  "test_transformers_reference.py::test_a_tiny_mask2former",
  "test_plan.py::test_collectives",
)


_LABEL_STUDIO_INSTALL = []


def pytest_configure(config):
  """A run of the whole suite or of a Label Studio test file, slow tests included, installs Label
  Studio's cached environment, when it is not there yet, in the background of its first process
  (xdist's controller) while the first tests run; the tests that need it wait on its lock
  (`segjax.labelstudio.server.ensure_installed`)."""
  if hasattr(config, "workerinput") or "not slow" in (config.option.markexpr or ""):
    return
  targets = [os.path.basename(os.path.normpath(a.split("::")[0])) for a in config.args]
  if not any(t == "tests" or t.startswith("test_labelstudio") for t in targets):
    return
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel

  from segjax.labelstudio import server  # pylint: disable=import-outside-toplevel

  stamp = os.path.join(server.venv_dir(), ".segjax-installed")
  if os.path.exists(stamp) and open(stamp).read() == server.VERSION:
    return
  install = "from segjax.labelstudio import server; server.ensure_installed()"
  _LABEL_STUDIO_INSTALL.append(subprocess.Popen([sys.executable, "-c", install]))


def pytest_unconfigure(config):
  del config
  for process in _LABEL_STUDIO_INSTALL:  # finished by then, unless no test needed it
    process.wait(timeout=600)


def pytest_collection_modifyitems(items):
  def rank(item):
    return next((i for i, name in enumerate(SLOW_FIRST) if name in item.nodeid), len(SLOW_FIRST))

  items.sort(key=rank)  # stable: the others keep their order


def load_config(name: str):
  """``get_config()`` of ``configs/<name>.py``; ``name:argument`` calls ``get_config(argument)``
  (`segjax.config_defaults.load_config`)."""
  from segjax import config_defaults  # pylint: disable=import-outside-toplevel

  name, _, argument = name.partition(":")
  return config_defaults.load_config(os.path.join(ROOT, "configs", f"{name}.py"), argument or None)


def records_of_mock_data(builder, split):
  """``segjax.data.stream.records`` for tfds.testing.mock_data: the (mocked) ``as_dataset`` of
  ``split`` serialized into a TFRecord file (the features a mocked example leaves out: tfds's
  random values), so the training stream reads the examples evaluation reads."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from segjax.data import stream  # pylint: disable=import-outside-toplevel

  features = builder.info.features
  fill = tfds.testing.mocking.RandomFakeGenerator(features, 1)[0]
  directory = tempfile.mkdtemp(prefix="segjax-mock-records-")
  atexit.register(shutil.rmtree, directory, True)
  path = os.path.join(directory, "records.tfrecord")
  with tf.io.TFRecordWriter(path) as writer:
    for example in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)):
      writer.write(features.serialize_example(_fit_shapes(_completed(example, fill), features)))
  return stream.Records.of_files([path])


def _completed(example, fill):
  """``example`` with the keys it lacks taken from ``fill``; in nested dicts (sequences of
  objects, one array per field) zeros for the example's number of objects (a zero box is
  valid)."""
  if not isinstance(example, dict) or not isinstance(fill, dict):
    return example
  lengths = [len(v) for v in example.values() if isinstance(v, np.ndarray) and v.ndim]
  out = {}
  for key, value in fill.items():
    if key in example:
      out[key] = _completed(example[key], value)
    elif lengths and isinstance(value, np.ndarray) and value.ndim:
      out[key] = np.zeros((lengths[0],) + value.shape[1:], value.dtype)
    else:
      out[key] = value
  return {**example, **out}


def _fit_shapes(example: dict, features) -> dict:
  """Images of a mocked example resized (nearest) to the fixed shape its feature declares (a
  small fake Cityscapes scene to 1024x2048), so that tfds serializes it."""
  import cv2  # pylint: disable=import-outside-toplevel

  out = dict(example)
  for key, feature in features.items():
    shape = getattr(feature, "shape", None)
    value = out.get(key)
    if (
      isinstance(value, np.ndarray)
      and shape
      and len(shape) == 3
      and None not in shape
      and value.shape != tuple(shape)
    ):
      resized = cv2.resize(value, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
      out[key] = resized.reshape(shape).astype(value.dtype)
  return out


def tiny_config(data_dir: str):
  """The quickstart config shrunk to seconds: 32x32 images, a 2-level UNet of width 4."""
  config = load_config("unet_shapes")
  config.data.update(
    dict(
      data_dir=data_dir,
      image_size=32,
      num_train=24,
      num_validation=10,
      num_test=6,
      crop_size=(32, 32),
      max_things=3,
      train_pp="random_scale(0.75, 1.25)|random_crop(32)|flip_lr",
    )
  )
  config.model.update(dict(features=4, depth=2))
  config.inference.tta = ""  # the tests compare evaluation with single forward passes
  config.optimizer.warmup_steps = 1
  config.batch_size = 4
  config.eval_batch_size = 4
  config.num_train_steps = 6
  config.log_every_steps = 2
  config.checkpoint_every_steps = 3
  config.keep_checkpoints = 3
  return config


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture
def config(data_dir):
  return tiny_config(data_dir)


@pytest.fixture(scope="session")
def straight_run(data_dir, tmp_path_factory):
  """One uninterrupted tiny run shared by several tests: (config, workdir, final metrics)."""
  from segjax import train  # pylint: disable=import-outside-toplevel

  config = tiny_config(data_dir)
  workdir = str(tmp_path_factory.mktemp("straight") / "run")
  return config, workdir, train.train_and_evaluate(config, workdir).metrics


DOCS = [os.path.join(ROOT, "README.md")] + sorted(
  os.path.join(ROOT, "docs", name)
  for name in os.listdir(os.path.join(ROOT, "docs"))
  if name.endswith(".md")
)


def documented_commands(path: str) -> list[list[str]]:
  """Every ``experiments/<main>.py`` command line with arguments in the Markdown file ``path``, as
  argument lists (the script's path first): the lines of its code blocks (``\\`` continuations
  joined) and its inline code, ``[optional]`` parts and ``# comments`` dropped."""
  import re  # pylint: disable=import-outside-toplevel
  import shlex  # pylint: disable=import-outside-toplevel

  with open(path) as f:
    text = f.read()
  lines = []
  for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
    if lang != "python":
      lines += re.sub(r"\\\n\s*", " ", body).splitlines()
  lines += re.findall(
    r"`([^`\n]*experiments/\w+\.py[^`\n]*)`", re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
  )
  commands = []
  for line in lines:
    match = re.search(r"experiments/\w+\.py[^#\"]*", line)
    if match:
      words = shlex.split(re.sub(r"\[[^\]]*\]", "", match.group(0)))
      if len(words) > 1:
        commands.append(words)
  return commands
