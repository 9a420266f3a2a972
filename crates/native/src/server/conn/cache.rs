//! The response cache at the connection: a request's key looked up in the shared store, and
//! then one of — the stored response written from Rust (HIT, or an expired copy: UPDATING,
//! STALE), a wait for the request that is filling the key, or the app with the request's
//! [`CacheRequest`], whose response is tagged with `X-Cache-Status`, captured while it is sent
//! and stored afterwards (or the key marked uncacheable). `PURGE` requests are answered here
//! too. What to do is decided by `ferrocorn_cache` (pure, clock passed in); this file only
//! carries it out against the store and the socket. The stored response's bytes on the wire
//! are `cache_hit.rs`'s; the way of a response into the store is `cache_fill.rs`'s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrocorn_cache::{
    CacheStatus, EntryMeta, Filler, KeyRequest, RefreshFailure, Step, Stored, append_variant,
    decide, decode_entry, stale_on_failure,
};
use ferrocorn_http::{BodyFraming, RequestHead, ResponseHead, percent_decode};
use ferrocorn_shm::cache_store::Filling;

use super::cache_count::LockWait;
use super::cache_fill::store_captured;
pub(super) use super::cache_fill::{Capture, Fill};
use super::cache_hit::{Conditional, encode_stored};
use super::key_inputs::KeyInputs;
use super::respond::Body;
use super::{Conn, ConnError, Sent};
use crate::clock::with_http_date;
use crate::options::CacheOptions;
use crate::redis_cache::RemoteError;
use crate::response_store::{Attempt, ResponseStore, StoreFill};
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
        let (reads_path, reads_remote) = (opts.reads_decoded_path(), opts.reads_remote_addr());
        let inputs = KeyInputs::new(head, reads_path, reads_remote, self.peer.ip);
        let key_request = inputs.request(head, https);
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
        // when this request first found a live filler (the lock wait's start)
        let mut waiting_since: Option<Instant> = None;
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
            let waited_out = filler == Filler::Live
                && waiting_since.get_or_insert_with(Instant::now).elapsed() >= opts.lock_timeout;
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
            let remote = self.peer.ip.map(|ip| ip.to_string()).unwrap_or_default();
            let key = opts.key.render(&KeyRequest {
                scheme: if https { "https" } else { "http" },
                method: "GET",
                target,
                decoded_path: &decoded,
                query,
                headers: &head.headers,
                remote_addr: remote.as_bytes(),
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

/// How a response of the app starts, as the cache sees it.
pub(super) enum CacheStart {
    /// Send it, with this head instead of the app's when Some.
    Send(Option<ResponseHead>),
    /// A stale copy was answered instead (None: the client could not be written to).
    Answered(Option<Sent>),
    /// A background refresh: capture the body for the store, send nothing.
    Refresh,
}

/// Read `buf.len()` bytes of the file `fd` from `offset`; false when it is shorter.
fn read_file_range(fd: std::os::fd::RawFd, offset: u64, buf: &mut [u8]) -> bool {
    use std::os::fd::FromRawFd;
    use std::os::unix::fs::FileExt;
    // SAFETY: the caller keeps `fd` open for the call; ManuallyDrop never closes it.
    let file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
    file.read_exact_at(buf, offset).is_ok()
}
