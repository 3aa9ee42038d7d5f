#!/usr/bin/env python3
"""Sets up segjax in ./.venv and runs the quickstart or the tests. Needs only Python and pip's index.

  python3 bootstrap.py quickstart   # train, evaluate and predict on the built-in dataset
  python3 bootstrap.py test [pytest args]
  python3 bootstrap.py test --quick   # the iteration tier: every test not marked slow

The virtual environment is created (or refreshed when setup.cfg or the constraints change) with an
interpreter >= 3.11 (JAX's minimum): this one if it qualifies, else python3.13/3.12/3.11 from PATH.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(ROOT, ".venv")
PYTHON = os.path.join(VENV, "bin", "python")
STAMP = os.path.join(VENV, ".segjax-installed")
QUICKSTART_WORKDIR = os.path.join(ROOT, "workdirs", "quickstart")
QUICKSTART_CONFIG = os.path.join("configs", "unet_shapes.py")


def run(*command):
  print(time.strftime("%H:%M:%S"), "+", " ".join(command), flush=True)
  subprocess.run(command, cwd=ROOT, check=True, env=child_env())


def find_interpreter():
  if sys.version_info >= (3, 11):
    return sys.executable
  for name in ("python3.13", "python3.12", "python3.11"):
    path = shutil.which(name)
    if path:
      return path
  sys.exit(
    f"segjax needs Python >= 3.11 (JAX's minimum); this is {sys.version.split()[0]} and no "
    "python3.11+ is on PATH. Install one and run this command with it."
  )


def install_fingerprint(extras):
  digest = hashlib.sha256(extras.encode())
  for name in ("setup.cfg", "pyproject.toml", os.path.join("requirements", "constraints.txt")):
    with open(os.path.join(ROOT, name), "rb") as f:
      digest.update(f.read())
  return digest.hexdigest()


def ensure_environment(extras):
  """Installs segjax (with `extras`) into .venv unless the stamp says it is there already.

  `--no-compile` skips byte-compiling the ~2 GB of dependencies (half of pip's time); instead the
  modules actually imported are compiled once, on first import, into .venv/pycache (see `child_env`).
  """
  fingerprint = install_fingerprint(extras)
  if os.path.exists(STAMP) and open(STAMP).read() in (fingerprint, install_fingerprint("test")):
    return
  if not os.path.exists(PYTHON):
    run(find_interpreter(), "-m", "venv", VENV)
  run(
    PYTHON,
    "-m",
    "pip",
    "install",
    "--quiet",
    "--no-compile",
    "-c",
    os.path.join("requirements", "constraints.txt"),
    "-e",
    f".[{extras}]" if extras else ".",
  )
  with open(STAMP, "w") as f:
    f.write(fingerprint)


def child_env():
  """Lets the children write bytecode, into .venv/pycache (not the source tree), and keeps JAX on
  the CPU unless told otherwise (the test extras install libtpu, which JAX would otherwise probe)."""
  env = dict(os.environ, PYTHONPYCACHEPREFIX=os.path.join(VENV, "pycache"))
  env.setdefault("JAX_PLATFORMS", "cpu")
  env.pop("PYTHONDONTWRITEBYTECODE", None)
  return env


def quickstart(extra):
  config = ["--config=" + QUICKSTART_CONFIG, "--workdir=" + QUICKSTART_WORKDIR]
  os.makedirs(os.path.dirname(QUICKSTART_WORKDIR), exist_ok=True)
  run(PYTHON, "experiments/quickstart.py", *config, *extra)  # train, evaluate, predict
  print(time.strftime("%H:%M:%S"), "quickstart finished")
  print(
    f"\nMetrics: {QUICKSTART_WORKDIR}/final_metrics.json, pictures: "
    f"{QUICKSTART_WORKDIR}/predictions/, TensorBoard: tensorboard --logdir {QUICKSTART_WORKDIR}\n"
    f"Re-evaluate: .venv/bin/python experiments/evaluate.py {' '.join(config)}"
  )


def lint():
  """The tree's lint and format checks (ruff.toml): a finding stops before the tests."""
  ruff = os.path.join(os.path.dirname(PYTHON), "ruff")
  run(ruff, "check", "--quiet", ".")
  run(ruff, "format", "--check", "--quiet", ".")


def test(extra):
  # Two workers: most test time is single-threaded XLA compilation, so two cores halve it.
  # --quick: the tier for iteration, without the tests marked slow (tests/conftest.py).
  if extra[:1] == ["--quick"]:
    extra = ["-q", "-n", "2", "-m", "not slow", "tests", *extra[1:]]
  if not extra:  # the full suite (.ci/run): the tree's lint and format first
    lint()
  run(PYTHON, "-m", "pytest", *(extra or ["-q", "-n", "2", "tests"]))


def main():
  commands = {"quickstart": quickstart, "test": test}
  extras = {"quickstart": "", "test": "test"}  # the quickstart needs no test tools
  if len(sys.argv) < 2 or sys.argv[1] not in commands:
    sys.exit(f"usage: python3 bootstrap.py {{{'|'.join(commands)}}} [args]")
  ensure_environment(extras[sys.argv[1]])
  try:
    commands[sys.argv[1]](sys.argv[2:])
  except subprocess.CalledProcessError as e:
    sys.exit(e.returncode)


if __name__ == "__main__":
  main()
