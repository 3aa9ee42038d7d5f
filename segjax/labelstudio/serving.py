"""The HTTP side of the ML backend, written for a network where anyone may send anything:

* **credentials**: HTTP Basic (Label Studio's *Connect Model* "Basic Authentication" fields);
  every route but ``GET /health`` answers 401 without them, before its body is read. Without
  credentials the server listens on loopback only (`make_server` refuses another ``host``);
* **bounded requests** (`Limits`): a POST must announce its length (411), a body over
  ``max_body_bytes`` is a 413 and is never read, a connection that sends nothing for
  ``timeout_s`` is closed, more than ``max_connections`` at once are answered 503;
* **typed answers**: a body that is no JSON object is a 400; the backend's own checks raise
  `BadRequest` (400) and `TooLarge` (413) naming the field; anything else is a 500 with its
  traceback in the log. Every error is logged with the method, path, client and the request's
  task ids.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hmac
import http.server
import ipaddress
import json
import os
import threading
import traceback
from typing import Callable

USER_ENV, PASSWORD_ENV = "SEGJAX_BACKEND_USER", "SEGJAX_BACKEND_PASSWORD"


class BadRequest(ValueError):
  """A request the backend cannot read; answered with status 400 and this message."""

  status = 400


class TooLarge(BadRequest):
  """A request over one of the backend's limits; answered with status 413."""

  status = 413


@dataclasses.dataclass(frozen=True)
class Limits:
  """What one request may ask of the backend (the flags of experiments/label_studio_backend.py)."""

  max_body_bytes: int = 32 << 20  # --max_body_mb
  max_tasks: int = 64  # tasks of one /predict (Label Studio sends one per request)
  max_clicks: int = 64  # clicks and boxes of one interactive /predict
  max_image_bytes: int = 64 << 20  # a fetched task image, --max_image_mb
  max_image_pixels: int = 50_000_000  # width x height of any task image, --max_image_pixels
  max_connections: int = 64  # open at once; more are answered 503
  timeout_s: float = 60.0  # of a connection that sends nothing


@dataclasses.dataclass(frozen=True)
class Credentials:
  """The user and password a request must send (HTTP Basic)."""

  user: str
  password: str = dataclasses.field(repr=False)

  def __post_init__(self):
    if not self.user or not self.password or ":" in self.user:
      raise ValueError("the backend's credentials need a user (without ':') and a password")

  @classmethod
  def given(cls, user: str | None = None, password: str | None = None) -> "Credentials | None":
    """The credentials of ``--user``/``--password``, else of ``$SEGJAX_BACKEND_USER``/
    ``$SEGJAX_BACKEND_PASSWORD``; None when neither is set, an error when only one is."""
    user = user or os.environ.get(USER_ENV) or None
    password = password or os.environ.get(PASSWORD_ENV) or None
    if user is None and password is None:
      return None
    if user is None or password is None:
      raise ValueError(
        f"the backend's credentials need both a user and a password (--user/"
        f"${USER_ENV} and --password/${PASSWORD_ENV}); only the "
        f"{'user' if user else 'password'} is set"
      )
    return cls(user, password)

  def header(self) -> str:
    """The ``Authorization`` header value of these credentials."""
    return "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()

  def accept(self, header: str | None) -> bool:
    """Whether an ``Authorization`` header carries these credentials (compared in constant
    time)."""
    return hmac.compare_digest((header or "").strip().encode(), self.header().encode())


def is_loopback(host: str) -> bool:
  if host == "localhost":
    return True
  try:
    return ipaddress.ip_address(host).is_loopback
  except ValueError:
    return False


def check_host(host: str, credentials: Credentials | None) -> None:
  """Raises when the server would listen beyond this machine without credentials."""
  if credentials is None and not is_loopback(host):
    raise ValueError(
      f"--host={host} without credentials: set --user and --password (or "
      f"${USER_ENV} and ${PASSWORD_ENV}), or listen on 127.0.0.1"
    )


def task_ids(payload) -> list:
  """The task ids a request names (``tasks[].id``, ``task.id``), for the log."""
  if not isinstance(payload, dict):
    return []
  found = payload.get("tasks") if isinstance(payload.get("tasks"), list) else []
  found = found + [payload["task"]] if isinstance(payload.get("task"), dict) else found
  return [t.get("id") for t in found if isinstance(t, dict)][:20]


