"""A labelling session in one call: a local Label Studio with a project for a run's classes over
a folder of images, segjax's ML backend connected, and pre-labels retrieved for every image
(``experiments/label_studio.py start``); pre-labels as importable tasks (``import``); and the
annotations back as a folder-dataset split (``export``)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import tempfile
import threading

from segjax import files
from segjax.labelstudio import backend as ls_backend
from segjax.labelstudio import server
from segjax.labelstudio import serving as ls_serving
from segjax.labelstudio import tasks as ls_tasks


def image_files(folder: str) -> list[str]:
  from segjax import predict  # pylint: disable=import-outside-toplevel

  return predict.list_inputs(folder)


class Session:
  """Label Studio (state in ``state_dir``, default ``RUN/labelstudio/server``) serving the images
  of ``images`` to annotate with the run at ``workdir``, whose backend answers on
  ``backend_port`` with credentials of its own (``backend_credentials``, random by default),
  which Label Studio is given. The project is made once and found again in
  ``state_dir/project.json``. ``interactive`` (a click model's run, a SAM checkpoint or a
  `segjax.interactive.predictor` predictor) adds Label Studio's smart key points and rectangles,
  answered by it."""

  def __init__(
    self,
    workdir: str,
    images: str,
    *,
    port: int = 8080,
    backend_port: int = 9090,
    state_dir: str | None = None,
    steps: int = 200,
    train_every: int = 0,
    learning_rate: float | None = None,
    backend_credentials: ls_serving.Credentials | None = None,
    interactive=None,
    log=print,
  ):
    self.workdir, self.images = os.path.abspath(workdir), os.path.abspath(images)
    if not os.path.isdir(self.images):
      raise NotADirectoryError(f"--images={images} is not a directory of images")
    self.state_dir = os.path.abspath(
      state_dir or os.path.join(self.workdir, "labelstudio", "server")
    )
    self.log = log
    # Label Studio serves files below its document root, never the root itself.
    self.studio = server.LabelStudio(
      self.state_dir, port=port, document_root=os.path.dirname(self.images)
    )
    self.backend = ls_backend.Backend(
      self.workdir,
      self.images,
      train_every=train_every,
      steps=steps,
      learning_rate=learning_rate,
      label_studio_url=self.studio.url,
      interactive=interactive,
      log=log,
    )
    self.credentials = backend_credentials or self.saved_credentials()
    self.backend_server = ls_serving.make_server(
      self.backend, "127.0.0.1", backend_port, credentials=self.credentials
    )
    self.backend_url = f"http://127.0.0.1:{backend_port}"
    self.project = None

  def saved_credentials(self) -> ls_serving.Credentials:
    """The backend's credentials of this labelling project (``state_dir/backend.json``, mode
    0600), made at random the first time."""
    path = os.path.join(self.state_dir, "backend.json")
    if not os.path.exists(path):
      os.makedirs(self.state_dir, exist_ok=True)
      files.write_json(
        path, {"user": "segjax", "password": secrets.token_urlsafe(24)}, private=True
      )
    with open(path) as f:
      saved = json.load(f)
    return ls_serving.Credentials(saved["user"], saved["password"])

  def start(self) -> "Session":
    server.ensure_installed(self.studio.venv)
    threading.Thread(target=self.backend_server.serve_forever, daemon=True).start()
    self.studio.start()
    state_path = os.path.join(self.state_dir, "project.json")
    if os.path.exists(state_path):
      with open(state_path) as f:
        self.project = json.load(f)["project"]
      return self
    descriptor = self.backend.served()[1].descriptor
    self.project = self.studio.create_project(
      os.path.basename(self.workdir),
      ls_tasks.labelling_config(descriptor, interactive=self.backend.interactive is not None),
    )
    self.studio.add_local_storage(self.project, self.images)
    self.studio.import_tasks(
      self.project,
      [
        ls_tasks.task(ls_tasks.local_file_url(path, self.studio.document_root))
        for path in image_files(self.images)
      ],
    )
    backend = self.studio.connect_backend(
      self.project,
      self.backend_url,
      user=self.credentials.user,
      password=self.credentials.password,
      interactive=self.backend.interactive is not None,
    )
    files.write_json(state_path, {"project": self.project, "backend": backend})
    self.log(f"pre-labelling {len(image_files(self.images))} images")
    self.studio.retrieve_predictions(self.project)
    return self

  @property
  def project_url(self) -> str:
    return f"{self.studio.url}/projects/{self.project}/data"

  def wait(self) -> None:
    """Returns on Ctrl-C or SIGTERM."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
      stop.wait()
    except KeyboardInterrupt:
      pass
    finally:
      signal.signal(signal.SIGTERM, previous)

  def stop(self) -> None:
    self.studio.stop()
    self.backend_server.shutdown()
    self.backend_server.server_close()

  def __enter__(self):
    return self.start()

  def __exit__(self, *exc):
    self.stop()


def prelabel_tasks(predictor, paths, document_root: str, model_version: str = "") -> list[dict]:
  """Tasks with predictions of image files under Label Studio's local-files ``document_root``,
  to import into a project."""
  return [
    ls_tasks.task(
      ls_tasks.local_file_url(path, document_root),
      ls_tasks.predict_image(predictor, path, model_version),
    )
    for path in paths
  ]


def welcome(labelling: Session) -> str:
  return (
    f"Label Studio: {labelling.project_url}\n  log in as {server.USERNAME} / "
    f"{server.PASSWORD}\n  sort by 'Prediction score' (lowest first) to correct the least "
    f"certain images first; Settings > Model > Start Training fine-tunes a new version\n"
    f"  ML backend: {labelling.backend_url} (user {labelling.credentials.user}, password in "
    f"{labelling.state_dir}/backend.json; annotations and versions in "
    f"{labelling.backend.root})\nCtrl-C stops Label Studio and the backend."
  )


def import_prelabels(
  workdir: str,
  images: str,
  output: str,
  document_root: str | None = None,
) -> int:
  """Writes the pre-labels of every image of ``images`` as a Label Studio tasks file."""
  from segjax import predict  # pylint: disable=import-outside-toplevel
  from segjax import runs  # pylint: disable=import-outside-toplevel

  if not output:
    raise ValueError("import needs --output=tasks.json")
  predictor = predict.Predictor(runs.load(workdir))
  root = document_root or os.path.dirname(os.path.abspath(images))
  tasks = prelabel_tasks(
    predictor,
    image_files(images),
    root,
    model_version=os.path.basename(os.path.abspath(workdir)) + "-v0",
  )
  files.write_json(output, tasks)
  return len(tasks)


def export_annotations(
  workdir: str,
  output: str,
  *,
  path: str | None = None,
  url: str | None = None,
  project: int | None = None,
  token: str | None = None,
  document_root: str | None = None,
  annotator: str | None = None,
) -> dict:
  """The annotations of a JSON export file (``path``) or of a running Label Studio's
  ``project`` as the folder-dataset split ``output``, with the run's classes."""
  from segjax import runs  # pylint: disable=import-outside-toplevel

  if not output or bool(path) == bool(url):
    raise ValueError("export needs --output and either --input=export.json or --url with --project")
  if path:
    with open(path) as f:
      items = json.load(f)
  else:
    items = server.LabelStudio.client(url, token or server.TOKEN).export(project)
  with tempfile.TemporaryDirectory() as downloads:
    images = ls_tasks.TaskImages(
      downloads, document_root=document_root, hostname=url, token=token or server.TOKEN
    )
    return ls_tasks.export_to_folder(
      items, output, runs.read_descriptor(workdir), images.path, annotator
    )
