"""Clients of a TF Serving model: gRPC PredictionService with the official protos, and REST.

Both clients send serialized ELWC lists to the `serving_default` signature, or one context and
its items to `predict_examples` (see export/saved_model.py), and return the outputs as numpy
arrays: {"score": ..., <task>: ...}, each float32 [num_lists, list_size].
"""

import base64
import json
import urllib.error
import urllib.request
from typing import Dict, List, Optional, Sequence

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

DEFAULT_SIGNATURE = "serving_default"
EXAMPLES_SIGNATURE = "predict_examples"
EXAMPLES_INPUT = "examples"
CONTEXT_INPUT = "context"
# Seconds to wait for a gRPC connection before reporting the server unreachable.
DEFAULT_CONNECT_TIMEOUT = 5.0
# Seconds allowed for one request.
DEFAULT_TIMEOUT = 10.0
# Largest gRPC message in either direction, in bytes; a batch of long lists can pass gRPC's
# default of 4 MiB.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

Outputs = Dict[str, np.ndarray]


class ServerUnreachableError(ConnectionError):
  """No server responded at the address; the message names it and what to check."""


class PredictError(RuntimeError):
  """The server responded with an error.

  Attributes:
    code: the gRPC status name (for example "INVALID_ARGUMENT") or "HTTP <status>" for REST.
    message: the server's error message.
  """

  def __init__(self, code: str, message: str):
    super().__init__(f"{code}: {message}")
    self.code = code
    self.message = message


class GrpcPredictClient:
  """PredictionService and ModelService client over gRPC (tensorflow_model_server --port)."""

  def __init__(self, address: str, model_name: str, timeout: float = DEFAULT_TIMEOUT,
               version: Optional[int] = None,
               connect_timeout: float = DEFAULT_CONNECT_TIMEOUT):
    """Connect to `address` ("host:port").

    Raises:
      ServerUnreachableError: nothing responded within `connect_timeout` seconds.
    """
    self.address = address
    self.model_name = model_name
    self.timeout = timeout
    self.version = version
    self._channel = grpc.insecure_channel(address, options=[
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)])
    try:
      grpc.channel_ready_future(self._channel).result(timeout=connect_timeout)
    except grpc.FutureTimeoutError:
      self._channel.close()
      raise ServerUnreachableError(
          f"no gRPC server responded at {address} within {connect_timeout:g} s. Start "
          "tensorflow_model_server with --port set to that port (docs/serving.md), or pass the "
          "address of a running server with --server HOST:PORT") from None
    self._predict_stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
    self._model_stub = model_service_pb2_grpc.ModelServiceStub(self._channel)

  def predict(self, serialized_lists: Sequence[bytes]) -> Outputs:
    """Score serialized ELWC lists with `serving_default`; arrays [num_lists, list_size]."""
    request = self._request(DEFAULT_SIGNATURE)
    request.inputs[EXAMPLES_INPUT].CopyFrom(
        tf.make_tensor_proto(list(serialized_lists), dtype=tf.string))
    return self._predict(request)

  def predict_examples(self, context: bytes, examples: Sequence[bytes]) -> Outputs:
    """Score one list given as a serialized context tf.Example and item tf.Examples."""
    request = self._request(EXAMPLES_SIGNATURE)
    request.inputs[CONTEXT_INPUT].CopyFrom(tf.make_tensor_proto(context, dtype=tf.string))
    request.inputs[EXAMPLES_INPUT].CopyFrom(
        tf.make_tensor_proto(list(examples), dtype=tf.string, shape=[len(examples)]))
    return self._predict(request)

  def model_status(self) -> List[dict]:
    """Return [{"version": int, "state": "AVAILABLE"|...}] from ModelService.GetModelStatus."""
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = self.model_name
    if self.version is not None:
      request.model_spec.version.value = self.version
    response = self._call(self._model_stub.GetModelStatus, request)
    state_names = get_model_status_pb2.ModelVersionStatus.State
    return [{"version": status.version, "state": state_names.Name(status.state)}
            for status in response.model_version_status]

  def close(self) -> None:
    self._channel.close()

  def _request(self, signature: str) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = self.model_name
    request.model_spec.signature_name = signature
    if self.version is not None:
      request.model_spec.version.value = self.version
    return request

  def _predict(self, request: predict_pb2.PredictRequest) -> Outputs:
    response = self._call(self._predict_stub.Predict, request)
    return {name: tf.make_ndarray(tensor) for name, tensor in response.outputs.items()}

  def _call(self, method, request):
    try:
      return method(request, timeout=self.timeout)
    except grpc.RpcError as e:
      if e.code() == grpc.StatusCode.UNAVAILABLE:
        raise ServerUnreachableError(
            f"gRPC server at {self.address} is unavailable: {e.details()}. Check that "
            "tensorflow_model_server is still running") from None
      raise PredictError(e.code().name, e.details()) from None


