"""Tests of pipelines.trivago on the real RecSys Challenge 2019 file and hand-built sessions."""

import json
import os

import numpy as np
import pandas as pd
import pytest
from tensorflow_serving.apis import input_pb2

from pipelines import elwc
from pipelines import trivago

DATA_PATH = "/work/shared/data/trivago-recsys2019/trivago_2018-11-07_08_part1.parquet"
SPEC_PATH = os.path.join(os.path.dirname(__file__), "..", "configs", "trivago.json")
# Sessions in the slice used for the eval_fraction edge cases; enough for both splits.
NUM_SLICE_SESSIONS = 400

pytestmark = pytest.mark.skipif(not os.path.exists(DATA_PATH), reason=f"{DATA_PATH} is not present")


@pytest.fixture(scope="module")
def actions():
  return trivago.order_actions(trivago.read_actions(DATA_PATH))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  output_dir = str(tmp_path_factory.mktemp("trivago") / "out")
  stats = trivago.convert(DATA_PATH, output_dir, eval_fraction=0.2, num_shards=2)
  return output_dir, stats


@pytest.fixture(scope="module")
def slice_path(tmp_path_factory, actions):
  sessions = actions["session_id"].drop_duplicates().iloc[:NUM_SLICE_SESSIONS]
  path = str(tmp_path_factory.mktemp("trivago_slice") / "slice.parquet")
  actions[actions["session_id"].isin(sessions)].to_parquet(path)
  return path


def _parse_lists(serialized):
  return [input_pb2.ExampleListWithContext.FromString(record) for record in serialized]


def _features_without_labels(record: elwc.ListRecord) -> tuple:
  items = [
    {name: value for name, value in item.items() if name not in trivago.TASKS}
    for item in record.examples
  ]
  return record.context, items


# ---------------------------------------------------------------------------------------------
# Real file: counts, splits, parsing.


def test_counts_match_stats(converted, read_split):
  output_dir, stats = converted
  for split in elwc.SPLITS:
    lists = _parse_lists(read_split(output_dir, split))
    split_stats = stats["splits"][split]
    assert len(lists) == split_stats["lists"], split
    assert sum(len(example_list.examples) for example_list in lists) == split_stats["items"], split
    for task in trivago.TASKS:
      positives = sum(
        example.features.feature[task].int64_list.value[0]
        for example_list in lists
        for example in example_list.examples
      )
      assert positives == split_stats["positives"][task], (split, task)
    assert sum(split_stats["lists_per_region"].values()) == split_stats["lists"], split


def test_stats_file_contract(converted):
  output_dir, stats = converted
  with open(os.path.join(output_dir, "stats.json")) as stats_file:
    assert json.load(stats_file) == stats
  assert stats["input"] == DATA_PATH
  assert stats["flags"] == {"eval_fraction": 0.2, "num_shards": 2}
  for split in elwc.SPLITS:
    assert {"lists", "items", "positives", "lists_per_region"} <= set(stats["splits"][split])


def test_all_clickouts_accounted_for(converted):
  _, stats = converted
  counters = stats["counters"]
  written = stats["splits"]["train"]["lists"] + stats["splits"]["eval"]["lists"]
  skipped = sum(count for name, count in counters.items() if name.startswith("skipped_"))
  assert written + skipped == counters["clickout_rows"]
  assert counters["reference_not_in_impressions"] == 1


def test_one_clickout_per_list_except_missing_reference(converted):
  _, stats = converted
  for split in elwc.SPLITS:
    split_stats = stats["splits"][split]
    assert split_stats["funnel_violations"] == 0, split
  lists = sum(stats["splits"][split]["lists"] for split in elwc.SPLITS)
  clickouts = sum(stats["splits"][split]["positives"]["clickout"] for split in elwc.SPLITS)
  assert clickouts == lists - stats["counters"]["reference_not_in_impressions"]


def test_split_by_session_start(converted, read_split, actions):
  output_dir, stats = converted
  starts = actions.groupby("session_id")["timestamp"].min()
  sessions = {}
  for split in elwc.SPLITS:
    sessions[split] = {
      example_list.context.features.feature[elwc.LIST_ID_FEATURE]
      .bytes_list.value[0]
      .decode()
      .split(":")[0]
      for example_list in _parse_lists(read_split(output_dir, split))
    }
  assert not sessions["train"] & sessions["eval"]
  assert starts[list(sessions["train"])].max() <= starts[list(sessions["eval"])].min()
  assert len(sessions["eval"]) == stats["counters"]["sessions_eval"]
  expected_eval = elwc.num_eval_groups(len(sessions["train"]) + len(sessions["eval"]), 0.2)
  assert len(sessions["eval"]) == expected_eval


