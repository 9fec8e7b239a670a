"""One loaded SavedModel version: its signatures, a warm-up, and batch prediction."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from serving.model_server.errors import ServingError, code_from_number

SERVE_TAG = "serve"
DEFAULT_SIGNATURE = "serving_default"


def read_signature_defs(path: Path) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The SignatureDefs of the ``serve`` meta graph, as TF Serving reports them in its metadata."""
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((path / "saved_model.pb").read_bytes())
    for meta_graph in saved_model.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ValueError(f"{path}/saved_model.pb has no meta graph tagged {SERVE_TAG!r}")


class Servable:
    """A SavedModel version loaded and warmed up; safe to call from many threads at once."""

    def __init__(self, name: str, version: int, path: Path):
        self.name = name
        self.version = version
        self.signature_defs = read_signature_defs(path)
        # Keep the loaded object: the signature functions only borrow its variables.
        self._model = tf.saved_model.load(str(path), tags=[SERVE_TAG])
        self._functions = dict(self._model.signatures)
        self._warm_up()

    def input_specs(self, signature_name: str) -> dict[str, tf.TensorSpec]:
        return self._function(signature_name).structured_input_signature[1]

    def predict(
        self, signature_name: str, inputs: Mapping[str, tf.Tensor], output_filter: Iterable[str] = ()
    ) -> dict[str, np.ndarray]:
        """Run one signature on a whole batch; errors carry the status TF Serving gives for them."""
        fn = self._function(signature_name)
        _check_inputs(signature_name, fn.structured_input_signature[1], inputs)
        wanted = _outputs_wanted(list(fn.structured_outputs), list(output_filter))
        try:
            outputs = fn(**inputs)
        except tf.errors.OpError as e:
            raise ServingError(code_from_number(e.error_code), e.message) from None
        return {name: outputs[name].numpy() for name in wanted}

    def _function(self, signature_name: str):
        try:
            return self._functions[signature_name]
        except KeyError:
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{signature_name}" not found.'
            ) from None

    def _warm_up(self) -> None:
        # The first call of a function builds its runtime state; do it before any request waits on it.
        # A model that cannot score a zero-filled batch counts as failing to load.
        for fn in self._functions.values():
            specs = fn.structured_input_signature[1]
            fn(**{name: tf.zeros(_example_shape(spec), spec.dtype) for name, spec in specs.items()})


def _example_shape(spec: tf.TensorSpec) -> list[int]:
    if spec.shape.rank is None:
        return [1]
    return [1 if d is None else d for d in spec.shape.as_list()]


def _names(names: Iterable[str]) -> str:
    return "{" + ", ".join(sorted(names)) + "}"


def _check_inputs(signature_name: str, specs: Mapping[str, tf.TensorSpec], inputs: Mapping[str, tf.Tensor]) -> None:
    if set(inputs) != set(specs):
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f'inputs do not match signature "{signature_name}": sent extra {_names(set(inputs) - set(specs))}, '
            f"missing {_names(set(specs) - set(inputs))}; the signature takes {_names(specs)}",
        )
    for name, tensor in inputs.items():
        spec = specs[name]
        if tensor.dtype != spec.dtype:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input '{name}' has dtype {tensor.dtype.name}, "
                f'but signature "{signature_name}" expects {spec.dtype.name}',
            )
        if not spec.shape.is_compatible_with(tensor.shape):
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input '{name}' has shape {tensor.shape}, but signature \"{signature_name}\" expects {spec.shape}",
            )


def _outputs_wanted(outputs: list[str], output_filter: list[str]) -> list[str]:
    """The outputs to answer: all of them unless the request filters them, as TF Serving does."""
    for name in output_filter:
        if name not in outputs:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"output tensor alias not found in signature: {name}. "
                f"Outputs expected to be in the set {_names(outputs)}.",
            )
    if len(set(output_filter)) != len(output_filter):
        message = f"duplicate output tensor alias in output_filter {output_filter}"
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)
    return output_filter or outputs
