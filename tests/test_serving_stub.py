"""Serving through the stub server: export.predict_client and export.client over gRPC and REST.

The stub (tests/serving_stub) loads the export with the TF1 session loader, as TF Serving does,
so these tests run the exported graph exactly as a server would, including bad requests.
"""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import input_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

import grpc
from elwc_fixtures import _feature, fixture_spec, make_elwc, random_records, write_records
from export import client as client_cli
from export.predict_client import (GrpcPredictClient, PredictError, RestPredictClient,
                                   ServerUnreachableError)
from serving_stub import StubModelServer
from serving_stub.fixtures import MODEL_NAME, build_scorer, export_scorer, reference_outputs

OUTPUTS = ("score", "click", "purchase")
LIST_SIZE = fixture_spec().list_size
TOLERANCE = 1e-5
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def lists():
  return random_records(12, seed=3)


@pytest.fixture(scope="module")
def scorer():
  return build_scorer(seed=1)


@pytest.fixture(scope="module")
def server(scorer, lists, tmp_path_factory):
  base = tmp_path_factory.mktemp("serving") / MODEL_NAME
  export_scorer(scorer, str(base), version=3, warmup_lists=lists[:4])
  stub = StubModelServer(MODEL_NAME, str(base)).start()
  yield stub
  stub.stop()


@pytest.fixture(scope="module", params=["grpc", "rest"])
def client(request, server):
  if request.param == "grpc":
    connection = GrpcPredictClient(server.grpc_address, MODEL_NAME)
  else:
    connection = RestPredictClient(server.rest_url, MODEL_NAME)
  yield connection
  connection.close()


def split_elwc(serialized):
  elwc = input_pb2.ExampleListWithContext.FromString(serialized)
  return elwc.context.SerializeToString(), [e.SerializeToString() for e in elwc.examples]


def assert_outputs_close(actual, expected):
  assert set(actual) == set(OUTPUTS)
  for name in OUTPUTS:
    np.testing.assert_allclose(actual[name], expected[name], atol=TOLERANCE, err_msg=name)


def long_list():
  count = LIST_SIZE + 3
  return make_elwc("US", 9, ["pool"], np.linspace(20, 180, count), np.linspace(-1, 1, count),
                   [f"item{i}" for i in range(count)], [0] * count, [0] * count)


def modified_list(region="DE", drop_item_feature=None, filters=("wifi",)):
  """A 4-item list; `drop_item_feature` is left out of every item."""
  elwc = input_pb2.ExampleListWithContext.FromString(make_elwc(
      region or "DE", 14, list(filters), [30.0, 60.0, 90.0, 120.0], [0.5, -0.2, 1.0, 0.1],
      ["a", "b", "c", "d"], [1, 0, 0, 0], [0, 0, 0, 0]))
  if region is None:
    del elwc.context.features.feature["region"]
  if drop_item_feature:
    for example in elwc.examples:
      del example.features.feature[drop_item_feature]
  return elwc


# Scores equal to the in-process model.


def test_batch_of_lists_matches_in_process(client, scorer, lists):
  assert_outputs_close(client.predict(lists), reference_outputs(scorer, lists))


def test_one_list_per_request_matches(client, scorer, lists):
  expected = reference_outputs(scorer, lists[:4])
  for index, record in enumerate(lists[:4]):
    actual = client.predict([record])
    assert_outputs_close(actual, {name: value[index:index + 1] for name, value in expected.items()})


def test_predict_examples_matches_in_process(client, scorer, lists):
  expected = reference_outputs(scorer, lists[:3])
  for index, record in enumerate(lists[:3]):
    actual = client.predict_examples(*split_elwc(record))
    assert_outputs_close(actual, {name: value[index:index + 1] for name, value in expected.items()})


def test_client_score_lists_matches(client, scorer, lists):
  outputs, latencies = client_cli.score_lists(client, lists, batch_size=5)
  expected = reference_outputs(scorer, lists)
  assert len(outputs) == len(lists)
  assert len(latencies) == 3
  for index, list_outputs in enumerate(outputs):
    np.testing.assert_allclose(list_outputs["score"], expected["score"][index], atol=TOLERANCE)


