"""ExampleListWithContext (ELWC) records: building, wire encoding, time splits and sharded output.

Converters map the rows of one result list to a `ListRecord` with pure functions, turn it into
an ELWC with `make_example_list`, and pass the serialized bytes to a `DatasetWriter`. The writer
puts every list of a split into `num_shards` TFRecord files in a temporary directory next to
the output directory. It renames that directory into place only when all shards and
`stats.json` are complete, so an interrupted run never leaves a partial set of shards behind.

`encode_example_entries` is a vectorized encoder for large generated datasets: it produces the
same bytes as protobuf's deterministic serializer, which tests check.
"""

import collections
import dataclasses
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf
from absl import flags
from absl import logging
from tensorflow.core.example import example_pb2
from tensorflow.core.example import feature_pb2
from tensorflow_serving.apis import input_pb2

# Feature dtypes as named in the feature spec (docs/feature_spec.md).
STRING = "string"
INT64 = "int64"
FLOAT = "float"
DTYPES = (STRING, INT64, FLOAT)

TRAIN = "train"
EVAL = "eval"
SPLITS = (TRAIN, EVAL)

DEFAULT_EVAL_FRACTION = 0.2
DEFAULT_NUM_SHARDS = 2
DEFAULT_LOG_EVERY = 5000  # lists between two progress log lines
STATS_FILENAME = "stats.json"

# Context string feature with the source's id of the list (for example "srch_id=405"). It lets a
# report trace a list back to the raw log; no feature spec lists it, so it is never a model input.
LIST_ID_FEATURE = "list_id"


# Value types written as a list of values; anything else (str, bytes, numbers) is one value.
_SEQUENCE_TYPES = (list, tuple, np.ndarray)


@dataclasses.dataclass
class ListRecord:
  """One result list in plain Python values, ready to become an ELWC.

  `context` maps a feature name to one value or a list, tuple or array of values. Each entry
  of `examples` is one item in its original shown order and maps a feature name, including
  every task label, to values in the same way. A value of None leaves the feature out.
  """

  list_id: str
  region: str
  context: dict
  examples: list


def _fill_feature(feature: feature_pb2.Feature, name: str, values: Any, dtype: str) -> None:
  is_sequence = isinstance(values, _SEQUENCE_TYPES)
  if dtype == STRING:
    values = values if is_sequence else [values]
    feature.bytes_list.value.extend(
      [value.encode("utf-8") if isinstance(value, str) else bytes(value) for value in values]
    )
  elif dtype == INT64:
    if is_sequence:
      feature.int64_list.value.extend([int(value) for value in values])
    else:
      feature.int64_list.value.append(int(values))
  elif dtype == FLOAT:
    if is_sequence:
      feature.float_list.value.extend([float(value) for value in values])
    else:
      feature.float_list.value.append(float(values))
  else:
    raise ValueError(
      f"Feature {name!r} has dtype {dtype!r}; expected one of {DTYPES}. "
      "Fix the converter's dtype table."
    )


def make_example(features: Mapping[str, Any], dtypes: Mapping[str, str]) -> example_pb2.Example:
  """Build a tf.train.Example from a name -> values mapping; None values are left out."""
  example = example_pb2.Example()
  _fill_example(example, features, dtypes)
  return example


def _fill_example(
  example: example_pb2.Example, features: Mapping[str, Any], dtypes: Mapping[str, str]
) -> None:
  feature_map = example.features.feature
  for name, values in features.items():
    if values is None:
      continue
    if name not in dtypes:
      raise ValueError(
        f"Feature {name!r} has no dtype in the converter's dtype table; add it (one of {DTYPES})."
      )
    _fill_feature(feature_map[name], name, values, dtypes[name])


def make_example_list(
  record: ListRecord, dtypes: Mapping[str, str]
) -> input_pb2.ExampleListWithContext:
  """Build the ELWC of one list: `record.context` as context, one example per item in order."""
  example_list = input_pb2.ExampleListWithContext()
  _fill_example(example_list.context, record.context, dtypes)
  for item in record.examples:
    _fill_example(example_list.examples.add(), item, dtypes)
  return example_list


