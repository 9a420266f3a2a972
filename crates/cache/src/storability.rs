//! Whether a response may be stored, and until when: nginx's `proxy_cache` decision, step for
//! step (`ngx_http_upstream.c`: the `X-Accel-Expires`, `Cache-Control`, `Expires`,
//! `Set-Cookie` and `Vary` handlers, run in the order the headers arrived, then the
//! `proxy_cache_valid` fallback). The outcomes nginx users rely on:
//!
//! - `X-Accel-Expires: N` (seconds) or `@T` (Unix time) wins over everything else, and clears
//!   a `no-cache` or a past `Expires` seen before it; `X-Accel-Expires: 0` refuses storing.
//! - `Cache-Control` with `no-cache`, `no-store` or `private` refuses; otherwise `s-maxage=`
//!   (or, without it, `max-age=`) sets the freshness, `0` refuses, a malformed number refuses;
//!   `stale-while-revalidate=` and `stale-if-error=` grant stale windows.
//! - `Expires` counts only when nothing above set a freshness; a past or unparsable date
//!   refuses (unless `X-Accel-Expires` or `max-age` later sets one).
//! - `Set-Cookie`, `Vary: *` or a `Vary` longer than 128 bytes refuse.
//! - Otherwise `--cache-valid` by status; no entry for the status refuses.
//!
//! Only the first `X-Accel-Expires` and the first `Expires` count, as in nginx. The clock is
//! passed in (`now`, Unix seconds).

use crate::valid::CacheValid;

/// The longest `Vary` value nginx stores a response under (`NGX_HTTP_CACHE_VARY_LEN`).
pub const MAX_VARY_LEN: usize = 128;

/// How long a stored response stays fresh, and the stale windows it grants itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freshness {
    /// Fresh until this Unix time (seconds).
    pub valid_until: i64,
    /// Seconds past `valid_until` it may be served while a refresh runs
    /// (`stale-while-revalidate`).
    pub updating_sec: Option<u64>,
    /// Seconds past `valid_until` it may be served when a refresh fails (`stale-if-error`, or
    /// `stale-while-revalidate` when that is the only one given).
    pub error_sec: Option<u64>,
    /// The response's `Vary` (lines joined with `, `): stored per variant of these request
    /// headers. None without `Vary`.
    pub vary: Option<String>,
}

/// Why a response is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// `Cache-Control: no-cache`, `no-store` or `private`, or a zero `max-age`/`s-maxage`.
    CacheControlRefuses,
    /// A `max-age`, `s-maxage`, `stale-while-revalidate` or `stale-if-error` that is not a
    /// number.
    MalformedCacheControl,
    /// `X-Accel-Expires: 0`.
    AccelExpiresZero,
    /// `Expires` in the past, or not a date.
    Expired,
    /// The response sets a cookie.
    SetCookie,
    /// `Vary: *`: no request could be known to match.
    VaryAll,
    /// A `Vary` longer than [`MAX_VARY_LEN`] bytes.
    VaryTooLong,
    /// Nothing gave it a freshness: no header did and `--cache-valid` has no entry for its
    /// status.
    NoValidity,
}

/// The decision for one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storability {
    /// Store it, fresh for this long.
    Store(Freshness),
    /// Do not store it.
    NotStored(NotStored),
}

/// The header handlers' shared state, as nginx keeps it on the request.
#[derive(Default)]
struct State {
    /// Fresh-until time set by a header (0: none yet), nginx's `valid_sec`.
    valid_sec: i64,
    no_cache: bool,
    expired: bool,
    /// The first reason storing was refused outright (nginx's `cacheable = 0`).
    refused: Option<NotStored>,
    accel_expires_seen: bool,
    expires_seen: bool,
    updating_sec: Option<u64>,
    error_sec: Option<u64>,
    vary: Vec<String>,
}

impl State {
    fn refuse(&mut self, why: NotStored) {
        self.refused.get_or_insert(why);
    }

    fn accel_expires(&mut self, value: &[u8], now: i64) {
        if self.accel_expires_seen {
            return; // a duplicate is ignored
        }
        self.accel_expires_seen = true;
        if let Some(at) = value.strip_prefix(b"@") {
            if let Some(t) = whole_number(at) {
                self.valid_sec = clamp(t);
                self.no_cache = false;
                self.expired = false;
            }
            return;
        }
        match whole_number(value) {
            Some(0) => self.refuse(NotStored::AccelExpiresZero),
            Some(n) => {
                self.valid_sec = now.saturating_add(clamp(n));
                self.no_cache = false;
                self.expired = false;
            }
            None => {}
        }
    }

