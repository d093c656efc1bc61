"""gRPC PredictionService and ModelService of the stub server, on the official protos."""

import grpc
import tensorflow as tf
from absl import logging
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from serving_stub.session_model import RequestError, SessionModel, check_input_dtypes

SIGNATURE_DEF_FIELD = "signature_def"


def check_model_spec(model: SessionModel, model_spec) -> None:
  """Raise NOT_FOUND unless the request names the loaded model (and version, if given)."""
  if model_spec.name != model.name:
    raise RequestError(grpc.StatusCode.NOT_FOUND,
                       f"Servable not found for request: Latest({model_spec.name})")
  if model_spec.HasField("version") and model_spec.version.value != model.version:
    raise RequestError(
        grpc.StatusCode.NOT_FOUND,
        f"Servable not found for request: Specific({model_spec.name}, {model_spec.version.value})")


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
  """Predict and GetModelMetadata; Classify, Regress and MultiInference stay UNIMPLEMENTED."""

  def __init__(self, model: SessionModel):
    self._model = model

  def Predict(self, request, context):  # pylint: disable=invalid-name
    try:
      check_model_spec(self._model, request.model_spec)
      signature_name = request.model_spec.signature_name or "serving_default"
      if signature_name in self._model.signatures:
        check_input_dtypes(self._model.signatures[signature_name], request.inputs)
      inputs = {name: tf.make_ndarray(tensor) for name, tensor in request.inputs.items()}
      outputs = self._model.run(signature_name, inputs, request.output_filter)
    except RequestError as e:
      logging.info("stub gRPC Predict failed: %s", e)
      context.abort(e.code, e.message)

    response = predict_pb2.PredictResponse()
    response.model_spec.name = self._model.name
    response.model_spec.version.value = self._model.version
    response.model_spec.signature_name = signature_name
    for name, value in outputs.items():
      response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
    return response

  def GetModelMetadata(self, request, context):  # pylint: disable=invalid-name
    try:
      check_model_spec(self._model, request.model_spec)
      fields = set(request.metadata_field)
      if fields != {SIGNATURE_DEF_FIELD}:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"Metadata field(s) {sorted(fields)} not supported; request "
                           f"['{SIGNATURE_DEF_FIELD}']")
    except RequestError as e:
      logging.info("stub gRPC GetModelMetadata failed: %s", e)
      context.abort(e.code, e.message)

    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = self._model.name
    response.model_spec.version.value = self._model.version
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for name, signature in self._model.signatures.items():
      signature_map.signature_def[name].CopyFrom(signature)
    response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
    return response


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
  """GetModelStatus; HandleReloadConfigRequest stays UNIMPLEMENTED."""

  def __init__(self, model: SessionModel):
    self._model = model

  def GetModelStatus(self, request, context):  # pylint: disable=invalid-name
    try:
      check_model_spec(self._model, request.model_spec)
    except RequestError as e:
      logging.info("stub gRPC GetModelStatus failed: %s", e)
      context.abort(e.code, e.message)
    return model_status(self._model)


def model_status(model: SessionModel) -> get_model_status_pb2.GetModelStatusResponse:
  """Return the status TF Serving reports for a loaded version: AVAILABLE with OK."""
  response = get_model_status_pb2.GetModelStatusResponse()
  status = response.model_version_status.add()
  status.version = model.version
  status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
  return response


def add_services(server: grpc.Server, model: SessionModel) -> None:
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
      PredictionServicer(model), server)
  model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(model), server)