def serialize(message) -> bytes:
  """Serialize a proto with sorted map keys, so equal inputs give byte-identical records."""
  return message.SerializeToString(deterministic=True)


def labels_of(record: ListRecord, tasks: Sequence[str]) -> dict:
  """Return {task: [label of each item]} read from the record's examples."""
  return {task: [int(item[task]) for item in record.examples] for task in tasks}


# ----------------------------------------------------------------------------------------------
# Reading and checking raw tables.


def read_csv(path: str, **read_options) -> pd.DataFrame:
  """Read a CSV file with pandas; raise ValueError naming the file for an unusable file.

  Raises:
    ValueError: the file is empty, has a header but no data row, or is not valid UTF-8 (the
      message names the line and byte offset of the first invalid byte).
  """
  try:
    rows = pd.read_csv(path, **read_options)
  except pd.errors.EmptyDataError as error:
    raise ValueError(f"{path}: the file is empty; check --input.") from error
  except UnicodeDecodeError as error:
    with open(path, "rb") as raw_file:
      raw = raw_file.read()
    try:
      raw.decode("utf-8")
      start, reason = error.start, error.reason
    except UnicodeDecodeError as located:
      start, reason = located.start, located.reason
    line = raw.count(b"\n", 0, start) + 1
    raise ValueError(
      f"{path}: line {line} (data row {line - 1}) is not valid UTF-8: {reason} at byte "
      f"{start} of the file. Re-encode the file as UTF-8."
    ) from error
  if rows.empty:
    raise ValueError(f"{path}: the file has a header but no data row; check --input.")
  return rows


def check_numeric_columns(
  rows: pd.DataFrame, columns: Sequence[str], path: str, integer: bool, first_row: int = 0
) -> None:
  """Raise ValueError naming the first data row whose value in `columns` is not a number.

  Missing values pass; the converters have their own rules for them. With `integer`, a
  number with a fractional part is an error too. `first_row` is the 0-based index of the
  first of `rows` in the file, so a file read in chunks reports the row of the whole file.
  """
  kind = "an integer" if integer else "a number"
  for column in columns:
    values = rows[column]
    numbers = pd.to_numeric(values, errors="coerce")
    invalid = numbers.isna() & values.notna()
    if integer:
      invalid |= numbers.notna() & (numbers != np.floor(numbers))
    invalid = invalid.to_numpy()
    if invalid.any():
      row = int(np.flatnonzero(invalid)[0])
      raise ValueError(
        f"{path}: data row {first_row + row + 1} has {column}={values.iloc[row]!r}; "
        f"{column} must be {kind}. Fix or drop that row."
      )


# ----------------------------------------------------------------------------------------------
# Splits.


def validate_eval_fraction(eval_fraction: float) -> None:
  """Raise ValueError unless 0 <= eval_fraction <= 1."""
  if not 0.0 <= eval_fraction <= 1.0 or math.isnan(eval_fraction):
    raise ValueError(
      f"eval_fraction must be in [0, 1] (the share of lists written to the eval split); "
      f"received {eval_fraction!r}. Pass for example 0.2."
    )


def num_eval_groups(num_groups: int, eval_fraction: float) -> int:
  """Return how many of `num_groups` time-ordered groups go to eval: round(fraction * n).

  Halves round up, so 0 gives no eval group and 1 gives all of them.
  """
  validate_eval_fraction(eval_fraction)
  return min(num_groups, int(math.floor(eval_fraction * num_groups + 0.5)))


