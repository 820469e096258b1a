//! The segment: a file in `/dev/shm` mapped into every process that opens the store, holding
//! a header and a fixed number of limiter slots.
//!
//! Layout (version [`LAYOUT_VERSION`]; every field a little-endian `u64` at a fixed offset):
//! the header (`MAGIC`, the layout version, the slot count, the slot size) in the first 4 KiB,
//! then `capacity` slots of [`SLOT_SIZE`] bytes. A slot: its state (free, being written,
//! ready), its kind, its configuration, its name, and at offset [`WORDS_AT`] the limiter's
//! words (`admission_core::shared`). Slots are taken in order and never given back: the
//! segment's capacity is fixed when it is created, and `unlink` starts over.
//!
//! Creation is race-free without a lock: the file is created with `O_EXCL`, sized, and its
//! header written; `MAGIC` is stored last, so an opener that finds it has a whole header. A
//! slot is claimed with a CAS on its state, and processes claim the first free slot only,
//! after reading every slot before it, so two processes opening the same limiter at once
//! race for the same slot and the loser finds the winner's.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

/// "ADMSHM01" as a little-endian word.
const MAGIC: u64 = u64::from_le_bytes(*b"ADMSHM01");
/// Changes whenever the layout does: a segment of another version is refused.
pub const LAYOUT_VERSION: u64 = 1;
const HEADER_SIZE: usize = 4096;
pub const SLOT_SIZE: usize = 2048;
/// Where a slot's limiter words start (aligned to a cache line pair).
pub const WORDS_AT: usize = 256;
/// Longest limiter name, in bytes of UTF-8.
pub const MAX_NAME: usize = 128;
const NAME_AT: usize = 64;

const FREE: u64 = 0;
const WRITING: u64 = 1;
const READY: u64 = 2;

/// What a slot holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u64)]
pub enum Kind {
    TokenBucket = 1,
    Semaphore = 2,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::TokenBucket => "TokenBucket",
            Self::Semaphore => "Semaphore",
        }
    }

    fn from_word(word: u64) -> Option<Self> {
        match word {
            1 => Some(Self::TokenBucket),
            2 => Some(Self::Semaphore),
            _ => None,
        }
    }
}

/// A limiter's configuration as stored in its slot: compared word for word at open.
pub type Config = [u64; 4];

/// One mapping of the segment; unmapped when the last limiter using it is gone.
pub struct Segment {
    base: NonNull<u8>,
    len: usize,
    capacity: usize,
    pub path: PathBuf,
}

// SAFETY: the mapping is plain memory accessed only through atomics (`word`), from any
// thread; the pointer never changes while the Segment lives.
unsafe impl Send for Segment {}
// SAFETY: as above: shared references only hand out `&AtomicU64`.
unsafe impl Sync for Segment {}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly what mmap returned; nothing borrows the mapping
        // any more (every limiter holding a view holds an `Arc<Segment>`).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

fn os_error(what: &str, path: &std::path::Path, e: std::io::Error) -> PyErr {
    PyOSError::new_err(format!("{what} {}: {e}", path.display()))
}

