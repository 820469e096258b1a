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

use admission_core::breaker::{Breaker, BreakerConfig, CallOutcome, Mode, Refused, WindowKind};
use admission_core::{
    Enqueued, Entered, Gcra, Outcome, RateLimit, Refusal, Semaphore, Ticket, Withdrawal,
    NANOS_PER_SEC,
};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

/// Far enough from 0 that a fresh bucket (`tat = 0`) is full at this instant.
const NOW: u64 = 10 * NANOS_PER_SEC;
/// Emission interval of `bucket(burst)`: one token per second.
const T: u64 = NANOS_PER_SEC;

fn bucket(burst: u64) -> Arc<Gcra<usize>> {
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

/// A request queues (setting the `QUEUED` bit) while another thread takes the last token on
/// the lock-free path: whichever order, nobody is admitted beyond the burst, a waiter is never
/// overtaken once it is queued, and withdrawing it leaves the bucket as the admissions left it.
#[test]
fn gcra_enqueue_withdraw_races_try_acquire() {
    loom::model(|| {
        let b = bucket(1);
        let b2 = b.clone();
        let h = thread::spawn(move || match b2.enqueue(NOW, 1, 10 * T, 0, true).unwrap() {
            Entered::Admitted => None,
            Entered::Queued { ticket, head_due } => {
                assert_eq!(head_due, Some(NOW + T));
                let (what, woken) = b2.withdraw(&ticket, NOW, Refusal::Cancelled);
                assert_eq!(what, Withdrawal::Removed);
                assert!(woken.is_empty());
                Some(ticket)
            }
        });
        let admitted = b.try_acquire(NOW, 1).unwrap();
        let queued = h.join().unwrap();
        // Exactly one of the two had the token.
        assert_eq!(admitted, queued.is_some());
        let c = b.counters().snapshot();
        assert_eq!(c.admitted, 1);
        assert_eq!(c.rejected, u64::from(!admitted));
        assert_eq!(c.cancelled, u64::from(queued.is_some()));
        assert_eq!(b.waiting(), 0);
        // The bit is clear and the bucket one token down: the next token is due in T.
        assert_eq!(b.peek(NOW, 1).unwrap().retry_after_ns, T);
        assert!(b.try_acquire(NOW + T, 1).unwrap());
    });
}

/// A head granted by one thread's poll while another withdraws it: either the grant goes
/// back (nothing was admitted after it) or the withdrawal came first; the bucket ends full
/// again at the same instant either way, and the counters name one outcome.
#[test]
fn gcra_grant_racing_withdraw_loses_no_token() {
    loom::model(|| {
        let b = bucket(1);
        assert!(b.try_acquire(NOW, 1).unwrap());
        let ticket = match b.enqueue(NOW, 1, 10 * T, 0, true).unwrap() {
            Entered::Queued { ticket, .. } => ticket,
            Entered::Admitted => panic!("the bucket was drained"),
        };
        let b2 = b.clone();
        let h = thread::spawn(move || b2.poll(NOW + T).len());
        let (what, _) = b.withdraw(&ticket, NOW + T, Refusal::Cancelled);
        let woken = h.join().unwrap();
        assert!(matches!(what, Withdrawal::Removed | Withdrawal::GaveBack));
        assert_eq!(woken, usize::from(what == Withdrawal::GaveBack));
        assert!(!b.consume(&ticket, T));
        let c = b.counters().snapshot();
        assert_eq!((c.admitted, c.cancelled), (1, 1));
        assert!(b.try_acquire(NOW + T, 1).unwrap(), "the token was lost");
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
        let ticket = match b.enqueue(NOW, 1, 10 * T, 0, true).unwrap() {
            Entered::Admitted => match b.enqueue(NOW, 1, 10 * T, 0, true).unwrap() {
                Entered::Queued { ticket, .. } => ticket, // due in one second
                Entered::Admitted => panic!("burst 1 admitted two"),
            },
            Entered::Queued { .. } => panic!("a full bucket queued"),
        };
        assert_eq!(b.poll(NOW + T).len(), 1);
        let waited = T;
        let bw = b.clone();
        let waiter = thread::spawn(move || assert!(bw.consume(&ticket, waited)));
        let bi = b.clone();
        let immediate = thread::spawn(move || assert!(bi.try_acquire(NOW + 3 * T, 1).unwrap()));
        let first = b.wait_histogram().cumulative();
        let second = b.wait_histogram().cumulative();
        for i in 0..first.len() {
            assert!(second[i] >= first[i], "bucket {i} went down");
        }
        waiter.join().unwrap();
        immediate.join().unwrap();
        let h = b.wait_histogram();
        assert_eq!(h.count(), 3);
        assert_eq!(h.count(), b.counters().snapshot().admitted);
        assert_eq!(h.counts[0], 2);
        assert_eq!(h.counts[bucket_of(T)], 1);
        assert_eq!(h.sum_ns, T);
        let last = h.cumulative();
        for i in 0..last.len() {
            assert!(last[i] >= second[i], "bucket {i} went down");
        }
    });
}

/// Two waiters withdrawn at the same time, in either order: the bucket ends exactly as
/// before both (nothing was taken while they waited).
#[test]
fn gcra_concurrent_withdrawals_leave_the_bucket_as_it_was() {
    loom::model(|| {
        let b = bucket(1);
        assert!(b.try_acquire(NOW, 1).unwrap());
        let queue = |b: &Gcra<usize>| match b.enqueue(NOW, 1, 10 * T, 0, true).unwrap() {
            Entered::Queued { ticket, .. } => ticket,
            Entered::Admitted => panic!("the bucket was drained"),
        };
        let first = queue(&b);
        let second = queue(&b);
        let b2 = b.clone();
        let h = thread::spawn(move || b2.withdraw(&first, NOW, Refusal::Cancelled));
        b.withdraw(&second, NOW, Refusal::Cancelled);
        h.join().unwrap();
        assert_eq!(b.peek(NOW, 1).unwrap().retry_after_ns, T);
        assert_eq!(b.counters().snapshot().cancelled, 2);
        assert_eq!(b.waiting(), 0);
    });
}

// ---------------------------------------------------------------------------------------------
// (d) Circuit breaker: the half-open probe budget
// ---------------------------------------------------------------------------------------------

/// A breaker with `half_open_calls` probes, tripped at 0 and due to probe at `NOW`.
fn tripped_breaker(half_open_calls: u32) -> Arc<Breaker> {
    let b = Breaker::new(BreakerConfig {
        failure_rate: 1.0,
        slow_call_rate: 1.0,
        slow_call_ns: u64::MAX,
        window: WindowKind::Calls(1),
        min_calls: 1,
        open_ns: NANOS_PER_SEC,
        open_max_ns: NANOS_PER_SEC,
        half_open_calls,
    })
    .unwrap();
    let (permit, _) = b.try_acquire(0).unwrap();
    assert!(b.record(permit, CallOutcome::Failure, 0, 0).is_some());
    Arc::new(b)
}

/// Two threads race for the last probe place: exactly one gets it.
#[test]
fn breaker_half_open_admits_exactly_its_probes() {
    loom::model(|| {
        let b = tripped_breaker(2);
        let (first, transition) = b.try_acquire(NOW).unwrap();
        assert!(first.is_probe() && transition.is_some());
        let granted = race_for_probes(&b);
        assert_eq!(granted, (1, 0));
        assert_eq!(b.probes(), (2, 0));
    });
}

/// Two threads race to turn an open breaker half-open with one probe place: exactly one gets
/// the probe and reports the transition.
#[test]
fn breaker_one_thread_turns_it_half_open() {
    loom::model(|| {
        let b = tripped_breaker(1);
        assert_eq!(race_for_probes(&b), (1, 1));
        assert_eq!(b.probes(), (1, 0));
    });
}

/// Two threads ask for a probe at once: (probes granted, transitions reported).
fn race_for_probes(b: &Arc<Breaker>) -> (usize, usize) {
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let b = b.clone();
            thread::spawn(move || match b.try_acquire(NOW) {
                Ok((permit, transition)) => {
                    assert!(permit.is_probe());
                    (1, usize::from(transition.is_some()))
                }
                Err(refused) => {
                    assert_eq!(refused, Refused::Probing);
                    (0, 0)
                }
            })
        })
        .collect();
    threads.into_iter().fold((0, 0), |(g, t), thread| {
        let (dg, dt) = thread.join().unwrap();
        (g + dg, t + dt)
    })
}