def assign_splits(keys_oldest_first: Sequence[Any], eval_fraction: float) -> dict:
  """Map each key to TRAIN or EVAL so that the newest `eval_fraction` of keys are EVAL.

  Args:
    keys_oldest_first: group keys (sessions, searches) sorted from oldest to newest start.
    eval_fraction: share of keys, in [0, 1], that go to EVAL.

  Returns:
    {key: TRAIN or EVAL}.
  """
  num_eval = num_eval_groups(len(keys_oldest_first), eval_fraction)
  first_eval = len(keys_oldest_first) - num_eval
  return {
    key: (EVAL if index >= first_eval else TRAIN) for index, key in enumerate(keys_oldest_first)
  }


# ----------------------------------------------------------------------------------------------
# Output.


def shard_filename(shard: int, num_shards: int) -> str:
  return f"part-{shard:05d}-of-{num_shards:05d}.tfrecord"


class SplitStats:
  """Counts of one split: lists, items, positives per task and lists per region."""

  def __init__(self, tasks: Sequence[str]):
    self.tasks = list(tasks)
    self.lists = 0
    self.items = 0
    self.max_items = 0
    self.positives = {task: 0 for task in self.tasks}
    self.lists_with_positive = {task: 0 for task in self.tasks}
    # Items labelled 1 for a task while 0 for the task before it in the funnel.
    self.funnel_violations = 0
    self.lists_per_region = {}

  def add(self, region: str, labels: Mapping[str, Sequence[int]]) -> None:
    """Count one list; `labels` maps every task to the 0/1 label of each item."""
    num_items = len(labels[self.tasks[0]])
    self.lists += 1
    self.items += num_items
    self.max_items = max(self.max_items, num_items)
    for task in self.tasks:
      num_positive = int(np.sum(labels[task]))
      self.positives[task] += num_positive
      self.lists_with_positive[task] += int(num_positive > 0)
    for earlier, later in zip(self.tasks, self.tasks[1:]):
      self.funnel_violations += int(
        np.sum(np.logical_and(np.asarray(labels[later]) > 0, np.asarray(labels[earlier]) <= 0))
      )
    self.lists_per_region[region] = self.lists_per_region.get(region, 0) + 1

  def add_batch(self, regions: Sequence[str], labels: Mapping[str, np.ndarray]) -> None:
    """Count lists of equal length; labels[task] has shape [num_lists, list_size], 0/1."""
    num_lists, list_size = np.shape(labels[self.tasks[0]])
    if num_lists == 0:
      return
    self.lists += num_lists
    self.items += num_lists * list_size
    self.max_items = max(self.max_items, list_size)
    for task in self.tasks:
      positives_per_list = np.sum(labels[task], axis=1)
      self.positives[task] += int(positives_per_list.sum())
      self.lists_with_positive[task] += int(np.count_nonzero(positives_per_list))
    for earlier, later in zip(self.tasks, self.tasks[1:]):
      self.funnel_violations += int(np.count_nonzero((labels[later] > 0) & (labels[earlier] <= 0)))
    for region, count in collections.Counter(regions).items():
      self.lists_per_region[region] = self.lists_per_region.get(region, 0) + count

  def to_dict(self) -> dict:
    return {
      "lists": self.lists,
      "items": self.items,
      "max_items": self.max_items,
      "positives": dict(self.positives),
      "lists_with_positive": dict(self.lists_with_positive),
      "funnel_violations": self.funnel_violations,
      "lists_per_region": dict(sorted(self.lists_per_region.items())),
    }


