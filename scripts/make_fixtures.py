#!/usr/bin/env python3
"""Make the tree-ensemble fixtures of crates/inferdb-inference.

Run from the repository root:

    python3 -m venv /tmp/inferdb-fixtures-venv
    /tmp/inferdb-fixtures-venv/bin/pip install numpy onnx scikit-learn skl2onnx onnxruntime
    /tmp/inferdb-fixtures-venv/bin/python scripts/make_fixtures.py
    # or, to re-time onnxruntime only (prints, writes nothing):
    /tmp/inferdb-fixtures-venv/bin/python scripts/make_fixtures.py --time-only
    # or, to remake only the ensemble repository and its fixtures (keeps the
    # tree fixtures and the gbdt_200 timings as they are):
    /tmp/inferdb-fixtures-venv/bin/python scripts/make_fixtures.py --ensemble-only

It trains small scikit-learn tree models on synthetic data (fixed seeds),
exports them with skl2onnx (zipmap=False, batch dim named "N"), runs
onnxruntime on them with one thread at batch 1, 8 and 64, and writes under
crates/inferdb-inference/fixtures/:

    <name>.onnx          the model
    <name>.json          {"model", "n_features", "cases": [{"batch", "input",
                          "labels" (classifiers), "scores"}]}; NaN inputs are
                          written as null
    ort_timings.json     onnxruntime's time per call for gbdt_200 (1 thread),
                         and under "ensemble" the fused ensemble's and each
                         step's median time per call (1 thread)
    ensemble.json        the reference ensemble's inputs and onnxruntime's
                         outputs of every step (see make_ensemble)
    ensemble_fused.onnx  the three ensemble steps as one graph (timing only)

and the Triton model repository examples/models/ (the reference ensemble of
shared/WORKLOAD.md: feature_preprocessor -> main_model_v3 ->
confidence_calibrator, the fraud_ensemble that chains them, and gbdt_fraud,
a copy of gbdt_200).

The README in that folder records the versions and the timings.
"""
import json
import os
import sys
import time
import timeit

# One thread everywhere, before numpy/scikit-learn load their thread pools:
# training and the reference outputs must not depend on thread scheduling.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import sklearn  # noqa: E402
import skl2onnx  # noqa: E402
from skl2onnx import to_onnx  # noqa: E402
from sklearn.ensemble import (  # noqa: E402
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "inferdb-inference", "fixtures")
BATCHES = (1, 8, 64)


def normalize(model):
    """Names the batch dim "N" and makes the bytes reproducible: skl2onnx
    lists opset imports in set order (which varies with the hash seed) and
    sometimes twice."""
    versions = {}
    for o in model.opset_import:
        versions[o.domain] = max(versions.get(o.domain, 0), o.version)
    del model.opset_import[:]
    for domain in sorted(versions):
        model.opset_import.add(domain=domain, version=versions[domain])
    for vi in list(model.graph.input) + list(model.graph.output):
        shape = vi.type.tensor_type.shape
        if len(shape.dim) > 0:
            shape.dim[0].Clear()
            shape.dim[0].dim_param = "N"
    return model


class HandBuilt:
    """A model written with onnx.helper rather than exported."""

    def __init__(self, model):
        self.model = model


