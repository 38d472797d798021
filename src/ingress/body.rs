//! Reading a request body safely, for every route that takes one (webhooks, Connect lifecycle
//! callbacks, Slack clicks): the media type it must have, and a size bound enforced before and while reading.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use futures_util::StreamExt;

use super::error::IngressError;

/// `application/json`, or any `application/*+json`, with or without parameters.
pub fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim().as_bytes();
    // Compared without a lowercased copy: this runs on every delivery.
    let starts =
        |prefix: &[u8]| essence.len() >= prefix.len() && essence[..prefix.len()].eq_ignore_ascii_case(prefix);
    let ends = |suffix: &[u8]| {
        essence.len() >= suffix.len() && essence[essence.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
    };
    essence.eq_ignore_ascii_case(b"application/json") || (starts(b"application/") && ends(b"+json"))
}

/// Reads at most `limit` bytes: a declared `Content-Length` over the limit is refused before
/// reading anything, a body that grows past it is refused as soon as it does. A body that
/// arrives in one chunk (a webhook usually does: it is in hyper's read buffer with its head) is
/// returned as that chunk, not copied.
pub async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, IngressError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(IngressError::PayloadTooLarge { limit });
    }
    let mut stream = body.into_data_stream();
    let mut first: Option<Bytes> = None;
    let mut joined = Vec::new();
    let mut read = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| IngressError::Malformed(format!("cannot read body: {e}")))?;
        read += chunk.len();
        if read > limit {
            return Err(IngressError::PayloadTooLarge { limit });
        }
        if first.is_none() && joined.is_empty() {
            first = Some(chunk);
            continue;
        }
        if let Some(earlier) = first.take() {
            joined.reserve(declared.map_or(8 * 1024, |l| l as usize).max(read));
            joined.extend_from_slice(&earlier);
        }
        joined.extend_from_slice(&chunk);
    }
    Ok(first.unwrap_or_else(|| Bytes::from(joined)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunked_bodies_are_cut_off_at_the_limit() {
        let chunks = (0..100).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 100])));
        let body = Body::from_stream(futures_util::stream::iter(chunks));
        let error = read_body(body, &HeaderMap::new(), 1_000).await.unwrap_err();
        assert!(matches!(error, IngressError::PayloadTooLarge { limit: 1_000 }));
        let body = Body::from(vec![b'y'; 1_000]);
        assert_eq!(
            read_body(body, &HeaderMap::new(), 1_000).await.unwrap().len(),
            1_000
        );
        // Several chunks are joined in order, up to and including the limit.
        let chunks = (0..10u8).map(|i| Ok::<_, std::io::Error>(Bytes::from(vec![b'a' + i; 100])));
        let joined = read_body(
            Body::from_stream(futures_util::stream::iter(chunks)),
            &HeaderMap::new(),
            1_000,
        )
        .await
        .unwrap();
        assert_eq!(joined.len(), 1_000);
        assert!(
            joined
                .chunks(100)
                .enumerate()
                .all(|(i, c)| c.iter().all(|&b| b == b'a' + i as u8))
        );
        let empty = Body::from_stream(futures_util::stream::iter(
            Vec::<Result<Bytes, std::io::Error>>::new(),
        ));
        assert!(
            read_body(empty, &HeaderMap::new(), 1_000)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn json_media_types() {
        let with = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
            is_json(&h)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/scim+json"));
        assert!(!with("text/json"));
        assert!(!with("application/x-www-form-urlencoded"));
        assert!(!is_json(&HeaderMap::new()));
    }
}
