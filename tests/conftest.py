"""Shared pytest set-up: make tests/ importable and keep TensorFlow's logs short."""

import glob
import json
import os
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(__file__))


# Fixtures for the pipelines tests. TensorFlow is imported inside the helpers, so collecting
# other tests does not pay for it.


def _read_split(output_dir: str, split: str) -> list:
  """Return every serialized record of output_dir/split/*.tfrecord, read with tf.data."""
  import tensorflow as tf

  paths = sorted(glob.glob(os.path.join(output_dir, split, "*.tfrecord")))
  if not paths:
    return []
  return [record.numpy() for record in tf.data.TFRecordDataset(paths)]


def _parse_with_spec(serialized: list, spec_path: str) -> dict:
  """Parse serialized ELWC records with tfr.data.parse_from_example_list and a feature spec.

  Returns:
    {name: tensor}: context features [batch_size, 1] (a SparseTensor for multivalent ones),
    example features and labels [batch_size, list_size, 1] with labels -1 on padded items,
    and "list_size_actual" [batch_size].
  """
  import tensorflow as tf
  import tensorflow_ranking as tfr

  tf_dtypes = {"string": tf.string, "int64": tf.int64, "float": tf.float32}
  padding_label = -1  # label of padded items and of missing labels, as in the feature spec

  def default_value(feature):
    if "default" in feature:
      return feature["default"]
    if feature["type"] == "numeric":
      return 0.0 if feature["dtype"] == "float" else 0
    return "" if feature["dtype"] == "string" else -1

  def parsing_spec(feature):
    dtype = tf_dtypes[feature["dtype"]]
    if feature.get("multivalent"):
      return tf.io.VarLenFeature(dtype)
    return tf.io.FixedLenFeature([1], dtype, default_value=default_value(feature))

  with open(spec_path) as spec_file:
    spec = json.load(spec_file)
  context_spec = {feature["name"]: parsing_spec(feature) for feature in spec["context_features"]}
  example_spec = {feature["name"]: parsing_spec(feature) for feature in spec["example_features"]}
  for task in spec["tasks"]:
    example_spec[task] = tf.io.FixedLenFeature([1], tf.int64, default_value=padding_label)
  return tfr.data.parse_from_example_list(
    tf.constant(serialized),
    list_size=spec["list_size"],
    context_feature_spec=context_spec,
    example_feature_spec=example_spec,
    size_feature_name="list_size_actual",
  )


@pytest.fixture(scope="session")
def read_split():
  """Function (output_dir, split) -> list of the serialized records of that split."""
  return _read_split


@pytest.fixture(scope="session")
def parse_with_spec():
  """Function (serialized records, feature spec path) -> parsed feature tensors."""
  return _parse_with_spec
