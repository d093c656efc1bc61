"""ELWC parsing: padding, truncation, label defaults and the item mask."""

import numpy as np
import tensorflow as tf

from seqmd_tf import data as data_lib
from elwc_fixtures import fixture_spec, make_elwc, random_records, write_records


def _parse(records, list_size=None):
  return data_lib.parse_elwc(tf.constant(records), fixture_spec(), list_size)


def test_short_list_padded_with_label_minus_one():
  record = make_elwc("US", 3, ["wifi"], [10.0, 20.0], [0.1, 0.2], ["a", "b"], [1, 0], [0, 0])
  features, labels = _parse([record])
  assert features["price"].shape == (1, 6, 1)
  np.testing.assert_array_equal(features[data_lib.MASK_FEATURE].numpy()[0],
                                [True, True, False, False, False, False])
  np.testing.assert_array_equal(labels["click"].numpy()[0], [1, 0, -1, -1, -1, -1])


def test_long_list_truncated_to_first_items():
  size = 9
  record = make_elwc("US", 3, [], np.arange(1, size + 1, dtype=float), np.zeros(size),
                     [f"i{i}" for i in range(size)], [0] * 8 + [1], [0] * size)
  features, labels = _parse([record], list_size=4)
  np.testing.assert_allclose(features["price"].numpy()[0, :, 0], [1, 2, 3, 4])
  assert bool(tf.reduce_all(features[data_lib.MASK_FEATURE]))
  # The only click was at position 9, beyond the cut: the list keeps no positive.
  np.testing.assert_array_equal(labels["click"].numpy()[0], [0, 0, 0, 0])


def test_missing_label_is_minus_one():
  record = make_elwc("US", 3, [], [10.0, 20.0], [0.1, 0.2], ["a", "b"], [1, None], [None, None])
  _, labels = _parse([record])
  np.testing.assert_array_equal(labels["click"].numpy()[0, :2], [1, -1])
  np.testing.assert_array_equal(labels["purchase"].numpy()[0, :2], [-1, -1])


def test_multivalent_context_is_dense():
  records = [make_elwc("US", 3, ["wifi", "pool"], [1.0], [0.0], ["a"], [0], [0]),
             make_elwc("DE", 4, [], [1.0], [0.0], ["a"], [0], [0])]
  features, _ = _parse(records)
  assert features["filters"].dtype == tf.string
  assert [v.decode() for v in features["filters"].numpy()[0]] == ["wifi", "pool"]
  assert [v.decode() for v in features["filters"].numpy()[1]] == ["", ""]


def test_dataset_reads_all_lists(tmp_path):
  write_records(str(tmp_path / "a.tfrecord"), random_records(10, seed=1))
  write_records(str(tmp_path / "b.tfrecord"), random_records(7, seed=2))
  dataset = data_lib.make_dataset(str(tmp_path / "*.tfrecord"), fixture_spec(), batch_size=4)
  total = sum(int(features["price"].shape[0]) for features, _ in dataset)
  assert total == 17


def test_no_matching_files_names_flag(tmp_path):
  try:
    data_lib.list_files(str(tmp_path / "none-*.tfrecord"), "--train_files")
  except data_lib.InputFilesError as error:
    assert "--train_files" in str(error)
    assert "matched no file" in str(error)
  else:
    raise AssertionError("expected InputFilesError")
