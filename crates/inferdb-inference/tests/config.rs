#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `config.pbtxt` parsing, validation, the config JSON, and repository
//! scanning.

use std::fs;
use std::path::Path;
use std::time::Duration;

use inferdb_inference::config::{
    DynamicBatching, EnsembleStep, ModelConfig, Platform, TensorConfig, VersionPolicy,
};
use inferdb_inference::{DataType, InferenceError, scan_model, scan_repository};

const FULL: &str = r#"
# A realistic Triton config for an ONNX model.
name: "fraud_model"
platform: "onnxruntime_onnx"
max_batch_size: 64
version_policy: { specific: { versions: [3, 1] } }
input [
  {
    name: "features"
    data_type: TYPE_FP32
    dims: [ 256 ]
  },
  {
    name: "history"
    data_type: TYPE_INT64
    dims: [ -1 ]
    optional: true
  },
  {
    name: "image"
    data_type: TYPE_FP32
    dims: [ 4, 4 ]
    reshape: { shape: [ 16 ] }
  }
]
output [
  {
    name: "probabilities"
    data_type: TYPE_FP32
    dims: [ 2 ]
  }
]
instance_group [
  {
    count: 2
    kind: KIND_CPU
  }
]
dynamic_batching {
  preferred_batch_size: [ 8, 16 ]
  max_queue_delay_microseconds: 500
  preserve_ordering: true
  default_queue_policy {
    timeout_action: REJECT
    default_timeout_microseconds: 20000
    allow_timeout_override: true
    max_queue_size: 128
  }
}
"#;

fn tensor(name: &str, data_type: DataType, dims: &[i64]) -> TensorConfig {
    TensorConfig {
        name: name.into(),
        data_type,
        dims: dims.to_vec(),
        reshape: None,
        optional: false,
    }
}

fn config_error(text: &str, dir: &str) -> String {
    match ModelConfig::parse(text, dir) {
        Err(InferenceError::Config { model, message }) => {
            assert_eq!(model, dir);
            message
        }
        other => panic!("expected a Config error, got {other:?}"),
    }
}

#[test]
fn full_config_parses_to_exact_values() {
    let c = ModelConfig::parse(FULL, "fraud_model").unwrap();
    let expected = ModelConfig {
        name: "fraud_model".into(),
        platform: Platform::Onnx,
        max_batch_size: 64,
        inputs: vec![
            tensor("features", DataType::Fp32, &[256]),
            TensorConfig {
                optional: true,
                ..tensor("history", DataType::Int64, &[-1])
            },
            TensorConfig {
                reshape: Some(vec![16]),
                ..tensor("image", DataType::Fp32, &[4, 4])
            },
        ],
        outputs: vec![tensor("probabilities", DataType::Fp32, &[2])],
        dynamic_batching: Some(DynamicBatching {
            preferred_batch_sizes: vec![8, 16],
            max_queue_delay: Duration::from_micros(500),
            default_timeout: Some(Duration::from_millis(20)),
            allow_timeout_override: true,
            max_queue_size: Some(128),
        }),
        instance_count: 2,
        version_policy: VersionPolicy::Specific(vec![1, 3]),
        default_model_filename: "model.onnx".into(),
        ensemble_steps: vec![],
    };
    assert_eq!(c, expected);
}

#[test]
fn defaults_of_a_bare_config() {
    let c = ModelConfig::parse("backend: \"onnxruntime\"", "m").unwrap();
    assert_eq!(c, ModelConfig::minimal("m"));
    // Triton's 0 for the queue size and timeout means "no limit".
    let c = ModelConfig::parse(
        "max_batch_size: 4 dynamic_batching {} instance_group [{ kind: KIND_AUTO }, { count: 3 }]",
        "m",
    )
    .unwrap();
    let d = c.dynamic_batching.unwrap();
    assert_eq!(d.max_queue_size, None);
    assert_eq!(d.default_timeout, None);
    assert_eq!(d.max_queue_delay, Duration::ZERO);
    assert_eq!(c.instance_count, 4);
    let c = ModelConfig::parse("default_model_filename: \"net.onnx\"", "m").unwrap();
    assert_eq!(c.default_model_filename, "net.onnx");
}

