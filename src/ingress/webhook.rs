//! `POST /webhooks/{source}[/{event}]`: one delivery from receipt to the broker's confirm.
//!
//! Order matters: the source decides the scheme; size and media type are checked before the body
//! is read in full; the signature is checked on the raw bytes before anything parses them; a
//! verified delivery spends its source's budget, is parsed (the signed body decides its type),
//! checked against what the source may cause and, for hub-signature, against its payload's age,
//! then deduplicated and published; 202 is answered only after the publish was confirmed.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use handlers::Authority;
use handlers::json_text::ObjectWriter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tracing::Instrument;

use super::IngressState;
use super::body::{is_json, read_body};
use super::dedupe::RecentClaim;
use super::error::IngressError;
use super::limits::Refusal;
use super::normalize::{self, NormalizeError};
use super::verify::{self, RequestParts, Verified, VerifyError};
use crate::config::{Settings, SourceSettings, VerificationScheme};
use crate::queue::OutgoingMessage;
use crate::telemetry::metrics::{SourceOutcome, SourceReason};

/// The path parameters of every delivery route (`/webhooks/{source}`, `…/{event}`,
/// `…/t/{token}`, `…/t/{token}/{event}`).
#[derive(Debug, serde::Deserialize)]
pub struct DeliveryPath {
    source: String,
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    token: Option<String>,
}

/// One delivery as the router hands it over.
struct IncomingRequest {
    source: String,
    event: Option<String>,
    path_token: Option<String>,
    head: Parts,
    body: Body,
}

/// Every delivery route. The request is taken whole and split, so its head is moved rather than
/// cloned (the `HeaderMap`, `Method` and `Uri` extractors each copy theirs).
pub async fn receive(
    State(state): State<Arc<IngressState>>,
    path: Result<Path<DeliveryPath>, PathRejection>,
    request: Request,
) -> Response {
    // A path that cannot be read (a broken percent-escape) is answered in the one error shape,
    // not with axum's plain text.
    let Ok(Path(path)) = path else {
        return IngressError::Malformed("the URL's path cannot be read (percent-encoding)".into())
            .into_response();
    };
    let (head, body) = request.into_parts();
    let delivery = IncomingRequest {
        source: path.source,
        event: path.event,
        path_token: path.token,
        head,
        body,
    };
    handle(state, delivery).await
}

/// The body of a 2xx answer: `{"status", "id", "type", "dedupe_key"}`, the last three when known.
struct AcceptedBody<'a> {
    status: &'static str,
    id: Option<&'a str>,
    event_type: Option<&'a str>,
    dedupe_key: &'a str,
}

impl AcceptedBody<'_> {
    /// Written by hand ([`handlers::json_text`]), into a buffer sized for it: this is every
    /// delivery's answer, and serde_json's escaping is a byte at a time.
    fn to_json(&self) -> Vec<u8> {
        let mut json = Vec::with_capacity(256);
        let mut object = ObjectWriter::begin(&mut json);
        object.string("status", self.status);
        object.optional_string("id", self.id);
        object.optional_string("type", self.event_type);
        object.string("dedupe_key", self.dedupe_key);
        object.end();
        json
    }
}

/// A source's counters for the two outcomes of a delivery that is not refused, taken from the
/// family on first use and then counted directly: no label string built and no lookup in the
/// family's map per delivery.
#[derive(Debug)]
pub struct AcceptedCounters {
    source: String,
    accepted: OnceLock<Counter>,
    duplicate: OnceLock<Counter>,
}

impl AcceptedCounters {
    pub fn new(source: &str) -> Self {
        AcceptedCounters {
            source: source.to_owned(),
            accepted: OnceLock::new(),
            duplicate: OnceLock::new(),
        }
    }

    /// The counter for `outcome` when it is one of the two kept here.
    fn counter(&self, family: &Family<SourceOutcome, Counter>, outcome: &'static str) -> Option<&Counter> {
        let cell = match outcome {
            "accepted" => &self.accepted,
            "duplicate" => &self.duplicate,
            _ => return None,
        };
        Some(cell.get_or_init(|| {
            family
                .get_or_create(&SourceOutcome {
                    source: self.source.clone(),
                    outcome,
                })
                .clone()
        }))
    }
}

/// What happened to an accepted delivery.
enum Accepted {
    Published {
        event_id: String,
        event_type: String,
        dedupe_key: String,
    },
    Duplicate {
        dedupe_key: String,
    },
}

