//! Metric names of the HTTP layer, and the Prometheus recorder shared by
//! the process. Labels are bounded: the route template (never a raw path),
//! the method and the status code.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Requests answered, labels `route`, `method`, `status`.
pub const HTTP_REQUESTS_TOTAL: &str = "inferdb_http_requests_total";
/// Request latency, labels `route`, `method`.
pub const HTTP_REQUEST_SECONDS: &str = "inferdb_http_request_duration_seconds";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle (`None`
/// if another recorder was installed first, e.g. by an embedding program).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".to_string()),
                    inferdb_engine::metrics::LATENCY_BUCKETS,
                )
                .ok()?
                .set_buckets_for_metric(
                    Matcher::Full(inferdb_engine::metrics::WAL_GROUP_BATCHES.to_string()),
                    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0],
                )
                .ok()?
                .install_recorder()
                .ok()
        })
        .as_ref()
}
