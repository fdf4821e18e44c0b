#!/usr/bin/env python3
"""Triton's own Python client, unchanged, against a running inferdb.

Usage: tritonclient_check.py URL REPO_ROOT

URL is host:port (or http://host:port) of an `inferdb serve` started with
`--model-repository REPO_ROOT/examples/models`. Every check prints a line;
the first failure raises and the script exits non-zero. Compares inferdb's
outputs with onnxruntime's, stored in crates/inferdb-inference/fixtures.

Run by crates/inferdb-server/tests/tritonclient.rs in a virtualenv holding
only tritonclient[http] and numpy.
"""

import json
import os
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

TOL = 1e-4
MODELS = [
    "confidence_calibrator",
    "feature_preprocessor",
    "fraud_ensemble",
    "gbdt_fraud",
    "main_model_v3",
]


def ok(what):
    print(f"ok   {what}", flush=True)


def close(got, want, what):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    err = float(np.max(np.abs(got - want))) if got.size else 0.0
    assert err <= TOL, f"{what}: max abs error {err} > {TOL}"
    return err


def load_fixture(root, name):
    path = os.path.join(root, "crates", "inferdb-inference", "fixtures", name)
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def server_checks(client):
    assert client.is_server_live(), "is_server_live() is False"
    ok("is_server_live")
    assert client.is_server_ready(), "is_server_ready() is False"
    ok("is_server_ready")
    meta = client.get_server_metadata()
    assert meta.get("name"), f"server metadata has no name: {meta}"
    assert "version" in meta, f"server metadata has no version: {meta}"
    assert "binary_tensor_data" in meta.get("extensions", []), f"extensions: {meta}"
    ok(f"get_server_metadata: {meta['name']} {meta['version']}")


def model_checks(client):
    assert client.is_model_ready("fraud_ensemble"), "fraud_ensemble is not ready"
    ok("is_model_ready(fraud_ensemble)")
    meta = client.get_model_metadata("fraud_ensemble")
    assert meta["name"] == "fraud_ensemble", f"metadata name: {meta}"
    ins = {t["name"]: (t["datatype"], list(t["shape"])) for t in meta["inputs"]}
    outs = {t["name"]: (t["datatype"], list(t["shape"])) for t in meta["outputs"]}
    assert ins == {"features": ("FP32", [-1, 256])}, f"metadata inputs: {meta['inputs']}"
    assert outs == {
        "predictions": ("FP32", [-1, 10]),
        "confidence": ("FP32", [-1, 1]),
    }, f"metadata outputs: {meta['outputs']}"
    ok("get_model_metadata(fraud_ensemble): inputs/outputs")
    cfg = client.get_model_config("fraud_ensemble")
    assert cfg.get("max_batch_size") == 64, f"config max_batch_size: {cfg.get('max_batch_size')}"
    assert cfg.get("platform") == "ensemble", f"config platform: {cfg.get('platform')}"
    ok("get_model_config(fraud_ensemble): max_batch_size 64, platform ensemble")
    index = client.get_model_repository_index()
    states = {m["name"]: m.get("state") for m in index}
    for name in MODELS:
        assert states.get(name) == "READY", f"repository index: {name} is {states.get(name)}: {index}"
    ok(f"get_model_repository_index: {len(MODELS)} models READY")


