//! The durability floor: what this disk does for a raw O_DIRECT write + fdatasync through
//! io_uring with nothing else in the way (fio's io_uring engine does the same).
//!
//! Owns: measuring the floor in the same run as the engines, so every engine figure can be
//! reported as a ratio to it. Blocking `submit_and_wait` is fine here: this is the bench
//! thread, not a shard.
//! Must not: go through glommio or a corekv engine: one raw io_uring ring, one operation in
//! flight, so nothing of corekv is in the figure.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use hdrhistogram::Histogram;
use io_uring::{opcode, types, IoUring};

use crate::report::{new_histogram, thread_cpu_time};

const BLOCK: usize = 4096;

/// A page-aligned buffer for O_DIRECT.
pub struct AlignedBuf {
    ptr: *mut u8,
    layout: Layout,
}

impl AlignedBuf {
    pub fn new(len: usize) -> AlignedBuf {
        let layout = Layout::from_size_align(len, BLOCK).expect("valid layout");
        // SAFETY: `layout` has a non-zero size (every caller passes a multiple of BLOCK).
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "out of memory");
        AlignedBuf { ptr, layout }
    }

    pub fn as_slice_mut(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` points at `layout.size()` initialised bytes we own exclusively.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this very layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

/// Latency histograms (µs) of the floor.
pub struct Floor {
    /// write + fdatasync over already-written blocks of a preallocated file.
    pub overwrite: Histogram<u64>,
    pub write_only: Histogram<u64>,
    pub sync_only: Histogram<u64>,
    /// One O_DSYNC write over already-written blocks: durable when it completes.
    pub dsync_overwrite: Histogram<u64>,
    pub dsync_cpu_us: f64,
    /// write + fdatasync where every write extends the file.
    pub extending: Histogram<u64>,
    /// CPU time of this thread per overwrite (write + fdatasync), µs.
    pub overwrite_cpu_us: f64,
    /// Sequential O_DIRECT write bandwidth in MiB/s with 256 KiB writes (no syncs).
    pub seq_write_mib_s: f64,
}

struct Ring {
    ring: IoUring,
    file: File,
}

impl Ring {
    fn open(path: &Path, truncate: bool, extra_flags: i32) -> Result<Ring> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(truncate)
            .custom_flags(libc::O_DIRECT | extra_flags)
            .open(path)
            .with_context(|| format!("open {} with O_DIRECT", path.display()))?;
        Ok(Ring {
            ring: IoUring::new(8).context("io_uring setup")?,
            file,
        })
    }

    /// Submits one operation and waits for it; returns its result.
    fn run(&mut self, entry: io_uring::squeue::Entry) -> Result<i32> {
        // SAFETY: every buffer an entry points to outlives this call, which waits for the
        // operation's completion before returning.
        unsafe { self.ring.submission().push(&entry).context("submission queue full")? };
        self.ring.submit_and_wait(1).context("io_uring_enter")?;
        let cqe = self.ring.completion().next().context("no completion")?;
        ensure!(
            cqe.result() >= 0,
            "io_uring op failed: {}",
            std::io::Error::from_raw_os_error(-cqe.result())
        );
        Ok(cqe.result())
    }

    fn write(&mut self, buf: &mut AlignedBuf, pos: u64) -> Result<()> {
        let fd = types::Fd(self.file.as_raw_fd());
        let len = buf.layout.size();
        let n = self.run(opcode::Write::new(fd, buf.ptr, len as u32).offset(pos).build())?;
        ensure!(n as usize == len, "short write");
        Ok(())
    }

    fn fdatasync(&mut self) -> Result<()> {
        let fd = types::Fd(self.file.as_raw_fd());
        self.run(opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build())?;
        Ok(())
    }
}

/// Measures the floor in `dir` with `iterations` synced writes.
pub fn measure(dir: &Path, iterations: u64) -> Result<Floor> {
    let file_bytes: u64 = 64 << 20;
    let path = dir.join("floor.dat");
    let mut ring = Ring::open(&path, true, 0)?;
    let mut big = AlignedBuf::new(256 << 10);
    big.as_slice_mut().fill(0x5a);
    // Pre-write the whole file (the same preparation the log engine does), timing it as the
    // sequential-bandwidth figure.
    let start = Instant::now();
    let mut pos = 0;
    while pos < file_bytes {
        ring.write(&mut big, pos)?;
        pos += big.layout.size() as u64;
    }
    ring.fdatasync()?;
    let seq_write_mib_s = (file_bytes as f64 / (1 << 20) as f64) / start.elapsed().as_secs_f64();

    let mut block = AlignedBuf::new(BLOCK);
    block.as_slice_mut().fill(0xa5);
    let (mut overwrite, mut write_only, mut sync_only) = (new_histogram(), new_histogram(), new_histogram());
    let cpu0 = thread_cpu_time();
    for i in 0..iterations {
        let pos = (i * BLOCK as u64) % file_bytes;
        let t0 = Instant::now();
        ring.write(&mut block, pos)?;
        let t1 = Instant::now();
        ring.fdatasync()?;
        let t2 = Instant::now();
        write_only.record((t1 - t0).as_micros() as u64)?;
        sync_only.record((t2 - t1).as_micros() as u64)?;
        overwrite.record((t2 - t0).as_micros() as u64)?;
    }
    let overwrite_cpu_us = (thread_cpu_time() - cpu0).as_secs_f64() * 1e6 / iterations.max(1) as f64;

    let mut dsync = Ring::open(&path, false, libc::O_DSYNC)?;
    let mut dsync_overwrite = new_histogram();
    let cpu0 = thread_cpu_time();
    for i in 0..iterations {
        let t0 = Instant::now();
        dsync.write(&mut block, (i * BLOCK as u64) % file_bytes)?;
        dsync_overwrite.record(t0.elapsed().as_micros() as u64)?;
    }
    let dsync_cpu_us = (thread_cpu_time() - cpu0).as_secs_f64() * 1e6 / iterations.max(1) as f64;

    let grow_path = dir.join("floor-grow.dat");
    let mut grow = Ring::open(&grow_path, true, 0)?;
    let mut extending = new_histogram();
    for i in 0..iterations.min(300) {
        let t0 = Instant::now();
        grow.write(&mut block, i * BLOCK as u64)?;
        grow.fdatasync()?;
        extending.record(t0.elapsed().as_micros() as u64)?;
    }
    drop((ring, dsync, grow));
    std::fs::remove_file(&path)?;
    std::fs::remove_file(&grow_path)?;
    Ok(Floor {
        overwrite,
        write_only,
        sync_only,
        extending,
        dsync_overwrite,
        dsync_cpu_us,
        overwrite_cpu_us,
        seq_write_mib_s,
    })
}
