//! How cached entries are laid out in a remote key-value store (Redis), shared by every
//! instance that points at it, so it must not depend on the build: key names, the value
//! header, fill-lock values and the app cache's value encoding. Pure byte functions.
//!
//! - Response cache: a key's entry is `fc:r:{G}:<key bytes>`, its fill lock `fc:l:{G}:<key>`,
//!   and the set of its group's entry names `fc:g:{G}`, where `G` is the hex FNV-1a hash of
//!   the group's name (the key before any `Vary` variant): a key, its variants, their locks
//!   and their set share one Redis Cluster hash slot, so a group is removed atomically.
//! - A value is a 12-byte header (tag `u32`, expiry `i64`, little-endian) and the bytes.
//! - App cache: `fc:a:<key>`, its lock `fc:al:<key>`; an integer is plain decimal text (so
//!   Redis's `INCRBY` works on it), anything else is [`PICKLED`] then the pickle.

/// What every response-cache entry name starts with.
pub const RESPONSE_PREFIX: &[u8] = b"fc:r:";
/// What every app-cache value name starts with.
pub const APP_PREFIX: &[u8] = b"fc:a:";
/// The first byte of a pickled app-cache value: never the start of a decimal integer.
pub const PICKLED: u8 = b'p';
/// Bytes of a response-cache value's header.
pub const VALUE_HEADER: usize = 12;

/// The stable 64-bit FNV-1a hash of `bytes` (the same in every build and on every host).
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

fn tagged(kind: &[u8], group: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut name = Vec::with_capacity(kind.len() + 20 + rest.len());
    name.extend_from_slice(kind);
    name.push(b'{');
    name.extend_from_slice(format!("{:016x}", stable_hash(group)).as_bytes());
    name.push(b'}');
    if !rest.is_empty() {
        name.push(b':');
        name.extend_from_slice(rest);
    }
    name
}

/// The entry name of `key`, in the group named `group` (the key without its variant).
pub fn response_entry(group: &[u8], key: &[u8]) -> Vec<u8> {
    tagged(RESPONSE_PREFIX, group, key)
}

/// The fill-lock name of `key` in `group`.
pub fn response_lock(group: &[u8], key: &[u8]) -> Vec<u8> {
    tagged(b"fc:l:", group, key)
}

/// The name of the set of `group`'s entry names.
pub fn response_members(group: &[u8]) -> Vec<u8> {
    tagged(b"fc:g:", group, b"")
}

/// The cache key inside a response-cache entry name (None: not one).
pub fn response_key_of(name: &[u8]) -> Option<&[u8]> {
    let rest = name.strip_prefix(RESPONSE_PREFIX)?.strip_prefix(b"{")?;
    let close = rest.iter().position(|&b| b == b'}')?;
    rest[close + 1..].strip_prefix(b":")
}

/// A `SCAN … MATCH` pattern for the response-cache entries whose key starts with `prefix`
/// (a superset: check each name with [`response_key_of`]).
pub fn response_prefix_pattern(prefix: &[u8]) -> Vec<u8> {
    let mut pattern = b"fc:r:{*}:".to_vec();
    glob_escape(prefix, &mut pattern);
    pattern.push(b'*');
    pattern
}

/// Append `bytes` to a Redis glob pattern, matching them literally.
pub fn glob_escape(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
}

/// The app-cache value name of `key`.
pub fn app_entry(key: &[u8]) -> Vec<u8> {
    [APP_PREFIX, key].concat()
}

/// The app-cache fill-lock name of `key`.
pub fn app_lock(key: &[u8]) -> Vec<u8> {
    [b"fc:al:".as_slice(), key].concat()
}

/// A response-cache value: the header, then `bytes`.
pub fn encode_value(tag: u32, expires: i64, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(VALUE_HEADER + bytes.len());
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&expires.to_le_bytes());
    out.extend_from_slice(bytes);
    out
}

/// The tag, expiry and bytes of a response-cache value (None: too short).
pub fn decode_value(value: &[u8]) -> Option<(u32, i64, &[u8])> {
    let (header, bytes) = value.split_at_checked(VALUE_HEADER)?;
    let tag = u32::from_le_bytes(header[..4].try_into().ok()?);
    let expires = i64::from_le_bytes(header[4..].try_into().ok()?);
    Some((tag, expires, bytes))
}

/// Seconds a value expiring at `expires` (Unix seconds) is kept from `now`: until then, and
/// no longer than `inactive` without a read (each read renews it). None: already expired.
pub fn expiry_secs(expires: i64, now: i64, inactive: u64) -> Option<u64> {
    let left = expires.saturating_sub(now);
    if left < 0 {
        return None;
    }
    Some((left as u64).clamp(1, inactive.max(1)))
}

