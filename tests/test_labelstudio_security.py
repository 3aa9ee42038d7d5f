"""The ML backend attacked: its access token sent elsewhere, files outside its folders, requests
without credentials, bodies and images too large, malformed payloads, and the durability of an
acknowledged annotation (the fsync calls of `segjax.files`)."""

import base64
import http.server
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import urllib.request
import zlib

import cv2
import numpy as np
import pytest

from segjax import files
from segjax.labelstudio import backend
from segjax.labelstudio import serving
from segjax.labelstudio import tasks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CREDENTIALS = serving.Credentials("annotator", "pass word:1")


def png(width, height, rows=None) -> bytes:
  """A grey PNG of ``width`` x ``height`` zeros (``rows``: only so many rows of data, a file
  whose header promises more than it holds)."""

  def chunk(kind, data):
    return (
      struct.pack(">I", len(data))
      + kind
      + data
      + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )

  raw = b"\0" * ((width + 1) * (height if rows is None else rows))
  return (
    b"\x89PNG\r\n\x1a\n"
    + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    + chunk(b"IDAT", zlib.compress(raw, 9))
    + chunk(b"IEND", b"")
  )


class Site:
  """An HTTP server on 127.0.0.1 (its own origin) that answers ``pages[path]`` — bytes, or
  ``("redirect", url)`` — and records every request's path and headers."""

  def __init__(self, pages):
    self.pages, self.requests = pages, []
    site = self

    class Handler(http.server.BaseHTTPRequestHandler):
      def do_GET(self):  # noqa: N802
        site.requests.append((self.path, dict(self.headers)))
        page = site.pages.get(self.path)
        if isinstance(page, tuple):
          self.send_response(302)
          self.send_header("Location", page[1])
          self.send_header("Content-Length", "0")
          self.end_headers()
          return
        self.send_response(200 if page is not None else 404)
        body = page if page is not None else b""
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

      def log_message(self, *args):
        pass

    self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
    threading.Thread(target=self.http.serve_forever, daemon=True).start()

  def tokens(self):
    return [headers.get("Authorization") for _, headers in self.requests]

  def close(self):
    self.http.shutdown()
    self.http.server_close()


@pytest.fixture
def sites():
  made = []
  yield lambda pages: made.append(Site(pages)) or made[-1]
  for site in made:
    site.close()


def test_the_token_goes_to_label_studio_only(sites, tmp_path):
  image = png(8, 8)
  other = sites({"/x.png": image})
  studio = sites(
    {
      "/data/upload/a.png": image,
      "/away.png": ("redirect", other.url + "/x.png"),
      "/around.png": ("redirect", "/data/upload/a.png"),
    }
  )
  other.pages["/back.png"] = ("redirect", studio.url + "/data/upload/a.png")

  strict = tasks.TaskImages(str(tmp_path / "a"), hostname=studio.url, token="SECRET")
  assert cv2.imread(strict.path("/data/upload/a.png")).shape == (8, 8, 3)
  assert studio.tokens() == ["Token SECRET"]
  strict.path(studio.url + "/around.png")  # a redirect within Label Studio keeps the token
  assert studio.tokens()[1:] == ["Token SECRET", "Token SECRET"]
  for url in (other.url + "/x.png", studio.url + "/away.png"):  # another origin, or sent there
    with pytest.raises(tasks.RefusedImage, match="not on an origin the backend fetches from"):
      strict.path(url)
  assert other.requests == []

  # Another origin allowed: fetched without the token, also when Label Studio redirects there.
  studio.requests.clear()
  open_ = tasks.TaskImages(
    str(tmp_path / "b"), hostname=studio.url, token="SECRET", allowed_origins=[other.url]
  )
  open_.path(other.url + "/x.png")
  open_.path(studio.url + "/away.png")
  assert other.tokens() == [None, None] and studio.tokens() == ["Token SECRET"]
  open_.path(other.url + "/back.png")  # and back to Label Studio: the token is not added either
  assert studio.requests[-1][0] == "/data/upload/a.png" and studio.tokens()[-1] is None
  for url in ("file:///etc/passwd", "ftp://127.0.0.1/x.png", "http://:80/x.png"):
    with pytest.raises(tasks.RefusedImage):
      open_.path(url)


