"""tf.data input: sharded ELWC TFRecords -> padded feature and label tensors.

The same parsing function, `parse_elwc`, is used by training, evaluation and the exported
serving signature, so the three cannot disagree on defaults, padding or truncation.
"""

import glob
import os
from typing import Dict, List, Optional, Tuple, Union

import tensorflow as tf
import tensorflow_ranking as tfr
from absl import logging
from google.protobuf import descriptor_pb2
from tensorflow.core.example import example_pb2
from tensorflow.core.example import feature_pb2
from tensorflow_serving.apis import input_pb2

from seqmd_tf.feature_spec import Feature, FeatureSpec
from seqmd_tf.losses import PADDING_LABEL  # noqa: F401  (re-exported for callers of data)

# Boolean [batch_size, list_size] feature that marks real (non-padding) items.
MASK_FEATURE = "example_list_mask"

_TF_DTYPES = {"string": tf.string, "int64": tf.int64, "float": tf.float32}

# Seeds of successive passes over the training files differ by this prime, so every pass has its
# own shuffle order and a restarted run rebuilds the order of any pass from the seed alone.
_PASS_SEED_STRIDE = 1_000_003

_ELWC_MESSAGE = "tensorflow.serving.ExampleListWithContext"


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
    features: context features [batch_size, 1] (multivalent: dense [batch_size, n] with n >= 1,
      padded with "" or -1), example features [batch_size, list_size, 1], and MASK_FEATURE
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
      value = _at_least_one_column(
          tf.sparse.to_dense(value, default_value=feature.default_value), feature.default_value)
    features[feature.name] = value

  labels = {}
  if with_labels:
    for task in spec.tasks:
      label = tf.cast(tf.squeeze(parsed[task], axis=-1), tf.float32)
      # A label outside the mask is padding whatever the record held.
      labels[task] = tf.where(parsed[MASK_FEATURE], label, float(PADDING_LABEL))
  return features, labels