def ensemble_request(x, binary):
    inp = httpclient.InferInput("features", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    outs = [
        httpclient.InferRequestedOutput("predictions", binary_data=binary),
        httpclient.InferRequestedOutput("confidence", binary_data=binary),
    ]
    return [inp], outs


def check_ensemble_result(result, case, what):
    n = case["batch"]
    pred = result.as_numpy("predictions")
    conf = result.as_numpy("confidence")
    assert pred is not None, f"{what}: no predictions in {result.get_response()}"
    assert conf is not None, f"{what}: no confidence in {result.get_response()}"
    assert pred.dtype == np.float32, f"{what}: predictions dtype {pred.dtype}"
    assert conf.dtype == np.float32, f"{what}: confidence dtype {conf.dtype}"
    e1 = close(pred, np.asarray(case["predictions"]).reshape(n, 10), f"{what} predictions")
    e2 = close(conf, np.asarray(case["confidence"]).reshape(n, 1), f"{what} confidence")
    return max(e1, e2)


def ensemble_checks(client, fixture):
    for binary in (True, False):
        mode = "binary" if binary else "json"
        for case in fixture["cases"]:
            n = case["batch"]
            x = np.asarray(case["features"], dtype=np.float32).reshape(n, 256)
            inputs, outputs = ensemble_request(x, binary)
            result = client.infer("fraud_ensemble", inputs, outputs=outputs)
            err = check_ensemble_result(result, case, f"fraud_ensemble {mode} batch {n}")
            ok(f"infer(fraud_ensemble) {mode} batch {n}: max error {err:.2e}")
    # No outputs named: tritonclient asks for all of them in binary.
    case = fixture["cases"][0]
    x = np.asarray(case["features"], dtype=np.float32).reshape(case["batch"], 256)
    inp = httpclient.InferInput("features", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer("fraud_ensemble", [inp])
    check_ensemble_result(result, case, "fraud_ensemble, outputs not named")
    ok("infer(fraud_ensemble) with no outputs named (binary_data_output)")
    # The versioned routes.
    assert client.is_model_ready("fraud_ensemble", "1"), "fraud_ensemble version 1 not ready"
    meta = client.get_model_metadata("fraud_ensemble", "1")
    assert "1" in meta.get("versions", []), f"versions: {meta}"
    inputs, outputs = ensemble_request(x, True)
    result = client.infer("fraud_ensemble", inputs, model_version="1", outputs=outputs)
    assert result.get_response().get("model_version") == "1", f"{result.get_response()}"
    check_ensemble_result(result, case, "fraud_ensemble version 1")
    ok("is_model_ready/get_model_metadata/infer on versions/1")


def gbdt_checks(client, fixture):
    for case in fixture["cases"]:
        n = case["batch"]
        raw = [np.nan if v is None else v for v in case["input"]]
        x = np.asarray(raw, dtype=np.float32).reshape(n, 256)
        assert np.isnan(x).any(), f"gbdt fixture batch {n} has no NaN"
        inp = httpclient.InferInput("X", [n, 256], "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        outs = [
            httpclient.InferRequestedOutput("label", binary_data=True),
            httpclient.InferRequestedOutput("probabilities", binary_data=True),
        ]
        result = client.infer("gbdt_fraud", [inp], outputs=outs)
        labels = result.as_numpy("label")
        probs = result.as_numpy("probabilities")
        assert labels is not None, f"gbdt batch {n}: no label in {result.get_response()}"
        assert labels.dtype == np.int64, f"gbdt batch {n}: label dtype {labels.dtype}"
        want = np.asarray(case["labels"], dtype=np.int64)
        assert labels.reshape(-1).tolist() == want.tolist(), (
            f"gbdt batch {n}: labels {labels.tolist()} != {want.tolist()}"
        )
        assert list(labels.shape) == [n], f"gbdt batch {n}: label shape {labels.shape}"
        err = close(probs, np.asarray(case["scores"]).reshape(n, 10), f"gbdt batch {n} probabilities")
        ok(f"infer(gbdt_fraud) binary with NaNs batch {n}: labels equal, max error {err:.2e}")


def async_checks(client, fixture):
    pending = []
    for i in range(6):
        case = fixture["cases"][i % len(fixture["cases"])]
        x = np.asarray(case["features"], dtype=np.float32).reshape(case["batch"], 256)
        inputs, outputs = ensemble_request(x, i % 2 == 0)
        pending.append(
            (case, client.async_infer("fraud_ensemble", inputs, outputs=outputs, request_id=str(i)))
        )
    for i, (case, req) in enumerate(pending):
        result = req.get_result()
        resp = result.get_response()
        assert resp.get("id") == str(i), f"async {i}: id {resp.get('id')}"
        check_ensemble_result(result, case, f"async_infer {i}")
    ok(f"async_infer: {len(pending)} concurrent requests")


def stats_checks(client):
    stats = client.get_inference_statistics("fraud_ensemble")
    rows = stats.get("model_stats")
    assert rows, f"statistics: {stats}"
    row = rows[0]
    assert row["name"] == "fraud_ensemble", f"statistics name: {row}"
    success = row["inference_stats"]["success"]["count"]
    assert success >= 14, f"statistics: only {success} successful inferences: {row}"
    ok(f"get_inference_statistics(fraud_ensemble): {success} successes")


def load_unload_checks(client):
    client.unload_model("gbdt_fraud")
    assert not client.is_model_ready("gbdt_fraud"), "gbdt_fraud ready after unload"
    ok("unload_model(gbdt_fraud): no longer ready")
    client.load_model("gbdt_fraud")
    assert client.is_model_ready("gbdt_fraud"), "gbdt_fraud not ready after load"
    ok("load_model(gbdt_fraud): ready again")


def error_checks(client):
    x = np.zeros((1, 255), dtype=np.float32)
    inp = httpclient.InferInput("features", [1, 255], "FP32")
    inp.set_data_from_numpy(x)
    try:
        client.infer("fraud_ensemble", [inp])
    except InferenceServerException as e:
        msg = e.message()
        assert "features" in msg, f"error does not name the input: {e}"
        assert e.status() == "400", f"wrong shape: status {e.status()} ({e})"
        ok(f"wrong shape raises InferenceServerException: {e.status()} {msg}")
    else:
        raise AssertionError("infer with shape [1,255] did not raise")
    try:
        client.get_model_metadata("no_such_model")
    except InferenceServerException as e:
        ok(f"unknown model raises InferenceServerException: {e.status()} {e.message()}")
    else:
        raise AssertionError("get_model_metadata(no_such_model) did not raise")


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    url, root = sys.argv[1], sys.argv[2]
    for prefix in ("http://", "https://"):
        if url.startswith(prefix):
            url = url[len(prefix):]
    ensemble = load_fixture(root, "ensemble.json")
    gbdt = load_fixture(root, "gbdt_200.json")
    client = httpclient.InferenceServerClient(url=url, concurrency=4, network_timeout=60.0)
    try:
        server_checks(client)
        model_checks(client)
        ensemble_checks(client, ensemble)
        gbdt_checks(client, gbdt)
        async_checks(client, ensemble)
        stats_checks(client)
        load_unload_checks(client)
        error_checks(client)
    finally:
        client.close()
    print("tritonclient: all checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