async fn handle(state: Arc<IngressState>, delivery: IncomingRequest) -> Response {
    let known = state
        .settings
        .sources
        .iter()
        .position(|s| s.name == delivery.source);
    // Only configured names become metric labels or log fields: a sender cannot invent series.
    let label = known.map_or("unknown", |i| state.settings.sources[i].name.as_str());
    // Never log the URI: for url-token sources it carries the secret.
    let span = tracing::info_span!(
        "webhook",
        source = %label,
        event_id = tracing::field::Empty,
        dedupe_key = tracing::field::Empty,
    );
    // One span for the delivery, its answer and the line reporting a refusal: entered on each
    // poll, not once more afterwards for the answer.
    async {
        let result = match known {
            // Boxed: the delivery's state machine (body, envelope, the publish in flight) is
            // large, and the layers above moved it by value a dozen times a delivery.
            Some(index) => Box::pin(process(&state, &state.settings.sources[index], delivery)).await,
            None => Err(IngressError::UnknownSource),
        };
        respond(&state, known, label, result)
    }
    .instrument(span)
    .await
}

/// Counts a delivery's outcome and answers it; a refusal is logged (inside the delivery's span).
fn respond(
    state: &IngressState,
    known: Option<usize>,
    label: &str,
    result: Result<Accepted, IngressError>,
) -> Response {
    let outcome = match &result {
        Ok(Accepted::Published { .. }) => "accepted",
        Ok(Accepted::Duplicate { .. }) => "duplicate",
        Err(error) => error.outcome(),
    };
    let family = &state.metrics.ingress_requests;
    match known
        .and_then(|index| state.accepted_counters.get(index))
        .and_then(|counters| counters.counter(family, outcome))
    {
        Some(counter) => {
            counter.inc();
        }
        None => {
            family
                .get_or_create(&SourceOutcome {
                    source: label.to_owned(),
                    outcome,
                })
                .inc();
        }
    };
    match result {
        Ok(Accepted::Published {
            event_id,
            event_type,
            dedupe_key,
        }) => answer(
            StatusCode::ACCEPTED,
            &AcceptedBody {
                status: "accepted",
                id: Some(&event_id),
                event_type: Some(&event_type),
                dedupe_key: &dedupe_key,
            },
        ),
        Ok(Accepted::Duplicate { dedupe_key }) => answer(
            StatusCode::OK,
            &AcceptedBody {
                status: "duplicate",
                id: None,
                event_type: None,
                dedupe_key: &dedupe_key,
            },
        ),
        Err(error) => {
            match &error {
                IngressError::Unauthorized(why) => {
                    state
                        .metrics
                        .verification_failures
                        .get_or_create(&SourceReason {
                            source: label.to_owned(),
                            reason: why.reason(),
                        })
                        .inc();
                    tracing::warn!(reason = why.reason(), detail = %why, "delivery refused");
                }
                IngressError::Unavailable(why) => {
                    tracing::error!(cause = %why, "delivery not queued; answered 503")
                }
                other => tracing::info!(status = other.status().as_u16(), error = %other, "delivery refused"),
            }
            error.into_response()
        }
    }
}

