"""One loaded SavedModel version: its signatures, a warm-up, and batch prediction."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from serving.model_server.errors import ServingError, code_from_number
from serving.tf_client import tensor_specs

SERVE_TAG = "serve"
# Each request's graph runs on the thread that received it, its ops one at a time (inter_op < 0: "in the
# caller's thread"). A ranking batch is a few hundred small ops: TF's pools, which spin while they wait,
# cost a third more CPU per Predict on 2 shared cores and added latency (bench serve, 2026-11-29).
SESSION_CONFIG = tf.compat.v1.ConfigProto(inter_op_parallelism_threads=-1, intra_op_parallelism_threads=1)
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
    """A SavedModel version loaded and warmed up; safe to call from many threads at once.

    Run as TF Serving runs it (a SavedModelBundle): the ``serve`` meta graph in a session of its own, fed numpy
    arrays by the signatures' tensor names. Calling the loaded signature functions eagerly instead costs ~1 ms
    more per call in Python (argument binding, a tensor per input), which is a quarter of a Predict here.
    """

    def __init__(self, name: str, version: int, path: Path):
        self.name = name
        self.version = version
        self.signature_defs = read_signature_defs(path)
        graph = tf.Graph()
        # Closed when the last reference goes (Session.__del__), i.e. once no request holds this version.
        self._session = tf.compat.v1.Session(graph=graph, config=SESSION_CONFIG)
        with graph.as_default():
            tf.compat.v1.saved_model.loader.load(self._session, [SERVE_TAG], str(path))
        # __saved_model_init_op has no method name: it is run by the load, never called.
        self._signatures = {name: sig for name, sig in self.signature_defs.items() if sig.method_name}
        self._specs = {name: (tensor_specs(sig.inputs), tensor_specs(sig.outputs))
                       for name, sig in self._signatures.items()}
        self._warm_up()

    def input_specs(self, signature_name: str) -> dict[str, tf.TensorSpec]:
        return self._spec(signature_name)[0]

    def predict(
        self, signature_name: str, inputs: Mapping[str, np.ndarray], output_filter: Iterable[str] = ()
    ) -> dict[str, np.ndarray]:
        """Run one signature on a whole batch; errors carry the status TF Serving gives for them."""
        input_specs, output_specs = self._spec(signature_name)
        _check_inputs(signature_name, input_specs, inputs)
        wanted = _outputs_wanted(list(output_specs), list(output_filter))
        signature = self._signatures[signature_name]
        feed = {signature.inputs[name].name: value for name, value in inputs.items()}
        try:
            values = self._session.run([signature.outputs[name].name for name in wanted], feed)
        except tf.errors.OpError as e:
            raise ServingError(code_from_number(e.error_code), e.message) from None
        return dict(zip(wanted, values))

    def _spec(self, signature_name: str) -> tuple[dict[str, tf.TensorSpec], dict[str, tf.TensorSpec]]:
        try:
            return self._specs[signature_name]
        except KeyError:
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{signature_name}" not found.'
            ) from None

    def _warm_up(self) -> None:
        # The first run of a signature builds its runtime state; do it before any request waits on it.
        # A model that cannot score a zero-filled batch counts as failing to load.
        for name, (specs, _) in self._specs.items():
            self.predict(name, {n: _zeros(spec) for n, spec in specs.items()})


def _zeros(spec: tf.TensorSpec) -> np.ndarray:
    """One example of ``spec``'s shape (any size: 1): zeros, or empty strings."""
    shape = [1] if spec.shape.rank is None else [1 if d is None else d for d in spec.shape.as_list()]
    if spec.dtype == tf.string:
        return np.full(shape, b"", dtype=object)
    return np.zeros(shape, spec.dtype.as_numpy_dtype)


def _names(names: Iterable[str]) -> str:
    return "{" + ", ".join(sorted(names)) + "}"


def _check_inputs(signature_name: str, specs: Mapping[str, tf.TensorSpec], inputs: Mapping[str, np.ndarray]) -> None:
    if set(inputs) != set(specs):
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f'inputs do not match signature "{signature_name}": sent extra {_names(set(inputs) - set(specs))}, '
            f"missing {_names(set(specs) - set(inputs))}; the signature takes {_names(specs)}",
        )
    for name, tensor in inputs.items():
        spec = specs[name]
        dtype = tf.as_dtype(tensor.dtype)
        if dtype != spec.dtype:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input '{name}' has dtype {dtype.name}, "
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