def test_parses_with_feature_spec(converted, read_split, parse_with_spec):
  output_dir, stats = converted
  serialized = read_split(output_dir, "eval")
  parsed = parse_with_spec(serialized, SPEC_PATH)
  with open(SPEC_PATH) as spec_file:
    list_size = json.load(spec_file)["list_size"]

  assert parsed["price"].shape == (len(serialized), list_size, 1)
  assert parsed["platform"].shape == (len(serialized), 1)
  assert int(np.sum(parsed["list_size_actual"])) == stats["splits"]["eval"]["items"]
  for task in trivago.TASKS:
    labels = parsed[task].numpy()
    assert int(np.sum(labels == 1)) == stats["splits"]["eval"]["positives"][task], task
    assert (
      int(np.sum(labels == -1)) == len(serialized) * list_size - stats["splits"]["eval"]["items"]
    ), task


def test_regions_are_in_vocabulary(converted):
  _, stats = converted
  with open(SPEC_PATH) as spec_file:
    spec = json.load(spec_file)
  platform = next(feature for feature in spec["context_features"] if feature["name"] == "platform")
  regions = set(stats["splits"]["train"]["lists_per_region"]) | set(
    stats["splits"]["eval"]["lists_per_region"]
  )
  assert regions <= set(platform["vocabulary"])
  assert len(platform["vocabulary"]) == 55


def test_config_filter_vocabulary_is_most_frequent(actions):
  clickouts = actions.loc[actions["action_type"] == trivago.CLICKOUT_ACTION, "current_filters"]
  with open(SPEC_PATH) as spec_file:
    spec = json.load(spec_file)
  filters = next(
    feature for feature in spec["context_features"] if feature["name"] == "current_filters"
  )
  assert filters["multivalent"] is True
  assert filters["vocabulary"] == trivago.frequent_filter_values(
    clickouts, trivago.NUM_FREQUENT_FILTERS
  )


@pytest.mark.parametrize(
  "eval_fraction, full_split, empty_split", [(0.0, "train", "eval"), (1.0, "eval", "train")]
)
def test_eval_fraction_edges(
  tmp_path, slice_path, read_split, eval_fraction, full_split, empty_split
):
  output_dir = str(tmp_path / "out")
  stats = trivago.convert(slice_path, output_dir, eval_fraction=eval_fraction, num_shards=2)
  assert stats["splits"][empty_split]["lists"] == 0
  assert read_split(output_dir, empty_split) == []
  assert len(os.listdir(os.path.join(output_dir, empty_split))) == 2
  assert stats["splits"][full_split]["lists"] > 0
  assert len(read_split(output_dir, full_split)) == stats["splits"][full_split]["lists"]


# ---------------------------------------------------------------------------------------------
# Leakage: only the clickout row and actions before the window reach a feature.


def _action(step, action_type, reference, impressions=None, prices=None):
  return {
    "session_id": "s1",
    "timestamp": 1541599500 + 10 * step,
    "step": step,
    "action_type": action_type,
    "reference": reference,
    "platform": "DE",
    "city": "Berlin, Germany",
    "device": "mobile",
    "current_filters": "Hotel|4 Star",
    "impressions": impressions,
    "prices": prices,
  }


def _hand_built_session(second_window):
  """Two clickouts; `second_window` is the list of actions between them (steps 3 to 19)."""
  first = [
    _action(1, "interaction item image", "A"),
    _action(2, "clickout item", "A", "A|B|C", "100|50|70"),
  ]
  window = [
    dict(action, step=3 + offset, timestamp=1541599530 + offset)
    for offset, action in enumerate(second_window)
  ]
  second = _action(20, "clickout item", "C", "C|B|A|D", "70|50|100|90")
  return first + window + [second]


def _lists(session):
  return [outcome for outcome, _ in trivago.session_to_lists(session)]


def _by_item(record):
  return {item["item_id"]: item for item in record.examples}


def test_in_window_interaction_sets_label_not_feature():
  first_list, second_list = _lists(
    _hand_built_session(
      [_action(0, "interaction item info", "B"), _action(0, "search for item", "C")]
    )
  )

  first = _by_item(first_list)
  assert first["A"]["engage"] == 1
  assert first["A"]["clickout"] == 1
  assert first["A"]["hist_interacted"] == 0  # its image interaction is inside this window
  assert first["A"]["hist_interaction_count"] == 0

  second = _by_item(second_list)
  assert second["B"]["engage"] == 1
  assert second["B"]["clickout"] == 0
  assert second["B"]["hist_interacted"] == 0
  assert second["B"]["hist_interaction_count"] == 0
  assert second["C"]["engage"] == 1
  assert second["C"]["clickout"] == 1
  assert second["C"]["hist_interacted"] == 0
  assert second["A"]["engage"] == 0
  assert second["A"]["hist_clickout"] == 1  # clicked out in the first window
  assert second["A"]["hist_interacted"] == 1
  assert second["A"]["hist_interaction_count"] == 1
  assert second["A"]["hist_impressed"] == 1
  assert second["D"]["hist_impressed"] == 0


