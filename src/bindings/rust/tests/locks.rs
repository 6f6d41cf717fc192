//! Mutex, RwLock, Condvar: error-checking, thread-owned, owner death reported.
mod common;

use common::{on_thread, watchdog, LONG, SHORT};
use std::sync::Arc;
use std::time::{Duration, Instant};
use surelock::errno::*;
use surelock::{Condvar, Mutex, RwLock};

#[test]
fn mutex_protects_its_data_across_threads() {
    watchdog();
    let m = Arc::new(Mutex::new(0u64));
    let threads: Vec<_> = (0..4).map(|_| {
        let m = m.clone();
        std::thread::spawn(move || {
            for _ in 0..2000 {
                let mut g = m.lock().unwrap();
                let v = *g;
                if v % 64 == 0 {
                    std::thread::yield_now();
                }
                *g = v + 1;
            }
        })
    }).collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(*m.lock().unwrap(), 8000);
    assert_eq!(Arc::try_unwrap(m).unwrap().into_inner().ok(), Some(8000));
}

#[test]
fn relocking_a_mutex_on_the_holding_thread_is_edeadlk_never_a_hang() {
    watchdog();
    let m = Mutex::new(1);
    let g = m.lock().unwrap();
    for e in [m.lock().unwrap_err(), m.try_lock().unwrap_err(), m.lock_timeout(LONG).unwrap_err()] {
        assert_eq!(e.code(), EDEADLK, "{}", e);
        assert!(!e.message().is_empty());
        assert_eq!(std::io::Error::from(e).kind(), std::io::Error::from_raw_os_error(EDEADLK).kind());
    }
    drop(g);
    assert_eq!(*m.try_lock().unwrap(), 1);
}

#[test]
fn a_held_mutex_is_busy_and_times_out_for_other_threads() {
    watchdog();
    let m = Arc::new(Mutex::new(()));
    let g = m.lock().unwrap();
    let m2 = m.clone();
    let (busy, late, waited) = on_thread(LONG, move || {
        let start = Instant::now();
        let late = m2.lock_timeout(SHORT).unwrap_err().code();
        (m2.try_lock().unwrap_err().code(), late, start.elapsed())
    });
    assert_eq!((busy, late), (EBUSY, ETIMEDOUT));
    assert!(waited >= SHORT, "the timed lock returned after {:?}", waited);
    drop(g);
    let m2 = m.clone();
    assert!(on_thread(LONG, move || m2.lock_timeout(LONG).is_ok()));
}

#[test]
fn mutex_owner_death_is_success_with_owner_died_on_the_guard() {
    watchdog();
    let m = Arc::new(Mutex::new(vec![1]));
    let m2 = m.clone();
    on_thread(LONG, move || {
        let mut g = m2.lock().unwrap();
        g.push(2); // half-way through an update, then the thread exits
        std::mem::forget(g);
    });
    let mut g = m.lock_timeout(LONG).unwrap();
    assert!(g.owner_died());
    assert_eq!(*g, vec![1, 2]);
    g.push(3);
    drop(g);
    assert!(!m.lock().unwrap().owner_died());
    // A forgotten hold keeps the mutex from being freed: into_inner gives it back.
    let m = Arc::try_unwrap(m).unwrap();
    std::mem::forget(m.lock().unwrap());
    let m = m.into_inner().unwrap_err();
    assert_eq!(m.lock().unwrap_err().code(), EDEADLK);
}

#[test]
fn rwlock_readers_share_and_a_writer_excludes() {
    watchdog();
    let l = Arc::new(RwLock::new(5));
    let r = l.read().unwrap();
    let l2 = l.clone();
    let other = on_thread(LONG, move || {
        let shared = *l2.try_read().unwrap();
        (shared, l2.try_write().unwrap_err().code(), l2.write_timeout(SHORT).unwrap_err().code())
    });
    assert_eq!(other, (5, EBUSY, ETIMEDOUT));
    drop(r);
    let mut w = l.write().unwrap();
    *w += 1;
    let l2 = l.clone();
    let other = on_thread(LONG, move || {
        (l2.try_read().unwrap_err().code(), l2.read_timeout(SHORT).unwrap_err().code())
    });
    assert_eq!(other, (EBUSY, ETIMEDOUT));
    drop(w);
    assert_eq!(*l.read_timeout(LONG).unwrap(), 6);
}

#[test]
fn asking_for_a_held_rwlock_again_in_either_mode_is_edeadlk() {
    watchdog();
    let l = RwLock::new(0);
    {
        let _r = l.read().unwrap();
        assert_eq!(l.read().unwrap_err().code(), EDEADLK);
        assert_eq!(l.try_read().unwrap_err().code(), EDEADLK);
        assert_eq!(l.write().unwrap_err().code(), EDEADLK);
        assert_eq!(l.write_timeout(LONG).unwrap_err().code(), EDEADLK);
    }
    let _w = l.write().unwrap();
    assert_eq!(l.read_timeout(LONG).unwrap_err().code(), EDEADLK);
    assert_eq!(l.try_write().unwrap_err().code(), EDEADLK);
}

#[test]
fn a_dead_writer_is_reported_and_a_dead_reader_is_not() {
    watchdog();
    let l = Arc::new(RwLock::new(0));
    let l2 = l.clone();
    on_thread(LONG, move || std::mem::forget(l2.read().unwrap()));
    assert!(!l.write_timeout(LONG).unwrap().owner_died());
    let l2 = l.clone();
    on_thread(LONG, move || std::mem::forget(l2.write().unwrap()));
    let r = l.read_timeout(LONG).unwrap();
    assert!(r.owner_died());
}

#[test]
fn condvar_wakes_a_waiter_that_holds_the_mutex_again() {
    watchdog();
    let pair = Arc::new((Mutex::new(false), Condvar::new()));
    let p2 = pair.clone();
    let t = std::thread::spawn(move || {
        let (m, c) = &*p2;
        let mut g = m.lock().unwrap();
        let r = c.wait_while_timeout(&mut g, LONG, |ready| !*ready).unwrap();
        assert!(!r.timed_out());
        assert!(*g);
        *g = false; // held again: the write is ours
    });
    std::thread::sleep(Duration::from_millis(20));
    {
        let (m, c) = &*pair;
        *m.lock().unwrap() = true;
        c.notify_all();
    }
    t.join().unwrap();
    assert!(!*pair.0.lock().unwrap());
}

#[test]
fn condvar_timeout_returns_with_the_mutex_held() {
    watchdog();
    let m = Mutex::new(0);
    let c = Condvar::new();
    let mut g = m.lock().unwrap();
    let start = Instant::now();
    let r = c.wait_timeout(&mut g, SHORT).unwrap();
    assert!(r.timed_out() || start.elapsed() < SHORT, "a wake-up before the time is spurious");
    *g += 1; // still held
    assert_eq!(m.try_lock().unwrap_err().code(), EDEADLK);
    let r = c.wait_while_timeout(&mut g, SHORT, |_| true).unwrap();
    assert!(r.timed_out());
    c.notify_one(); // nobody waits: nothing happens
    drop(g);
    assert_eq!(*m.lock().unwrap(), 1);
}
