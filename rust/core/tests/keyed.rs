//! The keyed limiters' map (`admission_core::keyed`): lookups, expiry, eviction, loans.

use admission_core::keyed::{Access, Full, Keyed};
use admission_core::keyed_state::{BucketConfig, BucketKey, PermitConfig, PermitKey, WindowKey};
use admission_core::keyed_table::Slot;

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

/// A key given by its identity, as `update` takes it (tests may choose identities that
/// collide in part, which hashing would make unlikely).
fn take_id(map: &Keyed<PermitKey>, id: [u64; 2], now: u64) -> Result<Access<bool>, Full> {
    map.update(id, now, |state, config, _| {
        state.try_take(config, 1).unwrap()
    })
}

fn held_id(map: &Keyed<PermitKey>, id: [u64; 2]) -> Option<u64> {
    match map.read(id, |state, _| state.map(|s| s.held)) {
        Access::Here(held) => held,
        Access::Lent => panic!("lent"),
    }
}

#[test]
fn identities_sharing_a_shard_and_a_probe_start_are_separate_keys() {
    let map = permits(1000, 1, 4);
    // The same low word (the table's home slot) and the same top bits (the shard): only
    // the rest of the identity tells these keys apart.
    let ids: Vec<[u64; 2]> = (0..40).map(|i| [0xabc, (1 << 62) | i]).collect();
    assert!(ids.iter().all(|&id| map.shard_of(id) == 1));
    for (n, &id) in ids.iter().enumerate() {
        for _ in 0..(n % 2 + 1) {
            assert_eq!(take_id(&map, id, 0), Ok(Access::Here(true)));
        }
    }
    assert_eq!(map.len(), 40);
    for (n, &id) in ids.iter().enumerate() {
        assert_eq!(held_id(&map, id), Some(n as u64 % 2 + 1), "key {n}");
    }
    // The keys holding one permit give it back and expire; removing them from the middle
    // of the probe run leaves the others findable with their permits.
    for &id in ids.iter().step_by(2) {
        assert_eq!(
            map.update_held(id, 1, |state, _, _| state.release(1)),
            Some(Access::Here(Ok(())))
        );
    }
    assert_eq!(map.sweep(10 * S), 20);
    for (n, &id) in ids.iter().enumerate() {
        let want = if n % 2 == 0 { None } else { Some(2) };
        assert_eq!(held_id(&map, id), want, "key {n}");
    }
}

#[test]
fn growth_keeps_held_and_lent_keys() {
    let map = permits(100_000, 1, 1);
    let lent = map.id(b"lent");
    assert_eq!(map.lend(lent, 0), Ok(Some(PermitKey { held: 0 })));
    for i in 0..100 {
        assert_eq!(take(&map, &format!("held{i}"), 0), Ok(Access::Here(true)));
    }
    // Ten thousand more keys, each used and released: the table doubles many times over.
    for i in 0..10_000 {
        let key = format!("k{i}");
        assert_eq!(take(&map, &key, 0), Ok(Access::Here(true)));
        release(&map, &key, 0);
    }
    assert_eq!(map.len(), 10_101);
    for i in 0..100 {
        assert_eq!(held(&map, &format!("held{i}")), Some(1));
    }
    assert_eq!(map.lend(lent, 0), Ok(None), "still lent");
    // Only the released keys expire; the holders and the lent key stay.
    assert_eq!(map.sweep(100 * S), 10_000);
    assert_eq!(map.len(), 101);
    map.give_back(lent, 100 * S, PermitKey { held: 2 });
    assert_eq!(held(&map, "lent"), Some(2));
}

#[test]
fn eviction_in_a_large_shard_never_takes_a_key_that_is_not_at_rest() {
    // A bucket of 2 that refills in 2000 s: a key that took 2 is not at rest for that long.
    let map: Keyed<BucketKey> = Keyed::new(
        BucketConfig::new(1.0, 1000.0, 2).unwrap(),
        1000,
        3600 * S,
        1,
    )
    .unwrap();
    let use_key = |key: String, now: u64, cost: u64| {
        map.update(map.id(key.as_bytes()), now, |state, config, _| {
            state.try_take(config, now, cost).unwrap()
        })
    };
    // The least recently used half is refilling, the other half is full.
    for i in 0..1000u64 {
        let cost = if i < 500 { 2 } else { 0 };
        assert_eq!(
            use_key(format!("old{i}"), i * S, cost),
            Ok(Access::Here(true))
        );
    }
    for i in 0..400u64 {
        assert_eq!(
            use_key(format!("new{i}"), (1000 + i) * S, 0),
            Ok(Access::Here(true))
        );
    }
    assert_eq!(map.len(), 1000);
    assert_eq!(map.counts().evicted, 400);
    let now = 1400 * S;
    // Two tokens: what a fresh key would admit, and a refilling one refuses.
    let refused = |i: u64| use_key(format!("old{i}"), now, 2) == Ok(Access::Here(false));
    assert!(
        (0..500).all(refused),
        "every refilling key is still held (a fresh key would admit)"
    );
}

#[test]
fn every_keyed_state_fits_a_32_byte_slot() {
    // Two entries per cache line, never one across two: the layout the speed depends on.
    assert_eq!(std::mem::size_of::<Slot<BucketKey>>(), 32);
    assert_eq!(std::mem::size_of::<Slot<PermitKey>>(), 32);
    assert_eq!(std::mem::size_of::<Slot<WindowKey>>(), 32);
}
