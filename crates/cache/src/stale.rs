//! What to do with a stored response when a request for it comes, and whether a stale copy
//! may stand in for a failed refresh: nginx's `proxy_cache_use_stale` and
//! `proxy_cache_background_update` (`ngx_http_file_cache_read` and `ngx_http_upstream_cache`),
//! with the response's own `stale-while-revalidate` / `stale-if-error` windows counting as
//! nginx counts them.
//!
//! - Fresh: a HIT.
//! - Expired, nobody refreshing: this request refreshes it (EXPIRED) — unless stale may be
//!   served while updating (`use_stale updating`, or inside the response's
//!   `stale-while-revalidate` window) and `background_update` is on: then the stale copy is
//!   answered now (STALE) and the refresh runs in the background.
//! - Expired, another request already refreshing: the stale copy is answered (UPDATING) when
//!   stale may be served while updating; otherwise this request goes to the app too.
//! - A refresh that failed (the app raised or timed out, or answered a status listed in
//!   `use_stale`): the stale copy is answered (STALE) if `use_stale` lists that failure or the
//!   failure is inside the response's `stale-if-error` window. nginx applies that window to
//!   errors and timeouts only; as RFC 5861 defines it (and Varnish and Pingora apply it), it
//!   covers a 500, 502, 503 or 504 answer too, and so it does here.

use std::fmt;

use crate::storability::Freshness;

/// `--cache-use-stale`: when a stale copy may be answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UseStale {
    /// `updating`: while another request refreshes the entry.
    pub updating: bool,
    /// `error`: when the app failed (raised, or its worker died).
    pub error: bool,
    /// `timeout`: when the app did not answer in time.
    pub timeout: bool,
    /// `http_500`, `http_502`, ...: when the app answered one of these statuses.
    pub statuses: Vec<u16>,
}

/// Why a `--cache-use-stale` value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UseStaleError {
    /// The word that is not understood.
    pub word: String,
}

impl fmt::Display for UseStaleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a stale condition; use off or a comma-separated list of updating, \
             error, timeout, http_500, http_502, http_503, http_504, http_403, http_404, http_429",
            self.word
        )
    }
}

impl std::error::Error for UseStaleError {}

impl UseStale {
    /// Parse `updating,error,timeout,http_500,...` or `off` (whitespace ignored).
    pub fn parse(spec: &str) -> Result<UseStale, UseStaleError> {
        let mut out = UseStale::default();
        for word in spec.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word.to_ascii_lowercase().as_str() {
                "off" => {}
                "updating" => out.updating = true,
                "error" => out.error = true,
                "timeout" => out.timeout = true,
                w => {
                    let status = w
                        .strip_prefix("http_")
                        .and_then(|s| s.parse::<u16>().ok())
                        .filter(|s| [500, 502, 503, 504, 403, 404, 429].contains(s))
                        .ok_or_else(|| UseStaleError { word: word.to_owned() })?;
                    out.statuses.push(status);
                }
            }
        }
        Ok(out)
    }
}

/// What a request does with the stored copy of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnLookup {
    /// Nothing stored: go to the app (MISS).
    Miss,
    /// Fresh: answer it (HIT).
    Hit,
    /// Expired: go to the app and store its answer (EXPIRED); keep the stale copy for
    /// [`stale_on_failure`].
    Refresh,
    /// Expired: answer the stale copy now and refresh in the background (STALE).
    StaleAndRefreshInBackground,
    /// Expired and another request is refreshing it: answer the stale copy (UPDATING).
    StaleWhileUpdating,
    /// Expired, another request is refreshing it, and stale may not be served: go to the app
    /// as well (EXPIRED).
    FetchWhileUpdating,
}

/// Decide for a request at `now` (Unix seconds): `stored` is the copy held (None: nothing),
/// `refreshing` whether another request is refreshing it already.
pub fn on_lookup(
    stored: Option<&Freshness>,
    now: i64,
    refreshing: bool,
    use_stale: &UseStale,
    background_update: bool,
) -> OnLookup {
    let Some(stored) = stored else { return OnLookup::Miss };
    // nginx: expired once `valid_sec < now`, so the last second is still fresh
    if now <= stored.valid_until {
        return OnLookup::Hit;
    }
    let stale_while_updating =
        use_stale.updating || within(stored.valid_until, stored.updating_sec, now);
    match (refreshing, stale_while_updating) {
        (true, true) => OnLookup::StaleWhileUpdating,
        (true, false) => OnLookup::FetchWhileUpdating,
        (false, true) if background_update => OnLookup::StaleAndRefreshInBackground,
        (false, _) => OnLookup::Refresh,
    }
}

/// How a refresh failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshFailure {
    /// The app raised, or its worker died.
    Error,
    /// The app did not answer in time.
    Timeout,
    /// The app answered this status.
    Status(u16),
}

