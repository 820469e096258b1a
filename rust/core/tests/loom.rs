//! Loom models of the lock-free core (run with `make loom`).
//!
//! Under `--cfg loom` the core's atomics and mutex are loom's (see `src/sync.rs`), so each model
//! below is run under every interleaving of its threads (exhaustively: no preemption bound is
//! needed, the whole file checks in seconds; `LOOM_MAX_PREEMPTIONS` would bound it). The models
//! are deliberately tiny, two or three threads with one or two operations each: that is where
//! the races live. Each was checked against a deliberately broken core (CAS replaced by a
//! store, `QUEUED` set without a CAS, release ignoring `QUEUED`, cancel ignoring a grant or not
//! passing permits on) and fails on it.
#![cfg(loom)]

use admission_core::{Enqueued, Gcra, Outcome, Refusal, Semaphore, Ticket, NANOS_PER_SEC};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

/// Far enough from 0 that a fresh bucket (`tat = 0`) is full at this instant.
const NOW: u64 = 10 * NANOS_PER_SEC;
/// Emission interval of `bucket(burst)`: one token per second.
const T: u64 = NANOS_PER_SEC;

fn bucket(burst: u64) -> Arc<Gcra> {
    Arc::new(Gcra::new(1.0, 1.0, burst).unwrap())
}

fn semaphore(limit: u64) -> Arc<Semaphore<usize>> {
    Arc::new(Semaphore::new(limit).unwrap())
}

fn queued(e: Enqueued) -> std::sync::Arc<Ticket> {
    match e {
        Enqueued::Queued(t) => t,
        Enqueued::Acquired => panic!("expected the request to queue"),
    }
}

/// After the model's threads are done: nothing is held, nobody waits, and the `QUEUED` bit is
/// clear (a fresh `try_acquire` of the whole limit succeeds on the fast path).
fn assert_idle<W>(s: &Semaphore<W>) {
    assert_eq!(s.in_use(), 0);
    assert_eq!(s.waiting(), 0);
    assert_eq!(
        s.try_acquire(s.limit()),
        Ok(true),
        "permits or QUEUED bit leaked"
    );
    assert!(s.release(s.limit()).unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// (a) GCRA
// ---------------------------------------------------------------------------------------------

/// Three threads race for a bucket holding two tokens at one instant: the CAS loop admits
/// exactly two, and the counters add up.
#[test]
fn gcra_racing_try_acquire_admits_exactly_burst() {
    loom::model(|| {
        let b = bucket(2);
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let b = b.clone();
                thread::spawn(move || b.try_acquire(NOW, 1).unwrap())
            })
            .collect();
        let mut admitted = usize::from(b.try_acquire(NOW, 1).unwrap());
        for h in handles {
            admitted += usize::from(h.join().unwrap());
        }
        assert_eq!(admitted, 2);
        let c = b.counters().snapshot();
        assert_eq!((c.admitted, c.admitted_cost, c.rejected), (2, 2, 1));
        assert_eq!(c.attempts(), 3);
        // The bucket is exactly empty: the next token is one emission interval away.
        let d = b.peek(NOW, 1).unwrap();
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ns, T);
    });
}

/// Different costs racing for a bucket of two: whichever CAS wins, the other request no longer
/// fits, so exactly one is admitted and the admitted cost never exceeds the burst.
#[test]
fn gcra_racing_costs_never_exceed_burst() {
    loom::model(|| {
        let b = bucket(2);
        let b2 = b.clone();
        let h = thread::spawn(move || b2.try_acquire(NOW, 2).unwrap());
        let small = b.try_acquire(NOW, 1).unwrap();
        let big = h.join().unwrap();
        assert!(small ^ big, "exactly one fits: small={small} big={big}");
        let c = b.counters().snapshot();
        assert_eq!((c.admitted, c.rejected), (1, 1));
        assert_eq!(c.admitted_cost, if big { 2 } else { 1 });
    });
}

