"""Convert trivago RecSys Challenge 2019 session logs to ELWC TFRecords.

One list per `clickout item` row: its `impressions` in shown order, with the aligned `prices`.

Windows and leakage. Within a session (actions ordered by timestamp, then step), the window of
a clickout is every action after the previous clickout (or the session start) up to and
including this clickout. Labels come from the window:
  engage   = 1 if the item had an item-level action in the window (interaction item
             image/info/rating/deals, search for item) or is the clicked-out item;
  clickout = 1 for the clicked-out item.
Features come only from the clickout row itself (its impressions, prices, platform, city,
device, current_filters and timestamp) and from actions before the window (the session
history). No other action of the window reaches a feature.

Rules for unusual rows (counted in stats.json under `counters`):
  - empty `impressions`: the clickout is skipped (`skipped_empty_impressions`);
  - `prices` count differs from the impressions count, or a price is not a number: skipped
    (`skipped_price_count_mismatch`, `skipped_invalid_price`);
  - the clicked item is not in the impressions: the list is kept with clickout 0 for every
    item, since its in-window interactions still label engage (`reference_not_in_impressions`);
  - an item id repeated in the impressions: the first occurrence and its price are kept, the
    later ones dropped (`duplicate_impressions_dropped` items in
    `lists_with_duplicate_impressions` lists).
A skipped clickout still ends its window, and its actions still enter the later history.
A file with no rows, a non-integer `timestamp` or `step`, or a text value that is not valid
UTF-8 is rejected with an error that names the row and column.

Split: sessions are ordered by their first timestamp; the latest `eval_fraction` of sessions
that have a clickout go to eval, with all their lists.

Usage:
  python -m pipelines.trivago --input trivago.parquet --output_dir /tmp/trivago_elwc
"""

import collections
import dataclasses
import os
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
from absl import app
from absl import flags
from absl import logging

from pipelines import elwc

DATASET = "trivago"
TASKS = ("engage", "clickout")

CLICKOUT_ACTION = "clickout item"
# Actions whose `reference` is an item id and which show interest in that item.
ITEM_ACTIONS = frozenset(
  {
    "interaction item image",
    "interaction item info",
    "interaction item rating",
    "interaction item deals",
    "search for item",
  }
)
LIST_SEPARATOR = "|"
NUM_FREQUENT_FILTERS = 50  # size of the current_filters vocabulary in configs/trivago.json
SECONDS_PER_HOUR = 3600
HOURS_PER_DAY = 24

FEATURE_DTYPES = {
  elwc.LIST_ID_FEATURE: elwc.STRING,
  # Context.
  "platform": elwc.STRING,
  "device": elwc.STRING,
  "city": elwc.STRING,
  "current_filters": elwc.STRING,
  "hour_utc": elwc.INT64,
  # Items.
  "item_id": elwc.STRING,
  "price": elwc.FLOAT,
  "price_rank": elwc.INT64,
  "price_to_list_median": elwc.FLOAT,
  "original_rank": elwc.INT64,
  "hist_clickout": elwc.INT64,
  "hist_interacted": elwc.INT64,
  "hist_interaction_count": elwc.INT64,
  "hist_impressed": elwc.INT64,
  # Labels.
  "engage": elwc.INT64,
  "clickout": elwc.INT64,
}

# Columns whose values must be integers, and columns of text (ids, names, "|"-joined lists).
INTEGER_COLUMNS = ("timestamp", "step")
TEXT_COLUMNS = ("session_id", "action_type", "reference", "platform", "city", "device",
                "current_filters", "impressions", "prices")
# Columns the converter reads from the log.
COLUMNS = (
  "session_id",
  "timestamp",
  "step",
  "action_type",
  "reference",
  "platform",
  "city",
  "device",
  "current_filters",
  "impressions",
  "prices",
)


@dataclasses.dataclass
class SkippedList:
  """A clickout that produced no list, with the counter name of the reason."""

  list_id: str
  reason: str


