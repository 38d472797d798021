//! Serving the HTTP router on a TCP listener, with the defences that live below any handler: a
//! cap on open connections, a timer on reading a request's head, and an idle timeout for
//! kept-alive connections (`[server]`), so nobody can wear gatehouse down by opening sockets and
//! saying little or nothing on them.
//!
//! - `max_connections` (and `max_connections_per_peer`, per client address): a connection beyond
//!   the cap is answered `503` at once and closed (it is never handed to HTTP, so it costs one
//!   write).
//! - `header_read_timeout_seconds`: once the first byte of a request has arrived, its line and
//!   headers must follow within this, or the connection is closed; a new connection must send
//!   its first request within it too. (Bytes of a next request that arrive while one is still
//!   being answered, pipelined, start no timer: such a connection is held to the idle timeout.)
//! - `keep_alive_idle_seconds`: a connection that has been served, with no request in flight and
//!   nothing sent or received for this long, is closed.
//!
//! Request heads are read into a buffer of at most [`MAX_HEAD_BUFFER`] with at most 100 headers,
//! so a full house of connections holds little memory. The 100 is hyper's own default, which it
//! keeps in a buffer on the stack: setting it explicitly (even to the same number) makes hyper
//! fill a heap buffer of that many slots twice a request, about 1,700 instructions a webhook
//! (`bench/callgrind/ingest.sh`). The integration test
//! `trust::a_request_head_may_carry_a_hundred_headers_and_no_more` holds hyper to it.
//!
//! Both timers are kept per connection by [`Activity`], which the socket wrapper and the request
//! service update, and checked by the connection's own loop. hyper's header timer is switched
//! off: ours covers the same ground (the trust tests count every close by its reason), and
//! hyper's armed and dropped a boxed timer for every request on a kept-alive connection, about
//! 1,200 instructions a webhook (`bench/callgrind/ingest.sh`). Shutdown is explicit:
//! [`serve`] stops accepting when its token is cancelled, asks every connection to finish its
//! in-flight request and close, and returns once all have.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::Service;

use crate::config::ServerSettings;

/// hyper's read buffer per connection (its default is about 400 KiB): ample for any webhook's
/// head, and a bound on what thousands of slow connections can hold.
pub const MAX_HEAD_BUFFER: usize = 64 * 1024;

/// What a connection over the cap is told before it is closed.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 55\r\n\r\n{\"error\":\"unavailable\",\"reason\":\"too many connections\"}";

/// Connection-level metrics.
#[derive(Debug, Clone, Default)]
pub struct ConnectionMetrics {
    /// Connections open now.
    pub open: Gauge,
    /// Connections closed by gatehouse, by reason (`over_capacity`, `peer_over_capacity`,
    /// `header_timeout`, `idle_timeout`).
    pub closed: Family<ClosedReason, Counter>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct ClosedReason {
    pub reason: &'static str,
}

impl ConnectionMetrics {
    pub fn register(registry: &mut prometheus_client::registry::Registry) -> Self {
        let metrics = ConnectionMetrics::default();
        registry.register(
            "http_connections_open",
            "HTTP connections open now",
            metrics.open.clone(),
        );
        registry.register(
            "http_connections_closed_by_server",
            "HTTP connections gatehouse closed on its own, by reason",
            metrics.closed.clone(),
        );
        metrics
    }

    fn closed(&self, reason: &'static str) {
        self.closed.get_or_create(&ClosedReason { reason }).inc();
    }
}

/// The connection-level limits, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub keep_alive_idle: Duration,
    pub max_connections: usize,
    pub max_connections_per_peer: usize,
    /// Hand each request its connection's peer address (axum's `ConnectInfo`), for the operator
    /// console's trusted-proxy check; off otherwise, as it costs an allocation per request.
    pub peer_addresses: bool,
}

impl From<&ServerSettings> for ConnectionLimits {
    fn from(server: &ServerSettings) -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(server.header_read_timeout_seconds),
            keep_alive_idle: Duration::from_secs(server.keep_alive_idle_seconds),
            max_connections: server.max_connections,
            max_connections_per_peer: server.max_connections_per_peer,
            peer_addresses: false,
        }
    }
}

