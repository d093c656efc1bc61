"""A SavedModel version loaded as TF Serving loads it: a TF1 session and its SignatureDefs."""

import os
from typing import Dict, Sequence

import grpc
import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow.core.framework import types_pb2

from export import warmup as warmup_lib

SERVE_TAG = "serve"
DEFAULT_SIGNATURE = "serving_default"
# TensorFlow status codes share their numbers with gRPC status codes.
_GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}
# Start of the InvalidArgument message of ParseExample for bytes that are not a tf.Example.
# The message embeds those bytes, which Python's TF bindings then fail to decode as UTF-8.
_UNPARSABLE_EXAMPLE_MESSAGE = "Could not parse example input"


class RequestError(Exception):
  """A request failed; `code` is the grpc.StatusCode TF Serving would return."""

  def __init__(self, code: grpc.StatusCode, message: str):
    super().__init__(f"{code.name}: {message}")
    self.code = code
    self.message = message


def latest_version(base_path: str) -> int:
  """Return the highest numeric subdirectory of `base_path`, as TF Serving's default policy."""
  versions = [int(name) for name in os.listdir(base_path) if name.isdigit()]
  if not versions:
    raise FileNotFoundError(f"{base_path} holds no numeric version directory")
  return max(versions)


class SessionModel:
  """The newest version under `base_path`, loaded with tf.compat.v1.saved_model.loader."""

  def __init__(self, name: str, base_path: str):
    self.name = name
    self.version = latest_version(base_path)
    self.path = os.path.join(base_path, str(self.version))
    self._graph = tf.Graph()
    self._session = tf.compat.v1.Session(graph=self._graph)
    meta_graph = tf.compat.v1.saved_model.loader.load(self._session, [SERVE_TAG], self.path)
    self.signatures = dict(meta_graph.signature_def)
    self._run_warmup()
    logging.info("stub server loaded %s version %d from %s", name, self.version, self.path)

  def run(self, signature_name: str, inputs: Dict[str, np.ndarray],
          output_filter: Sequence[str] = ()) -> Dict[str, np.ndarray]:
    """Run one signature on numpy inputs, as TF Serving's Predict does.

    Raises:
      RequestError: unknown signature, inputs that do not match it, or a TensorFlow error.
    """
    signature_name = signature_name or DEFAULT_SIGNATURE
    if signature_name not in self.signatures:
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                         f'Serving signature name: "{signature_name}" not found in signature def')
    signature = self.signatures[signature_name]
    _check_input_names(signature, inputs)
    outputs = list(output_filter) or sorted(signature.outputs)
    unknown = sorted(set(outputs) - set(signature.outputs))
    if unknown:
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"output tensor alias not found in signature: {unknown}")

    feed = {signature.inputs[name].name: value for name, value in inputs.items()}
    fetch = {name: signature.outputs[name].name for name in outputs}
    try:
      return self._session.run(fetch, feed_dict=feed)
    except tf.errors.OpError as e:
      raise RequestError(_GRPC_CODES.get(e.error_code, grpc.StatusCode.UNKNOWN),
                         _server_message(e.message)) from None
    except UnicodeDecodeError as e:
      # The binding could not decode the status message; its bytes are in e.object.
      message = e.object.decode("utf-8", "replace")
      code = (grpc.StatusCode.INVALID_ARGUMENT if message.startswith(_UNPARSABLE_EXAMPLE_MESSAGE)
              else grpc.StatusCode.UNKNOWN)
      raise RequestError(code, message) from None

  def close(self) -> None:
    self._session.close()

  def _run_warmup(self) -> None:
    """Replay assets.extra/tf_serving_warmup_requests; a failing request fails the load."""
    for index, request in enumerate(warmup_lib.read_warmup_requests(self.path)):
      inputs = {name: tf.make_ndarray(tensor) for name, tensor in request.inputs.items()}
      try:
        self.run(request.model_spec.signature_name, inputs, request.output_filter)
      except RequestError as e:
        raise RuntimeError(f"warmup request {index} of {self.path} failed: {e}") from e


def check_input_dtypes(signature, tensors) -> None:
  """Raise RequestError when a request TensorProto's dtype differs from the signature input."""
  for index, name in enumerate(sorted(tensors)):
    expected = signature.inputs[name].dtype
    if tensors[name].dtype != expected:
      raise RequestError(
          grpc.StatusCode.INVALID_ARGUMENT,
          f"Expects arg[{index}] to be {_dtype_text(expected)} but "
          f"{_dtype_text(tensors[name].dtype)} is provided")


def _dtype_text(dtype_enum: int) -> str:
  """Return TensorFlow's DataTypeString of a DataType enum, e.g. "float" for DT_FLOAT."""
  return types_pb2.DataType.Name(dtype_enum)[len("DT_"):].lower()


def _check_input_names(signature, inputs) -> None:
  expected, sent = set(signature.inputs), set(inputs)
  if expected != sent:
    raise RequestError(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"input size does not match signature: {len(sent)}!={len(expected)} "
        f"len({sorted(sent)}) != len({sorted(expected)}). Sent extra: {sorted(sent - expected)}. "
        f"Missing but required: {sorted(expected - sent)}.")


def _server_message(message: str) -> str:
  """Return TensorFlow's own message without the header the Python session bindings add
  ("Graph execution error:" and, for graphs built in this process, the node's Python stack);
  TF Serving returns the message without it."""
  header = "Graph execution error:\n\n"
  if message.startswith(header):
    message = message[len(header):]
  node_marker = "\nNode: '"
  if message.startswith("Detected at node") and node_marker in message:
    after_marker = message.index(node_marker) + len(node_marker)
    message = message[message.index("\n", after_marker) + 1:]
  return message
