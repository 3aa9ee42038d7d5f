"""Label Studio's side of a run: its labelling config, pre-labels as prediction results, and
annotations read back into a folder-dataset split.

Regions travel as ``brushlabels`` results in brush RLE (`segjax.labelstudio.rle`): one region per
class present (stuff, and things without instances) and one per thing instance. Annotators may
also draw ``polygonlabels`` (offered for thing classes), whose points are percentages of the
image's width and height. Reading an annotation paints its regions in order (a later region over an
earlier one); pixels no region covers get the class named ``background`` if the run has one, else
the ignore label (unlabelled, left out of training).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Callable, Iterable, Sequence
from xml.sax.saxutils import quoteattr

import numpy as np

from segjax import prelabels
from segjax import files
from segjax.data import folder
from segjax.data.descriptor import DatasetDescriptor
from segjax.labelstudio import rle

IMAGE = "image"  # the Image tag's name, and the task data key of the image URL
BRUSH = "label"  # the BrushLabels tag
POLYGON = "polygon"  # the PolygonLabels tag (thing classes)
CLICKS = "clicks"  # the smart KeyPointLabels tag (interactive: a click gives a mask)
BOXES = "boxes"  # the smart RectangleLabels tag (interactive: a box gives a mask)


def _hex(colour: Sequence[int]) -> str:
  return "#" + "".join(f"{int(v):02x}" for v in colour[:3])


def labelled_classes(descriptor: DatasetDescriptor) -> list[int]:
  """The class ids annotators paint: all but the class named ``background``."""
  background = prelabels.background_class(descriptor)
  return [i for i in range(descriptor.num_classes) if i != background]


def labelling_config(descriptor: DatasetDescriptor, interactive: bool = False) -> str:
  """The Label Studio labelling config (XML) for ``descriptor``'s classes: a brush label per
  class in the class colour, and polygon labels for the thing classes (instances); with
  ``interactive``, smart key points (a click, Alt-click a negative one) and smart rectangles per
  class, which Label Studio sends to the backend's /predict as ``context`` (the mask comes back
  as a brush region)."""

  def labels(ids):
    return "\n".join(
      f"    <Label value={quoteattr(descriptor.class_names[i])} "
      f"background={quoteattr(_hex(descriptor.colormap[i]))}/>"
      for i in ids
    )

  parts = [
    "<View>",
    f'  <Image name="{IMAGE}" value="${IMAGE}" zoom="true" zoomControl="true"/>',
    f'  <BrushLabels name="{BRUSH}" toName="{IMAGE}">',
    labels(labelled_classes(descriptor)),
    "  </BrushLabels>",
  ]
  things = [i for i in labelled_classes(descriptor) if i in descriptor.thing_classes]
  if things:
    parts += [
      f'  <PolygonLabels name="{POLYGON}" toName="{IMAGE}" strokeWidth="2" '
      'pointSize="small" opacity="0.5">',
      labels(things),
      "  </PolygonLabels>",
    ]
  if interactive:
    parts += [
      f'  <KeyPointLabels name="{CLICKS}" toName="{IMAGE}" smart="true">',
      labels(labelled_classes(descriptor)).replace("/>", ' smart="true"/>'),
      "  </KeyPointLabels>",
      f'  <RectangleLabels name="{BOXES}" toName="{IMAGE}" smart="true">',
      labels(labelled_classes(descriptor)).replace("/>", ' smart="true"/>'),
      "  </RectangleLabels>",
    ]
  return "\n".join(parts + ["</View>", ""])


def context_prompts(context, class_names: Sequence[str], max_clicks: int = 64):
  """``(label, points [(x, y, positive)], box or None, (width, height))`` in pixels of Label
  Studio's interactive ``context`` (its ``result``: smart key points and rectangles, coordinates
  in percent of the image); a `ValueError` naming the field when anything is off. The label is
  the last region's (one object at a time)."""
  if not isinstance(context, dict) or not isinstance(context.get("result"), list):
    raise ValueError("predict.context.result: a list of regions")
  regions = context["result"]
  if not regions or len(regions) > max_clicks:
    raise ValueError(f"predict.context.result: 1 to {max_clicks} regions, got {len(regions)}")
  points, box, label, size = [], None, None, None
  for i, region in enumerate(regions):
    where = f"predict.context.result[{i}]"
    kind = region.get("type") if isinstance(region, dict) else None
    if kind not in ("keypointlabels", "rectanglelabels"):
      raise ValueError(f"{where}.type: 'keypointlabels' or 'rectanglelabels', got {kind!r}")
    value = region.get("value")
    numbers = ("x", "y") + (("width", "height") if kind == "rectanglelabels" else ())
    if not isinstance(value, dict) or not all(
      isinstance(value.get(k), (int, float)) and 0 <= value[k] <= 100 for k in numbers
    ):
      raise ValueError(f"{where}.value: {', '.join(numbers)} in percent (0 to 100)")
    names = value.get(kind)
    if not isinstance(names, list) or len(names) != 1 or names[0] not in class_names:
      raise ValueError(f"{where}.value.{kind}: one of the classes {list(class_names)}")
    shape = (region.get("original_width"), region.get("original_height"))
    if not all(isinstance(n, int) and 0 < n <= 2**16 for n in shape):
      raise ValueError(f"{where}: original_width and original_height in pixels")
    if size is not None and shape != size:
      raise ValueError(f"{where}: another image size than the first region's")
    size, label = shape, names[0]
    x, y = value["x"] * shape[0] / 100, value["y"] * shape[1] / 100
    if kind == "keypointlabels":
      positive = region.get("is_positive", True)
      points.append((min(x, shape[0] - 1), min(y, shape[1] - 1), bool(positive)))
    else:
      box = (x, y, x + value["width"] * shape[0] / 100, y + value["height"] * shape[1] / 100)
      box = tuple(min(v, n) for v, n in zip(box, (shape[0], shape[1]) * 2))
  return label, points, box, size


