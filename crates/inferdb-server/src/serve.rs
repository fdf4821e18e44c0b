//! Running the server: open the engine, bind, serve until told to stop,
//! then drain connections and shut the engine down (final sync and
//! snapshot). Used by `inferdb serve`, the demo, the benchmarks and the
//! end-to-end tests alike.

use crate::api::{AppState, app};
use crate::config::ServerConfig;
use inferdb_engine::Engine;
use std::net::SocketAddr;
use tokio::sync::oneshot;

/// A server running on the current tokio runtime.
pub struct RunningServer {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The engine behind it.
    pub engine: Engine,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Opens the engine and starts serving.
pub async fn start(cfg: ServerConfig) -> anyhow::Result<RunningServer> {
    crate::metrics::handle();
    let engine_cfg = cfg.engine.clone();
    let engine = tokio::task::spawn_blocking(move || Engine::open(engine_cfg)).await??;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let router = app(
        AppState {
            engine: engine.clone(),
            max_keys_per_read: cfg.max_keys_per_read,
        },
        cfg.max_body_bytes,
    );
    let (stop, stopped) = oneshot::channel::<()>();
    // Small request/response exchanges: do not let Nagle hold answers back.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    tracing::info!(%addr, "listening");
    Ok(RunningServer {
        addr,
        engine,
        stop: Some(stop),
        task,
    })
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish, then shuts the engine down.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        (&mut self.task).await??;
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || engine.shutdown()).await?;
        Ok(())
    }
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Builds the multi-threaded runtime the server runs on.
pub fn runtime(worker_threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.enable_all().thread_name("inferdb-worker");
    if let Some(n) = worker_threads {
        b.worker_threads(n.max(1));
    }
    b.build()
}
