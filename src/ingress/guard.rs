//! The bound every delivery route runs under: at most `server.max_concurrent_requests` in flight
//! across all of them (the rest are shed at once with 503, never queued in memory), and each
//! answered within `server.request_timeout_seconds` (else 408, which also cuts off a sender that
//! announces a body and never sends it). The console's routes run under one of their own.
//!
//! One layer with one future. It replaced tower's load-shed, global concurrency limit and timeout
//! layers behind an error handler: four services cloned and four futures polled on every
//! delivery, for what is one `try_acquire` and one timer.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;
use tower::{Layer, Service};

use super::IngressError;

/// Wraps routes in a [`Guard`]; the routes of one layer (and its clones) share its set of
/// permits: the delivery routes one, the console's forms another.
#[derive(Debug, Clone)]
pub struct GuardLayer {
    permits: Arc<Semaphore>,
    timeout: Duration,
}

impl GuardLayer {
    pub fn new(max_in_flight: usize, timeout: Duration) -> Self {
        GuardLayer {
            permits: Arc::new(Semaphore::new(max_in_flight)),
            timeout,
        }
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            bound: self.clone(),
        }
    }
}

/// A route under the bound (see the module docs).
#[derive(Debug, Clone)]
pub struct Guard<S> {
    inner: S,
    bound: GuardLayer,
}

impl<S> Service<Request> for Guard<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let Ok(permit) = self.bound.permits.clone().try_acquire_owned() else {
            let shed = IngressError::Unavailable("overloaded: every request place is taken".to_owned());
            return Box::pin(std::future::ready(Ok(shed.into_response())));
        };
        let answer = self.inner.call(request);
        let timeout = self.bound.timeout;
        Box::pin(async move {
            let response = match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_elapsed) => IngressError::Timeout.into_response(),
            };
            // Held until the answer is ready, not until it is written.
            drop(permit);
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::StatusCode;
    use tokio::sync::oneshot;

    use super::*;

    /// A route that answers 202 when told to.
    fn held_route(
        release: oneshot::Receiver<()>,
    ) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send> {
        let release = Arc::new(std::sync::Mutex::new(Some(release)));
        tower::service_fn(move |_request: Request| {
            let release = release.lock().ok().and_then(|mut r| r.take());
            async move {
                if let Some(release) = release {
                    let _ = release.await;
                }
                Ok::<_, Infallible>(StatusCode::ACCEPTED.into_response())
            }
        })
    }

    fn request() -> Request {
        Request::new(Body::empty())
    }

    #[tokio::test]
    async fn requests_beyond_the_bound_are_shed_and_a_finished_one_frees_its_place() {
        let layer = GuardLayer::new(1, Duration::from_secs(60));
        let (release, held) = oneshot::channel();
        let mut guard = layer.layer(held_route(held));
        let first = tokio::spawn(guard.call(request()));
        tokio::task::yield_now().await;
        let shed = guard.call(request()).await.unwrap();
        assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::ACCEPTED);
        // The place is free again (the route no longer holds: its one release was used).
        assert_eq!(
            guard.call(request()).await.unwrap().status(),
            StatusCode::ACCEPTED
        );
    }

    #[tokio::test]
    async fn a_request_that_outlasts_the_timeout_is_answered_408_and_frees_its_place() {
        // The route never answers the first request, so the timeout's length decides nothing.
        let layer = GuardLayer::new(1, Duration::from_millis(50));
        let (_release, held) = oneshot::channel::<()>();
        let mut guard = layer.layer(held_route(held));
        let timed_out = guard.call(request()).await.unwrap();
        assert_eq!(timed_out.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(
            guard.call(request()).await.unwrap().status(),
            StatusCode::ACCEPTED
        );
    }
}
