//! The three pagination styles the simulated APIs use, with Atlassian's traps: Confluence v1
//! offsets (`start`/`limit`, the server silently lowering `limit`), Confluence v2 opaque cursors
//! (`Link` header and `_links.next`), SCIM 1-based `startIndex`/`count`.
//!
//! Mixing styles truncates silently, as on Atlassian: a `cursor` sent to v1, or a `start` sent to
//! v2, gets the first page with no link to the next one and no error.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use base64::Engine;
use serde_json::{Value, json};

use crate::lock;
use crate::tenant::SimTenant;

/// Query parameters of a request.
pub(crate) type QueryMap = HashMap<String, String>;

/// A numeric query parameter; `Err` when present but not a number.
pub(crate) fn number(query: &QueryMap, name: &str) -> Result<Option<usize>, String> {
    match query.get(name) {
        None => Ok(None),
        Some(raw) => raw
            .parse()
            .map(Some)
            .map_err(|_| format!("{name} must be a non-negative integer")),
    }
}

impl SimTenant {
    /// The page size this listing response uses: what the client asked for, capped by `max`, or
    /// by the next value of the policy's page-size cycle when there is one.
    pub(crate) fn page_size(&self, requested: Option<usize>, default: u32, max: u32) -> usize {
        let cap = {
            let cycle = &lock(&self.policy).page_size_cycle;
            if cycle.is_empty() {
                max
            } else {
                let turn = self.listings.fetch_add(1, Ordering::Relaxed) as usize;
                cycle[turn % cycle.len()]
            }
        };
        let requested = requested.filter(|&n| n > 0).unwrap_or(default as usize);
        requested.clamp(1, cap.max(1) as usize)
    }
}

/// A Confluence v1 page: `{results, start, limit, size, _links}`. `path` and `fixed` rebuild the
/// `next` link.
pub(crate) fn offset_page(
    tenant: &SimTenant,
    items: Vec<Value>,
    query: &QueryMap,
    path: &str,
    fixed: &[(&str, &str)],
) -> Result<Value, String> {
    let max = lock(&tenant.policy).v1_max_limit;
    let limit = tenant.page_size(number(query, "limit")?, 25, max);
    // The trap: a cursor means nothing to v1; it answers the first page and stops there.
    let mixed = query.contains_key("cursor");
    let start = if mixed {
        0
    } else {
        number(query, "start")?.unwrap_or(0)
    };
    let end = (start + limit).min(items.len());
    let page: Vec<Value> = items.get(start..end).map(<[Value]>::to_vec).unwrap_or_default();
    let size = page.len();
    let mut links = json!({"base": "https://sim.atlassian.net/wiki", "context": "/wiki", "self": path});
    if !mixed && start + size < items.len() {
        let mut next = format!("{path}?");
        for (key, value) in fixed {
            next.push_str(&format!("{key}={value}&"));
        }
        next.push_str(&format!("limit={limit}&start={}", start + size));
        links["next"] = json!(next);
    }
    Ok(json!({"results": page, "start": start, "limit": limit, "size": size, "_links": links}))
}

pub(crate) fn encode_cursor(offset: usize) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("sim-offset:{offset}"))
}

pub(crate) fn decode_cursor(cursor: &str) -> Option<usize> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    String::from_utf8(bytes)
        .ok()?
        .strip_prefix("sim-offset:")?
        .parse()
        .ok()
}

/// A Confluence v2 page: the body `{results, _links: {next}}` and the `Link` header value.
/// `path` is the site-relative path (`/wiki/api/v2/...`), as Atlassian writes it even when the
/// request came through the gateway.
pub(crate) fn cursor_page(
    tenant: &SimTenant,
    items: Vec<Value>,
    query: &QueryMap,
    path: &str,
) -> Result<(Value, Option<String>), String> {
    let max = lock(&tenant.policy).v2_max_limit;
    let limit = tenant.page_size(number(query, "limit")?, 25, max);
    // The trap: `start` means nothing to v2; first page, no next link.
    let mixed = query.contains_key("start");
    let offset = match query.get("cursor") {
        Some(_) if mixed => 0,
        Some(cursor) => decode_cursor(cursor).ok_or("invalid cursor")?,
        None => 0,
    };
    let end = (offset + limit).min(items.len());
    let page: Vec<Value> = items.get(offset..end).map(<[Value]>::to_vec).unwrap_or_default();
    let mut links = json!({"base": "https://sim.atlassian.net/wiki"});
    let mut link_header = None;
    if !mixed && end < items.len() {
        let next = format!("{path}?limit={limit}&cursor={}", encode_cursor(end));
        link_header = Some(format!("<{next}>; rel=\"next\""));
        links["next"] = json!(next);
    }
    Ok((json!({"results": page, "_links": links}), link_header))
}

/// A SCIM `ListResponse` (1-based `startIndex`).
pub(crate) fn scim_page(tenant: &SimTenant, items: Vec<Value>, query: &QueryMap) -> Result<Value, String> {
    let max = lock(&tenant.policy).scim_max_count;
    let count = tenant.page_size(number(query, "count")?, max, max);
    let start_index = number(query, "startIndex")?.unwrap_or(1).max(1);
    let from = start_index - 1;
    let end = (from + count).min(items.len());
    let page: Vec<Value> = items.get(from..end).map(<[Value]>::to_vec).unwrap_or_default();
    Ok(json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": items.len(),
        "startIndex": start_index,
        "itemsPerPage": page.len(),
        "Resources": page,
    }))
}