def test_rerank_orders_by_score():
  order = client_cli.rerank({"score": np.array([0.1, 0.9, 0.5, 7.0], np.float32)}, num_items=3)
  assert order.tolist() == [1, 2, 0]


def test_model_status_available(client, server):
  assert client.model_status() == [{"version": 3, "state": "AVAILABLE"}]


def test_grpc_metadata_lists_signatures(server):
  with grpc.insecure_channel(server.grpc_address) as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = MODEL_NAME
    response = stub.GetModelMetadata(request, timeout=10)
  signature_map = get_model_metadata_pb2.SignatureDefMap()
  response.metadata["signature_def"].Unpack(signature_map)
  assert {"serving_default", "predict_examples"} <= set(signature_map.signature_def)
  assert set(signature_map.signature_def["predict_examples"].inputs) == {"context", "examples"}


# Requests that succeed although they differ from training lists.


def test_long_list_truncated_to_list_size(client, scorer):
  record = long_list()
  elwc = input_pb2.ExampleListWithContext.FromString(record)
  del elwc.examples[LIST_SIZE:]
  actual = client.predict([record])
  assert actual["score"].shape == (1, LIST_SIZE)
  assert_outputs_close(actual, reference_outputs(scorer, [elwc.SerializeToString()]))


def test_unseen_region_scored_as_oov(client):
  unseen = client.predict([modified_list(region="ZZ").SerializeToString()])
  missing = client.predict([modified_list(region=None).SerializeToString()])
  # Both map to the single out-of-vocabulary bucket of the region lookup.
  assert np.all(np.isfinite(unseen["score"]))
  np.testing.assert_allclose(unseen["score"], missing["score"], atol=TOLERANCE)


def test_missing_feature_takes_default(client):
  dropped = client.predict([modified_list(drop_item_feature="quality").SerializeToString()])
  elwc = modified_list()
  for example in elwc.examples:
    example.features.feature["quality"].CopyFrom(_feature([0.0]))
  zero = client.predict([elwc.SerializeToString()])
  np.testing.assert_allclose(dropped["score"], zero["score"], atol=TOLERANCE)


def test_single_list_without_filters_finite(client, scorer):
  record = modified_list(filters=()).SerializeToString()
  actual = client.predict([record])
  assert np.all(np.isfinite(actual["score"]))
  assert_outputs_close(actual, reference_outputs(scorer, [record]))


# Bad requests: the error names the problem and the server keeps serving.


def _not_elwc():
  return b"not an elwc"


def _example_not_elwc():
  return modified_list().examples[0].SerializeToString()


def _empty_list():
  elwc = modified_list()
  del elwc.examples[:]
  return elwc.SerializeToString()


def _float_item_id():
  elwc = modified_list()
  elwc.examples[1].features.feature["item_id"].CopyFrom(_feature([2.5]))
  return elwc.SerializeToString()


def _truncated_elwc():
  return modified_list().SerializeToString()[:-7]


BAD_REQUESTS = [
    # (case, request bytes, gRPC code, HTTP status, text in the message)
    ("not_elwc", _not_elwc, "INVALID_ARGUMENT", 400,
     "not a serialized tensorflow.serving.ExampleListWithContext"),
    ("example_not_elwc", _example_not_elwc, "INVALID_ARGUMENT", 400,
     "Could not parse example input"),
    ("empty_list", _empty_list, "INVALID_ARGUMENT", 400, "must hold at least one item"),
    ("wrong_dtype", _float_item_id, "INVALID_ARGUMENT", 400, "item_id"),
    # Documented in docs/serving.md: TF-Ranking's ELWC decoder reports DATA_LOSS.
    ("truncated_elwc", _truncated_elwc, "DATA_LOSS", 500, "DecodeProtoV2"),
]


