//! The response cache's operations against Redis, the same ones the shared-memory store offers
//! (lookup, fill locks, insert, removal), laid out as `ferrocorn_cache::remote` names them.
//!
//! - Every entry expires in Redis after `--cache-inactive` seconds without a lookup (`GETEX …
//!   EX` renews it: Redis does nginx's `inactive=`), or when its own expiry comes first (a
//!   hit-for-miss mark).
//! - A fill lock is `SET <lock> "<host>:<pid>:<token>" NX PX`, released by compare-and-delete,
//!   so a late filler never frees another's lock. A lock held by a dead process of this host
//!   is taken over at once (compare-and-set), as the local store's dead fillers are.
//! - A group's entry names are kept in a set in the group's hash slot, so a key is purged with
//!   all its `Vary` variants by one script.

use ferrocorn_cache::remote::{
    decode_value, encode_value, expiry_secs, response_entry, response_key_of, response_lock,
    response_members, response_prefix_pattern,
};
use ferrocorn_shm::cache_store::{Filling, Found};

use super::conn::{Remote, RemoteError};
use super::locks::{RELEASE, TAKE_OVER, filling_of, new_holder};
use super::scan;

/// Store a value, remember it in its group, release the filler's lock if still its own.
/// KEYS: entry, members, lock; ARGV: value, seconds, holder ("" without a lock).
const INSERT: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('SADD', KEYS[2], KEYS[1])
local left = redis.call('TTL', KEYS[2])
if left < tonumber(ARGV[2]) then redis.call('EXPIRE', KEYS[2], ARGV[2]) end
if ARGV[3] ~= '' and redis.call('GET', KEYS[3]) == ARGV[3] then redis.call('DEL', KEYS[3]) end
return 1
";