#[test]
fn version_policies_select_versions() {
    let available = [3, 1, 7, 5];
    let parse = |policy: &str| ModelConfig::parse(policy, "m").unwrap();

    let c = parse("");
    assert_eq!(c.version_policy, VersionPolicy::Latest(1));
    assert_eq!(c.version_selected(&available), vec![7]);

    let c = parse("version_policy: { latest: { num_versions: 2 } }");
    assert_eq!(c.version_policy, VersionPolicy::Latest(2));
    assert_eq!(c.version_selected(&available), vec![5, 7]);
    let c = parse("version_policy: { latest: { num_versions: 9 } }");
    assert_eq!(c.version_selected(&available), vec![1, 3, 5, 7]);

    let c = parse("version_policy: { all: {} }");
    assert_eq!(c.version_policy, VersionPolicy::All);
    assert_eq!(c.version_selected(&available), vec![1, 3, 5, 7]);

    let c = parse("version_policy: { specific: { versions: [7, 2, 3] } }");
    assert_eq!(c.version_policy, VersionPolicy::Specific(vec![2, 3, 7]));
    assert_eq!(c.version_selected(&available), vec![3, 7]);
    assert_eq!(c.version_selected(&[]), Vec::<i64>::new());

    let m = config_error("version_policy: { latest: {} }", "m");
    assert!(m.contains("version_policy.latest.num_versions"), "{m}");
    let m = config_error("version_policy: { specific: {} }", "m");
    assert!(m.contains("version_policy.specific.versions"), "{m}");
}

const ENSEMBLE: &str = r#"
name: "fraud_pipeline"
platform: "ensemble"
max_batch_size: 64
input [ { name: "features" data_type: TYPE_FP32 dims: [ 256 ] } ]
output [
  { name: "predictions" data_type: TYPE_FP32 dims: [ 10 ] },
  { name: "confidence" data_type: TYPE_FP32 dims: [ 1 ] }
]
ensemble_scheduling {
  step [
    {
      model_name: "feature_preprocessor"
      model_version: -1
      input_map { key: "input" value: "features" }
      output_map { key: "scaled" value: "scaled_features" }
    },
    {
      model_name: "main_model_v3"
      model_version: -1
      input_map { key: "input" value: "scaled_features" }
      output_map { key: "logits" value: "logits" }
    },
    {
      model_name: "confidence_calibrator"
      model_version: 2
      input_map { key: "logits" value: "logits" }
      output_map [
        { key: "predictions" value: "predictions" },
        { key: "confidence" value: "confidence" }
      ]
    }
  ]
}
"#;

#[test]
fn reference_ensemble_parses() {
    let c = ModelConfig::parse(ENSEMBLE, "fraud_pipeline").unwrap();
    assert_eq!(c.platform, Platform::Ensemble);
    assert_eq!(c.max_batch_size, 64);
    assert_eq!(c.inputs, vec![tensor("features", DataType::Fp32, &[256])]);
    assert_eq!(
        c.outputs,
        vec![
            tensor("predictions", DataType::Fp32, &[10]),
            tensor("confidence", DataType::Fp32, &[1]),
        ]
    );
    let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(
        c.ensemble_steps,
        vec![
            EnsembleStep {
                model_name: "feature_preprocessor".into(),
                model_version: -1,
                input_map: vec![pair("input", "features")],
                output_map: vec![pair("scaled", "scaled_features")],
            },
            EnsembleStep {
                model_name: "main_model_v3".into(),
                model_version: -1,
                input_map: vec![pair("input", "scaled_features")],
                output_map: vec![pair("logits", "logits")],
            },
            EnsembleStep {
                model_name: "confidence_calibrator".into(),
                model_version: 2,
                input_map: vec![pair("logits", "logits")],
                output_map: vec![
                    pair("confidence", "confidence"),
                    pair("predictions", "predictions"),
                ],
            },
        ]
    );
    assert_eq!(c.dynamic_batching, None);
}