impl Segment {
    /// Opens the segment at `path`, creating it with `capacity` slots and permissions `mode`
    /// if it does not exist.
    pub fn open(path: PathBuf, capacity: usize, mode: u32) -> PyResult<Self> {
        let len = HEADER_SIZE + capacity * SLOT_SIZE;
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
        {
            Ok(file) => {
                file.set_len(len as u64)
                    .map_err(|e| os_error("cannot size", &path, e))?;
                let segment = Self::map(&file, len, capacity, path)?;
                segment.word(8).store(LAYOUT_VERSION, Ordering::Relaxed);
                segment.word(16).store(capacity as u64, Ordering::Relaxed);
                segment.word(24).store(SLOT_SIZE as u64, Ordering::Relaxed);
                segment.word(0).store(MAGIC, Ordering::Release);
                Ok(segment)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::attach(path),
            Err(e) => Err(os_error("cannot create", &path, e)),
        }
    }

    /// Maps an existing segment, once its creator has written the header.
    fn attach(path: PathBuf) -> PyResult<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| os_error("cannot open", &path, e))?;
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let size = file
                .metadata()
                .map_err(|e| os_error("cannot stat", &path, e))?
                .len() as usize;
            if size >= HEADER_SIZE {
                let header = Self::map(&file, HEADER_SIZE, 0, path.clone())?;
                let magic = header.word(0).load(Ordering::Acquire);
                if magic == MAGIC {
                    let version = header.word(8).load(Ordering::Relaxed);
                    if version != LAYOUT_VERSION {
                        return Err(PyRuntimeError::new_err(format!(
                            "{} was made by another version of admission (layout {version}, \
                             this one reads layout {LAYOUT_VERSION}): stop the processes using it \
                             and remove it (SharedMemory.unlink())",
                            path.display()
                        )));
                    }
                    let capacity = header.word(16).load(Ordering::Relaxed) as usize;
                    let slot_size = header.word(24).load(Ordering::Relaxed) as usize;
                    let len = HEADER_SIZE + capacity * SLOT_SIZE;
                    if slot_size != SLOT_SIZE || size < len {
                        return Err(PyRuntimeError::new_err(format!(
                            "{} is damaged (size {size}, {capacity} slots of {slot_size} \
                             bytes): remove it (SharedMemory.unlink())",
                            path.display()
                        )));
                    }
                    return Self::map(&file, len, capacity, path);
                }
                if magic != 0 {
                    return Err(PyRuntimeError::new_err(format!(
                        "{} is not an admission shared-memory segment",
                        path.display()
                    )));
                }
            }
            if Instant::now() >= deadline {
                return Err(PyRuntimeError::new_err(format!(
                    "{} was never initialized (its creator died while creating it?): remove \
                     it (SharedMemory.unlink())",
                    path.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn map(file: &File, len: usize, capacity: usize, path: PathBuf) -> PyResult<Self> {
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh shared read-write mapping of `len` bytes of an open file, which
        // is at least that long (checked or sized by the caller); the kernel picks the
        // address. The mapping stays valid after `file` is closed.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(os_error(
                "cannot map",
                &path,
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Self {
            base: NonNull::new(base.cast()).expect("mmap never returns null on success"),
            len,
            capacity,
            path,
        })
    }

    /// The word at byte `offset` of the segment.
    pub fn word(&self, offset: usize) -> &AtomicU64 {
        assert!(
            offset % 8 == 0 && offset + 8 <= self.len,
            "offset {offset} out of the segment"
        );
        // SAFETY: in bounds and 8-aligned (the mapping is page-aligned), checked above; the
        // memory lives as long as `self`. Every process touches the segment only through
        // atomics, so shared mutation is sound (as between threads). The file is the
        // user's own (0600 by default): another process of the same user truncating it
        // would fault this one, as it could corrupt any of its memory anyway.
        unsafe { &*self.base.as_ptr().add(offset).cast::<AtomicU64>() }
    }

    /// The words of type `T` (an `admission_core::shared` layout: `#[repr(C)]`, atomics
    /// only) of slot `slot`.
    pub fn words<T>(&self, slot: usize) -> &T {
        let offset = HEADER_SIZE + slot * SLOT_SIZE + WORDS_AT;
        assert!(
            slot < self.capacity
                && WORDS_AT + std::mem::size_of::<T>() <= SLOT_SIZE
                && std::mem::align_of::<T>() <= 64,
            "slot {slot} out of the segment"
        );
        // SAFETY: in bounds and aligned (checked above: slots are 64-byte aligned); `T` is
        // made of `AtomicU64`s only, for which any bytes (zeroes at creation) are valid;
        // access is atomic only, as in `word`.
        unsafe { &*self.base.as_ptr().add(offset).cast::<T>() }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn slot_word(&self, slot: usize, offset: usize) -> &AtomicU64 {
        self.word(HEADER_SIZE + slot * SLOT_SIZE + offset)
    }

    fn name_of(&self, slot: usize) -> String {
        let len = (self.slot_word(slot, NAME_AT).load(Ordering::Relaxed) as usize).min(MAX_NAME);
        let bytes: Vec<u8> = (0..len.div_ceil(8))
            .flat_map(|i| {
                self.slot_word(slot, NAME_AT + 8 + i * 8)
                    .load(Ordering::Relaxed)
                    .to_le_bytes()
            })
            .take(len)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn config_of(&self, slot: usize) -> Config {
        std::array::from_fn(|i| self.slot_word(slot, 16 + 8 * i).load(Ordering::Relaxed))
    }

    /// `(slot, kind, name, configuration)` of every ready slot.
    pub fn slots(&self) -> Vec<(usize, Kind, String, Config)> {
        (0..self.capacity)
            .take_while(|&s| self.slot_word(s, 0).load(Ordering::Acquire) != FREE)
            .filter(|&s| self.slot_word(s, 0).load(Ordering::Acquire) == READY)
            .filter_map(|s| {
                let kind = Kind::from_word(self.slot_word(s, 8).load(Ordering::Relaxed))?;
                Some((s, kind, self.name_of(s), self.config_of(s)))
            })
            .collect()
    }

    /// The slot of limiter `name`: the existing one (its kind and configuration must be
    /// `kind` and `config`), or a new one. `describe` renders a configuration for errors.
    pub fn slot(
        &self,
        name: &str,
        kind: Kind,
        config: Config,
        describe: impl Fn(Kind, &Config) -> String,
    ) -> PyResult<usize> {
        if name.is_empty() || name.len() > MAX_NAME {
            return Err(PyValueError::new_err(format!(
                "a limiter in shared memory needs a name of 1 to {MAX_NAME} bytes, got {name:?}"
            )));
        }
        let mut slot = 0;
        while slot < self.capacity {
            let state = self.slot_word(slot, 0);
            match state.load(Ordering::Acquire) {
                FREE => {
                    if state
                        .compare_exchange(FREE, WRITING, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        self.slot_word(slot, 8)
                            .store(kind as u64, Ordering::Relaxed);
                        for (i, c) in config.iter().enumerate() {
                            self.slot_word(slot, 16 + 8 * i)
                                .store(*c, Ordering::Relaxed);
                        }
                        self.slot_word(slot, NAME_AT)
                            .store(name.len() as u64, Ordering::Relaxed);
                        for (i, chunk) in name.as_bytes().chunks(8).enumerate() {
                            let mut bytes = [0; 8];
                            bytes[..chunk.len()].copy_from_slice(chunk);
                            self.slot_word(slot, NAME_AT + 8 + i * 8)
                                .store(u64::from_le_bytes(bytes), Ordering::Relaxed);
                        }
                        state.store(READY, Ordering::Release);
                        return Ok(slot);
                    }
                    // Lost the race for this slot: read what the winner writes.
                    continue;
                }
                WRITING => {
                    // Written in a few stores by a live process; a dead writer leaves it.
                    std::thread::yield_now();
                    self.wait_ready(slot)?;
                    continue;
                }
                _ => {}
            }
            if self.name_of(slot) == name {
                let found = Kind::from_word(self.slot_word(slot, 8).load(Ordering::Relaxed));
                let existing = self.config_of(slot);
                if found != Some(kind) || existing != config {
                    let what = found.map_or_else(
                        || "an unknown limiter".to_owned(),
                        |k| describe(k, &existing),
                    );
                    return Err(PyValueError::new_err(format!(
                        "{name:?} in {} is {what}, not {}: every process must open it with \
                         the same configuration (or use another name)",
                        self.path.display(),
                        describe(kind, &config)
                    )));
                }
                return Ok(slot);
            }
            slot += 1;
        }
        Err(PyRuntimeError::new_err(format!(
            "{} is full: all {} limiter slots are taken (its capacity is fixed when it is \
             created: unlink it and create it with a larger capacity=)",
            self.path.display(),
            self.capacity
        )))
    }

    fn wait_ready(&self, slot: usize) -> PyResult<()> {
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.slot_word(slot, 0).load(Ordering::Acquire) == WRITING {
            if Instant::now() >= deadline {
                return Err(PyRuntimeError::new_err(format!(
                    "slot {slot} of {} was never finished (its writer died?): unlink the \
                     segment",
                    self.path.display()
                )));
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        Ok(())
    }
}