def modes_model(aggregate, post="NONE", n_targets=2, scale=1.0, base=(0.5, -0.5), zero_every=0):
    from onnx import TensorProto, helper

    # Tree 0: root BRANCH_LT on f0, then GTE / EQ, leaves; tree 1: GT, NEQ, LEQ.
    # node ids:        0          1            2           3     4     5     6
    t0 = dict(ids=[0, 1, 2, 3, 4, 5, 6],
              feat=[0, 1, 2, 0, 0, 0, 0],
              val=[0.5, -1.0, 1.0, 0, 0, 0, 0],
              mode=["BRANCH_LT", "BRANCH_GTE", "BRANCH_EQ", "LEAF", "LEAF", "LEAF", "LEAF"],
              true=[1, 3, 5, 0, 0, 0, 0], false=[2, 4, 6, 0, 0, 0, 0],
              miss=[1, 0, 1, 0, 0, 0, 0])
    t1 = dict(ids=[0, 1, 2, 3, 4, 5, 6, 7, 8],
              feat=[2, 0, 1, 1, 0, 0, 0, 0, 0],
              val=[0.0, 2.0, -0.5, 0.0, 0, 0, 0, 0, 0],
              mode=["BRANCH_GT", "BRANCH_NEQ", "BRANCH_LEQ", "LEAF", "BRANCH_LEQ", "LEAF", "LEAF", "LEAF", "LEAF"],
              true=[1, 3, 5, 0, 7, 0, 0, 0, 0], false=[2, 4, 6, 0, 8, 0, 0, 0, 0],
              miss=[0, 1, 1, 0, 0, 0, 0, 0, 0])
    attrs = {k: [] for k in ["nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_values",
                             "nodes_modes", "nodes_truenodeids", "nodes_falsenodeids",
                             "nodes_missing_value_tracks_true", "target_treeids", "target_nodeids",
                             "target_ids", "target_weights"]}
    for tid, t in enumerate([t0, t1]):
        for i, nid in enumerate(t["ids"]):
            attrs["nodes_treeids"].append(tid)
            attrs["nodes_nodeids"].append(nid)
            attrs["nodes_featureids"].append(t["feat"][i])
            attrs["nodes_values"].append(t["val"][i])
            attrs["nodes_modes"].append(t["mode"][i])
            attrs["nodes_truenodeids"].append(t["true"][i])
            attrs["nodes_falsenodeids"].append(t["false"][i])
            attrs["nodes_missing_value_tracks_true"].append(t["miss"][i])
            if t["mode"][i] == "LEAF":
                for target in range(n_targets):
                    attrs["target_treeids"].append(tid)
                    attrs["target_nodeids"].append(nid)
                    attrs["target_ids"].append(target)
                    w = float(10 * tid + nid + 0.25 * target) * (-1) ** nid * scale
                    if zero_every and (nid + target) % zero_every == 0:
                        w = 0.0
                    attrs["target_weights"].append(w)
    node = helper.make_node("TreeEnsembleRegressor", ["features"], ["variable"], domain="ai.onnx.ml",
                            n_targets=n_targets, aggregate_function=aggregate,
                            base_values=list(base), post_transform=post, **attrs)
    graph = helper.make_graph(
        [node], "modes",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("variable", TensorProto.FLOAT, ["N", n_targets])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("ai.onnx.ml", 3)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def export(est, n_features):
    if isinstance(est, HandBuilt):
        return est.model
    x = np.zeros((1, n_features), dtype=np.float32)
    opts = {id(est): {"zipmap": False}} if hasattr(est, "classes_") else None
    model = to_onnx(est, x, options=opts, target_opset={"": 17, "ai.onnx.ml": 3})
    return normalize(model)


def session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def to_json_floats(a):
    return [None if np.isnan(v) else float(v) for v in a.reshape(-1)]


def write_fixture(name, est, n_features, seed, nan_fraction, integral=False):
    model = export(est, n_features)
    path = os.path.join(OUT, name + ".onnx")
    onnx.save(model, path)
    sess = session(path)
    input_name = sess.get_inputs()[0].name
    rng = np.random.default_rng(seed)
    cases = []
    for batch in BATCHES:
        x = rng.normal(size=(batch, n_features)).astype(np.float32)
        if integral:
            # Hit the EQ/NEQ thresholds and the exact boundaries.
            x = np.round(x * 2.0).astype(np.float32) / 2.0
        if nan_fraction > 0:
            mask = rng.random(size=x.shape) < nan_fraction
            x[mask] = np.nan
        outs = sess.run(None, {input_name: x})
        case = {"batch": batch, "input": to_json_floats(x)}
        if hasattr(est, "classes_"):
            case["labels"] = [int(v) for v in outs[0].reshape(-1)]
            case["scores"] = to_json_floats(outs[1].astype(np.float32))
        else:
            case["scores"] = to_json_floats(outs[0].astype(np.float32))
        cases.append(case)
    doc = {"model": name + ".onnx", "n_features": n_features, "cases": cases}
    with open(os.path.join(OUT, name + ".json"), "w") as f:
        json.dump(doc, f, separators=(",", ":"))
    print(name, "written", os.path.getsize(path), "bytes onnx", file=sys.stderr)
    return path


def time_ort(path, n_features, seed):
    sess = session(path)
    input_name = sess.get_inputs()[0].name
    rng = np.random.default_rng(seed)
    result = {}
    for batch in BATCHES:
        x = rng.normal(size=(batch, n_features)).astype(np.float32)
        feed = {input_name: x}
        sess.run(None, feed)
        best = None
        for _ in range(5):
            number = max(1, int(20000 / batch))
            t = timeit.timeit(lambda: sess.run(None, feed), number=number) / number
            best = t if best is None else min(best, t)
        result[str(batch)] = best * 1e6
        print(f"ort gbdt_200 batch {batch}: {best * 1e6:.1f} us", file=sys.stderr)
    return result


# --- The reference ensemble (examples/models) --------------------------------

MODELS = os.path.join(os.path.dirname(__file__), "..", "examples", "models")
WIDTH = 256
HIDDEN = (256, 128)
CLASSES = 10
TEMPERATURE = 1.5


def ensemble_params():
    """The constants of the three steps, from one fixed seed."""
    rng = np.random.default_rng(2024)
    mean = rng.normal(scale=2.0, size=WIDTH).astype(np.float32)
    std = rng.uniform(0.5, 3.0, size=WIDTH).astype(np.float32)
    layers = []
    fan_in = WIDTH
    for width in HIDDEN + (CLASSES,):
        # He initialisation keeps the activations (and so the logits) around
        # unit scale through the ReLUs: the softmax is neither flat nor one-hot.
        w = (rng.normal(size=(width, fan_in)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        b = (rng.normal(size=width) * 0.1).astype(np.float32)
        layers.append((w, b))
        fan_in = width
    return mean, std, layers


def preprocessor_nodes(mean, std, x, out, p=""):
    from onnx import helper, numpy_helper

    inits = [numpy_helper.from_array(mean.reshape(1, WIDTH), p + "mean"),
             numpy_helper.from_array(std.reshape(1, WIDTH), p + "std")]
    nodes = [helper.make_node("Sub", [x, p + "mean"], [p + "centered"], name=p + "sub"),
             helper.make_node("Div", [p + "centered", p + "std"], [out], name=p + "div")]
    return nodes, inits


def mlp_nodes(layers, x, out, p=""):
    from onnx import helper, numpy_helper

    nodes, inits = [], []
    cur = x
    for i, (w, b) in enumerate(layers):
        inits.append(numpy_helper.from_array(w, f"{p}fc{i}.weight"))
        inits.append(numpy_helper.from_array(b, f"{p}fc{i}.bias"))
        last = i == len(layers) - 1
        y = out if last else f"{p}fc{i}"
        nodes.append(helper.make_node("Gemm", [cur, f"{p}fc{i}.weight", f"{p}fc{i}.bias"], [y],
                                      name=f"{p}fc{i}", transB=1))
        if not last:
            nodes.append(helper.make_node("Relu", [y], [f"{p}relu{i}"], name=f"{p}relu{i}"))
            y = f"{p}relu{i}"
        cur = y
    return nodes, inits


def calibrator_nodes(x, predictions, confidence, p=""):
    from onnx import helper, numpy_helper

    inits = [numpy_helper.from_array(np.array(TEMPERATURE, dtype=np.float32), p + "temperature")]
    nodes = [helper.make_node("Div", [x, p + "temperature"], [p + "scaled_logits"], name=p + "div"),
             helper.make_node("Softmax", [p + "scaled_logits"], [predictions], name=p + "softmax", axis=-1),
             helper.make_node("ReduceMax", [predictions], [confidence], name=p + "max",
                              axes=[-1], keepdims=1)]
    return nodes, inits


def make_graph_model(name, nodes, inits, inputs, outputs):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", w]) for n, w in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", w]) for n, w in outputs],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="inferdb make_fixtures.py")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def step_config(name, inputs, outputs):
    """A Triton config.pbtxt for one ONNX step (dims without the batch dim)."""
    def io(kind, items):
        body = ",\n".join(
            f'  {{\n    name: "{n}"\n    data_type: TYPE_FP32\n    dims: [ {w} ]\n  }}' for n, w in items)
        return f"{kind} [\n{body}\n]\n"
    return (f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 64\n'
            + io("input", inputs) + io("output", outputs)
            # No queue delay (Triton's default): under load batches form from
            # what queues while a batch runs; alone, a request runs at once.
            + "dynamic_batching {\n  max_queue_delay_microseconds: 0\n}\n")


