"""make_dataset's parsed-batch cache, and benchmarks/input_pipeline.py end to end (no timing checks)."""

import collections
import glob
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import input_pb2

from benchmarks import input_pipeline as benchmark
from elwc_fixtures import fixture_spec, random_records, write_records
from seqmd_tf import data as data_lib
from seqmd_tf.feature_spec import load_feature_spec

TRIVAGO_SPEC = os.path.join(os.path.dirname(__file__), "..", "configs", "trivago.json")
BATCH_SIZE = 8
NUM_LISTS = 44  # 5 full batches and one of 4 lists


@pytest.fixture(scope="module")
def pattern(tmp_path_factory):
  root = tmp_path_factory.mktemp("cache")
  write_records(str(root / "a.tfrecord"), random_records(NUM_LISTS // 2, seed=1))
  write_records(str(root / "b.tfrecord"), random_records(NUM_LISTS - NUM_LISTS // 2, seed=2))
  return str(root / "*.tfrecord")


def _list_keys(batch) -> list:
  """Return one hashable key per list of a batch: its item prices."""
  features, _ = batch
  return [tuple(row) for row in features["price"].numpy()[..., 0].round(4).tolist()]


def _batch_keys(batches) -> collections.Counter:
  return collections.Counter(tuple(_list_keys(batch)) for batch in batches)


def test_cache_keeps_batches_of_first_pass(pattern):
  spec = fixture_spec()
  plain = list(data_lib.make_dataset(pattern, spec, BATCH_SIZE))
  cached = data_lib.make_dataset(pattern, spec, BATCH_SIZE, cache=True)
  first_pass, second_pass = list(cached), list(cached)
  assert _batch_keys(first_pass) == _batch_keys(plain)
  assert _batch_keys(second_pass) == _batch_keys(plain)
  for plain_batch, cached_batch in zip(plain, first_pass):
    np.testing.assert_array_equal(plain_batch[1]["click"].numpy(), cached_batch[1]["click"].numpy())


def test_cache_repeat_reuses_batches(pattern):
  spec = fixture_spec()
  num_batches = -(-NUM_LISTS // BATCH_SIZE)
  dataset = data_lib.make_dataset(pattern, spec, BATCH_SIZE, shuffle=True, repeat=True, seed=3,
                                  cache=True)
  batches = list(dataset.take(3 * num_batches))
  passes = [batches[index * num_batches:(index + 1) * num_batches] for index in range(3)]
  first = _batch_keys(passes[0])
  assert sum(first.values()) == num_batches
  assert sum(len(batch) for batch in first) == NUM_LISTS
  assert _batch_keys(passes[1]) == first
  assert _batch_keys(passes[2]) == first


def test_cache_to_file_prefix(pattern, tmp_path):
  spec = fixture_spec()
  prefix = str(tmp_path / "parsed")
  dataset = data_lib.make_dataset(pattern, spec, BATCH_SIZE, cache=prefix)
  total = sum(int(features["price"].shape[0]) for features, _ in dataset)
  assert total == NUM_LISTS
  assert glob.glob(prefix + "*")


def test_generated_lists_match_trivago_spec(tmp_path):
  spec = load_feature_spec(TRIVAGO_SPEC)
  paths = benchmark.write_data(spec, str(tmp_path), num_lists=5, num_shards=2, seed=0)
  records = [record.numpy() for record in tf.data.TFRecordDataset(paths)]
  example_list = input_pb2.ExampleListWithContext.FromString(records[0])
  assert len(records) == 5
  assert len(example_list.examples) == benchmark.LIST_SIZE
  assert set(example_list.examples[0].features.feature) == (
      {feature.name for feature in spec.example_features} | set(spec.tasks))
  assert set(example_list.context.features.feature) <= {f.name for f in spec.context_features}
  features, labels = data_lib.parse_elwc(tf.constant(records), spec)
  assert bool(tf.reduce_all(features[data_lib.MASK_FEATURE]))
  assert labels["clickout"].numpy().sum(axis=1).tolist() == [1.0] * 5


def test_write_data_reuses_directory(tmp_path):
  spec = load_feature_spec(TRIVAGO_SPEC)
  paths = benchmark.write_data(spec, str(tmp_path), num_lists=3, num_shards=1, seed=0)
  before = os.path.getmtime(paths[0])
  again = benchmark.write_data(spec, str(tmp_path), num_lists=3, num_shards=1, seed=0)
  assert again == paths
  assert os.path.getmtime(paths[0]) == before


def test_benchmark_runs_every_measurement(tmp_path):
  spec = load_feature_spec(TRIVAGO_SPEC)
  results = benchmark.run_benchmark(spec, str(tmp_path), num_lists=96, num_shards=2,
                                    batch_size=8, steps=4, warmup_steps=2, rounds=2, seed=0)
  assert set(results["input_lists_per_s"]) == {"raw_read", "parse", "parse_cached"}
  assert set(results["train_lists_per_s"]) == {
      "seq_md", "seq_md_one_batch", "shared_bottom", benchmark.TFR_PEER}
  for rate in list(results["input_lists_per_s"].values()) + list(
      results["train_lists_per_s"].values()):
    assert rate > 0
  assert "| train step: tfr_dnn |" in benchmark.markdown(results)
