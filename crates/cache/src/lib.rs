//! The response cache's decisions, apart from any I/O: no clock is read (the time is passed
//! in), no store is touched, no setting is looked up. The worker's dispatch seam asks these
//! functions what to do and carries the answer out against its store.
//!
//! - [`valid`]: `--cache-valid` (nginx's `proxy_cache_valid`): seconds of validity per
//!   response status, for responses that say nothing about their own freshness.
//! - [`storability`]: whether a response may be stored and until when, from its headers in
//!   the order they came, with nginx's precedence (`X-Accel-Expires` > `Cache-Control` >
//!   `Expires` > `--cache-valid`) and its refusals (`no-store`, `no-cache`, `private`, a zero
//!   max-age, `Set-Cookie`, `Vary: *`), plus the stale windows a response grants itself
//!   (`stale-while-revalidate`, `stale-if-error`).
//! - [`key`]: `--cache-key`, the template of nginx variables a response is filed under.
//! - [`conditions`]: `--cache-bypass` / `--cache-no-store`, variables that are true when set.
//! - [`entry`]: a stored response's bytes, and the key of a `Vary` variant.
//! - [`lookup`]: what a request does with what its lookup found (answer, wait, fill, pass).
//! - [`stale`]: what a request does with a stored copy (HIT, refresh, stale while another
//!   request refreshes, stale with a background refresh) and when a stale copy stands in for
//!   a failed refresh (`--cache-use-stale`, `--cache-background-update`).
//! - [`backend`]: `--cache-backend` (`local`, or a Redis server or cluster URL).
//! - [`remote`]: how entries are laid out in Redis (names, value header, lock values).

pub mod backend;
pub mod conditions;
pub mod entry;
pub mod key;
pub mod lookup;
pub mod not_modified;
pub mod remote;
pub mod revalidate;
pub mod stale;
pub mod storability;
pub mod valid;

pub use backend::{BACKEND_FORMS, Backend, BackendError, RedisTarget};
pub use conditions::Conditions;
pub use entry::{
    EntryMeta, EntryView, append_variant, decode_entry, encode_entry, header_is_stored,
};
pub use key::{KeyRequest, KeyTemplate, KeyTemplateError};
pub use lookup::{CacheStatus, Filler, LookupRules, Step, Stored, decide};
pub use not_modified::{Validators, answers_not_modified};
pub use revalidate::{CONDITIONAL_REQUEST_HEADERS, conditional_headers, renewed_freshness};
pub use stale::{OnLookup, RefreshFailure, UseStale, UseStaleError, on_lookup, stale_on_failure};
pub use storability::{Freshness, NotStored, Storability, storability};
pub use valid::{CacheValid, ValidSpecError};
