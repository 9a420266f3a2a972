//! What a key template of nginx variables reads of a request (`ferrocorn_cache::KeyRequest`:
//! the response cache's key and conditions, the balancer's `hash KEY`), with the two values
//! that cost something per request — the percent-decoded path and the client's address as
//! text — made only when the template reads them.

use std::net::IpAddr;

use ferrocorn_cache::KeyRequest;
use ferrocorn_http::{RequestHead, percent_decode};

/// The per-request values a [`KeyRequest`] borrows.
pub(super) struct KeyInputs {
    decoded_path: Vec<u8>,
    remote_addr: String,
}

impl KeyInputs {
    /// Make what is read: the decoded path when `reads_path`, the client's address when
    /// `reads_remote` (empty for a Unix-socket client).
    pub(super) fn new(
        head: &RequestHead,
        reads_path: bool,
        reads_remote: bool,
        client: Option<IpAddr>,
    ) -> KeyInputs {
        KeyInputs {
            decoded_path: if reads_path { percent_decode(&head.path) } else { Vec::new() },
            remote_addr: match (reads_remote, client) {
                (true, Some(ip)) => ip.to_string(),
                _ => String::new(),
            },
        }
    }

    /// The request as key templates see it.
    pub(super) fn request<'a>(&'a self, head: &'a RequestHead, https: bool) -> KeyRequest<'a> {
        KeyRequest {
            scheme: if https { "https" } else { "http" },
            method: &head.method,
            target: &head.target,
            decoded_path: &self.decoded_path,
            query: &head.query,
            headers: &head.headers,
            remote_addr: self.remote_addr.as_bytes(),
        }
    }
}