def mask_result(
  mask: np.ndarray, label: str, score: float | None = None, region_id: str = "segjax-interactive"
) -> dict:
  """A brush region of ``label`` holding ``mask`` (bool ``[H, W]``)."""
  height, width = mask.shape
  region = {
    "id": region_id,
    "from_name": BRUSH,
    "to_name": IMAGE,
    "type": "brushlabels",
    "original_width": width,
    "original_height": height,
    "image_rotation": 0,
    "value": {"format": "rle", "rle": rle.encode(mask), "brushlabels": [label]},
  }
  if score is not None:
    region["score"] = float(score)
  return region


# ------------------------------------------------------------------------ predictions
def prediction_result(
  labels: np.ndarray,
  instance: np.ndarray | None,
  descriptor: DatasetDescriptor,
  probs: np.ndarray | None = None,
  scores: dict | None = None,
) -> list[dict]:
  """Brush regions of one predicted image: one per class present (the ignore label and the
  background class left out) and one per thing instance. A region's ``score`` is its instance's
  score when ``scores`` has it (``{(class, instance): score}``), else the mean probability of
  its class over its pixels when ``probs`` ``[H,W,C]`` is given."""
  result = []
  for class_id, instance_id, mask in prelabels.regions(labels, instance, descriptor, stuff=True):
    score = None
    if scores and (class_id, instance_id) in scores:
      score = scores[(class_id, instance_id)]
    elif probs is not None:
      score = np.asarray(probs)[..., class_id][mask].mean()
    name = descriptor.class_names[class_id]
    result.append(mask_result(mask, name, score, region_id=f"segjax-{len(result)}"))
  return result


def predict_image(predictor, path: str, model_version: str = "") -> dict:
  """A Label Studio prediction of the image file ``path`` by a `segjax.predict.Predictor`:
  ``{"result": regions, "score": confidence, "model_version"}``, where confidence = 1 -
  `segjax.prelabels.uncertainty` (``config.predict.uncertainty``), so the least certain image has
  the lowest score."""
  from segjax import predict  # pylint: disable=import-outside-toplevel

  predictions, probs = predict.predict_file(predictor, path)
  instance, scores = predict.instance_map(predictions, 0, predictor.descriptor)
  confidence = 1.0 - prelabels.uncertainty(probs, predictor.settings.get("uncertainty", "entropy"))
  return {
    "result": prediction_result(
      predictions["semantic"][0], instance, predictor.descriptor, probs, scores
    ),
    "score": confidence,
    "model_version": model_version,
  }


def task(image_url: str, prediction: dict | None = None) -> dict:
  """A task to import: the image URL and, if given, its prediction (`predict_image`)."""
  out = {"data": {IMAGE: image_url}}
  if prediction is not None:
    out["predictions"] = [prediction]
  return out


def local_file_url(path: str, document_root: str) -> str:
  """The URL Label Studio serves a file under its local-files document root at."""
  relative = os.path.relpath(os.path.abspath(path), os.path.abspath(document_root))
  if relative.startswith(".."):
    raise ValueError(f"{path} is outside Label Studio's local files root {document_root}")
  return "/data/local-files/?d=" + urllib.parse.quote(relative)


class RefusedImage(ValueError):
  """A task image the backend will not read or fetch; the message says which rule refused it."""