/// A reservation that is refunded, racing a `try_acquire`: the refund gives back exactly what
/// the reservation took, whatever the order, so the bucket ends with one token consumed iff
/// the `try_acquire` was admitted.
#[test]
fn gcra_reserve_refund_races_try_acquire() {
    loom::model(|| {
        let b = bucket(1);
        let b2 = b.clone();
        let h = thread::spawn(move || {
            let r = b2.reserve(NOW, 1, 10 * T).unwrap();
            b2.refund(1, r.token, Refusal::Cancelled);
            r.wait_ns
        });
        let admitted = b.try_acquire(NOW, 1).unwrap();
        let wait = h.join().unwrap();
        // The reservation either came first (no wait) or queued behind the admitted token.
        assert!(
            wait == 0 || (admitted && wait == T),
            "wait {wait}, admitted {admitted}"
        );
        let c = b.counters().snapshot();
        assert_eq!(c.admitted, u64::from(admitted));
        assert_eq!(c.rejected, u64::from(!admitted));
        assert_eq!(c.cancelled, 1);
        assert_eq!(b.peek(NOW, 1).unwrap().allowed, !admitted);
    });
}

/// Two reservations get distinct slots (FIFO, nobody admitted early); one is refunded and the
/// other committed: the bucket ends exactly one token down.
#[test]
fn gcra_racing_reservations_get_distinct_slots() {
    loom::model(|| {
        let b = bucket(1);
        let b2 = b.clone();
        let h = thread::spawn(move || {
            let r = b2.reserve(NOW, 1, 10 * T).unwrap();
            b2.refund(1, r.token, Refusal::TimedOut);
            r.wait_ns
        });
        let mine = b.reserve(NOW, 1, 10 * T).unwrap().wait_ns;
        b.commit(1);
        let theirs = h.join().unwrap();
        // Either the other reservation was refunded before this one was made (both saw a full
        // bucket), or the two got the slots 0 and T in some order.
        let mut waits = [mine, theirs];
        waits.sort_unstable();
        assert!(waits == [0, 0] || waits == [0, T], "waits {waits:?}");
        let c = b.counters().snapshot();
        assert_eq!((c.admitted, c.timed_out, c.cancelled), (1, 1, 0));
        let d = b.peek(NOW, 1).unwrap();
        assert!(!d.allowed);
        // A refund only gives the slot back while it is the latest reservation; if ours was
        // queued behind theirs first, their slot stays spent (never double-booked).
        let expected = if theirs == 0 && mine == T { 2 * T } else { T };
        assert_eq!(d.retry_after_ns, expected, "mine {mine}, theirs {theirs}");
    });
}

// ---------------------------------------------------------------------------------------------
// (b) Semaphore: mutual exclusion
// ---------------------------------------------------------------------------------------------

/// Two threads try_acquire/release a semaphore of one permit: never two inside at once, and
/// the permit is back at the end.
#[test]
fn semaphore_try_acquire_never_exceeds_limit() {
    loom::model(|| {
        let s = semaphore(1);
        let inside = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (s, inside) = (s.clone(), inside.clone());
                thread::spawn(move || {
                    if !s.try_acquire(1).unwrap() {
                        return false;
                    }
                    assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                    assert!(s.in_use() <= s.limit());
                    inside.fetch_sub(1, Ordering::SeqCst);
                    assert!(s.release(1).unwrap().is_empty(), "nobody queued");
                    true
                })
            })
            .collect();
        let admitted = handles
            .into_iter()
            .map(|h| usize::from(h.join().unwrap()))
            .sum::<usize>();
        assert!(admitted >= 1);
        let c = s.counters().snapshot();
        assert_eq!(c.admitted + c.rejected, 2);
        assert_eq!(c.admitted, admitted as u64);
        assert_eq!(s.high_water(), 1);
        assert_idle(&s);
    });
}