ENSEMBLE_CONFIG = """name: "fraud_ensemble"
platform: "ensemble"
max_batch_size: 64
input [
  {
    name: "features"
    data_type: TYPE_FP32
    dims: [ 256 ]
  }
]
output [
  {
    name: "predictions"
    data_type: TYPE_FP32
    dims: [ 10 ]
  },
  {
    name: "confidence"
    data_type: TYPE_FP32
    dims: [ 1 ]
  }
]
ensemble_scheduling {
  step [
    {
      model_name: "feature_preprocessor"
      model_version: -1
      input_map {
        key: "input"
        value: "features"
      }
      output_map {
        key: "scaled"
        value: "scaled_features"
      }
    },
    {
      model_name: "main_model_v3"
      model_version: -1
      input_map {
        key: "input"
        value: "scaled_features"
      }
      output_map {
        key: "logits"
        value: "logits"
      }
    },
    {
      model_name: "confidence_calibrator"
      model_version: -1
      input_map {
        key: "logits"
        value: "logits"
      }
      output_map {
        key: "predictions"
        value: "predictions"
      }
      output_map {
        key: "confidence"
        value: "confidence"
      }
    }
  ]
}
"""

GBDT_CONFIG = """name: "gbdt_fraud"
platform: "onnxruntime_onnx"
max_batch_size: 64
input [
  {
    name: "X"
    data_type: TYPE_FP32
    dims: [ 256 ]
  }
]
output [
  {
    name: "label"
    data_type: TYPE_INT64
    dims: [ 1 ]
    reshape: { shape: [ ] }
  },
  {
    name: "probabilities"
    data_type: TYPE_FP32
    dims: [ 10 ]
  }
]
dynamic_batching {
  max_queue_delay_microseconds: 0
}
"""


