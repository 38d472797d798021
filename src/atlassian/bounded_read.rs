//! Reading an answer's body up to a bound: a page of Atlassian's is well under a megabyte, and
//! an answer far beyond that (a server streaming without end, a proxy's mistake) must not cost
//! the process its memory.

/// The most of one answer's body gatehouse reads. A page of 250 users or 200 members is well
/// under a megabyte; an answer beyond this is not one to use, and reading it whole (a server
/// streaming without end, or a proxy's mistake) would cost the process its memory.
pub const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// `response`'s body, or `None` once it is longer than `max` bytes (read no further).
pub async fn read_bounded(
    mut response: reqwest::Response,
    max: usize,
) -> Result<Option<bytes::Bytes>, reqwest::Error> {
    if response
        .content_length()
        .is_some_and(|length| length > max as u64)
    {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > max {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: String) -> reqwest::Response {
        let response = axum::http::Response::builder().status(200).body(body);
        reqwest::Response::from(response.expect("a response"))
    }

    /// An answer is read up to the bound and no further.
    #[tokio::test]
    async fn answers_are_read_up_to_their_bound() {
        let body = "x".repeat(100);
        let read = read_bounded(answer(body.clone()), 100).await.unwrap();
        assert_eq!(read.map(|b| b.len()), Some(100));
        assert_eq!(read_bounded(answer(body), 99).await.unwrap(), None);
    }
}
