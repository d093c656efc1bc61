"""Convert AliExpress Searching System CSV files to ELWC TFRecords.

Schema: `search_id, categorical_1..16, numerical_1..63, click, conversion` (the per-country
train/test layout of the Tianchi AliExpress dataset). Rows sharing a search_id form one list,
items in file order. Tasks: `click` -> `conversion`.

The files have no country column: each country is its own file. The region is the --region
flag, or else the country code in the file name (`aliexpress_us_train_sample.csv` -> US).

The files have no time column either. The split takes search ids in order of first appearance
as time order and sends the last `eval_fraction` of them to eval. The publisher already splits
each country into train and test files, so convert a test file with --eval_fraction 1.

Usage:
  python -m pipelines.aliexpress --input aliexpress_us_train_sample.csv --output_dir /tmp/ae
"""

import collections
import os
import re
from collections.abc import Sequence
from typing import Optional

import numpy as np
import pandas as pd
from absl import app
from absl import flags
from absl import logging

from pipelines import elwc

DATASET = "aliexpress"
TASKS = ("click", "conversion")
REGIONS = ("NL", "ES", "FR", "US", "RU")  # the five buyer countries of the published dataset
REGION_FEATURE = "region"
CATEGORICAL_COLUMNS = tuple(f"categorical_{index}" for index in range(1, 17))
NUMERICAL_COLUMNS = tuple(f"numerical_{index}" for index in range(1, 64))
REQUIRED_COLUMNS = ("search_id",) + CATEGORICAL_COLUMNS + NUMERICAL_COLUMNS + TASKS
# A two-letter country code between "aliexpress_" and "_" or ".", as in aliexpress_us_train.csv.
_FILENAME_REGION = re.compile(r"aliexpress_([A-Za-z]{2})(?=[_.])")

FEATURE_DTYPES = {
  elwc.LIST_ID_FEATURE: elwc.STRING,
  REGION_FEATURE: elwc.STRING,
  **{column: elwc.INT64 for column in CATEGORICAL_COLUMNS},
  **{column: elwc.FLOAT for column in NUMERICAL_COLUMNS},
  **{task: elwc.INT64 for task in TASKS},
}


def region_from_filename(path: str) -> Optional[str]:
  """Return the upper-case country code in a file name like aliexpress_us_train.csv, or None."""
  match = _FILENAME_REGION.search(os.path.basename(path))
  return match.group(1).upper() if match else None


def resolve_region(path: str, region_flag: Optional[str]) -> str:
  """Return the region from --region, or else from the file name; raise ValueError if neither.

  The region must be one of REGIONS.
  """
  if region_flag:
    region, source = region_flag.upper(), f"--region={region_flag}"
  else:
    region, source = region_from_filename(path), f"the file name {os.path.basename(path)!r}"
    if region is None:
      raise ValueError(
        f"No region for {path}: the file name has no country code (expected a name like "
        f"aliexpress_us_train.csv) and --region is not set. Pass --region, one of {list(REGIONS)}."
      )
  if region not in REGIONS:
    raise ValueError(
      f"Region {region!r} from {source} is not an AliExpress country; expected one of "
      f"{list(REGIONS)}. Pass --region with one of them."
    )
  return region


def search_to_list(rows: pd.DataFrame, region: str) -> elwc.ListRecord:
  """Map the rows of one search_id, in file order, to a ListRecord of `region`."""
  search_id = int(rows["search_id"].iloc[0])
  columns = {}
  for column in CATEGORICAL_COLUMNS + TASKS:
    columns[column] = rows[column].to_numpy(dtype=np.int64).tolist()
  for column in NUMERICAL_COLUMNS:
    columns[column] = rows[column].to_numpy(dtype=np.float64).tolist()
  names = list(columns)
  examples = [dict(zip(names, values)) for values in zip(*columns.values())]
  list_id = f"{region}:search_id={search_id}"
  context = {elwc.LIST_ID_FEATURE: list_id, REGION_FEATURE: region}
  return elwc.ListRecord(list_id=list_id, region=region, context=context, examples=examples)


def read_rows(path: str) -> pd.DataFrame:
  """Read the CSV and check columns and values: no missing value, labels 0 or 1.

  An empty file, a file that is not valid UTF-8 or a value that is not a number is an error
  that names the file and the row.
  """
  rows = elwc.read_csv(path)
  check_rows(rows, path)
  return rows


