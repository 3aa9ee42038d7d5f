r"""Screenshots of what an annotator sees in Label Studio with segjax's backend, for
docs/labelling.md: the least certain task's pre-labels (``label_studio_task.png``), or with
``--click=X,Y`` (pixels of the image) a positive click on ``--task`` and the mask the backend's
interactive model answers, sent through Label Studio's interactive-annotating call as the smart
key point sends it and saved as the task's annotation (``label_studio_click.png``).

Needs playwright (Python) and a Chromium; run it in a scratch environment against a session
started by ``experiments/label_studio.py start`` (with ``--interactive=...`` for ``--click``):

  apt-get install chromium && python3 -m venv /tmp/pw && /tmp/pw/bin/pip install playwright
  /tmp/pw/bin/python tools/label_studio_screenshot.py --url=http://127.0.0.1:8080 --project=1 \
      --output=docs/images [--task=1 --click=193,162]
"""

import argparse
import json
import os
import urllib.request

USERNAME = "segjax@localhost.localdomain"  # segjax.labelstudio.server's preset login
PASSWORD = "segjax-labelling"
TOKEN = "5e9a1a7b0c3d4e2f8a6b9c0d1e2f3a4b5c6d7e8f"


def api(url, method="GET", payload=None):
  request = urllib.request.Request(
    url,
    method=method,
    headers={"Authorization": f"Token {TOKEN}", "Content-Type": "application/json"},
    data=None if payload is None else json.dumps(payload).encode(),
  )
  with urllib.request.urlopen(request) as response:
    return json.load(response)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--url", default="http://127.0.0.1:8080")
  parser.add_argument("--project", type=int, default=1)
  parser.add_argument("--output", default="docs/images")
  parser.add_argument("--chromium", default="/usr/bin/chromium")
  parser.add_argument("--task", type=int, help="--click: the task clicked")
  parser.add_argument("--click", help="X,Y: a positive click in the image's pixels")
  parser.add_argument("--label", default="nucleus", help="--click: the click's class")
  args = parser.parse_args()
  if args.click:
    return screenshot(args, click(args), "label_studio_click.png")
  # Show the current model version's predictions as the starting annotation.
  versions = sorted(
    {p["model_version"] for p in api(f"{args.url}/api/predictions?project={args.project}")}
  )
  api(
    f"{args.url}/api/projects/{args.project}",
    "PATCH",
    {"show_collab_predictions": True, "model_version": versions[-1]},
  )
  tasks = api(
    f"{args.url}/api/projects/{args.project}/export?exportType=JSON&download_all_tasks=true"
  )
  scores = {
    t["id"]: min(p["score"] for p in api(f"{args.url}/api/predictions?task={t['id']}"))
    for t in tasks
  }
  return screenshot(args, min(scores, key=scores.get), "label_studio_task.png")


def click(args) -> int:
  """Sends a positive click on ``args.task`` to the project's ML backend through Label Studio
  and saves the click and the mask that comes back as the task's annotation; returns the task."""
  prediction = api(f"{args.url}/api/predictions?task={args.task}")[0]["result"][0]
  width, height = prediction["original_width"], prediction["original_height"]
  [backend] = api(f"{args.url}/api/ml?project={args.project}")
  x, y = (float(v) for v in args.click.split(","))
  region = {
    "type": "keypointlabels",
    "original_width": width,
    "original_height": height,
    "is_positive": True,
    "value": {
      "x": (x + 0.5) / width * 100,
      "y": (y + 0.5) / height * 100,
      "width": 1.5,
      "keypointlabels": [args.label],
    },
  }
  answer = api(
    f"{args.url}/api/ml/{backend['id']}/interactive-annotating",
    "POST",
    {"task": args.task, "context": {"result": [region]}},
  )
  if answer.get("errors"):
    raise SystemExit(f"interactive annotating: {answer['errors']}")
  keypoint = dict(region, from_name="clicks", to_name="image", id="click")
  del keypoint["is_positive"]
  api(
    f"{args.url}/api/tasks/{args.task}/annotations/",
    "POST",
    {"result": [keypoint, *answer["data"]["result"]]},
  )
  return args.task


def screenshot(args, task: int, name: str) -> None:
  """The labelling view of ``task``, written to ``args.output/name``."""
  from playwright.sync_api import sync_playwright  # pylint: disable=import-outside-toplevel

  with sync_playwright() as playwright:
    browser = playwright.chromium.launch(
      executable_path=args.chromium, args=["--no-sandbox", "--disable-gpu"]
    )
    page = browser.new_page(viewport={"width": 1400, "height": 800})
    page.goto(f"{args.url}/user/login/")
    page.fill("input[name=email]", USERNAME)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")
    page.goto(f"{args.url}/projects/{args.project}/data?task={task}")
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(6000)
    page.mouse.move(5, 790)
    page.screenshot(path=os.path.join(args.output, name))
    browser.close()


if __name__ == "__main__":
  main()
