//! `IpcMutex` over `surelock_ipc`: a robust mutex in a file, shared by every process that
//! opens it, with an optional shared payload.
use std::cell::RefCell;
use std::ffi::CString;
use std::fmt;
use std::marker::PhantomData;
use std::os::raw::c_int;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::NonNull;
use std::time::Duration;

use crate::error::check;
use crate::{acquired, errno, nanos, sys, Error, NotSend};

/// How to open an [`IpcMutex`]: by default create the file if it is missing, mode 0600
/// (exactly: umask is not applied), no payload, not recursive, only files of this user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpcOptions {
    flags: u32,
    mode: u32,
    payload_size: usize,
}

impl Default for IpcOptions {
    fn default() -> Self {
        IpcOptions::new()
    }
}

impl IpcOptions {
    pub fn new() -> Self {
        let o = sys::surelock_ipc_options_init();
        IpcOptions { flags: o.flags, mode: o.mode, payload_size: o.payload_size }
    }

    fn flag(mut self, flag: u32, on: bool) -> Self {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
        self
    }

    /// Create the file when it is missing (default true; false: `Err(ENOENT)` instead).
    pub fn create(self, create: bool) -> Self {
        self.flag(sys::SURELOCK_IPC_NOCREATE, !create)
    }

    /// Require a recursive file (fixed when the file is created; `Err(EINVAL)` for an
    /// existing file that is not). Without it, either kind opens. Note that this crate's
    /// guards never nest (see [`IpcMutex::lock`]); recursion is for C holders of the file.
    pub fn recursive(self, recursive: bool) -> Self {
        self.flag(sys::SURELOCK_IPC_RECURSIVE, recursive)
    }

    /// Accept a file owned by another user (a lock shared through group permissions).
    pub fn any_owner(self, any_owner: bool) -> Self {
        self.flag(sys::SURELOCK_IPC_ANY_OWNER, any_owner)
    }

    /// Permission bits of a created file (exactly these; beyond 0o777 is `Err(EINVAL)`).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Bytes of shared memory mapped with the lock; 0 = none, or as the existing file has.
    /// A non-zero size that differs from an existing file's is `Err(EINVAL)`.
    pub fn payload_size(mut self, payload_size: usize) -> Self {
        self.payload_size = payload_size;
        self
    }
}

/// One process's handle on a robust cross-process mutex file.
///
/// If a holder dies, even by SIGKILL, the next [`lock`](Self::lock) succeeds with
/// `guard.owner_died()`: repair the shared state, then call
/// [`guard.consistent()`](IpcGuard::consistent). A guard dropped without that makes the lock
/// `ENOTRECOVERABLE` for every process (until the file is re-initialised while nobody has it
/// open, or after a reboot), exactly as the C contract says.
///
/// Holds are owned by the OS thread (the guard is `!Send`). The handle itself may be shared
/// between threads; dropping it closes it (a handle still held through a forgotten guard is
/// leaked instead: a held robust mutex is never unmapped).
pub struct IpcMutex {
    raw: NonNull<sys::surelock_ipc>,
    payload: NonNull<u8>,
    payload_len: usize,
}

// Safety: the library's handle is used from any thread; the payload is reached only
// through a guard (one holder at a time).
unsafe impl Send for IpcMutex {}
unsafe impl Sync for IpcMutex {}

/// Proof that the calling thread holds an [`IpcMutex`]; gives the payload, unlocks on drop.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct IpcGuard<'a> {
    mutex: &'a IpcMutex,
    owner_died: bool,
    _not_send: NotSend,
}

thread_local! {
    /// The ipc handles this thread holds through live (or forgotten) guards. A recursive file
    /// would let a second guard of one thread succeed, and two guards would hand out aliasing
    /// `&mut` payloads: such a second lock is refused.
    static HELD: RefCell<Vec<*mut sys::surelock_ipc>> = const { RefCell::new(Vec::new()) };
}

