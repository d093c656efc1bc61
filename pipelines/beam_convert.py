"""Convert raw logs to ELWC TFRecords with Apache Beam, on one machine or on a cluster.

The output has the layout of the single-process converters (docs/pipelines.md): train/ and eval/
with `--num_shards` TFRecord files each, and stats.json. Each list is built by the same pure
mapping function that the single-process converter calls, so both write the same records:

  trivago     rows grouped by session_id, ordered as trivago.order_actions orders them, then
              trivago.convert_session;
  aliexpress  rows grouped by search_id in file order, then aliexpress.search_to_list;
  synthetic   chunk indices mapped through synthetic.generate_chunk.

The time split gives every group the split the single-process converter gives it. A group's
sort key is (first timestamp, session_id) for trivago, the file row of a search's first row for
AliExpress and the list index for synthetic data. All sort keys are collected on one worker,
which computes the oldest eval key with elwc.num_eval_groups (`eval_boundary`). A group goes
to eval when its key is at least that boundary.

Two things differ from the single-process output. Beam deals each bundle's lists to the shards
round-robin from a random first shard, not in time order, so shards hold other lists in
another order. The
same lists are in each split, byte for byte. stats.json has the same entries plus
`beam_runner`.

Usage (every flag that this module does not define is a Beam pipeline option):
  python -m pipelines.beam_convert --source trivago --input log.parquet --output_dir out \
      --runner DirectRunner --direct_num_workers 2 --direct_running_mode multi_processing
"""

import collections
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Optional

import apache_beam as beam
import pandas as pd
import pyarrow.parquet as pq
from absl import app
from absl import flags
from absl import logging
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import aliexpress
from pipelines import elwc
from pipelines import synthetic
from pipelines import trivago

SOURCES = ("trivago", "aliexpress", "synthetic")
RUNNERS = ("DirectRunner", "DataflowRunner", "FlinkRunner", "SparkRunner")

# Beam's shard name template. With the prefix "part" and the suffix ".tfrecord" it gives the
# names of elwc.shard_filename, such as part-00000-of-00002.tfrecord.
SHARD_NAME_TEMPLATE = "-SSSSS-of-NNNNN"
SHARD_PREFIX = "part"
SHARD_SUFFIX = ".tfrecord"

# Rows per pandas chunk when one worker reads an AliExpress CSV. It bounds that worker's memory.
CSV_CHUNK_ROWS = 50_000

# Keys of stats.json that the pipeline computes. The other keys are known before it runs.
COUNTERS_KEY = "counters"
FREQUENT_FILTERS_KEY = "frequent_current_filters"
RUNNER_KEY = "beam_runner"

# Counters that trivago's stats.json always has, even when zero.
TRIVAGO_COUNTERS = ("rows_read", "clickout_rows", "sessions_train", "sessions_eval")


# ----------------------------------------------------------------------------------------------
# Time split.


def eval_boundary(sort_keys: Iterable[Any], eval_fraction: float) -> Optional[Any]:
  """Return the sort key of the oldest eval group, or None when no group goes to eval.

  With distinct keys, `split_of(key, eval_boundary(keys, f))` equals
  `elwc.assign_splits(sorted(keys), f)[key]` for every key.
  """
  ordered = sorted(sort_keys)
  num_eval = elwc.num_eval_groups(len(ordered), eval_fraction)
  if num_eval == 0:
    return None
  return ordered[len(ordered) - num_eval]


def split_of(sort_key: Any, boundary: Optional[Any]) -> str:
  """Return elwc.EVAL for a key at or after `boundary` (see eval_boundary), else elwc.TRAIN."""
  if boundary is not None and sort_key >= boundary:
    return elwc.EVAL
  return elwc.TRAIN


def _boundary_of(sort_keys: beam.PCollection, eval_fraction: float) -> beam.PCollection:
  """Return a one-element PCollection with the eval_boundary of every key in sort_keys."""
  return (
    sort_keys
    | "CollectSortKeys" >> beam.combiners.ToList()
    | "EvalBoundary" >> beam.Map(eval_boundary, eval_fraction)
  )