/// A 2xx answer. Built as it goes out: `(status, headers, Vec)` would have set
/// `application/octet-stream` first only to replace it, and a `Vec` with room to spare becomes
/// `Bytes` through an allocation of its own. A boxed slice does not; shrinking the buffer to
/// one leaves it in place when it is at least half full (mimalloc's rule), as an accepted
/// delivery's answer is, and copies a shorter one (a duplicate's).
fn answer(status: StatusCode, body: &AcceptedBody<'_>) -> Response {
    let mut response = Response::new(Body::from(axum::body::Bytes::from(
        body.to_json().into_boxed_slice(),
    )));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn process(
    state: &IngressState,
    source: &SourceSettings,
    delivery: IncomingRequest,
) -> Result<Accepted, IngressError> {
    let limit = state.settings.server.max_body_bytes;
    let head = &delivery.head;
    if !is_json(&head.headers) {
        return Err(IngressError::UnsupportedMediaType);
    }
    let body = read_body(delivery.body, &head.headers, limit).await?;
    let request = RequestParts {
        method: &head.method,
        path: head.uri.path(),
        query: head.uri.query(),
        headers: &head.headers,
        body: &body,
    };
    let verified = verify_delivery(state, source, &request, delivery.path_token.as_deref()).await?;
    // Held until the publish ends: this source's share of the ingress.
    let _slot = state
        .limits
        .admit(&source.name, verified.client_key.as_deref())
        .map_err(|refusal| match refusal {
            Refusal::RateLimited(retry_after) => IngressError::RateLimited { retry_after },
            Refusal::Busy => IngressError::SourceBusy,
        })?;
    let normalized = normalize::normalize(source, delivery.event.as_deref(), &head.headers, &body, verified)
        .map_err(refusal)?;
    let mut envelope = normalized.envelope;
    if source.authority == Authority::Decision {
        envelope.occurred_at = decision_time(source, normalized.payload_time, &head.headers)?;
    }
    if !source.allows(&envelope.event_type) {
        return Err(IngressError::Refused {
            status: StatusCode::FORBIDDEN,
            reason: "type_not_allowed",
            detail: format!(
                "source `{}` may not cause {} events (allow_types: {})",
                source.name,
                envelope.event_type,
                source.allowed_types().join(", ")
            ),
        });
    }
    if source.scheme == VerificationScheme::HubSignature
        && let Some(at) = normalized.payload_time
    {
        // The signature covers the body but carries no time: a captured delivery could be
        // replayed for ever, so the payload's own timestamp must be recent.
        verify::check_window(at.timestamp(), source.tolerance_seconds(), chrono::Utc::now())?;
    }
    let message = OutgoingMessage::from_delivery(&envelope, normalized.payload, source.kind());
    loop {
        match state.recent.claim(&envelope.dedupe_key) {
            RecentClaim::Duplicate => {
                record_ids_if(tracing::enabled!(tracing::Level::DEBUG), &envelope);
                tracing::debug!("duplicate delivery; already queued");
                return Ok(Accepted::Duplicate {
                    dedupe_key: envelope.dedupe_key,
                });
            }
            RecentClaim::Wait(flight) => {
                if flight.outcome().await {
                    record_ids_if(tracing::enabled!(tracing::Level::DEBUG), &envelope);
                    tracing::debug!("duplicate delivery; its twin was just queued");
                    return Ok(Accepted::Duplicate {
                        dedupe_key: envelope.dedupe_key,
                    });
                }
                // The twin's publish failed: try ourselves.
            }
            RecentClaim::Fresh(guard) => {
                let published = state.queue.publish(&message).await;
                guard.finish(published.is_ok());
                record_ids_if(
                    published.is_err() || tracing::enabled!(tracing::Level::DEBUG),
                    &envelope,
                );
                published.map_err(|e| IngressError::Unavailable(e.to_string()))?;
                // At debug: a line for every accepted delivery, formatted and written to stderr
                // on the hot path, cost more CPU than everything else gatehouse adds to a
                // minimal relay (BENCHMARKS.md, "Fifth step"). Refusals and failures stay at
                // info and above; the metrics and the audit trail count every delivery.
                tracing::debug!(
                    event_type = %envelope.event_type,
                    routing_key = %message.routing_key,
                    key_id = %envelope.delivery.key_id.as_deref().unwrap_or_default(),
                    "delivery queued"
                );
                return Ok(Accepted::Published {
                    event_id: message.event_id,
                    event_type: message.event_type,
                    dedupe_key: envelope.dedupe_key,
                });
            }
        }
    }
}

/// Puts the delivery's `event_id` and `dedupe_key` on its span when a line is about to be logged
/// that should carry them. Not on every delivery: the log formatter writes a span's fields out
/// again each time one is recorded, which at the default level cost every accepted delivery
/// several thousand instructions for lines that were never written.
fn record_ids_if(a_line_follows: bool, envelope: &handlers::Envelope) {
    if a_line_follows {
        let span = tracing::Span::current();
        span.record("event_id", tracing::field::display(&envelope.id));
        span.record("dedupe_key", envelope.dedupe_key.as_str());
    }
}

/// When a decision was made, from signed bytes only (decisions are ordered by it): the payload's
/// own `timestamp`, or for Standard Webhooks the signed `webhook-timestamp` when the payload has
/// none. A decision with no signed time, or one dated beyond the source's tolerance in the
/// future, is refused: it would otherwise outrank every real decision about the account.
fn decision_time(
    source: &SourceSettings,
    payload_time: Option<chrono::DateTime<chrono::Utc>>,
    headers: &HeaderMap,
) -> Result<chrono::DateTime<chrono::Utc>, IngressError> {
    let signed_header = || {
        (source.scheme == VerificationScheme::StandardWebhooks)
            .then(|| {
                verify::header(headers, "webhook-timestamp")
                    .or_else(|| verify::header(headers, "svix-timestamp"))
            })
            .flatten()
            .and_then(|t| t.parse::<i64>().ok())
            .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
    };
    let at = payload_time.or_else(signed_header).ok_or_else(|| IngressError::Refused {
        status: StatusCode::BAD_REQUEST,
        reason: "missing_timestamp",
        detail: format!(
            "source `{}` decides (authority = \"decision\"): a decision needs its own signed `timestamp`, by which decisions about an account are ordered",
            source.name
        ),
    })?;
    let now = chrono::Utc::now();
    let tolerance =
        chrono::Duration::seconds(i64::try_from(source.tolerance_seconds()).unwrap_or(i64::MAX / 2));
    if at > now + tolerance {
        return Err(IngressError::Unauthorized(verify::VerifyError::NotYetValid));
    }
    Ok(at)
}

/// How a normalization failure is answered: a body that is not JSON is malformed; content refused
/// on purpose (a type the URL contradicts, an id that is not one, nesting too deep) says why.
fn refusal(error: NormalizeError) -> IngressError {
    let reason = match &error {
        NormalizeError::EventMismatch { .. } => "event_mismatch",
        NormalizeError::BadIdentifier(_) => "invalid_identifier",
        NormalizeError::TooDeep => "too_deep",
        NormalizeError::NotUtf8 | NormalizeError::NotJson(_) | NormalizeError::NotAnObject => {
            return IngressError::Malformed(error.to_string());
        }
    };
    IngressError::Refused {
        status: StatusCode::BAD_REQUEST,
        reason,
        detail: error.to_string(),
    }
}

async fn verify_delivery(
    state: &IngressState,
    source: &SourceSettings,
    request: &RequestParts<'_>,
    path_token: Option<&str>,
) -> Result<Verified, IngressError> {
    let now = chrono::Utc::now();
    let verified = match source.scheme {
        VerificationScheme::HubSignature => verify::hub_signature::verify(&source.secrets, request, now),
        VerificationScheme::StandardWebhooks => {
            verify::standard_webhooks::verify(&source.secrets, source.tolerance_seconds(), request, now)
        }
        VerificationScheme::UrlToken => {
            let token = path_token.or_else(|| verify::header(request.headers, &source.token_header));
            verify::url_token::verify(&source.secrets, token, now)
        }
        VerificationScheme::ConnectJwt => {
            verify::connect_jwt::verify(
                &state.installations,
                state.settings.connect.jwt_leeway_seconds,
                &state.base_path,
                request,
                now,
            )
            .await
        }
    };
    let mut verified = verified?;
    verified.tenant = Some(bind_tenant(&state.settings, source, &verified)?);
    Ok(verified)
}

/// The tenant a verified delivery belongs to: the source's, or, for Connect, the tenant whose
/// site the signing installation is (and which the source, if it names one, serves).
fn bind_tenant(
    settings: &Settings,
    source: &SourceSettings,
    verified: &Verified,
) -> Result<String, VerifyError> {
    if source.scheme != VerificationScheme::ConnectJwt {
        return Ok(settings.source_tenant(source));
    }
    let site = crate::config::Site {
        base_url: verified.site.as_deref().unwrap_or_default(),
        cloud_id: verified.cloud_id.as_deref(),
        client_key: verified.client_key.as_deref().unwrap_or_default(),
    };
    let tenant = settings.bind_site(site).map_err(VerifyError::UnboundSite)?;
    match &source.tenant {
        Some(served) if *served != tenant => Err(VerifyError::UnboundSite(format!(
            "the installation is tenant `{tenant}`'s; source `{}` serves `{served}`",
            source.name
        ))),
        _ => Ok(tenant),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the answer's body was when serde wrote it, field for field.
    #[derive(serde::Serialize)]
    struct SerdeBody<'a> {
        status: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
        event_type: Option<&'a str>,
        dedupe_key: &'a str,
    }

    #[test]
    fn answers_are_the_json_serde_wrote() {
        let cases = [
            (
                "accepted",
                Some("01KBMHZ1Y6R4Q8F2WPZ7N3C5D9"),
                Some("user.deactivated"),
                "admin:sha256:00ff",
            ),
            ("duplicate", None, None, "jira:a \"quoted\\\" id\u{1}"),
        ];
        for (status, id, event_type, dedupe_key) in cases {
            let body = AcceptedBody {
                status,
                id,
                event_type,
                dedupe_key,
            };
            let serde = SerdeBody {
                status,
                id,
                event_type,
                dedupe_key,
            };
            assert_eq!(
                String::from_utf8(body.to_json()).unwrap(),
                serde_json::to_string(&serde).unwrap()
            );
        }
    }
}
