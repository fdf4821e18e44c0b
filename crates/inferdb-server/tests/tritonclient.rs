#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Triton's own Python client, `tritonclient.http`, unchanged against the
//! `inferdb` binary: health, metadata, config, repository index, `infer`
//! in binary and JSON at every fixture batch size (compared with
//! onnxruntime's outputs), NaNs, `async_infer`, statistics, unload/load and
//! an error. The checks are `scripts/tritonclient_check.py`; this test
//! builds a virtualenv for it once, under `target/` (so `cargo clean`
//! removes it), starts the server and runs the script.
//!
//! It fails, not skips, when `python3`, its `venv` module or PyPI are
//! missing: CI (`.ci/run`) installs them.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Instant;

/// What the venv holds, pinned. Changing it rebuilds the venv.
const REQUIREMENTS: &[&str] = &["tritonclient[http]==2.73.0", "numpy==2.2.6"];

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn root() -> PathBuf {
    Path::new(ROOT).canonicalize().unwrap()
}

/// `target/tritonclient-venv`: `CARGO_TARGET_TMPDIR` is `target/tmp`.
fn venv_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR has a parent")
        .join("tritonclient-venv")
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The venv's python, after creating the venv and installing the pinned
/// requirements unless a marker written after a successful install says
/// that this exact set is already there. A half-built venv (no marker, or
/// another set) is removed and rebuilt.
fn venv_python() -> PathBuf {
    let venv = venv_dir();
    let python = venv.join("bin").join("python");
    let marker = venv.join("inferdb-installed.txt");
    let want = REQUIREMENTS.join("\n");
    if python.exists() && std::fs::read_to_string(&marker).ok().as_deref() == Some(&want) {
        return python;
    }
    let started = Instant::now();
    if venv.exists() {
        std::fs::remove_dir_all(&venv).unwrap();
    }
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv));
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
        ])
        .args(REQUIREMENTS)
        .stdin(Stdio::null()));
    std::fs::write(&marker, &want).unwrap();
    eprintln!(
        "built {} in {:.1}s",
        venv.display(),
        started.elapsed().as_secs_f64()
    );
    python
}

/// Stops the server with SIGTERM when dropped, so that a failed assertion
/// leaves no process behind.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.0.id().to_string()])
                .status();
            let _ = self.0.wait();
        }
    }
}

fn start(root: &Path, dir: &Path) -> (Server, SocketAddr) {
    let spec = root.join("examples/payments/spec.toml");
    let models = root.join("examples/models");
    let (child, addr) = common::spawn_server(&[
        "--spec".as_ref(),
        spec.as_os_str(),
        "--model-repository".as_ref(),
        models.as_os_str(),
        "--data-dir".as_ref(),
        dir.as_os_str(),
    ]);
    (Server(child), addr)
}

#[test]
fn tritonclient_http_works_unchanged() {
    let root = root();
    let python = venv_python();
    let dir = tempfile::tempdir().unwrap();
    let (mut server, addr) = start(&root, dir.path());
    let started = Instant::now();
    let out = Command::new(&python)
        .arg(root.join("scripts/tritonclient_check.py"))
        .arg(addr.to_string())
        .arg(&root)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tritonclient_check.py failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
    eprintln!(
        "{stdout}tritonclient checks took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    // SIGTERM: a graceful stop after the client's traffic.
    Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    let status = server.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