/// A probe succeeds (closing the breaker: the last of one) while another thread asks: the
/// other is refused, or gets a closed-state permit once the breaker has closed.
#[test]
fn breaker_last_probe_closes_under_a_racing_ask() {
    loom::model(|| {
        let b = tripped_breaker(1);
        let (probe, _) = b.try_acquire(NOW).unwrap();
        let b2 = b.clone();
        let asker = thread::spawn(move || b2.try_acquire(NOW));
        let t = b.record(probe, CallOutcome::Success, 0, NOW).unwrap();
        assert_eq!(t.to, Mode::Closed);
        let in_flight = match asker.join().unwrap() {
            Ok((permit, _)) => {
                assert!(!permit.is_probe());
                1
            }
            Err(refused) => {
                assert_eq!(refused, Refused::Probing);
                0
            }
        };
        assert_eq!(b.mode(), Mode::Closed);
        let counts = b.counts();
        assert_eq!(
            counts.permitted,
            counts.success + counts.failure + in_flight
        );
    });
}

/// A probe given back while another thread asks: the place is reused at most once, and the
/// probation ends only after the one probe that ran succeeds.
#[test]
fn breaker_released_probe_is_reused_once() {
    loom::model(|| {
        let b = tripped_breaker(1);
        let (first, _) = b.try_acquire(NOW).unwrap();
        assert!(first.is_probe());
        let b2 = b.clone();
        let asker = thread::spawn(move || b2.try_acquire(NOW));
        b.release(first);
        // A second give-back of the same permit must not free a second place.
        b.release(first);
        match asker.join().unwrap() {
            Ok((permit, _)) => {
                assert!(permit.is_probe());
                assert!(b.try_acquire(NOW).is_err(), "a place was freed twice");
                assert!(b.record(permit, CallOutcome::Success, 0, NOW).is_some());
                assert_eq!(b.mode(), Mode::Closed);
            }
            Err(Refused::Probing) => {
                let (permit, _) = b.try_acquire(NOW).unwrap();
                assert!(b.try_acquire(NOW).is_err(), "a place was freed twice");
                b.release(permit);
            }
            Err(other) => panic!("{other:?}"),
        }
    });
}

