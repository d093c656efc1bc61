"""Tests of pipelines.synthetic: determinism, the funnel, oracle scores and the region effects."""

import dataclasses
import json
import os

import numpy as np
import pytest
from tensorflow_serving.apis import input_pb2

from pipelines import elwc
from pipelines import synthetic

SPEC_PATH = os.path.join(os.path.dirname(__file__), "..", "configs", "synthetic.json")
# More than one generation chunk, so chunk boundaries are covered.
NUM_LISTS = synthetic.CHUNK_LISTS + 500
LIST_SIZE = 8


def _generate(output_dir, seed=3, **overrides):
  arguments = dict(
    output_dir=str(output_dir),
    num_lists=NUM_LISTS,
    num_regions=6,
    list_size=LIST_SIZE,
    setting="differ",
    seed=seed,
    eval_fraction=0.2,
  )
  arguments.update(overrides)
  return synthetic.generate(**arguments)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
  output_dir = tmp_path_factory.mktemp("synthetic") / "out"
  stats = _generate(output_dir)
  return str(output_dir), stats


def _shard_bytes(output_dir):
  contents = {}
  for split in elwc.SPLITS:
    for name in sorted(os.listdir(os.path.join(output_dir, split))):
      with open(os.path.join(output_dir, split, name), "rb") as shard:
        contents[f"{split}/{name}"] = shard.read()
  return contents


def _labels_and_oracles(serialized):
  """Return {name: int or float array [num_lists, LIST_SIZE]} for labels and oracle scores."""
  names = synthetic.TASKS + tuple(synthetic.ORACLE_FEATURES.values())
  values = {name: [] for name in names}
  for record in serialized:
    example_list = input_pb2.ExampleListWithContext.FromString(record)
    for name in names:
      feature_lists = [example.features.feature[name] for example in example_list.examples]
      if name in synthetic.TASKS:
        values[name].append([feature.int64_list.value[0] for feature in feature_lists])
      else:
        values[name].append([feature.float_list.value[0] for feature in feature_lists])
  return {name: np.array(rows) for name, rows in values.items()}


def test_same_seed_gives_identical_bytes(generated, tmp_path):
  output_dir, stats = generated
  again_stats = _generate(tmp_path / "again")
  assert _shard_bytes(str(tmp_path / "again")) == _shard_bytes(output_dir)
  assert again_stats == stats


def test_other_seed_gives_other_lists_same_world(generated, tmp_path):
  output_dir, stats = generated
  other_stats = _generate(tmp_path / "other", seed=4)
  assert _shard_bytes(str(tmp_path / "other")) != _shard_bytes(output_dir)
  assert other_stats["world"] == stats["world"]


def test_counts_match_stats(generated, read_split):
  output_dir, stats = generated
  for split in elwc.SPLITS:
    serialized = read_split(output_dir, split)
    labels = _labels_and_oracles(serialized)
    split_stats = stats["splits"][split]
    assert len(serialized) == split_stats["lists"], split
    assert labels["click"].size == split_stats["items"], split
    for task in synthetic.TASKS:
      assert int(labels[task].sum()) == split_stats["positives"][task], (split, task)
  assert stats["splits"]["eval"]["lists"] == elwc.num_eval_groups(NUM_LISTS, 0.2)
  assert stats["splits"]["train"]["lists"] + stats["splits"]["eval"]["lists"] == NUM_LISTS


def test_labels_respect_funnel(generated, read_split):
  output_dir, stats = generated
  labels = _labels_and_oracles(read_split(output_dir, "train"))
  assert np.all(labels["add_to_cart"] <= labels["click"])
  assert np.all(labels["purchase"] <= labels["add_to_cart"])
  assert labels["purchase"].sum() > 0
  assert stats["splits"]["train"]["funnel_violations"] == 0
  assert stats["splits"]["eval"]["funnel_violations"] == 0


def test_oracle_scores_descend_along_funnel(generated, read_split):
  output_dir, _ = generated
  values = _labels_and_oracles(read_split(output_dir, "eval"))
  assert np.all(values["oracle_add_to_cart"] <= values["oracle_click"])
  assert np.all(values["oracle_purchase"] <= values["oracle_add_to_cart"])
  assert np.all((values["oracle_purchase"] > 0) & (values["oracle_click"] < 1))


def test_click_rate_falls_with_rank(generated, read_split):
  output_dir, _ = generated
  clicks = _labels_and_oracles(read_split(output_dir, "train"))["click"]
  assert clicks[:, 0].mean() > 2 * clicks[:, -1].mean()


