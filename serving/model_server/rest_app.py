"""TF Serving's REST API (predict, model status, metadata) as an ASGI app over a ModelRepo.

Paths, JSON shapes and error statuses follow https://www.tensorflow.org/tfx/serving/api_rest;
status and metadata are the JSON form of the gRPC answers, as TF Serving prints them.
"""
from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from serving.model_server import api
from serving.model_server.errors import ServingError
from serving.model_server.repo import ModelRepo
from serving.model_server.servable import DEFAULT_SIGNATURE

# TF Serving's own path patterns (model_servers/http_rest_api_handler.cc), case-insensitive like there.
_VERSION = r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
_PREDICT = re.compile(rf"(?i)/v1/models/(?P<name>[^/:]+){_VERSION}:(?P<method>classify|regress|predict)")
_METADATA = re.compile(rf"(?i)/v1/models/(?P<name>[^/:]+){_VERSION}/metadata")
_STATUS = re.compile(rf"(?i)/v1/models(?:/(?P<name>[^/:]+))?{_VERSION}")


def make_app(repo: ModelRepo) -> FastAPI:
    app = FastAPI(title="streamrec model server", docs_url=None, redoc_url=None, openapi_url=None)

    @app.api_route("/v1/{rest:path}", methods=["GET", "POST"])
    async def v1(request: Request) -> Response:
        body = await request.body() if request.method == "POST" else b""
        # Scoring and JSON conversion are blocking work: keep them off the event loop.
        status, payload = await run_in_threadpool(handle, repo, request.method, request.url.path, body)
        # json.dumps keeps NaN/Infinity, which TF Serving's REST API allows.
        return Response(json.dumps(payload), status_code=status, media_type="application/json")

    return app


def handle(repo: ModelRepo, method: str, path: str, body: bytes) -> tuple[int, Any]:
    """Answer one REST call: (HTTP status, JSON-able payload)."""
    try:
        return 200, _route(repo, method, path, body)
    except ServingError as e:
        return e.http_status, {"error": e.message}


def _route(repo: ModelRepo, method: str, path: str, body: bytes) -> Any:
    if method == "POST" and (m := _PREDICT.fullmatch(path)):
        if m["method"].lower() != "predict":
            message = f"{m['method']} is not supported by this server; use predict"
            raise ServingError(grpc.StatusCode.UNIMPLEMENTED, message)
        return _predict(repo, _model_spec(m), body)
    if method == "GET" and (m := _METADATA.fullmatch(path)):
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=_model_spec(m), metadata_field=[api.SIGNATURE_DEF_FIELD]
        )
        return _to_json(api.get_model_metadata(repo, request))
    if method == "GET" and (m := _STATUS.fullmatch(path)):
        if not m["name"]:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Missing model name in request.")
        request = get_model_status_pb2.GetModelStatusRequest(model_spec=_model_spec(m))
        return _to_json(api.get_model_status(repo, request))
    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Malformed request: {method} {path}")


def _model_spec(match: re.Match) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=match["name"])
    if match["version"]:
        spec.version.value = int(match["version"])
    if match["label"]:
        spec.version_label = match["label"]
    return spec


def _to_json(message) -> dict:
    return json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
    )


def _predict(repo: ModelRepo, spec: model_pb2.ModelSpec, body: bytes) -> dict:
    doc = _parse(body)
    signature = doc.get("signature_name", DEFAULT_SIGNATURE)
    if not isinstance(signature, str):
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "'signature_name' key must be a string value.")
    servable = api.resolve(repo, spec)
    specs = servable.input_specs(signature)
    if ("instances" in doc) == ("inputs" in doc):
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "the request must have exactly one of 'instances' (row format) or 'inputs' (columnar format)",
        )
    row_format = "instances" in doc
    columns = _columns_from_rows(doc["instances"], specs) if row_format else _columns_from_inputs(doc["inputs"], specs)
    inputs = {name: _tensor(name, value, specs[name]) for name, value in columns.items()}
    outputs = servable.predict(signature, inputs)
    return {"predictions": _rows(outputs)} if row_format else {"outputs": _columnar(outputs)}