# ----------------------------------------------------------------------------------------------
# Statistics. A converted list travels as a (split, serialized ELWC, region, {task: labels})
# tuple in Beam's default coder.


def merge_split_stats(target: elwc.SplitStats, other: elwc.SplitStats) -> None:
  """Add the counts of `other` to `target`, which counts the same tasks."""
  target.lists += other.lists
  target.items += other.items
  target.max_items = max(target.max_items, other.max_items)
  for task in target.tasks:
    target.positives[task] += other.positives[task]
    target.lists_with_positive[task] += other.lists_with_positive[task]
  target.funnel_violations += other.funnel_violations
  for region, count in other.lists_per_region.items():
    target.lists_per_region[region] = target.lists_per_region.get(region, 0) + count


class SplitStatsFn(beam.CombineFn):
  """Combine (split, region, labels) tuples into {split: elwc.SplitStats.to_dict()}."""

  def __init__(self, tasks: Sequence[str]):
    super().__init__()
    self._tasks = list(tasks)

  def create_accumulator(self) -> dict:
    return {split: elwc.SplitStats(self._tasks) for split in elwc.SPLITS}

  def add_input(self, accumulator: dict, element: tuple) -> dict:
    split, region, labels = element
    accumulator[split].add(region, labels)
    return accumulator

  def merge_accumulators(self, accumulators: Iterable[dict]) -> dict:
    merged = self.create_accumulator()
    for accumulator in accumulators:
      for split in elwc.SPLITS:
        merge_split_stats(merged[split], accumulator[split])
    return merged

  def extract_output(self, accumulator: dict) -> dict:
    return {split: accumulator[split].to_dict() for split in elwc.SPLITS}


def merge_counters(counters: Iterable[Mapping[str, int]]) -> collections.Counter:
  """Sum counters key by key. Unlike Counter's `+`, this keeps keys whose total is 0."""
  total = collections.Counter()
  for counter in counters:
    total.update(counter)
  return total


def _list_output(split: str, record: elwc.ListRecord, dtypes: Mapping[str, str], tasks) -> tuple:
  serialized = elwc.serialize(elwc.make_example_list(record, dtypes))
  return split, serialized, record.region, elwc.labels_of(record, tasks)


class _ProgressLog:
  """Log every `log_every` lists converted by one worker process."""

  def __init__(self, name: str, log_every: int):
    self._name = name
    self._log_every = max(1, log_every)
    self._count = 0

  def add(self, num_lists: int) -> None:
    before = self._count
    self._count += num_lists
    if self._count // self._log_every > before // self._log_every:
      logging.info("%s: this worker converted %d lists", self._name, self._count)


# ----------------------------------------------------------------------------------------------
# trivago: parquet row groups -> sessions -> lists.


def trivago_row_groups(input_path: str) -> list:
  """Return (row group index, file row of its first row) per row group of the parquet file.

  Raises ValueError naming the file when a column that trivago.COLUMNS lists is absent or the
  file has no rows.
  """
  with FileSystems.open(input_path) as parquet_stream:
    metadata = pq.ParquetFile(parquet_stream).metadata
    trivago.check_columns(input_path, metadata.schema.to_arrow_schema().names)
  if metadata.num_rows == 0:
    raise ValueError(f"{input_path}: the file has no rows, so there is nothing to convert; "
                     "check --input.")
  row_groups, first_row = [], 0
  for index in range(metadata.num_row_groups):
    row_groups.append((index, first_row))
    first_row += metadata.row_group(index).num_rows
  return row_groups


def read_trivago_row_group(row_group: tuple, input_path: str) -> Iterator:
  """Yield (session_id, (file row, action dict)) for each row of one parquet row group."""
  index, first_row = row_group
  with FileSystems.open(input_path) as parquet_stream:
    table = pq.ParquetFile(parquet_stream).read_row_group(index, columns=list(trivago.COLUMNS))
  actions = trivago.check_values(table.to_pandas(), input_path, first_row)
  for offset, action in enumerate(actions.to_dict("records")):
    yield action["session_id"], (first_row + offset, action)


