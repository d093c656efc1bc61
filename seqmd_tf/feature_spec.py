"""Load and validate a dataset's feature spec (the JSON format is in docs/feature_spec.md)."""

import dataclasses
import json
import os
from typing import Any, Optional, Sequence

FEATURE_TYPES = ("categorical", "hashed", "numeric")
DTYPES = ("string", "int64", "float")
GROUPS = ("region_driven", "region_invariant")
TRANSFORMS = ("none", "log1p", "symlog")
DEFAULT_EMBEDDING_DIM = 8
DEFAULT_NUM_OOV_BUCKETS = 1


class FeatureSpecError(ValueError):
  """A feature spec file is invalid; the message names the file and the entry."""


@dataclasses.dataclass(frozen=True)
class Feature:
  """One context or example feature as declared in the spec."""

  name: str
  type: str
  dtype: str
  group: str
  is_context: bool
  default: Any = None
  vocabulary: Optional[tuple] = None
  num_oov_buckets: int = DEFAULT_NUM_OOV_BUCKETS
  hash_buckets: Optional[int] = None
  embedding_dim: int = DEFAULT_EMBEDDING_DIM
  multivalent: bool = False
  transform: str = "none"
  clip: Optional[tuple] = None
  normalize: bool = True
  # True: a record without this feature is an error (data validation and --skip_bad_records);
  # False: the feature takes `default_value` when it is missing.
  required: bool = False

  @property
  def default_value(self):
    """Return the value parsed for a record that lacks this feature."""
    if self.default is not None:
      return self.default
    if self.dtype == "string":
      return ""
    if self.dtype == "int64":
      return 0 if self.type == "numeric" else -1
    return 0.0


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
  """A validated feature spec.

  Attributes:
    name: dataset name.
    list_size: lists are padded or truncated to this many items.
    tasks: task label names in funnel order (widest task first).
    region_feature: name of the categorical context feature holding the region.
    mask_context_features: other context features fed to the mask generator.
    context_features: features with one value (or one bag of values) per list.
    example_features: features with one value per item.
    path: the file the spec was read from ("" when built in memory).
  """

  name: str
  list_size: int
  tasks: tuple
  region_feature: str
  mask_context_features: tuple
  context_features: tuple
  example_features: tuple
  path: str = ""

  @property
  def features(self) -> tuple:
    return self.context_features + self.example_features

  def feature(self, name: str) -> Feature:
    for feature in self.features:
      if feature.name == name:
        return feature
    raise KeyError(f"feature {name!r} is not in feature spec {self.path or self.name!r}")

  @property
  def region(self) -> Feature:
    return self.feature(self.region_feature)

  def to_json_dict(self) -> dict:
    """Return the spec in its JSON file form, for writing next to a model."""

    def feature_dict(feature):
      entry = {"name": feature.name, "type": feature.type, "dtype": feature.dtype,
               "group": feature.group}
      if feature.default is not None:
        entry["default"] = feature.default
      if feature.required:
        entry["required"] = True
      if feature.type == "numeric":
        entry.update(transform=feature.transform, normalize=feature.normalize)
        if feature.clip is not None:
          entry["clip"] = list(feature.clip)
      elif feature.type == "hashed":
        entry.update(hash_buckets=feature.hash_buckets, embedding_dim=feature.embedding_dim)
      else:
        entry.update(vocabulary=list(feature.vocabulary), num_oov_buckets=feature.num_oov_buckets,
                     embedding_dim=feature.embedding_dim, multivalent=feature.multivalent)
      return entry

    return {
        "name": self.name,
        "list_size": self.list_size,
        "tasks": list(self.tasks),
        "region": {
            "feature": self.region_feature,
            "mask_context_features": list(self.mask_context_features),
        },
        "context_features": [feature_dict(f) for f in self.context_features],
        "example_features": [feature_dict(f) for f in self.example_features],
    }


def load_feature_spec(path: str) -> FeatureSpec:
  """Read and validate the feature spec JSON at `path`.

  Raises:
    FeatureSpecError: the file is missing, is not JSON, or an entry is invalid.
  """
  if not os.path.exists(path):
    raise FeatureSpecError(
        f"feature spec file {path!r} not found; pass an existing file such as configs/trivago.json")
  with open(path, encoding="utf-8") as f:
    try:
      raw = json.load(f)
    except json.JSONDecodeError as e:
      raise FeatureSpecError(f"feature spec {path}: not valid JSON: {e}") from e
  return parse_feature_spec(raw, path=path)


