//! The disk under the log engine, behind a small trait so tests and the simulator can make
//! I/O fail, fill up, or lose what was never synced.
//!
//! Owns: [`Disk`] / [`DiskFile`], the real io_uring implementation [`UringDisk`] (glommio
//! `DmaFile`, O_DIRECT), and [`MemDisk`], an in-memory disk with injectable faults and a
//! `crash()` that drops every write not covered by a sync.
//! Must not: know the log's format (files are block-aligned bytes here), or return from
//! `write_durable` before the bytes are durable.
//!
//! Futures here are `!Send` by design: a shard's engine lives on one pinned executor.
//!
//! # The poll ring (why `UringDisk::open` opens a write-only file first)
//! glommio 0.9 probes IOPOLL support once per device and executor with a read on its poll
//! ring. On this project's reference machine (virtio disk, `/sys/block/vda/queue/io_poll` = 0)
//! the probe succeeds anyway, every `DmaFile` I/O then goes to the poll ring and the executor
//! spins at 100% CPU while any of it is in flight (glommio issue #670). The probe fails — and
//! polling stays off for the device — when the first `DmaFile` opened on it is write-only. We
//! rely on that side effect, so `UringDisk::open` does it and the engine asserts, after its
//! first write, that the poll ring saw no writes (see `assert_poll_ring_unused`).

#![allow(async_fn_in_trait)] // thread-per-core: no future here is ever sent across threads

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{DmaBuffer, DmaFile, OpenOptions, ReadResult};

/// A directory of files, as the log engine needs it.
pub trait Disk: 'static {
    type File: DiskFile;
    /// Opens an existing file for reading and for durable writes ([`DiskFile::write_durable`]).
    async fn open(&self, name: &str) -> io::Result<Self::File>;
    /// Creates a new, empty file (fails if it exists) for preparing: plain writes, then `sync`.
    async fn create(&self, name: &str) -> io::Result<Self::File>;
    async fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    async fn remove(&self, name: &str) -> io::Result<()>;
    /// Makes creations, renames and removals durable.
    async fn sync_dir(&self) -> io::Result<()>;
    /// Names of the files in the directory (any order).
    fn list(&self) -> io::Result<Vec<String>>;
    /// Called once after the engine's first data write: a place to assert what the
    /// implementation relies on.
    fn after_first_write(&self) {}
}

/// One file. Positions and lengths of reads and writes are multiples of `BLOCK_BYTES`.
pub trait DiskFile: 'static {
    /// An aligned buffer the file can write from without copying.
    type Buf: AsRef<[u8]> + AsMut<[u8]>;
    type ReadBuf: std::ops::Deref<Target = [u8]>;
    fn alloc(&self, len: usize) -> Self::Buf;
    async fn write_at(&self, buf: Self::Buf, pos: u64) -> io::Result<()>;
    /// Writes `buf` at `pos` and returns once it is durable: the log's group commit. On a file
    /// from [`Disk::open`] this is ONE I/O (O_DIRECT|O_DSYNC), not a write and an fdatasync.
    async fn write_durable(&self, buf: Self::Buf, pos: u64) -> io::Result<()>;
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Self::ReadBuf>;
    /// fdatasync: durability of every completed write to this file is established here.
    async fn sync(&self) -> io::Result<()>;
    /// Reserves `len` bytes of space (fallocate, file size unchanged).
    async fn allocate(&self, len: u64) -> io::Result<()>;
    async fn size_bytes(&self) -> io::Result<u64>;
}

/// glommio's own conversion to `io::Error` keeps the message but drops the OS error code;
/// we keep the code, since ENOSPC must become `Error::NoSpace`.
fn glommio_io(e: glommio::GlommioError<()>) -> io::Error {
    match e {
        glommio::GlommioError::EnhancedIoError { source, .. } | glommio::GlommioError::IoError(source) => source,
        other => io::Error::from(other),
    }
}

/// How a group commit is made durable (`LogConfig::sync_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// By the filesystem: `ODsync` on ext4, xfs and btrfs, `Fdatasync` anywhere else.
    #[default]
    Auto,
    /// One O_DIRECT|O_DSYNC write per group.
    ODsync,
    /// An O_DIRECT write, then fdatasync.
    Fdatasync,
}

/// What `UringDisk::open` found and chose for a log directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durability {
    /// The filesystem, by its statfs magic ("unknown" if not one corekv knows).
    pub filesystem: &'static str,
    /// `ODsync` or `Fdatasync`: never `Auto`.
    pub sync: SyncMode,
    /// Whether fallocate works there (else segments are reserved by writing zeroes alone).
    pub fallocate: bool,
}

