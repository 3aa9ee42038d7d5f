"""segjax as a Label Studio ML backend: pre-labels on demand, every correction kept, and the next
model trained on the corrections while the current one keeps answering.

The protocol is HTTP + JSON (``experiments/label_studio_backend.py`` serves it):

  GET  /health    {"status": "UP", "model_version": ...}
  POST /setup     Label Studio's project, labelling config, hostname and access token
                  -> {"model_version": ...}
  POST /predict   {"tasks": [...]} -> {"results": [{"result", "score", "model_version"}, ...]}, one
                  per task; ``score`` = the image's confidence (1 - mean per-pixel entropy / log C),
                  so sorting the Data Manager by prediction score puts the least certain first;
                  with {"params": {"context": {"result": [...]}}} (the smart tools' clicks and
                  boxes on one task) -> the object's mask as one brush region
  POST /webhook   ANNOTATION_CREATED / ANNOTATION_UPDATED (stored before the answer),
                  ANNOTATIONS_DELETED, START_TRAINING (fine-tunes in a separate process)
  GET  /versions  the model versions and their state
  POST /train     fine-tunes a new version now

`segjax.labelstudio.serving` serves it: every route but /health needs the backend's user and
password once it has them, and requests are bounded (`serving.Limits`). Each payload is checked
here before anything runs: a field of the wrong type, an unknown webhook action or a task image
the backend may not read (`segjax.labelstudio.tasks.TaskImages`: only files of ``--data`` and of
Label Studio's local-files root, only URLs of Label Studio's origin, the access token sent only
there) is a 400 naming the field or the task.

Everything lives under ``RUN/labelstudio/``::

  annotations/TASK-ANNOTATION.json   each received annotation with its task, written atomically
                                     before /webhook answers
  versions/vN/                       model version N: a segjax run directory (config.json,
                                     descriptor.json, checkpoints/, metrics.jsonl) fine-tuned from
                                     version N-1 on data/ (its training set: a folder dataset of
                                     the corrected images), with finetune.json (its config),
                                     train.log and version.json (state, images, times)
  current.json                       the version /predict serves ({"version": N}); version 0 is
                                     the run itself
  connection.json                    Label Studio's address and access token (mode 0600), to
                                     fetch task images after a restart
  images/                            task images fetched from Label Studio
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import threading
import time
import traceback

from segjax import files
from segjax.labelstudio import tasks as ls_tasks
from segjax.labelstudio.serving import BadRequest, Limits, TooLarge, make_server  # noqa: F401

ANNOTATION_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
# Label Studio's webhook actions (webhooks.models.WebhookAction) the backend acknowledges and
# leaves alone; its ML webhook sends them all.
IGNORED_ACTIONS = (
  "PROJECT_CREATED",
  "PROJECT_UPDATED",
  "PROJECT_DELETED",
  "TASKS_CREATED",
  "TASKS_DELETED",
  "ANNOTATIONS_CREATED",
  "LABEL_LINK_CREATED",
  "LABEL_LINK_UPDATED",
  "LABEL_LINK_DELETED",
)
ACTIONS = (*ANNOTATION_ACTIONS, "ANNOTATIONS_DELETED", "START_TRAINING", *IGNORED_ACTIONS)


def finetune_config(
  parent_config, data_root: str, *, init_from: str, steps: int, learning_rate: float | None = None
):
  """The config of a fine-tuning run: ``parent_config``'s model, loss, optimizer and input
  normalisation, on the folder dataset at ``data_root`` (patches of the training crop, no
  filtering), starting from the variables of the run at ``init_from``, for ``steps`` steps."""
  from segjax import config_defaults  # pylint: disable=import-outside-toplevel
  from segjax import runs  # pylint: disable=import-outside-toplevel

  config = runs.config_from_dict(runs.config_to_dict(parent_config))
  crop = tuple(config.data.crop_size)
  kept = {k: config.data[k] for k in (*runs.INPUT_KEYS, "train_pp") if k in config.data}
  config.data = config_defaults.data_config(
    name="folder",
    root=os.path.abspath(data_root),
    data_dir=os.path.join(os.path.abspath(data_root), ".prepared"),
    crop_size=crop,
    patch_size=crop,
    patch_stride=tuple(max(1, 3 * c // 4) for c in crop),
    **kept,
  )
  config.init_from = os.path.abspath(init_from)
  config.model.pretrained = ""
  config.num_train_steps = int(steps)
  config.optimizer.warmup_steps = min(int(config.optimizer.get("warmup_steps", 0)), steps // 10)
  if learning_rate:
    config.optimizer.learning_rate = float(learning_rate)
  config.eval_splits = ()
  config.eval_every_steps = 0
  config.checkpoint_every_steps = int(steps)
  config.keep_checkpoints = 1
  config.log_every_steps = max(1, min(int(config.log_every_steps), steps))
  return config


def field(payload: dict, key: str, kind: type | tuple, where: str, optional: bool = False):
  """``payload[key]``, checked to be a ``kind``; a `BadRequest` naming ``where.key`` if not."""
  if key not in payload and optional:
    return None
  value = payload.get(key)
  if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
    names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
    got = "missing" if key not in payload else f"{type(value).__name__} {str(value)[:80]!r}"
    raise BadRequest(f"{where}.{key} must be {names} ({got})")
  return value


def task_image(task) -> str:
  """A task's image URL: its ``image`` data field, or its only field; a `BadRequest` naming the
  task for a task of the wrong shape."""
  if not isinstance(task, dict):
    raise BadRequest(f"a task must be an object, not {type(task).__name__}")
  where = f"task {task.get('id')}"
  field(task, "id", int, where, optional=True)
  data = field(task, "data", dict, where)
  if ls_tasks.IMAGE not in data and len(data) != 1:
    raise BadRequest(f"{where} has no {ls_tasks.IMAGE!r} field (it has {sorted(data)})")
  key = ls_tasks.IMAGE if ls_tasks.IMAGE in data else next(iter(data))
  return field(data, key, str, f"{where}.data")


class Backend:
  """The ML backend of the run at ``workdir``. ``data``: a folder holding the task images (read
  directly instead of fetched from Label Studio); ``train_every``: fine-tune after this many new
  annotations (0: only on START_TRAINING); ``steps``/``learning_rate``: of each fine-tuning.
  Task images are read only inside ``data`` and Label Studio's local-files ``document_root``,
  and fetched only from Label Studio (``label_studio_url``, else the hostname /setup gives; the
  access token goes only there) and ``allowed_origins`` (without the token); ``limits`` bound
  what one request may ask."""

  def __init__(
    self,
    workdir: str,
    data: str | None = None,
    *,
    train_every: int = 0,
    steps: int = 200,
    learning_rate: float | None = None,
    document_root: str | None = None,
    label_studio_url: str | None = None,
    allowed_origins=(),
    limits: Limits | None = None,
    interactive=None,
    log=print,
  ):
    self.workdir = os.path.abspath(workdir)
    self.root = os.path.join(self.workdir, "labelstudio")
    self.data = os.path.abspath(data) if data else None
    self.train_every, self.steps, self.learning_rate = train_every, steps, learning_rate
    self.limits, self.log = limits or Limits(), log
    self.label_studio_url = label_studio_url
    if label_studio_url:
      ls_tasks.origin(label_studio_url)  # raises for what is no http(s) URL
    for sub in ("annotations", "versions", "images"):
      os.makedirs(os.path.join(self.root, sub), exist_ok=True)
    files.fsync(self.root)
    self._lock = threading.Lock()  # the served (version, predictor) pair
    self._predict_lock = threading.Lock()  # one prediction at a time
    self._train_lock = threading.Lock()
    self._training, self._pending, self._new_annotations = None, False, 0
    connection = self._read_json("connection.json") or {}
    self.images = ls_tasks.TaskImages(
      os.path.join(self.root, "images"),
      data=self.data,
      document_root=os.path.abspath(document_root) if document_root else None,
      hostname=label_studio_url or connection.get("hostname"),
      token=connection.get("access_token"),
      allowed_origins=allowed_origins,
      max_bytes=self.limits.max_image_bytes,
      max_pixels=self.limits.max_image_pixels,
    )
    # Clicks and boxes (Label Studio's smart tools): `segjax.interactive.predictor`'s, or a
    # source it loads (a click model's run directory, a SAM checkpoint or hub name).
    if isinstance(interactive, str):
      from segjax.interactive import predictor as interactive_lib  # pylint: disable=import-outside-toplevel

      interactive = interactive_lib.load_predictor(interactive)
    self.interactive = interactive
    version = (self._read_json("current.json") or {}).get("version", 0)
    self.version, self.predictor = version, self._load(version)

  # -------------------------------------------------------------------------------- versions
  def version_dir(self, version: int) -> str:
    return self.workdir if version == 0 else os.path.join(self.root, "versions", f"v{version}")

  def model_version(self, version: int | None = None) -> str:
    version = self.version if version is None else version
    return f"{os.path.basename(self.workdir)}-v{version}"

  def _load(self, version: int):
    from segjax import predict  # pylint: disable=import-outside-toplevel
    from segjax import runs  # pylint: disable=import-outside-toplevel

    return predict.Predictor(runs.load(self.version_dir(version)))

  def _read_json(self, name: str):
    path = os.path.join(self.root, name)
    if not os.path.exists(path):
      return None
    with open(path) as f:
      return json.load(f)

  def versions(self) -> list[dict]:
    out = [
      {
        "version": 0,
        "model_version": self.model_version(0),
        "state": "trained",
        "workdir": self.workdir,
      }
    ]
    for path in sorted(
      glob.glob(os.path.join(self.root, "versions", "v*", "version.json")),
      key=lambda p: int(os.path.basename(os.path.dirname(p))[1:]),
    ):
      with open(path) as f:
        out.append(json.load(f))
    return out

  def served(self):
    with self._lock:
      return self.version, self.predictor

  # -------------------------------------------------------------------------------- protocol
  def setup(self, payload: dict) -> dict:
    connection = {
      k: field(payload, k, str, "setup", optional=True)
      for k in ("hostname", "access_token")
      if payload.get(k)
    }
    if "hostname" in connection:
      try:
        ls_tasks.origin(connection["hostname"])
      except ls_tasks.RefusedImage as e:
        raise BadRequest(f"setup.hostname: {e}") from None
      if self.label_studio_url and connection["hostname"] != self.label_studio_url:
        self.log(
          f"/setup names Label Studio at {connection['hostname']}; images are fetched "
          f"from --label_studio_url={self.label_studio_url}"
        )
        connection["hostname"] = self.label_studio_url
    if connection and (connection.get("hostname"), connection.get("access_token")) != (
      self.images.hostname,
      self.images.token,
    ):
      files.write_json(os.path.join(self.root, "connection.json"), connection, private=True)
      self.images.hostname = connection.get("hostname")
      self.images.token = connection.get("access_token")
    return {"model_version": self.model_version()}

  def image_path(self, task) -> str:
    """The local file of a task's image (fetched if need be); a `BadRequest` naming the task
    when it is refused."""
    try:
      return self.images.path(task_image(task))
    except ls_tasks.RefusedImage as e:
      raise BadRequest(f"task {task.get('id')}: {e}") from None

  def predict(self, payload: dict) -> dict:
    items = field(payload, "tasks", list, "predict")
    if len(items) > self.limits.max_tasks:
      raise TooLarge(
        f"predict.tasks: {len(items)} tasks, more than the backend's limit of "
        f"{self.limits.max_tasks} per request (--max_tasks)"
      )
    params = payload.get("params")
    context = params.get("context") if isinstance(params, dict) else None
    if context:  # a click or a box on one task (Label Studio's smart tools: params.context)
      return self.predict_interactive(items, context)
    for task in items:  # every task checked before any is read
      self._check_image(task)
    paths = [self.image_path(task) for task in items]
    version, predictor = self.served()  # one version for the whole request
    with self._predict_lock:
      return {
        "results": [
          ls_tasks.predict_image(predictor, path, self.model_version(version)) for path in paths
        ],
        "model_version": self.model_version(version),
      }

  def predict_interactive(self, items: list, context) -> dict:
    """The mask of the clicks and box in ``context`` on the one task of ``items``, as a brush
    region of the clicked label."""
    if self.interactive is None:
      raise BadRequest(
        "predict.context: this backend serves no click model or SAM (start it with "
        "--interactive=RUN|SAM checkpoint)"
      )
    if len(items) != 1:
      raise BadRequest(f"predict.tasks: one task with a context, got {len(items)}")
    self._check_image(items[0])
    version, predictor = self.served()
    try:
      label, points, box, size = ls_tasks.context_prompts(
        context, predictor.descriptor.class_names, self.limits.max_clicks
      )
    except ValueError as e:
      raise BadRequest(str(e)) from None
    path = self.image_path(items[0])
    start = time.perf_counter()
    with self._predict_lock:
      try:
        mask = self.interactive.predict(path, points, box)
      except ValueError as e:
        raise BadRequest(f"task {items[0].get('id')}: {e}") from None
    if (mask.shape[1], mask.shape[0]) != size:
      raise BadRequest(
        f"predict.context: the image is {mask.shape[1]}x{mask.shape[0]}, the regions say "
        f"{size[0]}x{size[1]}"
      )
    self.log(
      f"interactive: task {items[0].get('id')}, {len(points)} click(s)"
      f"{' and a box' if box else ''}, {1000 * (time.perf_counter() - start):.0f} ms"
    )
    model_version = f"{self.model_version(version)}+{self.interactive.kind}"
    return {
      "results": [
        {
          "result": [ls_tasks.mask_result(mask, label)],
          "score": 1.0,
          "model_version": model_version,
        }
      ],
      "model_version": model_version,
    }

  def _check_image(self, task) -> None:
    try:
      self.images.check(task_image(task))
    except ls_tasks.RefusedImage as e:
      raise BadRequest(f"task {task.get('id')}: {e}") from None

  def store_annotation(self, task: dict, annotation: dict) -> str:
    """Writes one annotation with its task (atomically) before anything answers."""
    task = {k: v for k, v in task.items() if k not in ("annotations", "predictions")}
    path = os.path.join(self.root, "annotations", f"{int(task['id'])}-{int(annotation['id'])}.json")
    files.write_json(path, {"task": task, "annotation": annotation, "received": time.time()})
    return path

  def webhook(self, payload: dict) -> dict:
    action = field(payload, "action", str, "webhook")
    if action not in ACTIONS:
      raise BadRequest(
        f"webhook.action {action[:80]!r} is not an action of Label Studio's "
        f"webhooks ({', '.join(ACTIONS)})"
      )
    if action in ANNOTATION_ACTIONS:
      if not isinstance(payload.get("task"), dict) or not isinstance(
        payload.get("annotation"), dict
      ):
        raise BadRequest(f"{action} without the 'task' and 'annotation' objects")
      task, annotation = payload["task"], payload["annotation"]
      field(task, "id", int, "webhook.task")
      field(annotation, "id", int, "webhook.annotation")
      field(annotation, "result", list, "webhook.annotation")
      self._check_image(task)  # an image it could not train on is not stored
      self.store_annotation(task, annotation)
      with self._train_lock:
        self._new_annotations += 1
        due = bool(self.train_every) and self._new_annotations >= self.train_every
      if due:
        return {"action": action, "stored": True, "training": self.start_training()}
      return {"action": action, "stored": True}
    if action == "ANNOTATIONS_DELETED":
      deleted = field(payload, "annotations", list, "webhook")
      if not all(isinstance(a, dict) for a in deleted):
        raise BadRequest("webhook.annotations must be a list of objects with an id")
      for number in [field(a, "id", int, "webhook.annotations[]") for a in deleted]:
        for path in glob.glob(os.path.join(self.root, "annotations", f"*-{number}.json")):
          os.remove(path)
      return {"action": action}
    if action == "START_TRAINING":
      return {"action": action, "training": self.start_training()}
    return {"action": action, "ignored": True}

  # -------------------------------------------------------------------------------- training
  def annotated_tasks(self) -> list[dict]:
    """The stored annotations as exported tasks (task fields + ``annotations``), by task id."""
    by_task = {}
    for path in sorted(glob.glob(os.path.join(self.root, "annotations", "*.json"))):
      with open(path) as f:
        stored = json.load(f)
      item = by_task.setdefault(stored["task"]["id"], dict(stored["task"], annotations=[]))
      item["annotations"].append(stored["annotation"])
    return [by_task[k] for k in sorted(by_task)]

  def start_training(self) -> str:
    """Starts a fine-tuning in the background (or queues one if one is running)."""
    with self._train_lock:
      self._new_annotations = 0
      if self._training is not None:
        self._pending = True
        return "queued"
      self._training = threading.Thread(target=self._train_loop, daemon=True)
      self._training.start()
      return "started"

  def wait_for_training(self, timeout: float | None = None) -> None:
    thread = self._training
    if thread is not None:
      thread.join(timeout)

  def _train_loop(self):
    while True:
      try:
        self.train_version()
      except Exception:  # pylint: disable=broad-except  (serving goes on with the old version)
        self.log(f"fine-tuning failed:\n{traceback.format_exc()}")
      with self._train_lock:
        if not self._pending:
          self._training = None
          return
        self._pending = False

  def train_version(self) -> int | None:
    """Fine-tunes the served version on every stored correction into a new version, in a separate
    process, then serves it; returns its number (None when there is nothing to train on)."""
    items = self.annotated_tasks()
    parent, predictor = self.served()
    if not items:
      self.log("no annotations to train on")
      return None
    version = max(v["version"] for v in self.versions()) + 1
    directory = self.version_dir(version)
    os.makedirs(directory, exist_ok=True)
    info = {
      "version": version,
      "model_version": self.model_version(version),
      "parent": parent,
      "state": "training",
      "started": time.time(),
      "workdir": directory,
    }
    files.write_json(os.path.join(directory, "version.json"), info)
    written = ls_tasks.export_to_folder(
      items,
      os.path.join(directory, "data", "train"),
      predictor.descriptor,
      self.images.path,
      skip=self.log,
    )
    info["images"] = len(written)
    config = finetune_config(
      predictor.run.config,
      os.path.join(directory, "data"),
      init_from=self.version_dir(parent),
      steps=self.steps,
      learning_rate=self.learning_rate,
    )
    from segjax import runs  # pylint: disable=import-outside-toplevel

    files.write_json(os.path.join(directory, "finetune.json"), runs.config_to_dict(config))
    self.log(f"training {info['model_version']} on {len(written)} corrected images")
    with open(os.path.join(directory, "train.log"), "wb") as log:
      code = subprocess.call(
        [sys.executable, "-m", "segjax.labelstudio.finetune", directory],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
      )
    if code:
      info.update(state="failed", finished=time.time(), error=f"exit status {code}, see train.log")
      files.write_json(os.path.join(directory, "version.json"), info)
      self.log(f"{info['model_version']} failed: {directory}/train.log")
      return None
    new_predictor = self._load(version)
    first = sorted(glob.glob(os.path.join(directory, "data", "train", "images", "*")))[0]
    ls_tasks.predict_image(new_predictor, first)  # compiled before it serves
    info.update(state="trained", finished=time.time())
    files.write_json(os.path.join(directory, "version.json"), info)
    with self._lock:
      files.write_json(os.path.join(self.root, "current.json"), {"version": version})
      self.version, self.predictor = version, new_predictor
    self.log(f"serving {info['model_version']}")
    return version