#[test]
fn ensemble_rules() {
    let m = config_error(
        "platform: \"ensemble\" input [{name: \"a\" data_type: TYPE_FP32 dims: [1]}] \
         output [{name: \"b\" data_type: TYPE_FP32 dims: [1]}]",
        "e",
    );
    assert!(m.contains("ensemble_scheduling"), "{m}");
    let broken = ENSEMBLE.replace("model_name: \"main_model_v3\"", "");
    let m = config_error(&broken, "fraud_pipeline");
    assert!(m.contains("ensemble_scheduling.step.model_name"), "{m}");
    let broken = ENSEMBLE.replace(
        "input_map { key: \"input\" value: \"scaled_features\" }",
        "",
    );
    let m = config_error(&broken, "fraud_pipeline");
    assert!(m.contains("ensemble_scheduling.step.input_map"), "{m}");
    let broken = ENSEMBLE.replace("output_map { key: \"logits\" value: \"logits\" }", "");
    let m = config_error(&broken, "fraud_pipeline");
    assert!(m.contains("ensemble_scheduling.step.output_map"), "{m}");
    // A step consuming a tensor nobody produces.
    let broken = ENSEMBLE.replace(
        "value: \"scaled_features\" }\n      output_map { key: \"logits\"",
        "value: \"nothing\" }\n      output_map { key: \"logits\"",
    );
    let m = config_error(&broken, "fraud_pipeline");
    assert!(m.contains("`nothing`"), "{m}");
    // An ensemble output nobody produces.
    let broken = ENSEMBLE.replace(
        "{ key: \"confidence\" value: \"confidence\" }",
        "{ key: \"confidence\" value: \"conf\" }",
    );
    let m = config_error(&broken, "fraud_pipeline");
    assert!(m.contains("`confidence`") && m.contains("output"), "{m}");
    // ensemble_scheduling on an ONNX model.
    let broken = ENSEMBLE.replace("platform: \"ensemble\"", "platform: \"onnxruntime_onnx\"");
    let m = config_error(&broken, "fraud_pipeline");
    assert!(m.contains("ensemble_scheduling"), "{m}");
}

#[test]
fn unknown_field_is_a_parse_error_naming_it() {
    let m = config_error("name: \"m\"\nfoo: 1\n", "m");
    assert!(m.contains("'foo'"), "{m}");
    assert!(m.contains("line 2, column 1"), "{m}");
    let m = config_error("input [{ name: \"a\" shape: [1] }]", "m");
    assert!(m.contains("'shape'"), "{m}");
}

#[test]
fn syntax_error_has_line_number() {
    let m = config_error(
        "name: \"m\"\nmax_batch_size: 8\ninput [ { name: \"a\" \n",
        "m",
    );
    assert!(m.contains("line "), "{m}");
    let m = config_error("name: \"m\"\n\n  max_batch_size: : 8\n", "m");
    assert!(m.contains("line 3, column 19"), "{m}");
    let m = config_error("max_batch_size: \"eight\"", "m");
    assert!(m.contains("line 1"), "{m}");
}

#[test]
fn unsupported_platforms_are_named() {
    for p in ["tensorflow_savedmodel", "pytorch_libtorch", "tensorrt_plan"] {
        let m = config_error(&format!("platform: \"{p}\""), "m");
        assert!(m.contains("platform"), "{m}");
        assert!(m.contains(p), "{m}");
        assert!(m.contains("onnxruntime_onnx and ensemble"), "{m}");
    }
    let m = config_error("backend: \"python\"", "m");
    assert!(m.contains("backend") && m.contains("python"), "{m}");
}

#[test]
fn gpu_instance_group_is_refused() {
    let m = config_error("instance_group [{ count: 1 kind: KIND_GPU }]", "m");
    assert!(m.contains("instance_group.kind"), "{m}");
    assert!(m.contains("CPU"), "{m}");
    let m = config_error("instance_group [{ gpus: [0] }]", "m");
    assert!(m.contains("instance_group.gpus"), "{m}");
    let m = config_error("instance_group [{ count: -2 }]", "m");
    assert!(m.contains("instance_group.count"), "{m}");
}

#[test]
fn unsupported_data_types_are_refused() {
    for t in ["TYPE_STRING", "TYPE_FP16", "TYPE_BF16"] {
        let m = config_error(
            &format!("input [{{ name: \"text\" data_type: {t} dims: [1] }}]"),
            "m",
        );
        assert!(m.contains("input.data_type"), "{m}");
        assert!(m.contains(t) && m.contains("`text`"), "{m}");
    }
    let m = config_error("output [{ name: \"o\" dims: [1] }]", "m");
    assert!(m.contains("output.data_type"), "{m}");
}