class DatasetWriter:
  """Write serialized ELWC records into train/eval shards, then move them into place at once.

  Usage:
    with DatasetWriter(output_dir, tasks, ...) as writer:
        writer.write(TRAIN, serialized, region, labels)
        writer.commit(metadata)

  Records of a split go to its shards round-robin, in the order they are written. Every split
  directory contains exactly `num_shards` files. A shard that receives no list is an empty
  (zero-byte, valid) TFRecord file, so a split with no lists has `num_shards` empty shards.
  Leaving the `with` block without `commit` (for example on an exception) deletes the
  temporary directory and leaves `output_dir` untouched.
  """

  def __init__(
    self,
    output_dir: str,
    tasks: Sequence[str],
    num_shards: int = DEFAULT_NUM_SHARDS,
    overwrite: bool = False,
    log_every: int = DEFAULT_LOG_EVERY,
    name: str = "",
  ):
    if num_shards < 1:
      raise ValueError(f"num_shards must be >= 1 (files per split); received {num_shards}.")
    self.output_dir = os.path.abspath(output_dir)
    check_output_dir(self.output_dir, overwrite)
    self.tasks = list(tasks)
    self.num_shards = num_shards
    self.log_every = max(1, log_every)
    self.name = name or os.path.basename(self.output_dir)
    self.stats = {split: SplitStats(tasks) for split in SPLITS}

    parent = os.path.dirname(self.output_dir)
    os.makedirs(parent, exist_ok=True)
    self._tmp_dir = make_temp_dir(parent, prefix=f".{os.path.basename(self.output_dir)}.tmp-")
    self._writers = {split: [] for split in SPLITS}
    self._committed = False
    self._closed = False
    try:
      for split in SPLITS:
        os.makedirs(os.path.join(self._tmp_dir, split))
        for shard in range(num_shards):
          path = os.path.join(self._tmp_dir, split, shard_filename(shard, num_shards))
          self._writers[split].append(tf.io.TFRecordWriter(path))
    except Exception:
      self.abort()
      raise
    logging.info("%s: writing to temporary directory %s", self.name, self._tmp_dir)

  def __enter__(self) -> "DatasetWriter":
    return self

  def __exit__(self, exc_type, exc_value, traceback) -> None:
    if not self._committed:
      self.abort()

  def write(
    self, split: str, serialized: bytes, region: str, labels: Mapping[str, Sequence[int]]
  ) -> None:
    """Append one serialized list to `split` and count it under `region`."""
    total_before = self._total_lists()
    split_stats = self.stats[split]
    self._writers[split][split_stats.lists % self.num_shards].write(serialized)
    split_stats.add(region, labels)
    self._log_progress(total_before)

  def write_batch(
    self,
    split: str,
    serialized: Sequence[bytes],
    regions: Sequence[str],
    labels: Mapping[str, np.ndarray],
  ) -> None:
    """Append lists of equal length to `split`; labels[task] has shape [num_lists, list_size]."""
    total_before = self._total_lists()
    split_stats = self.stats[split]
    writers = self._writers[split]
    for offset, record in enumerate(serialized):
      writers[(split_stats.lists + offset) % self.num_shards].write(record)
    split_stats.add_batch(regions, labels)
    self._log_progress(total_before)

  def _total_lists(self) -> int:
    return self.stats[TRAIN].lists + self.stats[EVAL].lists

  def _log_progress(self, total_before: int) -> None:
    total = self._total_lists()
    if total // self.log_every > total_before // self.log_every:
      logging.info(
        "%s: wrote %d lists (train %d, eval %d), %d items",
        self.name,
        total,
        self.stats[TRAIN].lists,
        self.stats[EVAL].lists,
        self.stats[TRAIN].items + self.stats[EVAL].items,
      )

  def split_stats(self) -> dict:
    """Return {split: counts} with the shard paths relative to the output directory."""
    result = {}
    for split in SPLITS:
      result[split] = self.stats[split].to_dict()
      result[split]["shards"] = [
        f"{split}/{shard_filename(shard, self.num_shards)}" for shard in range(self.num_shards)
      ]
    return result

  def commit(self, metadata: Mapping[str, Any]) -> dict:
    """Close the shards, write stats.json and rename the temporary directory to output_dir.

    Args:
      metadata: extra top-level entries of stats.json (input path, flags, counters).

    Returns:
      The stats dictionary written to stats.json.
    """
    self._close_writers()
    stats = dict(metadata)
    stats["tasks"] = self.tasks
    stats["splits"] = self.split_stats()
    with open(os.path.join(self._tmp_dir, STATS_FILENAME), "w") as stats_file:
      json.dump(stats, stats_file, indent=2, sort_keys=False)
      stats_file.write("\n")
    replace_directory(self._tmp_dir, self.output_dir)
    self._committed = True
    logging.info(
      "%s: wrote %d train and %d eval lists to %s",
      self.name,
      self.stats[TRAIN].lists,
      self.stats[EVAL].lists,
      self.output_dir,
    )
    return stats

  def abort(self) -> None:
    """Close the shards and delete the temporary directory; output_dir stays as it was."""
    self._close_writers()
    if os.path.isdir(self._tmp_dir):
      shutil.rmtree(self._tmp_dir, ignore_errors=True)
      logging.warning("%s: conversion did not finish; deleted %s", self.name, self._tmp_dir)

  def _close_writers(self) -> None:
    if self._closed:
      return
    for writers in self._writers.values():
      for writer in writers:
        writer.close()
    self._closed = True


