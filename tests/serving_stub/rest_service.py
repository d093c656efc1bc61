"""REST API of the stub server on http.server, following TF Serving's JSON formats.

Predict bodies use either the row format {"instances": [...]} or the columnar format
{"inputs": ...}; a DT_STRING value is {"b64": "<base64>"} or a plain string. Errors return
{"error": message} with the HTTP status TF Serving maps the status code to.
"""

import base64
import binascii
import http.server
import json
import re
from typing import Dict, Tuple

import grpc
import numpy as np
import tensorflow as tf
from absl import logging
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2

from serving_stub.grpc_service import SIGNATURE_DEF_FIELD, model_status
from serving_stub.session_model import RequestError, SessionModel

# HTTP status per gRPC code, as in TF Serving's model_servers/http_server.cc (ToHTTPStatusCode).
HTTP_STATUS = {
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

_PATH = re.compile(
    r"/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?"
    r"(?:(?P<predict>:predict)|(?P<metadata>/metadata))?")


def make_handler(model: SessionModel):
  """Return a BaseHTTPRequestHandler class that serves `model`."""

  class Handler(http.server.BaseHTTPRequestHandler):
    """Serves one request; http.server creates one instance per request."""

    def do_GET(self):  # pylint: disable=invalid-name
      self._dispatch(expect_predict=False)

    def do_POST(self):  # pylint: disable=invalid-name
      self._dispatch(expect_predict=True)

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
      logging.debug("stub REST %s", format % args)

    def _dispatch(self, expect_predict: bool) -> None:
      try:
        match = _PATH.fullmatch(self.path)
        if not match or bool(match["predict"]) != expect_predict:
          raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                             f"Malformed request: {self.command} {self.path}")
        _check_model(model, match["name"], match["version"])
        if match["predict"]:
          length = int(self.headers.get("Content-Length", 0))
          body = predict(model, self.rfile.read(length))
        elif match["metadata"]:
          body = metadata(model)
        else:
          body = json_format.MessageToDict(model_status(model),
                                           preserving_proto_field_name=True,
                                           including_default_value_fields=True)
        self._reply(200, body)
      except RequestError as e:
        logging.info("stub REST %s %s failed: %s", self.command, self.path, e)
        self._reply(HTTP_STATUS.get(e.code, 500), {"error": e.message})

    def _reply(self, status: int, body: dict) -> None:
      data = json.dumps(body).encode("utf-8")
      self.send_response(status)
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(data)))
      self.end_headers()
      self.wfile.write(data)

  return Handler


def predict(model: SessionModel, raw_body: bytes) -> dict:
  """Run a REST predict request body and return the response body."""
  try:
    body = json.loads(raw_body)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"JSON Parse error: {e}") from None
  if not isinstance(body, dict):
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "JSON Value is not an object")
  if ("instances" in body) == ("inputs" in body):
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                       "the request must hold exactly one of 'instances' and 'inputs'")

  signature_name = body.get("signature_name") or "serving_default"
  if signature_name not in model.signatures:
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                       f'Serving signature name: "{signature_name}" not found in signature def')
  signature = model.signatures[signature_name]
  if "instances" in body:
    inputs = _row_inputs(body["instances"], signature)
  else:
    inputs = _columnar_inputs(body["inputs"], signature)

  outputs = model.run(signature_name, inputs)
  if "instances" in body:
    return {"predictions": _rows(outputs)}
  if len(outputs) == 1:
    return {"outputs": next(iter(outputs.values())).tolist()}
  return {"outputs": {name: value.tolist() for name, value in outputs.items()}}


def metadata(model: SessionModel) -> dict:
  """Return the body of GET /v1/models/<name>/metadata."""
  signature_map = get_model_metadata_pb2.SignatureDefMap()
  for name, signature in model.signatures.items():
    signature_map.signature_def[name].CopyFrom(signature)
  return {
      "model_spec": {"name": model.name, "signature_name": "", "version": str(model.version)},
      "metadata": {SIGNATURE_DEF_FIELD: json_format.MessageToDict(
          signature_map, preserving_proto_field_name=True)},
  }


def _check_model(model: SessionModel, name: str, version) -> None:
  if name != model.name or (version is not None and int(version) != model.version):
    label = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
    raise RequestError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {label}")


def _row_inputs(instances, signature) -> Dict[str, np.ndarray]:
  """Stack the row format: each instance is one input value, or {input name: value}."""
  if not isinstance(instances, list) or not instances:
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                       "'instances' must be a non-empty list")
  names = sorted(signature.inputs)
  columns = {name: [] for name in names}
  for index, instance in enumerate(instances):
    named = isinstance(instance, dict) and "b64" not in instance
    if not named and len(names) != 1:
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"instances[{index}] must be an object with the inputs {names}")
    values = instance if named else {names[0]: instance}
    if set(values) != set(names):
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"instances[{index}] has inputs {sorted(values)}, expected {names}")
    for name in names:
      columns[name].append(values[name])
  return {name: _to_array(column, signature.inputs[name], name) for name, column in columns.items()}


def _columnar_inputs(inputs, signature) -> Dict[str, np.ndarray]:
  """Read the columnar format: {input name: value} or, for one input, the value itself."""
  names = sorted(signature.inputs)
  if not (isinstance(inputs, dict) and "b64" not in inputs):
    if len(names) != 1:
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"'inputs' must be an object with the inputs {names}")
    inputs = {names[0]: inputs}
  return {name: _to_array(value, signature.inputs[name], name) for name, value in inputs.items()}


def _to_array(value, tensor_info, name: str) -> np.ndarray:
  """Convert a JSON value to a numpy array of the signature input's dtype."""
  dtype = tf.dtypes.as_dtype(tensor_info.dtype)
  if dtype == tf.string:
    return np.array(_decode_strings(value, name), dtype=object)
  try:
    return np.asarray(value, dtype=dtype.as_numpy_dtype)
  except (TypeError, ValueError) as e:
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"input {name!r} expects {dtype.name} values: {e}") from None


def _decode_strings(value, name: str):
  """Replace {"b64": ...} objects by bytes and strings by their UTF-8 bytes, recursively."""
  if isinstance(value, list):
    return [_decode_strings(item, name) for item in value]
  if isinstance(value, dict) and set(value) == {"b64"}:
    try:
      return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, TypeError) as e:
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"Unable to base64 decode the value of input {name!r}: {e}") from None
  if isinstance(value, str):
    return value.encode("utf-8")
  raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                     f"input {name!r} expects strings or {{\"b64\": ...}} objects, got "
                     f"{type(value).__name__} {value!r:.40}")


def _rows(outputs: Dict[str, np.ndarray]) -> list:
  """Split outputs along dimension 0 into the row format of "predictions"."""
  names = sorted(outputs)
  count = len(next(iter(outputs.values())))
  if len(names) == 1:
    return outputs[names[0]].tolist()
  return [{name: outputs[name][row].tolist() for name in names} for row in range(count)]


def make_server(model: SessionModel, host: str) -> Tuple[http.server.ThreadingHTTPServer, int]:
  """Bind a threaded HTTP server to a free port of `host`; return it and the port."""
  server = http.server.ThreadingHTTPServer((host, 0), make_handler(model))
  server.daemon_threads = True
  return server, server.server_address[1]