#[test]
fn unsupported_fields_are_named_by_path() {
    let cases = [
        ("optimization { graph { level: 1 } }", "`optimization`"),
        (
            "sequence_batching { max_sequence_idle_microseconds: 5000000 }",
            "`sequence_batching`",
        ),
        (
            "model_warmup [{ name: \"w\" batch_size: 1 }]",
            "`model_warmup`",
        ),
        (
            "parameters { key: \"k\" value: { string_value: \"v\" } }",
            "`parameters`",
        ),
        ("response_cache { enable: true }", "`response_cache`"),
        (
            "model_transaction_policy { decoupled: true }",
            "`model_transaction_policy`",
        ),
        (
            "max_batch_size: 8 dynamic_batching { priority_levels: 2 }",
            "`dynamic_batching.priority_levels`",
        ),
        (
            "max_batch_size: 8 dynamic_batching { priority_queue_policy { key: 1 value: {} } }",
            "`dynamic_batching.priority_queue_policy`",
        ),
        (
            "output [{ name: \"o\" data_type: TYPE_FP32 dims: [1] label_filename: \"l.txt\" }]",
            "`output.label_filename`",
        ),
        (
            "input [{ name: \"i\" data_type: TYPE_FP32 dims: [1] format: FORMAT_NCHW }]",
            "`input.format`",
        ),
        (
            "input [{ name: \"i\" data_type: TYPE_FP32 dims: [1] is_shape_tensor: true }]",
            "`input.is_shape_tensor`",
        ),
        ("metric_tags { key: \"a\" value: \"b\" }", "`metric_tags`"),
    ];
    for (text, field) in cases {
        let m = config_error(text, "m");
        assert!(m.contains(field), "{text}: {m}");
        assert!(m.contains("not supported by inferdb"), "{text}: {m}");
    }
    // Defaults written out are not "set": FORMAT_NONE and REJECT are fine.
    ModelConfig::parse(
        "max_batch_size: 2 input [{ name: \"i\" data_type: TYPE_FP32 dims: [1] format: FORMAT_NONE }] \
         dynamic_batching { default_queue_policy { timeout_action: REJECT } }",
        "m",
    )
    .unwrap();
}

#[test]
fn semantic_errors_name_the_field() {
    let m = config_error("name: \"other\"", "m");
    assert!(m.contains("`name`") && m.contains("other"), "{m}");
    let m = config_error(
        "max_batch_size: 8 dynamic_batching { preferred_batch_size: [4, 16] }",
        "m",
    );
    assert!(m.contains("dynamic_batching.preferred_batch_size"), "{m}");
    assert!(m.contains("16"), "{m}");
    let m = config_error(
        "dynamic_batching { max_queue_delay_microseconds: 100 }",
        "m",
    );
    assert!(
        m.contains("dynamic_batching") && m.contains("max_batch_size"),
        "{m}"
    );
    let m = config_error(
        "max_batch_size: 8 dynamic_batching { default_queue_policy { timeout_action: DELAY } }",
        "m",
    );
    assert!(
        m.contains("dynamic_batching.default_queue_policy.timeout_action"),
        "{m}"
    );
    let m = config_error(
        "input [{ name: \"a\" data_type: TYPE_FP32 dims: [1] }, { name: \"a\" data_type: TYPE_FP32 dims: [2] }]",
        "m",
    );
    assert!(m.contains("input.name") && m.contains("`a`"), "{m}");
    let m = config_error(
        "input [{ name: \"a\" data_type: TYPE_FP32 dims: [0] }]",
        "m",
    );
    assert!(m.contains("input.dims"), "{m}");
    let m = config_error(
        "input [{ name: \"a\" data_type: TYPE_FP32 dims: [-2] }]",
        "m",
    );
    assert!(m.contains("input.dims"), "{m}");
    let m = config_error("input [{ name: \"a\" data_type: TYPE_FP32 }]", "m");
    assert!(m.contains("input.dims"), "{m}");
    let m = config_error(
        "input [{ name: \"a\" data_type: TYPE_FP32 dims: [2, 3] reshape { shape: [5] } }]",
        "m",
    );
    assert!(m.contains("input.reshape.shape"), "{m}");
    let m = config_error("max_batch_size: -1", "m");
    assert!(m.contains("max_batch_size"), "{m}");
    let m = config_error("default_model_filename: \"../../etc/passwd\"", "m");
    assert!(m.contains("default_model_filename"), "{m}");
}