/// A failed probe reopens the breaker while another thread asks for a probe: the other either
/// gets a probe of the old probation (its outcome then counts for nothing) or is refused; the
/// breaker ends open with its time set.
#[test]
fn breaker_failed_probe_reopens_under_a_racing_ask() {
    loom::model(|| {
        let b = tripped_breaker(2);
        let (failing, _) = b.try_acquire(NOW).unwrap();
        let b2 = b.clone();
        let asker = thread::spawn(move || {
            if let Ok((permit, _)) = b2.try_acquire(NOW) {
                assert!(b2.record(permit, CallOutcome::Success, 0, NOW).is_none());
            }
        });
        let t = b.record(failing, CallOutcome::Failure, 0, NOW).unwrap();
        assert_eq!(t.to, Mode::Open);
        asker.join().unwrap();
        assert_eq!(b.mode(), Mode::Open);
        // Open for `open_for` doubled, capped at `open_for_max` (both one second here).
        assert_eq!(b.retry_after_ns(NOW), NANOS_PER_SEC);
    });
}

// ---------------------------------------------------------------------------------------------
// (d) Circuit breaker: a closed window's outcomes without the lock (`closed_window.rs`)
// ---------------------------------------------------------------------------------------------

// Checked against broken cores: a late write of a place that skips the generation check fails
// `breaker_a_stale_closed_record_is_ignored` (the next window's call waits forever), and a call
// that takes any written place for the previous lap's fails
// `breaker_racing_closed_records_count_exactly`.