def test_task_files_stay_inside_their_folders(tmp_path, monkeypatch):
  data, root, secret = tmp_path / "data", tmp_path / "root", tmp_path / "private"
  for folder in (data, root / "images", secret):
    folder.mkdir(parents=True)
  for path in (data / "scene.png", root / "images" / "scene.png", secret / "secret.png"):
    path.write_bytes(png(4, 4))
  os.symlink(secret / "secret.png", data / "link.png")
  os.symlink(secret, root / "images" / "elsewhere")
  opened = []
  sys.addaudithook(lambda event, args: event == "open" and opened.append(str(args[0])))
  images = tasks.TaskImages(str(tmp_path / "cache"), data=str(data), document_root=str(root))
  assert images.path("http://anywhere/x/scene.png") == str(data / "scene.png")
  assert images.path("/data/local-files/?d=images/scene.png") == str(data / "scene.png")
  refused = {
    str(secret / "secret.png"): "Label Studio's address is unknown",
    "/data/local-files/?d=../private/secret.png": "leaves Label Studio's local-files root",
    "/data/local-files/?d=images/../../private/secret.png": "leaves",
    "/data/local-files/?d=images/elsewhere/secret.png": "leaves",
    "/data/local-files/?d=%2Fetc%2Fpasswd": "leaves",
    "/data/upload/link.png": "link to a file outside --data",
    "file://" + str(secret / "secret.png"): "file: URLs are not read",
  }
  del opened[:]
  for url, why in refused.items():
    with pytest.raises(tasks.RefusedImage, match=why):
      images.path(url)
  assert not [p for p in opened if "private" in p or "passwd" in p], opened
  # With Label Studio known, a path is a URL of Label Studio, never a local file.
  images.hostname = "http://127.0.0.1:1"
  with pytest.raises(tasks.RefusedImage, match="127.0.0.1:1/.*private/secret.png"):
    images.path(str(secret / "secret.png"))
  assert not [p for p in opened if "private" in p], opened
  del monkeypatch


@pytest.fixture(scope="module")
def guarded(straight_run, tmp_path_factory):
  """A backend of the tiny run with credentials and small limits, served on a free port:
  ``(url, backend, log lines, image folder, the Label Studio look-alike)``."""
  _, trained_run, _ = straight_run
  tmp = tmp_path_factory.mktemp("guarded")
  workdir = str(tmp / "run")
  shutil.copytree(trained_run, workdir)
  data = tmp / "images"
  data.mkdir()
  cv2.imwrite(str(data / "small.png"), np.full((16, 16, 3), 90, np.uint8))
  (data / "bomb.png").write_bytes(png(9000, 9000))
  (data / "huge.png").write_bytes(png(40000, 40000, rows=2))  # PIL's own bomb bound
  studio = Site(
    {
      "/data/upload/big.png": cv2.imencode(
        ".png", np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
      )[1].tobytes(),
      "/data/upload/bomb2.png": png(9000, 9000),
    }
  )
  lines = []
  served = backend.Backend(
    workdir,
    str(data),
    label_studio_url=studio.url,
    log=lines.append,
    limits=serving.Limits(
      max_body_bytes=1 << 20,
      max_tasks=4,
      max_image_bytes=100_000,
      max_image_pixels=4000 * 4000,
      timeout_s=20,
    ),
  )
  http = serving.make_server(served, "127.0.0.1", 0, credentials=CREDENTIALS)
  threading.Thread(target=http.serve_forever, daemon=True).start()
  yield f"http://127.0.0.1:{http.server_address[1]}", served, lines, data, studio
  http.shutdown()
  http.server_close()
  studio.close()


def request(url, payload=None, auth=CREDENTIALS, method=None):
  """``(status, JSON answer, headers)`` of a request (a POST when ``payload`` is given)."""
  data = (
    None
    if payload is None
    else (payload if isinstance(payload, bytes) else json.dumps(payload).encode())
  )
  headers = (
    {"Authorization": auth.header()}
    if isinstance(auth, serving.Credentials)
    else ({"Authorization": auth} if auth else {})
  )
  made = urllib.request.Request(url, data=data, headers=headers, method=method)
  try:
    with urllib.request.urlopen(made, timeout=60) as response:
      return response.status, json.load(response), response.headers
  except urllib.error.HTTPError as e:
    return e.code, json.load(e), e.headers


def raw(url, head: bytes) -> bytes:
  """What the server answers to ``head`` (request line and headers, no body) on a raw socket."""
  host, port = url.split("//")[1].split(":")
  with socket.create_connection((host, int(port)), timeout=30) as connection:
    connection.sendall(head)
    answer = b""
    while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < int(
      answer.split(b"Content-Length: ")[1].split(b"\r\n")[0]
    ):
      more = connection.recv(65536)
      if not more:
        break
      answer += more
  return answer


