//! The listener: one port for all clusters (routed by the `/clusters/{name}` path prefix)
//! and the `/_sim` admin endpoints. Connections are served by hyper directly so that a
//! handler can reset its own connection (SO_LINGER 0, then close: a TCP RST).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::routing::any;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::fleet::Fleet;
use crate::{admin, handler};

/// State shared by all requests.
#[derive(Debug)]
pub(crate) struct Shared {
    pub fleet: Fleet,
    pub base_url: String,
    pub bookmark_interval: Duration,
    pub namespace_deletion_delay: Duration,
}

/// Lets a handler reset the connection its request came on.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnAbort {
    flag: Arc<AtomicBool>,
    notify: Arc<Notify>,
}

impl ConnAbort {
    pub fn reset(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }
}

/// A TCP stream that, when dropped after a reset was asked for, closes with SO_LINGER 0 so
/// the peer gets a RST rather than a clean end of stream.
struct ResettableIo {
    stream: TcpStream,
    flag: Arc<AtomicBool>,
}

impl Drop for ResettableIo {
    fn drop(&mut self) {
        if self.flag.load(Ordering::SeqCst) {
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for ResettableIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/clusters/{*rest}", any(handler::cluster_request))
        .merge(admin::routes())
        .with_state(shared)
}

/// Accepts connections until `shutdown` is cancelled.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        tracker.spawn(serve_connection(stream, router.clone(), shutdown.clone()));
    }
}

async fn serve_connection(stream: TcpStream, router: Router, shutdown: CancellationToken) {
    let _ = stream.set_nodelay(true);
    let abort = ConnAbort::default();
    let io = ResettableIo {
        stream,
        flag: abort.flag.clone(),
    };
    let service = TowerToHyperService::new(router.layer(axum::Extension(abort.clone())));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(io), service);
    tokio::select! {
        res = conn => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        // Dropping the connection drops the stream: a RST, since the flag is set.
        _ = abort.notify.notified() => {}
        _ = shutdown.cancelled() => {}
    }
}