/// Whether the stale copy `stored` may be answered at `now` instead of the failed refresh.
pub fn stale_on_failure(
    stored: &Freshness,
    now: i64,
    failure: RefreshFailure,
    use_stale: &UseStale,
) -> bool {
    let listed = match failure {
        RefreshFailure::Error => use_stale.error,
        RefreshFailure::Timeout => use_stale.timeout,
        RefreshFailure::Status(status) => use_stale.statuses.contains(&status),
    };
    // The response's stale-if-error window: errors and timeouts (nginx), and the 5xx answers
    // RFC 5861 names (beyond nginx, which weighs a status only against `use_stale`).
    let in_window = within(stored.valid_until, stored.error_sec, now)
        && match failure {
            RefreshFailure::Status(status) => matches!(status, 500 | 502 | 503 | 504),
            _ => true,
        };
    listed || in_window
}

/// Whether `now` is inside `window` seconds after `valid_until`.
fn within(valid_until: i64, window: Option<u64>, now: i64) -> bool {
    window.is_some_and(|w| valid_until.saturating_add(i64::try_from(w).unwrap_or(i64::MAX)) >= now)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn stored(valid_until: i64, updating: Option<u64>, error: Option<u64>) -> Freshness {
        Freshness { valid_until, updating_sec: updating, error_sec: error, vary: None }
    }

    #[test]
    fn use_stale_parses_nginx_words_and_names_a_bad_one() {
        let all = UseStale::parse("updating, error,timeout,http_500,http_503").unwrap();
        assert!(all.updating && all.error && all.timeout);
        assert_eq!(all.statuses, [500, 503]);
        assert_eq!(UseStale::parse("off").unwrap(), UseStale::default());
        for bad in ["stale", "http_501", "http_x"] {
            let err = UseStale::parse(bad).unwrap_err();
            assert_eq!(err.word, bad);
            assert!(err.to_string().contains("updating, error, timeout"), "{err}");
        }
    }

    /// What the case shows, the stored copy, whether another request refreshes it,
    /// `--cache-use-stale`, `--cache-background-update`, and the decision.
    type Row<'a> = (&'a str, Option<&'a Freshness>, bool, &'a UseStale, bool, OnLookup);

    #[test]
    fn lookups_as_nginx_decides_them() {
        use OnLookup::*;
        let none = UseStale::default();
        let updating = UseStale { updating: true, ..UseStale::default() };
        let fresh = stored(NOW + 10, None, None);
        let expired = stored(NOW - 10, None, None);
        let in_swr = stored(NOW - 10, Some(30), None);
        let past_swr = stored(NOW - 100, Some(30), None);
        let valid_until_now = stored(NOW, None, None);
        let second_later = stored(NOW - 1, None, None);
        #[rustfmt::skip] // one case per line
        let rows: Vec<Row> = vec![
            ("nothing stored", None, false, &none, false, Miss),
            ("fresh", Some(&fresh), false, &none, false, Hit),
            ("fresh while another refreshes", Some(&fresh), true, &none, false, Hit),
            ("fresh until this very second", Some(&valid_until_now), false, &none, false, Hit),
            ("a second later", Some(&second_later), false, &none, false, Refresh),
            ("expired, nobody refreshing", Some(&expired), false, &updating, false, Refresh),
            ("expired, background update", Some(&expired), false, &updating, true, StaleAndRefreshInBackground),
            ("background update needs stale-while-updating", Some(&expired), false, &none, true, Refresh),
            ("stale-while-revalidate allows the background update", Some(&in_swr), false, &none, true, StaleAndRefreshInBackground),
            ("past stale-while-revalidate", Some(&past_swr), false, &none, true, Refresh),
            ("another refreshing, use_stale updating", Some(&expired), true, &updating, false, StaleWhileUpdating),
            ("another refreshing, in stale-while-revalidate", Some(&in_swr), true, &none, false, StaleWhileUpdating),
            ("another refreshing, stale not allowed", Some(&expired), true, &none, false, FetchWhileUpdating),
            ("another refreshing, past stale-while-revalidate", Some(&past_swr), true, &none, false, FetchWhileUpdating),
        ];
        for (name, stored, refreshing, use_stale, background, expected) in rows {
            assert_eq!(
                on_lookup(stored, NOW, refreshing, use_stale, background),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn a_failed_refresh_falls_back_to_stale_when_allowed() {
        use RefreshFailure::*;
        let listed = UseStale::parse("error,timeout,http_502,http_404").unwrap();
        let none = UseStale::default();
        let old = stored(NOW - 1000, None, None);
        assert!(stale_on_failure(&old, NOW, Error, &listed));
        assert!(stale_on_failure(&old, NOW, Timeout, &listed));
        assert!(stale_on_failure(&old, NOW, Status(502), &listed));
        assert!(stale_on_failure(&old, NOW, Status(404), &listed));
        assert!(!stale_on_failure(&old, NOW, Status(500), &listed));
        assert!(!stale_on_failure(&old, NOW, Error, &none));
        // the response's own stale-if-error window
        let sie = stored(NOW - 10, None, Some(60));
        assert!(stale_on_failure(&sie, NOW, Error, &none));
        assert!(stale_on_failure(&sie, NOW, Status(503), &none));
        assert!(!stale_on_failure(&sie, NOW, Status(404), &none));
        assert!(!stale_on_failure(&sie, NOW + 100, Error, &none));
    }
}