def origin(url: str) -> tuple[str, str, int]:
  """``(scheme, host, port)`` of an http(s) URL, the port filled in (80, 443): two URLs of one
  origin are one server."""
  parsed = urllib.parse.urlsplit(url)
  if parsed.scheme not in ("http", "https") or not parsed.hostname:
    raise RefusedImage(f"{url!r} is not an http(s) URL with a host")
  try:
    port = parsed.port
  except ValueError:
    raise RefusedImage(f"{url!r} has an invalid port") from None
  return parsed.scheme, parsed.hostname, port or (443 if parsed.scheme == "https" else 80)


def inside(path: str, root: str) -> bool:
  """Whether ``path``, symlinks resolved, is ``root`` or below it (symlinks resolved too)."""
  real, base = os.path.realpath(path), os.path.realpath(root)
  return os.path.commonpath([real, base]) == base


class _RedirectsWithinOrigins(urllib.request.HTTPRedirectHandler):
  """Follows a redirect only to an origin the fetch may reach; the access token only to Label
  Studio's own origin (urllib would copy every header to wherever a redirect points)."""

  def __init__(self, images: "TaskImages"):
    super().__init__()
    self.images = images

  def redirect_request(self, req, fp, code, msg, headers, newurl):
    target = urllib.parse.urljoin(req.full_url, newurl)
    with_token = self.images.fetch_rule(target)  # raises for an origin it may not reach
    new = super().redirect_request(req, fp, code, msg, headers, target)
    if new is not None and not with_token:
      new.remove_header("Authorization")
    return new