    fn cache_control(&mut self, value: &[u8], now: i64) {
        if !(self.valid_sec != 0 && self.accel_expires_seen) {
            if ["no-cache", "no-store", "private"].iter().any(|d| find(value, d).is_some()) {
                self.no_cache = true;
                return;
            }
            let age = find(value, "s-maxage=")
                .map(|at| at + "s-maxage=".len())
                .or_else(|| find(value, "max-age=").map(|at| at + "max-age=".len()));
            if let Some(at) = age {
                match delta_seconds(&value[at..]) {
                    None => return self.refuse(NotStored::MalformedCacheControl),
                    Some(0) => {
                        self.no_cache = true;
                        return;
                    }
                    Some(n) => {
                        self.valid_sec = now.saturating_add(clamp(n));
                        self.expired = false;
                    }
                }
            }
        }
        if let Some(at) = find(value, "stale-while-revalidate=") {
            match delta_seconds(&value[at + "stale-while-revalidate=".len()..]) {
                None => return self.refuse(NotStored::MalformedCacheControl),
                Some(n) => {
                    self.updating_sec = Some(n);
                    self.error_sec = Some(n);
                }
            }
        }
        if let Some(at) = find(value, "stale-if-error=") {
            match delta_seconds(&value[at + "stale-if-error=".len()..]) {
                None => self.refuse(NotStored::MalformedCacheControl),
                Some(n) => self.error_sec = Some(n),
            }
        }
    }

    fn expires(&mut self, value: &[u8], now: i64) {
        if self.expires_seen {
            return; // a duplicate is ignored
        }
        self.expires_seen = true;
        if self.valid_sec != 0 {
            return;
        }
        let at = std::str::from_utf8(value)
            .ok()
            .and_then(|text| httpdate::parse_http_date(text.trim()).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| clamp(d.as_secs()));
        match at {
            Some(t) if t >= now => self.valid_sec = t,
            _ => self.expired = true,
        }
    }
}

/// Decide whether a response of `status` with `headers` (names in any case, in the order they
/// came) may be stored at `now` (Unix seconds), with `valid` as the per-status fallback.
pub fn storability(
    status: u16,
    headers: &[(&str, &[u8])],
    now: i64,
    valid: &CacheValid,
) -> Storability {
    let mut state = State::default();
    for &(name, value) in headers {
        if name.eq_ignore_ascii_case("x-accel-expires") {
            state.accel_expires(value, now);
        } else if name.eq_ignore_ascii_case("cache-control") {
            state.cache_control(value, now);
        } else if name.eq_ignore_ascii_case("expires") {
            state.expires(value, now);
        } else if name.eq_ignore_ascii_case("set-cookie") {
            state.refuse(NotStored::SetCookie);
        } else if name.eq_ignore_ascii_case("vary") {
            state.vary.push(String::from_utf8_lossy(value).trim().to_owned());
        }
    }
    if let Some(why) = state.refused {
        return Storability::NotStored(why);
    }
    if state.no_cache {
        return Storability::NotStored(NotStored::CacheControlRefuses);
    }
    if state.expired {
        return Storability::NotStored(NotStored::Expired);
    }
    let vary = match state.vary.as_slice() {
        [] => None,
        lines if lines.iter().any(|l| l == "*") => {
            return Storability::NotStored(NotStored::VaryAll);
        }
        lines => Some(lines.join(", ")),
    };
    if vary.as_ref().is_some_and(|v| v.len() > MAX_VARY_LEN) {
        return Storability::NotStored(NotStored::VaryTooLong);
    }
    let valid_until = match state.valid_sec {
        0 => match valid.seconds_for(status) {
            0 => return Storability::NotStored(NotStored::NoValidity),
            seconds => now.saturating_add(clamp(seconds)),
        },
        set => set,
    };
    Storability::Store(Freshness {
        valid_until,
        updating_sec: state.updating_sec,
        error_sec: state.error_sec,
        vary,
    })
}

/// The first case-insensitive occurrence of `needle` in `haystack` (nginx's
/// `ngx_strlcasestrn`: a substring search, not a directive parser).
fn find(haystack: &[u8], needle: &str) -> Option<usize> {
    let needle = needle.as_bytes();
    haystack.windows(needle.len()).position(|w| w.eq_ignore_ascii_case(needle))
}

/// nginx's delta-seconds: digits up to `,`, `;`, a space or the end; anything else is an error;
/// an overflow saturates.
fn delta_seconds(text: &[u8]) -> Option<u64> {
    let mut n: u64 = 0;
    for &b in text {
        match b {
            b',' | b';' | b' ' => break,
            b'0'..=b'9' => n = n.saturating_mul(10).saturating_add(u64::from(b - b'0')),
            _ => return None,
        }
    }
    Some(n)
}

/// nginx's `ngx_atoi`: one or more digits and nothing else.
fn whole_number(text: &[u8]) -> Option<u64> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    text.iter().try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