class _Server(http.server.ThreadingHTTPServer):
  """A thread per connection, at most ``max_connections`` at once (more are answered 503)."""

  daemon_threads = True

  def __init__(self, address, handler, max_connections: int):
    self._slots = threading.BoundedSemaphore(max_connections)
    self.request_queue_size = max(5, max_connections)  # listen() backlog: the rest are reset
    super().__init__(address, handler)

  def process_request(self, request, client_address):
    if not self._slots.acquire(blocking=False):
      with contextlib.suppress(OSError):
        request.sendall(
          b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
          b"Connection: close\r\nRetry-After: 1\r\n\r\n"
        )
      self.shutdown_request(request)
      return
    try:
      super().process_request(request, client_address)
    except BaseException:
      self._slots.release()
      raise

  def process_request_thread(self, request, client_address):
    try:
      super().process_request_thread(request, client_address)
    finally:
      self._slots.release()


def make_server(
  backend,
  host: str = "127.0.0.1",
  port: int = 9090,
  *,
  credentials: Credentials | None = None,
  limits: Limits | None = None,
  log: Callable[[str], None] | None = None,
) -> http.server.ThreadingHTTPServer:
  """A threading HTTP server answering Label Studio's ML backend requests with ``backend`` (a
  `segjax.labelstudio.backend.Backend`); ``serve_forever()`` it. Raises when ``host`` is not a
  loopback address and there are no ``credentials``."""
  check_host(host, credentials)
  limits = limits or getattr(backend, "limits", None) or Limits()
  log = log or backend.log
  routes = {
    ("GET", "/health"): lambda _: {
      "status": "UP",
      "model_class": "segjax",
      "model_version": backend.model_version(),
    },
    ("GET", "/versions"): lambda _: {"versions": backend.versions()},
    ("POST", "/setup"): backend.setup,
    ("POST", "/predict"): backend.predict,
    ("POST", "/webhook"): backend.webhook,
    ("POST", "/train"): lambda _: {"training": backend.start_training()},
  }

  class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = limits.timeout_s

    def _body(self):
      """The request's JSON object; raises before reading what may not be read."""
      if self.headers.get("Transfer-Encoding"):
        raise _Refusal(411, "send the body with a Content-Length (no Transfer-Encoding)")
      length = self.headers.get("Content-Length")
      if length is None:
        raise _Refusal(411, "a POST needs a Content-Length")
      if not length.strip().isdigit():
        raise _Refusal(400, f"Content-Length {length!r} is not a number of bytes")
      if int(length) > limits.max_body_bytes:
        raise _Refusal(
          413,
          f"the body's {int(length)} bytes are more than the backend's limit of "
          f"{limits.max_body_bytes} (--max_body_mb)",
        )
      body = self.rfile.read(int(length))
      try:
        payload = json.loads(body or b"{}")
      except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"the request body is not JSON ({e})") from None
      if not isinstance(payload, dict):
        raise BadRequest(f"the request body must be a JSON object, not {type(payload).__name__}")
      return payload

    def _answer(self, method):
      path = self.path.split("?")[0].rstrip("/") or "/"
      route, payload, headers = routes.get((method, path)), None, {}
      try:
        if route is None:
          raise _Refusal(404, f"no {method} {path}")
        if (
          path != "/health"
          and credentials is not None
          and not credentials.accept(self.headers.get("Authorization"))
        ):
          headers["WWW-Authenticate"] = 'Basic realm="segjax ML backend"'
          raise _Refusal(401, "this backend needs its user and password (HTTP Basic)")
        payload = self._body() if method == "POST" else {}
        status, answer = 200, route(payload)
      except (_Refusal, BadRequest) as e:
        status, answer = e.status, {"error": str(e)}
        if status in (401, 404, 411, 413) and method == "POST":
          self.close_connection = True  # the body, if any, stays unread
      except Exception as e:  # pylint: disable=broad-except
        log(
          f"{method} {path} from {self.client_address[0]} failed (tasks "
          f"{task_ids(payload)}):\n{traceback.format_exc()}"
        )
        status, answer = 500, {"error": f"{type(e).__name__}: {e}"}
      if 400 <= status < 500:
        log(
          f"{status} {method} {path} from {self.client_address[0]} (tasks "
          f"{task_ids(payload)}): {answer['error']}"
        )
      body = json.dumps(answer).encode()
      self.send_response(status)
      for key, value in headers.items():
        self.send_header(key, value)
      if self.close_connection:
        self.send_header("Connection", "close")
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(body)))
      self.end_headers()
      self.wfile.write(body)

    def do_GET(self):  # noqa: N802
      self._answer("GET")

    def do_POST(self):  # noqa: N802
      self._answer("POST")

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
      pass

  return _Server((host, port), Handler, limits.max_connections)


class _Refusal(Exception):
  """An HTTP error status the server answers itself, before the backend sees the request."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status