/// A model bounded to `preemptions` preemptions per execution: a call waiting for its place
/// in the ring spins (yielding), which makes the unbounded space large.
fn bounded(preemptions: usize) -> loom::model::Builder {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(preemptions);
    model
}

/// A closed breaker with a lock-free window of `calls` calls (no call is slow).
fn closed_breaker(calls: u32, min_calls: u32, failure_rate: f64) -> Arc<Breaker> {
    Arc::new(
        Breaker::new(BreakerConfig {
            failure_rate,
            slow_call_rate: 1.0,
            slow_call_ns: u64::MAX,
            window: WindowKind::Calls(calls),
            min_calls,
            open_ns: NANOS_PER_SEC,
            open_max_ns: NANOS_PER_SEC,
            half_open_calls: 1,
        })
        .unwrap(),
    )
}

/// Each thread takes a permit now and records `outcome` at `NOW` on its own thread; the
/// transitions they report, once all are joined (main records `main` meanwhile).
fn race_records(b: &Arc<Breaker>, threads: &[CallOutcome], main: CallOutcome) -> usize {
    let handles: Vec<_> = threads
        .iter()
        .map(|&outcome| {
            let b = b.clone();
            let (permit, _) = b.try_acquire(NOW).unwrap();
            thread::spawn(move || b.record(permit, outcome, 0, NOW).is_some())
        })
        .collect();
    let (permit, _) = b.try_acquire(NOW).unwrap();
    let mut transitions = usize::from(b.record(permit, main, 0, NOW).is_some());
    for h in handles {
        transitions += usize::from(h.join().unwrap());
    }
    transitions
}

fn record_now(b: &Breaker, outcome: CallOutcome) -> Option<admission_core::breaker::Transition> {
    let (permit, _) = b.try_acquire(NOW).unwrap();
    b.record(permit, outcome, 0, NOW)
}

/// Three outcomes race into a full window of two: each replaces the call a lap ahead of it,
/// and the third may find its place not yet written by the first (and waits; the place then
/// still holds the previous lap's call, which it must not take for the first's). The totals are
/// exact once all are joined, and the ring holds what the tally counts (two more successes
/// leave a window with no failure in it).
#[test]
fn breaker_racing_closed_records_count_exactly() {
    bounded(3).check(|| {
        // Trips only on two failures in two calls: never here.
        let b = closed_breaker(2, 2, 1.0);
        assert!(record_now(&b, CallOutcome::Failure).is_none());
        assert!(record_now(&b, CallOutcome::Success).is_none());
        let transitions = race_records(
            &b,
            &[CallOutcome::Success, CallOutcome::Success],
            CallOutcome::Failure,
        );
        assert_eq!(transitions, 0);
        let c = b.counts();
        assert_eq!((c.permitted, c.success, c.failure, c.opened), (5, 3, 2, 0));
        let w = b.window(NOW);
        assert_eq!(w.calls, 2);
        assert!(w.failures <= 1, "{w:?}");
        assert!(record_now(&b, CallOutcome::Success).is_none());
        assert!(record_now(&b, CallOutcome::Success).is_none());
        assert_eq!((b.window(NOW).calls, b.window(NOW).failures), (2, 0));
    });
}

