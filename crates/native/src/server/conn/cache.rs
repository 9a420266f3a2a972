//! The response cache at the connection: a request's key looked up in the shared store, and
//! then one of — the stored response written from Rust (HIT, or an expired copy: UPDATING,
//! STALE), a wait for the request that is filling the key, or the app with the request's
//! [`CacheRequest`], whose response is tagged with `X-Cache-Status`, captured while it is sent
//! and stored afterwards (or the key marked uncacheable). `PURGE` requests are answered here
//! too. What to do is decided by `ferrocorn_cache` (pure, clock passed in); this file only
//! carries it out against the store and the socket.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrocorn_cache::{
    CacheStatus, EntryMeta, Filler, Freshness, KeyRequest, RefreshFailure, Step, Storability,
    Stored, Validators, answers_not_modified, append_variant, conditional_headers, decide,
    decode_entry, encode_entry, header_is_stored, renewed_freshness, stale_on_failure, storability,
};
use ferrocorn_http::{BodyFraming, RequestHead, ResponseHead, percent_decode};
use ferrocorn_shm::cache_store::Filling;

use super::cache_count::LockWait;
use super::respond::Body;
use super::{Conn, ConnError, SERVER, Sent};
use crate::clock::with_http_date;
use crate::options::CacheOptions;
use crate::redis_cache::RemoteError;
use crate::response_store::{Attempt, Put, ResponseStore, StoreFill};
use crate::shared_cache::{TAG_RESPONSE, TAG_UNCACHEABLE, TAG_VARY, unix_now};
use ferrocorn_net::client_stream::ClientStream;

/// The longest pause between two looks at a key another request is filling.
const MAX_WAIT_STEP: Duration = Duration::from_millis(50);

/// The cache's buffers and its part in the request being served, kept on the connection.
#[derive(Default)]
pub(super) struct ConnCache {
    /// The request's `X-Cache-Status` and fill, while it is with the app.
    pub request: Option<CacheRequest>,
    /// The response body being captured for the store.
    pub capture: Option<Capture>,
    /// The key being rendered (kept across requests: no allocation per hit).
    key: Vec<u8>,
    /// A stored value copied out of the store.
    value: Vec<u8>,
    /// Scratch for conditions.
    scratch: Vec<u8>,
}

impl ConnCache {
    /// The request is over: a fill not stored releases its lock.
    pub fn finish_request(&mut self) {
        self.request = None;
        self.capture = None;
    }
}

/// The cache's part in a request that goes to the app.
pub(super) struct CacheRequest {
    /// Its `X-Cache-Status`.
    status: CacheStatus,
    /// What is needed to store its response, when it may be stored.
    fill: Option<Fill>,
    /// The request's version and whether it is a HEAD (to answer a stale copy instead).
    version: (u8, u8),
    is_head: bool,
    /// A refresh after the client was answered: the app's response goes to the store only.
    pub background: bool,
    /// The conditional headers the app gets instead of the client's (`--cache-revalidate`).
    pub revalidation: Vec<(String, Vec<u8>)>,
}