/// Whether two handles are the same lock file, by the library's own test (a group refuses a
/// second handle of one file with EEXIST).
fn same_file(a: *mut sys::surelock_ipc, b: *mut sys::surelock_ipc) -> Result<bool, Error> {
    if a == b {
        return Ok(true);
    }
    let group = crate::create(sys::surelock_group_new)?;
    // Safety: a new group of ours and two live handles.
    let result = unsafe {
        match sys::surelock_group_add_ipc(group.as_ptr(), a) {
            0 => match sys::surelock_group_add_ipc(group.as_ptr(), b) {
                0 => Ok(false),
                errno::EEXIST => Ok(true),
                rc => Err(Error::last(rc)),
            },
            rc => Err(Error::last(rc)),
        }
    };
    // Safety: ours, never locked.
    unsafe { sys::surelock_group_free(group.as_ptr()) };
    result
}

fn path_to_cstring(path: &Path, what: &str) -> Result<CString, Error> {
    CString::new(path.as_os_str().as_bytes()).map_err(|e| {
        Error::new(errno::EINVAL, format!("{}: the path contains a NUL byte at offset {}", what,
                                          e.nul_position()))
    })
}

impl IpcMutex {
    /// Opens (creating it unless `options.create(false)`) the lock file at `path` and maps
    /// it. `Err`: `ELOOP` (a symlink), `EPERM` (another user's file, or group/world write
    /// bits the mode did not ask for), `EPROTO` (not a surelock lock file of this build),
    /// `ENOENT` (missing and not to be created), `EINVAL` (a NUL in the path, a mode beyond
    /// 0o777, a payload size that differs from the file's, `recursive` for a non-recursive
    /// file), `EBUSY`/`ETIMEDOUT` (kept busy by another program), or the system's own
    /// errors from open/mmap (`EACCES`, `ENOSPC`, ...). A refused file is not modified.
    pub fn open(path: impl AsRef<Path>, options: &IpcOptions) -> Result<IpcMutex, Error> {
        let cpath = path_to_cstring(path.as_ref(), "IpcMutex::open")?;
        let mut o = sys::surelock_ipc_options_init();
        o.flags = options.flags;
        o.mode = options.mode;
        o.payload_size = options.payload_size;
        let mut out = std::ptr::null_mut();
        // Safety: a NUL-terminated path, valid options and out-pointer.
        check(unsafe { sys::surelock_ipc_open(cpath.as_ptr(), &o, &mut out) })?;
        let raw = NonNull::new(out).expect("surelock_ipc_open returned 0 and NULL");
        let mut len = 0usize;
        // Safety: a live handle; the mapping lives as long as the handle.
        let p = unsafe { sys::surelock_ipc_payload(raw.as_ptr(), &mut len) } as *mut u8;
        let (payload, payload_len) = match NonNull::new(p) {
            Some(p) => (p, len),
            None => (NonNull::dangling(), 0),
        };
        Ok(IpcMutex { raw, payload, payload_len })
    }

    /// Removes the lock file (never done implicitly: other processes may still use it).
    /// `Err`: `ELOOP` (a symlink), `EPROTO` (not a surelock lock file), `EINVAL` (a NUL in
    /// the path), or unlink's errors (`ENOENT`, ...); nothing is removed then.
    pub fn unlink(path: impl AsRef<Path>) -> Result<(), Error> {
        let cpath = path_to_cstring(path.as_ref(), "IpcMutex::unlink")?;
        // Safety: a NUL-terminated path.
        check(unsafe { sys::surelock_ipc_unlink(cpath.as_ptr()) })
    }

