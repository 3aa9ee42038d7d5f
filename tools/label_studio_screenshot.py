r"""Screenshots of what an annotator sees in Label Studio with segjax's pre-labels, for
docs/labelling.md: the Data Manager sorted by prediction score and one task's labelling view.

Needs playwright (Python) and a Chromium; run it in a scratch environment against a session
started by ``experiments/label_studio.py start``:

  apt-get install chromium && python3 -m venv /tmp/pw && /tmp/pw/bin/pip install playwright
  /tmp/pw/bin/python tools/label_studio_screenshot.py --url=http://127.0.0.1:8080 --project=1 \
      --output=docs/images
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
  args = parser.parse_args()
  from playwright.sync_api import sync_playwright  # pylint: disable=import-outside-toplevel

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
  least_certain = min(scores, key=scores.get)
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
    page.goto(f"{args.url}/projects/{args.project}/data?task={least_certain}")
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(6000)
    page.screenshot(path=os.path.join(args.output, "label_studio_task.png"))
    browser.close()


if __name__ == "__main__":
  main()
