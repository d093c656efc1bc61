"""Unseen, empty and very long region strings take the out-of-vocabulary path in training,
evaluation and serving alike, and lists without a bag feature value score finitely."""

import numpy as np
import pytest
import tensorflow as tf

from elwc_fixtures import fixture_spec, make_elwc
from export.saved_model import export_saved_model
from seqmd_tf import config as config_lib
from seqmd_tf import data as data_lib
from seqmd_tf import model as model_lib

LONG_STRING = "x" * 10_000
# Region values that are not in the fixture vocabulary (DE, US, BR).
OOV_REGIONS = {"unseen": "FR", "empty": "", "long": LONG_STRING, "not_utf8": b"\xff\xfe"}


def _list(region, item_id="a", filters=("wifi",)):
  return make_elwc(region, 3, list(filters), [10.0, 20.0], [0.5, -0.5], [item_id, "b"],
                   [1, 0], [0, 0])


@pytest.fixture(scope="module")
def scorer():
  tf.keras.utils.set_random_seed(5)
  return model_lib.build_scorer(fixture_spec(), config_lib.ModelConfig())


@pytest.fixture(scope="module")
def serve(scorer, tmp_path_factory):
  path = export_saved_model(scorer, fixture_spec(), str(tmp_path_factory.mktemp("export")),
                            version=1)
  return tf.saved_model.load(path).signatures["serving_default"]


def _scores(scorer, records):
  features, _ = data_lib.parse_elwc(tf.constant(records), fixture_spec())
  return scorer(features, training=False)["score"].numpy()[:, :2]


def test_oov_regions_share_one_score(scorer):
  scores = _scores(scorer, [_list(r) for r in OOV_REGIONS.values()])
  assert np.all(np.isfinite(scores))
  for row in scores[1:]:
    np.testing.assert_allclose(row, scores[0], atol=1e-6)


def test_oov_region_differs_from_known(scorer):
  scores = _scores(scorer, [_list("US"), _list("FR")])
  assert not np.allclose(scores[0], scores[1])


def test_long_item_id_scores_finitely(scorer):
  scores = _scores(scorer, [_list("US", item_id=LONG_STRING)])
  assert np.all(np.isfinite(scores))


def test_serving_matches_training_parse(scorer, serve):
  records = [_list(r) for r in OOV_REGIONS.values()] + [_list("US", item_id=LONG_STRING)]
  served = serve(examples=tf.constant(records))["score"].numpy()[:, :2]
  np.testing.assert_allclose(served, _scores(scorer, records), atol=1e-5)


def test_batch_without_bag_values_scores_finitely(scorer):
  """No list of the batch has a `filters` value, so the parsed bag has 0 columns."""
  records = [_list("US", filters=()), _list("DE", filters=())]
  features, _ = data_lib.parse_elwc(tf.constant(records), fixture_spec())
  assert features["filters"].shape == (2, 1)
  assert np.all(np.isfinite(scorer(features, training=False)["score"].numpy()))