def write_text(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def short_floats(a):
    """f32 values as the shortest decimal that reads back as the same f32
    (numpy's str of a float32), to keep the JSON small."""
    return [float(str(np.float32(v))) for v in a.reshape(-1)]


def make_ensemble():
    """Writes examples/models/ and fixtures/ensemble.json and
    ensemble_fused.onnx; returns the fused model's and the steps' paths."""
    mean, std, layers = ensemble_params()
    pre_nodes, pre_inits = preprocessor_nodes(mean, std, "input", "scaled")
    mlp, mlp_inits = mlp_nodes(layers, "input", "logits")
    cal, cal_inits = calibrator_nodes("logits", "predictions", "confidence")
    steps = {
        "feature_preprocessor": (make_graph_model("feature_preprocessor", pre_nodes, pre_inits,
                                                  [("input", WIDTH)], [("scaled", WIDTH)]),
                                 [("input", WIDTH)], [("scaled", WIDTH)]),
        "main_model_v3": (make_graph_model("main_model_v3", mlp, mlp_inits,
                                           [("input", WIDTH)], [("logits", CLASSES)]),
                          [("input", WIDTH)], [("logits", CLASSES)]),
        "confidence_calibrator": (make_graph_model("confidence_calibrator", cal, cal_inits,
                                                   [("logits", CLASSES)],
                                                   [("predictions", CLASSES), ("confidence", 1)]),
                                  [("logits", CLASSES)], [("predictions", CLASSES), ("confidence", 1)]),
    }
    paths = {}
    for name, (model, inputs, outputs) in steps.items():
        path = os.path.join(MODELS, name, "1", "model.onnx")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        onnx.save(model, path)
        write_text(os.path.join(MODELS, name, "config.pbtxt"), step_config(name, inputs, outputs))
        paths[name] = path
        print(name, "written", os.path.getsize(path), "bytes onnx", file=sys.stderr)
    write_text(os.path.join(MODELS, "fraud_ensemble", "config.pbtxt"), ENSEMBLE_CONFIG)
    write_text(os.path.join(MODELS, "fraud_ensemble", "1", ".gitkeep"), "")
    gbdt_dst = os.path.join(MODELS, "gbdt_fraud", "1", "model.onnx")
    os.makedirs(os.path.dirname(gbdt_dst), exist_ok=True)
    with open(os.path.join(OUT, "gbdt_200.onnx"), "rb") as src, open(gbdt_dst, "wb") as dst:
        dst.write(src.read())
    write_text(os.path.join(MODELS, "gbdt_fraud", "config.pbtxt"), GBDT_CONFIG)

    # The fused graph: the same nodes with prefixed internal names.
    n1, i1 = preprocessor_nodes(mean, std, "features", "scaled_features", p="pre/")
    n2, i2 = mlp_nodes(layers, "scaled_features", "logits", p="mlp/")
    n3, i3 = calibrator_nodes("logits", "predictions", "confidence", p="cal/")
    fused = make_graph_model("fraud_ensemble_fused", n1 + n2 + n3, i1 + i2 + i3,
                             [("features", WIDTH)], [("predictions", CLASSES), ("confidence", 1)])
    fused_path = os.path.join(OUT, "ensemble_fused.onnx")
    onnx.save(fused, fused_path)

    sess = {name: session(path) for name, path in paths.items()}
    fused_sess = session(fused_path)
    rng = np.random.default_rng(13)
    cases = []
    for batch in BATCHES:
        # Raw features around the preprocessor's mean/std, so the scaled
        # values are about N(0, 1). Rounded through the short decimal form so
        # the JSON input is exactly what onnxruntime saw.
        x = (mean + std * rng.normal(size=(batch, WIDTH))).astype(np.float32)
        x = np.array(short_floats(x), dtype=np.float32).reshape(batch, WIDTH)
        (scaled,) = sess["feature_preprocessor"].run(None, {"input": x})
        (logits,) = sess["main_model_v3"].run(None, {"input": scaled})
        predictions, confidence = sess["confidence_calibrator"].run(None, {"logits": logits})
        f_pred, f_conf = fused_sess.run(None, {"features": x})
        assert np.allclose(f_pred, predictions, atol=1e-6) and np.allclose(f_conf, confidence, atol=1e-6)
        assert predictions.max() < 0.999 and confidence.min() > 1.5 / CLASSES, "degenerate softmax"
        cases.append({"batch": batch, "features": short_floats(x), "scaled": short_floats(scaled),
                      "logits": short_floats(logits), "predictions": short_floats(predictions),
                      "confidence": short_floats(confidence)})
    doc = {
        "models": "examples/models",
        "steps": ["feature_preprocessor", "main_model_v3", "confidence_calibrator"],
        "width": WIDTH, "classes": CLASSES,
        "note": "each step's output is onnxruntime's (1 thread) on the previous step's "
                "onnxruntime output; predictions/confidence are the whole chain's",
        "cases": cases,
    }
    with open(os.path.join(OUT, "ensemble.json"), "w") as f:
        json.dump(doc, f, separators=(",", ":"))
    return fused_path, paths


def median_us(sess, feed, calls):
    sess.run(None, feed)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter_ns()
        sess.run(None, feed)
        times.append(time.perf_counter_ns() - t0)
    return float(np.median(times)) / 1e3


def time_ensemble(fused_path, step_paths):
    """Median time per call (1 thread) of the fused ensemble and of each step."""
    rng = np.random.default_rng(14)
    out = {"model": "ensemble_fused.onnx", "threads": 1, "statistic": "median",
           "us_per_call": {}, "steps_us_per_call": {}}
    fused = session(fused_path)
    steps = {name: session(p) for name, p in step_paths.items()}
    step_input = {"feature_preprocessor": ("input", WIDTH), "main_model_v3": ("input", WIDTH),
                  "confidence_calibrator": ("logits", CLASSES)}
    for batch in BATCHES:
        calls = max(500, 20000 // batch)
        x = rng.normal(size=(batch, WIDTH)).astype(np.float32)
        us = median_us(fused, {"features": x}, calls)
        out["us_per_call"][str(batch)] = us
        print(f"ort ensemble_fused batch {batch}: {us:.1f} us", file=sys.stderr)
        for name, s in steps.items():
            input_name, w = step_input[name]
            us = median_us(s, {input_name: x[:, :w].copy()}, calls)
            out["steps_us_per_call"].setdefault(name, {})[str(batch)] = us
            print(f"ort {name} batch {batch}: {us:.1f} us", file=sys.stderr)
    return out


def step_paths_on_disk():
    return {name: os.path.join(MODELS, name, "1", "model.onnx")
            for name in ("feature_preprocessor", "main_model_v3", "confidence_calibrator")}


def write_timings(gbdt, ensemble):
    """ort_timings.json: the gbdt_200 figures at the top level (as before) and
    the ensemble's under "ensemble"."""
    doc = {
        "model": "gbdt_200.onnx",
        "threads": 1,
        "us_per_call": gbdt,
        "ensemble": ensemble,
        "versions": {
            "numpy": np.__version__,
            "onnx": onnx.__version__,
            "scikit-learn": sklearn.__version__,
            "skl2onnx": skl2onnx.__version__,
            "onnxruntime": ort.__version__,
            "python": sys.version.split()[0],
        },
    }
    with open(os.path.join(OUT, "ort_timings.json"), "w") as f_:
        json.dump(doc, f_, indent=2)
        f_.write("\n")


def main():
    if "--time-only" in sys.argv:
        # Re-time onnxruntime on the committed model, writing nothing.
        time_ort(os.path.join(OUT, "gbdt_200.onnx"), 256, seed=8)
        time_ensemble(os.path.join(OUT, "ensemble_fused.onnx"), step_paths_on_disk())
        return
    if "--ensemble-only" in sys.argv:
        fused_path, step_paths = make_ensemble()
        with open(os.path.join(OUT, "ort_timings.json")) as f_:
            gbdt = json.load(f_)["us_per_call"]
        write_timings(gbdt, time_ensemble(fused_path, step_paths))
        return
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(42)

    # (a) the 200-tree GBDT of WORKLOAD.md: 256 features, 10 classes,
    # 20 estimators x 10 classes = 200 trees of depth 6.
    n, f = 4000, 256
    x = rng.normal(size=(n, f)).astype(np.float32)
    w = rng.normal(size=(f, 10))
    y = np.argmax(x @ w + rng.normal(scale=2.0, size=(n, 10)), axis=1)
    gbdt = GradientBoostingClassifier(
        n_estimators=20, max_depth=6, max_features=32, learning_rate=0.3, random_state=0
    ).fit(x, y)
    gbdt_path = write_fixture("gbdt_200", gbdt, f, seed=1, nan_fraction=0.02)

    # (b) small regressors: gradient boosting (SUM) and a random forest.
    n, f = 500, 8
    x = rng.normal(size=(n, f)).astype(np.float32)
    y = x[:, 0] * 2 - x[:, 1] ** 2 + np.sin(x[:, 2]) + rng.normal(scale=0.1, size=n)
    write_fixture(
        "gbr_small",
        GradientBoostingRegressor(n_estimators=10, max_depth=3, random_state=0).fit(x, y),
        f, seed=2, nan_fraction=0.05,
    )
    write_fixture(
        "rfr_small",
        RandomForestRegressor(n_estimators=5, max_depth=5, random_state=0).fit(x, y),
        f, seed=3, nan_fraction=0.05,
    )
    # Hand-built: every branch mode, missing_value_tracks_true, MAX
    # aggregation and two targets. (skl2onnx 1.20 cannot export
    # HistGradientBoosting under protobuf 7, so this is written by hand.)
    write_fixture("modes_max", HandBuilt(modes_model("MAX")), 3, seed=4, nan_fraction=0.15, integral=True)
    write_fixture("modes_avg", HandBuilt(modes_model("AVERAGE")), 3, seed=9, nan_fraction=0.15, integral=True)
    # The post transforms no exporter above produces.
    write_fixture("modes_min_logistic", HandBuilt(modes_model("MIN", post="LOGISTIC", scale=0.2)),
                  3, seed=10, nan_fraction=0.15, integral=True)
    write_fixture("modes_probit", HandBuilt(modes_model("AVERAGE", post="PROBIT", n_targets=1, scale=0.02, base=(0.5,))),
                  3, seed=11, nan_fraction=0.15, integral=True)
    write_fixture("modes_softmax_zero", HandBuilt(modes_model("SUM", post="SOFTMAX_ZERO", n_targets=3, scale=0.1,
                                                              base=(0.0, 0.0, 0.0), zero_every=3)),
                  3, seed=12, nan_fraction=0.15, integral=True)

    # (c) classifiers: binary GBDT (one score column, LOGISTIC), binary and
    # 3-class random forests (post_transform NONE, weights for every class).
    yb = (y > 0).astype(np.int64)
    write_fixture(
        "gbc_binary",
        GradientBoostingClassifier(n_estimators=10, max_depth=3, random_state=0).fit(x, yb),
        f, seed=5, nan_fraction=0.05,
    )
    write_fixture(
        "rfc_binary",
        RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0).fit(x, yb),
        f, seed=6, nan_fraction=0.05,
    )
    y3 = np.digitize(y, [-1.0, 1.0]).astype(np.int64) * 10 + 3  # labels 3, 13, 23
    write_fixture(
        "rfc_3class",
        RandomForestClassifier(n_estimators=6, max_depth=4, random_state=0).fit(x, y3),
        f, seed=7, nan_fraction=0.05,
    )

    fused_path, step_paths = make_ensemble()
    timings = time_ort(gbdt_path, 256, seed=8)
    write_timings(timings, time_ensemble(fused_path, step_paths))


if __name__ == "__main__":
    main()
