"""Training on small real TFRecords: the loss falls, checkpoints resume, save/load and export agree."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from export.saved_model import export_saved_model
from seqmd_tf import config as config_lib
from seqmd_tf import data as data_lib
from seqmd_tf import model as model_lib
from seqmd_tf import training
from elwc_fixtures import fixture_spec, random_records, write_records

BATCH_SIZE = 16


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  root = tmp_path_factory.mktemp("elwc")
  write_records(str(root / "train" / "part-0.tfrecord"), random_records(320, seed=0))
  write_records(str(root / "eval" / "part-0.tfrecord"), random_records(64, seed=1))
  return str(root / "train" / "*.tfrecord"), str(root / "eval" / "*.tfrecord")


@pytest.fixture(scope="module")
def trained(files, tmp_path_factory):
  """A seq_md model trained for 20 steps, and its first-batch loss before and after."""
  spec = fixture_spec()
  train_config = config_lib.TrainConfig(batch_size=BATCH_SIZE, epochs=1, steps_per_epoch=20,
                                        learning_rate=3e-3)
  paths = training.RunPaths(files[0], files[1], str(tmp_path_factory.mktemp("model")))
  batch = next(iter(data_lib.make_dataset(files[0], spec, BATCH_SIZE)))

  def loss_of(trainer):
    outputs = trainer.scorer(batch[0], training=False)
    terms = trainer.ranking_loss(batch[1], {t: outputs[t] for t in spec.tasks},
                                 batch[0][data_lib.MASK_FEATURE])
    return float(terms["loss"])

  tf.keras.utils.set_random_seed(train_config.seed)
  untrained = training.build_trainer(spec, config_lib.ModelConfig(), train_config)
  model_lib.feature_encoder(untrained.scorer).adapt(
      data_lib.make_dataset(files[0], spec, BATCH_SIZE))
  trainer = training.train(spec, config_lib.ModelConfig(), train_config, paths, verbose=0)
  return {"trainer": trainer, "spec": spec, "batch": batch,
          "loss_before": loss_of(untrained), "loss_after": loss_of(trainer), "paths": paths}


def test_twenty_steps_lower_loss(trained):
  assert np.isfinite(trained["loss_after"])
  assert trained["loss_after"] < trained["loss_before"]


def test_optimizer_ran_twenty_steps(trained):
  assert int(trained["trainer"].optimizer.iterations) == 20


def test_config_written_next_to_checkpoints(trained):
  assert os.path.isfile(os.path.join(trained["paths"].model_dir, "config.json"))


def test_keras_save_load_same_scores(trained, tmp_path):
  scorer = trained["trainer"].scorer
  features = trained["batch"][0]
  path = str(tmp_path / "scorer")
  scorer.save(path)
  loaded = tf.keras.models.load_model(path)
  expected = scorer(features, training=False)
  actual = loaded(features, training=False)
  for name in ("score",) + trained["spec"].tasks:
    np.testing.assert_allclose(actual[name].numpy(), expected[name].numpy(), atol=1e-5)


def test_exported_signature_matches_in_process(trained, files, tmp_path):
  spec = trained["spec"]
  scorer = trained["trainer"].scorer
  export_path = export_saved_model(scorer, spec, str(tmp_path / "export"), version=7)
  assert os.path.basename(export_path) == "7"

  serialized = next(iter(tf.data.TFRecordDataset(data_lib.list_files(files[1])).batch(32)))
  features, _ = data_lib.parse_elwc(serialized, spec)
  expected = scorer(features, training=False)
  serve = tf.saved_model.load(export_path).signatures["serving_default"]
  actual = serve(examples=serialized)
  assert set(actual) == {"score", *spec.tasks}
  for name in actual:
    np.testing.assert_allclose(actual[name].numpy(), expected[name].numpy(), atol=1e-5)


def test_export_never_overwrites_version(trained, tmp_path):
  base = str(tmp_path / "export")
  export_saved_model(trained["trainer"].scorer, trained["spec"], base, version=3)
  with pytest.raises(Exception, match="already exists"):
    export_saved_model(trained["trainer"].scorer, trained["spec"], base, version=3)
  assert sorted(os.listdir(base)) == ["3"]


def test_saved_model_cli_shows_signature(trained, tmp_path):
  export_path = export_saved_model(trained["trainer"].scorer, trained["spec"],
                                   str(tmp_path / "export"), version=1)
  cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
  shown = subprocess.run([cli, "show", "--dir", export_path, "--all"], check=True,
                         capture_output=True, text=True).stdout
  assert "signature_def['serving_default']" in shown
  assert "dtype: DT_STRING" in shown
  assert "outputs['score']" in shown


def test_rerun_resumes_from_checkpoint(files, tmp_path):
  spec = fixture_spec()
  paths = training.RunPaths(files[0], None, str(tmp_path / "model"))
  first = config_lib.TrainConfig(batch_size=BATCH_SIZE, epochs=1, steps_per_epoch=5)
  training.train(spec, config_lib.ModelConfig(), first, paths, verbose=0)
  second = config_lib.TrainConfig(batch_size=BATCH_SIZE, epochs=2, steps_per_epoch=5)
  trainer = training.train(spec, config_lib.ModelConfig(), second, paths, verbose=0)
  # Resumed after epoch 1: this run trains only the second epoch (index 1).
  assert trainer.history.epoch == [1]
  assert int(trainer.optimizer.iterations) == 10


def test_resume_with_other_architecture_rejected(files, tmp_path):
  spec = fixture_spec()
  paths = training.RunPaths(files[0], None, str(tmp_path / "model"))
  train_config = config_lib.TrainConfig(batch_size=BATCH_SIZE, epochs=1, steps_per_epoch=2)
  training.train(spec, config_lib.ModelConfig(gru_units=8), train_config, paths, verbose=0)
  with pytest.raises(training.IncompatibleResumeError) as error:
    training.train(spec, config_lib.ModelConfig(gru_units=16), train_config, paths, verbose=0)
  assert "--gru_units" in str(error.value)
  assert "Use a new --model_dir" in str(error.value)