impl Durability {
    pub fn sync_name(&self) -> &'static str {
        match self.sync {
            SyncMode::ODsync => "o_dsync",
            _ => "fdatasync",
        }
    }
}

/// Filesystems (statfs magic, name) whose io_uring O_DIRECT writes honour O_DSYNC.
const DSYNC_FILESYSTEMS: [(i64, &str); 3] = [(0xEF53, "ext4"), (0x5846_5342, "xfs"), (0x9123_683E, "btrfs")];
/// Others corekv names in its log line (none of them trusted with O_DSYNC).
const OTHER_FILESYSTEMS: [(i64, &str); 3] = [(0x6573_5546, "fuse"), (0x0102_1994, "tmpfs"), (0x6969, "nfs")];

/// The filesystem holding `dir`, by name, and whether it honours O_DSYNC on async direct writes.
fn filesystem_of(dir: &Path) -> io::Result<(&'static str, bool)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: `path` is a valid C string; `st` is a writable statfs the call fills in.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: see above; statfs reads the path and writes only `st`.
    if unsafe { libc::statfs(path.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let magic = st.f_type as i64;
    if let Some((_, name)) = DSYNC_FILESYSTEMS.iter().find(|(m, _)| *m == magic) {
        return Ok((name, true));
    }
    let name = OTHER_FILESYSTEMS
        .iter()
        .find(|(m, _)| *m == magic)
        .map_or("unknown", |(_, n)| n);
    Ok((name, false))
}

/// The real disk: glommio `DmaFile`s (O_DIRECT, io_uring main ring) in one directory.
pub struct UringDisk {
    dir: PathBuf,
    durability: Durability,
}

impl UringDisk {
    /// Opens `dir` (created if missing, 0700), turns glommio's poll ring off for its device on
    /// this executor, and decides how writes are made durable there (see the module doc). Must
    /// run inside a glommio executor.
    pub async fn open(dir: &Path, mode: SyncMode) -> io::Result<UringDisk> {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let probe_path = dir.join("iopoll-probe");
        let probe = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .dma_open(&probe_path)
            .await
            .map_err(glommio_io)?;
        // FUSE has no fallocate (EOPNOTSUPP). Any other failure (a full disk) says it exists:
        // the segments' own allocations report their errors when they happen.
        let probed = probe.pre_allocate(BLOCK_PROBE_BYTES, true).await.map_err(glommio_io);
        let fallocate = !matches!(probed, Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP));
        probe.close().await.map_err(glommio_io)?;
        std::fs::remove_file(&probe_path)?;
        let (filesystem, dsync_ok) = filesystem_of(dir)?;
        let sync = match mode {
            SyncMode::Auto if dsync_ok => SyncMode::ODsync,
            SyncMode::Auto => SyncMode::Fdatasync,
            forced => forced,
        };
        let durability = Durability {
            filesystem,
            sync,
            fallocate,
        };
        tracing::info!(
            dir = %dir.display(),
            filesystem,
            group_commit = if sync == SyncMode::ODsync { "one O_DSYNC write" } else { "a write, then fdatasync" },
            fallocate = if fallocate { "yes" } else { "no: segments are zero-filled" },
            "raft log durability"
        );
        Ok(UringDisk {
            dir: dir.to_path_buf(),
            durability,
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// What this disk found and chose at open.
    pub fn durability(&self) -> Durability {
        self.durability
    }
}

/// fallocate is probed with this many bytes.
const BLOCK_PROBE_BYTES: u64 = 4096;

impl Disk for UringDisk {
    type File = UringFile;

    /// O_DSYNC where the filesystem honours it: a write through this handle is durable when it
    /// completes. The kernel issues it with FUA (or a flush) itself, so a group commit is one
    /// round trip through the executor instead of two, and no fsync is punted to an io-wq
    /// worker (measured: docs/format.md, "I/O path"). Elsewhere `write_durable` syncs.
    async fn open(&self, name: &str) -> io::Result<UringFile> {
        let dsync = self.durability.sync == SyncMode::ODsync;
        let mut opts = OpenOptions::new();
        opts.read(true).write(true);
        if dsync {
            opts.custom_flags(libc::O_DSYNC);
        }
        let file = opts.dma_open(self.dir.join(name)).await;
        Ok(UringFile {
            file: file.map_err(glommio_io)?,
            dsync,
            fallocate: self.durability.fallocate,
        })
    }

    async fn create(&self, name: &str) -> io::Result<UringFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .dma_open(self.dir.join(name))
            .await;
        Ok(UringFile {
            file: file.map_err(glommio_io)?,
            dsync: false,
            fallocate: self.durability.fallocate,
        })
    }

    async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        glommio::io::rename(self.dir.join(from), self.dir.join(to))
            .await
            .map_err(glommio_io)
    }

    async fn remove(&self, name: &str) -> io::Result<()> {
        glommio::io::remove(self.dir.join(name)).await.map_err(glommio_io)
    }

    async fn sync_dir(&self) -> io::Result<()> {
        let dir = glommio::io::Directory::open(&self.dir).await.map_err(glommio_io)?;
        dir.sync().await.map_err(glommio_io)?;
        dir.close().await.map_err(glommio_io)
    }

    fn after_first_write(&self) {
        assert_poll_ring_unused();
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }
}

pub struct UringFile {
    file: DmaFile,
    /// Opened with O_DSYNC: every completed write is durable.
    dsync: bool,
    /// The filesystem has fallocate (else `allocate` leaves reserving to the zero-fill).
    fallocate: bool,
}

impl DiskFile for UringFile {
    type Buf = DmaBuffer;
    type ReadBuf = ReadResult;

    fn alloc(&self, len: usize) -> DmaBuffer {
        self.file.alloc_dma_buffer(len)
    }

    async fn write_at(&self, buf: DmaBuffer, pos: u64) -> io::Result<()> {
        let len = buf.len();
        let written = self.file.write_at(buf, pos).await.map_err(glommio_io)?;
        if written != len {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {written} of {len} bytes"),
            ));
        }
        Ok(())
    }

    async fn write_durable(&self, buf: DmaBuffer, pos: u64) -> io::Result<()> {
        self.write_at(buf, pos).await?;
        if !self.dsync {
            self.sync().await?;
        }
        Ok(())
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<ReadResult> {
        let got = self.file.read_at_aligned(pos, len).await.map_err(glommio_io)?;
        if got.len() != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("short read: {} of {len} bytes", got.len()),
            ));
        }
        Ok(got)
    }

    async fn sync(&self) -> io::Result<()> {
        self.file.fdatasync().await.map_err(glommio_io)
    }

    async fn allocate(&self, len: u64) -> io::Result<()> {
        if !self.fallocate {
            return Ok(()); // the segment's zero-fill writes every block anyway
        }
        self.file.pre_allocate(len, true).await.map_err(glommio_io)
    }

    async fn size_bytes(&self) -> io::Result<u64> {
        self.file.file_size().await.map_err(glommio_io)
    }
}