class RestPredictClient:
  """Client of TF Serving's REST API (tensorflow_model_server --rest_api_port)."""

  def __init__(self, base_url: str, model_name: str, timeout: float = DEFAULT_TIMEOUT,
               version: Optional[int] = None):
    """`base_url` is the server root, for example http://127.0.0.1:8501."""
    self.base_url = base_url.rstrip("/")
    self.model_name = model_name
    self.timeout = timeout
    self.version = version
    self.model_url = f"{self.base_url}/v1/models/{model_name}"
    if version is not None:
      self.model_url += f"/versions/{version}"

  def predict(self, serialized_lists: Sequence[bytes]) -> Outputs:
    """Score serialized ELWC lists with `serving_default` (row format, one instance per list)."""
    body = {"signature_name": DEFAULT_SIGNATURE,
            "instances": [_b64(record) for record in serialized_lists]}
    predictions = self._post_predict(body)["predictions"]
    names = predictions[0].keys() if predictions else ()
    return {name: np.asarray([row[name] for row in predictions], np.float32) for name in names}

  def predict_examples(self, context: bytes, examples: Sequence[bytes]) -> Outputs:
    """Score one list with `predict_examples`; its inputs differ in dimension 0, so the request
    uses the columnar "inputs" format."""
    body = {"signature_name": EXAMPLES_SIGNATURE,
            "inputs": {CONTEXT_INPUT: _b64(context),
                       EXAMPLES_INPUT: [_b64(example) for example in examples]}}
    outputs = self._post_predict(body)["outputs"]
    return {name: np.asarray(value, np.float32) for name, value in outputs.items()}

  def model_status(self) -> List[dict]:
    """Return [{"version": int, "state": "AVAILABLE"|...}] from GET /v1/models/<name>."""
    statuses = self._send(urllib.request.Request(self.model_url))["model_version_status"]
    return [{"version": int(status["version"]), "state": status["state"]} for status in statuses]

  def close(self) -> None:
    """Nothing to release: every request opens its own connection."""

  def _post_predict(self, body: dict) -> dict:
    request = urllib.request.Request(
        f"{self.model_url}:predict", data=json.dumps(body).encode("utf-8"),
        headers={"Content-Type": "application/json"}, method="POST")
    return self._send(request)

  def _send(self, request: urllib.request.Request) -> dict:
    try:
      with urllib.request.urlopen(request, timeout=self.timeout) as response:
        return json.loads(response.read())
    except urllib.error.HTTPError as e:
      raise PredictError(f"HTTP {e.code}", _error_message(e.read())) from None
    except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
      reason = getattr(e, "reason", e)
      raise ServerUnreachableError(
          f"no REST server responded at {self.base_url} ({reason}). Start tensorflow_model_server "
          "with --rest_api_port set to that port (docs/serving.md), or pass the URL of a running "
          "server with --rest http://HOST:PORT") from None


def _b64(data: bytes) -> dict:
  """Encode binary data as TF Serving's REST API expects for a DT_STRING value."""
  return {"b64": base64.b64encode(data).decode("ascii")}


def _error_message(body: bytes) -> str:
  """Return the "error" field of a REST error body, or the body itself when it is not JSON."""
  text = body.decode("utf-8", "replace")
  try:
    return str(json.loads(text).get("error", text))
  except (json.JSONDecodeError, AttributeError):
    return text
