"""What every ``experiments/`` main shares: quiet libraries, errors in one line, ``--verbose``,
``--show_config``, and a fast ``--help`` (the mains import JAX, TensorFlow and segjax's modules
inside ``main``; this module imports only absl).

  from segjax import cli
  _CONFIG = cli.config_flag()
  def main(argv):
    config = _CONFIG.value     # --show_config prints the flags and config instead of running
    ...
  if __name__ == "__main__":
    cli.run(main)

A run that fails on bad input (a missing file, a config key that does not exist, a label out of
range, ...) prints ``error: <message>`` on one line and exits with status 1; ``--verbose`` shows the
traceback and the libraries' logs.
"""

from __future__ import annotations

import os
import sys

from segjax import machine  # os and glob only

# Before TensorFlow is imported anywhere: no oneDNN notice, no C++ INFO/WARNING lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# On a machine without an accelerator, JAX starts its CPU backend only: the TPU and CUDA plugins
# that `.[plan]` or `.[cuda12]` install would otherwise each print their failed start-up (a CUDA
# traceback, libtpu's host errors) in every script. JAX_PLATFORMS, when set, decides.
if "JAX_PLATFORMS" not in os.environ and not machine.accelerator_present():
  os.environ["JAX_PLATFORMS"] = "cpu"

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

_VERBOSE = flags.DEFINE_bool("verbose", False, "Full tracebacks and the libraries' INFO logs.")
_SHOW_CONFIG = flags.DEFINE_bool(
  "show_config",
  False,
  "Print this command's flags and its config "
  "(every key, after the --config.<key>=... overrides), and exit.",
)

CONFIG_HELP = (
  "Path to a config file (configs/*.py). Any key can be overridden with "
  "--config.<key>=<value>; --show_config lists every key and its value."
)


def config_flag(
  name: str = "config",
  help_text: str = CONFIG_HELP,
  required: bool = True,
  default: str | None = None,
):
  """``--config``: a config file (locked, so that an override of an unknown key is an error);
  ``path:argument`` passes the argument to its ``get_config``. With a ``default`` (a path
  relative to the repository, e.g. ``configs/unet_microscopy.py:cpu``) the flag is optional."""
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel

  if default is not None:
    default = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), default)
  holder = config_flags.DEFINE_config_file(name, default, help_text, lock_config=True)
  if required and default is None:
    flags.mark_flag_as_required(name)
  return holder


def show_config() -> None:
  """What ``--show_config`` prints: the main's own flags (``--name=value``), then each config flag's
  config after its overrides. Every main has it: it checks a command line without running it."""
  main_flags = flags.FLAGS.get_key_flags_for_module(sys.argv[0])
  configs = []
  for flag in sorted(main_flags, key=lambda f: f.name):
    if flag.name in ("show_config", "verbose"):
      continue
    if hasattr(flag.value, "to_dict"):  # a config file flag: its ConfigDict
      configs.append(flag)
    else:
      print(f"--{flag.name}={'' if flag.value is None else flag.value}")
  for flag in configs:
    print(f"--{flag.name}:\n{flag.value}")


def define_distributed_flags() -> None:
  """`segjax.distributed`'s flags, shown in the ``--help`` of a main that adopts this module's
  key flags (``flags.adopt_module_key_flags(cli)``, after this call)."""
  from segjax import distributed as runtime  # pylint: disable=import-outside-toplevel

  runtime.define_flags()
  flags.adopt_module_key_flags(runtime)


def start_distributed() -> None:
  """Starts the JAX distributed runtime from `segjax.distributed`'s flags (before anything touches
  a device)."""
  from segjax import distributed as runtime  # pylint: disable=import-outside-toplevel

  runtime.initialize_from_flags()


def one_line(error: BaseException) -> str:
  """An exception as one readable line: the message of a KeyError / AttributeError unquoted (no
  escaped newlines), the config's "did you mean" kept."""
  message = error.args[0] if len(error.args) == 1 and isinstance(error.args[0], str) else str(error)
  for _ in range(3):  # ml_collections nests KeyError('...') inside AttributeError(KeyError)
    if len(message) > 1 and message[0] == message[-1] and message[0] in "'\"":
      message = message[1:-1].encode().decode("unicode_escape")
  lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
  message = " ".join(
    line if line[-1] in ".:;,!?" or i == len(lines) - 1 else line + "."
    for i, line in enumerate(lines)
  )
  if isinstance(error, (KeyError, AttributeError)) and "Did you mean" in message:
    return f"no config key {message}"
  return message


class _QuietImport:
  """A meta-path finder: the first import of ``module`` (a top-level package) runs with the
  process's stderr closed — TensorFlow's C++ notices (oneDNN, CPU features) print at its import,
  before any setting can silence them. The mains import TensorFlow only where they need it
  (predicting image files does not), so the silence costs nothing until then. A failing import
  raises as usual."""

  def __init__(self, module: str):
    self.module = module

  def find_spec(self, name, path=None, target=None):
    if name != self.module:
      return None
    import importlib.machinery  # pylint: disable=import-outside-toplevel

    sys.meta_path.remove(self)
    spec = importlib.machinery.PathFinder.find_spec(name, path)
    if spec is not None and spec.loader is not None:
      spec.loader = _QuietLoader(spec.loader)
    return spec


class _QuietLoader:
  def __init__(self, loader):
    self.loader = loader

  def create_module(self, spec):
    return self.loader.create_module(spec)

  def exec_module(self, module):
    sys.stderr.flush()
    saved = os.dup(2)
    try:
      with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
          self.loader.exec_module(module)
        finally:
          os.dup2(saved, 2)
    finally:
      os.close(saved)


def run(main, commands: tuple[str, ...] = ()) -> None:
  """``absl.app.run(main)``, with one-line errors (the traceback under ``--verbose``). With
  ``commands``, the one positional argument must be one of them (``main`` gets it as argv[1])."""
  verbose = any(arg in ("--verbose", "--verbose=true", "--verbose=True") for arg in sys.argv)

  def quiet_main(argv):
    if commands and (len(argv) != 2 or argv[1] not in commands) and not _SHOW_CONFIG.value:
      raise app.UsageError(f"Expected one command of {', '.join(commands)}; got {argv[1:]}")
    if len(argv) > 1 + bool(commands):
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if _SHOW_CONFIG.value:
      return show_config()
    if not verbose:
      logging.set_verbosity(logging.WARNING)  # orbax and tfds are chatty at INFO
      if "tensorflow" not in sys.modules:
        sys.meta_path.insert(0, _QuietImport("tensorflow"))
    return main(argv)

  try:
    app.run(quiet_main)
  except (SystemExit, KeyboardInterrupt):
    raise
  except Exception as e:  # pylint: disable=broad-except
    if verbose:
      raise
    print(f"error: {one_line(e)}  [--verbose: traceback]", file=sys.stderr)
    sys.exit(1)
