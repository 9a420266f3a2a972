//! `--next-upstream`: which failed attempts send a request on to another upstream, and which
//! count against an upstream's `max_fails` — nginx's `proxy_next_upstream` rules. A connect
//! error, a timeout and an invalid response head always count as failures; an `http_*`
//! status counts only when listed (`http_403`/`http_404` never do, as in nginx). A request
//! goes on only for a listed case, and a request that is not idempotent (POST, LOCK, PATCH)
//! only before any of it was sent, unless `non_idempotent` is listed.

use std::fmt;

/// What went wrong with one attempt on an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// Connecting, sending the request or reading the response head failed.
    Error,
    /// Connecting, sending the request or waiting for the response head took too long.
    Timeout,
    /// The response head was malformed.
    InvalidHeader,
    /// The upstream answered with this status.
    Status(u16),
}

impl Failure {
    /// The label used in logs and metrics (`error`, `timeout`, `invalid_header`, `http_502`).
    pub fn label(self) -> String {
        match self {
            Failure::Error => "error".into(),
            Failure::Timeout => "timeout".into(),
            Failure::InvalidHeader => "invalid_header".into(),
            Failure::Status(code) => format!("http_{code}"),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// Statuses `--next-upstream` may list.
const STATUSES: [u16; 7] = [500, 502, 503, 504, 429, 403, 404];

/// The parsed `--next-upstream` setting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NextUpstream {
    error: bool,
    timeout: bool,
    invalid_header: bool,
    statuses: Vec<u16>,
    non_idempotent: bool,
}

/// Why a `--next-upstream` value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextUpstreamError {
    /// The word that was not understood.
    pub word: String,
}

impl fmt::Display for NextUpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown case {:?}; use off or words from error, timeout, invalid_header, \
             http_500, http_502, http_503, http_504, http_429, http_403, http_404, \
             non_idempotent",
            self.word
        )
    }
}

impl std::error::Error for NextUpstreamError {}

impl NextUpstream {
    /// Parse `error timeout http_502 ...` (spaces or commas between words), or `off`.
    pub fn parse(spec: &str) -> Result<NextUpstream, NextUpstreamError> {
        let mut next = NextUpstream::default();
        let words: Vec<&str> = spec.split([' ', ',']).filter(|w| !w.is_empty()).collect();
        if words == ["off"] {
            return Ok(next);
        }
        for word in words {
            match word {
                "error" => next.error = true,
                "timeout" => next.timeout = true,
                "invalid_header" => next.invalid_header = true,
                "non_idempotent" => next.non_idempotent = true,
                _ => {
                    let status = word
                        .strip_prefix("http_")
                        .and_then(|code| code.parse::<u16>().ok())
                        .filter(|code| STATUSES.contains(code))
                        .ok_or_else(|| NextUpstreamError { word: word.to_owned() })?;
                    if !next.statuses.contains(&status) {
                        next.statuses.push(status);
                    }
                }
            }
        }
        Ok(next)
    }

    fn lists(&self, failure: Failure) -> bool {
        match failure {
            Failure::Error => self.error,
            Failure::Timeout => self.timeout,
            Failure::InvalidHeader => self.invalid_header,
            Failure::Status(code) => self.statuses.contains(&code),
        }
    }

    /// Whether `failure` counts against the upstream's `max_fails`.
    pub fn counts(&self, failure: Failure) -> bool {
        match failure {
            Failure::Status(403 | 404) => false,
            Failure::Status(_) => self.lists(failure),
            _ => true,
        }
    }

    /// Whether a request whose attempt ended in `failure` goes on to another upstream (the
    /// caller also checks that nothing went to the client and the body can be sent again).
    /// `request_sent`: some of the request reached the upstream.
    pub fn goes_on(&self, failure: Failure, request_sent: bool, idempotent: bool) -> bool {
        self.lists(failure) && (!request_sent || idempotent || self.non_idempotent)
    }
}

/// Whether a request with this method may be sent twice (nginx: all but POST, LOCK, PATCH).
pub fn idempotent(method: &str) -> bool {
    !["POST", "LOCK", "PATCH"].iter().any(|m| m.eq_ignore_ascii_case(method))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_goes_on_after_errors_and_timeouts() {
        let next = NextUpstream::parse("error timeout").unwrap();
        assert!(next.goes_on(Failure::Error, true, true));
        assert!(next.goes_on(Failure::Timeout, false, false));
        assert!(!next.goes_on(Failure::InvalidHeader, true, true));
        assert!(!next.goes_on(Failure::Status(502), true, true));
    }

    #[test]
    fn a_post_goes_on_only_before_it_was_sent() {
        let next = NextUpstream::parse("error timeout").unwrap();
        assert!(next.goes_on(Failure::Error, false, idempotent("POST")));
        assert!(!next.goes_on(Failure::Error, true, idempotent("POST")));
        assert!(!next.goes_on(Failure::Timeout, true, idempotent("patch")));
        let lenient = NextUpstream::parse("error non_idempotent").unwrap();
        assert!(lenient.goes_on(Failure::Error, true, idempotent("POST")));
        assert!(idempotent("GET") && idempotent("PUT") && idempotent("DELETE"));
    }

    #[test]
    fn statuses_count_only_when_listed_and_never_403_or_404() {
        let next = NextUpstream::parse("error,timeout,http_502,http_404").unwrap();
        assert!(next.counts(Failure::Status(502)));
        assert!(!next.counts(Failure::Status(503)));
        assert!(!next.counts(Failure::Status(404)));
        assert!(next.goes_on(Failure::Status(404), true, true));
        assert!(next.counts(Failure::Error) && next.counts(Failure::InvalidHeader));
    }

    #[test]
    fn off_never_goes_on_but_errors_still_count() {
        let off = NextUpstream::parse("off").unwrap();
        assert!(!off.goes_on(Failure::Error, false, true));
        assert!(off.counts(Failure::Timeout));
    }

    #[test]
    fn unknown_words_are_named() {
        let e = NextUpstream::parse("error http_418").unwrap_err();
        assert!(e.to_string().contains("http_418"), "{e}");
        assert!(NextUpstream::parse("eror").unwrap_err().to_string().contains("eror"));
    }
}
