//! Complete listings over Atlassian's three pagination styles, each its own type so they cannot
//! be mixed (mixing truncates silently: v1 ignores a `cursor`, v2 ignores a `start`).
//!
//! - [`OffsetListing`], Confluence v1: `start`/`limit` on the query; the page says
//!   `{results, start, limit, size, _links.next}`. The server may lower `limit` without a word,
//!   so the next `start` is `start + size`, and the listing goes on while `_links.next` is there
//!   or the page was full by the server's own `limit`; it ends on an empty page. A server that
//!   echoes a different `start` than asked (it ignored the offset) is an error, never a loop.
//! - [`CursorListing`], Confluence v2: an opaque `cursor` taken from the `Link: <…>; rel="next"`
//!   header or `_links.next`. Only the cursor is taken from the link, never the link itself:
//!   Atlassian writes site-relative links (`/wiki/api/v2/…`) even through the gateway.
//! - [`IndexListing`], SCIM: 1-based `startIndex`/`count`, ending when `totalResults` is reached
//!   or a page is empty.
//!
//! A listing's base [`Call`] must not carry paging parameters of its own; the constructors check.

use std::collections::HashSet;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::http::{ApiCaller, Call};

/// Called with the number of items fetched so far (progress bars).
pub type PageProgress<'a> = &'a (dyn Fn(usize) + Send + Sync);

/// A progress callback that shows nothing.
pub fn no_progress(_fetched: usize) {}

/// Safety net against a server that pages forever.
const MAX_PAGES: usize = 100_000;

const PAGING_PARAMETERS: &[&str] = &["start", "limit", "cursor", "startIndex", "count"];

fn check_base(call: &Call) -> Result<(), ApiError> {
    match call
        .query
        .iter()
        .find(|(name, _)| PAGING_PARAMETERS.contains(name))
    {
        Some((name, _)) => Err(ApiError::invalid(
            call.endpoint.label,
            format!("a listing's base call must not set `{name}`: the pager owns it"),
        )),
        None => Ok(()),
    }
}

fn too_many_pages(call: &Call) -> ApiError {
    ApiError::endless(
        call.endpoint.label,
        format!("more than {MAX_PAGES} pages: the server seems to page forever"),
    )
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Links {
    #[serde(default)]
    pub(crate) next: Option<String>,
}

/// A Confluence v1 page.
#[derive(Debug, Deserialize)]
pub(crate) struct OffsetPage<T> {
    pub(crate) results: Vec<T>,
    #[serde(default)]
    pub(crate) start: Option<u64>,
    #[serde(default)]
    pub(crate) limit: Option<u64>,
    #[serde(default, rename = "_links")]
    pub(crate) links: Links,
}

/// Where the next v1 page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetPager {
    pub start: u64,
    pub limit: u32,
}

impl OffsetPager {
    /// The page after one that held `size` items. `echoed_limit` is the server's `limit` (which
    /// may be lower than asked); `has_next` whether it gave `_links.next`.
    pub fn next(self, size: usize, echoed_limit: Option<u64>, has_next: bool) -> Option<OffsetPager> {
        if size == 0 {
            return None;
        }
        let page_limit = echoed_limit.unwrap_or(u64::from(self.limit));
        let full = size as u64 >= page_limit;
        (has_next || full).then_some(OffsetPager {
            start: self.start + size as u64,
            limit: self.limit,
        })
    }
}

/// A Confluence v1 listing.
#[derive(Debug, Clone)]
pub struct OffsetListing {
    call: Call,
    page_size: u32,
}

impl OffsetListing {
    pub fn new(call: Call, page_size: u32) -> Result<Self, ApiError> {
        check_base(&call)?;
        Ok(OffsetListing {
            call,
            page_size: page_size.max(1),
        })
    }

    /// Every item, page by page.
    pub async fn collect<T: DeserializeOwned>(
        &self,
        caller: &ApiCaller,
        progress: PageProgress<'_>,
    ) -> Result<Vec<T>, ApiError> {
        let operation = self.call.endpoint.label;
        let mut items = Vec::new();
        let mut current = OffsetPager {
            start: 0,
            limit: self.page_size,
        };
        for _ in 0..MAX_PAGES {
            let call = self
                .call
                .clone()
                .query("start", current.start.to_string())
                .query("limit", current.limit.to_string());
            let reply = caller.send(&call).await?;
            let page: OffsetPage<T> = reply.json(operation)?;
            if let Some(echoed) = page.start
                && echoed != current.start
            {
                return Err(ApiError::unreadable(
                    operation,
                    format!(
                        "asked for start={} and got a page starting at {echoed}: refusing a listing that could repeat or skip",
                        current.start
                    ),
                ));
            }
            let next = current.next(page.results.len(), page.limit, page.links.next.is_some());
            items.extend(page.results);
            progress(items.len());
            match next {
                Some(next) => current = next,
                None => return Ok(items),
            }
        }
        Err(too_many_pages(&self.call))
    }
}

