"""Tests of pipelines.expedia on the real 1,000-search Expedia file."""

import json
import os

import numpy as np
import pandas as pd
import pytest
from tensorflow_serving.apis import input_pb2

from pipelines import elwc
from pipelines import expedia

DATA_PATH = "/work/shared/data/expedia-icdm2013/expedia_vu_train_1000searches.csv"
SPEC_PATH = os.path.join(os.path.dirname(__file__), "..", "configs", "expedia.json")
NUM_SLICE_SEARCHES = 120  # searches in the slice used for the eval_fraction edge cases

pytestmark = pytest.mark.skipif(not os.path.exists(DATA_PATH), reason=f"{DATA_PATH} is not present")


@pytest.fixture(scope="module")
def rows():
  return expedia.read_searches(DATA_PATH)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  output_dir = str(tmp_path_factory.mktemp("expedia") / "out")
  stats = expedia.convert(DATA_PATH, output_dir, eval_fraction=0.2, num_shards=2)
  return output_dir, stats


@pytest.fixture(scope="module")
def slice_path(tmp_path_factory):
  with open(DATA_PATH) as source:
    header = source.readline()
    lines = source.readlines()
  search_ids = []
  kept_lines = []
  for line in lines:
    search_id = line.split(",", 1)[0]
    if search_id not in search_ids:
      if len(search_ids) == NUM_SLICE_SEARCHES:
        continue
      search_ids.append(search_id)
    kept_lines.append(line)
  path = tmp_path_factory.mktemp("expedia_slice") / "slice.csv"
  path.write_text(header + "".join(kept_lines))
  return str(path)


@pytest.fixture(scope="module")
def spec():
  with open(SPEC_PATH) as spec_file:
    return json.load(spec_file)


def _records(rows):
  return [
    expedia.search_to_list(search_rows) for _, search_rows in rows.groupby("srch_id", sort=False)
  ]


def _features_without_labels(record):
  items = [
    {name: value for name, value in item.items() if name not in expedia.TASKS}
    for item in record.examples
  ]
  return record.context, items


def test_counts_match_stats(converted, read_split):
  output_dir, stats = converted
  for split in elwc.SPLITS:
    lists = [
      input_pb2.ExampleListWithContext.FromString(record)
      for record in read_split(output_dir, split)
    ]
    split_stats = stats["splits"][split]
    assert len(lists) == split_stats["lists"], split
    assert sum(len(example_list.examples) for example_list in lists) == split_stats["items"], split
    for task in expedia.TASKS:
      positives = sum(
        example.features.feature[task].int64_list.value[0]
        for example_list in lists
        for example in example_list.examples
      )
      assert positives == split_stats["positives"][task], (split, task)
  assert stats["splits"]["train"]["lists"] + stats["splits"]["eval"]["lists"] == 1000
  assert stats["splits"]["train"]["items"] + stats["splits"]["eval"]["items"] == 24841


def test_labels_match_source(converted, rows):
  _, stats = converted
  clicks = sum(stats["splits"][split]["positives"]["click"] for split in elwc.SPLITS)
  bookings = sum(stats["splits"][split]["positives"]["booking"] for split in elwc.SPLITS)
  assert clicks == int(rows["click_bool"].sum())
  assert bookings == int(rows["booking_bool"].sum())
  assert stats["splits"]["train"]["funnel_violations"] == 0


def test_split_by_date_time(converted, read_split, rows):
  output_dir, stats = converted
  times = pd.to_datetime(rows["date_time"]).groupby(rows["srch_id"]).min()
  search_ids = {}
  for split in elwc.SPLITS:
    search_ids[split] = [
      int(
        input_pb2.ExampleListWithContext.FromString(record)
        .context.features.feature[elwc.LIST_ID_FEATURE]
        .bytes_list.value[0]
        .decode()
        .split("=")[1]
      )
      for record in read_split(output_dir, split)
    ]
  assert len(search_ids["eval"]) == 200
  assert times[search_ids["train"]].max() <= times[search_ids["eval"]].min()


def test_items_in_position_order(converted, read_split):
  output_dir, _ = converted
  for record in read_split(output_dir, "eval"):
    example_list = input_pb2.ExampleListWithContext.FromString(record)
    ranks = [
      example.features.feature["original_rank"].int64_list.value[0]
      for example in example_list.examples
    ]
    assert ranks == sorted(ranks)


