"""Every model through build_scorer on the fixture spec: trains, saves, loads and exports."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from elwc_fixtures import fixture_spec, random_records, write_records
from export.saved_model import export_saved_model
from seqmd_tf import config as config_lib
from seqmd_tf import data as data_lib
from seqmd_tf import model as model_lib
from seqmd_tf import training

BATCH_SIZE = 8
STEPS = 2
BASELINES = ("single_task", "shared_bottom", "mmoe", "ple", "adatt", "esmm", "aitm")
# Each baseline is trained with the MD region mask in front (the plug-and-play use), and SEQ is
# SEQ+MD without it. The "off" form of every baseline is built in a test of its own.
TRAINED_CASES = [(name, "element") for name in BASELINES] + [("seq", "off"),
                                                                ("seq_md", "element")]
# Small widths keep the whole file fast. Two levels and two task experts per task keep every
# code path in the graph: intermediate PLE and AdaTT levels, and learned native weights.
SMALL_MODEL = dict(shared_units=(8,), tower_units=(4,), gru_units=4, mask_hidden_units=(4,),
                   num_experts=2, expert_units=(8,), num_task_experts=2, num_shared_experts=1,
                   ple_levels=2, adatt_levels=2, aitm_units=4)


def _model_config(name, region_mask):
  return dataclasses.replace(config_lib.ModelConfig(), model=name, region_mask=region_mask,
                             **SMALL_MODEL)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  root = tmp_path_factory.mktemp("elwc")
  write_records(str(root / "train" / "part-0.tfrecord"), random_records(48, seed=0))
  write_records(str(root / "eval" / "part-0.tfrecord"), random_records(16, seed=1))
  return str(root / "train" / "*.tfrecord"), str(root / "eval" / "*.tfrecord")


@pytest.fixture(scope="module")
def eval_batch(files):
  """Serialized eval lists and the features parsed from them."""
  serialized = next(iter(tf.data.TFRecordDataset(data_lib.list_files(files[1])).batch(16)))
  features, _ = data_lib.parse_elwc(serialized, fixture_spec())
  return serialized, features


@pytest.fixture(scope="module", params=TRAINED_CASES, ids=lambda case: "-".join(case))
def trained(request, files, tmp_path_factory):
  name, region_mask = request.param
  train_config = config_lib.TrainConfig(batch_size=BATCH_SIZE, epochs=1, steps_per_epoch=STEPS)
  paths = training.RunPaths(files[0], None, str(tmp_path_factory.mktemp(name)))
  trainer = training.train(fixture_spec(), _model_config(name, region_mask), train_config,
                           paths, verbose=0)
  return {"trainer": trainer, "region_mask": region_mask}


def test_registry_matches_model_names():
  assert set(model_lib.MODELS) == set(config_lib.MODEL_NAMES)


def test_trains_finite_loss(trained):
  trainer = trained["trainer"]

  losses = trainer.history.history["loss"]

  assert int(trainer.optimizer.iterations) == STEPS
  assert np.isfinite(losses).all()


def test_region_mask_in_front(trained):
  mask_layer = model_lib.region_mask_layer(trained["trainer"].scorer)

  assert (mask_layer is not None) == (trained["region_mask"] != "off")


def test_keras_save_load_same_scores(trained, eval_batch, tmp_path):
  scorer = trained["trainer"].scorer
  _, features = eval_batch
  path = str(tmp_path / "scorer")

  scorer.save(path)
  loaded = tf.keras.models.load_model(path)

  expected = scorer(features, training=False)
  actual = loaded(features, training=False)
  for name in ("score",) + fixture_spec().tasks:
    assert np.isfinite(expected[name].numpy()).all(), name
    np.testing.assert_allclose(actual[name].numpy(), expected[name].numpy(), atol=1e-5)


def test_export_serving_signature_same_scores(trained, eval_batch, tmp_path):
  spec = fixture_spec()
  scorer = trained["trainer"].scorer
  serialized, features = eval_batch

  export_path = export_saved_model(scorer, spec, str(tmp_path / "export"), version=1)
  serve = tf.saved_model.load(export_path).signatures["serving_default"]
  actual = serve(examples=serialized)

  expected = scorer(features, training=False)
  assert set(actual) == {"score", *spec.tasks}
  for name in actual:
    np.testing.assert_allclose(actual[name].numpy(), expected[name].numpy(), atol=1e-5)


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_builds_without_region_mask(name, eval_batch):
  spec = fixture_spec()
  _, features = eval_batch
  scorer = model_lib.build_scorer(spec, _model_config(name, "off"))

  outputs = scorer(features, training=False)

  assert model_lib.region_mask_layer(scorer) is None
  for task in spec.tasks:
    assert outputs[task].shape == (16, spec.list_size), task
    assert np.isfinite(outputs[task].numpy()).all(), task


def test_train_flags_fill_model_config():
  from seqmd_tf import train  # pylint: disable=g-import-not-at-top

  try:
    train.FLAGS(["train", "--model=adatt", "--num_experts=3", "--expert_units=16,8",
                 "--num_task_experts=1", "--num_shared_experts=0", "--ple_levels=3",
                 "--adatt_levels=1", "--aitm_units=12"])
    model_config, _ = train.configs_from_flags()
  finally:
    train.FLAGS.unparse_flags()

  assert model_config.model == "adatt"
  assert model_config.num_experts == 3
  assert model_config.expert_units == (16, 8)
  assert model_config.num_task_experts == 1
  assert model_config.num_shared_experts == 0
  assert model_config.ple_levels == 3
  assert model_config.adatt_levels == 1
  assert model_config.aitm_units == 12


def test_train_model_flag_lists_every_model():
  from seqmd_tf import train  # pylint: disable=g-import-not-at-top

  assert train.FLAGS["model"].parser.enum_values == list(config_lib.MODEL_NAMES)
