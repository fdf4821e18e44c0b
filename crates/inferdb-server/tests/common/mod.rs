//! Helpers shared by the tests that run the `inferdb` binary.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

/// Starts `inferdb serve --listen 127.0.0.1:0` plus `args` (warnings only in
/// the log) and returns the child and the address it printed on its first
/// stdout line.
pub fn spawn_server(args: &[&std::ffi::OsStr]) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_inferdb"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("INFERDB_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .rsplit("http://")
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("bad line {line:?}"));
    (child, addr)
}
