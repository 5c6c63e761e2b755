//! Connections: HTTP/1.1 (keep-alive) with a header read timeout that also
//! bounds idle keep-alive connections, a body read timeout, and a shutdown
//! that ends within its deadline whatever clients do.
//!
//! On shutdown the listener closes, every connection is told to finish its
//! in-flight request and close; connections still open at the deadline
//! (half-open sockets, slow readers) are dropped.

use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use super::ApiError;
use crate::ErrorKind;

/// Connection and request timeouts.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// A request's headers must arrive within this after the connection
    /// is ready for one (this also closes idle keep-alive connections).
    pub header: Duration,
    /// A request's body must arrive within this after its headers.
    pub body: Duration,
    /// In-flight requests get this long after SIGINT/SIGTERM.
    pub shutdown: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header: Duration::from_secs(30),
            body: Duration::from_secs(60),
            shutdown: Duration::from_secs(30),
        }
    }
}

/// Body limits the reading middleware enforces.
#[derive(Clone, Copy, Debug)]
pub(super) struct BodyRead {
    pub timeout: Duration,
    pub max_bytes: usize,
    /// Returns the memory of large requests to the system
    /// ([`crate::config::HostConfig::trim_memory`]).
    pub trim_memory: bool,
}

/// Reads the whole body within the timeout (408 otherwise) and at most
/// `max_bytes` (413 otherwise), before any handler runs; after a large
/// request, the freed memory is returned to the system (with
/// `trim_memory`).
pub(super) async fn read_body(State(b): State<BodyRead>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let limited = http_body_util::Limited::new(body, b.max_bytes);
    let collected =
        tokio::time::timeout(b.timeout, http_body_util::BodyExt::collect(limited)).await;
    match collected {
        Err(_) => ApiError::new(
            ErrorKind::RequestTimeout,
            format!(
                "the request body did not arrive within {} s",
                b.timeout.as_secs_f64()
            ),
        )
        .into_response(),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            ApiError::new(
                ErrorKind::PayloadTooLarge,
                format!(
                    "the request body is over the size limit of {} bytes",
                    b.max_bytes
                ),
            )
            .into_response()
        }
        Ok(Err(e)) => ApiError::new(
            ErrorKind::InvalidRequest,
            format!("cannot read the request body: {e}"),
        )
        .into_response(),
        Ok(Ok(c)) => {
            let body = c.to_bytes();
            let large = b.trim_memory && body.len() >= crate::memory::LARGE_REQUEST_BYTES;
            let response = next.run(Request::from_parts(parts, Body::from(body))).await;
            if large {
                // Its buffers go back to the system once dropped.
                crate::memory::release_soon();
            }
            response
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then gives
/// in-flight requests until `timeouts.shutdown` after that to finish;
/// returns that deadline.
pub async fn serve_connections(
    listener: TcpListener,
    app: Router,
    timeouts: Timeouts,
    shutdown: impl Future<Output = ()>,
) -> tokio::time::Instant {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeouts.header)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut shutdown => break,
        };
        let (stream, _) = match accepted {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: back off, go on.
                tracing::warn!("host serve: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let conn = http.serve_connection(TokioIo::new(stream), service);
        let watched = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = watched.await;
        });
    }
    drop(listener);
    let deadline = tokio::time::Instant::now() + timeouts.shutdown;
    let open = graceful.count();
    if tokio::time::timeout_at(deadline, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "host serve: connections still open {} s after shutdown began (of {open}); closing them",
            timeouts.shutdown.as_secs_f64()
        );
    }
    deadline
}
