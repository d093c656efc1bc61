"""Feature spec validation: valid files load, invalid entries fail with a message naming them."""

import copy
import glob
import json

import pytest

from seqmd_tf.feature_spec import FeatureSpecError, load_feature_spec, parse_feature_spec
from elwc_fixtures import SPEC_DICT


def _spec_with(change):
  raw = copy.deepcopy(SPEC_DICT)
  change(raw)
  return raw


def test_fixture_spec_parses():
  spec = parse_feature_spec(SPEC_DICT)
  assert spec.tasks == ("click", "purchase")
  assert spec.region.name == "region"
  assert [f.name for f in spec.example_features] == ["price", "quality", "item_id"]


def test_round_trip_through_json_dict():
  spec = parse_feature_spec(SPEC_DICT)
  again = parse_feature_spec(json.loads(json.dumps(spec.to_json_dict())))
  assert again.features == spec.features
  assert again.tasks == spec.tasks


@pytest.mark.parametrize("path", sorted(glob.glob("configs/*.json")))
def test_shipped_configs_are_valid(path):
  spec = load_feature_spec(path)
  assert spec.list_size > 0


CASES = [
    ("missing list_size", lambda r: r.pop("list_size"), "missing required key(s) ['list_size']"),
    ("bad list_size", lambda r: r.update(list_size=0), "'list_size' must be a positive integer"),
    ("empty tasks", lambda r: r.update(tasks=[]), "'tasks' must be a non-empty list"),
    ("unknown type", lambda r: r["example_features"][0].update(type="bucketized"),
     "example_features[0] ('price'): 'type' must be one of"),
    ("bad group", lambda r: r["example_features"][1].update(group="regional"),
     "example_features[1] ('quality'): 'group' must be one of"),
    ("no vocabulary", lambda r: r["context_features"][1].pop("vocabulary"),
     "context_features[1] ('filters'): a categorical feature needs a non-empty 'vocabulary'"),
    ("hash buckets zero", lambda r: r["example_features"][2].update(hash_buckets=0),
     "example_features[2] ('item_id'): 'hash_buckets' must be a positive integer"),
    ("region not context", lambda r: r["region"].update(feature="price"),
     "region feature 'price' must be one of the context features"),
    ("region hashed", lambda r: r["context_features"][0].update(type="hashed", hash_buckets=5)
     or r["context_features"][0].pop("vocabulary"),
     "region feature 'region' must be a single-valued 'categorical' feature"),
    ("label as feature", lambda r: r["example_features"].append(
        {"name": "click", "type": "numeric", "dtype": "int64", "group": "region_invariant"}),
     "feature 'click' is also a task label"),
    ("duplicate feature", lambda r: r["example_features"].append(dict(r["example_features"][0])),
     "feature 'price' is declared twice"),
    ("typo key", lambda r: r["example_features"][0].update(tranform="log1p"),
     "unknown key(s) ['tranform']"),
    ("multivalent example", lambda r: r["example_features"].append(
        {"name": "tags", "type": "categorical", "dtype": "string", "group": "region_invariant",
         "vocabulary": ["a"], "multivalent": True}),
     "'multivalent' is supported for context features only"),
    ("no driven feature", lambda r: [f.update(group="region_invariant")
                                     for f in r["context_features"] + r["example_features"]],
     "no feature has group 'region_driven'"),
    ("bad clip", lambda r: r["example_features"][0].update(clip=[5, 1]),
     "'clip' must be [low, high] with low < high"),
]


@pytest.mark.parametrize("name,change,message", CASES, ids=[c[0] for c in CASES])
def test_invalid_spec_names_entry(name, change, message):
  with pytest.raises(FeatureSpecError) as error:
    parse_feature_spec(_spec_with(change), path="specs/bad.json")
  assert message in str(error.value), name
  assert "specs/bad.json" in str(error.value)


def test_missing_file_names_path(tmp_path):
  with pytest.raises(FeatureSpecError, match="not found"):
    load_feature_spec(str(tmp_path / "absent.json"))


def test_invalid_json_names_path(tmp_path):
  path = tmp_path / "broken.json"
  path.write_text("{not json")
  with pytest.raises(FeatureSpecError, match="broken.json: not valid JSON"):
    load_feature_spec(str(path))
