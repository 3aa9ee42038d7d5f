"""A local Label Studio: installed into its own cached virtual environment (its pins never touch
segjax's), started unattended, driven through its REST API, and stopped.

  python = ensure_installed()                       # once: 0.8 GB, under a minute to a few
  with LabelStudio(state_dir, port=8080, document_root=images_parent) as studio:
    project = studio.create_project("cells", tasks.labelling_config(run.descriptor))
    ...

The environment is ``$SEGJAX_LABEL_STUDIO_VENV``, else ``~/.cache/segjax/label-studio-<version>``
(``$XDG_CACHE_HOME`` respected). The server runs with the settings of an offline, unattended start:
a preset user and API token, local files served from ``document_root``, ML backends on
127.0.0.1 allowed, no version check, analytics or error reporting.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

VERSION = "1.23.2"
USERNAME = "segjax@localhost.localdomain"
PASSWORD = "segjax-labelling"
TOKEN = "5e9a1a7b0c3d4e2f8a6b9c0d1e2f3a4b5c6d7e8f"  # a local server's preset key, not a secret


def venv_dir() -> str:
  """Where Label Studio's virtual environment lives (see the module docstring)."""
  if os.environ.get("SEGJAX_LABEL_STUDIO_VENV"):
    return os.path.abspath(os.environ["SEGJAX_LABEL_STUDIO_VENV"])
  cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(cache, "segjax", f"label-studio-{VERSION}")