/// Asserts that this executor's poll ring has carried no file writes: the premise of the
/// module doc. Checked after the engine's first write through a [`UringDisk`].
fn assert_poll_ring_unused() {
    let (writes, _) = glommio::executor().io_stats().poll_ring.file_writes();
    assert_eq!(
        writes, 0,
        "glommio put log writes on its busy-polling ring; open the log engine (UringDisk::open) \
         before any other DmaFile on this device in this executor"
    );
}

/// A fault [`MemDisk`] injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every `allocate`, `create` and write that extends a file fails with ENOSPC until
    /// cleared (a full disk).
    DiskFull,
    /// The next write fails with EIO.
    WriteError,
    /// The next sync fails with EIO (and syncs nothing).
    SyncError,
}

#[derive(Default)]
struct MemFile {
    /// What a crash leaves: the bytes as of the last sync.
    durable: Vec<u8>,
    /// What reads see.
    current: Vec<u8>,
    allocated: u64,
    /// Byte ranges written since the last sync: what a sync makes durable (copying only
    /// those keeps a sync's cost proportional to what was written, as on a real disk).
    dirty: Vec<(usize, usize)>,
}

#[derive(Default)]
struct MemState {
    files: BTreeMap<String, Rc<RefCell<MemFile>>>,
    faults: Vec<Fault>,
    writes: u64,
    syncs: u64,
}

/// An in-memory disk for tests and the simulator. Directory operations are durable at once;
/// file contents only at `sync`. Cloning shares the same disk (a "reboot" keeps the disk).
#[derive(Clone, Default)]
pub struct MemDisk {
    state: Rc<RefCell<MemState>>,
}

impl MemDisk {
    pub fn new() -> MemDisk {
        MemDisk::default()
    }

    pub fn inject(&self, fault: Fault) {
        self.state.borrow_mut().faults.push(fault);
    }

    pub fn clear_faults(&self) {
        self.state.borrow_mut().faults.clear();
    }

    /// Power loss: every file reverts to what its last sync made durable.
    pub fn crash(&self) {
        for file in self.state.borrow().files.values() {
            let mut f = file.borrow_mut();
            f.current = f.durable.clone();
            f.dirty.clear();
        }
    }

