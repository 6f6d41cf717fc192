//! IpcMutex: a robust mutex in a file shared by processes, with a payload.
mod common;

use common::{on_thread, watchdog, TempDir, LONG, SHORT};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use surelock::errno::*;
use surelock::{IpcMutex, IpcOptions};

const HOLDER_ENV: &str = "SURELOCK_TEST_IPC_HOLDER";

/// Held while spawning a child, and by a test that needs its files open nowhere else: a child
/// between fork and exec holds copies of every descriptor of this process, so a file another
/// test just closed is still open there (the library rightly refuses to re-initialise it).
static SPAWNING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn with_payload(n: usize) -> IpcOptions {
    IpcOptions::new().payload_size(n)
}

/// Kills and reaps the child on every path, so a failed assertion leaves nothing running.
struct KillOnDrop(std::process::Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_lock_held_by_a_sigkilled_process_is_recovered_by_the_survivor() {
    if let Ok(path) = std::env::var(HOLDER_ENV) {
        // The child half (this same test, re-executed): take the lock, half-update the
        // payload, say so, and wait to be killed.
        let lock = IpcMutex::open(&path, &with_payload(64)).unwrap();
        let mut g = lock.lock_timeout(LONG).unwrap();
        g.payload_mut()[..7].copy_from_slice(b"dying..");
        println!("\nlocked"); // on its own line, after libtest's "test <name> ... "
        std::thread::sleep(std::time::Duration::from_secs(60));
        std::process::exit(3);
    }
    watchdog();
    let dir = TempDir::new();
    let path = dir.file("killed.lock");
    let lock = IpcMutex::open(&path, &with_payload(64)).unwrap();
    let spawning = SPAWNING.lock().unwrap_or_else(|e| e.into_inner());
    let mut child = KillOnDrop(Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "a_lock_held_by_a_sigkilled_process_is_recovered_by_the_survivor",
               "--nocapture", "--test-threads=1"])
        .env(HOLDER_ENV, &path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap());
    drop(spawning);
    // Bounded: the child prints at once or dies (EOF); the watchdog bounds the rest.
    let out = BufReader::new(child.0.stdout.take().unwrap());
    let locked = out.lines().map(|l| l.unwrap()).any(|l| l == "locked");
    assert!(locked, "the child never held the lock");
    assert_eq!(lock.try_lock().unwrap_err().code(), EBUSY);
    child.0.kill().unwrap(); // SIGKILL
    assert_eq!(child.0.wait().unwrap().signal(), Some(9));
    {
        let mut g = lock.lock_timeout(LONG).unwrap();
        assert!(g.owner_died(), "EOWNERDEAD is Ok with owner_died()");
        assert!(g.needs_recovery());
        assert_eq!(&g.payload()[..7], b"dying..");
        g.payload_mut()[..7].copy_from_slice(b"mended!");
        g.consistent().unwrap();
        assert!(!g.needs_recovery());
    }
    let g = lock.try_lock().unwrap();
    assert!(!g.owner_died() && !g.needs_recovery());
    assert_eq!(&g.payload()[..7], b"mended!");
}

#[test]
fn an_unrepaired_guard_leaves_the_lock_not_recoverable_for_everyone() {
    watchdog();
    let dir = TempDir::new();
    let path = dir.file("unrepaired.lock");
    let a = Arc::new(IpcMutex::open(&path, &IpcOptions::new()).unwrap());
    let b = IpcMutex::open(&path, &IpcOptions::new()).unwrap();
    let a2 = a.clone();
    // A thread that exits holding a robust mutex is an owner death too.
    on_thread(LONG, move || std::mem::forget(a2.lock().unwrap()));
    {
        let g = b.lock_timeout(LONG).unwrap();
        assert!(g.owner_died() && g.needs_recovery());
        // dropped without consistent()
    }
    let e = b.lock_timeout(LONG).unwrap_err();
    assert_eq!(e.code(), ENOTRECOVERABLE, "{}", e);
    assert_eq!(a.try_lock().unwrap_err().code(), ENOTRECOVERABLE);
    // Once nobody has it open, the next open re-initialises it.
    let _no_spawn = SPAWNING.lock().unwrap_or_else(|e| e.into_inner());
    drop(a);
    drop(b);
    let c = IpcMutex::open(&path, &IpcOptions::new()).unwrap();
    let g = c.lock_timeout(LONG).unwrap();
    assert!(!g.owner_died());
}

#[test]
fn other_threads_and_handles_are_excluded_and_see_the_payload() {
    watchdog();
    let dir = TempDir::new();
    let path = dir.file("shared.lock");
    let a = IpcMutex::open(&path, &with_payload(100)).unwrap();
    let b = Arc::new(IpcMutex::open(&path, &IpcOptions::new()).unwrap()); // 0 = as existing
    assert_eq!((a.payload_len(), b.payload_len()), (100, 100));
    let mut g = a.lock().unwrap();
    assert_eq!(g.payload().len(), 100, "bounded by the payload size, not the mapping");
    g.payload_mut()[95..].copy_from_slice(b"hello");
    let b2 = b.clone();
    let seen = on_thread(LONG, move || {
        (b2.try_lock().unwrap_err().code(), b2.lock_timeout(SHORT).unwrap_err().code())
    });
    assert_eq!(seen, (EBUSY, ETIMEDOUT));
    drop(g);
    let b2 = b.clone();
    let got = on_thread(LONG, move || b2.lock_timeout(LONG).unwrap().payload()[95..].to_vec());
    assert_eq!(got, b"hello");
    let none = IpcMutex::open(dir.file("none.lock"), &IpcOptions::new()).unwrap();
    assert!(none.lock().unwrap().payload_mut().is_empty());
}

