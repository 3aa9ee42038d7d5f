r"""Serves a trained run as a Label Studio ML backend (segjax/labelstudio/backend.py):

  python experiments/label_studio_backend.py --workdir=RUN --port=9090 --data=FOLDER \
      [--train_every=20 --steps=300]

In Label Studio: Settings > Model > Connect Model, URL http://127.0.0.1:9090 (or let
experiments/label_studio.py start do it). Pre-labels come from the run's model and post-processing;
each submitted or updated annotation is stored under RUN/labelstudio/annotations before the
answer; "Start Training" (or every --train_every annotations) fine-tunes a new version under
RUN/labelstudio/versions/ in a separate process, then serves it.
"""
from absl import flags

from segjax import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "The trained run to serve.")
_PORT = flags.DEFINE_integer("port", 9090, "Port to listen on.")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to listen on.")
_DATA = flags.DEFINE_string("data", None, "Folder of the task images (else they are fetched "
                            "from Label Studio).")
_TRAIN_EVERY = flags.DEFINE_integer("train_every", 0, "Fine-tune after this many new "
                                    "annotations (0: only when Label Studio says Start Training).")
_STEPS = flags.DEFINE_integer("steps", 200, "Steps of each fine-tuning.")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", None, "Of each fine-tuning (default: the "
                                    "run's).")
flags.mark_flags_as_required(["workdir"])
flags.adopt_module_key_flags(cli)


def main(argv):
  del argv
  from segjax.labelstudio import backend  # pylint: disable=import-outside-toplevel
  served = backend.Backend(_WORKDIR.value, _DATA.value, train_every=_TRAIN_EVERY.value,
                           steps=_STEPS.value, learning_rate=_LEARNING_RATE.value,
                           log=lambda message: print(message, flush=True))
  server = backend.make_server(served, _HOST.value, _PORT.value)
  print(f"segjax ML backend for {served.workdir}, serving {served.model_version()} on "
        f"http://{_HOST.value}:{_PORT.value}", flush=True)
  try:
    server.serve_forever()
  finally:
    server.server_close()


if __name__ == "__main__":
  cli.run(main)