/// Serves `router` until `shutdown` is cancelled, then lets open connections finish their
/// in-flight requests and returns when every connection is closed (the caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    metrics: ConnectionMetrics,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let peers = Arc::new(Peers::default());
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.header_read_timeout(None).max_buf_size(MAX_HEAD_BUFFER);
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "cannot accept a connection");
                if is_resource_exhaustion(&error) {
                    // Out of file descriptors or memory: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                continue;
            }
        };
        let admitted = match slots.clone().try_acquire_owned() {
            Err(_) => Err("over_capacity"),
            Ok(slot) => Peers::admit(&peers, peer.ip(), limits.max_connections_per_peer)
                .map(|peer| (slot, peer))
                .ok_or("peer_over_capacity"),
        };
        let slot = match admitted {
            Ok(slot) => slot,
            Err(reason) => {
                // A fresh socket's send buffer is empty, so this write does not block; a client
                // that already sent its request may see a reset instead, which refuses it too.
                let _ = stream.try_write(OVER_CAPACITY);
                metrics.closed(reason);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(connection(
            (stream, limits.peer_addresses.then_some(peer)),
            router.clone(),
            builder.clone(),
            limits,
            metrics.clone(),
            shutdown.clone(),
            slot,
        ));
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Accept errors that mean the process is out of something, rather than one connection failing.
fn is_resource_exhaustion(error: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM.
    matches!(error.raw_os_error(), Some(24 | 23 | 105 | 12)) || error.kind() == io::ErrorKind::OutOfMemory
}

/// Open connections per client address.
#[derive(Debug, Default)]
struct Peers {
    open: std::sync::Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in its peer's count; given back when dropped.
struct PeerSlot {
    peers: Arc<Peers>,
    ip: IpAddr,
}

impl Peers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Plain counts: a panic elsewhere cannot leave one half-written.
        crate::locking::lock(&self.open)
    }

    /// A place for one more connection from `ip`, unless it has `max` open already.
    fn admit(peers: &Arc<Peers>, ip: IpAddr, max: usize) -> Option<PeerSlot> {
        let mut open = peers.lock();
        let count = open.entry(ip).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(PeerSlot {
            peers: peers.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.peers.lock();
        if let Some(count) = open.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// One connection, until the client closes it, a timer does, or shutdown has let it finish.
/// `peer` is handed to requests when `limits.peer_addresses` asks for it.
async fn connection(
    (stream, peer): (TcpStream, Option<std::net::SocketAddr>),
    router: Router,
    builder: hyper::server::conn::http1::Builder,
    limits: ConnectionLimits,
    metrics: ConnectionMetrics,
    shutdown: CancellationToken,
    _slot: (OwnedSemaphorePermit, PeerSlot),
) {
    metrics.open.inc();
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let service = RequestService {
        router,
        activity: activity.clone(),
        peer,
    };
    let served = builder.serve_connection(io, hyper_util::service::TowerToHyperService::new(service));
    let mut served = std::pin::pin!(served);
    let mut draining = false;
    // The timers are checked when they could have run out, and at least this often: requests
    // starting and ending never wake this loop, so a timer may fire up to one period late.
    let period = limits.header_read_timeout.min(limits.keep_alive_idle);
    loop {
        let wake = activity
            .deadline(&limits)
            .map_or(Instant::now() + period, |deadline| {
                deadline.min(Instant::now() + period)
            });
        tokio::select! {
            result = served.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                break;
            }
            _ = shutdown.cancelled(), if !draining => {
                draining = true;
                served.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep_until(wake) => {
                if let Some(reason) = activity.expired(&limits) {
                    metrics.closed(reason);
                    tracing::debug!(reason, "closing a connection");
                    // Nothing is in flight: dropping the connection closes the socket.
                    break;
                }
            }
        }
    }
    metrics.open.dec();
}

/// What a connection is doing, for its timers: plain atomics, as every read, write and request
/// touches them.
#[derive(Debug)]
struct Activity {
    /// When the connection started; the times below are milliseconds since then.
    started: Instant,
    /// Requests handed to the router and not answered yet.
    in_flight: AtomicUsize,
    /// When the connection last did anything while no request was in flight.
    idle_since: AtomicU64,
    /// When the first byte of a request head arrived (plus one; 0: none), until the request
    /// is dispatched.
    head_started: AtomicU64,
    /// Whether a request was ever dispatched: until then, an idle connection is one that never
    /// said anything, and gets the header timer, not the keep-alive one.
    served: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Activity {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            served: AtomicBool::new(false),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, millis: u64) -> Instant {
        self.started + Duration::from_millis(millis)
    }

    fn read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0 && self.head_started.load(Ordering::Acquire) == 0 {
            let _ =
                self.head_started
                    .compare_exchange(0, self.now() + 1, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    fn wrote(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0 {
            self.idle_since.store(self.now(), Ordering::Release);
        }
    }

    fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(0, Ordering::Release);
        self.served.store(true, Ordering::Release);
    }

    fn end(&self) {
        self.idle_since.store(self.now(), Ordering::Release);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// When the connection's timer runs out, if one is running. None while a request is in
    /// flight: its route bounds that time (every route that reads a body answers within
    /// `server.request_timeout_seconds`, 408 after).
    fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let idle_since = self.at(self.idle_since.load(Ordering::Acquire));
        Some(match self.head_started.load(Ordering::Acquire) {
            0 if self.served.load(Ordering::Acquire) => idle_since + limits.keep_alive_idle,
            0 => idle_since + limits.header_read_timeout,
            started => self.at(started - 1) + limits.header_read_timeout,
        })
    }

    /// Why the connection must close now, if it must.
    fn expired(&self, limits: &ConnectionLimits) -> Option<&'static str> {
        let deadline = self.deadline(limits)?;
        if Instant::now() < deadline {
            return None;
        }
        let silent = self.head_started.load(Ordering::Acquire) == 0;
        Some(if silent && self.served.load(Ordering::Acquire) {
            "idle_timeout"
        } else {
            "header_timeout"
        })
    }
}

/// The socket, reporting reads and writes to its connection's [`Activity`].
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.read();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.wrote();
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.wrote();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The router, counting requests in flight for the connection's timers.
#[derive(Clone)]
struct RequestService {
    router: Router,
    activity: Arc<Activity>,
    /// The connection's peer, when requests are to carry it.
    peer: Option<std::net::SocketAddr>,
}

impl Service<hyper::Request<Incoming>> for RequestService {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // A Router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: hyper::Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::begin(self.activity.clone());
        if let Some(peer) = self.peer {
            request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
        }
        let mut router = self.router.clone();
        Box::pin(async move {
            let response = router.call(request.map(Body::new)).await;
            drop(in_flight);
            response
        })
    }
}

/// A request in flight; ends when dropped (also when hyper drops the request on a reset).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: Arc<Activity>) -> Self {
        activity.begin();
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end();
    }
}
