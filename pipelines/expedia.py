"""Convert Expedia hotel-search logs (Kaggle / ICDM 2013 layout) to ELWC TFRecords.

One list per `srch_id`, items in `position` order (the rank Expedia showed). Tasks:
`click` (click_bool) -> `booking` (booking_bool). The label columns click_bool, booking_bool
and gross_bookings_usd never reach a feature.

Missing values (empty or the literal NULL) in the columns of `NULLABLE_COLUMNS` become the
default 0 plus an int64 `<column>_missing` feature that is 1 where the value was missing. A
missing value in any other column used as a feature is an error that names the row.

A property listed twice in one search keeps its first row by `position`; the later rows are
dropped (counted in stats.json as `duplicate_items_dropped` in `lists_with_duplicate_items`).
An empty file, a file that is not valid UTF-8 or a value that is not a number is an error that
names the row.

Split: searches are ordered by `date_time` (then srch_id); the latest `eval_fraction` of
searches go to eval.

Usage:
  python -m pipelines.expedia --input train.csv --output_dir /tmp/expedia_elwc
"""

import collections
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
from absl import app
from absl import flags
from absl import logging

from pipelines import elwc

DATASET = "expedia"
TASKS = ("click", "booking")
# Source column of each task label.
LABEL_SOURCES = {"click": "click_bool", "booking": "booking_bool"}
# Columns that hold or are derived from the outcome of the search. click_bool and booking_bool
# are used only for the labels above; no function uses gross_bookings_usd.
LABEL_COLUMNS = ("click_bool", "booking_bool", "gross_bookings_usd")
NULL_TOKENS = ("NULL",)
MISSING_SUFFIX = "_missing"
MISSING_DEFAULT = 0.0  # value written in place of a missing one, next to a _missing = 1 feature

COMPETITOR_COLUMNS = tuple(
  f"comp{competitor}_{field}"
  for competitor in range(1, 9)
  for field in ("rate", "inv", "rate_percent_diff")
)
# Numeric columns copied to features as they are, with a _missing indicator (NULLABLE) or not.
CONTEXT_NUMERIC_COLUMNS = (
  "srch_length_of_stay",
  "srch_booking_window",
  "srch_adults_count",
  "srch_children_count",
  "srch_room_count",
  "srch_saturday_night_bool",
  "random_bool",
  "visitor_hist_starrating",
  "visitor_hist_adr_usd",
)
CONTEXT_ID_COLUMNS = ("site_id", "visitor_location_country_id", "srch_destination_id")
EXAMPLE_NUMERIC_COLUMNS = (
  "prop_starrating",
  "prop_review_score",
  "prop_brand_bool",
  "prop_location_score1",
  "prop_location_score2",
  "prop_log_historical_price",
  "price_usd",
  "promotion_flag",
  "srch_query_affinity_score",
  "orig_destination_distance",
) + COMPETITOR_COLUMNS
NULLABLE_COLUMNS = (
  "visitor_hist_starrating",
  "visitor_hist_adr_usd",
  "prop_review_score",
  "prop_location_score2",
  "srch_query_affinity_score",
  "orig_destination_distance",
) + COMPETITOR_COLUMNS
# NULLABLE_COLUMNS in words, for error messages.
NULLABLE_DESCRIPTION = (
  "visitor_hist_starrating, visitor_hist_adr_usd, prop_review_score, prop_location_score2, "
  "srch_query_affinity_score, orig_destination_distance and comp1..8_{rate,inv,rate_percent_diff}"
)
# Numeric columns by the type the converter reads them as.
INTEGER_COLUMNS = ("srch_id", "position", "prop_id", "prop_country_id", "click_bool",
                   "booking_bool") + CONTEXT_ID_COLUMNS
FLOAT_COLUMNS = CONTEXT_NUMERIC_COLUMNS + EXAMPLE_NUMERIC_COLUMNS
REQUIRED_COLUMNS = (
  ("srch_id", "date_time", "position", "prop_id", "prop_country_id")
  + CONTEXT_ID_COLUMNS
  + CONTEXT_NUMERIC_COLUMNS
  + EXAMPLE_NUMERIC_COLUMNS
  + ("click_bool", "booking_bool")
)