def ensure_installed(venv: str | None = None, quiet: bool = True) -> str:
  """Creates ``venv`` with ``label-studio==VERSION`` unless it is there; returns its Python.
  Safe to call from several processes at once (a file lock; the first installs)."""
  import fcntl  # pylint: disable=import-outside-toplevel

  venv = venv or venv_dir()
  python, stamp = os.path.join(venv, "bin", "python"), os.path.join(venv, ".segjax-installed")
  os.makedirs(os.path.dirname(venv), exist_ok=True)
  with open(venv + ".lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if os.path.exists(stamp) and open(stamp).read() == VERSION:
      return python
    print(
      f"Installing Label Studio {VERSION} into {venv} (once: 0.8 GB, a minute or two)",
      file=sys.stderr,
      flush=True,
    )
    if not os.path.exists(python):
      subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    command = [
      python,
      "-m",
      "pip",
      "install",
      "--disable-pip-version-check",
      "--no-compile",
      f"label-studio=={VERSION}",
    ]
    result = subprocess.run(
      command + (["--quiet"] if quiet else []), capture_output=quiet, text=True, check=False
    )
    if result.returncode:
      raise RuntimeError(
        f"pip could not install label-studio=={VERSION} into {venv}: "
        f"{(result.stderr or '').strip()[-800:]}"
      )
    with open(stamp, "w") as f:
      f.write(VERSION)
  return python


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class LabelStudioError(RuntimeError):
  """Label Studio refused a request or did not start; the message says which and why."""


class LabelStudio:
  """One Label Studio server on 127.0.0.1 with its state (SQLite database, uploads) in
  ``state_dir``; images under ``document_root`` are served as local files."""

  def __init__(
    self, state_dir: str, *, port: int = 8080, document_root: str = "/", venv: str | None = None
  ):
    self.state_dir = os.path.abspath(state_dir)
    self.port, self.document_root = port, os.path.abspath(document_root)
    self.venv = venv or venv_dir()
    self.url = f"http://127.0.0.1:{port}"
    self.process, self.token = None, TOKEN
    self.log_path = os.path.join(self.state_dir, "label-studio.log")

  @classmethod
  def client(cls, url: str, token: str = TOKEN) -> "LabelStudio":
    """The REST API of a Label Studio running at ``url`` (not started or stopped by segjax)."""
    studio = cls(os.devnull)
    studio.url, studio.token = url.rstrip("/"), token
    return studio

  def environment(self) -> dict:
    return dict(
      os.environ,
      LABEL_STUDIO_BASE_DATA_DIR=self.state_dir,
      LABEL_STUDIO_USERNAME=USERNAME,
      LABEL_STUDIO_PASSWORD=PASSWORD,
      LABEL_STUDIO_USER_TOKEN=TOKEN,
      LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
      SECRET_KEY="segjax-local-label-studio",
      LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
      LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=self.document_root,
      ML_BLOCK_LOCAL_IP="false",
      SSRF_PROTECTION_ENABLED="false",
      LATEST_VERSION_CHECK="false",
      COLLECT_ANALYTICS="false",
      SENTRY_DSN="",
      FRONTEND_SENTRY_DSN="",
      LABEL_STUDIO_HOST=self.url,
    )

  # -------------------------------------------------------------------------------- process
  def start(self, timeout: float = 300.0) -> "LabelStudio":
    """Starts the server and waits until ``/health/`` answers (the first start creates the
    database: about a minute)."""
    os.makedirs(self.state_dir, exist_ok=True)
    executable = os.path.join(self.venv, "bin", "label-studio")
    if not os.path.exists(executable):
      raise LabelStudioError(
        f"no Label Studio in {self.venv}: call segjax.labelstudio.server.ensure_installed() first"
      )
    with open(self.log_path, "ab") as log:
      self.process = subprocess.Popen(
        [executable, "start", "--no-browser", "--internal-host", "127.0.0.1", "-p", str(self.port)],
        env=self.environment(),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
      )
    deadline = time.time() + timeout
    while time.time() < deadline:
      if self.process.poll() is not None:
        raise LabelStudioError(
          f"Label Studio exited with status {self.process.returncode} while "
          f"starting; its log: {self.log_path}\n{self.log_tail()}"
        )
      with contextlib.suppress(OSError, ValueError):
        with urllib.request.urlopen(self.url + "/health/", timeout=5) as response:
          if json.load(response).get("status") == "UP":
            return self
      time.sleep(1.0)
    self.stop()
    raise LabelStudioError(
      f"Label Studio did not answer on {self.url} within {timeout:.0f} s; "
      f"its log: {self.log_path}\n{self.log_tail()}"
    )

  def log_tail(self, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
      with open(self.log_path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])
    return ""

  def stop(self) -> None:
    """Stops the server and every process it started (its process group)."""
    if self.process is None or self.process.poll() is not None:
      return
    with contextlib.suppress(ProcessLookupError):
      os.killpg(self.process.pid, signal.SIGTERM)
    try:
      self.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
      with contextlib.suppress(ProcessLookupError):
        os.killpg(self.process.pid, signal.SIGKILL)
      self.process.wait()

  def __enter__(self):
    return self.start() if self.process is None else self

  def __exit__(self, *exc):
    self.stop()

  # -------------------------------------------------------------------------------- REST API
  def interactive(self, backend: int, task: int, context: dict) -> dict:
    """What the smart tools get for ``context`` (their regions) on ``task``: Label Studio's
    interactive-annotating call, which forwards them to the backend's /predict."""
    answer = self.api(
      "POST", f"/api/ml/{backend}/interactive-annotating", {"task": task, "context": context}
    )
    if answer.get("errors"):
      raise LabelStudioError(f"interactive annotating of task {task}: {answer['errors']}")
    return answer["data"]

  def api(self, method: str, path: str, payload=None, timeout: float = 600.0):
    """One request to the REST API with the preset token; the decoded JSON answer."""
    request = urllib.request.Request(
      self.url + path,
      method=method,
      data=None if payload is None else json.dumps(payload).encode(),
      headers={"Authorization": f"Token {self.token}", "Content-Type": "application/json"},
    )
    try:
      with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read()
    except urllib.error.HTTPError as e:
      raise LabelStudioError(
        f"Label Studio answered {e.code} to {method} {path}: "
        f"{e.read().decode(errors='replace')[:500]}"
      ) from None
    return json.loads(body) if body else None

  def create_project(self, title: str, label_config: str) -> int:
    return self.api("POST", "/api/projects", {"title": title, "label_config": label_config})["id"]

  def add_local_storage(self, project: int, path: str) -> int:
    """Lets the project show the image files under ``path`` (without it they answer 404)."""
    return self.api(
      "POST",
      "/api/storages/localfiles",
      {
        "project": project,
        "path": os.path.abspath(path),
        "title": os.path.basename(path),
        "use_blob_urls": True,
      },
    )["id"]

  def import_tasks(self, project: int, tasks: list[dict]) -> None:
    self.api("POST", f"/api/projects/{project}/import", tasks)

  def connect_backend(
    self,
    project: int,
    url: str,
    title: str = "segjax",
    user: str | None = None,
    password: str | None = None,
    interactive: bool = False,
  ) -> int:
    """Connects an ML backend (Settings > Model > Connect Model, with "Basic Authentication"
    when ``user`` and ``password`` are given; ``interactive``: "Interactive preannotations", the
    smart tools' clicks and boxes sent to its /predict); Label Studio then calls its /setup and, for every
    annotation event, its /webhook. Label Studio sends the webhook from a webhook of its own
    that does not carry the model's credentials: they are set as that webhook's
    ``Authorization`` header."""
    request = {
      "project": project,
      "url": url,
      "title": title,
      "is_interactive": interactive,
      "auto_update": True,
    }
    if user is not None:
      request.update(auth_method="BASIC_AUTH", basic_auth_user=user, basic_auth_pass=password)
    backend = self.api("POST", "/api/ml", request)["id"]
    if user is not None:
      from segjax.labelstudio import serving  # pylint: disable=import-outside-toplevel

      header = serving.Credentials(user, password).header()
      webhook_url = url.rstrip("/") + "/webhook"
      for webhook in self.api("GET", f"/api/webhooks/?project={project}"):
        if webhook["url"] == webhook_url:
          self.api(
            "PATCH",
            f"/api/webhooks/{webhook['id']}/",
            {"headers": dict(webhook.get("headers") or {}, Authorization=header)},
          )
    return backend

  def retrieve_predictions(self, project: int) -> None:
    """Asks the connected backend for predictions of every task that lacks one of its current
    model version (the Data Manager's "Retrieve Predictions")."""
    self.api(
      "POST",
      f"/api/dm/actions?id=retrieve_tasks_predictions&project={project}",
      {"selectedItems": {"all": True, "excluded": []}},
    )

  def export(self, project: int) -> list[dict]:
    """Every task with its annotations and predictions (the JSON export)."""
    return self.api(
      "GET", f"/api/projects/{project}/export?exportType=JSON&download_all_tasks=true"
    )

  def annotate(self, task: int, result: list[dict]) -> dict:
    return self.api("POST", f"/api/tasks/{task}/annotations/", {"result": result})

  def train(self, backend: int) -> None:
    """Sends START_TRAINING to the backend's /webhook."""
    self.api("POST", f"/api/ml/{backend}/train", {})
