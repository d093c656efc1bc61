"""tf.data input: sharded ELWC TFRecords -> padded feature and label tensors.

The same parsing function, `parse_elwc`, is used by training, evaluation and the exported
serving signature, so the three cannot disagree on defaults, padding or truncation.
"""

import glob
import os
from typing import Dict, List, Optional, Tuple

import tensorflow as tf
import tensorflow_ranking as tfr

from seqmd_tf.feature_spec import Feature, FeatureSpec
from seqmd_tf.losses import PADDING_LABEL  # noqa: F401  (re-exported for callers of data)

# Boolean [batch_size, list_size] feature that marks real (non-padding) items.
MASK_FEATURE = "example_list_mask"

_TF_DTYPES = {"string": tf.string, "int64": tf.int64, "float": tf.float32}


class InputFilesError(ValueError):
  """A file pattern given on the command line matched no file."""


def feature_parsing_spec(feature: Feature) -> tf.io.FixedLenFeature:
  """Return the tf.io parsing spec of one feature, with its spec default for missing values."""
  dtype = _TF_DTYPES[feature.dtype]
  if feature.multivalent:
    return tf.io.VarLenFeature(dtype)
  return tf.io.FixedLenFeature([1], dtype, default_value=feature.default_value)


def context_parsing_spec(spec: FeatureSpec) -> Dict[str, tf.io.FixedLenFeature]:
  return {f.name: feature_parsing_spec(f) for f in spec.context_features}


def example_parsing_spec(spec: FeatureSpec, with_labels: bool) -> Dict[str, tf.io.FixedLenFeature]:
  parsing = {f.name: feature_parsing_spec(f) for f in spec.example_features}
  if with_labels:
    for task in spec.tasks:
      parsing[task] = tf.io.FixedLenFeature([1], tf.int64, default_value=PADDING_LABEL)
  return parsing


def parse_elwc(serialized: tf.Tensor, spec: FeatureSpec, list_size: Optional[int] = None,
               with_labels: bool = True) -> Tuple[Dict[str, tf.Tensor], Dict[str, tf.Tensor]]:
  """Parse a batch of serialized ELWC protos into model features and labels.

  Lists longer than `list_size` are truncated to their first `list_size` items (the items the
  original ranker put first); shorter lists are padded with items whose labels are PADDING_LABEL.

  Args:
    serialized: [batch_size] tf.string of serialized ExampleListWithContext protos.
    spec: the dataset's feature spec.
    list_size: items per list after padding/truncation; defaults to `spec.list_size`.
    with_labels: also parse the task labels (False for serving requests).

  Returns:
    features: context features [batch_size, 1] (multivalent: dense [batch_size, n] padded with
      "" or -1), example features [batch_size, list_size, 1], and MASK_FEATURE
      [batch_size, list_size] tf.bool.
    labels: {task: [batch_size, list_size] tf.float32} in funnel order, PADDING_LABEL where the
      item is padding or the label is missing; empty when `with_labels` is False.
  """
  list_size = list_size or spec.list_size
  parsed = tfr.data.parse_from_example_list(
      serialized,
      list_size=list_size,
      context_feature_spec=context_parsing_spec(spec),
      example_feature_spec=example_parsing_spec(spec, with_labels),
      mask_feature_name=MASK_FEATURE)

  features = {MASK_FEATURE: parsed[MASK_FEATURE]}
  for feature in spec.features:
    value = parsed[feature.name]
    if isinstance(value, tf.sparse.SparseTensor):
      value = tf.sparse.to_dense(value, default_value=feature.default_value)
    features[feature.name] = value

  labels = {}
  if with_labels:
    for task in spec.tasks:
      label = tf.cast(tf.squeeze(parsed[task], axis=-1), tf.float32)
      # A label outside the mask is padding whatever the record held.
      labels[task] = tf.where(parsed[MASK_FEATURE], label, float(PADDING_LABEL))
  return features, labels


def list_files(pattern: str, flag_name: str = "--files") -> List[str]:
  """Expand a comma-separated list of globs; raise InputFilesError naming the flag if empty."""
  files = []
  for part in pattern.split(","):
    part = part.strip()
    if part:
      files.extend(sorted(glob.glob(os.path.expanduser(part))))
  files = [f for f in files if os.path.isfile(f)]
  if not files:
    raise InputFilesError(
        f"{flag_name}={pattern!r} matched no file; pass a glob of ELWC TFRecord files such as "
        "runs/demo/data/train/*.tfrecord (convert raw data first with python -m pipelines.<dataset>)")
  return files


def make_dataset(file_pattern: str, spec: FeatureSpec, batch_size: int,
                 list_size: Optional[int] = None, shuffle: bool = False, repeat: bool = False,
                 seed: Optional[int] = None, shuffle_buffer_size: int = 10_000,
                 flag_name: str = "--files", input_context=None) -> tf.data.Dataset:
  """Build a dataset of (features, labels) batches from sharded ELWC TFRecord files.

  Files are read with a parallel interleave; records are batched before parsing so that one
  vectorized parse handles the whole batch.
  """
  files = list_files(file_pattern, flag_name)
  dataset = tf.data.Dataset.from_tensor_slices(files)
  if input_context is not None and input_context.num_input_pipelines > 1:
    dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
  if shuffle:
    dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
  dataset = dataset.interleave(
      tf.data.TFRecordDataset, cycle_length=min(len(files), 4),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=not shuffle or seed is not None)
  if shuffle:
    dataset = dataset.shuffle(shuffle_buffer_size, seed=seed, reshuffle_each_iteration=True)
  if repeat:
    dataset = dataset.repeat()
  dataset = dataset.batch(batch_size)
  dataset = dataset.map(lambda s: parse_elwc(s, spec, list_size),
                        num_parallel_calls=tf.data.AUTOTUNE)
  return dataset.prefetch(tf.data.AUTOTUNE)