def order_session(session: tuple) -> tuple:
  """Sort one session's (file row, action) pairs as trivago.order_actions does.

  order_actions is a stable sort by timestamp, then step, so the file row breaks ties.

  Returns:
    (session_id, [action dicts in order]).
  """
  session_id, indexed_actions = session
  ordered = sorted(
    indexed_actions, key=lambda pair: (pair[1]["timestamp"], pair[1]["step"], pair[0])
  )
  return session_id, [action for _, action in ordered]


def trivago_sort_key(session: tuple) -> tuple:
  """Return (first timestamp, session_id), the order of trivago.session_splits."""
  session_id, actions = session
  return min(action["timestamp"] for action in actions), session_id


def has_clickout(session: tuple) -> bool:
  return any(action["action_type"] == trivago.CLICKOUT_ACTION for action in session[1])


class TrivagoSessionFn(beam.DoFn):
  """Map one ordered session to its lists, plus its counters and clickout filter counts.

  Main output: (split, serialized ELWC, region, labels) per list. Tagged outputs: COUNTERS_KEY,
  a Counter with the counters of trivago.convert, and FREQUENT_FILTERS_KEY, a Counter of the
  filter values of the session's clickout rows.
  """

  def __init__(self, log_every: int):
    super().__init__()
    self._log_every = log_every

  def setup(self):
    self._progress = _ProgressLog(trivago.DATASET, self._log_every)

  def process(self, session: tuple, boundary: Optional[tuple]) -> Iterator:
    _, actions = session
    clickouts = [action for action in actions if action["action_type"] == trivago.CLICKOUT_ACTION]
    counters = collections.Counter(rows_read=len(actions), clickout_rows=len(clickouts))
    if clickouts:
      split = split_of(trivago_sort_key(session), boundary)
      counters[f"sessions_{split}"] += 1
      records = list(trivago.convert_session(actions, counters))
      for record in records:
        yield _list_output(split, record, trivago.FEATURE_DTYPES, trivago.TASKS)
      self._progress.add(len(records))
      filters = trivago.count_filter_values(action["current_filters"] for action in clickouts)
      yield beam.pvalue.TaggedOutput(FREQUENT_FILTERS_KEY, filters)
    yield beam.pvalue.TaggedOutput(COUNTERS_KEY, counters)


def finish_trivago_counters(counters: collections.Counter) -> dict:
  """Return the counters sorted by name, with every TRIVAGO_COUNTERS entry present."""
  for name in TRIVAGO_COUNTERS:
    counters.setdefault(name, 0)
  return dict(sorted(counters.items()))


def build_trivago(
  pipeline: beam.Pipeline, input_path: str, eval_fraction: float, log_every: int
) -> tuple:
  """Add the trivago steps to `pipeline`.

  Returns:
    (lists, entries): the (split, serialized, region, labels) PCollection and a PCollection of
    (stats.json key, value) pairs.
  """
  row_groups = trivago_row_groups(input_path)
  sessions = (
    pipeline
    | "RowGroups" >> beam.Create(row_groups)
    | "SpreadRowGroups" >> beam.Reshuffle()
    | "ReadRowGroups" >> beam.FlatMap(read_trivago_row_group, input_path)
    | "GroupBySession" >> beam.GroupByKey()
    | "OrderSession" >> beam.Map(order_session)
  )
  boundary = _boundary_of(
    sessions
    | "WithClickout" >> beam.Filter(has_clickout)
    | "SortKeys" >> beam.Map(trivago_sort_key),
    eval_fraction,
  )
  outputs = sessions | "ConvertSessions" >> beam.ParDo(
    TrivagoSessionFn(log_every), beam.pvalue.AsSingleton(boundary)
  ).with_outputs(COUNTERS_KEY, FREQUENT_FILTERS_KEY, main="lists")

  counters = (
    outputs[COUNTERS_KEY]
    | "SumCounters" >> beam.CombineGlobally(merge_counters)
    | "FinishCounters" >> beam.Map(finish_trivago_counters)
  )
  frequent_filters = (
    outputs[FREQUENT_FILTERS_KEY]
    | "SumFilterCounts" >> beam.CombineGlobally(merge_counters)
    | "TopFilters" >> beam.Map(trivago.top_filter_values, trivago.NUM_FREQUENT_FILTERS)
  )
  entries = (
    counters | "CountersEntry" >> beam.Map(lambda value: (COUNTERS_KEY, value)),
    frequent_filters | "FiltersEntry" >> beam.Map(lambda value: (FREQUENT_FILTERS_KEY, value)),
  ) | "Entries" >> beam.Flatten()
  return outputs["lists"], entries


