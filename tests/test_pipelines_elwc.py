"""Tests of pipelines.elwc: record building, the vectorized encoder, splits and the writer."""

import json
import os

import numpy as np
import pytest
from tensorflow_serving.apis import input_pb2

from pipelines import elwc

DTYPES = {
  "price": elwc.FLOAT,
  "original_rank": elwc.INT64,
  "click": elwc.INT64,
  "offset": elwc.INT64,
  "Zeta": elwc.FLOAT,
  "a": elwc.INT64,
  "a_b": elwc.FLOAT,
  "region": elwc.STRING,
}
EXAMPLE_NAMES = ("price", "original_rank", "click", "offset", "Zeta", "a", "a_b")


def _random_columns(num_rows: int, seed: int) -> dict:
  rng = np.random.default_rng(seed)
  return {
    "price": rng.random(num_rows) * 1000,
    "original_rank": rng.integers(1, 400, num_rows),  # one- and two-byte varints
    "click": rng.integers(0, 2, num_rows),
    "offset": rng.integers(-3, 3, num_rows),  # negative values are ten-byte varints
    "Zeta": rng.standard_normal(num_rows),
    "a": rng.integers(0, 2**40, num_rows),
    "a_b": rng.random(num_rows),
  }


def test_encode_example_entries_matches_protobuf():
  list_size = 7
  columns = _random_columns(list_size * 30, seed=0)
  entries = elwc.encode_example_entries(columns, DTYPES)
  context = {"region": "R01", "a": 5}
  context_entry = elwc.encode_context_entry(elwc.make_example(context, DTYPES))

  for list_index in range(30):
    rows = range(list_index * list_size, (list_index + 1) * list_size)
    examples = [{name: columns[name][row] for name in EXAMPLE_NAMES} for row in rows]
    record = elwc.ListRecord("id", "R01", context, examples)
    expected = elwc.serialize(elwc.make_example_list(record, DTYPES))
    fast = b"".join(entries[row] for row in rows) + context_entry
    assert fast == expected, f"list {list_index} differs from protobuf's serialization"


def test_encode_example_entries_parses_back():
  columns = _random_columns(5, seed=1)
  entries = elwc.encode_example_entries(columns, DTYPES)
  parsed = input_pb2.ExampleListWithContext.FromString(b"".join(entries))
  assert len(parsed.examples) == 5
  for row, example in enumerate(parsed.examples):
    feature = example.features.feature
    assert feature["offset"].int64_list.value[0] == columns["offset"][row]
    assert feature["a"].int64_list.value[0] == columns["a"][row]
    assert feature["price"].float_list.value[0] == pytest.approx(columns["price"][row], rel=1e-6)


def test_encode_example_entries_rejects_strings():
  with pytest.raises(ValueError, match="'region'.*make_example_list"):
    elwc.encode_example_entries({"region": np.array(["R01"])}, DTYPES)


def test_make_example_rejects_undeclared_feature():
  with pytest.raises(ValueError, match="'unknown' has no dtype"):
    elwc.make_example({"unknown": 1.0}, DTYPES)


def test_make_example_skips_none_and_keeps_empty_list():
  example = elwc.make_example({"price": None, "region": []}, DTYPES)
  assert "price" not in example.features.feature
  assert "region" in example.features.feature
  assert len(example.features.feature["region"].bytes_list.value) == 0


@pytest.mark.parametrize(
  "num_groups, fraction, expected",
  [
    (10, 0.0, 0),
    (10, 1.0, 10),
    (10, 0.2, 2),
    (10, 0.25, 3),
    (10, 0.24, 2),
    (3, 0.5, 2),
    (0, 0.5, 0),
  ],
)
def test_num_eval_groups_rounds(num_groups, fraction, expected):
  assert elwc.num_eval_groups(num_groups, fraction) == expected


