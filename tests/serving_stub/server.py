"""StubModelServer: one model on gRPC and REST, on free ports of 127.0.0.1, for tests only."""

import threading
from concurrent import futures
from typing import Optional

import grpc
from absl import logging

from serving_stub import grpc_service
from serving_stub import rest_service
from serving_stub.session_model import SessionModel

# Threads that run gRPC requests; tests send few requests at a time.
GRPC_WORKERS = 4
# Seconds stop() lets running gRPC requests finish.
STOP_GRACE_SECONDS = 2.0


class StubModelServer:
  """Serve the newest version under `base_path` as `model_name` until stop().

  Use as a context manager, or call start() and stop(); a pytest fixture stops it in its
  teardown. The ports are picked by the OS when the server starts.
  """

  def __init__(self, model_name: str, base_path: str, host: str = "127.0.0.1"):
    self.model_name = model_name
    self.base_path = base_path
    self.host = host
    self.model: Optional[SessionModel] = None
    self.grpc_port: Optional[int] = None
    self.rest_port: Optional[int] = None
    self._grpc_server = None
    self._http_server = None
    self._http_thread = None

  @property
  def grpc_address(self) -> str:
    return f"{self.host}:{self.grpc_port}"

  @property
  def rest_url(self) -> str:
    return f"http://{self.host}:{self.rest_port}"

  def start(self) -> "StubModelServer":
    self.model = SessionModel(self.model_name, self.base_path)

    self._grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=GRPC_WORKERS))
    grpc_service.add_services(self._grpc_server, self.model)
    self.grpc_port = self._grpc_server.add_insecure_port(f"{self.host}:0")
    self._grpc_server.start()

    self._http_server, self.rest_port = rest_service.make_server(self.model, self.host)
    self._http_thread = threading.Thread(target=self._http_server.serve_forever,
                                         name="stub-rest", daemon=True)
    self._http_thread.start()
    logging.info("stub server for %s: gRPC %s, REST %s", self.model_name, self.grpc_address,
                 self.rest_url)
    return self

  def stop(self) -> None:
    if self._grpc_server is not None:
      self._grpc_server.stop(STOP_GRACE_SECONDS).wait()
      self._grpc_server = None
    if self._http_server is not None:
      self._http_server.shutdown()
      self._http_server.server_close()
      self._http_thread.join()
      self._http_server = None
    if self.model is not None:
      self.model.close()
      self.model = None
    logging.info("stub server for %s stopped", self.model_name)

  def __enter__(self) -> "StubModelServer":
    return self.start()

  def __exit__(self, *exc_info) -> None:
    self.stop()