@pytest.mark.parametrize(
  "other_window",
  [
    [],
    [_action(0, "interaction item deals", "D"), _action(0, "interaction item deals", "D")],
    [
      _action(0, "filter selection", "Breakfast Included"),
      _action(0, "interaction item rating", "A"),
    ],
  ],
)
def test_in_window_actions_never_change_features(other_window):
  window = [_action(0, "interaction item info", "B"), _action(0, "search for item", "C")]
  _, reference = _lists(_hand_built_session(window))
  _, changed = _lists(_hand_built_session(other_window))
  assert _features_without_labels(changed) == _features_without_labels(reference)


def test_actions_before_window_change_features():
  window = [_action(0, "interaction item info", "B")]
  session = _hand_built_session(window)
  _, reference = _lists(session)
  _, without_first_interaction = _lists(session[1:])
  assert _features_without_labels(without_first_interaction) != _features_without_labels(reference)


def test_real_sessions_features_ignore_window(actions):
  """Replace each window's non-clickout actions on real sessions; that list's features stay."""
  checked = 0
  for _, session in trivago.group_sessions(actions.to_dict("records")):
    clickout_positions = [
      index
      for index, action in enumerate(session)
      if action["action_type"] == trivago.CLICKOUT_ACTION
    ]
    if len(clickout_positions) < 2:
      continue
    reference_lists = _lists(session)
    window_start = 0
    for list_index, clickout_position in enumerate(clickout_positions):
      window = session[window_start:clickout_position]
      window_start = clickout_position + 1
      if not window or isinstance(reference_lists[list_index], trivago.SkippedList):
        continue
      last_item = trivago.split_field(session[clickout_position]["impressions"])[-1]
      replacement = [
        dict(action, action_type="interaction item image", reference=last_item) for action in window
      ]
      changed = (
        session[: clickout_position - len(window)] + replacement + session[clickout_position:]
      )
      changed_list = _lists(changed)[list_index]
      assert _features_without_labels(changed_list) == _features_without_labels(
        reference_lists[list_index]
      )
      checked += 1
    if checked >= 300:
      break
  assert checked >= 300


# ---------------------------------------------------------------------------------------------
# Rows that break the format.


def test_unusual_clickouts_are_counted(tmp_path):
  session = [
    _action(1, "clickout item", "A", None, None),
    _action(2, "clickout item", "A", "A|B", "10"),
    _action(3, "clickout item", "A", "A|B", "10|abc"),
    _action(4, "clickout item", "Z", "A|B", "10|20"),
    _action(5, "clickout item", "B", "A|B", "10|20"),
  ]
  path = str(tmp_path / "unusual.parquet")
  pd.DataFrame(session).to_parquet(path)
  stats = trivago.convert(path, str(tmp_path / "out"), eval_fraction=0.0)

  assert stats["counters"]["skipped_empty_impressions"] == 1
  assert stats["counters"]["skipped_price_count_mismatch"] == 1
  assert stats["counters"]["skipped_invalid_price"] == 1
  assert stats["counters"]["reference_not_in_impressions"] == 1
  assert stats["splits"]["train"]["lists"] == 2
  assert stats["splits"]["train"]["positives"]["clickout"] == 1


def test_skipped_clickout_still_ends_window():
  session = [
    _action(1, "interaction item image", "B"),
    _action(2, "clickout item", "B", "A|B", "10"),  # skipped: one price for two items
    _action(3, "clickout item", "A", "A|B", "10|20"),
  ]
  skipped, next_list = _lists(session)
  assert isinstance(skipped, trivago.SkippedList)
  items = _by_item(next_list)
  assert items["B"]["engage"] == 0
  assert items["B"]["hist_interacted"] == 1
  assert items["B"]["hist_clickout"] == 1


def test_missing_column_names_file(tmp_path):
  path = str(tmp_path / "bad.parquet")
  pd.DataFrame({"session_id": ["s"], "step": [1]}).to_parquet(path)
  with pytest.raises(ValueError, match="bad.parquet: missing columns .*'impressions'"):
    trivago.convert(path, str(tmp_path / "out"))