/// A response on its way into the store; dropping it releases the key's fill lock.
pub(super) struct Fill {
    store: ResponseStore,
    opts: Arc<CacheOptions>,
    /// The key before any `Vary` variant.
    primary: Vec<u8>,
    /// The key looked up and locked (the primary key or a variant of it).
    key: Vec<u8>,
    token: Option<StoreFill>,
    /// The expired copy this request refreshes, for `--cache-use-stale`.
    stale: Option<Vec<u8>>,
    /// The request's headers, for a response that varies on them.
    request_headers: Vec<(String, Vec<u8>)>,
    /// Whether the response may be stored (`--cache-no-store` did not hold).
    storable: bool,
    /// Whether it refreshes an expired copy (which an unstorable answer leaves in place).
    refreshes: bool,
    /// Whether the refresh asks the app about the expired copy's validators, so that a 304
    /// renews the copy (`--cache-revalidate`).
    revalidates: bool,
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
    bytes: Vec<u8>,
    limit: usize,
    overflowed: bool,
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

/// What consulting the cache came to.
pub(super) enum Consulted {
    /// The request was answered here; `Ok(true)`: the connection may carry another.
    Answered(Result<bool, ConnError>),
    /// The app answers it, with this cache part.
    ToApp(CacheRequest),
    /// An expired copy was answered (`answered` as for [`Consulted::Answered`]); the app now
    /// refreshes it for the store.
    Refresh {
        /// The refresh's cache part.
        request: CacheRequest,
        /// How answering the client went.
        answered: Result<bool, ConnError>,
    },
}

/// What a lookup found, read out of the copied value.
enum Found {
    Nothing { filler: Filler },
    Response { meta: EntryMeta, last_access: i64, filler: Filler },
    Uncacheable,
}

fn filler_of(filling: Filling) -> Filler {
    match filling {
        Filling::Alive => Filler::Live,
        Filling::No | Filling::Dead => Filler::None,
    }
}

/// Look `key` (whose first `primary_len` bytes are the primary key) up; a `Vary` mark sends
/// the lookup on to the request's variant, whose key is then left in `key`. Err: the store
/// could not be reached.
async fn look_up(
    store: ResponseStore,
    key: &mut Vec<u8>,
    primary_len: usize,
    value: &mut Vec<u8>,
    headers: &[(String, Vec<u8>)],
    now: i64,
) -> Result<Found, RemoteError> {
    let mut found = store.lookup(&key[..primary_len], &key[..], now, value).await?;
    if let Some(f) = found
        && f.tag == TAG_VARY
    {
        let vary = String::from_utf8_lossy(value).into_owned();
        append_variant(key, &vary, headers);
        found = store.lookup(&key[..primary_len], &key[..], now, value).await?;
    }
    Ok(look_up_found(found, value))
}

/// What a lookup's result means for the request.
fn look_up_found(found: Option<ferrocorn_shm::cache_store::Found>, value: &[u8]) -> Found {
    let Some(found) = found else { return Found::Nothing { filler: Filler::None } };
    let filler = filler_of(found.filling);
    match found.tag {
        TAG_RESPONSE => match decode_entry(value) {
            Some(entry) => {
                Found::Response { meta: entry.meta, last_access: found.last_access, filler }
            }
            None => Found::Nothing { filler },
        },
        TAG_UNCACHEABLE => Found::Uncacheable,
        _ => Found::Nothing { filler },
    }
}

/// A request's conditional headers (`If-None-Match`, `If-Modified-Since`), for
/// [`answers_not_modified`].
#[derive(Debug, Clone, Copy, Default)]
struct Conditional<'a> {
    if_none_match: Option<&'a [u8]>,
    if_modified_since: Option<&'a [u8]>,
}