# ----------------------------------------------------------------------------------------------
# AliExpress: CSV rows -> searches -> lists.


def check_aliexpress_header(input_path: str) -> None:
  """Raise ValueError naming the file when a required column is absent from the CSV header."""
  with FileSystems.open(input_path) as csv_stream:
    header = pd.read_csv(csv_stream, nrows=0)
  aliexpress.check_rows(header, input_path)


def read_aliexpress_rows(input_path: str, chunk_rows: int = CSV_CHUNK_ROWS) -> Iterator:
  """Yield (search_id, (file row, row dict)) for each data row, checked by check_rows.

  One worker reads the whole file in chunks, because a row's position in the file is its
  time order and a CSV has no row index to split on.
  """
  first_row = 0
  with FileSystems.open(input_path) as csv_stream:
    for chunk in pd.read_csv(csv_stream, chunksize=chunk_rows):
      aliexpress.check_rows(chunk, input_path, first_row)
      for offset, row in enumerate(chunk.to_dict("records")):
        yield row["search_id"], (first_row + offset, row)
      first_row += len(chunk)


def order_search(search: tuple) -> tuple:
  """Return (file row of the search's first row, rows DataFrame in file order)."""
  _, indexed_rows = search
  ordered = sorted(indexed_rows, key=lambda pair: pair[0])
  return ordered[0][0], pd.DataFrame.from_records([row for _, row in ordered])


class AliExpressSearchFn(beam.DoFn):
  """Map one ordered search to its (split, serialized ELWC, region, labels) tuple."""

  def __init__(self, region: str, log_every: int):
    super().__init__()
    self._region = region
    self._log_every = log_every

  def setup(self):
    self._progress = _ProgressLog(aliexpress.DATASET, self._log_every)

  def process(self, search: tuple, boundary: Optional[int]) -> Iterator:
    first_row, rows = search
    record = aliexpress.search_to_list(rows, self._region)
    yield _list_output(
      split_of(first_row, boundary), record, aliexpress.FEATURE_DTYPES, aliexpress.TASKS
    )
    self._progress.add(1)


def build_aliexpress(
  pipeline: beam.Pipeline, input_path: str, region: str, eval_fraction: float, log_every: int
) -> tuple:
  """Add the AliExpress steps to `pipeline`; returns (lists, entries) as build_trivago does."""
  check_aliexpress_header(input_path)
  rows = (
    pipeline
    | "InputFile" >> beam.Create([input_path])
    | "ReadRows" >> beam.FlatMap(read_aliexpress_rows)
  )
  searches = rows | "GroupBySearch" >> beam.GroupByKey() | "OrderSearch" >> beam.Map(order_search)
  boundary = _boundary_of(
    searches | "FirstRows" >> beam.Map(lambda search: search[0]), eval_fraction
  )
  lists = searches | "ConvertSearches" >> beam.ParDo(
    AliExpressSearchFn(region, log_every), beam.pvalue.AsSingleton(boundary)
  )
  counters = (
    rows
    | "CountRows" >> beam.combiners.Count.Globally()
    | "CountersEntry" >> beam.Map(lambda count: (COUNTERS_KEY, {"rows_read": count}))
  )
  return lists, counters