def check_output_dir(output_dir: str, overwrite: bool) -> None:
  """Raise FileExistsError if output_dir is a file, or a non-empty directory without overwrite."""
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise FileExistsError(
      f"--output_dir {output_dir} exists and is not a directory; pass another path."
    )
  if os.path.isdir(output_dir) and os.listdir(output_dir) and not overwrite:
    raise FileExistsError(
      f"--output_dir {output_dir} exists and is not empty; pass --overwrite to replace it "
      "or choose a new directory."
    )


def make_temp_dir(parent: str, prefix: str) -> str:
  """Create a unique directory in `parent` with the permissions of a plain os.makedirs."""
  path = tempfile.mkdtemp(prefix=prefix, dir=parent)
  # mkdtemp creates mode 0o700; the renamed output should follow the user's umask instead.
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(path, 0o777 & ~umask)
  return path


def replace_directory(source: str, target: str) -> None:
  """Rename `source` to `target`; an existing `target` is moved aside first, then deleted."""
  old = None
  if os.path.exists(target):
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.old-", dir=os.path.dirname(target))
    os.rmdir(old)
    os.rename(target, old)
  os.rename(source, target)
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# Vectorized wire encoding. Field numbers and wire types come from tensorflow/core/example
# (Example.features = 1, Features.feature = 1 as a map, Feature.float_list = 2 and
# int64_list = 3, packed value = 1) and tensorflow_serving/apis/input.proto
# (ExampleListWithContext.examples = 1, context = 2).

_TAG_FIELD1_LEN = 0x0A  # field 1, wire type 2 (length-delimited)
_TAG_FIELD2_LEN = 0x12  # field 2, wire type 2
_TAG_FIELD3_LEN = 0x1A  # field 3, wire type 2
_FLOAT_BYTES = 4


def _varint(value: int) -> bytes:
  """Encode a non-negative int as a protobuf varint."""
  out = bytearray()
  while True:
    byte = value & 0x7F
    value >>= 7
    if value:
      out.append(byte | 0x80)
    else:
      out.append(byte)
      return bytes(out)


def _varint_columns(values: np.ndarray) -> tuple:
  """Encode int64 values as varints (negative values as 10-byte two's complement).

  Args:
    values: int64 array of shape [num_rows].

  Returns:
    (bytes, lengths): a uint8 array of shape [num_rows, 10] whose first lengths[i] bytes of
    row i are the varint, and an int64 array of shape [num_rows].
  """
  remaining = values.astype(np.int64).view(np.uint64).copy()
  out = np.zeros((len(values), 10), dtype=np.uint8)
  lengths = np.ones(len(values), dtype=np.int64)
  for position in range(10):
    low = (remaining & np.uint64(0x7F)).astype(np.uint8)
    remaining >>= np.uint64(7)
    more = remaining > 0
    out[:, position] = low | (more.astype(np.uint8) << 7)
    lengths += more
  return out, lengths


