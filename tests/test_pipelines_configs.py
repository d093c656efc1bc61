"""Tests that configs/<dataset>.json agree with what each converter writes."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from pipelines import aliexpress
from pipelines import elwc
from pipelines import expedia
from pipelines import synthetic
from pipelines import trivago
from seqmd_tf.feature_spec import load_feature_spec

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "configs")
CONVERTERS = {
  "trivago": trivago,
  "expedia": expedia,
  "aliexpress": aliexpress,
  "synthetic": synthetic,
}
TRIVAGO_PATH = "/work/shared/data/trivago-recsys2019/trivago_2018-11-07_08_part1.parquet"
EXPEDIA_PATH = "/work/shared/data/expedia-icdm2013/expedia_vu_train_1000searches.csv"
ALIEXPRESS_PATH = "/work/shared/data/aliexpress/aliexpress_us_test_sample.csv"

# Features whose group follows from their kind. Money, currency and distance values depend on
# the market. Item quality, the original rank and the session history do not.
EXPECTED_GROUPS = {
  "trivago": {
    "price": "region_driven",
    "price_rank": "region_driven",
    "price_to_list_median": "region_driven",
    "device": "region_driven",
    "original_rank": "region_invariant",
    "hist_clickout": "region_invariant",
    "hist_interaction_count": "region_invariant",
  },
  "expedia": {
    "price_usd": "region_driven",
    "prop_log_historical_price": "region_driven",
    "orig_destination_distance": "region_driven",
    "comp1_rate": "region_driven",
    "prop_starrating": "region_invariant",
    "prop_review_score": "region_invariant",
    "original_rank": "region_invariant",
  },
  "aliexpress": {"numerical_1": "region_driven", "categorical_1": "region_invariant"},
  "synthetic": {
    "price": "region_driven",
    "shipping_days": "region_driven",
    "domestic_seller": "region_driven",
    "relevance": "region_invariant",
    "quality": "region_invariant",
    "original_rank": "region_invariant",
  },
}


def _raw_spec(name):
  with open(os.path.join(CONFIG_DIR, f"{name}.json")) as spec_file:
    return json.load(spec_file)


@pytest.mark.parametrize("name", sorted(CONVERTERS))
def test_spec_loads(name):
  spec = load_feature_spec(os.path.join(CONFIG_DIR, f"{name}.json"))
  assert spec.name == name
  assert spec.tasks == tuple(CONVERTERS[name].TASKS)


@pytest.mark.parametrize("name", sorted(CONVERTERS))
def test_spec_dtypes_match_converter(name):
  spec = _raw_spec(name)
  dtypes = CONVERTERS[name].FEATURE_DTYPES
  for feature in spec["context_features"] + spec["example_features"]:
    assert dtypes.get(feature["name"]) == feature["dtype"], feature["name"]


@pytest.mark.parametrize("name", sorted(CONVERTERS))
def test_region_is_categorical_context_with_vocabulary(name):
  spec = _raw_spec(name)
  region = next(
    feature for feature in spec["context_features"] if feature["name"] == spec["region"]["feature"]
  )
  assert region["type"] == "categorical"
  assert len(region["vocabulary"]) > 0


@pytest.mark.parametrize("name", sorted(CONVERTERS))
def test_bookkeeping_features_are_not_model_inputs(name):
  spec = _raw_spec(name)
  names = {feature["name"] for feature in spec["context_features"] + spec["example_features"]}
  assert elwc.LIST_ID_FEATURE not in names
  assert not names & set(spec["tasks"])


@pytest.mark.parametrize("name", sorted(EXPECTED_GROUPS))
def test_feature_groups(name):
  spec = _raw_spec(name)
  groups = {
    feature["name"]: feature["group"]
    for feature in spec["context_features"] + spec["example_features"]
  }
  for feature, group in EXPECTED_GROUPS[name].items():
    assert groups[feature] == group, feature


def _first_record(name):
  if name == "trivago":
    actions = trivago.order_actions(pd.read_parquet(TRIVAGO_PATH).head(200))
    _, session = next(trivago.group_sessions(actions.to_dict("records")))
    return next(outcome for outcome, _ in trivago.session_to_lists(session))
  if name == "expedia":
    rows = expedia.read_searches(EXPEDIA_PATH)
    return expedia.search_to_list(rows[rows["srch_id"] == rows["srch_id"].iloc[0]])
  if name == "aliexpress":
    rows = aliexpress.read_rows(ALIEXPRESS_PATH)
    return aliexpress.search_to_list(rows[rows["search_id"] == rows["search_id"].iloc[0]], "US")
  world = synthetic.make_world(3, "differ", world_seed=0)
  return synthetic.list_to_record(
    synthetic.generate_lists(world, 1, 5, np.random.default_rng(0)), 0, 0
  )


@pytest.mark.parametrize("name", sorted(CONVERTERS))
def test_records_hold_every_spec_feature(name):
  data_path = {"trivago": TRIVAGO_PATH, "expedia": EXPEDIA_PATH, "aliexpress": ALIEXPRESS_PATH}.get(
    name
  )
  if data_path and not os.path.exists(data_path):
    pytest.skip(f"{data_path} is not present")
  spec = _raw_spec(name)
  record = _first_record(name)
  assert {feature["name"] for feature in spec["context_features"]} <= set(record.context)
  for item in record.examples:
    assert {feature["name"] for feature in spec["example_features"]} <= set(item)
    assert set(spec["tasks"]) <= set(item)