# ----------------------------------------------------------------------------------------------
# Synthetic: chunk indices -> lists.


def synthetic_chunk_lists(
  chunk_index: int,
  world: synthetic.World,
  num_lists: int,
  list_size: int,
  seed: int,
  first_eval: int,
) -> Iterator:
  """Yield (split, serialized ELWC, region, labels) for each list of one generated chunk."""
  records, regions, labels = synthetic.generate_chunk(
    world, chunk_index, num_lists, list_size, seed
  )
  chunk_start = chunk_index * synthetic.CHUNK_LISTS
  for offset, record in enumerate(records):
    split = elwc.EVAL if chunk_start + offset >= first_eval else elwc.TRAIN
    list_labels = {task: values[offset].tolist() for task, values in labels.items()}
    yield split, record, regions[offset], list_labels


def build_synthetic(
  pipeline: beam.Pipeline,
  world: synthetic.World,
  num_lists: int,
  list_size: int,
  seed: int,
  eval_fraction: float,
) -> tuple:
  """Add the synthetic steps to `pipeline`; returns (lists, entries) as build_trivago does."""
  first_eval = synthetic.first_eval_list(num_lists, eval_fraction)
  lists = (
    pipeline
    | "ChunkIndices" >> beam.Create(list(range(synthetic.num_chunks(num_lists))))
    | "SpreadChunks" >> beam.Reshuffle()
    | "GenerateChunks"
    >> beam.FlatMap(synthetic_chunk_lists, world, num_lists, list_size, seed, first_eval)
  )
  entries = pipeline | "NoEntries" >> beam.Create([])
  return lists, entries


# ----------------------------------------------------------------------------------------------
# Output: shards per split, then stats.json.


def write_stats(
  unused_element: Any,
  stats_path: str,
  metadata: Mapping[str, Any],
  tasks: Sequence[str],
  num_shards: int,
  split_stats: Mapping[str, dict],
  entries: Mapping[str, Any],
  *shard_paths: Sequence[str],
) -> Iterator:
  """Write stats.json; runs once, after the shards, because it takes their paths as input.

  Args:
    metadata: the stats entries known before the pipeline runs. An entry whose value is None
      is filled from `entries`, so the keys keep the order of the single-process stats.json.
    shard_paths: one list of written shard paths per split, only to order this step last.

  Yields:
    stats_path.
  """
  written = sum(len(paths) for paths in shard_paths)
  if written != num_shards * len(elwc.SPLITS):
    raise RuntimeError(
      f"Beam wrote {written} shard files; expected {num_shards} per split in "
      f"{os.path.dirname(stats_path)}."
    )
  stats = {key: entries.get(key) if value is None else value for key, value in metadata.items()}
  stats["tasks"] = list(tasks)
  stats["splits"] = {}
  for split in elwc.SPLITS:
    stats["splits"][split] = dict(split_stats[split])
    stats["splits"][split]["shards"] = [
      f"{split}/{elwc.shard_filename(shard, num_shards)}" for shard in range(num_shards)
    ]
  with FileSystems.create(stats_path) as stats_file:
    stats_file.write((json.dumps(stats, indent=2) + "\n").encode("utf-8"))
  yield stats_path