impl<'a> Conditional<'a> {
    fn of(head: &'a RequestHead) -> Conditional<'a> {
        Conditional {
            if_none_match: head.header("IF-NONE-MATCH"),
            if_modified_since: head.header("IF-MODIFIED-SINCE"),
        }
    }
}

/// Headers a `304 Not Modified` leaves out of the stored ones (as nginx's not_modified filter).
fn left_out_of_304(line: &[u8]) -> bool {
    let name = line.split(|&b| b == b':').next().unwrap_or(line);
    name.eq_ignore_ascii_case(b"content-type") || name.eq_ignore_ascii_case(b"content-encoding")
}

/// Write a stored response (`entry`, laid out by `ferrocorn_cache::entry`) to `out`, for a
/// request of `version` (a HEAD gets no body), tagged `status`; a `304 Not Modified` instead
/// when the request's `conditional` headers match the stored validators.
#[allow(clippy::too_many_arguments)]
fn encode_stored(
    out: &mut Vec<u8>,
    entry: &[u8],
    version: (u8, u8),
    is_head: bool,
    conditional: Conditional<'_>,
    status: CacheStatus,
    keep_alive: bool,
    date: &[u8],
) -> Option<(u16, u64)> {
    let view = decode_entry(entry)?;
    let conditional_request =
        conditional.if_none_match.is_some() || conditional.if_modified_since.is_some();
    let not_modified = conditional_request
        && answers_not_modified(
            view.meta.status,
            Validators::from_header_lines(view.header_lines),
            conditional.if_none_match,
            conditional.if_modified_since,
        );
    let code = if not_modified { 304 } else { view.meta.status };
    let bodiless = code < 200 || code == 204 || code == 304;
    out.extend_from_slice(if version == (1, 0) { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
    out.extend_from_slice(if not_modified { b"304 Not Modified" } else { view.status_line });
    out.extend_from_slice(b"\r\nServer: ");
    out.extend_from_slice(SERVER);
    out.extend_from_slice(b"\r\nDate: ");
    out.extend_from_slice(date);
    out.extend_from_slice(b"\r\n");
    if not_modified {
        for line in view.header_lines.split_inclusive(|&b| b == b'\n') {
            if !left_out_of_304(line) {
                out.extend_from_slice(line);
            }
        }
    } else {
        out.extend_from_slice(view.header_lines);
    }
    if !bodiless {
        let _ = write!(out, "Content-Length: {}\r\n", view.body.len());
    }
    out.extend_from_slice(b"X-Cache-Status: ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.extend_from_slice(if keep_alive {
        b"\r\nConnection: keep-alive\r\n\r\n"
    } else {
        b"\r\nConnection: close\r\n\r\n"
    });
    let body: &[u8] = if is_head || bodiless { b"" } else { view.body };
    out.extend_from_slice(body);
    Some((code, body.len() as u64))
}

/// Whether a request may be answered from or stored into the cache at all: a method it
/// caches, no body to read, and no credentials (`Authorization`).
fn cacheable_request(opts: &CacheOptions, head: &RequestHead) -> bool {
    opts.methods.contains(&head.method)
        && head.framing == BodyFraming::Empty
        && head.header("AUTHORIZATION").is_none()
}

impl<S: ClientStream> Conn<S> {
    /// Consult the cache for `head` (see the module docs).
    pub(super) async fn consult_cache(
        &mut self,
        opts: Arc<CacheOptions>,
        store: ResponseStore,
        head: &RequestHead,
        https: bool,
        started: Instant,
    ) -> Consulted {
        let tagged = |status, fill| CacheRequest {
            status,
            fill,
            version: head.version,
            is_head: head.is_head(),
            background: false,
            revalidation: Vec::new(),
        };
        if head.method == "PURGE" {
            return Consulted::Answered(self.purge(&opts, store, head, https, started).await);
        }
        if !cacheable_request(&opts, head) {
            return Consulted::ToApp(tagged(CacheStatus::Bypass, None));
        }
        let decoded;
        let key_request = KeyRequest {
            scheme: if https { "https" } else { "http" },
            method: &head.method,
            target: &head.target,
            decoded_path: if opts.reads_decoded_path() {
                decoded = percent_decode(&head.path);
                &decoded
            } else {
                b""
            },
            query: &head.query,
            headers: &head.headers,
        };
        let storable = !opts.no_store.any(&key_request, &mut self.cache.scratch);
        let bypassed = opts.bypass.any(&key_request, &mut self.cache.scratch);
        self.cache.key.clear();
        opts.key.render_into(&key_request, &mut self.cache.key);
        let primary_len = self.cache.key.len();
        if bypassed {
            // nginx's proxy_cache_bypass: not answered from the cache, but stored.
            let fill = (storable && !head.is_head())
                .then(|| self.new_fill(&opts, store, head, primary_len, None, None, true));
            return Consulted::ToApp(tagged(CacheStatus::Bypass, fill));
        }
        let waiting_since = Instant::now();
        let mut pause = Duration::from_millis(1);
        let mut lock_wait = LockWait::default();
        loop {
            let now = unix_now();
            self.cache.key.truncate(primary_len);
            let key = &mut self.cache.key;
            let looked =
                look_up(store, key, primary_len, &mut self.cache.value, &head.headers, now).await;
            let Ok(found) = looked else {
                // the store is unreachable: pass the request through, store nothing
                return Consulted::ToApp(tagged(CacheStatus::Bypass, None));
            };
            let (stored, filler) = match &found {
                Found::Nothing { filler } => (Stored::Nothing, *filler),
                Found::Response { meta, last_access, filler } => {
                    (Stored::Response { meta, last_access: *last_access }, *filler)
                }
                Found::Uncacheable => (Stored::Uncacheable, Filler::None),
            };
            let waited_out = waiting_since.elapsed() >= opts.lock_timeout;
            let step = decide(stored, filler, now, &opts.rules, waited_out);
            if step != Step::Wait {
                lock_wait.over(self.cache_counters());
            }
            let status = match step {
                Step::Answer(status) => {
                    return Consulted::Answered(self.answer_stored(head, status, started).await);
                }
                Step::Wait => {
                    lock_wait.waiting(self.cache_counters());
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_WAIT_STEP);
                    continue;
                }
                Step::AnswerThenRefresh => {
                    let (group, key) = (&self.cache.key[..primary_len], &self.cache.key[..]);
                    let lock_secs = opts.lock_timeout.as_secs_f64().ceil().max(1.0) as u32;
                    let token = match store.begin_fill(group, key, now, lock_secs).await {
                        Attempt::Acquired(token) => Some(token),
                        Attempt::Busy => continue, // another request refreshes it
                        Attempt::NoLock => None,
                    };
                    let stale = Some(self.cache.value.clone());
                    let mut fill =
                        self.new_fill(&opts, store, head, primary_len, token, stale, storable);
                    let revalidation = fill.revalidation_headers();
                    let answered = self.answer_stored(head, CacheStatus::Stale, started).await;
                    let request = CacheRequest {
                        background: true,
                        revalidation,
                        ..tagged(CacheStatus::Stale, Some(fill))
                    };
                    return Consulted::Refresh { request, answered };
                }
                Step::Fill { status, .. } | Step::Pass { status, .. } => status,
            };
            let expired = matches!(found, Found::Response { .. });
            if head.is_head() {
                // a HEAD's answer has no body to store
                return Consulted::ToApp(tagged(status, None));
            }
            let (lock, store_it) = match step {
                Step::Fill { lock, .. } => (lock, storable),
                Step::Pass { store: s, .. } => (false, s && storable),
                Step::Answer(_) | Step::Wait | Step::AnswerThenRefresh => {
                    unreachable!("handled above")
                }
            };
            let token = match lock {
                false => None,
                true => {
                    let (group, key) = (&self.cache.key[..primary_len], &self.cache.key[..]);
                    let lock_secs = opts.lock_timeout.as_secs_f64().ceil().max(1.0) as u32;
                    match store.begin_fill(group, key, now, lock_secs).await {
                        Attempt::Acquired(token) => Some(token),
                        Attempt::Busy => continue, // another request took it first
                        Attempt::NoLock => None,
                    }
                }
            };
            let stale = expired.then(|| self.cache.value.clone());
            let mut fill = self.new_fill(&opts, store, head, primary_len, token, stale, store_it);
            let revalidation = fill.revalidation_headers();
            return Consulted::ToApp(CacheRequest { revalidation, ..tagged(status, Some(fill)) });
        }
    }

    /// The fill of the key now in `self.cache.key`.
    #[allow(clippy::too_many_arguments)]
    fn new_fill(
        &self,
        opts: &Arc<CacheOptions>,
        store: ResponseStore,
        head: &RequestHead,
        primary_len: usize,
        token: Option<StoreFill>,
        stale: Option<Vec<u8>>,
        storable: bool,
    ) -> Fill {
        Fill {
            store,
            opts: opts.clone(),
            primary: self.cache.key[..primary_len].to_vec(),
            key: self.cache.key.clone(),
            token,
            refreshes: stale.is_some(),
            stale,
            request_headers: head.headers.clone(),
            storable,
            revalidates: false,
        }
    }

    /// Answer the value just looked up (in `self.cache.value`) with `status`.
    async fn answer_stored(
        &mut self,
        head: &RequestHead,
        status: CacheStatus,
        started: Instant,
    ) -> Result<bool, ConnError> {
        self.shared.request_started();
        let mut keep_alive = head.keep_alive && !self.shared.opts.keepalive.is_zero();
        let entry = std::mem::take(&mut self.cache.value);
        let conditional = Conditional::of(head);
        let sent = self.write_stored(
            &entry,
            (head.version, head.is_head()),
            conditional,
            status,
            &mut keep_alive,
        );
        self.cache.value = entry;
        let sent = match sent {
            Some(sent) => self.flush_response_end(!keep_alive).await.then_some(sent),
            None => Some(self.send_error(500).await), // not an entry: cannot happen
        };
        let decoded =
            if self.shared.access_log.is_some() { percent_decode(&head.path) } else { Vec::new() };
        self.account(head, &decoded, sent.as_ref(), started, 0, false, None);
        Ok(sent.is_some() && keep_alive)
    }

    /// Put a stored response into the write buffer (not flushed).
    fn write_stored(
        &mut self,
        entry: &[u8],
        (version, is_head): ((u8, u8), bool),
        conditional: Conditional<'_>,
        status: CacheStatus,
        keep_alive: &mut bool,
    ) -> Option<Sent> {
        *keep_alive &= !self.shutting_down();
        let alive = *keep_alive;
        let wbuf = &mut self.wbuf;
        let (code, body_bytes) = with_http_date(|date| {
            encode_stored(wbuf, entry, version, is_head, conditional, status, alive, date)
        })?;
        self.count_cache_answer(status);
        Some(Sent { status: code, body_bytes, headers: Vec::new() })
    }

    /// Before a response of the app goes out: the head to send instead of `rhead` (tagged with
    /// `X-Cache-Status`), and the capture started when it may be stored — or, when `rhead`'s
    /// status is a failure `--cache-use-stale` covers, the expired copy answered instead.
    pub(super) async fn cache_response_start(
        &mut self,
        req: &RequestHead,
        rhead: &ResponseHead,
        keep_alive: &mut bool,
    ) -> CacheStart {
        match &self.cache.request {
            None => return CacheStart::Send(None),
            Some(request) if request.background => {
                let limit = request.fill.as_ref().map_or(0, |f| f.opts.max_entry_size);
                let limit = limit.min(usize::MAX as u64) as usize;
                self.cache.capture = Some(Capture { bytes: Vec::new(), limit, overflowed: false });
                return CacheStart::Refresh;
            }
            Some(_) => {}
        }
        if rhead.status() == 304
            && let Some(sent) = self.answer_revalidated(rhead, keep_alive).await
        {
            return CacheStart::Answered(sent);
        }
        let failure = RefreshFailure::Status(rhead.status());
        if let Some(sent) = self.answer_stale(failure, keep_alive).await {
            return CacheStart::Answered(Some(sent));
        }
        let Some(request) = &self.cache.request else { return CacheStart::Send(None) };
        let tagged = rhead.with_server_header("X-Cache-Status", request.status.as_str());
        self.count_cache_answer(request.status);
        if let Some(fill) = &request.fill
            && fill.storable
            && !req.is_head()
        {
            let limit = fill.opts.max_entry_size.min(usize::MAX as u64) as usize;
            self.cache.capture = Some(Capture { bytes: Vec::new(), limit, overflowed: false });
        }
        CacheStart::Send(Some(tagged))
    }

    /// Whether the request being served is a background refresh (nothing goes to the client).
    pub(super) fn refreshing_in_background(&self) -> bool {
        self.cache.request.as_ref().is_some_and(|r| r.background)
    }

    /// Take a background refresh's whole body (nothing is sent): the chunks still to come
    /// are read from the app into the capture. What the logs record.
    pub(super) async fn refresh_body(&mut self, rhead: &ResponseHead, body: Body<'_>) -> Sent {
        self.capture_body(&body);
        if let Body::Stream { first, chunks } = body {
            let mut chunk = first;
            loop {
                if let Some(capture) = self.cache.capture.as_mut() {
                    capture.push(&chunk);
                }
                chunk.clear();
                match chunks.next(&mut chunk).await {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(()) => {
                        self.cache.capture = None; // cut short: not stored
                        break;
                    }
                }
            }
        }
        let body_bytes = self.cache.capture.as_ref().map_or(0, |c| c.bytes.len() as u64);
        Sent { status: rhead.status(), body_bytes, headers: Vec::new() }
    }

    /// The `X-Cache-Status` header line of the request being served (empty without one), for
    /// a response about to go out (counted).
    pub(super) fn cache_status_line(&self) -> Vec<u8> {
        match &self.cache.request {
            Some(request) => {
                self.count_cache_answer(request.status);
                format!("X-Cache-Status: {}\r\n", request.status.as_str()).into_bytes()
            }
            None => Vec::new(),
        }
    }

    /// Capture a body that is at hand before it is sent (a streamed one is captured as its
    /// chunks go out).
    pub(super) fn capture_body(&mut self, body: &Body<'_>) {
        let Some(capture) = self.cache.capture.as_mut() else { return };
        match body {
            Body::Whole(bytes) => capture.push(bytes),
            Body::File(file) => {
                capture.push(file.prefix);
                if file.length > capture.limit as u64 {
                    capture.overflowed = true;
                    return;
                }
                let mut bytes = vec![0u8; file.length as usize];
                if read_file_range(file.fd, file.offset, &mut bytes) {
                    capture.push(&bytes);
                } else {
                    capture.overflowed = true;
                }
            }
            Body::Stream { .. } => {} // captured chunk by chunk as it is sent
        }
    }

    /// After the app's response went out (`sent` None: it did not): store it when it was
    /// sent whole and may be stored, else mark the key uncacheable; either way release the
    /// key's lock. Whether it was stored is counted.
    pub(super) fn cache_response_end(&mut self, rhead: &ResponseHead, sent: Option<&Sent>) {
        let Some(capture) = self.cache.capture.take() else { return };
        let Some(fill) = self.cache.request.as_mut().and_then(|r| r.fill.take()) else { return };
        if fill.revalidates && rhead.status() == 304 {
            fill.renew(rhead, unix_now()); // a background revalidation: renewed, not a new store
            return;
        }
        let stored = store_captured(fill, capture, rhead, sent);
        self.cache_counters().store_outcome(stored);
    }

    /// When the app answered a revalidation (`--cache-revalidate`) with 304: renew the expired
    /// copy and answer it (REVALIDATED), flushed. None when the request did not revalidate;
    /// Some(None) when the client could not be written to.
    async fn answer_revalidated(
        &mut self,
        rhead: &ResponseHead,
        keep_alive: &mut bool,
    ) -> Option<Option<Sent>> {
        let request = self.cache.request.as_mut()?;
        if !request.fill.as_ref().is_some_and(|f| f.revalidates) {
            return None;
        }
        let copy = request.fill.take()?.renew(rhead, unix_now())?;
        request.status = CacheStatus::Revalidated;
        let (version, is_head) = (request.version, request.is_head);
        let status = CacheStatus::Revalidated;
        let plain = Conditional::default(); // (the app got the revalidation's headers)
        let Some(sent) = self.write_stored(&copy, (version, is_head), plain, status, keep_alive)
        else {
            return Some(None);
        };
        Some(self.flush_response_end(!*keep_alive).await.then_some(sent))
    }

    /// When the app's answer failed as `failure` and the request refreshes an expired copy
    /// that `--cache-use-stale` (or the copy's own stale-if-error) lets stand in: answer it
    /// (STALE), flushed.
    pub(super) async fn answer_stale(
        &mut self,
        failure: RefreshFailure,
        keep_alive: &mut bool,
    ) -> Option<Sent> {
        let request = self.cache.request.as_mut()?;
        let fill = request.fill.as_mut()?;
        let meta = decode_entry(fill.stale.as_ref()?)?.meta;
        if !stale_on_failure(&meta.freshness, unix_now(), failure, &fill.opts.rules.use_stale) {
            return None;
        }
        let stale = fill.stale.take()?;
        let (version, is_head) = (request.version, request.is_head);
        request.status = CacheStatus::Stale;
        let plain = Conditional::default(); // (the request's own headers went to the app)
        let sent =
            self.write_stored(&stale, (version, is_head), plain, CacheStatus::Stale, keep_alive)?;
        self.flush_response_end(!*keep_alive).await.then_some(sent)
    }

    /// `PURGE`: remove the request's key with its variants, or every key starting with it
    /// when the target ends in `*`. Only from `--cache-purge-allow`.
    async fn purge(
        &mut self,
        opts: &CacheOptions,
        store: ResponseStore,
        head: &RequestHead,
        https: bool,
        started: Instant,
    ) -> Result<bool, ConnError> {
        let peer_ip = self.peer.ip;
        let (code, removed) = if !opts.purge_allow.allows(peer_ip) {
            ("403 Forbidden", 0)
        } else {
            self.cache_counters().purged();
            let prefix = head.target.ends_with(b"*");
            let target = &head.target[..head.target.len() - usize::from(prefix)];
            let path = head.path.strip_suffix(b"*").unwrap_or(&head.path);
            let query = head.query.strip_suffix(b"*").unwrap_or(&head.query);
            let decoded = percent_decode(path);
            let key = opts.key.render(&KeyRequest {
                scheme: if https { "https" } else { "http" },
                method: "GET",
                target,
                decoded_path: &decoded,
                query,
                headers: &head.headers,
            });
            let removed = match prefix {
                true => store.remove_prefix(&key).await,
                false => store.remove_group(&key).await,
            };
            // responses, not the marks kept beside them (Vary, uncacheable)
            match removed.map(|r| r.iter().filter(|&&tag| tag == TAG_RESPONSE).count()) {
                Ok(0) => ("404 Not Found", 0),
                Ok(responses) => ("200 OK", responses),
                Err(_) => ("503 Service Unavailable", 0),
            }
        };
        let body = format!("{{\"purged\": {removed}}}\n");
        let headers = vec![("Content-Type".to_owned(), "application/json".to_owned())];
        let rhead = ResponseHead::new(code, headers).expect("a valid head");
        let mut keep_alive = head.keep_alive && !self.shared.opts.keepalive.is_zero();
        self.shared.request_started();
        let sent =
            self.send_response(head, &rhead, Body::Whole(body.as_bytes()), &mut keep_alive).await;
        self.account(head, &head.path, sent.as_ref(), started, 0, false, None);
        Ok(sent.is_some() && keep_alive)
    }
}

/// Store the `capture` of a response sent with `rhead` (`sent` None: it did not go out)
/// when it went out whole; whether it was stored.
fn store_captured(fill: Fill, capture: Capture, rhead: &ResponseHead, sent: Option<&Sent>) -> bool {
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

/// How a response of the app starts, as the cache sees it.
pub(super) enum CacheStart {
    /// Send it, with this head instead of the app's when Some.
    Send(Option<ResponseHead>),
    /// A stale copy was answered instead (None: the client could not be written to).
    Answered(Option<Sent>),
    /// A background refresh: capture the body for the store, send nothing.
    Refresh,
}

impl Fill {
    /// With `--cache-revalidate`, the conditional headers the app gets for refreshing the
    /// expired copy (from its validators); marks the fill as a revalidation when there are any.
    fn revalidation_headers(&mut self) -> Vec<(String, Vec<u8>)> {
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
    fn renew(mut self, rhead: &ResponseHead, now: i64) -> Option<Vec<u8>> {
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
    fn store_response(mut self, rhead: &ResponseHead, body: &[u8], now: i64) -> bool {
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

/// Read `buf.len()` bytes of the file `fd` from `offset`; false when it is shorter.
fn read_file_range(fd: std::os::fd::RawFd, offset: u64, buf: &mut [u8]) -> bool {
    use std::os::fd::FromRawFd;
    use std::os::unix::fs::FileExt;
    // SAFETY: the caller keeps `fd` open for the call; ManuallyDrop never closes it.
    let file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
    file.read_exact_at(buf, offset).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(status: u16, head: &[u8], body: &[u8]) -> Vec<u8> {
        let meta = EntryMeta {
            status,
            freshness: Freshness {
                valid_until: 0,
                updating_sec: None,
                error_sec: None,
                vary: None,
            },
            stored_at: 0,
        };
        let mut out = Vec::new();
        encode_entry(&meta, head, body, &mut out);
        out
    }

    #[test]
    fn a_stored_response_is_written_with_the_server_s_own_headers() {
        let e = entry(200, b"200 OK\r\nContent-Type: text/plain\r\n", b"hello");
        let mut out = Vec::new();
        let sent =
            encode_stored(&mut out, &e, (1, 1), false, PLAIN, CacheStatus::Hit, true, b"DATE")
                .unwrap();
        assert_eq!(sent, (200, 5));
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nServer: ferrocorn\r\nDate: DATE\r\nContent-Type: text/plain\r\n\
              Content-Length: 5\r\nX-Cache-Status: HIT\r\nConnection: keep-alive\r\n\r\nhello"
        );
    }

    #[test]
    fn a_head_or_a_bodiless_status_gets_no_body() {
        let e = entry(200, b"200 OK\r\n", b"hello");
        let mut out = Vec::new();
        let sent =
            encode_stored(&mut out, &e, (1, 0), true, PLAIN, CacheStatus::Stale, false, b"D")
                .unwrap();
        assert_eq!(sent, (200, 0));
        assert!(out.starts_with(b"HTTP/1.0 200 OK\r\n"));
        assert!(
            out.ends_with(
                b"Content-Length: 5\r\nX-Cache-Status: STALE\r\nConnection: close\r\n\r\n"
            )
        );
        let e = entry(304, b"304 Not Modified\r\n", b"");
        out.clear();
        encode_stored(&mut out, &e, (1, 1), false, PLAIN, CacheStatus::Hit, true, b"D").unwrap();
        assert!(!out.windows(14).any(|w| w == b"Content-Length"));
    }

    const PLAIN: Conditional<'static> =
        Conditional { if_none_match: None, if_modified_since: None };

    #[test]
    fn a_matching_conditional_request_gets_a_304_without_body_or_content_type() {
        let e = entry(200, b"200 OK\r\nContent-Type: text/plain\r\nETag: \"v1\"\r\n", b"hello");
        let mut out = Vec::new();
        let matching = Conditional { if_none_match: Some(b"\"v1\""), if_modified_since: None };
        let sent =
            encode_stored(&mut out, &e, (1, 1), false, matching, CacheStatus::Hit, true, b"D");
        assert_eq!(sent, Some((304, 0)));
        assert_eq!(
            out,
            b"HTTP/1.1 304 Not Modified\r\nServer: ferrocorn\r\nDate: D\r\nETag: \"v1\"\r\n\
              X-Cache-Status: HIT\r\nConnection: keep-alive\r\n\r\n"
        );
        out.clear();
        let other = Conditional { if_none_match: Some(b"\"v2\""), if_modified_since: None };
        let sent = encode_stored(&mut out, &e, (1, 1), false, other, CacheStatus::Hit, true, b"D");
        assert_eq!(sent, Some((200, 5)));
    }

    #[test]
    fn bytes_that_are_not_an_entry_are_not_written() {
        let mut out = Vec::new();
        assert!(
            encode_stored(&mut out, b"junk", (1, 1), false, PLAIN, CacheStatus::Hit, true, b"D")
                .is_none()
        );
    }
}