@dataclasses.dataclass
class SessionHistory:
  """Item-level actions of a session before the current window, keyed by item id."""

  clicked_out: set = dataclasses.field(default_factory=set)
  interaction_counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  impressed: set = dataclasses.field(default_factory=set)

  def add(self, action: dict) -> None:
    """Record one finished action (a window's actions enter only after its clickout)."""
    action_type = action["action_type"]
    if action_type == CLICKOUT_ACTION:
      self.clicked_out.add(action["reference"])
      self.impressed.update(split_field(action["impressions"]))
    elif action_type in ITEM_ACTIONS:
      self.interaction_counts[action["reference"]] += 1


def split_field(value) -> list:
  """Split a "|"-joined field; a missing value (None, NaN, NA) and "" give []."""
  if isinstance(value, str):
    return value.split(LIST_SEPARATOR) if value else []
  if value is None or pd.isna(value):
    return []
  return str(value).split(LIST_SEPARATOR)


def order_actions(actions: pd.DataFrame) -> pd.DataFrame:
  """Sort actions by session, then timestamp, then step.

  Within a session this equals step order, except where a session id was reused and its
  steps restart at 1; ordering by time keeps the two visits apart.
  """
  return actions.sort_values(["session_id", "timestamp", "step"], kind="stable").reset_index(
    drop=True
  )


def clickout_to_list(clickout: dict, window: Sequence[dict], history: SessionHistory):
  """Map one clickout row to a ListRecord, or to a SkippedList.

  Args:
    clickout: the `clickout item` row as a column -> value dict.
    window: the session's actions after the previous clickout and before this one. They set
      the engage labels and nothing else.
    history: the session's actions before the window.

  Returns:
    A (ListRecord or SkippedList, reference_in_impressions) pair.
  """
  list_id = f"{clickout['session_id']}:{clickout['step']}"
  impressions = split_field(clickout["impressions"])
  prices_text = split_field(clickout["prices"])
  if not impressions:
    return SkippedList(list_id, "skipped_empty_impressions"), False
  if len(prices_text) != len(impressions):
    return SkippedList(list_id, "skipped_price_count_mismatch"), False
  impressions, prices_text = first_occurrences(impressions, prices_text)
  try:
    prices = np.array([float(price) for price in prices_text], dtype=np.float64)
  except ValueError:
    return SkippedList(list_id, "skipped_invalid_price"), False

  clicked_item = clickout["reference"]
  engaged_items = {
    action["reference"] for action in window if action["action_type"] in ITEM_ACTIONS
  }
  engaged_items.add(clicked_item)

  price_ranks = min_ranks(prices)
  median_price = float(np.median(prices))
  examples = []
  for index, item_id in enumerate(impressions):
    interaction_count = history.interaction_counts.get(item_id, 0)
    examples.append(
      {
        "item_id": item_id,
        "price": prices[index],
        "price_rank": price_ranks[index],
        # NOTE: a list whose median price is 0 gets ratio 0 for every item.
        "price_to_list_median": prices[index] / median_price if median_price > 0 else 0.0,
        "original_rank": index + 1,
        "hist_clickout": int(item_id in history.clicked_out),
        "hist_interacted": int(interaction_count > 0),
        "hist_interaction_count": interaction_count,
        "hist_impressed": int(item_id in history.impressed),
        "engage": int(item_id in engaged_items),
        "clickout": int(item_id == clicked_item),
      }
    )

  context = {
    elwc.LIST_ID_FEATURE: list_id,
    "platform": clickout["platform"],
    "device": clickout["device"],
    "city": clickout["city"] if isinstance(clickout["city"], str) else "",
    "current_filters": split_field(clickout["current_filters"]),
    "hour_utc": (int(clickout["timestamp"]) // SECONDS_PER_HOUR) % HOURS_PER_DAY,
  }
  record = elwc.ListRecord(
    list_id=list_id, region=clickout["platform"], context=context, examples=examples
  )
  return record, clicked_item in impressions


def first_occurrences(item_ids: Sequence[str], prices: Sequence[str]) -> tuple:
  """Return (item_ids, prices) without the later occurrences of a repeated item id."""
  seen = set()
  kept = [index for index, item_id in enumerate(item_ids)
          if not (item_id in seen or seen.add(item_id))]
  return [item_ids[index] for index in kept], [prices[index] for index in kept]


def min_ranks(values: np.ndarray) -> list:
  """Return 1-based ascending ranks; equal values share the smallest rank (1 = cheapest)."""
  return (np.searchsorted(np.sort(values), values, side="left") + 1).tolist()


def session_to_lists(session_actions: Iterable[dict]) -> Iterator:
  """Yield (ListRecord or SkippedList, reference_in_impressions) for each clickout of a session.

  Args:
    session_actions: the rows of one session as column -> value dicts, already in
      `order_actions` order.
  """
  history = SessionHistory()
  window = []
  for action in session_actions:
    if action["action_type"] != CLICKOUT_ACTION:
      window.append(action)
      continue
    yield clickout_to_list(action, window, history)
    for finished in window:
      history.add(finished)
    history.add(action)
    window = []


def convert_session(session_actions: Iterable[dict], counters: collections.Counter) -> Iterator:
  """Yield the ListRecord of each kept clickout of a session; count the others in `counters`.

  Args:
    session_actions: the rows of one session in `order_actions` order, as in session_to_lists.
    counters: incremented under each SkippedList reason, under
      `reference_not_in_impressions` for a kept list whose clicked item is not in impressions,
      and under `duplicate_impressions_dropped` and `lists_with_duplicate_impressions`.
  """
  session_actions = list(session_actions)
  clickouts = [action for action in session_actions if action["action_type"] == CLICKOUT_ACTION]
  outcomes = session_to_lists(session_actions)
  for (outcome, reference_in_impressions), clickout in zip(outcomes, clickouts):
    if isinstance(outcome, SkippedList):
      counters[outcome.reason] += 1
      continue
    if not reference_in_impressions:
      counters["reference_not_in_impressions"] += 1
    duplicates = len(split_field(clickout["impressions"])) - len(outcome.examples)
    if duplicates:
      counters["duplicate_impressions_dropped"] += duplicates
      counters["lists_with_duplicate_impressions"] += 1
    yield outcome


def group_sessions(ordered_actions: Sequence[dict]) -> Iterator:
  """Yield (session_id, [actions]) for runs of equal session_id in `order_actions` order."""
  session_id, session_actions = None, []
  for action in ordered_actions:
    if action["session_id"] != session_id and session_actions:
      yield session_id, session_actions
      session_actions = []
    session_id = action["session_id"]
    session_actions.append(action)
  if session_actions:
    yield session_id, session_actions


def frequent_filter_values(current_filters: Iterable, top_k: int = NUM_FREQUENT_FILTERS) -> list:
  """Return the `top_k` most frequent filter values; ties go to the alphabetically first.

  Args:
    current_filters: the `current_filters` field of every clickout row ("|"-joined or missing).
  """
  return top_filter_values(count_filter_values(current_filters), top_k)


def count_filter_values(current_filters: Iterable) -> collections.Counter:
  """Return how many clickout rows hold each filter value ("|"-joined fields or missing)."""
  counts = collections.Counter()
  for value in current_filters:
    counts.update(split_field(value))
  return counts


def top_filter_values(counts: collections.Counter, top_k: int = NUM_FREQUENT_FILTERS) -> list:
  """Return the `top_k` values with the largest counts; ties go to the alphabetically first."""
  ranked = sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))
  return [value for value, _ in ranked[:top_k]]