def test_assign_splits_puts_newest_in_eval():
  splits = elwc.assign_splits(["oldest", "middle", "newer", "newest"], 0.5)
  assert splits == {"oldest": "train", "middle": "train", "newer": "eval", "newest": "eval"}


@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan")])
def test_validate_eval_fraction_rejects(fraction):
  with pytest.raises(ValueError, match="eval_fraction must be in \\[0, 1\\]"):
    elwc.validate_eval_fraction(fraction)


def _write_lists(output_dir, splits, num_shards=2, overwrite=False):
  with elwc.DatasetWriter(
    output_dir, ["click"], num_shards=num_shards, overwrite=overwrite
  ) as writer:
    for index, split in enumerate(splits):
      writer.write(split, f"list-{index}".encode(), "R01", {"click": [1, 0]})
    return writer.commit({"dataset": "test"})


def test_writer_round_robin_and_stats(tmp_path, read_split):
  output_dir = str(tmp_path / "out")
  stats = _write_lists(output_dir, ["train", "train", "train", "eval"])

  assert sorted(read_split(output_dir, "train")) == [b"list-0", b"list-1", b"list-2"]
  assert read_split(output_dir, "eval") == [b"list-3"]
  assert stats["splits"]["train"]["lists"] == 3
  assert stats["splits"]["train"]["items"] == 6
  assert stats["splits"]["train"]["positives"] == {"click": 3}
  assert stats["splits"]["eval"]["lists_per_region"] == {"R01": 1}
  with open(os.path.join(output_dir, "stats.json")) as stats_file:
    assert json.load(stats_file) == stats


def test_writer_empty_split_has_empty_shards(tmp_path, read_split):
  output_dir = str(tmp_path / "out")
  _write_lists(output_dir, ["train", "train"], num_shards=3)

  eval_files = sorted(os.listdir(os.path.join(output_dir, "eval")))
  assert eval_files == [elwc.shard_filename(shard, 3) for shard in range(3)]
  for name in eval_files:
    assert os.path.getsize(os.path.join(output_dir, "eval", name)) == 0
  assert read_split(output_dir, "eval") == []


def test_writer_exception_leaves_nothing(tmp_path):
  output_dir = tmp_path / "out"
  with pytest.raises(RuntimeError, match="interrupted"):
    with elwc.DatasetWriter(str(output_dir), ["click"]) as writer:
      writer.write("train", b"list", "R01", {"click": [1]})
      raise RuntimeError("interrupted")
  assert not output_dir.exists()
  assert os.listdir(tmp_path) == []


def test_writer_rejects_existing_output(tmp_path):
  output_dir = str(tmp_path / "out")
  _write_lists(output_dir, ["train"])
  with pytest.raises(FileExistsError, match="--overwrite"):
    _write_lists(output_dir, ["eval"])


def test_writer_overwrite_replaces_output(tmp_path, read_split):
  output_dir = str(tmp_path / "out")
  _write_lists(output_dir, ["train"])
  _write_lists(output_dir, ["eval", "eval"], overwrite=True)
  assert read_split(output_dir, "train") == []
  assert len(read_split(output_dir, "eval")) == 2
  assert sorted(os.listdir(tmp_path)) == ["out"]


def test_split_stats_counts_funnel_violations():
  stats = elwc.SplitStats(["click", "purchase"])
  stats.add("US", {"click": [1, 0, 0], "purchase": [1, 1, 0]})
  stats.add_batch(
    ["US", "NL"], {"click": np.array([[0, 1], [1, 1]]), "purchase": np.array([[1, 0], [0, 0]])}
  )
  result = stats.to_dict()
  assert result["funnel_violations"] == 2
  assert result["lists"] == 3
  assert result["items"] == 7
  assert result["max_items"] == 3
  assert result["positives"] == {"click": 4, "purchase": 3}
  assert result["lists_with_positive"] == {"click": 3, "purchase": 2}
  assert result["lists_per_region"] == {"NL": 1, "US": 2}