    fn guard(&self, rc: c_int) -> Result<IpcGuard<'_>, Error> {
        let owner_died = acquired(rc)?;
        let raw = self.raw.as_ptr();
        // Err: the thread's locals are being destroyed (a lock from a TLS destructor).
        let nested = HELD.try_with(|held| -> Result<bool, Error> {
            for &other in held.borrow().iter() {
                if same_file(other, raw)? {
                    return Ok(true);
                }
            }
            held.borrow_mut().push(raw);
            Ok(false)
        });
        let refusal = match nested {
            Ok(Ok(false)) => return Ok(IpcGuard { mutex: self, owner_died, _not_send: PhantomData }),
            Ok(Ok(true)) => Error::new(errno::EDEADLK, "IpcMutex: this thread already holds \
                this lock file through another guard (guards never nest: their payloads would \
                alias)".into()),
            Ok(Err(e)) => e,
            Err(_) => Error::new(errno::EINVAL, "IpcMutex: cannot lock while this thread's \
                locals are being destroyed".into()),
        };
        // Undo this level; an outer guard keeps its own hold.
        // Safety: this thread holds it.
        unsafe { sys::surelock_ipc_unlock(raw) };
        Err(refusal)
    }

    /// Takes the lock, waiting as long as needed. `Ok` with `owner_died()` when the previous
    /// holder died. `Err`: `ENOTRECOVERABLE` (a holder unlocked after an owner death without
    /// `consistent()`), `EDEADLK` (this thread already holds the file, through any handle),
    /// `ENOMEM`.
    pub fn lock(&self) -> Result<IpcGuard<'_>, Error> {
        // Safety: a live handle.
        self.guard(unsafe { sys::surelock_ipc_lock(self.raw.as_ptr()) })
    }

    /// As [`lock`](Self::lock) without waiting: `Err(EBUSY)` when another thread holds it.
    pub fn try_lock(&self) -> Result<IpcGuard<'_>, Error> {
        // Safety: a live handle.
        self.guard(unsafe { sys::surelock_ipc_trylock(self.raw.as_ptr()) })
    }

    /// As [`lock`](Self::lock), waiting at most `timeout` (monotonic): `Err(ETIMEDOUT)`.
    pub fn lock_timeout(&self, timeout: Duration) -> Result<IpcGuard<'_>, Error> {
        // Safety: a live handle.
        self.guard(unsafe { sys::surelock_ipc_timedlock(self.raw.as_ptr(), nanos(timeout)) })
    }

    /// Bytes of shared payload mapped with the lock.
    pub fn payload_len(&self) -> usize {
        self.payload_len
    }

    /// The library handle, for passing to C code (valid as long as `self`).
    pub fn as_raw(&self) -> *mut sys::surelock_ipc {
        self.raw.as_ptr()
    }
}

impl Drop for IpcMutex {
    fn drop(&mut self) {
        // EBUSY while a thread holds it (a forgotten guard): leak the handle and its mapping.
        // Safety: our handle; no guard borrows it any more.
        let _ = unsafe { sys::surelock_ipc_close(self.raw.as_ptr()) };
    }
}

impl fmt::Debug for IpcMutex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpcMutex").field("payload_len", &self.payload_len).finish_non_exhaustive()
    }
}

impl IpcGuard<'_> {
    /// The previous holder died holding the lock (`EOWNERDEAD`): repair the payload, then
    /// call [`consistent`](Self::consistent).
    pub fn owner_died(&self) -> bool {
        self.owner_died
    }

    /// True between an owner death and [`consistent`](Self::consistent).
    pub fn needs_recovery(&self) -> bool {
        // Safety: a live handle.
        unsafe { sys::surelock_ipc_needs_recovery(self.mutex.raw.as_ptr()) == 1 }
    }

    /// Marks the protected state repaired after an owner death. `Err(EINVAL)` when nothing
    /// needs recovery.
    pub fn consistent(&mut self) -> Result<(), Error> {
        // Safety: a live handle held by this thread.
        check(unsafe { sys::surelock_ipc_consistent(self.mutex.raw.as_ptr()) })
    }

    /// The shared payload (empty when the file has none).
    pub fn payload(&self) -> &[u8] {
        // Safety: mapped for the handle's life; this thread holds the lock, and no other
        // guard of this thread can exist for the same file.
        unsafe { std::slice::from_raw_parts(self.mutex.payload.as_ptr(), self.mutex.payload_len) }
    }

    /// The shared payload, writable (only a process that ignores the lock could race).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        // Safety: as in payload(), and borrowed from the guard mutably.
        unsafe {
            std::slice::from_raw_parts_mut(self.mutex.payload.as_ptr(), self.mutex.payload_len)
        }
    }
}

impl Drop for IpcGuard<'_> {
    fn drop(&mut self) {
        let raw = self.mutex.raw.as_ptr();
        // Safety: this thread holds it (the guard is !Send).
        let rc = unsafe { sys::surelock_ipc_unlock(raw) };
        debug_assert_eq!(rc, 0, "surelock_ipc_unlock");
        let _ = HELD.try_with(|held| {
            let mut held = held.borrow_mut();
            if let Some(i) = held.iter().rposition(|&h| h == raw) {
                held.swap_remove(i);
            }
        });
    }
}

impl fmt::Debug for IpcGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpcGuard").field("owner_died", &self.owner_died)
            .field("payload_len", &self.mutex.payload_len).finish()
    }
}