def test_parses_with_feature_spec(converted, read_split, parse_with_spec, spec):
  output_dir, stats = converted
  serialized = read_split(output_dir, "train")
  parsed = parse_with_spec(serialized, SPEC_PATH)

  assert parsed["price_usd"].shape == (len(serialized), spec["list_size"], 1)
  assert parsed["site_id"].shape == (len(serialized), 1)
  assert int(np.sum(parsed["list_size_actual"])) == stats["splits"]["train"]["items"]
  for task in expedia.TASKS:
    assert int(np.sum(parsed[task].numpy() == 1)) == stats["splits"]["train"]["positives"][task], (
      task
    )


def test_regions_are_in_vocabulary(converted, spec):
  _, stats = converted
  site = next(feature for feature in spec["context_features"] if feature["name"] == "site_id")
  regions = set(stats["splits"]["train"]["lists_per_region"]) | set(
    stats["splits"]["eval"]["lists_per_region"]
  )
  assert {int(region) for region in regions} <= set(site["vocabulary"])


# ---------------------------------------------------------------------------------------------
# Leakage: label columns never reach a feature.


def test_label_columns_change_no_feature(rows):
  rng = np.random.default_rng(0)
  changed = rows.copy()
  changed["gross_bookings_usd"] = rng.permutation(changed["gross_bookings_usd"].to_numpy())
  changed["click_bool"] = rng.permutation(changed["click_bool"].to_numpy())
  changed["booking_bool"] = 0

  reference = _records(rows)
  shuffled = _records(changed)
  assert len(reference) == len(shuffled)
  for original, other in zip(reference, shuffled):
    assert _features_without_labels(other) == _features_without_labels(original), original.list_id
  labels_changed = sum(
    original.examples != other.examples for original, other in zip(reference, shuffled)
  )
  assert labels_changed > 0


def test_label_columns_absent_from_features(converted, read_split, spec):
  output_dir, _ = converted
  spec_names = {feature["name"] for feature in spec["context_features"] + spec["example_features"]}
  forbidden = set(expedia.LABEL_COLUMNS)
  assert not spec_names & forbidden
  assert not {name for name in spec_names if name.startswith(("click", "booking", "gross"))}

  example_list = input_pb2.ExampleListWithContext.FromString(read_split(output_dir, "train")[0])
  context_names = set(example_list.context.features.feature)
  example_names = set(example_list.examples[0].features.feature)
  assert not (context_names | example_names) & forbidden
  assert example_names - spec_names == set(expedia.TASKS)
  assert context_names - spec_names == {elwc.LIST_ID_FEATURE}


# ---------------------------------------------------------------------------------------------
# Missing values.


def test_null_becomes_default_and_indicator(rows):
  search_id = int(rows.loc[rows["prop_review_score"].isna(), "srch_id"].iloc[0])
  search_rows = rows[rows["srch_id"] == search_id]
  record = expedia.search_to_list(search_rows)
  missing_items = [item for item in record.examples if item["prop_review_score_missing"] == 1]
  present_items = [item for item in record.examples if item["prop_review_score_missing"] == 0]

  assert len(missing_items) == int(search_rows["prop_review_score"].isna().sum())
  assert all(item["prop_review_score"] == expedia.MISSING_DEFAULT for item in missing_items)
  assert present_items
  assert all(not np.isnan(item["prop_review_score"]) for item in present_items)


def test_null_token_read_as_missing(tmp_path, rows):
  with open(DATA_PATH) as source:
    header, first_line = source.readline(), source.readline()
  path = tmp_path / "null.csv"
  path.write_text(header + first_line)
  assert "NULL" in first_line or ",," in first_line
  one_row = expedia.read_searches(str(path))
  assert one_row["visitor_hist_starrating"].isna().all()


def test_missing_required_value_names_row(tmp_path):
  with open(DATA_PATH) as source:
    header, first_line = source.readline(), source.readline()
  columns = header.strip().split(",")
  values = first_line.strip().split(",")
  values[columns.index("price_usd")] = "NULL"
  path = tmp_path / "bad.csv"
  path.write_text(header + ",".join(values) + "\n")
  with pytest.raises(ValueError, match="bad.csv: data row 1 .*'price_usd'"):
    expedia.convert(str(path), str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
  "eval_fraction, full_split, empty_split", [(0.0, "train", "eval"), (1.0, "eval", "train")]
)
def test_eval_fraction_edges(
  tmp_path, slice_path, read_split, eval_fraction, full_split, empty_split
):
  output_dir = str(tmp_path / "out")
  stats = expedia.convert(slice_path, output_dir, eval_fraction=eval_fraction, num_shards=2)
  assert stats["splits"][empty_split]["lists"] == 0
  assert read_split(output_dir, empty_split) == []
  assert stats["splits"][full_split]["lists"] == NUM_SLICE_SEARCHES
  assert len(read_split(output_dir, full_split)) == NUM_SLICE_SEARCHES