def session_splits(actions: pd.DataFrame, eval_fraction: float) -> dict:
  """Map each session with a clickout to TRAIN or EVAL; the latest-starting sessions go to EVAL."""
  starts = actions.groupby("session_id", sort=False)["timestamp"].min()
  with_clickout = actions.loc[actions["action_type"] == CLICKOUT_ACTION, "session_id"].unique()
  starts = starts.loc[with_clickout].reset_index()
  starts = starts.sort_values(["timestamp", "session_id"], kind="stable")
  return elwc.assign_splits(starts["session_id"].tolist(), eval_fraction)


def read_actions(path: str) -> pd.DataFrame:
  """Read the parquet log and check its columns, its integer columns and its text."""
  actions = pd.read_parquet(path)
  check_columns(path, actions.columns)
  if actions.empty:
    raise ValueError(f"{path}: the file has no rows, so there is nothing to convert; check "
                     "--input.")
  return check_values(actions[list(COLUMNS)], path)


def check_values(actions: pd.DataFrame, path: str, first_row: int = 0) -> pd.DataFrame:
  """Return `actions` with text decoded as UTF-8, after checking the integer columns.

  Args:
    actions: consecutive rows of `path` with the columns of COLUMNS.
    first_row: 0-based index of the first of these rows in the file, for error messages.

  Raises:
    ValueError: naming the file, row and column of a non-integer `timestamp` or `step`, or
      of text bytes that are not valid UTF-8.
  """
  actions = actions.copy()
  for column in INTEGER_COLUMNS:
    _check_integer_column(actions[column], path, column, first_row)
  for column in TEXT_COLUMNS:
    actions[column] = _decode_text_column(actions[column], path, column, first_row)
  return actions