/// Remove every entry of a group; the first 4 bytes (the tag) of each. KEYS: members.
const REMOVE_GROUP: &str = r"
local tags = {}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local value = redis.call('GET', name)
  if value then
    tags[#tags + 1] = string.sub(value, 1, 4)
    redis.call('DEL', name)
  end
end
redis.call('DEL', KEYS[1])
return tags
";

/// A fill lock held in Redis.
#[derive(Debug, Clone)]
pub struct RemoteFill {
    lock: Vec<u8>,
    holder: String,
}

/// What taking a fill lock came to.
#[derive(Debug)]
pub enum RemoteAttempt {
    /// This request fills the key.
    Acquired(RemoteFill),
    /// A live request fills it already.
    Busy,
    /// Redis could not say: go ahead without a lock.
    NoLock,
}

/// The response cache's store in Redis, for this worker.
pub struct RedisResponses {
    remote: &'static Remote,
    /// `--cache-inactive`, in seconds.
    inactive: u64,
}

fn eval(script: &str, keys: &[&[u8]]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(keys.len());
    for key in keys {
        cmd.arg(*key);
    }
    cmd
}

impl RedisResponses {
    /// The store over `remote`, keeping unread entries `inactive` seconds.
    pub fn new(remote: &'static Remote, inactive: u64) -> RedisResponses {
        RedisResponses { remote, inactive: inactive.max(1) }
    }

    /// Look `key` (of `group`) up at `now`; a live value's bytes go to `value`.
    pub async fn lookup(
        &self,
        group: &[u8],
        key: &[u8],
        now: i64,
        value: &mut Vec<u8>,
    ) -> Result<Option<Found>, RemoteError> {
        let mut pipe = redis::pipe();
        pipe.cmd("GETEX").arg(response_entry(group, key)).arg("EX").arg(self.inactive);
        pipe.cmd("GET").arg(response_lock(group, key));
        pipe.cmd("EXPIRE").arg(response_members(group)).arg(self.inactive).ignore();
        let (stored, lock): (Option<Vec<u8>>, Option<Vec<u8>>) =
            self.remote.query_pipe("a lookup", &pipe).await?;
        let filling = filling_of(lock.as_deref());
        let Some(stored) = stored else {
            return Ok((filling != Filling::No).then_some(Found {
                tag: 0,
                expires: 0,
                last_access: now,
                filling,
            }));
        };
        let Some((tag, expires, bytes)) = decode_value(&stored) else { return Ok(None) };
        let live = expires >= now;
        if live {
            value.clear();
            value.extend_from_slice(bytes);
        }
        Ok(Some(Found { tag: if live { tag } else { 0 }, expires, last_access: now, filling }))
    }

    /// Take `key`'s fill lock for `lock_secs`.
    pub async fn begin_fill(&self, group: &[u8], key: &[u8], lock_secs: u32) -> RemoteAttempt {
        let lock = response_lock(group, key);
        let holder = new_holder();
        let ms = u64::from(lock_secs.max(1)) * 1000;
        let set = redis::cmd("SET").arg(&lock).arg(&holder).arg("NX").arg("PX").arg(ms).clone();
        let taken: Option<String> = match self.remote.query("a fill lock", &set).await {
            Ok(taken) => taken,
            Err(_) => return RemoteAttempt::NoLock,
        };
        if taken.is_some() {
            return RemoteAttempt::Acquired(RemoteFill { lock, holder });
        }
        let seen: Option<Vec<u8>> =
            match self.remote.query("a fill lock", redis::cmd("GET").arg(&lock)).await {
                Ok(seen) => seen,
                Err(_) => return RemoteAttempt::NoLock,
            };
        let Some(seen) = seen else { return RemoteAttempt::Busy }; // just released: look again
        if filling_of(Some(&seen)) != Filling::Dead {
            return RemoteAttempt::Busy;
        }
        let take = eval(TAKE_OVER, &[&lock]).arg(&seen).arg(&holder).arg(ms).clone();
        match self.remote.query::<i64>("a fill lock", &take).await {
            Ok(1) => RemoteAttempt::Acquired(RemoteFill { lock, holder }),
            Ok(_) => RemoteAttempt::Busy,
            Err(_) => RemoteAttempt::NoLock,
        }
    }

    /// Release a fill lock without storing a value.
    pub async fn end_fill(&self, fill: RemoteFill) {
        let release = eval(RELEASE, &[&fill.lock]).arg(&fill.holder).clone();
        let _ = self.remote.query::<i64>("a lock release", &release).await;
    }

    /// Store `value` under `key` (of `group`) with `tag`, until `expires` at the latest;
    /// release `fill` if given.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert(
        &self,
        group: &[u8],
        key: &[u8],
        tag: u32,
        expires: i64,
        value: &[u8],
        now: i64,
        fill: Option<RemoteFill>,
    ) {
        let Some(secs) = expiry_secs(expires, now, self.inactive) else {
            if let Some(fill) = fill {
                self.end_fill(fill).await;
            }
            return;
        };
        let entry = response_entry(group, key);
        let (lock, holder) = match &fill {
            Some(f) => (f.lock.clone(), f.holder.as_str()),
            None => (response_lock(group, key), ""),
        };
        let insert = eval(INSERT, &[&entry, &response_members(group), &lock])
            .arg(encode_value(tag, expires, value))
            .arg(secs)
            .arg(holder)
            .clone();
        let _ = self.remote.query::<i64>("a store", &insert).await;
    }

    /// Remove every entry of `group`; their tags.
    pub async fn remove_group(&self, group: &[u8]) -> Result<Vec<u32>, RemoteError> {
        let remove = eval(REMOVE_GROUP, &[&response_members(group)]);
        let tags: Vec<Vec<u8>> = self.remote.query("a purge", &remove).await?;
        Ok(tags
            .iter()
            .filter_map(|t| Some(u32::from_le_bytes(t.as_slice().try_into().ok()?)))
            .collect())
    }

    /// Remove every entry whose key starts with `prefix` (on every master); their tags.
    pub async fn remove_prefix(&self, prefix: &[u8]) -> Result<Vec<u32>, RemoteError> {
        let keep = |name: &[u8]| response_key_of(name).is_some_and(|k| k.starts_with(prefix));
        let values =
            scan::delete_matching(self.remote, &response_prefix_pattern(prefix), keep).await?;
        Ok(values.iter().filter_map(|v| decode_value(v).map(|(tag, _, _)| tag)).collect())
    }
}