def _serialized_key_order(dtypes: Mapping[str, str]) -> list:
  """Return feature names in the order protobuf's deterministic serializer writes them."""
  template = make_example({name: 0 for name in dtypes}, dtypes)
  payload = serialize(template)
  # Example: 0x0A, varint length, then Features: one (0x0A, varint length, map entry) per key,
  # where a map entry starts with 0x0A, the key length and the key bytes.
  position = 1
  _, position = _read_varint(payload, position)
  names = []
  while position < len(payload):
    position += 1
    entry_length, position = _read_varint(payload, position)
    key_length, key_start = _read_varint(payload, position + 1)
    names.append(payload[key_start : key_start + key_length].decode("utf-8"))
    position += entry_length
  return names


def _read_varint(data: bytes, position: int) -> tuple:
  result, shift = 0, 0
  while True:
    byte = data[position]
    result |= (byte & 0x7F) << shift
    position += 1
    if not byte & 0x80:
      return result, position
    shift += 7


def encode_example_entries(columns: Mapping[str, np.ndarray], dtypes: Mapping[str, str]) -> list:
  """Encode one `examples` field of an ELWC per row of scalar columns, vectorized.

  Each returned entry is the ELWC `examples` tag, the length and the serialized tf.Example of
  that row, byte-identical to protobuf's deterministic serialization. Concatenating the
  entries of one list and appending `encode_context_entry(context)` gives a serialized ELWC.

  Args:
    columns: {feature name: array of shape [num_rows]}, float features as float32-castable
      values, int64 features as integers. Every row has every feature.
    dtypes: {feature name: FLOAT or INT64}; STRING is not supported here.

  Returns:
    A list of num_rows bytes objects.
  """
  names = _serialized_key_order({name: dtypes[name] for name in columns})
  num_rows = len(next(iter(columns.values())))
  pieces = []  # per feature: (constant prefix, value bytes [num_rows, w], value lengths or None)
  for name in names:
    key = name.encode("utf-8")
    key_header = bytes([_TAG_FIELD1_LEN]) + _varint(len(key)) + key
    if dtypes[name] == FLOAT:
      value_bytes = np.asarray(columns[name], dtype="<f4").reshape(num_rows, 1).view(np.uint8)
      # Feature{float_list{packed value}}: 0x12, 6, 0x0A, 4, <4 bytes>.
      feature = bytes([_TAG_FIELD2_LEN, 2 + _FLOAT_BYTES, _TAG_FIELD1_LEN, _FLOAT_BYTES])
      entry = key_header + bytes([_TAG_FIELD2_LEN]) + _varint(len(feature) + _FLOAT_BYTES) + feature
      prefix = bytes([_TAG_FIELD1_LEN]) + _varint(len(entry) + _FLOAT_BYTES) + entry
      pieces.append((prefix, value_bytes, None))
    elif dtypes[name] == INT64:
      value_bytes, lengths = _varint_columns(np.asarray(columns[name]))
      pieces.append((key_header, value_bytes, lengths))
    else:
      raise ValueError(
        f"Feature {name!r} has dtype {dtypes[name]!r}; encode_example_entries takes only "
        f"{FLOAT!r} and {INT64!r} scalars. Use make_example_list for strings."
      )

  # Rows whose int64 varints have the same lengths share one byte layout, so each such group is
  # encoded as one fixed-width uint8 matrix.
  int_lengths = [lengths for _, _, lengths in pieces if lengths is not None]
  if int_lengths:
    signatures, group_of_row = np.unique(np.stack(int_lengths, axis=1), axis=0, return_inverse=True)
    group_of_row = group_of_row.reshape(-1)
  else:
    signatures, group_of_row = np.zeros((1, 0), dtype=np.int64), np.zeros(num_rows, dtype=np.int64)

  entries = [b""] * num_rows
  for group, signature in enumerate(signatures):
    rows = np.flatnonzero(group_of_row == group)
    blocks = []
    int_index = 0
    for prefix, value_bytes, lengths in pieces:
      if lengths is None:
        blocks.append(_constant_block(prefix, len(rows)))
        blocks.append(value_bytes[rows])
        continue
      value_length = int(signature[int_index])
      int_index += 1
      # Feature{int64_list{packed value}}: 0x1A, 2 + n, 0x0A, n, <n varint bytes>.
      feature = (
        bytes([_TAG_FIELD3_LEN])
        + _varint(2 + value_length)
        + bytes([_TAG_FIELD1_LEN, value_length])
      )
      entry = prefix + bytes([_TAG_FIELD2_LEN]) + _varint(len(feature) + value_length) + feature
      entry_header = bytes([_TAG_FIELD1_LEN]) + _varint(len(entry) + value_length)
      blocks.append(_constant_block(entry_header + entry, len(rows)))
      blocks.append(value_bytes[rows, :value_length])
    features_payload = np.concatenate(blocks, axis=1)
    example_length = features_payload.shape[1]
    example = bytes([_TAG_FIELD1_LEN]) + _varint(example_length)
    header = bytes([_TAG_FIELD1_LEN]) + _varint(len(example) + example_length) + example
    matrix = np.ascontiguousarray(
      np.concatenate([_constant_block(header, len(rows)), features_payload], axis=1)
    )
    width = matrix.shape[1]
    flat = matrix.tobytes()
    for offset, row in enumerate(rows.tolist()):
      entries[row] = flat[offset * width : (offset + 1) * width]
  return entries