def test_every_route_but_health_needs_the_credentials(guarded):
  url, served, lines, _, _ = guarded
  assert request(url + "/health", auth=None)[:2] == (
    200,
    {"status": "UP", "model_class": "segjax", "model_version": "run-v0"},
  )
  wrong = serving.Credentials("annotator", "guess")
  attempts = {
    "/versions": None,
    "/setup": {"hostname": "http://127.0.0.1:9", "access_token": "x"},
    "/predict": {"tasks": [{"id": 1, "data": {"image": "/data/upload/small.png"}}]},
    "/webhook": {"action": "START_TRAINING"},
    "/train": {},
  }
  for auth in (None, wrong, "Basic " + base64.b64encode(b"annotator").decode(), "Token x"):
    for route, payload in attempts.items():
      status, answer, headers = request(url + route, payload, auth=auth)
      assert status == 401, (route, auth)
      assert "user and password" in answer["error"]
      assert headers["WWW-Authenticate"] == 'Basic realm="segjax ML backend"'
  assert served._training is None and served.images.token is None  # nothing happened
  assert not os.path.exists(os.path.join(served.root, "connection.json"))
  assert any(line.startswith("401 POST /predict from 127.0.0.1 (tasks [])") for line in lines)
  status, answer, _ = request(url + "/versions")
  assert status == 200 and [v["version"] for v in answer["versions"]] == [0]


@pytest.mark.slow
def test_no_credentials_means_this_machine_only(straight_run):
  with pytest.raises(ValueError, match="--host=0.0.0.0 without credentials"):
    serving.make_server(object(), "0.0.0.0", 0)
  with pytest.raises(ValueError, match="only the user is set"):
    serving.Credentials.given("someone", None)
  assert serving.Credentials.given(None, None) is None
  for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
    serving.check_host(host, None)
  serving.check_host("0.0.0.0", CREDENTIALS)
  _, workdir, _ = straight_run
  env = dict(os.environ, SEGJAX_BACKEND_USER="", SEGJAX_BACKEND_PASSWORD="")
  done = subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, "experiments", "label_studio_backend.py"),
      f"--workdir={workdir}",
      "--host=0.0.0.0",
      "--port=1",
    ],
    capture_output=True,
    text=True,
    env=env,
    timeout=120,
    check=False,
  )
  assert done.returncode != 0
  [line] = done.stderr.strip().splitlines()[-1:]
  assert "--host=0.0.0.0 without credentials: set --user and --password" in line


