//! The store over real shared memory: values, expiry, fill locks (with their holders killed),
//! eviction with second chances, removal, and readers racing a writer.

use super::*;

const NOW: i64 = 1_700_000_000;

fn get(store: &CacheStore, key: &[u8], now: i64) -> Option<(u32, Vec<u8>)> {
    let mut value = Vec::new();
    let found = store.lookup(key, now, &mut value)?;
    (found.tag != 0).then_some((found.tag, value))
}

fn put(store: &CacheStore, key: &[u8], value: &[u8]) {
    store
        .insert(NewEntry { key, group: key_hash(key), tag: 1, expires: i64::MAX, value }, NOW, None)
        .unwrap();
}

/// Run `child` in a forked process that then exits at once (without unwinding or cleanup).
fn in_child(child: impl FnOnce()) {
    // SAFETY: the test child only touches the shared mapping and exits with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        child();
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked.
    unsafe { libc::waitpid(pid, &mut status, 0) };
}

#[test]
fn a_value_is_found_by_its_key_only() {
    let store = CacheStore::new(1 << 16, NOW).unwrap();
    put(&store, b"GET http://a/x", b"hello");
    assert_eq!(get(&store, b"GET http://a/x", NOW), Some((1, b"hello".to_vec())));
    assert_eq!(get(&store, b"GET http://a/y", NOW), None);
    put(&store, b"GET http://a/x", b"replaced");
    assert_eq!(get(&store, b"GET http://a/x", NOW).unwrap().1, b"replaced");
    assert_eq!(store.stats().entries, 1);
}

#[test]
fn a_value_past_its_expiry_is_gone() {
    let store = CacheStore::new(1 << 16, NOW).unwrap();
    store
        .insert(NewEntry { key: b"k", group: 0, tag: 3, expires: NOW + 10, value: b"v" }, NOW, None)
        .unwrap();
    assert_eq!(get(&store, b"k", NOW + 10).unwrap().0, 3);
    assert_eq!(get(&store, b"k", NOW + 11), None);
}

#[test]
fn the_last_access_is_the_lookup_before() {
    let store = CacheStore::new(1 << 16, NOW).unwrap();
    put(&store, b"k", b"v");
    let mut value = Vec::new();
    assert_eq!(store.lookup(b"k", NOW + 5, &mut value).unwrap().last_access, NOW);
    assert_eq!(store.lookup(b"k", NOW + 9, &mut value).unwrap().last_access, NOW + 5);
}

#[test]
fn a_fill_lock_makes_others_wait_until_released_or_stored() {
    let store = CacheStore::new(1 << 16, NOW).unwrap();
    let FillAttempt::Acquired(token) = store.begin_fill(b"k", 7, NOW, 5) else { panic!() };
    assert_eq!(store.begin_fill(b"k", 7, NOW, 5), FillAttempt::Busy);
    let mut value = Vec::new();
    let found = store.lookup(b"k", NOW, &mut value).unwrap();
    assert_eq!((found.tag, found.filling), (0, Filling::Alive));
    store.end_fill(token);
    assert!(store.lookup(b"k", NOW, &mut value).is_none_or(|f| f.filling == Filling::No));
    let FillAttempt::Acquired(token) = store.begin_fill(b"k", 7, NOW, 5) else { panic!() };
    store
        .insert(
            NewEntry { key: b"k", group: 7, tag: 2, expires: i64::MAX, value: b"filled" },
            NOW,
            Some(token),
        )
        .unwrap();
    let found = store.lookup(b"k", NOW, &mut value).unwrap();
    assert_eq!((found.tag, found.filling, value.as_slice()), (2, Filling::No, &b"filled"[..]));
}

#[test]
fn a_stale_value_stays_readable_while_it_is_refilled() {
    let store = CacheStore::new(1 << 16, NOW).unwrap();
    put(&store, b"k", b"old");
    let FillAttempt::Acquired(_) = store.begin_fill(b"k", 0, NOW, 5) else { panic!() };
    let mut value = Vec::new();
    let found = store.lookup(b"k", NOW, &mut value).unwrap();
    assert_eq!((found.tag, found.filling, value.as_slice()), (1, Filling::Alive, &b"old"[..]));
}

#[test]
fn a_fill_lock_of_a_killed_process_is_dead_and_taken_over() {
    let store = CacheStore::new(1 << 16, NOW).unwrap();
    in_child(|| {
        assert!(matches!(store.begin_fill(b"k", 0, NOW, 60), FillAttempt::Acquired(_)));
    });
    let mut value = Vec::new();
    assert_eq!(store.lookup(b"k", NOW, &mut value).unwrap().filling, Filling::Dead);
    assert!(matches!(store.begin_fill(b"k", 0, NOW, 60), FillAttempt::Acquired(_)));
}