def _feature_dtypes() -> dict:
  dtypes = {elwc.LIST_ID_FEATURE: elwc.STRING}
  for column in CONTEXT_ID_COLUMNS:
    dtypes[column] = elwc.INT64
  for column in CONTEXT_NUMERIC_COLUMNS + EXAMPLE_NUMERIC_COLUMNS:
    dtypes[column] = elwc.FLOAT
    if column in NULLABLE_COLUMNS:
      dtypes[column + MISSING_SUFFIX] = elwc.INT64
  dtypes.update(
    {
      "prop_id": elwc.INT64,
      "original_rank": elwc.INT64,
      "price_rank": elwc.INT64,
      "price_to_list_median": elwc.FLOAT,
      "domestic_property": elwc.INT64,
    }
  )
  for task in TASKS:
    dtypes[task] = elwc.INT64
  return dtypes


FEATURE_DTYPES = _feature_dtypes()


def read_searches(path: str) -> pd.DataFrame:
  """Read the CSV (NULL and empty fields become NaN) and check the required columns."""
  rows = elwc.read_csv(path, na_values=list(NULL_TOKENS), keep_default_na=True)
  missing = [column for column in REQUIRED_COLUMNS if column not in rows.columns]
  if missing:
    raise ValueError(
      f"{path}: missing columns {missing}. An Expedia training file has 54 columns "
      "including position, click_bool and booking_bool; check --input."
    )
  return rows


def check_required_values(rows: pd.DataFrame, path: str) -> None:
  """Raise ValueError naming the first row with a missing value outside NULLABLE_COLUMNS, or
  with a value that is not a number in a numeric column."""
  elwc.check_numeric_columns(rows, INTEGER_COLUMNS, path, integer=True)
  elwc.check_numeric_columns(rows, FLOAT_COLUMNS, path, integer=False)
  for column in REQUIRED_COLUMNS:
    if column in NULLABLE_COLUMNS:
      continue
    missing = rows[column].isna().to_numpy()
    if missing.any():
      row = int(np.flatnonzero(missing)[0])
      raise ValueError(
        f"{path}: data row {row + 1} (srch_id {rows['srch_id'].iloc[row]}) has no value in "
        f"column {column!r}; only {NULLABLE_DESCRIPTION} may be missing. Fix or drop that row."
      )


def _min_ranks(values: np.ndarray) -> np.ndarray:
  """1-based ascending ranks; equal values share the smallest rank."""
  return np.searchsorted(np.sort(values), values, side="left") + 1


def search_to_list(rows: pd.DataFrame) -> elwc.ListRecord:
  """Map the rows of one srch_id to a ListRecord, items in `position` order.

  Context values come from the first row; Expedia repeats them on every row of a search. A
  `prop_id` that appears again keeps only its first row.
  """
  rows = rows.sort_values("position", kind="stable")
  rows = rows.drop_duplicates("prop_id", keep="first")
  first = rows.iloc[0]
  search_id = int(first["srch_id"])
  context = {elwc.LIST_ID_FEATURE: f"srch_id={search_id}"}
  for column in CONTEXT_ID_COLUMNS:
    context[column] = int(first[column])
  for column in CONTEXT_NUMERIC_COLUMNS:
    _put_numeric(context, column, first[column], search_id)

  prices = rows["price_usd"].to_numpy(dtype=np.float64)
  median_price = float(np.median(prices))
  domestic = rows["prop_country_id"].to_numpy() == rows["visitor_location_country_id"].to_numpy()
  columns = {
    "prop_id": rows["prop_id"].to_numpy(dtype=np.int64).tolist(),
    "original_rank": rows["position"].to_numpy(dtype=np.int64).tolist(),
    "price_rank": _min_ranks(prices).tolist(),
    # NOTE: a search whose median price is 0 gets ratio 0 for every item.
    "price_to_list_median": (
      prices / median_price if median_price > 0 else np.zeros_like(prices)
    ).tolist(),
    "domestic_property": domestic.astype(np.int64).tolist(),
  }
  for column in EXAMPLE_NUMERIC_COLUMNS:
    values = rows[column].to_numpy(dtype=np.float64)
    missing = np.isnan(values)
    _check_missing(column, bool(missing.any()), search_id)
    columns[column] = np.where(missing, MISSING_DEFAULT, values).tolist()
    if column in NULLABLE_COLUMNS:
      columns[column + MISSING_SUFFIX] = missing.astype(np.int64).tolist()
  for task, source in LABEL_SOURCES.items():
    columns[task] = rows[source].to_numpy(dtype=np.int64).tolist()

  names = list(columns)
  examples = [dict(zip(names, values)) for values in zip(*columns.values())]
  return elwc.ListRecord(
    list_id=context[elwc.LIST_ID_FEATURE],
    region=str(context["site_id"]),
    context=context,
    examples=examples,
  )