#[test]
fn relocking_on_the_holding_thread_is_edeadlk_through_any_handle() {
    watchdog();
    let dir = TempDir::new();
    let plain = dir.file("plain.lock");
    let a = IpcMutex::open(&plain, &IpcOptions::new()).unwrap();
    let b = IpcMutex::open(&plain, &IpcOptions::new()).unwrap();
    let g = a.lock().unwrap();
    assert_eq!(a.lock().unwrap_err().code(), EDEADLK);
    assert_eq!(b.try_lock().unwrap_err().code(), EDEADLK);
    drop(g);
    // A recursive file would let the holder in again; two guards would alias the payload,
    // so the crate refuses the nested guard and leaves the outer hold as it was.
    let rec = dir.file("recursive.lock");
    let r1 = Arc::new(IpcMutex::open(&rec, &IpcOptions::new().recursive(true).payload_size(8)).unwrap());
    let r2 = IpcMutex::open(&rec, &IpcOptions::new()).unwrap();
    let mut outer = r1.lock().unwrap();
    for e in [r1.lock().unwrap_err(), r2.lock().unwrap_err(), r2.try_lock().unwrap_err()] {
        assert_eq!(e.code(), EDEADLK);
        assert!(e.message().contains("alias"), "{}", e);
    }
    outer.payload_mut()[0] = 1;
    let r1b = r1.clone();
    assert_eq!(on_thread(LONG, move || r1b.try_lock().unwrap_err().code()), EBUSY);
    drop(outer);
    assert_eq!(on_thread(LONG, move || r1.try_lock().unwrap().payload()[0]), 1, "released fully");
    // A different file is not nested: both held at once.
    let _x = a.lock().unwrap();
    let _y = r2.lock().unwrap();
}

#[test]
fn bad_paths_and_options_are_errors_and_refused_files_are_untouched() {
    watchdog();
    let dir = TempDir::new();
    let o = IpcOptions::new();
    let code = |p: &std::path::Path, o: &IpcOptions| IpcMutex::open(p, o).unwrap_err().code();

    let nul = IpcMutex::open("/tmp/a\0b.lock", &o).unwrap_err();
    assert_eq!(nul.code(), EINVAL);
    assert!(nul.message().contains("NUL byte at offset 6"), "{}", nul);
    assert_eq!(code(&dir.file("missing.lock"), &o.create(false)), ENOENT);
    assert!(!dir.file("missing.lock").exists());
    assert_eq!(code(&dir.file("mode.lock"), &o.mode(0o1777)), EINVAL);

    let real = dir.file("real.lock");
    drop(IpcMutex::open(&real, &with_payload(16)).unwrap());
    assert_eq!(code(&real, &with_payload(32)), EINVAL);
    assert_eq!(code(&real, &o.recursive(true)), EINVAL);

    let link = dir.file("link.lock");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let e = IpcMutex::open(&link, &o).unwrap_err();
    assert_eq!(e.code(), ELOOP);
    assert!(!e.message().is_empty());

    let junk = dir.file("junk.lock");
    std::fs::write(&junk, b"not a lock file").unwrap();
    assert_eq!(code(&junk, &o), EPROTO);
    assert_eq!(std::fs::read(&junk).unwrap(), b"not a lock file");
    assert_eq!(code(&dir.0, &o), EPROTO); // a directory

    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o660)).unwrap();
    let before = std::fs::read(&real).unwrap();
    assert_eq!(code(&real, &o), EPERM);
    assert_eq!(std::fs::read(&real).unwrap(), before);
    drop(IpcMutex::open(&real, &o.mode(0o660)).unwrap()); // asked for: accepted

    // unlink: refuses what is not a lock file, and symlinks.
    assert_eq!(IpcMutex::unlink(&junk).unwrap_err().code(), EPROTO);
    assert!(junk.exists());
    assert_eq!(IpcMutex::unlink(&link).unwrap_err().code(), ELOOP);
    assert_eq!(IpcMutex::unlink(dir.file("missing.lock")).unwrap_err().code(), ENOENT);
    assert_eq!(IpcMutex::unlink("/tmp/a\0b").unwrap_err().code(), EINVAL);
    IpcMutex::unlink(&real).unwrap();
    assert!(!real.exists());
}

#[test]
fn consistent_without_an_owner_death_is_einval() {
    watchdog();
    let dir = TempDir::new();
    let m = IpcMutex::open(dir.file("c.lock"), &IpcOptions::new()).unwrap();
    let mut g = m.lock().unwrap();
    assert_eq!(g.consistent().unwrap_err().code(), EINVAL);
    assert!(!g.needs_recovery());
}

#[test]
fn a_handle_held_through_a_forgotten_guard_is_leaked_not_unmapped() {
    watchdog();
    let dir = TempDir::new();
    let path = dir.file("forgotten.lock");
    let other = IpcMutex::open(&path, &with_payload(8)).unwrap();
    let m = IpcMutex::open(&path, &IpcOptions::new()).unwrap();
    std::mem::forget(m.lock().unwrap());
    drop(m); // close is EBUSY: the handle and its mapping stay
    // Still held by this thread (through the leaked handle): refused, never a crash.
    assert_eq!(other.try_lock().unwrap_err().code(), EDEADLK);
}
