//! A minimal HTTP/1.1 JSON client over hyper, for the demo, the CLI and
//! tests: one connection per call, which is all they need.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;

/// Sends one request and returns the status and the body parsed as JSON
/// (`null` for an empty body).
pub async fn request_json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: Bytes,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, addr.to_string())
        .header(CONTENT_TYPE, content_type)
        .body(Full::new(body))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await?.to_bytes();
    let json = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
        })
    };
    Ok((status, json))
}

/// Sends one request with an `Accept` header; returns the status and the
/// raw body.
pub async fn request_bytes(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    accept: &str,
    body: Bytes,
) -> anyhow::Result<(u16, Bytes)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method("POST")
        .uri(path)
        .header(HOST, addr.to_string())
        .header(CONTENT_TYPE, content_type)
        .header(hyper::header::ACCEPT, accept)
        .body(Full::new(body))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    Ok((status, resp.into_body().collect().await?.to_bytes()))
}

/// The address of a running server from `host:port` or
/// `http://host:port/` (default `127.0.0.1:8080`), for the CLI commands.
pub fn server_addr(server: Option<&str>) -> anyhow::Result<SocketAddr> {
    let server = server.unwrap_or(crate::config::DEFAULT_LISTEN);
    let server = server.trim_start_matches("http://").trim_end_matches('/');
    std::net::ToSocketAddrs::to_socket_addrs(server)?
        .next()
        .ok_or_else(|| anyhow::anyhow!("cannot resolve {server}"))
}

/// GET returning JSON.
pub async fn get_json(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, serde_json::Value)> {
    request_json(addr, "GET", path, "application/json", Bytes::new()).await
}

/// POST a JSON value.
pub async fn post_json(
    addr: SocketAddr,
    path: &str,
    body: &serde_json::Value,
) -> anyhow::Result<(u16, serde_json::Value)> {
    request_json(
        addr,
        "POST",
        path,
        "application/json",
        Bytes::from(body.to_string()),
    )
    .await
}
