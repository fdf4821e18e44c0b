//! Running the server: open the engine, bind, serve until told to stop,
//! then drain connections and shut the engine down (final sync and
//! snapshot). Used by `inferdb serve`, the demo, the benchmarks and the
//! end-to-end tests alike.

use crate::api::{AppState, app};
use crate::config::ServerConfig;
use inferdb_engine::Engine;
use inferdb_inference::{ManagerOptions, ModelManager};
use std::net::SocketAddr;
use tokio::sync::oneshot;

/// A server running on the current tokio runtime.
pub struct RunningServer {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The engine behind it.
    pub engine: Engine,
    /// The model repository's models, when one is configured.
    pub models: Option<ModelManager>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Opens the engine and starts serving.
pub async fn start(cfg: ServerConfig) -> anyhow::Result<RunningServer> {
    crate::metrics::handle();
    let engine_cfg = cfg.engine.clone();
    let engine = tokio::task::spawn_blocking(move || Engine::open(engine_cfg)).await??;
    let models = match cfg.model_repository.clone() {
        None => None,
        Some(root) => {
            let opts = ManagerOptions {
                poll_interval: cfg.repository_poll,
                ..ManagerOptions::default()
            };
            let m = tokio::task::spawn_blocking(move || ModelManager::open(&root, opts)).await?;
            match m {
                Ok(m) => Some(m),
                Err(e) => {
                    engine.shutdown();
                    return Err(anyhow::anyhow!("model repository: {e}"));
                }
            }
        }
    };
    if let Err(e) = check_bindings(&engine, models.as_ref()) {
        if let Some(m) = &models {
            m.shutdown();
        }
        engine.shutdown();
        return Err(e);
    }
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let router = app(
        AppState {
            engine: engine.clone(),
            max_keys_per_read: cfg.max_keys_per_read,
            models: models.clone(),
            sql: cfg.sql.clone(),
        },
        cfg.max_body_bytes,
    );
    let (stop, stopped) = oneshot::channel::<()>();
    // Small request/response exchanges: do not let Nagle hold answers back.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let task = tokio::spawn(async move {
        axum::serve(listener, axum::ServiceExt::into_make_service(router))
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    tracing::info!(%addr, "listening");
    Ok(RunningServer {
        addr,
        engine,
        models,
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
        if let Some(m) = &self.models {
            m.shutdown();
        }
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || engine.shutdown()).await?;
        Ok(())
    }
}

/// Checks every feature binding of the spec against its model, when the
/// model is loaded: a binding whose vector does not fit the model's input
/// stops the start with the reason. A bound model that is not loaded is
/// only logged (its `/infer` calls answer 404 until it loads).
fn check_bindings(engine: &Engine, models: Option<&ModelManager>) -> anyhow::Result<()> {
    let catalog = engine.catalog();
    if catalog.bindings.is_empty() {
        return Ok(());
    }
    let Some(models) = models else {
        tracing::warn!(
            "the spec binds models but no --model-repository is given; /infer answers 404"
        );
        return Ok(());
    };
    for b in &catalog.bindings {
        match models.model(&b.model, None) {
            Ok(h) => {
                crate::infer::check_binding(b, &h).map_err(|e| anyhow::anyhow!("spec: {e}"))?;
            }
            Err(e) => tracing::warn!(model = %b.model, error = %e, "bound model is not loaded"),
        }
    }
    Ok(())
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
