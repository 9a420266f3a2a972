//! The parser's knobs: Gunicorn's request limits and header policies, as plain values.
//! `ferrocorn-native` fills this from the settings registry; this crate never sees a setting.

/// What to do with a header whose name contains `_` (Gunicorn's `header_map`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeaderMapPolicy {
    /// Silently drop it (Gunicorn's default since 22.0).
    #[default]
    Drop,
    /// Reject the request with 400 (`InvalidHeaderName`).
    Refuse,
    /// Keep it (the pre-22.0 behaviour; collides with the dashed name in the environ).
    Dangerous,
}

/// Limits and policies applied while parsing a request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Max request-line bytes (excluding CRLF); 0 = unlimited. Gunicorn clamps values >= 8190
    /// to 8190; the caller passes the clamped value.
    pub request_line: usize,
    /// Max number of header fields (already clamped to 1..=32768 by the caller).
    pub fields: usize,
    /// Max bytes of one header line including name, continuations and CRLF.
    pub field_size: usize,
    /// Policy for header names containing `_`.
    pub header_map: HeaderMapPolicy,
    /// Upper-cased underscore header names a trusted peer may send (`forwarder_headers`).
    pub forwarder_headers: Vec<String>,
    /// Accept obs-fold continuation lines.
    pub permit_obsolete_folding: bool,
    /// Strip whitespace between a header name and `:`.
    pub strip_header_spaces: bool,
    /// Allow methods that are lowercase, contain `#`, or fall outside 3..=20 chars.
    pub permit_unconventional_http_method: bool,
    /// Allow versions other than HTTP/1.0 and HTTP/1.1.
    pub permit_unconventional_http_version: bool,
    /// Upper-case the method.
    pub casefold_http_method: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_line: 4094,
            fields: 100,
            field_size: 8190,
            header_map: HeaderMapPolicy::Drop,
            forwarder_headers: vec!["SCRIPT_NAME".into(), "PATH_INFO".into()],
            permit_obsolete_folding: false,
            strip_header_spaces: false,
            permit_unconventional_http_method: false,
            permit_unconventional_http_version: false,
            casefold_http_method: false,
        }
    }
}