def _check_integer_column(values: pd.Series, path: str, column: str, first_row: int) -> None:
  numbers = pd.to_numeric(values, errors="coerce")
  invalid = (numbers.isna() | (numbers != np.floor(numbers))).to_numpy()
  if invalid.any():
    row = int(np.flatnonzero(invalid)[0])
    raise ValueError(f"{path}: row {first_row + row + 1} has {column}={values.iloc[row]!r}; "
                     f"{column} must be an integer. Fix or drop that row.")


def _decode_text_column(values: pd.Series, path: str, column: str, first_row: int) -> pd.Series:
  if values.dtype != object or not values.map(lambda value: isinstance(value, bytes)).any():
    return values
  decoded = []
  for row, value in enumerate(values):
    if isinstance(value, bytes):
      try:
        value = value.decode("utf-8")
      except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}: row {first_row + row + 1}, column {column!r} is not valid UTF-8 "
            f"({error.reason} at byte {error.start} of {value[:40]!r}); re-encode the file as "
            "UTF-8.") from error
    decoded.append(value)
  return pd.Series(decoded, index=values.index, dtype=object)


def check_columns(path: str, column_names: Iterable[str]) -> None:
  """Raise ValueError naming `path` if any of COLUMNS is not in `column_names`."""
  present = set(column_names)
  missing = [column for column in COLUMNS if column not in present]
  if missing:
    raise ValueError(
      f"{path}: missing columns {missing}; a trivago log needs {list(COLUMNS)}. "
      "Check that --input is a RecSys Challenge 2019 session file."
    )


def convert(
  input_path: str,
  output_dir: str,
  eval_fraction: float = elwc.DEFAULT_EVAL_FRACTION,
  num_shards: int = elwc.DEFAULT_NUM_SHARDS,
  overwrite: bool = False,
  log_every: int = elwc.DEFAULT_LOG_EVERY,
) -> dict:
  """Convert one trivago parquet file to output_dir/{train,eval}/*.tfrecord and stats.json.

  Returns:
    The stats written to output_dir/stats.json.
  """
  elwc.validate_eval_fraction(eval_fraction)
  actions = order_actions(read_actions(input_path))
  logging.info("%s: read %d rows from %s", DATASET, len(actions), input_path)
  splits = session_splits(actions, eval_fraction)
  clickouts = actions.loc[actions["action_type"] == CLICKOUT_ACTION, "current_filters"]
  counters = collections.Counter(rows_read=len(actions), clickout_rows=len(clickouts))

  with elwc.DatasetWriter(
    output_dir, TASKS, num_shards, overwrite, log_every, name=DATASET
  ) as writer:
    for session_id, session_actions in group_sessions(actions.to_dict("records")):
      if session_id not in splits:
        continue
      for record in convert_session(session_actions, counters):
        serialized = elwc.serialize(elwc.make_example_list(record, FEATURE_DTYPES))
        writer.write(splits[session_id], serialized, record.region, elwc.labels_of(record, TASKS))
    counters["sessions_train"] = sum(split == elwc.TRAIN for split in splits.values())
    counters["sessions_eval"] = sum(split == elwc.EVAL for split in splits.values())
    return writer.commit(
      {
        "dataset": DATASET,
        "input": os.path.abspath(input_path),
        "flags": {"eval_fraction": eval_fraction, "num_shards": num_shards},
        "counters": dict(sorted(counters.items())),
        "frequent_current_filters": frequent_filter_values(clickouts, NUM_FREQUENT_FILTERS),
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
  elwc.define_input_flag("trivago RecSys Challenge 2019 session log (.parquet).")
  elwc.define_output_flags()
  # The flags are defined in pipelines.elwc; adopting them lists them under --help.
  flags.adopt_module_key_flags(elwc)
  app.run(main)
