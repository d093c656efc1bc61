"""Export for TF Serving: layout, signatures, warmup, server configs and the export CLI."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import message_factory
from google.protobuf import text_format
from google.protobuf import wrappers_pb2
from tensorflow_serving.apis import input_pb2
from tensorflow_serving.config import model_server_config_pb2

from elwc_fixtures import fixture_spec, random_records, write_records
from export import restore
from export import serving_inputs
from export import server_config
from export import warmup
from export.export_model import export_from_model_dir
from export.saved_model import ExportError, export_saved_model, next_version
from seqmd_tf import config as config_lib
from seqmd_tf import training
from serving_stub.fixtures import (MODEL_NAME, SMALL_MODEL, build_scorer, export_scorer,
                                   reference_outputs)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def scorer():
  return build_scorer(seed=2)


@pytest.fixture(scope="module")
def lists():
  return random_records(10, seed=4)


@pytest.fixture(scope="module")
def exported(scorer, lists, tmp_path_factory):
  base = tmp_path_factory.mktemp("export") / MODEL_NAME
  return export_scorer(scorer, str(base), version=5, warmup_lists=lists)


def split_elwc(serialized):
  elwc = input_pb2.ExampleListWithContext.FromString(serialized)
  return elwc.context.SerializeToString(), [e.SerializeToString() for e in elwc.examples]


# Version directories.


def test_next_version_above_existing(tmp_path):
  os.makedirs(tmp_path / "5")
  os.makedirs(tmp_path / "99999999999")
  os.makedirs(tmp_path / ".tmp-7-1")
  assert next_version(str(tmp_path)) == 100000000000
  assert next_version(str(tmp_path / "missing")) >= 1700000000


def test_existing_version_kept_without_overwrite(exported, scorer):
  base = os.path.dirname(exported)
  with pytest.raises(ExportError, match="already exists"):
    export_saved_model(scorer, fixture_spec(), base, version=5)
  assert sorted(os.listdir(base)) == ["5"]
  assert os.path.isfile(os.path.join(exported, "saved_model.pb"))


def test_overwrite_replaces_version(scorer, tmp_path):
  base = tmp_path / "m"
  os.makedirs(base / "2")
  marker = base / "2" / "marker"
  marker.write_text("old version")
  path = export_saved_model(scorer, fixture_spec(), str(base), version=2, overwrite=True)
  assert path == str(base / "2")
  assert not os.path.exists(marker)
  assert os.path.isfile(base / "2" / "saved_model.pb")
  assert sorted(os.listdir(base)) == ["2"]


# Signatures.


def test_predict_examples_equals_serving_default(exported, lists):
  signatures = tf.saved_model.load(exported).signatures
  batched = signatures["serving_default"](examples=tf.constant(lists))
  for index, record in enumerate(lists[:4]):
    context, examples = split_elwc(record)
    single = signatures["predict_examples"](context=tf.constant(context),
                                            examples=tf.constant(examples, tf.string))
    for name, value in single.items():
      assert value.shape == (1, fixture_spec().list_size)
      np.testing.assert_allclose(value.numpy()[0], batched[name].numpy()[index], atol=TOLERANCE)


def test_serving_default_matches_in_process(exported, scorer, lists):
  outputs = tf.saved_model.load(exported).signatures["serving_default"](examples=tf.constant(lists))
  expected = reference_outputs(scorer, lists)
  assert set(outputs) == set(expected)
  for name, value in expected.items():
    np.testing.assert_allclose(outputs[name].numpy(), value, atol=TOLERANCE)


def test_build_elwc_equals_protobuf(lists):
  for record in lists[:3]:
    context, examples = split_elwc(record)
    built = serving_inputs.build_elwc(tf.constant(context), tf.constant(examples, tf.string))
    assert built.shape == (1,)
    parsed = input_pb2.ExampleListWithContext.FromString(built.numpy()[0])
    assert parsed == input_pb2.ExampleListWithContext.FromString(record)


# Warmup requests.


def test_warmup_requests_from_lists(exported, lists):
  requests = warmup.read_warmup_requests(exported)
  sizes = [request.inputs["examples"].tensor_shape.dim[0].size for request in requests]
  assert sizes == [1] * warmup.SINGLE_LIST_REQUESTS + [warmup.MAX_LISTS_PER_REQUEST]
  assert {request.model_spec.signature_name for request in requests} == {"serving_default"}
  assert {request.model_spec.name for request in requests} == {MODEL_NAME}
  first = tf.make_ndarray(requests[0].inputs["examples"])
  assert first.tolist() == [lists[0]]


def test_warmup_requests_run(exported):
  serve = tf.saved_model.load(exported).signatures["serving_default"]
  for request in warmup.read_warmup_requests(exported):
    outputs = serve(examples=tf.constant(tf.make_ndarray(request.inputs["examples"])))
    assert np.all(np.isfinite(outputs["score"].numpy()))


# Server configuration files.


def _text_proto_classes(messages):
  """Build message classes for text-proto checks.

  `messages` maps a message name to [(field name, number, type)], where type is a
  FieldDescriptorProto type name such as "TYPE_BOOL" or a message name such as
  ".google.protobuf.Int64Value".
  """
  file_proto = descriptor_pb2.FileDescriptorProto(
      name="text_proto_check.proto", package="check",
      dependency=["google/protobuf/wrappers.proto"])
  for name, fields in messages.items():
    message = file_proto.message_type.add(name=name)
    for field_name, number, type_name in fields:
      field = message.field.add(name=field_name, number=number,
                                label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
      if type_name.startswith("."):
        field.type = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
        field.type_name = type_name
      else:
        field.type = getattr(descriptor_pb2.FieldDescriptorProto, type_name)
  pool = descriptor_pool.DescriptorPool()
  pool.Add(descriptor_pb2.FileDescriptorProto.FromString(wrappers_pb2.DESCRIPTOR.serialized_pb))
  pool.Add(file_proto)
  return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"check.{name}"))
          for name in messages}


@pytest.fixture(scope="module")
def config_paths(exported):
  return server_config.write_server_configs(os.path.dirname(os.path.dirname(exported)))


def test_models_config_lists_model(config_paths, exported):
  with open(config_paths[server_config.MODELS_CONFIG]) as f:
    config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
  models = config.model_config_list.config
  assert [model.name for model in models] == [MODEL_NAME]
  assert models[0].base_path == os.path.dirname(exported)
  assert models[0].model_platform == "tensorflow"
  assert models[0].model_version_policy.latest.num_versions == 1


def test_docker_models_config_under_models(config_paths):
  with open(config_paths[server_config.DOCKER_MODELS_CONFIG]) as f:
    config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
  assert config.model_config_list.config[0].base_path == f"/models/{MODEL_NAME}"


def test_models_config_keeps_pinned_version(tmp_path):
  # The config writer only looks for numeric version directories, so empty ones suffice.
  os.makedirs(tmp_path / "first" / "1")
  path = server_config.write_server_configs(str(tmp_path))[server_config.MODELS_CONFIG]
  config = text_format.Parse(open(path).read(), model_server_config_pb2.ModelServerConfig())
  config.model_config_list.config[0].model_version_policy.specific.versions.append(1)
  with open(path, "w") as f:
    f.write(text_format.MessageToString(config))

  os.makedirs(tmp_path / "second" / "1")
  server_config.write_server_configs(str(tmp_path))
  config = text_format.Parse(open(path).read(), model_server_config_pb2.ModelServerConfig())
  models = {model.name: model for model in config.model_config_list.config}
  assert sorted(models) == ["first", "second"]
  assert list(models["first"].model_version_policy.specific.versions) == [1]
  assert models["second"].model_version_policy.latest.num_versions == 1


def test_batching_parameters_parse(config_paths):
  # Field numbers and types of BatchingParameters in TF Serving's session_bundle_config.proto.
  classes = _text_proto_classes({"BatchingParameters": [
      ("max_batch_size", 1, ".google.protobuf.Int64Value"),
      ("batch_timeout_micros", 2, ".google.protobuf.Int64Value"),
      ("max_enqueued_batches", 3, ".google.protobuf.Int64Value"),
      ("num_batch_threads", 4, ".google.protobuf.Int64Value")]})
  with open(config_paths[server_config.BATCHING_PARAMETERS]) as f:
    parameters = text_format.Parse(f.read(), classes["BatchingParameters"]())
  assert parameters.max_batch_size.value >= warmup.MAX_LISTS_PER_REQUEST
  assert parameters.num_batch_threads.value >= 1


def test_monitoring_config_parse(config_paths):
  # Field numbers and types of TF Serving's monitoring_config.proto.
  classes = _text_proto_classes({
      "PrometheusConfig": [("enable", 1, "TYPE_BOOL"), ("path", 2, "TYPE_STRING")],
      "MonitoringConfig": [("prometheus_config", 1, ".check.PrometheusConfig")]})
  with open(config_paths[server_config.MONITORING_CONFIG]) as f:
    config = text_format.Parse(f.read(), classes["MonitoringConfig"]())
  assert config.prometheus_config.enable
  assert config.prometheus_config.path == server_config.PROMETHEUS_PATH


# Export from a training run's directory.


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
  """A two-step training run of the small model, with its trainer."""
  root = tmp_path_factory.mktemp("run")
  write_records(str(root / "train" / "part-0.tfrecord"), random_records(64, seed=5))
  write_records(str(root / "eval" / "part-0.tfrecord"), random_records(16, seed=6))
  paths = training.RunPaths(str(root / "train" / "*.tfrecord"),
                            str(root / "eval" / "*.tfrecord"), str(root / "model"))
  train_config = config_lib.TrainConfig(batch_size=16, epochs=1, steps_per_epoch=2,
                                        learning_rate=1e-2)
  trainer = training.train(fixture_spec(), config_lib.ModelConfig(**SMALL_MODEL), train_config,
                           paths, verbose=0)
  return {"trainer": trainer, "paths": paths, "root": root}


def test_export_cli_restores_final_weights(trained_run, tmp_path):
  export_base = tmp_path / "serving"
  result = subprocess.run(
      [sys.executable, "-m", "export.export_model", f"--model_dir={trained_run['paths'].model_dir}",
       f"--export_base={export_base}", f"--model_name={MODEL_NAME}", "--version=4"],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  version_dir = export_base / MODEL_NAME / "4"
  assert os.path.isfile(version_dir / "saved_model.pb")
  assert os.path.isfile(export_base / server_config.MODELS_CONFIG)
  assert warmup.read_warmup_requests(str(version_dir))

  lists = random_records(8, seed=6)
  serve = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
  outputs = serve(examples=tf.constant(lists))
  expected = reference_outputs(trained_run["trainer"].scorer, lists)
  for name, value in expected.items():
    np.testing.assert_allclose(outputs[name].numpy(), value, atol=TOLERANCE, err_msg=name)


def test_restored_weights_equal_trained(trained_run):
  model_dir = trained_run["paths"].model_dir
  restored, source = restore.restore_scorer(model_dir, restore.read_run(model_dir))
  assert source == trained_run["paths"].final_scorer_dir
  for restored_weight, trained_weight in zip(restored.weights, trained_run["trainer"].scorer.weights):
    np.testing.assert_array_equal(restored_weight.numpy(), trained_weight.numpy())


def test_backup_used_without_final_scorer(trained_run, tmp_path):
  model_dir = tmp_path / "model"
  shutil.copytree(trained_run["paths"].model_dir, model_dir,
                  ignore=shutil.ignore_patterns("scorer", "logs"))
  restored, source = restore.restore_scorer(str(model_dir), restore.read_run(str(model_dir)))
  assert os.path.basename(source).startswith("ckpt-")
  # The run ends with a finished epoch, so its last checkpoint contains the final weights.
  for restored_weight, trained_weight in zip(restored.weights, trained_run["trainer"].scorer.weights):
    np.testing.assert_array_equal(restored_weight.numpy(), trained_weight.numpy())


def test_export_rejects_different_spec(trained_run, tmp_path):
  spec = fixture_spec().to_json_dict()
  spec["list_size"] = 9
  spec_path = tmp_path / "other.json"
  spec_path.write_text(json.dumps(spec))
  with pytest.raises(restore.RestoreError, match="differs from the spec"):
    export_from_model_dir(trained_run["paths"].model_dir, str(tmp_path / "serving"), MODEL_NAME,
                          feature_spec=str(spec_path))


def test_export_without_checkpoint_fails(trained_run, tmp_path):
  model_dir = tmp_path / "model"
  model_dir.mkdir()
  config = os.path.join(trained_run["paths"].model_dir, restore.CONFIG_FILENAME)
  (model_dir / restore.CONFIG_FILENAME).write_text(open(config).read())
  with pytest.raises(restore.RestoreError, match="no checkpoint found"):
    export_from_model_dir(str(model_dir), str(tmp_path / "serving"), MODEL_NAME)
  assert not os.path.exists(tmp_path / "serving")


def test_unknown_model_option_rejected():
  values = {"model": "seq_md", "not_an_option": 3}
  with pytest.raises(restore.RestoreError, match="not_an_option"):
    restore.model_config_from_dict(values)