def check_rows(rows: pd.DataFrame, path: str, first_row: int = 0) -> None:
  """Raise ValueError naming the file and data row of the first missing column or bad value.

  Args:
    rows: consecutive data rows of `path`.
    first_row: 0-based index of rows' first row in the file, so a chunk of a file that is read
      in parts reports the row number of the whole file.
  """
  missing = [column for column in REQUIRED_COLUMNS if column not in rows.columns]
  if missing:
    raise ValueError(
      f"{path}: missing columns {missing}; an AliExpress file has search_id, "
      "categorical_1..16, numerical_1..63, click and conversion. Check --input."
    )
  elwc.check_numeric_columns(
    rows, ("search_id",) + CATEGORICAL_COLUMNS, path, integer=True, first_row=first_row
  )
  elwc.check_numeric_columns(rows, NUMERICAL_COLUMNS, path, integer=False, first_row=first_row)
  for column in REQUIRED_COLUMNS:
    empty = rows[column].isna().to_numpy()
    if empty.any():
      row = int(np.flatnonzero(empty)[0])
      raise ValueError(
        f"{path}: data row {first_row + row + 1} has no value in column {column!r}; "
        "fix or drop it."
      )
  for task in TASKS:
    invalid = ~rows[task].isin([0, 1]).to_numpy()
    if invalid.any():
      row = int(np.flatnonzero(invalid)[0])
      raise ValueError(
        f"{path}: data row {first_row + row + 1} has {task}={rows[task].iloc[row]!r}; "
        "labels must be 0 or 1."
      )


def convert(
  input_path: str,
  output_dir: str,
  region: Optional[str] = None,
  eval_fraction: float = elwc.DEFAULT_EVAL_FRACTION,
  num_shards: int = elwc.DEFAULT_NUM_SHARDS,
  overwrite: bool = False,
  log_every: int = elwc.DEFAULT_LOG_EVERY,
) -> dict:
  """Convert one AliExpress CSV to output_dir/{train,eval}/*.tfrecord and stats.json.

  Args:
    region: country code; None takes it from the file name.

  Returns:
    The stats written to output_dir/stats.json.
  """
  elwc.validate_eval_fraction(eval_fraction)
  resolved_region = resolve_region(input_path, region)
  rows = read_rows(input_path)
  logging.info(
    "%s: read %d rows of region %s from %s", DATASET, len(rows), resolved_region, input_path
  )
  search_ids = rows["search_id"].drop_duplicates().tolist()
  splits = elwc.assign_splits(search_ids, eval_fraction)
  counters = collections.Counter(rows_read=len(rows))

  with elwc.DatasetWriter(
    output_dir, TASKS, num_shards, overwrite, log_every, name=DATASET
  ) as writer:
    for search_id, search_rows in rows.groupby("search_id", sort=False):
      record = search_to_list(search_rows, resolved_region)
      serialized = elwc.serialize(elwc.make_example_list(record, FEATURE_DTYPES))
      writer.write(splits[search_id], serialized, record.region, elwc.labels_of(record, TASKS))
    return writer.commit(
      {
        "dataset": DATASET,
        "input": os.path.abspath(input_path),
        "region": resolved_region,
        "flags": {"region": region, "eval_fraction": eval_fraction, "num_shards": num_shards},
        "counters": dict(sorted(counters.items())),
      }
    )


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  FLAGS = flags.FLAGS
  try:
    resolve_region(FLAGS.input, FLAGS.region)
  except ValueError as error:
    raise app.UsageError(str(error)) from error
  convert(
    FLAGS.input,
    FLAGS.output_dir,
    FLAGS.region,
    FLAGS.eval_fraction,
    FLAGS.num_shards,
    FLAGS.overwrite,
    FLAGS.log_every,
  )


if __name__ == "__main__":
  elwc.define_input_flag(
    "AliExpress CSV (search_id, categorical_1..16, numerical_1..63, click, conversion)."
  )
  flags.DEFINE_string(
    "region",
    None,
    f"Buyer country of every row, one of {', '.join(REGIONS)}. Default: the code in the file "
    "name, e.g. aliexpress_us_train.csv -> US.",
  )
  elwc.define_output_flags()
  # The flags are defined in pipelines.elwc; adopting them lists them under --help.
  flags.adopt_module_key_flags(elwc)
  app.run(main)