def parse_feature_spec(raw: dict, path: str = "") -> FeatureSpec:
  """Validate a spec already loaded as a dict; `path` is only used in messages."""
  where = f"feature spec {path or '<in memory>'}"
  if not isinstance(raw, dict):
    raise FeatureSpecError(f"{where}: the top level must be a JSON object, got {type(raw).__name__}")

  _check_keys(raw, {"name", "list_size", "tasks", "region", "context_features", "example_features"},
              {"description"}, where)
  list_size = raw["list_size"]
  if not isinstance(list_size, int) or isinstance(list_size, bool) or list_size <= 0:
    raise FeatureSpecError(f"{where}: 'list_size' must be a positive integer, got {list_size!r}")
  tasks = raw["tasks"]
  if (not isinstance(tasks, list) or not tasks or
      not all(isinstance(t, str) and t for t in tasks) or len(set(tasks)) != len(tasks)):
    raise FeatureSpecError(
        f"{where}: 'tasks' must be a non-empty list of distinct label names in funnel order, "
        f"got {tasks!r}")

  context = tuple(_parse_feature(e, True, i, where) for i, e in enumerate(_as_list(raw, "context_features", where)))
  example = tuple(_parse_feature(e, False, i, where) for i, e in enumerate(_as_list(raw, "example_features", where)))
  _check_unique_names(context + example, tasks, where)

  region = raw["region"]
  if not isinstance(region, dict) or "feature" not in region:
    raise FeatureSpecError(f"{where}: 'region' must be an object like {{\"feature\": \"platform\"}}, got {region!r}")
  _check_keys(region, {"feature"}, {"mask_context_features"}, f"{where}: 'region'")
  by_name = {f.name: f for f in context}
  region_name = region["feature"]
  region_feature = by_name.get(region_name)
  if region_feature is None:
    raise FeatureSpecError(
        f"{where}: region feature {region_name!r} must be one of the context features "
        f"{sorted(by_name)}")
  if region_feature.type != "categorical" or region_feature.multivalent:
    raise FeatureSpecError(
        f"{where}: region feature {region_name!r} must be a single-valued 'categorical' feature "
        f"with a vocabulary, got type {region_feature.type!r}")
  mask_context = region.get("mask_context_features", [])
  for name in mask_context:
    if name not in by_name:
      raise FeatureSpecError(
          f"{where}: region.mask_context_features entry {name!r} is not a context feature")

  if not any(f.group == "region_driven" for f in context + example):
    raise FeatureSpecError(
        f"{where}: no feature has group 'region_driven', so the region mask would have nothing "
        "to rescale; mark at least one feature as region_driven")
  return FeatureSpec(
      name=str(raw["name"]), list_size=list_size, tasks=tuple(tasks),
      region_feature=region_name, mask_context_features=tuple(mask_context),
      context_features=context, example_features=example, path=path)


def _as_list(raw: dict, key: str, where: str) -> list:
  value = raw[key]
  if not isinstance(value, list):
    raise FeatureSpecError(f"{where}: {key!r} must be a list of feature objects, got {type(value).__name__}")
  return value


def _check_keys(entry: dict, required: set, optional: set, where: str) -> None:
  missing = sorted(required - set(entry))
  if missing:
    raise FeatureSpecError(f"{where}: missing required key(s) {missing}")
  unknown = sorted(set(entry) - required - optional)
  if unknown:
    raise FeatureSpecError(
        f"{where}: unknown key(s) {unknown}; allowed keys are {sorted(required | optional)}")


def _check_unique_names(features: Sequence[Feature], tasks: Sequence[str], where: str) -> None:
  seen = set()
  for feature in features:
    if feature.name in seen:
      raise FeatureSpecError(f"{where}: feature {feature.name!r} is declared twice")
    seen.add(feature.name)
    if feature.name in tasks:
      raise FeatureSpecError(
          f"{where}: feature {feature.name!r} is also a task label; a label must never be a model input")


_FEATURE_REQUIRED = {"name", "type", "dtype", "group"}
_FEATURE_OPTIONAL = {
    "categorical": {"default", "required", "vocabulary", "num_oov_buckets", "embedding_dim",
                    "multivalent", "description"},
    "hashed": {"default", "required", "hash_buckets", "embedding_dim", "description"},
    "numeric": {"default", "required", "transform", "clip", "normalize", "description"},
}


def _parse_feature(entry: Any, is_context: bool, index: int, where: str) -> Feature:
  kind = "context_features" if is_context else "example_features"
  name = entry.get("name") if isinstance(entry, dict) else None
  at = f"{where}: {kind}[{index}]" + (f" ({name!r})" if name else "")
  if not isinstance(entry, dict):
    raise FeatureSpecError(f"{at}: must be an object, got {entry!r}")
  _check_keys(entry, _FEATURE_REQUIRED, set().union(*_FEATURE_OPTIONAL.values()), at)

  ftype, dtype, group = entry["type"], entry["dtype"], entry["group"]
  if ftype not in FEATURE_TYPES:
    raise FeatureSpecError(f"{at}: 'type' must be one of {FEATURE_TYPES}, got {ftype!r}")
  if dtype not in DTYPES:
    raise FeatureSpecError(f"{at}: 'dtype' must be one of {DTYPES}, got {dtype!r}")
  if group not in GROUPS:
    raise FeatureSpecError(f"{at}: 'group' must be one of {GROUPS}, got {group!r}")
  extra = sorted(set(entry) - _FEATURE_REQUIRED - _FEATURE_OPTIONAL[ftype])
  if extra:
    raise FeatureSpecError(f"{at}: key(s) {extra} do not apply to type {ftype!r}")
  required = entry.get("required", False)
  if not isinstance(required, bool):
    raise FeatureSpecError(f"{at}: 'required' must be true or false, got {required!r}")

  feature = _parse_typed_feature(entry, ftype, is_context, at)
  return dataclasses.replace(feature, required=required)


