//! The accept loop: every connection served by hyper (HTTP/1.1 and HTTP/2, chosen per
//! connection) with a timer, so that a request head must arrive within
//! `HEADER_READ_TIMEOUT_SECONDS`, and at most `MAX_CONNECTIONS` held open at once.
//!
//! `axum::serve` runs hyper without a timer, which silently turns hyper's header-read
//! timeout off: one header line every few seconds held a connection for ever. At the cap
//! the loop stops accepting until a connection closes; clients beyond it wait in the
//! kernel's listen backlog (and time out there if the wait is long), so the cap bounds the
//! service's memory and file descriptors whatever clients do.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, body::Body, extract::Request};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto::Builder,
    service::TowerToHyperService,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, watch},
    task::JoinSet,
};
use tower::{Service, ServiceExt};

/// How the accept loop bounds what clients can hold.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// A request head must be complete this long after the connection opened (for the
    /// first request) or after the previous response (for the next one on the connection).
    pub header_read_timeout: Duration,
    /// Connections held open at once.
    pub max_connections: usize,
    /// After `stop`, how long in-flight requests may still take.
    pub shutdown_grace: Duration,
}

/// How often "the connection limit is reached" may be logged.
const SATURATION_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `stop` completes. Then the listener closes at once,
/// idle connections close, in-flight requests get `shutdown_grace` to finish, and whatever
/// still runs after it is dropped. Handlers can extract `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    stop: impl Future<Output = ()>,
) {
    let mut make_service = router.into_make_service_with_connect_info::<SocketAddr>();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stopping, stopping_seen) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut last_saturation_log: Option<Instant> = None;
    let mut stop = pin!(stop);
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if last_saturation_log.is_none_or(|at| at.elapsed() >= SATURATION_LOG_INTERVAL) {
                    last_saturation_log = Some(Instant::now());
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection limit reached; new connections wait until one closes"
                    );
                }
                tokio::select! {
                    () = &mut stop => break,
                    Some(_) = connections.join_next() => continue,
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                }
            }
        };
        let (stream, remote) = tokio::select! {
            () = &mut stop => break,
            Some(_) = connections.join_next() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    wait_after_accept_error(&error).await;
                    continue;
                }
            },
        };
        tracing::trace!(%remote, "connection accepted");
        let service = match make_service.call(remote).await {
            Ok(service) => service,
            Err(never) => match never {},
        };
        connections.spawn(serve_connection(
            stream,
            service,
            slot,
            stopping_seen.clone(),
            limits.header_read_timeout,
        ));
    }
    // New connections are refused from here on.
    drop(listener);
    stopping.send_replace(true);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.shutdown_grace, drained)
        .await
        .is_err()
    {
        tracing::warn!(
            grace_seconds = limits.shutdown_grace.as_secs(),
            "shutdown grace period over; dropping requests still in flight"
        );
    }
    // Dropping the set aborts the connections that are left.
}

/// Accept errors are the listener's, not one client's: a connection reset before it was
/// accepted is skipped, anything else (out of file descriptors, say) is logged and waited
/// out for a moment rather than retried in a tight loop.
async fn wait_after_accept_error(error: &std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "could not accept a connection; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// One connection, holding its `slot` until it closes.
async fn serve_connection<S>(
    stream: TcpStream,
    service: S,
    slot: OwnedSemaphorePermit,
    mut stopping: watch::Receiver<bool>,
    header_read_timeout: Duration,
) where
    S: Service<Request, Response = axum::response::Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let _slot = slot;
    let requested = Arc::new(AtomicBool::new(false));
    let seen = requested.clone();
    let service = service.map_request(move |request: hyper::Request<Incoming>| {
        seen.store(true, Ordering::Relaxed);
        request.map(Body::new)
    });
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let mut connection =
        pin!(builder.serve_connection_with_upgrades(
            TokioIo::new(stream),
            TowerToHyperService::new(service)
        ));
    let mut first_request_due = pin!(first_request_deadline(requested, header_read_timeout));
    let mut shutting_down = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(error = %error, "connection ended with an error");
                }
                break;
            }
            // hyper's own timer starts with the first byte of HTTP/1; this also bounds a
            // client that sends nothing at all, or an HTTP/2 preface and then no request.
            () = &mut first_request_due => {
                tracing::debug!("no request head within the header read timeout; closing");
                break;
            }
            _ = stopping.changed(), if !shutting_down => {
                shutting_down = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Completes `timeout` after the connection opened unless a request has arrived by then.
async fn first_request_deadline(requested: Arc<AtomicBool>, timeout: Duration) {
    tokio::time::sleep(timeout).await;
    if requested.load(Ordering::Relaxed) {
        std::future::pending::<()>().await;
    }
}