/// A Confluence v2 page.
#[derive(Debug, Deserialize)]
pub(crate) struct CursorPage<T> {
    pub(crate) results: Vec<T>,
    #[serde(default, rename = "_links")]
    pub(crate) links: Links,
}

/// The `cursor` query parameter of a (possibly relative) link.
pub fn cursor_of(link: &str) -> Option<String> {
    let base = url::Url::parse("https://cursor.invalid/").ok()?;
    let url = base.join(link.trim()).ok()?;
    url.query_pairs()
        .find(|(name, _)| name == "cursor")
        .map(|(_, value)| value.into_owned())
        .filter(|cursor| !cursor.is_empty())
}

/// The target of the `rel="next"` link in a `Link` header.
pub fn next_link(header: &str) -> Option<&str> {
    let mut rest = header;
    while let Some(open) = rest.find('<') {
        let close = open + rest[open..].find('>')?;
        let target = &rest[open + 1..close];
        let after = &rest[close + 1..];
        let params_end = after.find('<').unwrap_or(after.len());
        let params = &after[..params_end];
        let is_next = params.split(';').any(|param| {
            let param = param.trim().trim_end_matches(',').trim();
            param
                .strip_prefix("rel=")
                .map(|v| v.trim_matches('"'))
                .is_some_and(|rels| rels.split_whitespace().any(|r| r.eq_ignore_ascii_case("next")))
        });
        if is_next {
            return Some(target);
        }
        rest = after;
    }
    None
}

/// The cursor to follow after a v2 page.
#[derive(Debug, Default)]
pub struct CursorPager {
    cursor: Option<String>,
    seen: HashSet<String>,
}

/// Why a cursor listing cannot go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PagerRefusal {
    /// A next link without a cursor.
    NoCursor(String),
    /// A cursor seen before: following it would loop.
    Repeated(String),
}

impl CursorPager {
    /// Takes the next cursor from the `Link` header or `_links.next`. `Ok(false)`: the listing is
    /// complete. A next link without a cursor, or a cursor seen before, is an error: following it
    /// could loop or skip.
    pub fn advance(
        &mut self,
        link_header: Option<&str>,
        links_next: Option<&str>,
    ) -> Result<bool, PagerRefusal> {
        let link = link_header.and_then(next_link).or(links_next);
        let Some(link) = link else {
            self.cursor = None;
            return Ok(false);
        };
        let cursor = cursor_of(link)
            .ok_or_else(|| PagerRefusal::NoCursor(format!("next link without a cursor: {link}")))?;
        if !self.seen.insert(cursor.clone()) {
            return Err(PagerRefusal::Repeated(
                "the server sent the same cursor twice".to_owned(),
            ));
        }
        self.cursor = Some(cursor);
        Ok(true)
    }

    pub fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }
}

/// A Confluence v2 listing (GET, or a read-only POST such as `users-bulk`, re-sent with each
/// cursor).
#[derive(Debug, Clone)]
pub struct CursorListing {
    call: Call,
    page_size: u32,
}

impl CursorListing {
    pub fn new(call: Call, page_size: u32) -> Result<Self, ApiError> {
        check_base(&call)?;
        Ok(CursorListing {
            call,
            page_size: page_size.clamp(1, 250),
        })
    }

    pub async fn collect<T: DeserializeOwned>(
        &self,
        caller: &ApiCaller,
        progress: PageProgress<'_>,
    ) -> Result<Vec<T>, ApiError> {
        let operation = self.call.endpoint.label;
        let mut items = Vec::new();
        let mut pager = CursorPager::default();
        for _ in 0..MAX_PAGES {
            let mut call = self.call.clone().query("limit", self.page_size.to_string());
            if let Some(cursor) = pager.cursor() {
                call = call.query("cursor", cursor);
            }
            let reply = caller.send(&call).await?;
            let page: CursorPage<T> = reply.json(operation)?;
            items.extend(page.results);
            progress(items.len());
            // Both are answers gatehouse cannot use, transient: a cursor seen before is caught
            // the moment it comes back, so trying the listing again later costs little, and a
            // glitch must not dead-letter a leaver's plan (only a listing past `MAX_PAGES`,
            // which costs that many requests each time, is permanent).
            let more = pager
                .advance(reply.header("link"), page.links.next.as_deref())
                .map_err(|refusal| match refusal {
                    PagerRefusal::NoCursor(message) | PagerRefusal::Repeated(message) => {
                        ApiError::unreadable(operation, message)
                    }
                })?;
            if !more {
                return Ok(items);
            }
        }
        Err(too_many_pages(&self.call))
    }
}

/// A SCIM `ListResponse`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "T: Deserialize<'de>"))]
pub(crate) struct IndexPage<T> {
    #[serde(default)]
    pub(crate) total_results: Option<u64>,
    #[serde(default, rename = "Resources")]
    pub(crate) resources: Vec<T>,
}