class TaskImages:
  """The local file of a task's image URL, read only inside the folders it was given and fetched
  only from the origins it was given:

  1. a file of ``data`` with the URL's file name (``--data``);
  2. a file under Label Studio's local-files ``document_root`` (``/data/local-files/?d=PATH``);
  3. else fetched once into ``cache_dir``: a URL on Label Studio's origin (``hostname``; a
     relative URL is on it) with the access ``token``, a URL on one of ``allowed_origins``
     without it; redirects follow the same rule.

  Paths are resolved with their symlinks (``realpath``): one that leaves its folder is refused,
  and so is any other URL (another origin, a local path, ``file:``). A fetched image over
  ``max_bytes``, and any image over ``max_pixels`` (read from its header, before decoding),
  is refused too. Refusals raise `RefusedImage`."""

  def __init__(
    self,
    cache_dir: str,
    data: str | None = None,
    document_root: str | None = None,
    hostname: str | None = None,
    token: str | None = None,
    *,
    allowed_origins: Sequence[str] = (),
    max_bytes: int = 64 << 20,
    max_pixels: int = 50_000_000,
  ):
    self.cache_dir, self.data, self.document_root = cache_dir, data, document_root
    self.hostname, self.token = hostname, token
    self.allowed_origins = {origin(o) for o in allowed_origins}
    self.max_bytes, self.max_pixels = int(max_bytes), int(max_pixels)

  # ---------------------------------------------------------------------- the rules
  def local_file(self, url: str) -> str | None:
    """The file of ``url`` under ``data`` or ``document_root``; None when it is in neither (and
    is not named as being under them). Raises when the URL names a path that leaves them."""
    parsed = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parsed.query)
    relative = query["d"][0] if "d" in query else ""
    name = os.path.basename(relative or urllib.parse.unquote(parsed.path))
    if self.data and name not in ("", ".", ".."):
      candidate = os.path.join(self.data, name)
      if os.path.isfile(candidate):
        if not inside(candidate, self.data):
          raise RefusedImage(f"{url}: {candidate} is a link to a file outside --data={self.data}")
        return candidate
    if self.document_root and relative:
      candidate = os.path.join(self.document_root, relative)  # an absolute d= leaves it
      if not inside(candidate, self.document_root):
        raise RefusedImage(
          f"{url}: the path leaves Label Studio's local-files root {self.document_root}"
        )
      if os.path.isfile(candidate):
        return candidate
    return None

  def fetch_rule(self, url: str) -> bool:
    """Whether a fetch of the absolute ``url`` carries the access token (it is on Label Studio's
    origin); raises when the URL may not be fetched at all."""
    target = origin(url)
    if self.hostname and target == origin(self.hostname):
      return True
    if target in self.allowed_origins:
      return False
    known = ", ".join(["Label Studio's " + self.hostname] if self.hostname else [])
    raise RefusedImage(
      f"{url} is not on an origin the backend fetches from ({known or 'none'}"
      f"{', --allowed_origins' if self.allowed_origins else ''})"
    )

  def absolute_url(self, url: str) -> str:
    """``url`` made absolute against Label Studio's address; raises for what is no fetchable
    URL (a local path with Label Studio unknown, ``file:``, ``s3:``)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme in ("http", "https"):
      return url
    if parsed.scheme:
      raise RefusedImage(
        f"{url}: {parsed.scheme}: URLs are not read (http(s) from Label Studio, "
        "or files of --data / the local-files root)"
      )
    if not self.hostname:
      raise RefusedImage(
        f"{url} is not a file of --data or of the local-files root, and Label "
        "Studio's address is unknown to fetch it from"
      )
    return urllib.parse.urljoin(self.hostname, url)

  def check(self, url: str) -> None:
    """Raises `RefusedImage` when ``url`` would be refused: by the rules of where it is, and
    for a local file by its pixel count (its header is read; nothing is decoded or fetched)."""
    local = self.local_file(url)
    if local is None:
      self.fetch_rule(self.absolute_url(url))
    else:
      self._checked_size(local, url)

  # ---------------------------------------------------------------------- the file
  def path(self, url: str) -> str:
    if not isinstance(url, str) or not url:
      raise RefusedImage(f"image URL {url!r} is not a non-empty string")
    local = self.local_file(url)
    if local is not None:
      return self._checked_size(local, url)
    absolute = self.absolute_url(url)
    with_token = self.fetch_rule(absolute)
    name = os.path.basename(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
    ext = os.path.splitext(name)[1].lower() or ".png"
    path = os.path.join(self.cache_dir, hashlib.sha256(url.encode()).hexdigest()[:20] + ext)
    if os.path.exists(path):
      return path
    payload = self._download(absolute, with_token)
    os.makedirs(self.cache_dir, exist_ok=True)
    tmp = files.write_bytes(f"{path}.unchecked{threading.get_ident()}{ext}", payload)
    try:
      self._checked_size(tmp, url)
    except RefusedImage:
      os.remove(tmp)
      raise
    os.replace(tmp, path)
    return path

  def _download(self, url: str, with_token: bool) -> bytes:
    headers = {"Authorization": f"Token {self.token}"} if with_token and self.token else {}
    opener = urllib.request.build_opener(_RedirectsWithinOrigins(self))
    try:
      with opener.open(urllib.request.Request(url, headers=headers), timeout=60) as response:
        announced = int(response.headers.get("Content-Length") or 0)
        if announced > self.max_bytes:
          raise RefusedImage(
            f"{url}: {announced} bytes, more than the backend's limit of "
            f"{self.max_bytes} (--max_image_mb)"
          )
        payload = response.read(self.max_bytes + 1)
    except urllib.error.HTTPError as e:
      raise RefusedImage(f"{url}: the server answered {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
      if isinstance(e.reason, RefusedImage):
        raise e.reason from None
      raise RefusedImage(f"{url}: {e.reason}") from None
    if len(payload) > self.max_bytes:
      raise RefusedImage(
        f"{url}: more than the backend's limit of {self.max_bytes} bytes (--max_image_mb)"
      )
    return payload

  def _checked_size(self, path: str, url: str) -> str:
    from segjax.data import readers  # pylint: disable=import-outside-toplevel

    try:
      width, height = readers.image_size(path)
    except readers.BadFileError as e:
      raise RefusedImage(f"{url}: {e}") from None
    if width * height > self.max_pixels:
      raise RefusedImage(
        f"{url}: {width}x{height} = {width * height} pixels, more than the "
        f"backend's limit of {self.max_pixels} (--max_image_pixels)"
      )
    return path


# ------------------------------------------------------------------------ annotations
def chosen_annotation(item: dict, annotator: str | int | None = None) -> dict | None:
  """The annotation of an exported task that counts: the latest updated (not cancelled) one, or
  with ``annotator`` (a user id or e-mail) that annotator's latest; None when there is none."""

  def by(annotation):
    who = annotation.get("completed_by")
    ids = {str(who)} if not isinstance(who, dict) else {str(who.get("id")), str(who.get("email"))}
    return annotator is None or str(annotator) in ids

  found = [a for a in item.get("annotations", []) if not a.get("was_cancelled") and by(a)]
  if not found:
    return None
  return max(
    found,
    key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), int(a.get("id") or 0)),
  )