#[test]
fn hostile_input_does_not_panic() {
    for text in [
        "",
        "{",
        "}",
        "input [",
        "input [{ dims: [99999999999999999999] }]",
        "max_batch_size: 99999999999",
        "version_policy: { latest: { num_versions: 1 } all: {} }",
        "\u{0}\u{1}\"\\",
        "name: \"\\xff\"",
        "dynamic_batching { max_queue_delay_microseconds: 18446744073709551615 } max_batch_size: 1",
    ] {
        let _ = ModelConfig::parse(text, "m");
    }
    let huge = "#".repeat(2 << 20);
    let m = config_error(&huge, "m");
    assert!(m.contains("bytes"), "{m}");
}

#[test]
fn to_json_is_tritons_config_json() {
    let c = ModelConfig::parse(FULL, "fraud_model").unwrap();
    let j = c.to_json();
    assert_eq!(j["name"], "fraud_model");
    assert_eq!(j["platform"], "onnxruntime_onnx");
    assert_eq!(j["backend"], "onnxruntime");
    assert_eq!(j["max_batch_size"], 64);
    assert_eq!(j["input"][0]["name"], "features");
    assert_eq!(j["input"][0]["dims"], serde_json::json!(["256"]));
    assert_eq!(j["input"][0]["data_type"], "TYPE_FP32");
    assert_eq!(j["input"][1]["dims"], serde_json::json!(["-1"]));
    assert_eq!(j["input"][1]["optional"], true);
    assert_eq!(j["input"][2]["reshape"]["shape"], serde_json::json!(["16"]));
    assert_eq!(j["output"][0]["data_type"], "TYPE_FP32");
    assert_eq!(
        j["version_policy"]["specific"]["versions"],
        serde_json::json!(["1", "3"])
    );
    assert_eq!(j["instance_group"][0]["kind"], "KIND_CPU");
    assert_eq!(j["instance_group"][0]["count"], 2);
    let d = &j["dynamic_batching"];
    assert_eq!(d["preferred_batch_size"], serde_json::json!([8, 16]));
    assert_eq!(d["max_queue_delay_microseconds"], "500");
    assert_eq!(
        d["default_queue_policy"]["default_timeout_microseconds"],
        "20000"
    );
    assert_eq!(d["default_queue_policy"]["max_queue_size"], 128);
    assert_eq!(d["default_queue_policy"]["timeout_action"], "REJECT");
    assert_eq!(j["default_model_filename"], "model.onnx");
    assert!(j.get("ensemble_scheduling").is_none());

    // Defaults are printed, as Triton prints them.
    let j = ModelConfig::minimal("bare").to_json();
    assert_eq!(j["max_batch_size"], 0);
    assert_eq!(j["input"], serde_json::json!([]));
    assert_eq!(j["version_policy"]["latest"]["num_versions"], 1);

    let e = ModelConfig::parse(ENSEMBLE, "fraud_pipeline")
        .unwrap()
        .to_json();
    assert_eq!(e["platform"], "ensemble");
    let steps = e["ensemble_scheduling"]["step"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[0]["model_name"], "feature_preprocessor");
    assert_eq!(steps[0]["model_version"], "-1");
    assert_eq!(steps[0]["input_map"]["input"], "features");
    assert_eq!(steps[2]["output_map"]["confidence"], "confidence");
}

#[test]
fn to_pbtxt_round_trips() {
    for (text, dir) in [
        (FULL, "fraud_model"),
        (ENSEMBLE, "fraud_pipeline"),
        ("", "bare"),
    ] {
        let c = ModelConfig::parse(text, dir).unwrap();
        let printed = c.to_pbtxt();
        assert_eq!(ModelConfig::parse(&printed, dir).unwrap(), c, "{printed}");
        assert_eq!(c.to_proto().name, dir);
    }
}

// ---- repository scanning ----

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