/// A fill lock's value: who holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    /// Its host name.
    pub host: String,
    /// Its process.
    pub pid: u32,
    /// The holder's own number for this fill.
    pub token: u64,
}

impl LockHolder {
    /// The lock's value.
    pub fn encode(&self) -> String {
        format!("{}:{}:{}", self.host, self.pid, self.token)
    }

    /// Read a lock's value (None: not one of ours).
    pub fn decode(value: &[u8]) -> Option<LockHolder> {
        let text = std::str::from_utf8(value).ok()?;
        let mut parts = text.rsplitn(3, ':');
        let token = parts.next()?.parse().ok()?;
        let pid = parts.next()?.parse().ok()?;
        let host = parts.next()?.to_owned();
        Some(LockHolder { host, pid, token })
    }
}

/// An app-cache value as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppValue<'a> {
    /// Pickled bytes.
    Pickled(&'a [u8]),
    /// An integer.
    Integer(i64),
}

/// The stored form of an app-cache value.
pub fn encode_app_value(value: &AppValue<'_>) -> Vec<u8> {
    match value {
        AppValue::Pickled(bytes) => [&[PICKLED][..], bytes].concat(),
        AppValue::Integer(n) => n.to_string().into_bytes(),
    }
}

/// Read a stored app-cache value (None: neither form).
pub fn decode_app_value(stored: &[u8]) -> Option<AppValue<'_>> {
    match stored.split_first() {
        Some((&PICKLED, rest)) => Some(AppValue::Pickled(rest)),
        _ => std::str::from_utf8(stored).ok()?.parse().ok().map(AppValue::Integer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_and_its_variants_share_a_hash_tag() {
        let entry = response_entry(b"http/a", b"http/a");
        let variant = response_entry(b"http/a", b"http/a\0accept-language=fr");
        let hash = format!("{:016x}", stable_hash(b"http/a"));
        assert_eq!(entry, format!("fc:r:{{{hash}}}:http/a").into_bytes());
        assert!(variant.starts_with(&entry[..24]));
        assert_eq!(response_lock(b"http/a", b"k"), format!("fc:l:{{{hash}}}:k").into_bytes());
        assert_eq!(response_members(b"http/a"), format!("fc:g:{{{hash}}}").into_bytes());
        assert_eq!(response_key_of(&variant), Some(&b"http/a\0accept-language=fr"[..]));
        assert_eq!(response_key_of(b"fc:a:x"), None);
    }

    #[test]
    fn the_hash_is_fnv1a() {
        assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn a_prefix_pattern_matches_literally() {
        assert_eq!(response_prefix_pattern(b"http/a*[b]"), b"fc:r:{*}:http/a\\*\\[b\\]*".to_vec());
    }

    #[test]
    fn a_value_round_trips() {
        let v = encode_value(3, -5, b"body");
        assert_eq!(v.len(), VALUE_HEADER + 4);
        assert_eq!(decode_value(&v), Some((3, -5, &b"body"[..])));
        assert_eq!(decode_value(&v[..11]), None);
        assert_eq!(decode_value(&encode_value(1, i64::MAX, b"")), Some((1, i64::MAX, &b""[..])));
    }

    #[test]
    fn expiry_is_capped_by_inactivity() {
        assert_eq!(expiry_secs(i64::MAX, 100, 600), Some(600));
        assert_eq!(expiry_secs(130, 100, 600), Some(30));
        assert_eq!(expiry_secs(100, 100, 600), Some(1));
        assert_eq!(expiry_secs(99, 100, 600), None);
        assert_eq!(expiry_secs(i64::MAX, 100, 0), Some(1));
    }

    #[test]
    fn a_lock_value_round_trips() {
        let holder = LockHolder { host: "web-1".into(), pid: 42, token: 7 };
        assert_eq!(holder.encode(), "web-1:42:7");
        assert_eq!(LockHolder::decode(b"web-1:42:7"), Some(holder));
        assert_eq!(LockHolder::decode(b"a:b:c"), None);
        assert_eq!(LockHolder::decode(b"h:o:s:t:1:2").unwrap().host, "h:o:s:t");
    }

    #[test]
    fn app_values_keep_integers_as_decimal() {
        assert_eq!(encode_app_value(&AppValue::Integer(-12)), b"-12");
        let pickled = encode_app_value(&AppValue::Pickled(b"\x80\x05K\x01."));
        assert_eq!(pickled[0], PICKLED);
        assert_eq!(decode_app_value(&pickled), Some(AppValue::Pickled(b"\x80\x05K\x01.")));
        assert_eq!(decode_app_value(b"42"), Some(AppValue::Integer(42)));
        assert_eq!(decode_app_value(b"x"), None);
        assert!(!PICKLED.is_ascii_digit() && PICKLED != b'-' && PICKLED != b'+');
    }
}