/// The blocking protocol the bindings use: `enqueue` with the thread as waker, park until the
/// ticket settles, work, `release` and unpark whoever it hands the permit to. Two threads, one
/// permit: mutual exclusion holds, and every waiter is woken (a lost wake-up would leave a
/// thread parked forever, which loom reports as a deadlock).
#[test]
fn semaphore_enqueue_park_release_unpark() {
    loom::model(|| {
        let s: Arc<Semaphore<thread::Thread>> = Arc::new(Semaphore::new(1).unwrap());
        let inside = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (s, inside) = (s.clone(), inside.clone());
                thread::spawn(move || {
                    if let Enqueued::Queued(t) = s.enqueue(1, thread::current()).unwrap() {
                        while t.outcome() == Outcome::Waiting {
                            thread::park();
                        }
                        assert_eq!(t.outcome(), Outcome::Granted);
                        s.commit(&t);
                    }
                    assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                    inside.fetch_sub(1, Ordering::SeqCst);
                    for waker in s.release(1).unwrap() {
                        waker.unpark();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(s.counters().snapshot().admitted, 2);
        assert_idle(&s);
    });
}

// ---------------------------------------------------------------------------------------------
// (c) No lost wake-up
// ---------------------------------------------------------------------------------------------

/// A holds the only permit and releases it while B enqueues. B is either admitted at once or
/// queued and then granted by A's release, which returns B's waker: never queued and left
/// waiting with the permit free.
#[test]
fn semaphore_release_racing_enqueue_loses_no_wakeup() {
    const B: usize = 7;
    loom::model(|| {
        let s = semaphore(1);
        assert_eq!(s.try_acquire(1), Ok(true)); // held by A
        let sa = s.clone();
        let a = thread::spawn(move || sa.release(1).unwrap());
        let sb = s.clone();
        let b = thread::spawn(move || match sb.enqueue(1, B).unwrap() {
            Enqueued::Acquired => None,
            Enqueued::Queued(t) => Some(t),
        });
        let woken = a.join().unwrap();
        match b.join().unwrap() {
            None => assert!(woken.is_empty(), "B was admitted at once; nobody to wake"),
            Some(t) => {
                assert_eq!(t.outcome(), Outcome::Granted, "queued B was never granted");
                assert_eq!(woken, vec![B], "A's release must return B's waker");
                s.commit(&t); // B takes the grant
            }
        }
        assert_eq!(s.in_use(), 1, "B holds the permit");
        assert_eq!(s.waiting(), 0);
        assert_eq!(s.high_water(), 1);
        assert_eq!(s.counters().snapshot().admitted, 2);
        assert!(s.release(1).unwrap().is_empty());
        assert_idle(&s);
    });
}

// ---------------------------------------------------------------------------------------------
// (d) Cancel racing release
// ---------------------------------------------------------------------------------------------

/// B's queued request is withdrawn while A releases the permit it waits for. The ticket ends
/// `Cancelled` (the permit stays free) or `Granted` (the canceller holds it and passes it on):
/// either way the permit is never lost and B is counted once, as cancelled.
#[test]
fn semaphore_cancel_racing_release_loses_no_permit() {
    const B: usize = 7;
    loom::model(|| {
        let s = semaphore(1);
        assert_eq!(s.try_acquire(1), Ok(true)); // held by A
        let t = queued(s.enqueue(1, B).unwrap());
        let sa = s.clone();
        let a = thread::spawn(move || sa.release(1).unwrap());
        let sb = s.clone();
        let b = thread::spawn(move || {
            let (outcome, woken) = sb.cancel(&t, false);
            assert!(woken.is_empty(), "nobody else is queued");
            assert_eq!(t.outcome(), outcome);
            if outcome == Outcome::Granted {
                assert_eq!(sb.in_use(), 1, "the granted permit is held by B");
                assert!(sb.pass_on(1, Refusal::Cancelled).unwrap().is_empty());
            }
            outcome
        });
        let woken = a.join().unwrap();
        let outcome = b.join().unwrap();
        let c = s.counters().snapshot();
        match outcome {
            Outcome::Granted => assert_eq!(woken, vec![B]),
            Outcome::Cancelled => assert!(woken.is_empty(), "a cancelled waiter must not be woken"),
            other => panic!("unexpected outcome {other:?}"),
        }
        // A grant B never took is not an admission: only A's is.
        assert_eq!((c.admitted, c.cancelled), (1, 1));
        assert_idle(&s);
    });
}

/// As above, with a second waiter behind the cancelled head: the freed permit ends with the
/// second waiter, whose waker is returned exactly once (by A's release, by the cancel, or by
/// B's release of a permit granted to it before the cancel).
#[test]
fn semaphore_cancelled_head_passes_the_permit_on() {
    const B: usize = 7;
    const C: usize = 8;
    loom::model(|| {
        let s = semaphore(1);
        assert_eq!(s.try_acquire(1), Ok(true)); // held by A
        let tb = queued(s.enqueue(1, B).unwrap());
        let tc = queued(s.enqueue(1, C).unwrap());
        let sa = s.clone();
        let a = thread::spawn(move || sa.release(1).unwrap());
        let sb = s.clone();
        let b = thread::spawn(move || {
            let (outcome, mut woken) = sb.cancel(&tb, true);
            if outcome == Outcome::Granted {
                woken.extend(sb.pass_on(1, Refusal::TimedOut).unwrap());
            }
            (outcome, woken)
        });
        let mut woken = Vec::from(a.join().unwrap());
        let (outcome, by_b) = b.join().unwrap();
        woken.extend(by_b);
        woken.sort_unstable();
        match outcome {
            Outcome::Granted => assert_eq!(woken, vec![B, C]),
            Outcome::Cancelled => assert_eq!(woken, vec![C]),
            other => panic!("unexpected outcome {other:?}"),
        }
        assert_eq!(tc.outcome(), Outcome::Granted);
        s.commit(&tc);
        let c = s.counters().snapshot();
        assert_eq!(
            (c.admitted, c.timed_out),
            (2, 1),
            "A and C admitted, B timed out"
        );
        assert_eq!(s.in_use(), 1, "C holds the permit");
        assert_eq!(s.waiting(), 0);
        assert!(s.release(1).unwrap().is_empty());
        assert_idle(&s);
    });
}

/// The head of the queue wants more than is free and withdraws while C enqueues a request
/// that fits the free permit: C is admitted at once (the queue is already empty) or queued
/// behind the head and then granted by the withdrawal itself, never left waiting with its
/// permit free.
#[test]
fn semaphore_cancelled_head_grants_the_waiter_behind() {
    const B: usize = 7;
    const C: usize = 8;
    loom::model(|| {
        let s = semaphore(2);
        assert_eq!(s.try_acquire(1), Ok(true)); // held throughout: one permit free
        let tb = queued(s.enqueue(2, B).unwrap());
        let sb = s.clone();
        let b = thread::spawn(move || sb.cancel(&tb, false));
        let sc = s.clone();
        let c = thread::spawn(move || match sc.enqueue(1, C).unwrap() {
            Enqueued::Acquired => None,
            Enqueued::Queued(t) => Some(t),
        });
        let (outcome, woken) = b.join().unwrap();
        assert_eq!(outcome, Outcome::Cancelled);
        match c.join().unwrap() {
            None => assert!(woken.is_empty()),
            Some(tc) => {
                assert_eq!(
                    tc.outcome(),
                    Outcome::Granted,
                    "C left waiting, permit free"
                );
                assert_eq!(woken, vec![C], "the withdrawal must return C's waker");
            }
        }
        assert_eq!(s.in_use(), 2);
        assert_eq!(s.waiting(), 0);
        assert!(s.release(2).unwrap().is_empty());
        assert_idle(&s);
    });
}

/// B enqueues and withdraws at once (a zero timeout) while A releases: whether B was admitted,
/// granted before the withdrawal, or cancelled, nothing is held afterwards.
#[test]
fn semaphore_enqueue_then_cancel_racing_release() {
    loom::model(|| {
        let s = semaphore(1);
        assert_eq!(s.try_acquire(1), Ok(true)); // held by A
        let sa = s.clone();
        let a = thread::spawn(move || sa.release(1).unwrap());
        let sb = s.clone();
        let b = thread::spawn(move || match sb.enqueue(1, 7).unwrap() {
            Enqueued::Acquired => {
                assert!(sb.release(1).unwrap().is_empty());
                Outcome::Granted
            }
            Enqueued::Queued(t) => {
                let (outcome, woken) = sb.cancel(&t, true);
                assert!(woken.is_empty());
                if outcome == Outcome::Granted {
                    assert!(sb.pass_on(1, Refusal::TimedOut).unwrap().is_empty());
                }
                outcome
            }
        });
        a.join().unwrap();
        let outcome = b.join().unwrap();
        assert!(matches!(outcome, Outcome::Granted | Outcome::Cancelled));
        let c = s.counters().snapshot();
        assert_eq!(c.admitted + c.timed_out, 2);
        assert_idle(&s);
    });
}

// ---------------------------------------------------------------------------------------------
// Wait histogram
// ---------------------------------------------------------------------------------------------

/// A waiter commits after waiting while another request is admitted at once and a scraper takes
/// two snapshots: no cumulative bucket ever goes down (a scraper would read a counter reset),
/// and once both are done the histogram counts exactly the admissions, the waiter in its
/// bucket and the immediate one as a zero wait.
#[test]
fn histogram_snapshots_never_go_down_while_waiters_commit() {
    use admission_core::histogram::bucket_of;
    loom::model(|| {
        let b = bucket(1);
        let wait = b.reserve(NOW, 1, 0).unwrap().wait_ns;
        assert_eq!(wait, 0);
        let waited = b.reserve(NOW, 1, 10 * T).unwrap().wait_ns; // due in one second
        assert_eq!(waited, T);
        let bw = b.clone();
        let waiter = thread::spawn(move || bw.commit_waited(1, waited));
        let bi = b.clone();
        let immediate = thread::spawn(move || bi.commit(1));
        let first = b.wait_histogram().cumulative();
        let second = b.wait_histogram().cumulative();
        for i in 0..first.len() {
            assert!(second[i] >= first[i], "bucket {i} went down");
        }
        waiter.join().unwrap();
        immediate.join().unwrap();
        let h = b.wait_histogram();
        assert_eq!(h.count(), 2);
        assert_eq!(h.count(), b.counters().snapshot().admitted);
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts[bucket_of(T)], 1);
        assert_eq!(h.sum_ns, T);
        let last = h.cumulative();
        for i in 0..last.len() {
            assert!(last[i] >= second[i], "bucket {i} went down");
        }
    });
}

/// Two queued reservations cancelled at the same time, in either order: the one that is not the
/// tail is parked and unwound by the other, so the bucket ends exactly as before both.
#[test]
fn gcra_concurrent_cancellations_refund_the_whole_queue() {
    loom::model(|| {
        let b = bucket(1);
        assert!(b.try_acquire(NOW, 1).unwrap());
        let first = b.reserve(NOW, 1, 10 * T).unwrap();
        let second = b.reserve(NOW, 1, 10 * T).unwrap();
        assert_eq!((first.wait_ns, second.wait_ns), (T, 2 * T));
        let b2 = b.clone();
        let h = thread::spawn(move || b2.refund(1, first.token, Refusal::Cancelled));
        b.refund(1, second.token, Refusal::Cancelled);
        h.join().unwrap();
        assert_eq!(b.peek(NOW, 1).unwrap().retry_after_ns, T);
        assert_eq!(b.counters().snapshot().cancelled, 2);
    });
}