@pytest.mark.parametrize("case,make_request,grpc_code,http_status,text", BAD_REQUESTS,
                         ids=[case[0] for case in BAD_REQUESTS])
def test_bad_request_rejected_then_serving(client, scorer, lists, case, make_request, grpc_code,
                                           http_status, text):
  del case
  with pytest.raises(PredictError) as raised:
    client.predict([lists[0], make_request()])
  expected_code = grpc_code if isinstance(client, GrpcPredictClient) else f"HTTP {http_status}"
  assert raised.value.code == expected_code
  assert text in raised.value.message

  after = client.predict(lists[:2])
  assert_outputs_close(after, reference_outputs(scorer, lists[:2]))


def test_predict_examples_empty_list_rejected(client):
  context, _ = split_elwc(modified_list().SerializeToString())
  with pytest.raises(PredictError) as raised:
    client.predict_examples(context, [])
  assert "must hold at least one item" in raised.value.message


def test_grpc_wrong_tensor_dtype_rejected(server):
  connection = GrpcPredictClient(server.grpc_address, MODEL_NAME)
  request = connection._request("serving_default")  # pylint: disable=protected-access
  request.inputs["examples"].CopyFrom(tf.make_tensor_proto([1.5, 2.5], dtype=tf.float32))
  with pytest.raises(PredictError) as raised:
    connection._predict(request)  # pylint: disable=protected-access
  assert raised.value.code == "INVALID_ARGUMENT"
  assert "to be string but float is provided" in raised.value.message


def test_unknown_model_not_found(server):
  connection = RestPredictClient(server.rest_url, "other_model")
  with pytest.raises(PredictError) as raised:
    connection.model_status()
  assert raised.value.code == "HTTP 404"


# Unreachable servers.


def _free_port():
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


def test_grpc_unreachable_names_address():
  address = f"127.0.0.1:{_free_port()}"
  with pytest.raises(ServerUnreachableError) as raised:
    GrpcPredictClient(address, MODEL_NAME, connect_timeout=0.5)
  assert address in str(raised.value)
  assert "tensorflow_model_server" in str(raised.value)


def test_rest_unreachable_names_address():
  url = f"http://127.0.0.1:{_free_port()}"
  with pytest.raises(ServerUnreachableError) as raised:
    RestPredictClient(url, MODEL_NAME, timeout=2).predict([b""])
  assert url in str(raised.value)


# The command-line client, unchanged, against the stub.


@pytest.fixture(scope="module")
def eval_files(lists, tmp_path_factory):
  path = tmp_path_factory.mktemp("client") / "eval" / "part-0.tfrecord"
  write_records(str(path), lists)
  return str(path)


def run_client(*args):
  return subprocess.run([sys.executable, "-m", "export.client", *args], cwd=REPO_ROOT,
                        capture_output=True, text=True, timeout=120)


def test_client_cli_grpc_prints_order_and_latency(server, eval_files):
  result = run_client(f"--server={server.grpc_address}", f"--model_name={MODEL_NAME}",
                      f"--eval_files={eval_files}", "--num_lists=6", "--print_lists=2",
                      "--item_id_feature=item_id", "--warmup_requests=1")
  assert result.returncode == 0, result.stderr
  assert "list 0:" in result.stdout
  assert "list 1:" in result.stdout
  assert "p99" in result.stdout


def test_client_cli_rest_predict_examples(server, eval_files):
  result = run_client(f"--rest={server.rest_url}", f"--model_name={MODEL_NAME}",
                      f"--eval_files={eval_files}", "--num_lists=3", "--print_lists=1",
                      "--signature=predict_examples", "--warmup_requests=0")
  assert result.returncode == 0, result.stderr
  assert "predict_examples requests" in result.stdout


def test_client_cli_unreachable_exits_2(eval_files):
  address = f"127.0.0.1:{_free_port()}"
  result = run_client(f"--server={address}", f"--model_name={MODEL_NAME}",
                      f"--eval_files={eval_files}", "--num_lists=1", "--connect_timeout=0.5")
  assert result.returncode == 2
  assert address in result.stderr
