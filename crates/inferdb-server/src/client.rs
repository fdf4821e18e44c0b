//! A minimal HTTP/1.1 JSON client over hyper, for the demo, the CLI and
//! tests: one connection per call, which is all they need, or one kept
//! alive across calls ([`Conn`]) where a benchmark times calls.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;

/// One HTTP/1.1 connection kept alive across requests.
pub struct Conn {
    addr: SocketAddr,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    /// Connects to `addr`.
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Conn { addr, sender })
    }

    /// Sends one request (`accept` as its `Accept` header, if any); the
    /// status and the raw body.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        content_type: &str,
        accept: Option<&str>,
        body: Bytes,
    ) -> anyhow::Result<(u16, Bytes)> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.addr.to_string())
            .header(CONTENT_TYPE, content_type);
        if let Some(a) = accept {
            req = req.header(hyper::header::ACCEPT, a);
        }
        self.sender.ready().await?;
        let resp = self.sender.send_request(req.body(Full::new(body))?).await?;
        let status = resp.status().as_u16();
        Ok((status, resp.into_body().collect().await?.to_bytes()))
    }
}

/// Sends one request and returns the status and the body parsed as JSON
/// (`null` for an empty body).
pub async fn request_json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: Bytes,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let mut conn = Conn::open(addr).await?;
    let (status, bytes) = conn.send(method, path, content_type, None, body).await?;
    let json = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
        })
    };
    Ok((status, json))
}

/// Sends one POST with an `Accept` header; returns the status and the
/// raw body.
pub async fn request_bytes(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    accept: &str,
    body: Bytes,
) -> anyhow::Result<(u16, Bytes)> {
    let mut conn = Conn::open(addr).await?;
    conn.send("POST", path, content_type, Some(accept), body)
        .await
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
