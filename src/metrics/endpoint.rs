//! The metrics and health HTTP endpoint: `/metrics` (Prometheus text format), `/healthz` (the
//! process answers: liveness) and `/readyz` ([`Metrics::is_ready`]: readiness). On its own
//! port, so phones never reach it and a busy provisioning port never fails a probe.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::{Metrics, MetricsError};

/// Content type of the Prometheus text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A bound, not yet serving endpoint (bind first so a port clash fails at start-up).
pub struct Endpoint {
    listener: TcpListener,
    metrics: Arc<Metrics>,
}

impl Endpoint {
    /// Binds `addr`.
    pub async fn bind(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<Self, MetricsError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| MetricsError::Bind { addr, source })?;
        Ok(Endpoint { listener, metrics })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut backoff = crate::server::limits::AcceptBackoff::default();
        loop {
            let stream = tokio::select! {
                () = &mut shutdown => return,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        backoff.reset();
                        stream
                    }
                    Err(e) => {
                        // Out of descriptors: pause instead of spinning a core.
                        backoff.after("metrics endpoint", &e).await;
                        continue;
                    }
                },
            };
            let metrics = self.metrics.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let metrics = metrics.clone();
                    async move { Ok::<_, Infallible>(respond(&metrics, &req)) }
                });
                let result = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(e) = result {
                    tracing::debug!(error = %e, "metrics connection ended with an error");
                }
            });
        }
    }
}

fn plain(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}

/// Answers one request (pure but for reading the metrics).
pub fn respond<B>(metrics: &Metrics, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => plain(StatusCode::OK, TEXT_FORMAT, metrics.render()),
        "/healthz" => plain(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" if metrics.is_ready() => plain(StatusCode::OK, "text/plain", "ready\n".into()),
        "/readyz" => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready: caches or provisioning index not synced, or leadership unknown\n".into(),
        ),
        _ => plain(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}
