//! A response on its way into the cache store: the [`Fill`] a request to the app carries (its
//! key, the fill lock it holds, the expired copy it refreshes), the [`Capture`] of the body as
//! it is sent, and what becomes of them — stored with nginx's freshness, marked uncacheable
//! (hit-for-miss), or, for a `--cache-revalidate` refresh answered 304, the expired copy
//! renewed. Dropping a fill releases its lock.

use std::sync::Arc;

use ferrocorn_cache::{
    EntryMeta, Freshness, Storability, append_variant, conditional_headers, decode_entry,
    encode_entry, header_is_stored, renewed_freshness, storability,
};
use ferrocorn_http::ResponseHead;

use super::Sent;
use crate::options::CacheOptions;
use crate::response_store::{Put, ResponseStore, StoreFill};
use crate::shared_cache::{TAG_RESPONSE, TAG_UNCACHEABLE, TAG_VARY, unix_now};

/// A response on its way into the store; dropping it releases the key's fill lock.
pub(super) struct Fill {
    pub(super) store: ResponseStore,
    pub(super) opts: Arc<CacheOptions>,
    /// The key before any `Vary` variant.
    pub(super) primary: Vec<u8>,
    /// The key looked up and locked (the primary key or a variant of it).
    pub(super) key: Vec<u8>,
    pub(super) token: Option<StoreFill>,
    /// The expired copy this request refreshes, for `--cache-use-stale`.
    pub(super) stale: Option<Vec<u8>>,
    /// The request's headers, for a response that varies on them.
    pub(super) request_headers: Vec<(String, Vec<u8>)>,
    /// Whether the response may be stored (`--cache-no-store` did not hold).
    pub(super) storable: bool,
    /// Whether it refreshes an expired copy (which an unstorable answer leaves in place).
    pub(super) refreshes: bool,
    /// Whether the refresh asks the app about the expired copy's validators, so that a 304
    /// renews the copy (`--cache-revalidate`).
    pub(super) revalidates: bool,
}

impl Drop for Fill {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            self.store.end_fill(token);
        }
    }
}

/// A response body being copied for the store, up to a limit.
pub(super) struct Capture {
    pub(super) bytes: Vec<u8>,
    pub(super) limit: usize,
    pub(super) overflowed: bool,
}

impl Capture {
    /// Keep `bytes` (or give up once past the limit).
    pub fn push(&mut self, bytes: &[u8]) {
        if self.overflowed {
            return;
        }
        if self.bytes.len() + bytes.len() > self.limit {
            self.overflowed = true;
            self.bytes = Vec::new();
            return;
        }
        self.bytes.extend_from_slice(bytes);
    }
}

/// Store the `capture` of a response sent with `rhead` (`sent` None: it did not go out)
/// when it went out whole; whether it was stored.
pub(super) fn store_captured(
    fill: Fill,
    capture: Capture,
    rhead: &ResponseHead,
    sent: Option<&Sent>,
) -> bool {
    let Some(sent) = sent else { return false };
    let mut body = capture.bytes;
    if capture.overflowed || (body.len() as u64) < sent.body_bytes {
        return false;
    }
    body.truncate(sent.body_bytes as usize);
    if rhead.content_length().is_some_and(|cl| cl != sent.body_bytes) {
        return false; // cut short
    }
    fill.store_response(rhead, &body, unix_now())
}

impl Fill {
    /// With `--cache-revalidate`, the conditional headers the app gets for refreshing the
    /// expired copy (from its validators); marks the fill as a revalidation when there are any.
    pub(super) fn revalidation_headers(&mut self) -> Vec<(String, Vec<u8>)> {
        if !self.opts.revalidate || !self.storable {
            return Vec::new();
        }
        let Some(view) = self.stale.as_deref().and_then(decode_entry) else { return Vec::new() };
        let headers = conditional_headers(view.header_lines);
        self.revalidates = !headers.is_empty();
        headers
    }

    /// The app answered the revalidation with `rhead`, a 304: give the expired copy the
    /// freshness nginx would (`renewed_freshness`) and store it again, releasing the key's
    /// lock. Returns the copy to answer (renewed, or as it was when the 304 gave no lifetime).
    pub(super) fn renew(mut self, rhead: &ResponseHead, now: i64) -> Option<Vec<u8>> {
        let stale = self.stale.take()?;
        let view = decode_entry(&stale)?;
        let headers: Vec<(&str, &[u8])> =
            rhead.headers().iter().map(|(n, v)| (n.as_str(), v.as_bytes())).collect();
        let fresh = renewed_freshness(view.header_lines, None, &headers, now, &self.opts.valid);
        let Some(fresh) = fresh else { return Some(stale.clone()) };
        let meta = EntryMeta { status: view.meta.status, freshness: fresh, stored_at: now };
        let mut head = Vec::with_capacity(view.status_line.len() + 2 + view.header_lines.len());
        head.extend_from_slice(view.status_line);
        head.extend_from_slice(b"\r\n");
        head.extend_from_slice(view.header_lines);
        let mut renewed = Vec::new();
        encode_entry(&meta, &head, view.body, &mut renewed);
        let entry = Put {
            key: &self.key,
            tag: TAG_RESPONSE,
            expires: i64::MAX,
            value: &renewed,
            fill: self.token.take(),
        };
        self.store.insert_all(&self.primary, vec![entry], now);
        Some(renewed)
    }

    /// Store `body` sent with `rhead` at `now`, or mark the key uncacheable — unless it
    /// refreshes an expired copy, which then stays for the next request to refresh (as nginx
    /// keeps it, and `--cache-use-stale` may still answer it). Whether the response was stored.
    pub(super) fn store_response(mut self, rhead: &ResponseHead, body: &[u8], now: i64) -> bool {
        let headers: Vec<(&str, &[u8])> =
            rhead.headers().iter().map(|(n, v)| (n.as_str(), v.as_bytes())).collect();
        let freshness = match storability(rhead.status(), &headers, now, &self.opts.valid) {
            Storability::Store(freshness) => freshness,
            Storability::NotStored(_) if self.opts.hit_for_miss > 0 && !self.refreshes => {
                let mark = Put {
                    key: &self.key,
                    tag: TAG_UNCACHEABLE,
                    expires: now + self.opts.hit_for_miss,
                    value: b"",
                    fill: self.token.take(),
                };
                self.store.insert_all(&self.primary, vec![mark], now);
                return false;
            }
            Storability::NotStored(_) => return false,
        };
        let mut head = Vec::with_capacity(256);
        rhead.encode_kept(&mut head, header_is_stored);
        let meta = EntryMeta {
            status: rhead.status(),
            freshness: Freshness { vary: None, ..freshness.clone() },
            stored_at: now,
        };
        let mut value = Vec::new();
        encode_entry(&meta, &head, body, &mut value);
        let mut key = self.primary.clone();
        let mut puts = Vec::with_capacity(2);
        if let Some(vary) = &freshness.vary {
            puts.push(Put {
                key: &self.primary,
                tag: TAG_VARY,
                expires: i64::MAX,
                value: vary.as_bytes(),
                fill: self.token.take_if(|_| self.key == self.primary),
            });
            append_variant(&mut key, vary, &self.request_headers);
        }
        let fill = self.token.take_if(|_| self.key == key);
        puts.push(Put { key: &key, tag: TAG_RESPONSE, expires: i64::MAX, value: &value, fill });
        self.store.insert_all(&self.primary, puts, now)
    }
}