/// Two failures and a success race into a window of two that trips at half failed: the
/// second outcome in trips it, exactly once, and the third (now of an earlier generation) does
/// not count in any window.
#[test]
fn breaker_closed_records_trip_exactly_once() {
    bounded(3).check(|| {
        let b = closed_breaker(2, 2, 0.5);
        let transitions = race_records(
            &b,
            &[CallOutcome::Failure, CallOutcome::Failure],
            CallOutcome::Success,
        );
        assert_eq!(transitions, 1);
        assert_eq!(b.mode(), Mode::Open);
        assert_eq!(b.retry_after_ns(NOW), NANOS_PER_SEC);
        let c = b.counts();
        assert_eq!((c.success, c.failure, c.opened), (1, 2, 1));
        assert_eq!(b.window(NOW).calls, 0);
    });
}

/// A closed call's success races with another call that trips the breaker, a reset and the
/// next window's calls: the late outcome is ignored or counted in its own (ended) window, and
/// its place in the ring, if written late, never overwrites the next window's (whose third
/// call would then wait forever for the place it reads).
#[test]
fn breaker_a_stale_closed_record_is_ignored() {
    bounded(3).check(|| {
        let b = closed_breaker(2, 1, 0.5);
        let (late, _) = b.try_acquire(NOW).unwrap();
        let b2 = b.clone();
        let stale = thread::spawn(move || b2.record(late, CallOutcome::Success, 0, NOW));
        // Half of one or two calls failed: this call trips it, whatever the other did.
        let t = record_now(&b, CallOutcome::Failure).unwrap();
        assert_eq!(t.to, Mode::Open);
        assert_eq!(b.reset().unwrap().to, Mode::Closed);
        assert!(record_now(&b, CallOutcome::Success).is_none());
        assert!(record_now(&b, CallOutcome::Success).is_none());
        assert_eq!(stale.join().unwrap(), None);
        assert_eq!((b.window(NOW).calls, b.window(NOW).failures), (2, 0));
        // The next call replaces the first of this window: its place was written right.
        assert!(record_now(&b, CallOutcome::Failure).is_some());
        assert_eq!(b.counts().opened, 2);
    });
}

// ---------------------------------------------------------------------------------------------
// (c2) The shared bucket's turns (`shared.rs`): processes modelled as threads
// ---------------------------------------------------------------------------------------------

use admission_core::shared::{BucketWords, SharedBucket};

/// A waiter takes a turn and gives it back while another process takes a turn and a third
/// tries at a later instant: no charge is lost or counted twice (the word ends one interval
/// per charge still standing past the spent burst), and a charge is kept only when another
/// came after it.
#[test]
fn shared_turns_racing_a_give_back_and_a_newcomer_keep_every_charge() {
    loom::model(|| {
        let b = SharedBucket::new(1.0, 1.0, 1).unwrap();
        let w = Arc::new(BucketWords::new());
        assert!(b.try_acquire(&w, NOW, 1, true).unwrap()); // burst spent: tat = NOW + T
        let (w1, w2) = (w.clone(), w.clone());
        let giver = thread::spawn(move || {
            let turn = b.reserve(&w1, NOW, 1, 10 * T).unwrap().unwrap();
            (turn, b.untake(&w1, turn.tat, 1))
        });
        let other = thread::spawn(move || b.reserve(&w2, NOW, 1, 10 * T).unwrap().unwrap());
        let newcomer = b.try_acquire(&w, NOW + T, 1, true).unwrap();
        let (mine, given_back) = giver.join().unwrap();
        let theirs = other.join().unwrap();
        let standing = 2 - u64::from(given_back) + u64::from(newcomer);
        let tat = w.tat.load(loom::sync::atomic::Ordering::Relaxed);
        assert_eq!(tat, NOW + T * (1 + standing));
        // Kept only when another charge came after it (the word moved past it), and a turn
        // still standing is never moved earlier by a give-back.
        assert!(given_back || tat > mine.tat);
        assert!(tat >= theirs.tat);
        assert!([T, 2 * T, 3 * T].contains(&theirs.wait_ns));
    });
}

