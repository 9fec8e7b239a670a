"""The model server through TF Serving's own client surface: the official gRPC stubs and plain HTTP.

These tests do not know which server answers, so they hold for tensorflow_model_server too; only the
last two look inside: the built-in server's repo scan, and how serve-model picks the real binary.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.tf_client import PredictClient, PredictError
from tests.fixtures.model_server import FLOAT_FEATURES, MODEL_NAME, STRING_FEATURES, candidate_batch, scores
from tests.helpers import assert_eventually

pytestmark = pytest.mark.integration

AVAILABLE = get_model_status_pb2.ModelVersionStatus.State.AVAILABLE
END = get_model_status_pb2.ModelVersionStatus.State.END


@pytest.fixture(scope="module")
def channel(model_server):
    with grpc.insecure_channel(model_server.grpc_target) as ch:
        yield ch


def predict_request(batch, name=MODEL_NAME, version=None, **spec) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    for key, value in spec.items():
        setattr(request.model_spec, key, value)
    for key, value in batch.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return request


def status_request(name=MODEL_NAME, version=None) -> get_model_status_pb2.GetModelStatusRequest:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    return request


def rpc_error(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=10)
    return info.value


def test_predict_scores_a_candidate_batch_like_the_model(model_server, channel, exported_rankers):
    batch = candidate_batch(200)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    response = stub.Predict(predict_request(batch), timeout=10)

    assert (response.model_spec.name, response.model_spec.version.value) == (MODEL_NAME, 1)
    assert response.model_spec.signature_name == "serving_default"
    (output,) = response.outputs.values()
    np.testing.assert_allclose(tf.make_ndarray(output), scores(exported_rankers[1][0], batch), rtol=1e-5, atol=1e-6)
    assert len(output.float_val) == 200  # the typed field TF Serving fills, which clients often read directly


def test_output_filter_selects_outputs(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_request(candidate_batch(3))

    request.output_filter.append("output_0")
    assert list(stub.Predict(request, timeout=10).outputs) == ["output_0"]

    request.output_filter[:] = ["no_such_output"]
    error = rpc_error(stub.Predict, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no_such_output" in error.details()


def test_metadata_lists_input_names_and_dtypes(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = MODEL_NAME

    response = stub.GetModelMetadata(request, timeout=10)

    assert (response.model_spec.name, response.model_spec.version.value) == (MODEL_NAME, 1)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    inputs = signatures.signature_def["serving_default"].inputs
    assert {name: info.dtype for name, info in inputs.items()} == {
        **{name: tf.float32.as_datatype_enum for name in FLOAT_FEATURES},
        **{name: tf.string.as_datatype_enum for name in STRING_FEATURES},
    }


def test_status_is_available(model_server, channel):
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    (status,) = stub.GetModelStatus(status_request(), timeout=10).model_version_status
    assert (status.version, status.state) == (1, AVAILABLE)

    body = httpx.get(model_server.rest_url, timeout=10).json()
    assert body["model_version_status"] == [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ]
    assert httpx.get(f"{model_server.rest_url}/versions/1", timeout=10).status_code == 200


def test_rest_predict_row_and_columnar(model_server, exported_rankers):
    batch = candidate_batch(5, seed=1)
    expected = scores(exported_rankers[1][0], batch)
    columns = {name: value.tolist() for name, value in batch.items()}
    rows = [{name: columns[name][i] for name in columns} for i in range(5)]

    row = httpx.post(f"{model_server.rest_url}:predict", json={"instances": rows}, timeout=10)
    columnar = httpx.post(f"{model_server.rest_url}/versions/1:predict", json={"inputs": columns}, timeout=10)

    assert row.status_code == 200, row.text
    assert columnar.status_code == 200, columnar.text
    # One output: TF Serving leaves out its name and answers the values alone.
    np.testing.assert_allclose(row.json()["predictions"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(columnar.json()["outputs"], expected, rtol=1e-5, atol=1e-6)


def test_rest_metadata(model_server):
    body = httpx.get(f"{model_server.rest_url}/metadata", timeout=10).json()

    assert body["model_spec"]["version"] == "1"
    inputs = body["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    assert {name: info["dtype"] for name, info in inputs.items()} == {
        **{name: "DT_FLOAT" for name in FLOAT_FEATURES},
        **{name: "DT_STRING" for name in STRING_FEATURES},
    }


def test_grpc_errors_carry_tf_serving_codes(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    batch = candidate_batch(2)
    renamed = {("user_ctr_typo" if k == "user_ctr" else k): v for k, v in batch.items()}
    wrong_dtype = {**batch, "user_ctr": batch["user_ctr"].astype(np.float64)}
    cases = {
        "unknown model": (predict_request(batch, name="nope"), grpc.StatusCode.NOT_FOUND, "nope"),
        "unknown version": (predict_request(batch, version=99), grpc.StatusCode.NOT_FOUND, "99"),
        "bad input name": (predict_request(renamed), grpc.StatusCode.INVALID_ARGUMENT, "user_ctr"),
        "wrong dtype": (predict_request(wrong_dtype), grpc.StatusCode.INVALID_ARGUMENT, "user_ctr"),
        "unknown signature": (
            predict_request(batch, signature_name="nope"), grpc.StatusCode.FAILED_PRECONDITION, "nope"
        ),
    }
    for case, (request, code, mentioned) in cases.items():
        error = rpc_error(stub.Predict, request)
        assert error.code() == code, (case, error.details())
        assert mentioned in error.details(), (case, error.details())

    status_stub = model_service_pb2_grpc.ModelServiceStub(channel)
    assert rpc_error(status_stub.GetModelStatus, status_request(name="nope")).code() == grpc.StatusCode.NOT_FOUND


def test_rest_errors_carry_tf_serving_http_statuses(model_server):
    columns = {name: value.tolist() for name, value in candidate_batch(2).items()}

    unknown = httpx.post(f"http://{model_server.host}:{model_server.rest_port}/v1/models/nope:predict",
                         json={"inputs": columns}, timeout=10)
    renamed = [{("user_ctr_typo" if k == "user_ctr" else k): v[0] for k, v in columns.items()}]
    bad_input = httpx.post(f"{model_server.rest_url}:predict", json={"instances": renamed}, timeout=10)

    assert unknown.status_code == 404
    assert "nope" in unknown.json()["error"]
    assert bad_input.status_code == 400
    assert "user_ctr" in bad_input.json()["error"]


def test_predict_client(model_server, exported_rankers):
    batch = candidate_batch(200, seed=2)
    with PredictClient(model_server.host, model_server.grpc_port, MODEL_NAME) as client:
        metadata = client.metadata()
        (output,) = client.predict(batch).values()
        with pytest.raises(PredictError) as info:
            client.predict(batch, version=99)

    assert metadata.version == 1
    inputs = metadata.signatures["serving_default"].inputs
    assert inputs["user_ctr"].dtype == tf.float32 and inputs["device"].dtype == tf.string
    assert inputs["device"].shape.as_list() == [None, 1]
    np.testing.assert_allclose(output, scores(exported_rankers[1][0], batch), rtol=1e-5, atol=1e-6)
    assert info.value.code == grpc.StatusCode.NOT_FOUND


def test_hot_loads_a_new_version_without_failing_requests(fresh_model_server, exported_rankers):
    batch = candidate_batch(200, seed=3)
    expected = {version: scores(model, batch) for version, (model, _) in exported_rankers.items()}
    answered: list[int] = []
    failures: list[str] = []
    stop = threading.Event()

    def keep_predicting():
        with grpc.insecure_channel(fresh_model_server.grpc_target) as ch:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            while not stop.is_set():
                try:
                    response = stub.Predict(predict_request(batch), timeout=10)
                except grpc.RpcError as e:
                    failures.append(f"{e.code()}: {e.details()}")
                    continue
                version = response.model_spec.version.value
                got = tf.make_ndarray(response.outputs["output_0"])
                if not np.allclose(got, expected[version], rtol=1e-5, atol=1e-6):
                    failures.append(f"version {version} answered scores that are not its model's")
                answered.append(version)

    client = threading.Thread(target=keep_predicting)
    client.start()
    try:
        assert_eventually(lambda: _assert_true(1 in answered), timeout_s=60)
        # A plain copy, file by file: the server sees the dir half-written first.
        shutil.copytree(exported_rankers[2][1], fresh_model_server.model_dir / "2")
        assert_eventually(lambda: _assert_true(answered and answered[-1] == 2), timeout_s=60)
    finally:
        stop.set()
        client.join()

    assert failures == []
    assert set(answered) == {1, 2}
    assert answered.index(2) > answered.index(1) and 1 not in answered[answered.index(2):]
    with grpc.insecure_channel(fresh_model_server.grpc_target) as ch:
        statuses = model_service_pb2_grpc.ModelServiceStub(ch).GetModelStatus(status_request(), timeout=10)
        assert {s.version: s.state for s in statuses.model_version_status} == {1: END, 2: AVAILABLE}
        predict = prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict
        assert rpc_error(predict, predict_request(batch, version=1)).code() == grpc.StatusCode.NOT_FOUND


def test_broken_version_does_not_take_the_server_down(fresh_model_server, exported_rankers):
    broken = fresh_model_server.model_dir / "2"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"this is not a SavedModel")

    with grpc.insecure_channel(fresh_model_server.grpc_target) as ch:
        status_stub = model_service_pb2_grpc.ModelServiceStub(ch)
        predict_stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)

        def version_2_failed():
            statuses = status_stub.GetModelStatus(status_request(), timeout=10).model_version_status
            failed = [s for s in statuses if s.version == 2 and s.state == END and s.status.error_code != 0]
            assert failed and failed[0].status.error_message

        assert_eventually(version_2_failed, timeout_s=60)
        assert predict_stub.Predict(predict_request(candidate_batch(4)), timeout=10).model_spec.version.value == 1

        # A good newer version still loads after the broken one.
        shutil.copytree(exported_rankers[2][1], fresh_model_server.model_dir / "3")

        def version_3_serves():
            response = predict_stub.Predict(predict_request(candidate_batch(4)), timeout=10)
            assert response.model_spec.version.value == 3

        assert_eventually(version_3_serves, timeout_s=60)


def test_repo_loads_a_half_written_version_only_once_complete(exported_rankers, tmp_path):
    # Drives the built-in server's repo scan directly, one poll at a time.
    from serving.model_server.repo import ModelRepo

    source = exported_rankers[2][1]
    shutil.copytree(exported_rankers[1][1], tmp_path / MODEL_NAME / "1")
    repo = ModelRepo(tmp_path, MODEL_NAME)
    repo.poll()
    assert repo.current().version == 1

    half = tmp_path / MODEL_NAME / "2"
    half.mkdir()
    shutil.copy(source / "saved_model.pb", half)
    repo.poll()  # first sight: may still be being written, so not tried yet
    assert [s.version for s in repo.statuses(MODEL_NAME)] == [1]
    repo.poll()  # unchanged since: tried, fails without its variables, version 1 keeps serving
    assert repo.statuses(MODEL_NAME, 2)[0].state == END
    assert repo.current().version == 1

    shutil.copytree(source, half, dirs_exist_ok=True)
    repo.poll()
    repo.poll()
    assert repo.current().version == 2
    assert {s.version: s.state for s in repo.statuses(MODEL_NAME)} == {1: END, 2: AVAILABLE}


def test_serve_model_runs_the_real_binary_when_on_path(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    recorded = tmp_path / "argv"
    fake = fake_bin / "tensorflow_model_server"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {recorded}\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}", "STREAMREC_MODEL__POLL_SECONDS": "2.5"}

    argv = ["--repo", "repo", "--name", "m", "--grpc-port", "7100", "--rest-port", "7101"]
    subprocess.run([sys.executable, "-m", "serving.model_server", *argv], cwd=tmp_path, env=env, check=True, timeout=60)

    assert recorded.read_text().splitlines() == [
        "--port=7100",
        "--rest_api_port=7101",
        "--model_name=m",
        f"--model_base_path={(tmp_path / 'repo' / 'm').resolve()}",
        "--file_system_poll_wait_seconds=3",
    ]


def _assert_true(condition: bool) -> None:
    assert condition