#[test]
fn a_writer_killed_holding_the_lock_leaves_a_usable_store() {
    let store = CacheStore::new(1 << 16, NOW).unwrap();
    put(&store, b"before", b"1");
    in_child(|| {
        // Die inside a slot change too: the next writer must free that slot.
        let slot = store.slot(store.set_of(key_hash(b"before")).start);
        let _ = slot.begin_write();
        store.lock_forever();
    });
    put(&store, b"after", b"2");
    assert_eq!(get(&store, b"after", NOW).unwrap().1, b"2");
    assert!(store.stats().repairs <= 1);
}

#[test]
fn a_value_stored_in_one_process_is_read_in_another() {
    let store = CacheStore::new(1 << 16, NOW).unwrap();
    in_child(|| put(&store, b"from-child", b"shared"));
    assert_eq!(get(&store, b"from-child", NOW).unwrap().1, b"shared");
}

#[test]
fn the_ring_never_holds_more_than_its_size_and_evicts_the_oldest() {
    let store = CacheStore::new(64 * 1024, NOW).unwrap();
    let value = vec![7u8; 1000];
    for i in 0..200 {
        put(&store, format!("key-{i}").as_bytes(), &value);
        assert!(store.stats().bytes <= store.stats().capacity);
    }
    assert!(get(&store, b"key-0", NOW).is_none());
    assert_eq!(get(&store, b"key-199", NOW).unwrap().1, value);
    let stats = store.stats();
    assert!(stats.evictions >= 130, "{stats:?}");
    assert!(stats.entries <= 64, "{stats:?}");
}

#[test]
fn a_value_looked_up_gets_a_second_chance_over_one_never_read() {
    let store = CacheStore::new(64 * 1024, NOW).unwrap();
    let value = vec![1u8; 1000];
    put(&store, b"hot", &value);
    put(&store, b"cold", &value);
    for i in 0..300 {
        assert!(get(&store, b"hot", NOW).is_some(), "hot evicted at {i}");
        put(&store, format!("filler-{i}").as_bytes(), &value);
    }
    assert!(get(&store, b"cold", NOW).is_none());
}

#[test]
fn too_large_a_value_is_refused_and_releases_its_lock() {
    let store = CacheStore::new(64 * 1024, NOW).unwrap();
    let FillAttempt::Acquired(token) = store.begin_fill(b"big", 0, NOW, 5) else { panic!() };
    let big = vec![0u8; 40 * 1024];
    assert_eq!(
        store.insert(
            NewEntry { key: b"big", group: 0, tag: 1, expires: i64::MAX, value: &big },
            NOW,
            Some(token)
        ),
        Err(InsertError::TooLarge)
    );
    assert!(matches!(store.begin_fill(b"big", 0, NOW, 5), FillAttempt::Acquired(_)));
}

#[test]
fn removal_by_key_group_prefix_and_all() {
    let store = CacheStore::new(1 << 16, NOW).unwrap();
    let group = key_hash(b"/page");
    for (key, g) in [(&b"/page"[..], group), (b"/page|en", group), (b"/page|fr", group)] {
        store
            .insert(NewEntry { key, group: g, tag: 1, expires: i64::MAX, value: b"v" }, NOW, None)
            .unwrap();
    }
    put(&store, b"/pages/1", b"v");
    put(&store, b"/pages/2", b"v");
    put(&store, b"/other", b"v");
    assert_eq!(store.remove(b"/nothing"), []);
    assert_eq!(store.remove_group(group), [1, 1, 1]);
    assert_eq!(store.remove_prefix(b"/pages/").len(), 2);
    assert_eq!(get(&store, b"/other", NOW).unwrap().1, b"v");
    assert_eq!(store.remove(b"/other"), [1]);
    store
        .insert(
            NewEntry { key: b"/x", group: 0, tag: 5, expires: i64::MAX, value: b"v" },
            NOW,
            None,
        )
        .unwrap();
    assert_eq!(store.clear(), [5]);
    assert_eq!(store.stats().entries, 0);
}