def _at_least_one_column(value: tf.Tensor, default_value) -> tf.Tensor:
  """Pad a dense multivalent feature [batch_size, n] to n >= 1 columns with its default.

  When no list of a batch holds a value, n is 0, and the encoder's multi-hot (a max over that
  axis) would return -inf and turn every score of the batch into NaN. A default value encodes
  as "no value", which is what the lists hold.
  """
  missing = tf.maximum(1 - tf.shape(value)[1], 0)
  return tf.pad(value, [[0, 0], [0, missing]], constant_values=default_value)


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
                 flag_name: str = "--files", input_context=None, *, start_batch: int = 0,
                 skip_bad_records: bool = False,
                 bad_records: Optional["BadRecordCounter"] = None,
                 cache: Union[bool, str] = False) -> tf.data.Dataset:
  """Build a dataset of (features, labels) batches from sharded ELWC TFRecord files.

  Files are read with a parallel interleave; records are batched before parsing so that one
  vectorized parse handles the whole batch.

  With `repeat`, the dataset is an endless sequence of passes over the files. Pass p is
  shuffled with the seed `seed * _PASS_SEED_STRIDE + p` and batched on its own, so with an
  integer `seed` the sequence of batches depends only on the files, `batch_size` and `seed`.
  `start_batch` skips the first batches of that sequence: a run resumed from a checkpoint
  taken after N batches passes N and trains on the batches the interrupted run had not reached.

  With `skip_bad_records`, records that break an error rule of `seqmd_tf.validation` are
  dropped (`drop_bad_records`, counted in `bad_records` when given), and a file whose TFRecord
  framing is corrupt is read up to the corrupt record.

  `cache` keeps the parsed batches of the first pass: True in memory, a string as tf.data cache
  files with that path prefix. Later passes then reuse those batches without reading or parsing,
  `shuffle` reorders whole batches (a buffer of shuffle_buffer_size // batch_size batches), and
  the last batch of each pass can be smaller. Use it when the parsed data fit in memory or on
  local disk. False (the default) reads and parses every pass.
  """
  files = list_files(file_pattern, flag_name)
  file_dataset = tf.data.Dataset.from_tensor_slices(files)
  if input_context is not None and input_context.num_input_pipelines > 1:
    file_dataset = file_dataset.shard(input_context.num_input_pipelines,
                                      input_context.input_pipeline_id)

  def read_file(path):
    records = tf.data.TFRecordDataset(path)
    return records.ignore_errors() if skip_bad_records else records

  def one_pass(pass_index):
    pass_seed = seed
    if repeat and seed is not None:
      pass_seed = tf.cast(seed, tf.int64) * _PASS_SEED_STRIDE + pass_index
    dataset = file_dataset
    if shuffle:
      dataset = dataset.shuffle(len(files), seed=pass_seed, reshuffle_each_iteration=True)
    dataset = dataset.interleave(
        read_file, cycle_length=min(len(files), 4),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=not shuffle or seed is not None)
    if skip_bad_records:
      dataset = drop_bad_records(dataset, spec, bad_records)
    if shuffle:
      dataset = dataset.shuffle(shuffle_buffer_size, seed=pass_seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size)

  if repeat and cache is False:
    dataset = tf.data.Dataset.counter().flat_map(one_pass)
  else:
    dataset = one_pass(tf.constant(0, tf.int64))
  if start_batch and cache is False:
    dataset = dataset.skip(start_batch)
  dataset = dataset.map(lambda s: parse_elwc(s, spec, list_size),
                        num_parallel_calls=tf.data.AUTOTUNE)
  if cache is not False:
    dataset = _reuse_parsed_batches(dataset, cache, shuffle, repeat, seed,
                                    max(1, shuffle_buffer_size // batch_size))
    if start_batch:
      dataset = dataset.skip(start_batch)
  return dataset.prefetch(tf.data.AUTOTUNE)


def _reuse_parsed_batches(dataset: tf.data.Dataset, cache: Union[bool, str], shuffle: bool,
                          repeat: bool, seed: Optional[int],
                          shuffle_buffer_batches: int) -> tf.data.Dataset:
  """Cache one pass of parsed batches, then shuffle whole batches and repeat as requested."""
  dataset = dataset.cache("" if cache is True else cache)
  if shuffle:
    dataset = dataset.shuffle(shuffle_buffer_batches, seed=seed, reshuffle_each_iteration=True)
  if repeat:
    dataset = dataset.repeat()
  return dataset


def count_records(files: List[str], spec: Optional[FeatureSpec] = None,
                  bad_records: Optional["BadRecordCounter"] = None) -> int:
  """Return the number of records in TFRecord `files` that training reads.

  Without `spec`, every record counts, and a truncated or corrupt file raises
  tf.errors.DataLossError. With `spec` (--skip_bad_records), a corrupt file counts the records
  before its corrupt part, which is all that training reads of it, and a warning names the
  file; records that `drop_bad_records` drops do not count, and `bad_records` counts them.
  """
  def count(records):
    return int(records.reduce(tf.constant(0, tf.int64), lambda total, _: total + 1))

  total = 0
  for path in files:
    if spec is None:
      total += count(tf.data.TFRecordDataset(path))
      continue
    try:
      count(tf.data.TFRecordDataset(path))
    except tf.errors.DataLossError as error:
      logging.warning("%s is corrupt after its first %d records (%s); --skip_bad_records "
                      "skips the rest of the file", path,
                      count(tf.data.TFRecordDataset(path).ignore_errors()),
                      str(error.message).splitlines()[0])
    readable = tf.data.TFRecordDataset(path).ignore_errors()
    total += count(drop_bad_records(readable, spec, bad_records))
  return total


# ------------------------------------------------------------------------------------------------
# Bad records: the error rules of seqmd_tf.validation as TensorFlow ops, for --skip_bad_records.


class BadRecordCounter:
  """Records read and kept by `drop_bad_records`, as int64 variables updated by tf.data."""

  def __init__(self, name: str):
    self.name = name
    self.read = tf.Variable(0, dtype=tf.int64, trainable=False, name=f"{name}_records_read")
    self.kept = tf.Variable(0, dtype=tf.int64, trainable=False, name=f"{name}_records_kept")

  @property
  def skipped(self) -> int:
    return int(self.read.numpy()) - int(self.kept.numpy())

  def count_read(self, serialized: tf.Tensor) -> tf.Tensor:
    with tf.control_dependencies([self.read.assign_add(1)]):
      return tf.identity(serialized)

  def count_kept(self, serialized: tf.Tensor) -> tf.Tensor:
    with tf.control_dependencies([self.kept.assign_add(1)]):
      return tf.identity(serialized)


def drop_bad_records(records: tf.data.Dataset, spec: FeatureSpec,
                     counter: Optional[BadRecordCounter] = None) -> tf.data.Dataset:
  """Drop the serialized ELWC records that `is_valid_record` rejects or cannot parse.

  Records that TensorFlow cannot parse make `is_valid_record` raise; `ignore_errors` drops
  them. `counter` counts the records read and kept; the difference is the number skipped.
  """
  def with_validity(serialized):
    return serialized, is_valid_record(serialized, spec)

  def is_valid(unused_serialized, valid):
    return valid

  def record_only(serialized, unused_valid):
    return serialized

  if counter is not None:
    records = records.map(counter.count_read)
  checked = records.map(with_validity).ignore_errors()
  records = checked.filter(is_valid).map(record_only)
  if counter is not None:
    records = records.map(counter.count_kept)
  return records


def _elwc_descriptor_source() -> bytes:
  """Return the ExampleListWithContext proto descriptors in the form tf.io.decode_proto reads."""
  descriptors = descriptor_pb2.FileDescriptorSet()
  for module in (feature_pb2, example_pb2, input_pb2):
    module.DESCRIPTOR.CopyToProto(descriptors.file.add())
  return b"bytes://" + descriptors.SerializeToString()


def _value_count(parsed: tf.sparse.SparseTensor) -> tf.Tensor:
  return tf.size(parsed.values, out_type=tf.int64)


def is_valid_record(serialized: tf.Tensor, spec: FeatureSpec) -> tf.Tensor:
  """Return a scalar tf.bool: False when one serialized ELWC breaks an error rule.

  The rules are those of `seqmd_tf.validation.check_record`. A record that TensorFlow cannot
  parse (not an ELWC proto, a value of another dtype than the spec's, a single-valued feature
  or label with 0 or 2+ values) makes this function raise InvalidArgumentError or
  DataLossError instead of returning False.

  Args:
    serialized: scalar tf.string, one serialized ExampleListWithContext.
    spec: the dataset's feature spec.
  """
  sizes, (context, examples) = tf.io.decode_proto(
      tf.reshape(serialized, [1]), _ELWC_MESSAGE, ["context", "examples"],
      [tf.string, tf.string], descriptor_source=_elwc_descriptor_source())
  num_items = tf.cast(sizes[0, 1], tf.int64)
  examples = examples[0, :sizes[0, 1]]
  context = tf.strings.reduce_join(context[0, :sizes[0, 0]])

  # Parsing with the training specs raises on the dtype and length errors. Parsing every
  # feature as VarLenFeature shows which features are present.
  context_values = tf.io.parse_single_example(context, context_parsing_spec(spec))
  item_values = tf.io.parse_example(examples, example_parsing_spec(spec, with_labels=True))
  context_present = tf.io.parse_single_example(
      context, {f.name: tf.io.VarLenFeature(_TF_DTYPES[f.dtype]) for f in spec.context_features})
  item_present = tf.io.parse_example(examples, {
      **{f.name: tf.io.VarLenFeature(_TF_DTYPES[f.dtype]) for f in spec.example_features},
      **{task: tf.io.VarLenFeature(tf.int64) for task in spec.tasks}})

  checks = [num_items > 0]
  num_present = tf.add_n([_value_count(v) for v in context_present.values()] +
                         [_value_count(v) for v in item_present.values()])
  checks.append(num_present > 0)
  for feature in spec.context_features:
    if feature.required:
      checks.append(_value_count(context_present[feature.name]) >= 1)
  for feature in spec.example_features:
    if feature.required:
      checks.append(_value_count(item_present[feature.name]) == num_items)
  for feature in spec.features:
    if feature.dtype == "float":
      values = context_values if feature.is_context else item_values
      checks.append(tf.reduce_all(tf.math.is_finite(values[feature.name])))
  for task in spec.tasks:
    label = item_values[task]
    allowed = (label == PADDING_LABEL) | (label == 0) | (label == 1)
    checks.append(tf.reduce_all(allowed))
  return tf.reduce_all(tf.stack(checks))