def _parse(body: bytes) -> dict:
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"JSON Parse error: {e}") from None
    if not isinstance(doc, dict):
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "JSON Value: the request body must be a JSON object")
    return doc


def _is_object(value: Any) -> bool:
    return isinstance(value, dict) and set(value) != {"b64"}


def _columns_from_rows(instances: Any, specs: Mapping[str, tf.TensorSpec]) -> dict[str, list]:
    if not isinstance(instances, list) or not instances:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "'instances' must be a non-empty list")
    if not _is_object(instances[0]):
        if len(specs) > 1:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "instances is a plain list, but expecting list of objects as multiple input tensors "
                "required as per tensorinfo_map",
            )
        return {next(iter(specs)): instances}
    for i, instance in enumerate(instances):
        if not _is_object(instance) or set(instance) != set(specs):
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Failed to process element: {i} of 'instances' list. JSON object: {json.dumps(instance)} "
                f"keys must be equal to: {','.join(sorted(specs))}",
            )
    return {name: [instance[name] for instance in instances] for name in specs}


def _columns_from_inputs(inputs: Any, specs: Mapping[str, tf.TensorSpec]) -> dict[str, Any]:
    if not _is_object(inputs):
        if len(specs) > 1:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "inputs is a plain value/list, but expecting an object as multiple input tensors "
                "required as per tensorinfo_map",
            )
        return {next(iter(specs)): inputs}
    for name in specs:
        if name not in inputs:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Missing named input: {name} in 'inputs' object.")
    # Like TF Serving, names the signature does not take are ignored in the columnar format.
    return {name: inputs[name] for name in specs}


def _tensor(name: str, value: Any, spec: tf.TensorSpec) -> np.ndarray:
    if spec.dtype == tf.string:
        value = _to_bytes(value)
    try:
        return tf.constant(value, dtype=spec.dtype).numpy()  # TF's own checks: ragged lists, overflow, types
    except (TypeError, ValueError) as e:
        message = f"input '{name}' cannot be read as {spec.dtype.name}: {e}"
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, message) from None


def _to_bytes(value: Any) -> Any:
    """JSON strings and ``{"b64": ...}`` objects to bytes, through nested lists."""
    if isinstance(value, list):
        return [_to_bytes(v) for v in value]
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict) and set(value) == {"b64"}:
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (TypeError, ValueError) as e:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"invalid base64 value: {e}") from None
    return value


def _json_value(name: str, array: np.ndarray) -> Any:
    if array.dtype != object:
        return array.tolist()
    # DT_STRING: outputs named *_bytes are binary and go out base64-encoded, as in TF Serving.
    if name.endswith("_bytes"):
        encode = np.vectorize(lambda b: {"b64": base64.b64encode(b).decode("ascii")}, otypes=[object])
    else:
        encode = np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])
    return encode(array).tolist()


def _rows(outputs: Mapping[str, np.ndarray]) -> list:
    if len(outputs) == 1:
        name, array = next(iter(outputs.items()))
        return _json_value(name, array)
    sizes = {name: (array.shape[0] if array.ndim else None) for name, array in outputs.items()}
    if None in sizes.values() or len(set(sizes.values())) != 1:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"outputs have different batch sizes {sizes}; use the columnar format ('inputs') for this model",
        )
    columns = {name: _json_value(name, array) for name, array in outputs.items()}
    n_rows = next(iter(sizes.values()))
    assert n_rows is not None  # checked above
    return [{name: column[i] for name, column in columns.items()} for i in range(n_rows)]


def _columnar(outputs: Mapping[str, np.ndarray]) -> Any:
    if len(outputs) == 1:
        name, array = next(iter(outputs.items()))
        return _json_value(name, array)
    return {name: _json_value(name, array) for name, array in outputs.items()}
