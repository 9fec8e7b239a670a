"""TF Serving's Predict, GetModelMetadata and GetModelStatus over a ModelRepo, proto in, proto out.

Transport-free: the gRPC servicers and the REST app both answer through here.
"""
from __future__ import annotations

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2, predict_pb2

from serving.model_server.errors import ServingError
from serving.model_server.repo import ModelRepo
from serving.model_server.servable import DEFAULT_SIGNATURE, Servable

SIGNATURE_DEF_FIELD = "signature_def"


def resolve(repo: ModelRepo, spec: model_pb2.ModelSpec) -> Servable:
    version = spec.version.value if spec.HasField("version") else None
    return repo.servable(spec.name, version, spec.version_label)


def predict(repo: ModelRepo, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
    servable = resolve(repo, request.model_spec)
    signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
    inputs = {name: _tensor(name, proto) for name, proto in request.inputs.items()}
    outputs = servable.predict(signature, inputs, request.output_filter)
    response = predict_pb2.PredictResponse()
    _fill_spec(response.model_spec, servable, signature)
    for name, value in outputs.items():
        response.outputs[name].CopyFrom(_output_proto(value))
    return response


def get_model_metadata(
    repo: ModelRepo, request: get_model_metadata_pb2.GetModelMetadataRequest
) -> get_model_metadata_pb2.GetModelMetadataResponse:
    if not request.HasField("model_spec"):
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
    if not request.metadata_field:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT, "GetModelMetadataRequest must specify at least one metadata_field"
        )
    for field in request.metadata_field:
        if field != SIGNATURE_DEF_FIELD:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Metadata field {field} is not supported")
    servable = resolve(repo, request.model_spec)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    _fill_spec(response.model_spec, servable)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    for name, signature_def in servable.signature_defs.items():
        signatures.signature_def[name].CopyFrom(signature_def)
    response.metadata[SIGNATURE_DEF_FIELD].Pack(signatures)
    return response


def get_model_status(
    repo: ModelRepo, request: get_model_status_pb2.GetModelStatusRequest
) -> get_model_status_pb2.GetModelStatusResponse:
    if not request.HasField("model_spec"):
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
    spec = request.model_spec
    version = spec.version.value if spec.HasField("version") else None
    response = get_model_status_pb2.GetModelStatusResponse()
    for status in repo.statuses(spec.name, version):
        entry = response.model_version_status.add()
        entry.version = status.version
        entry.state = status.state
        entry.status.error_code = status.error_code.value[0]
        entry.status.error_message = status.error_message
    return response


def _fill_spec(spec: model_pb2.ModelSpec, servable: Servable, signature: str = "") -> None:
    spec.name = servable.name
    spec.version.value = servable.version
    if signature:
        spec.signature_name = signature


# TF Serving answers Predict in the typed value fields (Tensor::AsProtoField), and clients
# read e.g. ``float_val`` directly; tf.make_tensor_proto would use tensor_content instead.
_VALUE_FIELD = {
    tf.float32: "float_val",
    tf.float64: "double_val",
    tf.int8: "int_val",
    tf.int16: "int_val",
    tf.int32: "int_val",
    tf.uint8: "int_val",
    tf.uint16: "int_val",
    tf.int64: "int64_val",
    tf.uint32: "uint32_val",
    tf.uint64: "uint64_val",
    tf.bool: "bool_val",
    tf.string: "string_val",
}


def _output_proto(value: np.ndarray) -> tensor_pb2.TensorProto:
    dtype = tf.string if value.dtype == object else tf.dtypes.as_dtype(value.dtype)
    field = _VALUE_FIELD.get(dtype)
    if field is None:  # half, bfloat16, complex: rare in outputs; content bytes decode the same
        return tf.make_tensor_proto(value)
    proto = tensor_pb2.TensorProto(dtype=dtype.as_datatype_enum, tensor_shape=tf.TensorShape(value.shape).as_proto())
    getattr(proto, field).extend(value.ravel().tolist())
    return proto


def _tensor(name: str, proto: tensor_pb2.TensorProto) -> np.ndarray:
    try:
        return tf.make_ndarray(proto)
    except (TypeError, ValueError) as e:
        message = f"input '{name}' is not a valid TensorProto: {e}"
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, message) from None
