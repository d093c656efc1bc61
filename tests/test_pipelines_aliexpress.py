"""Tests of pipelines.aliexpress on the real AliExpress US sample files."""

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from tensorflow_serving.apis import input_pb2

from pipelines import aliexpress
from pipelines import elwc

DATA_DIR = "/work/shared/data/aliexpress"
TRAIN_PATH = os.path.join(DATA_DIR, "aliexpress_us_train_sample.csv")
TEST_PATH = os.path.join(DATA_DIR, "aliexpress_us_test_sample.csv")
SPEC_PATH = os.path.join(os.path.dirname(__file__), "..", "configs", "aliexpress.json")

pytestmark = pytest.mark.skipif(
  not os.path.exists(TRAIN_PATH), reason=f"{TRAIN_PATH} is not present"
)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  output_dir = str(tmp_path_factory.mktemp("aliexpress") / "out")
  stats = aliexpress.convert(TRAIN_PATH, output_dir, eval_fraction=0.2, num_shards=2)
  return output_dir, stats


def _parse(serialized):
  return [input_pb2.ExampleListWithContext.FromString(record) for record in serialized]


def _search_id(example_list):
  list_id = example_list.context.features.feature[elwc.LIST_ID_FEATURE].bytes_list.value[0].decode()
  return int(list_id.split("search_id=")[1])


@pytest.mark.parametrize(
  "name, expected",
  [
    ("aliexpress_us_train_sample.csv", "US"),
    ("aliexpress_NL_test.csv", "NL"),
    ("/data/aliexpress_ru.csv", "RU"),
    ("train.csv", None),
    ("aliexpress_train.csv", None),
  ],
)
def test_region_from_filename(name, expected):
  assert aliexpress.region_from_filename(name) == expected


def test_region_flag_overrides_filename():
  assert aliexpress.resolve_region(TRAIN_PATH, "nl") == "NL"


def test_region_missing_is_an_error():
  with pytest.raises(ValueError, match="No region for .*train.csv.*Pass --region"):
    aliexpress.resolve_region("/data/train.csv", None)


def test_region_outside_vocabulary_is_an_error():
  with pytest.raises(ValueError, match="'DE' from --region=de is not an AliExpress country"):
    aliexpress.resolve_region(TRAIN_PATH, "de")


def test_convert_without_region_writes_nothing(tmp_path):
  path = tmp_path / "train.csv"
  shutil.copy(TEST_PATH, path)
  with pytest.raises(ValueError, match="No region"):
    aliexpress.convert(str(path), str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()


def test_counts_match_stats(converted, read_split):
  output_dir, stats = converted
  for split in elwc.SPLITS:
    lists = _parse(read_split(output_dir, split))
    split_stats = stats["splits"][split]
    assert len(lists) == split_stats["lists"], split
    assert sum(len(example_list.examples) for example_list in lists) == split_stats["items"], split
    for task in aliexpress.TASKS:
      positives = sum(
        example.features.feature[task].int64_list.value[0]
        for example_list in lists
        for example in example_list.examples
      )
      assert positives == split_stats["positives"][task], (split, task)
    assert split_stats["lists_per_region"] == (
      {"US": split_stats["lists"]} if split_stats["lists"] else {}
    )
  assert stats["region"] == "US"
  assert stats["splits"]["train"]["lists"] + stats["splits"]["eval"]["lists"] == 41
  assert stats["splits"]["train"]["items"] + stats["splits"]["eval"]["items"] == 100


def test_lists_keep_file_order_and_split_by_it(converted, read_split):
  output_dir, _ = converted
  source = pd.read_csv(TRAIN_PATH)
  search_ids = source["search_id"].drop_duplicates().tolist()
  eval_ids = sorted(
    _search_id(example_list) for example_list in _parse(read_split(output_dir, "eval"))
  )
  assert eval_ids == sorted(search_ids[-8:])

  for example_list in _parse(read_split(output_dir, "train")) + _parse(
    read_split(output_dir, "eval")
  ):
    rows = source[source["search_id"] == _search_id(example_list)]
    written = [
      example.features.feature["numerical_40"].float_list.value[0]
      for example in example_list.examples
    ]
    np.testing.assert_allclose(written, rows["numerical_40"].to_numpy(), rtol=1e-6)


def test_parses_with_feature_spec(converted, read_split, parse_with_spec):
  output_dir, stats = converted
  serialized = read_split(output_dir, "train") + read_split(output_dir, "eval")
  parsed = parse_with_spec(serialized, SPEC_PATH)
  with open(SPEC_PATH) as spec_file:
    list_size = json.load(spec_file)["list_size"]

  assert parsed["numerical_1"].shape == (41, list_size, 1)
  assert parsed["categorical_1"].dtype.name == "int64"
  assert set(parsed["region"].numpy().reshape(-1).tolist()) == {b"US"}
  assert int(np.sum(parsed["list_size_actual"])) == 100
  conversions = (
    stats["splits"]["train"]["positives"]["conversion"]
    + stats["splits"]["eval"]["positives"]["conversion"]
  )
  assert int(np.sum(parsed["conversion"].numpy() == 1)) == conversions


def test_conversion_implies_click(converted):
  _, stats = converted
  assert stats["splits"]["train"]["funnel_violations"] == 0
  assert stats["splits"]["eval"]["funnel_violations"] == 0


@pytest.mark.parametrize(
  "eval_fraction, full_split, empty_split", [(0.0, "train", "eval"), (1.0, "eval", "train")]
)
def test_eval_fraction_edges(tmp_path, read_split, eval_fraction, full_split, empty_split):
  output_dir = str(tmp_path / "out")
  stats = aliexpress.convert(TEST_PATH, output_dir, eval_fraction=eval_fraction, num_shards=2)
  assert stats["splits"][empty_split]["lists"] == 0
  assert read_split(output_dir, empty_split) == []
  assert stats["splits"][full_split]["lists"] == 10
  assert len(read_split(output_dir, full_split)) == 10


def test_invalid_label_names_row(tmp_path):
  source = pd.read_csv(TEST_PATH)
  source.loc[3, "click"] = 2
  path = tmp_path / "aliexpress_us_bad.csv"
  source.to_csv(path, index=False)
  with pytest.raises(ValueError, match="data row 4 has click=2; labels must be 0 or 1"):
    aliexpress.convert(str(path), str(tmp_path / "out"))