// ---------------------------------------------------------------------------------------------
// (d) The shared semaphore's leases (`shared.rs`): processes modelled as threads
// ---------------------------------------------------------------------------------------------

use admission_core::shared::{SemaphoreWords, SharedSemaphore};

/// The sum of the holders' counts: what `in_use` must equal once no change is in flight.
fn leased(w: &SemaphoreWords) -> u64 {
    (0..4).map(|slot| SharedSemaphore::held(w, slot)).sum()
}

/// One holder takes and gives back while another takes (each change two CASes apart, with
/// helping in between): `in_use` never exceeds the limit, and stays the sum of the leases.
/// Bounded to two preemptions: the counters and the lease words make the full space large.
#[test]
fn shared_leases_racing_take_and_give_back_stay_consistent() {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(2);
    model.check(|| {
        let s = SharedSemaphore::new(1).unwrap();
        let w = Arc::new(SemaphoreWords::new());
        let cycler = {
            let w = Arc::clone(&w);
            thread::spawn(move || {
                if s.try_acquire(&w, 0, 1, true).unwrap() {
                    assert!(SharedSemaphore::in_use(&w) <= 1);
                    s.release(&w, 0, 1).unwrap();
                }
            })
        };
        let taker = {
            let w = Arc::clone(&w);
            thread::spawn(move || s.try_acquire(&w, 1, 1, true).unwrap())
        };
        cycler.join().unwrap();
        let took = taker.join().unwrap();
        assert_eq!(SharedSemaphore::held(&w, 0), 0);
        assert_eq!(SharedSemaphore::in_use(&w), u64::from(took));
        assert_eq!(leased(&w), SharedSemaphore::in_use(&w));
    });
}

/// A process died between the two steps of a take (the permit word says slot 0 holds 1, the
/// slot does not yet): two others race to take, each finishing the dead one's change first.
/// It is applied exactly once, and `in_use` stays the sum of the leases. (Two preemptions, as
/// above.)
#[test]
fn shared_leases_a_dead_change_is_finished_exactly_once() {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(2);
    model.check(|| {
        let s = SharedSemaphore::new(2).unwrap();
        let w = Arc::new(SemaphoreWords::new());
        w.word.store(
            SemaphoreWords::interrupted(1, 0, 1, 1),
            loom::sync::atomic::Ordering::Release,
        );
        let threads: Vec<_> = (1..3)
            .map(|slot| {
                let w = Arc::clone(&w);
                thread::spawn(move || s.try_acquire(&w, slot, 1, true).unwrap())
            })
            .collect();
        let taken = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|&t| t)
            .count();
        assert_eq!(taken, 1, "one permit was left");
        assert_eq!(SharedSemaphore::held(&w, 0), 1);
        assert_eq!(SharedSemaphore::in_use(&w), 2);
        assert_eq!(leased(&w), 2);
    });
}

/// A dead holder's permits are reclaimed while a live holder takes: the live one never
/// goes beyond the limit, and the dead one's lease ends at 0. (Two preemptions, as above.)
#[test]
fn shared_leases_reclaim_racing_a_take() {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(2);
    model.check(|| {
        let s = SharedSemaphore::new(2).unwrap();
        let w = Arc::new(SemaphoreWords::new());
        w.holders[0]
            .owner
            .store(7, loom::sync::atomic::Ordering::Release);
        assert_eq!(s.try_acquire(&w, 0, 2, true), Ok(true));
        let reclaimer = {
            let w = Arc::clone(&w);
            thread::spawn(move || s.reclaim(&w, |tag| tag != 7).0)
        };
        let taker = {
            let w = Arc::clone(&w);
            thread::spawn(move || s.try_acquire(&w, 1, 2, true).unwrap())
        };
        assert_eq!(reclaimer.join().unwrap(), 2);
        let took = taker.join().unwrap();
        assert_eq!(SharedSemaphore::held(&w, 0), 0);
        assert_eq!(SharedSemaphore::in_use(&w), if took { 2 } else { 0 });
        assert_eq!(leased(&w), SharedSemaphore::in_use(&w));
    });
}

