//! The smallest server on inferdb's HTTP stack (tokio, hyper, axum): one
//! route answering a constant 11-byte JSON body. What wrk (or `probe`)
//! measures against it is the stack's and the machine's share of any
//! server's latency.
//!
//! `hello MODE [THREADS]`, listening on 127.0.0.1:18090:
//! - `multi`: axum::serve on a multi-threaded runtime (as `inferdb serve`);
//! - `percore`: one current-thread runtime per thread, each accepting on its
//!   own SO_REUSEPORT listener, hyper's HTTP/1 connections on a LocalSet.

use axum::{Router, routing::get};
use std::net::SocketAddr;

fn router() -> Router {
    Router::new().route("/", get(|| async { "{\"ok\":true}" }))
}

fn reuse_port_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.set_reuse_port(true)?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

async fn serve_local(l: tokio::net::TcpListener) -> std::io::Result<()> {
    let svc = router();
    loop {
        let (s, _) = l.accept().await?;
        s.set_nodelay(true)?;
        let svc = svc.clone();
        tokio::task::spawn_local(async move {
            let io = hyper_util::rt::TokioIo::new(s);
            let hs = hyper_util::service::TowerToHyperService::new(svc);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, hs)
                .await;
        });
    }
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "multi".into());
    let threads: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2);
    let addr: SocketAddr = ([127, 0, 0, 1], 18090).into();
    match mode.as_str() {
        "multi" => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .enable_all()
                .build()?;
            rt.block_on(async {
                let l = tokio::net::TcpListener::bind(addr).await?;
                let l = axum::serve::ListenerExt::tap_io(l, |t| {
                    let _ = t.set_nodelay(true);
                });
                axum::serve(l, router()).await
            })
        }
        "percore" => {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    std::thread::spawn(move || -> std::io::Result<()> {
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()?;
                        let local = tokio::task::LocalSet::new();
                        local.block_on(&rt, async move {
                            let l = tokio::net::TcpListener::from_std(reuse_port_listener(addr)?)?;
                            serve_local(l).await
                        })
                    })
                })
                .collect();
            for h in handles {
                h.join()
                    .map_err(|_| std::io::Error::other("server thread panicked"))??;
            }
            Ok(())
        }
        other => Err(std::io::Error::other(format!("unknown mode {other}"))),
    }
}
