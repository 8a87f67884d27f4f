//! The HTTP endpoint that serves [`SessionMetrics`] at `/metrics` (hyper).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use tokio::task::JoinHandle;
use tracing::{debug, info};

use super::SessionMetrics;
use crate::error::{Result, SluiceError};

/// A running metrics endpoint; dropping it (or [`MetricsServer::stop`])
/// stops it.
#[derive(Debug)]
pub struct MetricsServer {
    address: SocketAddr,
    task: JoinHandle<()>,
    metrics: Arc<SessionMetrics>,
}

impl MetricsServer {
    /// The address it listens on (the port chosen when `:0` was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// The metrics it serves.
    pub fn metrics(&self) -> &Arc<SessionMetrics> {
        &self.metrics
    }

    /// Stop serving.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn respond(metrics: &SessionMetrics, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match req.uri().path() {
        "/metrics" => (StatusCode::OK, prometheus_client::encoding::prometheus_text::CONTENT_TYPE, metrics.render()),
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found: the metrics are at /metrics\n".to_string()),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Serve `metrics` at `http://<address>/metrics`. An address that cannot be
/// bound (in use, not local) is an error naming it.
pub async fn serve(address: &str, metrics: Arc<SessionMetrics>) -> Result<MetricsServer> {
    let bad = |reason: String| SluiceError::InvalidOption { option: "metrics".into(), value: address.into(), reason };
    let addr: SocketAddr =
        address.parse().map_err(|_| bad("expected HOST:PORT with an IP address, e.g. 127.0.0.1:9464".into()))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| bad(format!("cannot listen there: {e}; pick a free port (or stop what holds it)")))?;
    let address = listener.local_addr().map_err(|e| bad(e.to_string()))?;
    info!(%address, "serving Prometheus metrics at /metrics");
    let served = Arc::clone(&metrics);
    let task = tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    debug!("metrics endpoint: accept failed: {e}");
                    continue;
                }
            };
            let m = Arc::clone(&served);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let m = Arc::clone(&m);
                    async move { Ok::<_, Infallible>(respond(&m, &req)) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await {
                    debug!("metrics endpoint: connection ended: {e}");
                }
            });
        }
    });
    Ok(MetricsServer { address, task, metrics })
}