#[test]
fn scan_finds_models_and_versions() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    write(&r.join("b_model/config.pbtxt"), "max_batch_size: 8");
    write(&r.join("b_model/10/model.onnx"), "x");
    write(&r.join("b_model/2/model.onnx"), "x");
    write(&r.join("b_model/3/README"), "no model file here");
    write(&r.join("b_model/latest/model.onnx"), "non-numeric: ignored");
    write(&r.join("a_model/1/model.onnx"), "x"); // no config.pbtxt
    write(&r.join(".hidden/1/model.onnx"), "x");
    write(&r.join("plain_file"), "x");
    write(
        &r.join("custom/config.pbtxt"),
        "default_model_filename: \"net.onnx\"",
    );
    write(&r.join("custom/1/net.onnx"), "x");
    write(&r.join("custom/2/model.onnx"), "x");
    write(&r.join("broken/config.pbtxt"), "platform: \"python\"");
    write(
        &r.join("pipe/config.pbtxt"),
        ENSEMBLE.replace("fraud_pipeline", "pipe").as_str(),
    );

    let models = scan_repository(r).unwrap();
    let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["a_model", "b_model", "broken", "custom", "pipe"]);

    let a = &models[0];
    assert_eq!(a.config.as_ref().unwrap(), &ModelConfig::minimal("a_model"));
    assert_eq!(a.versions, vec![(1, r.join("a_model/1"))]);
    assert_eq!(a.path, r.join("a_model"));

    let b = &models[1];
    assert_eq!(b.config.as_ref().unwrap().max_batch_size, 8);
    assert_eq!(
        b.versions,
        vec![(2, r.join("b_model/2")), (10, r.join("b_model/10"))]
    );

    let broken = &models[2];
    match &broken.config {
        Err(InferenceError::Config { model, message }) => {
            assert_eq!(model, "broken");
            assert!(message.contains("python"), "{message}");
        }
        other => panic!("{other:?}"),
    }

    assert_eq!(models[3].versions, vec![(1, r.join("custom/1"))]);

    let pipe = &models[4];
    assert_eq!(pipe.config.as_ref().unwrap().platform, Platform::Ensemble);
    assert_eq!(pipe.versions, vec![(1, r.join("pipe/1"))]);
    fs::create_dir_all(r.join("pipe/4")).unwrap();
    assert_eq!(
        scan_model(r, "pipe").unwrap().versions,
        vec![(4, r.join("pipe/4"))]
    );

    assert_eq!(scan_model(r, "b_model").unwrap(), models[1]);
    for missing in ["nope", "plain_file", ".hidden", "..", "a_model/1", ""] {
        assert!(
            matches!(
                scan_model(r, missing),
                Err(InferenceError::UnknownModel { .. })
            ),
            "{missing}"
        );
    }
    assert!(scan_repository(&r.join("does_not_exist")).is_err());
}

#[test]
fn fingerprint_changes_with_versions_and_config() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    write(&r.join("m/config.pbtxt"), "max_batch_size: 8");
    write(&r.join("m/1/model.onnx"), "x");
    let f0 = scan_model(r, "m").unwrap().fingerprint;
    assert_eq!(scan_model(r, "m").unwrap().fingerprint, f0, "stable");

    write(&r.join("m/2/model.onnx"), "xy");
    let s = scan_model(r, "m").unwrap();
    assert_eq!(s.versions.iter().map(|v| v.0).collect::<Vec<_>>(), [1, 2]);
    let f1 = s.fingerprint;
    assert_ne!(f1, f0, "new version");

    // Same length, rewritten: the config's bytes are part of the fingerprint.
    write(&r.join("m/config.pbtxt"), "max_batch_size: 9");
    let s = scan_model(r, "m").unwrap();
    assert_eq!(s.config.unwrap().max_batch_size, 9);
    let f2 = s.fingerprint;
    assert_ne!(f2, f1, "config rewritten");

    write(&r.join("m/2/model.onnx"), "xyz");
    let f3 = scan_model(r, "m").unwrap().fingerprint;
    assert_ne!(f3, f2, "model file replaced");

    fs::remove_file(r.join("m/config.pbtxt")).unwrap();
    let s = scan_model(r, "m").unwrap();
    assert_eq!(s.config.unwrap(), ModelConfig::minimal("m"));
    assert_ne!(s.fingerprint, f3, "config removed");
}