def test_parses_with_feature_spec(generated, read_split, parse_with_spec):
  output_dir, stats = generated
  serialized = read_split(output_dir, "eval")
  parsed = parse_with_spec(serialized, SPEC_PATH)
  with open(SPEC_PATH) as spec_file:
    spec = json.load(spec_file)

  assert parsed["price"].shape == (len(serialized), spec["list_size"], 1)
  assert int(np.sum(parsed["list_size_actual"])) == stats["splits"]["eval"]["items"]
  regions = {region.decode() for region in parsed["region"].numpy().reshape(-1)}
  assert regions == set(stats["splits"]["eval"]["lists_per_region"])
  assert regions <= set(spec["context_features"][0]["vocabulary"])


def test_oracle_scores_are_not_model_inputs():
  with open(SPEC_PATH) as spec_file:
    spec = json.load(spec_file)
  names = {feature["name"] for feature in spec["context_features"] + spec["example_features"]}
  assert not names & set(synthetic.ORACLE_FEATURES.values())
  assert not names & set(synthetic.TASKS)


def test_fast_encoder_matches_protobuf():
  world = synthetic.make_world(4, "differ", world_seed=0)
  lists = synthetic.generate_lists(world, 40, 6, np.random.default_rng(0))
  fast = synthetic.encode_lists(lists, first_list_index=100)
  for index, record in enumerate(fast):
    expected = synthetic.list_to_record(lists, index, list_index=100 + index)
    assert record == elwc.serialize(elwc.make_example_list(expected, synthetic.FEATURE_DTYPES)), (
      index
    )


@pytest.mark.parametrize(
  "eval_fraction, full_split, empty_split", [(0.0, "train", "eval"), (1.0, "eval", "train")]
)
def test_eval_fraction_edges(tmp_path, read_split, eval_fraction, full_split, empty_split):
  output_dir = str(tmp_path / "out")
  stats = _generate(output_dir, num_lists=50, eval_fraction=eval_fraction)
  assert stats["splits"][empty_split]["lists"] == 0
  assert read_split(output_dir, empty_split) == []
  assert len(read_split(output_dir, full_split)) == 50


def test_too_many_regions_rejected(tmp_path):
  with pytest.raises(ValueError, match="num_regions must be in \\[1, 20\\].*received 21"):
    _generate(tmp_path / "out", num_regions=21)
  assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# Region effects: `differ` must reward a region-aware ranker, `shared` must not.


def _ndcg_at_10(scores, labels):
  """Mean NDCG@10 over lists with a positive; scores, labels: [num_lists, list_size]."""
  order = np.argsort(-scores, axis=1, kind="stable")
  gains = np.take_along_axis(labels, order, axis=1)[:, :10]
  discounts = 1.0 / np.log2(np.arange(2, gains.shape[1] + 2))
  ideal = -np.sort(-labels, axis=1)[:, :10]
  has_positive = ideal.sum(axis=1) > 0
  return float(np.mean((gains @ discounts)[has_positive] / (ideal @ discounts)[has_positive]))


def _oracle_and_region_blind_ndcg(setting):
  """NDCG@10 of purchase for the true scores and for scores that use mean region effects."""
  world = synthetic.make_world(8, setting, world_seed=0)
  lists = synthetic.generate_lists(world, 20000, 20, np.random.default_rng(5))
  blind_world = dataclasses.replace(
    world,
    purchase_price_effect=np.full(8, world.purchase_price_effect.mean()),
    purchase_domestic_effect=np.full(8, world.purchase_domestic_effect.mean()),
    purchase_shipping_effect=np.full(8, world.purchase_shipping_effect.mean()),
  )
  inputs = (
    lists["region"],
    (lists["quality"] - 3.8) / 0.6,
    np.log(lists["price_to_list_median"]),
    lists["domestic_seller"],
    lists["shipping_days"],
  )
  true_purchase = synthetic.purchase_probability(world, *inputs)
  blind_purchase = synthetic.purchase_probability(blind_world, *inputs)
  blind_scores = lists["oracle_purchase"] / true_purchase * blind_purchase
  labels = lists["purchase"].astype(np.float64)
  return _ndcg_at_10(lists["oracle_purchase"], labels), _ndcg_at_10(blind_scores, labels)


def test_differ_setting_rewards_region_awareness():
  oracle, region_blind = _oracle_and_region_blind_ndcg("differ")
  assert oracle - region_blind > 0.03


def test_shared_setting_has_no_region_effect():
  oracle, region_blind = _oracle_and_region_blind_ndcg("shared")
  assert oracle == pytest.approx(region_blind, abs=1e-12)


def test_differ_effects_change_sign_across_regions():
  world = synthetic.make_world(5, "differ", world_seed=0)
  assert world.purchase_price_effect.min() < 0 < world.purchase_price_effect.max()
  assert world.purchase_domestic_effect.min() < 0 < world.purchase_domestic_effect.max()
  shared = synthetic.make_world(5, "shared", world_seed=0)
  assert np.ptp(shared.purchase_price_effect) == 0