def polygon_mask(points, height: int, width: int) -> np.ndarray:
  """The pixels whose centres lie inside a polygon (even-odd rule) given as ``[[x, y], ...]`` in
  percent of the image's width and height, as Label Studio stores polygons."""
  xy = np.asarray(points, np.float64).reshape(-1, 2) * [width / 100.0, height / 100.0]
  mask = np.zeros((height, width), bool)
  if len(xy) < 3:
    return mask
  top, bottom = max(0, int(np.floor(xy[:, 1].min()))), min(height, int(np.ceil(xy[:, 1].max())))
  left, right = max(0, int(np.floor(xy[:, 0].min()))), min(width, int(np.ceil(xy[:, 0].max())))
  y, x = np.mgrid[top:bottom, left:right] + 0.5
  inside = np.zeros(y.shape, bool)
  for (x1, y1), (x2, y2) in zip(xy, np.roll(xy, -1, axis=0)):
    if y1 == y2:
      continue
    crosses = (y1 > y) != (y2 > y)
    inside ^= crosses & (x < x1 + (y - y1) * (x2 - x1) / (y2 - y1))
  mask[top:bottom, left:right] = inside
  return mask


def annotation_labels(
  result: Iterable[dict],
  descriptor: DatasetDescriptor,
  height: int,
  width: int,
  where: str = "annotation",
) -> tuple[np.ndarray, np.ndarray]:
  """``(semantic [H,W] int32, instance [H,W] int32)`` painted from an annotation's ``result``
  (brush RLE and polygons; other result types are left alone); each region of a thing class is
  an instance. ``where`` names the annotation in errors."""
  background = prelabels.background_class(descriptor)
  semantic = np.full(
    (height, width), descriptor.ignore_label if background is None else background, np.int32
  )
  instance = np.zeros((height, width), np.int32)
  names = {n: i for i, n in enumerate(descriptor.class_names)}
  for region in result:
    kind, value = region.get("type"), region.get("value", {})
    if kind not in ("brushlabels", "polygonlabels"):
      continue
    size = (region.get("original_height", height), region.get("original_width", width))
    if tuple(size) != (height, width):
      raise ValueError(
        f"{where}: region {region.get('id')} is drawn on a {size[1]}x{size[0]} "
        f"image, but the image is {width}x{height}"
      )
    label = (value.get(kind) or [None])[0]
    if label not in names:
      raise ValueError(
        f"{where}: label {label!r} is not a class of the run ({', '.join(descriptor.class_names)})"
      )
    if kind == "brushlabels":
      mask = rle.decode(value["rle"], height, width)
    else:
      mask = polygon_mask(value["points"], height, width)
    semantic[mask] = names[label]
    if names[label] in descriptor.thing_classes:
      instance[mask] = instance.max() + 1
    else:
      instance[mask] = 0
  return semantic, instance


def export_to_folder(
  items: Sequence[dict],
  split_dir: str,
  descriptor: DatasetDescriptor,
  image_path: Callable[[str], str],
  annotator: str | int | None = None,
  skip: Callable[[str], None] | None = None,
) -> dict:
  """Writes the annotated tasks of a Label Studio JSON export (``items``) as a folder-dataset
  split (``split_dir/images``, indexed ``masks/``, ``instances/`` where a thing is drawn) and
  ``classes.json`` beside it at the dataset root, so ``folder_dataset(root, split)`` trains on it
  as is. ``image_path(url)`` gives a task image's local file; with ``skip``, a task whose image
  it refuses (`RefusedImage`) is left out and ``skip(why)`` called, else it raises. Returns
  ``{name: task id}``."""
  written = {}
  for item in items:
    annotation = chosen_annotation(item, annotator)
    if annotation is None:
      continue
    url = item["data"][IMAGE]
    try:
      source = image_path(url)
    except RefusedImage as e:
      if skip is None:
        raise
      skip(f"task {item.get('id')} left out: {e}")
      continue
    stem = os.path.splitext(os.path.basename(urllib.parse.unquote(url.split("?d=")[-1])))[0]
    name = stem if stem not in written else f"{stem}-task{item['id']}"
    height, width = folder.read_image(source).shape[:2]
    semantic, instance = annotation_labels(
      annotation.get("result", []),
      descriptor,
      height,
      width,
      where=f"task {item.get('id')}, annotation {annotation.get('id')}",
    )
    shutil.copyfile(
      source, prelabels.output_path(split_dir, "images", name, os.path.splitext(source)[1].lower())
    )
    prelabels.write_indexed_png(
      prelabels.output_path(split_dir, "masks", name, ".png"), semantic, descriptor.colormap
    )
    if instance.any():
      prelabels.write_instance_png(
        prelabels.output_path(split_dir, "instances", name, ".png"), instance
      )
    written[name] = item.get("id")
  files.write_json(
    os.path.join(os.path.dirname(os.path.abspath(split_dir)), "classes.json"),
    prelabels.classes_json(descriptor),
  )
  return written