def write_dataset(
  lists: beam.PCollection,
  entries: beam.PCollection,
  output_dir: str,
  tasks: Sequence[str],
  num_shards: int,
  metadata: Mapping[str, Any],
) -> beam.PCollection:
  """Write each split's lists to num_shards TFRecord files, then output_dir/stats.json."""
  by_split = lists | "BySplit" >> beam.Partition(
    lambda element, _: elwc.SPLITS.index(element[0]), len(elwc.SPLITS)
  )
  shard_paths = []
  for split, split_lists in zip(elwc.SPLITS, by_split):
    shard_paths.append(
      split_lists
      | f"Serialized_{split}" >> beam.Map(lambda element: element[1])
      | f"Write_{split}"
      >> beam.io.WriteToTFRecord(
        FileSystems.join(output_dir, split, SHARD_PREFIX),
        file_name_suffix=SHARD_SUFFIX,
        num_shards=num_shards,
        shard_name_template=SHARD_NAME_TEMPLATE,
      )
    )
  split_stats = (
    lists
    | "StatsInputs" >> beam.Map(lambda element: (element[0], element[2], element[3]))
    | "SplitStats" >> beam.CombineGlobally(SplitStatsFn(tasks))
  )
  return (
    lists.pipeline
    | "StatsTrigger" >> beam.Create([None])
    | "WriteStats"
    >> beam.FlatMap(
      write_stats,
      FileSystems.join(output_dir, elwc.STATS_FILENAME),
      metadata,
      list(tasks),
      num_shards,
      beam.pvalue.AsSingleton(split_stats),
      beam.pvalue.AsDict(entries),
      *[beam.pvalue.AsList(paths) for paths in shard_paths],
    )
  )


# ----------------------------------------------------------------------------------------------
# Staging directory: the pipeline writes next to output_dir, and the result is moved into place
# only after the pipeline has finished.


def is_local(path: str) -> bool:
  return FileSystems.get_scheme(path) in (None, "file")


class StagingDirectory:
  """A temporary directory next to `output_dir` that replaces it on `commit`.

  On a local disk this is elwc's directory rename, as for the single-process converters. On
  a remote file system (gs://, s3://, hdfs://) the files are renamed one by one. A reader can
  then see a partly moved output, so stats.json is moved last and marks a complete one.

  NOTE: the remote branch has run here only on local paths (commit_with_filesystems in the
  tests), never against GCS, S3 or HDFS.
  """

  def __init__(self, output_dir: str, overwrite: bool):
    self.output_dir = (
      os.path.abspath(output_dir) if is_local(output_dir) else output_dir.rstrip("/")
    )
    self.overwrite = overwrite
    name = os.path.basename(self.output_dir)
    if is_local(self.output_dir):
      elwc.check_output_dir(self.output_dir, overwrite)
      parent = os.path.dirname(self.output_dir)
      os.makedirs(parent, exist_ok=True)
      self.path = elwc.make_temp_dir(parent, prefix=f".{name}.tmp-")
    else:
      if _remote_files(self.output_dir) and not overwrite:
        raise FileExistsError(
          f"--output_dir {self.output_dir} is not empty; pass --overwrite to replace it "
          "or choose a new directory."
        )
      parent = self.output_dir.rsplit("/", 1)[0]
      self.path = f"{parent}/.{name}.tmp-{uuid.uuid4().hex}"

  def commit(self) -> None:
    if is_local(self.output_dir):
      elwc.replace_directory(self.path, self.output_dir)
    else:
      commit_with_filesystems(self.path, self.output_dir)

  def abort(self) -> None:
    """Delete the staging directory; output_dir stays as it was."""
    if is_local(self.path):
      shutil.rmtree(self.path, ignore_errors=True)
    else:
      leftover = _remote_files(self.path)
      if leftover:
        FileSystems.delete(leftover)
    logging.warning("conversion did not finish; deleted %s", self.path)


def _remote_files(directory: str) -> list:
  """Return the paths of every file under `directory` (none when it does not exist)."""
  match = FileSystems.match([directory.rstrip("/") + "/**"])[0]
  return [metadata.path for metadata in match.metadata_list]


