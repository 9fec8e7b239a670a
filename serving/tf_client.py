"""A thin TF Serving gRPC client for the recommend API, on the official stubs.

Works unchanged against the real tensorflow_model_server and the built-in server.
One channel per client, reused by every call; gRPC channels are thread-safe.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class PredictError(RuntimeError):
    """A failed call; ``code`` is the gRPC status (NOT_FOUND, INVALID_ARGUMENT, UNAVAILABLE, ...)."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Signature:
    inputs: dict[str, tf.TensorSpec]
    outputs: dict[str, tf.TensorSpec]


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    version: int
    signatures: dict[str, Signature]


class PredictClient:
    def __init__(self, host: str, grpc_port: int, model_name: str, timeout_s: float = 2.0):
        self.address = f"{host}:{grpc_port}"
        self.model_name = model_name
        self.timeout_s = timeout_s
        self._channel = grpc.insecure_channel(
            self.address,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    def predict(
        self, inputs: Mapping[str, np.ndarray], signature: str = "serving_default", version: int | None = None
    ) -> dict[str, np.ndarray]:
        """Score one batch: every input has the batch as its first dimension and the signature's dtype."""
        return self.predict_versioned(inputs, signature, version)[0]

    def predict_versioned(
        self, inputs: Mapping[str, np.ndarray], signature: str = "serving_default", version: int | None = None
    ) -> tuple[dict[str, np.ndarray], str, int]:
        """``predict``, plus the model name and version that answered (from the response's model_spec)."""
        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model_name
        request.model_spec.signature_name = signature
        if version is not None:
            request.model_spec.version.value = version
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tensor_proto(value))
        response = self._call(self._stub.Predict, request)
        outputs = {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}
        return outputs, response.model_spec.name, response.model_spec.version.value

    def metadata(self) -> ModelMetadata:
        """The serving version and its callable signatures' input and output specs."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = self.model_name
        response = self._call(self._stub.GetModelMetadata, request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return ModelMetadata(
            name=response.model_spec.name,
            version=response.model_spec.version.value,
            signatures={
                name: Signature(inputs=tensor_specs(sig.inputs), outputs=tensor_specs(sig.outputs))
                for name, sig in signature_map.signature_def.items()
                if sig.method_name  # skips __saved_model_init_op, which is not callable
            },
        )

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> PredictClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout_s)
        except grpc.RpcError as e:
            message = f"model {self.model_name!r} at {self.address}: {e.code().name}: {e.details()}"
            raise PredictError(e.code(), message) from None


def tensor_proto(value: np.ndarray) -> tensor_pb2.TensorProto:
    """The TensorProto ``tf.make_tensor_proto`` would give for a numeric or string array, at a fraction of
    its cost: it converts each string through a codec lookup, ~3,400 strings per 200-candidate request."""
    value = np.asarray(value)
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in value.shape])
    if value.dtype == object or value.dtype.kind in "US":
        strings = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in value.ravel().tolist()]
        return tensor_pb2.TensorProto(dtype=tf.string.as_datatype_enum, tensor_shape=shape, string_val=strings)
    return tensor_pb2.TensorProto(dtype=tf.dtypes.as_dtype(value.dtype).as_datatype_enum, tensor_shape=shape,
                                  tensor_content=np.ascontiguousarray(value).tobytes())


def tensor_specs(tensor_infos) -> dict[str, tf.TensorSpec]:
    """A SignatureDef's inputs or outputs (name -> TensorInfo) as TensorSpecs; -1 dimensions as None."""
    return {
        name: tf.TensorSpec(shape=_shape(info.tensor_shape), dtype=tf.dtypes.as_dtype(info.dtype), name=name)
        for name, info in tensor_infos.items()
    }


def _shape(shape) -> list[int | None] | None:
    if shape.unknown_rank:
        return None
    return [d.size if d.size >= 0 else None for d in shape.dim]  # -1: any size
