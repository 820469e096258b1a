//! The segment: a file in `/dev/shm` mapped into every process that opens the store, holding
//! a header and a fixed number of limiter slots.
//!
//! Layout (version [`LAYOUT_VERSION`]; every field a little-endian `u64` at a fixed offset):
//! the header (`MAGIC`, the layout version, the slot count, the slot size, a random instance
//! number) in the first 4 KiB, then `capacity` slots of [`SLOT_SIZE`] bytes. A slot: its state (free, being written,
//! ready), its kind, its configuration, its name, and at offset [`WORDS_AT`] the limiter's
//! words (`admission_core::shared`). Slots are taken in order and never given back: the
//! segment's capacity is fixed when it is created, and `unlink` starts over.
//!
//! A keyed limiter's table does not fit a slot: it is a file of its own, next to the
//! segment's and named after the segment's instance number and the slot
//! (`admission.NAME.keys-INSTANCE-SLOT`), mapped the same way: a header (`TABLE_MAGIC`, the
//! layout version, the slot count, the random hash key of its keys), the counter stripes in
//! the next 4 KiB, then the key slots (`admission_core::shared_keyed`).
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

use admission_core::shared_keyed::{KeySlot, KeyedCounters, STRIPES};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use super::os;

/// "ADMSHM01" as a little-endian word.
const MAGIC: u64 = u64::from_le_bytes(*b"ADMSHM01");
/// "ADMKEY01": the file of one keyed limiter's table.
const TABLE_MAGIC: u64 = u64::from_le_bytes(*b"ADMKEY01");
/// Changes whenever the layout does: a segment of another version is refused. 2: keyed
/// token buckets (their kind, `max_keys` in the configuration, the instance number).
pub const LAYOUT_VERSION: u64 = 2;
const HEADER_SIZE: usize = 4096;
/// Where a file's header words after the version start.
const HEADER_AT: usize = 16;
/// Where a table's key slots start (its counter stripes fill the page before).
const TABLE_SLOTS_AT: usize = 2 * HEADER_SIZE;
const MAX_CAPACITY: usize = 65_536;
const MAX_TABLE_SLOTS: usize = 1 << 31;
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
    KeyedTokenBucket = 3,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::TokenBucket => "TokenBucket",
            Self::Semaphore => "Semaphore",
            Self::KeyedTokenBucket => "KeyedTokenBucket",
        }
    }

    fn from_word(word: u64) -> Option<Self> {
        match word {
            1 => Some(Self::TokenBucket),
            2 => Some(Self::Semaphore),
            3 => Some(Self::KeyedTokenBucket),
            _ => None,
        }
    }
}

