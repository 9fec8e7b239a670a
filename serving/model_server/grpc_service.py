"""TF Serving's gRPC services (PredictionService, ModelService) on the official generated servicers."""
from __future__ import annotations

from collections.abc import Callable
from concurrent import futures

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from serving.model_server import api
from serving.model_server.errors import ServingError
from serving.model_server.repo import ModelRepo
from streamrec.errors import UserError

# Room for thousands of candidate rows (gRPC defaults to 4 MB received; TF Serving allows ~2 GB).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def _answer(handler: Callable, repo: ModelRepo, request, context: grpc.ServicerContext):
    try:
        return handler(repo, request)
    except ServingError as e:
        context.abort(e.code, e.message)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata; Classify, Regress and MultiInference answer UNIMPLEMENTED."""

    def __init__(self, repo: ModelRepo):
        self._repo = repo

    def Predict(self, request, context):
        return _answer(api.predict, self._repo, request, context)

    def GetModelMetadata(self, request, context):
        return _answer(api.get_model_metadata, self._repo, request, context)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus; HandleReloadConfigRequest answers UNIMPLEMENTED (the repo is polled instead)."""

    def __init__(self, repo: ModelRepo):
        self._repo = repo

    def GetModelStatus(self, request, context):
        return _answer(api.get_model_status, self._repo, request, context)


def start_grpc_server(repo: ModelRepo, host: str, port: int, workers: int = 8) -> grpc.Server:
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 0),  # a port already taken must fail here, not be shared
    ]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"), options=options)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(repo), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(repo), server)
    try:
        server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as e:
        raise UserError(f"cannot listen for gRPC on {host}:{port} (port in use?): {e}") from None
    server.start()
    return server