    /// (writes, syncs) issued so far.
    pub fn op_counts(&self) -> (u64, u64) {
        let s = self.state.borrow();
        (s.writes, s.syncs)
    }

    /// Direct access to a file's current bytes, for corruption tests.
    pub fn with_file<R>(&self, name: &str, f: impl FnOnce(&mut Vec<u8>) -> R) -> Option<R> {
        let file = self.state.borrow().files.get(name).cloned()?;
        let mut file = file.borrow_mut();
        let r = f(&mut file.current);
        file.durable = file.current.clone();
        file.dirty.clear();
        Some(r)
    }

    fn has(&self, fault: Fault) -> bool {
        self.state.borrow().faults.contains(&fault)
    }

    /// Consumes a one-shot fault if present.
    fn take(&self, fault: Fault) -> bool {
        let mut s = self.state.borrow_mut();
        let pos = s.faults.iter().position(|f| *f == fault);
        pos.map(|p| s.faults.remove(p)).is_some()
    }
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, name.to_string())
}

impl Disk for MemDisk {
    type File = MemDiskFile;

    async fn open(&self, name: &str) -> io::Result<MemDiskFile> {
        let file = self
            .state
            .borrow()
            .files
            .get(name)
            .cloned()
            .ok_or_else(|| not_found(name))?;
        Ok(MemDiskFile {
            disk: self.clone(),
            file,
        })
    }

    async fn create(&self, name: &str) -> io::Result<MemDiskFile> {
        if self.has(Fault::DiskFull) {
            return Err(enospc());
        }
        let mut s = self.state.borrow_mut();
        if s.files.contains_key(name) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, name.to_string()));
        }
        let file = Rc::new(RefCell::new(MemFile::default()));
        s.files.insert(name.to_string(), file.clone());
        Ok(MemDiskFile {
            disk: self.clone(),
            file,
        })
    }

    async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut s = self.state.borrow_mut();
        let file = s.files.remove(from).ok_or_else(|| not_found(from))?;
        s.files.insert(to.to_string(), file);
        Ok(())
    }

    async fn remove(&self, name: &str) -> io::Result<()> {
        self.state
            .borrow_mut()
            .files
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| not_found(name))
    }

    async fn sync_dir(&self) -> io::Result<()> {
        Ok(())
    }

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.state.borrow().files.keys().cloned().collect())
    }
}

pub struct MemDiskFile {
    disk: MemDisk,
    file: Rc<RefCell<MemFile>>,
}

impl DiskFile for MemDiskFile {
    type Buf = Vec<u8>;
    type ReadBuf = Vec<u8>;

    fn alloc(&self, len: usize) -> Vec<u8> {
        vec![0; len]
    }

    async fn write_at(&self, buf: Vec<u8>, pos: u64) -> io::Result<()> {
        self.disk.state.borrow_mut().writes += 1;
        if self.disk.take(Fault::WriteError) {
            return Err(eio());
        }
        let mut f = self.file.borrow_mut();
        let end = pos as usize + buf.len();
        if end as u64 > f.allocated.max(f.current.len() as u64) && self.disk.has(Fault::DiskFull) {
            return Err(enospc());
        }
        if f.current.len() < end {
            f.current.resize(end, 0);
        }
        f.current[pos as usize..end].copy_from_slice(&buf);
        f.dirty.push((pos as usize, end));
        Ok(())
    }

    async fn write_durable(&self, buf: Vec<u8>, pos: u64) -> io::Result<()> {
        self.write_at(buf, pos).await?;
        self.sync().await
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        let f = self.file.borrow();
        let end = pos as usize + len;
        if end > f.current.len() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"));
        }
        Ok(f.current[pos as usize..end].to_vec())
    }

    async fn sync(&self) -> io::Result<()> {
        self.disk.state.borrow_mut().syncs += 1;
        if self.disk.take(Fault::SyncError) {
            return Err(eio());
        }
        let mut f = self.file.borrow_mut();
        let f = &mut *f;
        if f.durable.len() < f.current.len() {
            f.durable.resize(f.current.len(), 0);
        }
        for (from, to) in f.dirty.drain(..) {
            f.durable[from..to].copy_from_slice(&f.current[from..to]);
        }
        Ok(())
    }

    async fn allocate(&self, len: u64) -> io::Result<()> {
        if self.disk.has(Fault::DiskFull) {
            return Err(enospc());
        }
        let mut f = self.file.borrow_mut();
        f.allocated = f.allocated.max(len);
        Ok(())
    }

    async fn size_bytes(&self) -> io::Result<u64> {
        Ok(self.file.borrow().current.len() as u64)
    }
}
