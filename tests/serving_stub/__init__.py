"""Test-only stand-in for tensorflow_model_server. Never use it to serve a model.

No TF Serving binary or Docker engine exists where the tests run, so the serving tests start
this package instead. It loads a SavedModel the way TF Serving does (the TF1 session loader,
tag "serve", then the warmup requests in assets.extra) and serves the subset of TF Serving's
APIs that export/predict_client.py uses:

  gRPC (official tensorflow_serving.apis services): PredictionService.Predict and
    GetModelMetadata, ModelService.GetModelStatus;
  REST: POST /v1/models/<name>[/versions/<v>]:predict, GET /v1/models/<name>[/versions/<v>]
    (status) and GET .../metadata.

Errors carry TensorFlow's status code as TF Serving returns it (an op that fails with
InvalidArgumentError gives gRPC INVALID_ARGUMENT and HTTP 400). Production serving uses
tensorflow_model_server or the tensorflow/serving image; see docs/serving.md.
"""

from serving_stub.server import StubModelServer

__all__ = ["StubModelServer"]