def commit_with_filesystems(staging_dir: str, output_dir: str) -> None:
  """Move every file of staging_dir to the same relative path in output_dir, stats.json last.

  Files already in output_dir are deleted first. Works on any Beam file system.
  """
  staging_dir, output_dir = staging_dir.rstrip("/"), output_dir.rstrip("/")
  old_files = _remote_files(output_dir)
  if old_files:
    FileSystems.delete(old_files)
  stats_path = FileSystems.join(staging_dir, elwc.STATS_FILENAME)
  data_files = [path for path in _remote_files(staging_dir) if path != stats_path]
  # Two renames, because one batch may move its files in any order.
  for sources in (data_files, [stats_path]):
    destinations = [output_dir + path[len(staging_dir) :] for path in sources]
    if is_local(output_dir):
      # A local rename needs the target directory, but object stores have no directories.
      for destination in destinations:
        os.makedirs(os.path.dirname(destination), exist_ok=True)
    FileSystems.rename(sources, destinations)
  if is_local(staging_dir):
    shutil.rmtree(staging_dir, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# Running a conversion.


def run(
  source: str,
  output_dir: str,
  pipeline_options: PipelineOptions,
  input_path: Optional[str] = None,
  eval_fraction: float = elwc.DEFAULT_EVAL_FRACTION,
  num_shards: int = elwc.DEFAULT_NUM_SHARDS,
  overwrite: bool = False,
  log_every: int = elwc.DEFAULT_LOG_EVERY,
  region: Optional[str] = None,
  generator: Optional[Mapping[str, Any]] = None,
) -> dict:
  """Convert one input with Beam and return the stats written to output_dir/stats.json.

  Args:
    source: one of SOURCES.
    pipeline_options: Beam options, including the runner.
    input_path: the raw file (trivago parquet or AliExpress CSV); None for synthetic.
    region: AliExpress region flag; None takes it from the file name.
    generator: synthetic.generate's num_lists, num_regions, list_size, setting, seed and
      world_seed.
  """
  elwc.validate_eval_fraction(eval_fraction)
  if num_shards < 1:
    raise ValueError(f"num_shards must be >= 1 (files per split); received {num_shards}.")
  if source not in SOURCES:
    raise ValueError(f"--source must be one of {SOURCES}; received {source!r}.")
  if source != "synthetic" and not input_path:
    raise ValueError(f"--input is required for --source={source}; pass the raw data file.")
  if input_path is not None and is_local(input_path):
    input_path = os.path.abspath(input_path)

  staging = StagingDirectory(output_dir, overwrite)
  try:
    pipeline = beam.Pipeline(options=pipeline_options)
    tasks, metadata, lists, entries = _build(
      source, pipeline, input_path, eval_fraction, num_shards, log_every, region, generator
    )
    metadata[RUNNER_KEY] = pipeline_options.get_all_options()["runner"] or "DirectRunner"
    write_dataset(lists, entries, staging.path, tasks, num_shards, metadata)
    logging.info("%s: running the Beam pipeline, writing to %s", source, staging.path)
    pipeline.run().wait_until_finish()
    staging.commit()
  except BaseException:
    staging.abort()
    raise
  with FileSystems.open(FileSystems.join(staging.output_dir, elwc.STATS_FILENAME)) as stats_file:
    stats = json.loads(stats_file.read().decode("utf-8"))
  logging.info(
    "%s: wrote %d train and %d eval lists to %s",
    source,
    stats["splits"][elwc.TRAIN]["lists"],
    stats["splits"][elwc.EVAL]["lists"],
    staging.output_dir,
  )
  return stats


def _build(source, pipeline, input_path, eval_fraction, num_shards, log_every, region, generator):
  """Add the source's steps; return (tasks, stats metadata, lists, entries)."""
  output_flags = {"eval_fraction": eval_fraction, "num_shards": num_shards}
  if source == "trivago":
    lists, entries = build_trivago(pipeline, input_path, eval_fraction, log_every)
    metadata = {
      "dataset": trivago.DATASET,
      "input": input_path,
      "flags": output_flags,
      COUNTERS_KEY: None,
      FREQUENT_FILTERS_KEY: None,
    }
    return trivago.TASKS, metadata, lists, entries

  if source == "aliexpress":
    resolved_region = aliexpress.resolve_region(input_path, region)
    lists, entries = build_aliexpress(
      pipeline, input_path, resolved_region, eval_fraction, log_every
    )
    metadata = {
      "dataset": aliexpress.DATASET,
      "input": input_path,
      "region": resolved_region,
      "flags": {"region": region, **output_flags},
      COUNTERS_KEY: None,
    }
    return aliexpress.TASKS, metadata, lists, entries

  generator = dict(generator or {})
  if generator.get("num_lists", 0) < 0 or generator.get("list_size", 1) < 1:
    raise ValueError(
      f"Need --num_lists >= 0 and --list_size >= 1; received {generator.get('num_lists')} "
      f"and {generator.get('list_size')}."
    )
  world = synthetic.make_world(
    generator["num_regions"], generator["setting"], generator["world_seed"]
  )
  lists, entries = build_synthetic(
    pipeline,
    world,
    generator["num_lists"],
    generator["list_size"],
    generator["seed"],
    eval_fraction,
  )
  metadata = {
    "dataset": synthetic.DATASET,
    "input": None,
    "flags": {
      key: generator[key]
      for key in ("num_lists", "num_regions", "list_size", "setting", "seed", "world_seed")
    }
    | output_flags,
    "world": world.to_dict(),
  }
  return synthetic.TASKS, metadata, lists, entries


# ----------------------------------------------------------------------------------------------
# Command line.


def define_flags() -> None:
  """Define this CLI's flags. Every other flag goes to Beam as a pipeline option."""
  flags.DEFINE_enum("source", None, SOURCES, "Dataset to convert.")
  flags.mark_flag_as_required("source")
  flags.DEFINE_string(
    "input",
    None,
    "Raw data file: a trivago RecSys Challenge 2019 .parquet log or an AliExpress CSV. Local "
    "or any path Beam can read (gs://...). Not used with --source=synthetic.",
  )
  flags.DEFINE_enum(
    "runner",
    "DirectRunner",
    RUNNERS,
    "Beam runner. Pass its options as further flags (docs/scale.md).",
  )
  flags.DEFINE_string(
    "region",
    None,
    f"--source=aliexpress only: buyer country of every row, one of "
    f"{', '.join(aliexpress.REGIONS)}. Default: the code in the file name.",
  )
  elwc.define_output_flags()
  synthetic.define_generator_flags()
  flags.register_multi_flags_validator(
    ["source", "input"],
    lambda values: values["source"] == "synthetic" or bool(values["input"]),
    message="--input is required unless --source=synthetic; pass the raw data file.",
  )


def parse_flags(argv: Sequence[str]) -> list:
  """Parse this module's flags and return [program] + the Beam pipeline arguments."""
  return flags.FLAGS(list(argv), known_only=True)


def main(argv: Sequence[str]) -> None:
  FLAGS = flags.FLAGS
  pipeline_options = PipelineOptions(list(argv[1:]), runner=FLAGS.runner)
  generator = {
    "num_lists": FLAGS.num_lists,
    "num_regions": FLAGS.num_regions,
    "list_size": FLAGS.list_size,
    "setting": FLAGS.setting,
    "seed": FLAGS.seed,
    "world_seed": FLAGS.world_seed,
  }
  try:
    if FLAGS.source == "aliexpress":
      aliexpress.resolve_region(FLAGS.input, FLAGS.region)
  except ValueError as error:
    raise app.UsageError(str(error)) from error
  run(
    FLAGS.source,
    FLAGS.output_dir,
    pipeline_options,
    input_path=FLAGS.input,
    eval_fraction=FLAGS.eval_fraction,
    num_shards=FLAGS.num_shards,
    overwrite=FLAGS.overwrite,
    log_every=FLAGS.log_every,
    region=FLAGS.region,
    generator=generator,
  )


if __name__ == "__main__":
  # Run the imported module rather than __main__, so Beam pickles this module's functions by
  # reference (pipelines.beam_convert.*) and workers import them like any other module.
  from pipelines import beam_convert

  beam_convert.define_flags()
  app.run(beam_convert.main, flags_parser=beam_convert.parse_flags)