/// A limiter's configuration as stored in its slot: compared word for word at open.
pub type Config = [u64; 5];

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
    /// if it does not exist (with a random instance number: its keyed limiters' files say it).
    pub fn open(path: PathBuf, capacity: usize, mode: u32) -> PyResult<Self> {
        let header = [capacity as u64, SLOT_SIZE as u64, os::random_word()];
        Self::open_file(path, mode, MAGIC, header, |h| {
            let capacity = h[0] as usize;
            (h[1] == SLOT_SIZE as u64 && capacity <= MAX_CAPACITY)
                .then_some((HEADER_SIZE + capacity * SLOT_SIZE, capacity))
        })
    }

    /// Opens the table of keyed limiter `slot` (its file is named after the segment's
    /// instance), creating it with `slots` key slots and a random hash key if it does not
    /// exist; its slot count must be `slots`.
    pub fn open_table(&self, slot: usize, slots: usize, mode: u32) -> PyResult<Self> {
        let path = self.table_path(slot);
        let header = [slots as u64, os::random_word(), os::random_word()];
        let table = Self::open_file(path, mode, TABLE_MAGIC, header, |h| {
            let n = h[0] as usize;
            (n.is_power_of_two() && n <= MAX_TABLE_SLOTS)
                .then_some((TABLE_SLOTS_AT + n * std::mem::size_of::<KeySlot>(), n))
        })?;
        if table.capacity != slots {
            return Err(PyRuntimeError::new_err(format!(
                "{} has {} key slots, its limiter needs {slots}: remove the store \
                 (SharedMemory.unlink())",
                table.path.display(),
                table.capacity
            )));
        }
        Ok(table)
    }

    /// The file of the table of keyed limiter `slot` of this segment.
    pub fn table_path(&self, slot: usize) -> PathBuf {
        let instance = self.word(HEADER_AT + 16).load(Ordering::Relaxed);
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".keys-{instance:016x}-{slot}"));
        PathBuf::from(name)
    }

    /// A table's hash key: random per table, the same in every process.
    pub fn table_key(&self) -> [u64; 2] {
        [8, 16].map(|at| self.word(HEADER_AT + at).load(Ordering::Relaxed))
    }

    /// A table's key slots and counter stripes.
    pub fn table(&self) -> (&[KeySlot], &[KeyedCounters]) {
        assert!(
            TABLE_SLOTS_AT + self.capacity * std::mem::size_of::<KeySlot>() <= self.len,
            "not a table"
        );
        // SAFETY: in bounds (checked above) and aligned (page-aligned mapping, offsets
        // multiples of 64); both types are `#[repr(C)]` atomics only, valid for any bytes
        // (zeroes at creation); they live as long as `self`; access is atomic only, as in
        // `word`.
        unsafe {
            let base = self.base.as_ptr();
            (
                std::slice::from_raw_parts(
                    base.add(TABLE_SLOTS_AT).cast::<KeySlot>(),
                    self.capacity,
                ),
                std::slice::from_raw_parts(base.add(HEADER_SIZE).cast::<KeyedCounters>(), STRIPES),
            )
        }
    }

    /// Creates the file at `path` (a header of `magic`, the layout version and `header`,
    /// `magic` stored last) or maps the existing one once its creator has written the
    /// header. `size` gives the file's length and capacity from a header, `None` if the
    /// header makes no sense.
    fn open_file(
        path: PathBuf,
        mode: u32,
        magic: u64,
        header: [u64; 3],
        size: impl Fn(&[u64; 3]) -> Option<(usize, usize)>,
    ) -> PyResult<Self> {
        let (len, capacity) = size(&header).expect("the creator's header is valid");
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
                for (i, w) in header.iter().enumerate() {
                    segment.word(HEADER_AT + 8 * i).store(*w, Ordering::Relaxed);
                }
                segment.word(0).store(magic, Ordering::Release);
                Ok(segment)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Self::attach(path, magic, size)
            }
            Err(e) => Err(os_error("cannot create", &path, e)),
        }
    }

    /// Maps an existing file, once its creator has written the header.
    fn attach(
        path: PathBuf,
        magic_wanted: u64,
        size_of: impl Fn(&[u64; 3]) -> Option<(usize, usize)>,
    ) -> PyResult<Self> {
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
                if magic == magic_wanted {
                    let version = header.word(8).load(Ordering::Relaxed);
                    if version != LAYOUT_VERSION {
                        return Err(PyRuntimeError::new_err(format!(
                            "{} was made by another version of admission (layout {version}, \
                             this one reads layout {LAYOUT_VERSION}): stop the processes using it \
                             and remove it (SharedMemory.unlink())",
                            path.display()
                        )));
                    }
                    let words: [u64; 3] = std::array::from_fn(|i| {
                        header.word(HEADER_AT + 8 * i).load(Ordering::Relaxed)
                    });
                    return match size_of(&words) {
                        Some((len, capacity)) if size >= len => {
                            Self::map(&file, len, capacity, path)
                        }
                        _ => Err(PyRuntimeError::new_err(format!(
                            "{} is damaged (size {size}, header {words:?}): remove it \
                             (SharedMemory.unlink())",
                            path.display()
                        ))),
                    };
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
