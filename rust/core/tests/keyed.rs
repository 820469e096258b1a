//! The keyed limiters' map (`admission_core::keyed`): lookups, expiry, eviction, loans.

use admission_core::keyed::{Access, Full, Keyed};
use admission_core::keyed_state::{BucketConfig, BucketKey, PermitConfig, PermitKey};

const S: u64 = admission_core::NANOS_PER_SEC;

fn permits(max_keys: u64, idle_s: u64, shards: usize) -> Keyed<PermitKey> {
    Keyed::new(PermitConfig::new(2).unwrap(), max_keys, idle_s * S, shards).unwrap()
}

fn take(map: &Keyed<PermitKey>, key: &str, now: u64) -> Result<Access<bool>, Full> {
    map.update(map.id(key.as_bytes()), now, |state, config, _| {
        state.try_take(config, 1).unwrap()
    })
}

fn release(map: &Keyed<PermitKey>, key: &str, now: u64) {
    let released = map.update_held(map.id(key.as_bytes()), now, |state, _, _| state.release(1));
    assert_eq!(released, Some(Access::Here(Ok(()))));
}

fn held(map: &Keyed<PermitKey>, key: &str) -> Option<u64> {
    match map.read(map.id(key.as_bytes()), |state, _| state.map(|s| s.held)) {
        Access::Here(held) => held,
        Access::Lent => panic!("lent"),
    }
}

#[test]
fn thousands_of_keys_are_found_again_after_removals() {
    let map: Keyed<BucketKey> =
        Keyed::new(BucketConfig::new(1.0, 1.0, 1).unwrap(), 100_000, S, 4).unwrap();
    let take = |key: u32, now: u64| {
        map.update(map.id(&key.to_le_bytes()), now, |state, config, _| {
            state.try_take(config, now, 1).unwrap()
        })
    };
    for key in 0..20_000 {
        assert_eq!(take(key, 0), Ok(Access::Here(true)));
    }
    assert_eq!(map.len(), 20_000);
    // Every key is known: a second token is refused.
    for key in 0..20_000 {
        assert_eq!(take(key, 0), Ok(Access::Here(false)), "key {key}");
    }
    // Full again after 1 s, idle for 1 s after 2 s: all expire on a sweep.
    assert_eq!(map.sweep(2 * S), 20_000);
    assert!(map.is_empty());
    assert_eq!(map.counts().expired, 20_000);
    for key in 0..20_000 {
        assert_eq!(take(key, 2 * S), Ok(Access::Here(true)));
    }
    assert_eq!(map.len(), 20_000);
}

#[test]
fn the_least_recently_used_key_at_rest_makes_room() {
    let map = permits(2, 1000, 1);
    assert_eq!(take(&map, "a", 1), Ok(Access::Here(true)));
    release(&map, "a", 2);
    assert_eq!(take(&map, "b", 3), Ok(Access::Here(true)));
    release(&map, "b", 4);
    assert_eq!(take(&map, "a", 5), Ok(Access::Here(true)));
    release(&map, "a", 6);
    // "b" is the least recently used: "c" takes its place.
    assert_eq!(take(&map, "c", 7), Ok(Access::Here(true)));
    assert_eq!(held(&map, "b"), None);
    assert_eq!(held(&map, "a"), Some(0));
    assert_eq!(map.counts().evicted, 1);
    assert_eq!(map.len(), 2);
}

#[test]
fn a_key_holding_permits_is_never_evicted() {
    let map = permits(2, 1, 4);
    assert_eq!(take(&map, "a", 0), Ok(Access::Here(true)));
    assert_eq!(take(&map, "b", 0), Ok(Access::Here(true)));
    // Both hold a permit: a third key is refused, whatever the time.
    assert_eq!(take(&map, "c", 100 * S), Err(Full));
    assert_eq!(map.sweep(100 * S), 0);
    assert_eq!(map.counts().refused_full, 1);
    release(&map, "b", 100 * S);
    assert_eq!(take(&map, "c", 100 * S), Ok(Access::Here(true)));
    assert_eq!(held(&map, "a"), Some(1));
    assert_eq!(held(&map, "b"), None);
}

#[test]
fn a_lent_key_is_never_evicted_and_answers_lent() {
    let map = permits(1, 1, 1);
    let a = map.id(b"a");
    assert_eq!(map.lend(a, 0), Ok(Some(PermitKey { held: 0 })));
    assert_eq!(map.lend(a, 0), Ok(None));
    assert_eq!(take(&map, "a", 0), Ok(Access::Lent));
    assert_eq!(take(&map, "b", 100 * S), Err(Full));
    map.give_back(a, 100 * S, PermitKey { held: 1 });
    assert_eq!(held(&map, "a"), Some(1));
    release(&map, "a", 100 * S);
    assert_eq!(take(&map, "b", 200 * S), Ok(Access::Here(true)));
}

#[test]
fn idle_keys_expire_only_once_at_rest() {
    let map: Keyed<BucketKey> =
        Keyed::new(BucketConfig::new(1.0, 10.0, 2).unwrap(), 10, S, 1).unwrap();
    let id = map.id(b"k");
    let taken = map.update(id, 0, |state, config, _| {
        state.try_take(config, 0, 2).unwrap()
    });
    assert_eq!(taken, Ok(Access::Here(true)));
    // Unused for 5 s, but the bucket refills only at 20 s.
    assert_eq!(map.sweep(5 * S), 0);
    assert_eq!(map.sweep(20 * S - 1), 0);
    // Full again at 20 s (and unused for more than 1 s): it goes.
    assert_eq!(map.sweep(20 * S), 1);
}

#[test]
fn a_full_shard_borrows_room_from_another() {
    let map = permits(2, 1000, 2);
    // Find two keys in shard 0 and one in shard 1.
    let shard = |k: &str| map.shard_of(map.id(k.as_bytes()));
    let names: Vec<String> = (0..64).map(|i| format!("k{i}")).collect();
    let zero: Vec<&String> = names.iter().filter(|k| shard(k) == 0).take(2).collect();
    let one = names.iter().find(|k| shard(k) == 1).unwrap();
    assert_eq!(take(&map, zero[0], 0), Ok(Access::Here(true)));
    assert_eq!(take(&map, one, 0), Ok(Access::Here(true)));
    release(&map, one, 0);
    // Shard 0's only key holds a permit; shard 1's key is at rest and goes.
    assert_eq!(take(&map, zero[1], 1), Ok(Access::Here(true)));
    assert_eq!(held(&map, one), None);
    assert_eq!(map.len(), 2);
}