def test_bodies_over_the_limit_are_refused_unread(guarded):
  url, _, lines, _, _ = guarded
  auth = CREDENTIALS.header().encode()
  answer = raw(
    url,
    b"POST /webhook HTTP/1.1\r\nHost: x\r\nAuthorization: "
    + auth
    + b"\r\nContent-Type: application/json\r\nContent-Length: 9000000000\r\n\r\n",
  )
  assert answer.startswith(b"HTTP/1.1 413") and b"9000000000 bytes are more than" in answer
  assert b"Connection: close" in answer
  answer = raw(url, b"POST /webhook HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth + b"\r\n\r\n")
  assert answer.startswith(b"HTTP/1.1 411")
  answer = raw(url, b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 9000000000\r\n\r\n")
  assert answer.startswith(b"HTTP/1.1 401")  # the credentials are checked before the length
  many = {"tasks": [{"id": i, "data": {"image": "/data/upload/small.png"}} for i in range(5)]}
  status, answer, _ = request(url + "/predict", many)
  assert (
    status == 413
    and "predict.tasks: 5 tasks, more than the backend's limit of 4" in (answer["error"])
  )
  assert any(
    line.startswith("413 POST /predict from 127.0.0.1 (tasks [0, 1, 2, 3, 4])") for line in lines
  )


@pytest.mark.parametrize(
  "route,payload,message",
  [
    ("/webhook", b"{not json", "the request body is not JSON"),
    ("/webhook", b"[1, 2]", "must be a JSON object, not list"),
    ("/webhook", b"\xff\xfe", "the request body is not JSON"),
    ("/webhook", {"action": 5}, "webhook.action must be str (int '5')"),
    ("/webhook", {"action": "DROP_TABLES"}, "webhook.action 'DROP_TABLES' is not an action"),
    (
      "/webhook",
      {
        "action": "ANNOTATION_CREATED",
        "task": {"id": "7", "data": {}},
        "annotation": {"id": 1, "result": []},
      },
      "webhook.task.id must be int (str '7')",
    ),
    (
      "/webhook",
      {
        "action": "ANNOTATION_CREATED",
        "task": {"id": 7, "data": {"image": "x.png"}},
        "annotation": {"id": 1, "result": {}},
      },
      "webhook.annotation.result must be list",
    ),
    (
      "/webhook",
      {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": None}]},
      "webhook.annotations[].id must be int",
    ),
    ("/predict", {"tasks": "all"}, "predict.tasks must be list (str 'all')"),
    ("/predict", {"tasks": [{"id": 3, "data": {"image": 12}}]}, "task 3.data.image must be str"),
    ("/predict", {"tasks": [{"id": 4, "data": []}]}, "task 4.data must be dict"),
    ("/predict", {"tasks": [7]}, "a task must be an object, not int"),
    ("/setup", {"hostname": "ftp://x"}, "setup.hostname: 'ftp://x' is not an http(s) URL"),
    ("/setup", {"access_token": ["x"]}, "setup.access_token must be str"),
  ],
)
def test_malformed_payloads_are_400_naming_the_field(guarded, route, payload, message):
  url, served, lines, _, _ = guarded
  status, answer, _ = request(url + route, payload)
  assert status == 400 and message in answer["error"], answer
  assert lines[-1].startswith(f"400 POST {route} from 127.0.0.1") and message in lines[-1]
  assert os.listdir(os.path.join(served.root, "annotations")) == []


def test_images_over_the_limits_are_400_never_decoded(guarded, monkeypatch):
  url, served, lines, _, studio = guarded
  from segjax.data import readers  # pylint: disable=import-outside-toplevel

  monkeypatch.setattr(readers, "read_image", lambda path: pytest.fail(f"{path} decoded"))
  monkeypatch.setattr(cv2, "imread", lambda *a: pytest.fail(f"{a} decoded"))
  cases = {
    11: (
      "/data/upload/bomb.png",
      "9000x9000 = 81000000 pixels, more than the backend's limit of 16000000 (--max_image_pixels)",
    ),
    12: ("/data/upload/huge.png", "exceeds limit"),  # PIL: "could be decompression bomb"
    13: ("/data/upload/bomb2.png", "9000x9000 = 81000000 pixels"),  # fetched, then measured
    14: ("/data/upload/big.png", "more than the backend's limit of 100000"),  # bytes
    15: ("/data/upload/none.png", "the server answered 404"),
  }
  for task_id, (image, why) in cases.items():
    status, answer, _ = request(
      url + "/predict",
      {
        "tasks": [
          {"id": 1, "data": {"image": "/data/upload/small.png"}},
          {"id": task_id, "data": {"image": image}},
        ]
      },
    )
    assert status == 400 and answer["error"].startswith(f"task {task_id}: "), answer
    assert why in answer["error"], answer
    assert lines[-1].startswith(f"400 POST /predict from 127.0.0.1 (tasks [1, {task_id}])")
  assert os.listdir(os.path.join(served.root, "images")) == []  # nothing refused is kept
  status, answer, _ = request(
    url + "/webhook",
    {
      "action": "ANNOTATION_CREATED",
      "annotation": {"id": 3, "result": []},
      "task": {"id": 11, "data": {"image": "/data/upload/bomb.png"}},
    },
  )
  assert status == 400 and "task 11: " in answer["error"]
  assert os.listdir(os.path.join(served.root, "annotations")) == []


def test_the_backend_answers_with_credentials(guarded):
  url, served, _, _, _ = guarded
  status, answer, _ = request(
    url + "/predict", {"tasks": [{"id": 1, "data": {"image": "/data/upload/small.png"}}]}
  )
  assert status == 200 and answer["results"][0]["model_version"] == "run-v0"
  annotation = {"id": 8, "result": []}
  status, answer, _ = request(
    url + "/webhook",
    {
      "action": "ANNOTATION_CREATED",
      "annotation": annotation,
      "task": {"id": 21, "data": {"image": "/data/upload/small.png"}},
    },
  )
  assert (status, answer) == (200, {"action": "ANNOTATION_CREATED", "stored": True})
  [item] = served.annotated_tasks()
  assert item["id"] == 21 and item["annotations"] == [annotation]
  os.remove(os.path.join(served.root, "annotations", "21-8.json"))


def test_an_acknowledged_write_is_flushed_file_then_directory(tmp_path, monkeypatch):
  synced, real = [], os.fsync

  def record(descriptor):
    synced.append(os.readlink(f"/proc/self/fd/{descriptor}"))
    real(descriptor)

  monkeypatch.setattr(os, "fsync", record)
  target = str(tmp_path / "annotations" / "1-2.json")
  os.makedirs(os.path.dirname(target))
  files.write_json(target, {"a": 1})
  [written, folder] = synced
  assert written.startswith(target + ".tmp") and folder == os.path.dirname(target)
  assert not os.path.exists(written) and json.load(open(target)) == {"a": 1}
  synced.clear()
  files.write_atomic(
    str(tmp_path / "tree"),
    lambda tmp: (
      os.makedirs(os.path.join(tmp, "sub")) or open(os.path.join(tmp, "sub", "f"), "w").close()
    ),
  )
  tmp = synced[2]
  assert tmp.startswith(str(tmp_path / "tree.tmp"))
  assert synced == [tmp + "/sub/f", tmp + "/sub", tmp, str(tmp_path)]
  secret = files.write_json(str(tmp_path / "connection.json"), {"token": "x"}, private=True)
  assert oct(os.stat(secret).st_mode & 0o777) == "0o600"