// ---------------------------------------------------------------------------------------------
// (e) The shared keyed table (`shared_keyed.rs`): processes modelled as threads
// ---------------------------------------------------------------------------------------------

use admission_core::shared_keyed::{
    Admission, Claimer, KeySlot, KeyTable, KeyedBucket, KeyedCounters, WAYS,
};

struct KeyMemory {
    slots: Vec<KeySlot>,
    stripes: Vec<KeyedCounters>,
}

/// The smallest table: two sets, so every key's two sets are the whole table.
fn key_memory() -> Arc<KeyMemory> {
    Arc::new(KeyMemory {
        slots: (0..2 * WAYS).map(|_| KeySlot::new()).collect(),
        stripes: vec![KeyedCounters::new()],
    })
}

fn key_take(m: &KeyMemory, key: [u64; 2], tag: u64) -> Admission {
    let table = KeyTable::new(&m.slots, &m.stripes);
    let bucket = KeyedBucket::new(1.0, 1.0, 1).unwrap();
    let claimer = Claimer {
        tag,
        is_alive: &|_| true,
    };
    bucket
        .try_acquire(&table, key, NOW, 1, true, claimer)
        .unwrap()
}

/// Slots holding `key` in a published state (the table's `PLAIN` words have no state bits).
fn published(m: &KeyMemory, key: [u64; 2]) -> usize {
    m.slots
        .iter()
        .filter(|s| {
            s.word.load(Ordering::SeqCst) >> 62 == 0
                && s.word.load(Ordering::SeqCst) != 0
                && s.id[0].load(Ordering::SeqCst) == key[0]
                && s.id[1].load(Ordering::SeqCst) == key[1]
        })
        .count()
}

/// Two processes insert the same new key at once (a bucket of one token): one is admitted,
/// and the key ends in exactly one slot (the other claim is given up, whichever of the two
/// sees the other). Two preemptions: each call scans sixteen slots.
#[test]
fn shared_keyed_racing_claims_of_one_key_end_in_one_slot() {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(2);
    model.max_branches = 100_000;
    model.check(|| {
        let m = key_memory();
        let key = [3, 0];
        let other = {
            let m = Arc::clone(&m);
            thread::spawn(move || key_take(&m, key, 2))
        };
        let mine = key_take(&m, key, 1);
        let theirs = other.join().unwrap();
        let admitted = [mine, theirs]
            .iter()
            .filter(|&&a| a == Admission::Admitted)
            .count();
        let dump: Vec<_> = m
            .slots
            .iter()
            .map(|s| {
                (
                    s.word.load(Ordering::SeqCst),
                    s.id[0].load(Ordering::SeqCst),
                )
            })
            .filter(|w| w.0 != 0)
            .collect();
        assert_eq!(admitted, 1, "{mine:?} {theirs:?} {dump:?}");
        assert_eq!(published(&m, key), 1);
        assert_eq!(key_take(&m, key, 1), Admission::Refused);
    });
}

/// Two processes insert two different keys at once: both are admitted (no update lost to
/// the other's claim), each in its own slot.
#[test]
fn shared_keyed_racing_claims_of_two_keys_lose_nothing() {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(2);
    model.max_branches = 100_000;
    model.check(|| {
        let m = key_memory();
        let (a, b) = ([4, 0], [5, 0]);
        let other = {
            let m = Arc::clone(&m);
            thread::spawn(move || key_take(&m, b, 2))
        };
        assert_eq!(key_take(&m, a, 1), Admission::Admitted);
        assert_eq!(other.join().unwrap(), Admission::Admitted);
        assert_eq!((published(&m, a), published(&m, b)), (1, 1));
        assert_eq!(key_take(&m, a, 1), Admission::Refused);
        assert_eq!(key_take(&m, b, 1), Admission::Refused);
    });
}