def _check_missing(column: str, is_missing: bool, search_id: int) -> None:
  if is_missing and column not in NULLABLE_COLUMNS:
    raise ValueError(
      f"srch_id {search_id}: column {column!r} is missing; only {NULLABLE_DESCRIPTION} "
      "may be missing. Fix or drop that row."
    )


def _put_numeric(features: dict, column: str, value, search_id: int) -> None:
  """Set features[column] to the value, or to MISSING_DEFAULT plus a _missing flag."""
  is_missing = bool(pd.isna(value))
  _check_missing(column, is_missing, search_id)
  features[column] = MISSING_DEFAULT if is_missing else float(value)
  if column in NULLABLE_COLUMNS:
    features[column + MISSING_SUFFIX] = int(is_missing)


def search_splits(rows: pd.DataFrame, eval_fraction: float) -> dict:
  """Map each srch_id to TRAIN or EVAL; the latest searches by date_time go to EVAL."""
  times = pd.to_datetime(rows["date_time"])
  starts = (
    pd.DataFrame({"srch_id": rows["srch_id"], "time": times}).groupby("srch_id")["time"].min()
  )
  starts = starts.reset_index().sort_values(["time", "srch_id"], kind="stable")
  return elwc.assign_splits(starts["srch_id"].tolist(), eval_fraction)


def convert(
  input_path: str,
  output_dir: str,
  eval_fraction: float = elwc.DEFAULT_EVAL_FRACTION,
  num_shards: int = elwc.DEFAULT_NUM_SHARDS,
  overwrite: bool = False,
  log_every: int = elwc.DEFAULT_LOG_EVERY,
) -> dict:
  """Convert one Expedia CSV to output_dir/{train,eval}/*.tfrecord and stats.json.

  Returns:
    The stats written to output_dir/stats.json.
  """
  elwc.validate_eval_fraction(eval_fraction)
  rows = read_searches(input_path)
  check_required_values(rows, input_path)
  logging.info("%s: read %d rows from %s", DATASET, len(rows), input_path)
  splits = search_splits(rows, eval_fraction)
  counters = collections.Counter(rows_read=len(rows))

  with elwc.DatasetWriter(
    output_dir, TASKS, num_shards, overwrite, log_every, name=DATASET
  ) as writer:
    for search_id, search_rows in rows.groupby("srch_id", sort=False):
      record = search_to_list(search_rows)
      counters["random_order_lists"] += int(record.context["random_bool"] > 0)
      duplicates = len(search_rows) - len(record.examples)
      if duplicates:
        counters["duplicate_items_dropped"] += duplicates
        counters["lists_with_duplicate_items"] += 1
      serialized = elwc.serialize(elwc.make_example_list(record, FEATURE_DTYPES))
      writer.write(splits[search_id], serialized, record.region, elwc.labels_of(record, TASKS))
    return writer.commit(
      {
        "dataset": DATASET,
        "input": os.path.abspath(input_path),
        "flags": {"eval_fraction": eval_fraction, "num_shards": num_shards},
        "counters": dict(sorted(counters.items())),
      }
    )


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  FLAGS = flags.FLAGS
  convert(
    FLAGS.input,
    FLAGS.output_dir,
    FLAGS.eval_fraction,
    FLAGS.num_shards,
    FLAGS.overwrite,
    FLAGS.log_every,
  )


if __name__ == "__main__":
  elwc.define_input_flag(
    "Expedia hotel-search CSV with labels (Kaggle train layout; NULL = missing)."
  )
  elwc.define_output_flags()
  # The flags are defined in pipelines.elwc; adopting them lists them under --help.
  flags.adopt_module_key_flags(elwc)
  app.run(main)