def _constant_block(data: bytes, num_rows: int) -> np.ndarray:
  return np.broadcast_to(np.frombuffer(data, dtype=np.uint8), (num_rows, len(data)))


def encode_context_entry(context: example_pb2.Example) -> bytes:
  """Encode the `context` field of an ELWC (tag, length, deterministic tf.Example bytes)."""
  payload = serialize(context)
  return bytes([_TAG_FIELD2_LEN]) + _varint(len(payload)) + payload


# ----------------------------------------------------------------------------------------------
# Command-line flags shared by the converters. Each CLI calls these from its `__main__` block, so
# importing several converter modules into one process defines no flag twice.


def define_input_flag(help_text: str) -> None:
  flags.DEFINE_string("input", None, help_text)
  flags.mark_flag_as_required("input")


def define_output_flags() -> None:
  """Define --output_dir, --eval_fraction, --num_shards, --overwrite and --log_every."""
  flags.DEFINE_string(
    "output_dir",
    None,
    "Directory to create with train/, eval/ and stats.json. Output is written to a temporary "
    "directory next to it and renamed into place when complete.",
  )
  flags.mark_flag_as_required("output_dir")
  flags.DEFINE_float(
    "eval_fraction",
    DEFAULT_EVAL_FRACTION,
    "Share of lists (by their time order) written to the eval split, in [0, 1]: 0 puts every "
    "list in train, 1 every list in eval.",
  )
  flags.register_validator(
    "eval_fraction",
    lambda value: value is not None and 0.0 <= value <= 1.0,
    message="--eval_fraction must be in [0, 1] (share of lists in the eval split); pass e.g. 0.2.",
  )
  flags.DEFINE_integer(
    "num_shards", DEFAULT_NUM_SHARDS, "TFRecord files per split (>= 1).", lower_bound=1
  )
  flags.DEFINE_bool("overwrite", False, "Replace --output_dir if it exists and is not empty.")
  flags.register_multi_flags_validator(["output_dir", "overwrite"], _validate_output_flags)
  flags.DEFINE_integer(
    "log_every", DEFAULT_LOG_EVERY, "Lists between two progress log lines.", lower_bound=1
  )


def _validate_output_flags(values: dict) -> bool:
  if values["output_dir"] is None:
    return True  # mark_flag_as_required reports it
  try:
    check_output_dir(os.path.abspath(values["output_dir"]), values["overwrite"])
  except FileExistsError as error:
    raise flags.ValidationError(str(error)) from error
  return True