def _parse_typed_feature(entry: dict, ftype: str, is_context: bool, at: str) -> Feature:
  name, dtype, group = entry["name"], entry["dtype"], entry["group"]
  if ftype == "numeric":
    return _parse_numeric(entry, is_context, at)
  if dtype == "float":
    raise FeatureSpecError(f"{at}: a {ftype} feature must have dtype 'string' or 'int64', got 'float'")
  embedding_dim = entry.get("embedding_dim", DEFAULT_EMBEDDING_DIM)
  _check_positive_int(embedding_dim, "embedding_dim", at)
  if ftype == "hashed":
    hash_buckets = entry.get("hash_buckets")
    _check_positive_int(hash_buckets, "hash_buckets", at)
    return Feature(name=name, type=ftype, dtype=dtype, group=group, is_context=is_context,
                   default=entry.get("default"), hash_buckets=hash_buckets,
                   embedding_dim=embedding_dim)
  return _parse_categorical(entry, is_context, embedding_dim, at)


def _parse_categorical(entry: dict, is_context: bool, embedding_dim: int, at: str) -> Feature:
  vocabulary = entry.get("vocabulary")
  if not isinstance(vocabulary, list) or not vocabulary:
    raise FeatureSpecError(f"{at}: a categorical feature needs a non-empty 'vocabulary' list")
  expected = str if entry["dtype"] == "string" else int
  bad = [v for v in vocabulary if not isinstance(v, expected) or isinstance(v, bool)]
  if bad:
    raise FeatureSpecError(
        f"{at}: vocabulary values must be {entry['dtype']} like the feature, got {bad[:3]!r}")
  if len(set(vocabulary)) != len(vocabulary):
    raise FeatureSpecError(f"{at}: vocabulary has duplicate values")
  num_oov = entry.get("num_oov_buckets", DEFAULT_NUM_OOV_BUCKETS)
  _check_positive_int(num_oov, "num_oov_buckets", at)
  multivalent = entry.get("multivalent", False)
  if not isinstance(multivalent, bool):
    raise FeatureSpecError(f"{at}: 'multivalent' must be true or false, got {multivalent!r}")
  if multivalent and not is_context:
    raise FeatureSpecError(f"{at}: 'multivalent' is supported for context features only")
  return Feature(name=entry["name"], type="categorical", dtype=entry["dtype"],
                 group=entry["group"], is_context=is_context, default=entry.get("default"),
                 vocabulary=tuple(vocabulary), num_oov_buckets=num_oov,
                 embedding_dim=embedding_dim, multivalent=multivalent)


def _parse_numeric(entry: dict, is_context: bool, at: str) -> Feature:
  if entry["dtype"] == "string":
    raise FeatureSpecError(f"{at}: a numeric feature must have dtype 'int64' or 'float', got 'string'")
  transform = entry.get("transform", "none")
  if transform not in TRANSFORMS:
    raise FeatureSpecError(f"{at}: 'transform' must be one of {TRANSFORMS}, got {transform!r}")
  clip = entry.get("clip")
  if clip is not None:
    if (not isinstance(clip, list) or len(clip) != 2 or
        not all(isinstance(v, (int, float)) for v in clip) or clip[0] >= clip[1]):
      raise FeatureSpecError(f"{at}: 'clip' must be [low, high] with low < high, got {clip!r}")
    clip = (float(clip[0]), float(clip[1]))
  normalize = entry.get("normalize", True)
  if not isinstance(normalize, bool):
    raise FeatureSpecError(f"{at}: 'normalize' must be true or false, got {normalize!r}")
  default = entry.get("default", 0.0)
  if not isinstance(default, (int, float)) or isinstance(default, bool):
    raise FeatureSpecError(f"{at}: a numeric 'default' must be a number, got {default!r}")
  if entry["dtype"] == "int64":
    default = int(default)
  return Feature(name=entry["name"], type="numeric", dtype=entry["dtype"], group=entry["group"],
                 is_context=is_context, default=default, transform=transform, clip=clip,
                 normalize=normalize)


def _check_positive_int(value: Any, key: str, at: str) -> None:
  if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
    raise FeatureSpecError(f"{at}: {key!r} must be a positive integer, got {value!r}")