/// Where the next SCIM page starts (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexPager {
    pub start_index: u64,
    pub count: u32,
}

impl IndexPager {
    pub fn next(self, returned: usize, total_results: Option<u64>) -> Option<IndexPager> {
        if returned == 0 {
            return None;
        }
        let start_index = self.start_index + returned as u64;
        match total_results {
            Some(total) if start_index > total => None,
            _ => Some(IndexPager {
                start_index,
                count: self.count,
            }),
        }
    }
}

/// A SCIM listing.
#[derive(Debug, Clone)]
pub struct IndexListing {
    call: Call,
    page_size: u32,
}

impl IndexListing {
    pub fn new(call: Call, page_size: u32) -> Result<Self, ApiError> {
        check_base(&call)?;
        Ok(IndexListing {
            call,
            page_size: page_size.clamp(1, 100),
        })
    }

    pub async fn collect<T: DeserializeOwned>(
        &self,
        caller: &ApiCaller,
        progress: PageProgress<'_>,
    ) -> Result<Vec<T>, ApiError> {
        let operation = self.call.endpoint.label;
        let mut items = Vec::new();
        let mut current = IndexPager {
            start_index: 1,
            count: self.page_size,
        };
        for _ in 0..MAX_PAGES {
            let call = self
                .call
                .clone()
                .query("startIndex", current.start_index.to_string())
                .query("count", current.count.to_string());
            let page: IndexPage<T> = caller.send(&call).await?.json(operation)?;
            let next = current.next(page.resources.len(), page.total_results);
            items.extend(page.resources);
            progress(items.len());
            match next {
                Some(next) => current = next,
                None => return Ok(items),
            }
        }
        Err(too_many_pages(&self.call))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_follow_size_not_the_requested_limit() {
        let first = OffsetPager { start: 0, limit: 200 };
        // The server capped the page at 25: full by its own limit, so go on from 25.
        assert_eq!(
            first.next(25, Some(25), false),
            Some(OffsetPager {
                start: 25,
                limit: 200
            })
        );
        // A short page without a next link ends the listing.
        assert_eq!(first.next(7, Some(25), false), None);
        // A next link wins even on a short page (the page size changed under us).
        assert_eq!(
            first.next(3, Some(5), true),
            Some(OffsetPager { start: 3, limit: 200 })
        );
        // Empty page: done, whatever the links say.
        assert_eq!(first.next(0, Some(25), true), None);
        // No echoed limit: judge by what was asked.
        assert_eq!(
            first.next(200, None, false),
            Some(OffsetPager {
                start: 200,
                limit: 200
            })
        );
    }

    #[test]
    fn link_headers_and_cursors() {
        assert_eq!(
            next_link(r#"</wiki/api/v2/users?cursor=abc&limit=5>; rel="next""#),
            Some("/wiki/api/v2/users?cursor=abc&limit=5")
        );
        assert_eq!(
            next_link(r#"<https://x/prev?cursor=p>; rel="prev", <https://x/n?cursor=n%3D%3D>; rel="next""#),
            Some("https://x/n?cursor=n%3D%3D")
        );
        assert_eq!(next_link(r#"<https://x/prev>; rel="prev""#), None);
        assert_eq!(
            cursor_of("/wiki/api/v2/users?limit=5&cursor=n%3D%3D").as_deref(),
            Some("n==")
        );
        assert_eq!(cursor_of("/wiki/api/v2/users?limit=5"), None);
    }

    #[test]
    fn cursors_come_from_either_place_and_never_repeat() {
        let mut pager = CursorPager::default();
        assert_eq!(pager.advance(None, Some("/wiki/api/v2/x?cursor=a")), Ok(true));
        assert_eq!(pager.cursor(), Some("a"));
        assert_eq!(
            pager.advance(Some(r#"</wiki/api/v2/x?cursor=b>; rel="next""#), None),
            Ok(true)
        );
        assert_eq!(pager.cursor(), Some("b"));
        assert!(matches!(
            pager.advance(None, Some("/wiki/api/v2/x?cursor=a")),
            Err(PagerRefusal::Repeated(_))
        ));
        assert!(matches!(
            pager.advance(None, Some("/wiki/api/v2/x?limit=1")),
            Err(PagerRefusal::NoCursor(_))
        ));
        assert_eq!(pager.advance(None, None), Ok(false));
    }

    #[test]
    fn scim_indexes_are_one_based() {
        let first = IndexPager {
            start_index: 1,
            count: 10,
        };
        assert_eq!(
            first.next(10, Some(25)),
            Some(IndexPager {
                start_index: 11,
                count: 10
            })
        );
        assert_eq!(
            IndexPager {
                start_index: 21,
                count: 10
            }
            .next(5, Some(25)),
            None
        );
        assert_eq!(first.next(0, None), None);
        assert_eq!(first.next(10, Some(10)), None);
    }
}