#[test]
fn readers_racing_a_writer_see_whole_values_only() {
    let store = CacheStore::new(32 * 1024, NOW).unwrap();
    let keys: Vec<Vec<u8>> = (0..40).map(|i| format!("key-{i}").into_bytes()).collect();
    let done = std::sync::atomic::AtomicBool::new(false);
    let readers_that_saw_values = AtomicU32::new(0);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                let mut value = Vec::new();
                let mut seen = 0u64;
                while !done.load(Ordering::Relaxed) {
                    for key in &keys {
                        if let Some(f) = store.lookup(key, NOW, &mut value)
                            && f.tag != 0
                        {
                            // every value is its key repeated, then its length
                            let (body, len) = value.split_at(value.len() - 4);
                            assert_eq!(
                                u32::from_le_bytes(len.try_into().unwrap()) as usize,
                                body.len()
                            );
                            assert!(body.chunks(key.len()).all(|c| key.starts_with(c)));
                            seen += 1;
                            if seen == 1 {
                                readers_that_saw_values.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
                assert!(seen > 0);
            });
        }
        // At least 3000 writes, and on until both readers ran (a busy machine may start them late).
        for round in 0..1_000_000 {
            if round >= 3000 && readers_that_saw_values.load(Ordering::Relaxed) == 2 {
                break;
            }
            let key = &keys[round % keys.len()];
            let mut value: Vec<u8> = key.repeat(1 + round % 50);
            value.extend_from_slice(&(value.len() as u32).to_le_bytes());
            put(&store, key, &value);
        }
        done.store(true, Ordering::Relaxed);
    });
}

fn counter(store: &CacheStore, key: &[u8], now: i64) -> Result<i64, InsertError> {
    store.update(key, now, |current| {
        let next =
            current.map_or(0, |c| std::str::from_utf8(c.value).unwrap().parse().unwrap()) + 1;
        let value = next.to_string().into_bytes();
        (Update::Put { group: 7, tag: 5, expires: i64::MAX, value }, next)
    })
}

#[test]
fn update_sees_the_live_value_and_replaces_it() {
    let store = CacheStore::new(1 << 16, NOW).unwrap();
    assert_eq!(counter(&store, b"n", NOW), Ok(1));
    assert_eq!(counter(&store, b"n", NOW), Ok(2));
    assert_eq!(get(&store, b"n", NOW), Some((5, b"2".to_vec())));
    let kept = store.update(b"n", NOW, |c| (Update::Keep, c.map(|c| (c.tag, c.value.to_vec()))));
    assert_eq!(kept, Ok(Some((5, b"2".to_vec()))));
    let removed = store.update(b"n", NOW, |c| (Update::Remove, c.is_some()));
    assert_eq!(removed, Ok(true));
    assert_eq!(get(&store, b"n", NOW), None);
    assert_eq!(store.update(b"n", NOW, |c| (Update::Keep, c.is_some())), Ok(false));
}

#[test]
fn update_does_not_see_an_expired_value() {
    let store = CacheStore::new(1 << 16, NOW).unwrap();
    store
        .insert(NewEntry { key: b"k", group: 0, tag: 3, expires: NOW + 1, value: b"9" }, NOW, None)
        .unwrap();
    assert_eq!(store.update(b"k", NOW + 1, |c| (Update::Keep, c.is_some())), Ok(true));
    assert_eq!(store.update(b"k", NOW + 2, |c| (Update::Keep, c.is_some())), Ok(false));
}

#[test]
fn updates_from_many_processes_lose_no_increment() {
    let store = CacheStore::new(1 << 16, NOW).unwrap();
    let children: Vec<libc::pid_t> = (0..4)
        .map(|_| {
            // SAFETY: the child only touches the shared mapping and exits with _exit.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0);
            if pid == 0 {
                for _ in 0..500 {
                    counter(&store, b"hits", NOW).unwrap();
                }
                // SAFETY: ends the child without running the parent's destructors.
                unsafe { libc::_exit(0) };
            }
            pid
        })
        .collect();
    for pid in children {
        let mut status = 0;
        // SAFETY: waits for a child forked above.
        unsafe { libc::waitpid(pid, &mut status, 0) };
    }
    assert_eq!(get(&store, b"hits", NOW), Some((5, b"2000".to_vec())));
}

#[test]
fn remove_matching_picks_by_tag_and_group() {
    let store = CacheStore::new(1 << 16, NOW).unwrap();
    for (key, group, tag) in [(&b"a"[..], 1, 1), (b"b", 1, 2), (b"c", 9, 1)] {
        let entry = NewEntry { key, group, tag, expires: i64::MAX, value: b"v" };
        store.insert(entry, NOW, None).unwrap();
    }
    let mut removed = store.remove_matching(|_, group| group != 9);
    removed.sort_unstable();
    assert_eq!(removed, vec![1, 2]);
    assert_eq!(get(&store, b"c", NOW), Some((1, b"v".to_vec())));
    assert_eq!(store.stats().entries, 1);
}
