r"""Serves a trained run as a Label Studio ML backend (segjax/labelstudio/backend.py):

  SEGJAX_BACKEND_USER=u SEGJAX_BACKEND_PASSWORD=p python experiments/label_studio_backend.py \
      --workdir=RUN --host=0.0.0.0 --port=9090 --data=FOLDER [--train_every=20 --steps=300]

Label Studio: Settings > Model > Connect Model, URL http://HOST:9090, Basic Authentication with
the same user and password. Without credentials it listens on 127.0.0.1 only. docs/labelling.md.
"""

from absl import flags

from segjax import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "The trained run to serve.")
_PORT = flags.DEFINE_integer("port", 9090, "Port to listen on.")
_HOST = flags.DEFINE_string(
  "host", "127.0.0.1", "Address to listen on (not loopback: needs credentials)."
)
_USER = flags.DEFINE_string("user", None, "User of HTTP Basic auth (else $SEGJAX_BACKEND_USER).")
_PASSWORD = flags.DEFINE_string(
  "password",
  None,
  "Its password (else $SEGJAX_BACKEND_PASSWORD, which other users cannot see in the process list).",
)
_DATA = flags.DEFINE_string("data", None, "Folder of the task images, read by file name.")
_DOCUMENT_ROOT = flags.DEFINE_string("document_root", None, "Label Studio's local-files root.")
_URL = flags.DEFINE_string(
  "label_studio_url",
  None,
  "Label Studio's address (the only origin "
  "that gets its access token; default: /setup's hostname).",
)
_ORIGINS = flags.DEFINE_list("allowed_origins", [], "Other origins task images are fetched from.")
_MAX_BODY_MB = flags.DEFINE_float("max_body_mb", 32, "Largest request body (else 413).")
_MAX_TASKS = flags.DEFINE_integer("max_tasks", 64, "Most tasks of one /predict (else 413).")
_MAX_IMAGE_MB = flags.DEFINE_float("max_image_mb", 64, "Largest fetched image (else 400).")
_MAX_PIXELS = flags.DEFINE_integer("max_image_pixels", 50_000_000, "Largest image (else 400).")
_TRAIN_EVERY = flags.DEFINE_integer(
  "train_every",
  0,
  "Fine-tune after this many new annotations (0: only when Label Studio says Start Training).",
)
_STEPS = flags.DEFINE_integer("steps", 200, "Steps of each fine-tuning.")
_LEARNING_RATE = flags.DEFINE_float(
  "learning_rate", None, "Of each fine-tuning (default: the run's)."
)
_INTERACTIVE = flags.DEFINE_string(
  "interactive",
  None,
  "Answer clicks and boxes (Label Studio's smart tools): a click model's run directory, or a "
  "SAM checkpoint (directory or hf-hub:facebook/sam-vit-base).",
)
_CACHE_MB = flags.DEFINE_float("embedding_cache_mb", 512, "Memory for per-image embeddings.")
flags.mark_flags_as_required(["workdir"])
flags.adopt_module_key_flags(cli)


def main(argv):
  del argv
  from segjax.labelstudio import backend, serving  # pylint: disable=import-outside-toplevel

  credentials = serving.Credentials.given(_USER.value, _PASSWORD.value)
  serving.check_host(_HOST.value, credentials)  # before the run loads
  limits = serving.Limits(
    max_body_bytes=int(_MAX_BODY_MB.value * 2**20),
    max_tasks=_MAX_TASKS.value,
    max_image_bytes=int(_MAX_IMAGE_MB.value * 2**20),
    max_image_pixels=_MAX_PIXELS.value,
  )
  interactive = None
  if _INTERACTIVE.value:
    from segjax.interactive import predictor  # pylint: disable=import-outside-toplevel

    interactive = predictor.load_predictor(_INTERACTIVE.value, int(_CACHE_MB.value * 2**20))
  served = backend.Backend(
    _WORKDIR.value,
    _DATA.value,
    train_every=_TRAIN_EVERY.value,
    steps=_STEPS.value,
    learning_rate=_LEARNING_RATE.value,
    document_root=_DOCUMENT_ROOT.value,
    label_studio_url=_URL.value,
    allowed_origins=_ORIGINS.value,
    limits=limits,
    interactive=interactive,
    log=lambda message: print(message, flush=True),
  )
  server = serving.make_server(served, _HOST.value, _PORT.value, credentials=credentials)
  print(
    f"segjax ML backend for {served.workdir}, serving {served.model_version()} on "
    f"http://{_HOST.value}:{_PORT.value}, "
    + (
      f"user {credentials.user}"
      if credentials
      else "no credentials: listening on this machine only"
    ),
    flush=True,
  )
  try:
    server.serve_forever()
  finally:
    server.server_close()


if __name__ == "__main__":
  cli.run(main)
