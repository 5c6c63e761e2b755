//! A run's transfers in bulk: every host input, the error-flag reset and
//! the copy tables go to the GPU in one host-to-device copy; one
//! `copy_many` launch moves inputs (host-staged or resident) into the
//! arena; after the steps, a second moves outputs into one pooled
//! allocation (kept tensors) or the staging area (host outputs), which
//! comes back in one device-to-host copy. A decode step of a model with
//! many KV-cache tensors thus costs a handful of driver calls instead of
//! several per tensor.

use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg};

use super::device::DeviceBuffer;

/// One row of a `copy_many` table (matches the kernel's struct).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CopyEntry {
    pub src: u64,
    pub dst: u64,
    pub bytes: u64,
}

// SAFETY: #[repr(C)] plain data laid out like the kernel's struct.
unsafe impl DeviceRepr for CopyEntry {}

/// Alignment of staged ranges (the kernel copies 16-byte words when it can).
const ALIGN: usize = 16;

fn align(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// Host bytes to upload and the copies to run, built before any driver call.
/// Offsets are relative to the start of the device staging buffer.
#[derive(Default)]
pub struct Transfers {
    /// Uploaded as is to the staging buffer's start.
    blob: Vec<u8>,
    ins: Vec<(Src, u64, u64)>,
    outs: Vec<(u64, Dst, u64)>,
    /// Bytes of the download area (after the blob and the tables).
    down: usize,
}

/// Where an input copy reads: the staging buffer or a device address.
#[derive(Clone, Copy)]
pub enum Src {
    Staged(usize),
    Device(u64),
}

/// Where an output copy writes: the download area or a device address.
#[derive(Clone, Copy)]
pub enum Dst {
    Download(usize),
    Device(u64),
}

impl Transfers {
    /// Stages host bytes for upload; returns their offset.
    pub fn stage(&mut self, data: &[u8]) -> usize {
        let at = self.blob.len();
        self.blob.extend_from_slice(data);
        self.blob.resize(align(self.blob.len()), 0);
        at
    }

    /// Copies `bytes` from `src` to device address `dst` before the steps.
    pub fn input(&mut self, src: Src, dst: u64, bytes: usize) {
        if bytes > 0 {
            self.ins.push((src, dst, bytes as u64));
        }
    }

    /// Reserves `bytes` of the download area; returns their offset in it.
    pub fn reserve_download(&mut self, bytes: usize) -> usize {
        let at = self.down;
        self.down += align(bytes);
        at
    }

    /// Copies `bytes` from device address `src` to `dst` after the steps.
    pub fn output(&mut self, src: u64, dst: Dst, bytes: usize) {
        if bytes > 0 {
            self.outs.push((src, dst, bytes as u64));
        }
    }

    fn tables_at(&self) -> usize {
        align(self.blob.len())
    }

    fn down_at(&self) -> usize {
        self.tables_at() + (self.ins.len() + self.outs.len()) * std::mem::size_of::<CopyEntry>()
    }

    /// Bytes uploaded: the staged data and the copy tables.
    pub fn upload_bytes(&self) -> usize {
        self.down_at()
    }

    /// Bytes the download area holds (the host buffer `copy_out` needs).
    pub fn download_bytes(&self) -> usize {
        self.down
    }

    /// Bytes the device staging buffer needs.
    pub fn staging_bytes(&self) -> usize {
        align(self.down_at()) + self.down
    }

    /// Uploads the blob and the tables to `staging` (at least
    /// [`Transfers::staging_bytes`] long) through `pinned` (page-locked, at
    /// least [`Transfers::upload_bytes`] long; needed unless nothing is
    /// uploaded), and launches the input copies. Returns the launcher of
    /// the output copies.
    ///
    /// # Safety
    /// Every device address given must be valid for its byte count until
    /// the stream is synchronised; `staging` must be large enough; `pinned`
    /// must not be touched until the stream has passed this point.
    pub unsafe fn upload_and_copy_in(
        mut self,
        stream: &Arc<CudaStream>,
        f: &CudaFunction,
        staging: &DeviceBuffer,
        pinned: Option<&mut [u8]>,
    ) -> Result<Pending, String> {
        let base = staging.ptr;
        let down = base + align(self.down_at()) as u64;
        let entry = |src: u64, dst: u64, bytes: u64| CopyEntry { src, dst, bytes };
        let ins: Vec<CopyEntry> = self
            .ins
            .iter()
            .map(|&(s, d, n)| match s {
                Src::Staged(o) => entry(base + o as u64, d, n),
                Src::Device(p) => entry(p, d, n),
            })
            .collect();
        let outs: Vec<CopyEntry> = self
            .outs
            .iter()
            .map(|&(s, d, n)| match d {
                Dst::Download(o) => entry(s, down + o as u64, n),
                Dst::Device(p) => entry(s, p, n),
            })
            .collect();
        let tables = self.tables_at();
        self.blob.resize(tables, 0);
        for e in ins.iter().chain(&outs) {
            for v in [e.src, e.dst, e.bytes] {
                self.blob.extend_from_slice(&v.to_le_bytes());
            }
        }
        let cu = stream.cu_stream();
        if !self.blob.is_empty() {
            // From page-locked memory the copy is queued without a wait.
            let src = pinned
                .and_then(|p| p.get_mut(..self.blob.len()))
                .ok_or_else(|| {
                    format!(
                        "no page-locked buffer for a {}-byte upload",
                        self.blob.len()
                    )
                })?;
            src.copy_from_slice(&self.blob);
            // SAFETY: the caller sized `staging` for the blob.
            unsafe { cudarc::driver::result::memcpy_htod_async(base, src, cu) }
                .map_err(|e| format!("upload: {e}"))?;
        }
        let table_in = base + tables as u64;
        let table_out = table_in + (ins.len() * std::mem::size_of::<CopyEntry>()) as u64;
        // SAFETY: the table lies in `staging`; the caller vouches for the
        // addresses in it.
        unsafe { launch(stream, f, table_in, &ins) }?;
        Ok(Pending {
            table_out,
            outs,
            down,
            down_bytes: self.down,
        })
    }
}

/// The output half of a [`Transfers`], after the steps are enqueued.
pub struct Pending {
    table_out: u64,
    outs: Vec<CopyEntry>,
    down: u64,
    down_bytes: usize,
}

impl Pending {
    /// Launches the output copies and downloads the download area into
    /// `host` (its first [`Transfers::download_bytes`] bytes).
    ///
    /// # Safety
    /// As for [`Transfers::upload_and_copy_in`]; `host` must be page-locked
    /// (or the call waits for the stream), at least as long as the download
    /// area, and neither read nor freed until the stream has passed this
    /// point.
    pub unsafe fn copy_out(
        self,
        stream: &Arc<CudaStream>,
        f: &CudaFunction,
        host: Option<&mut [u8]>,
    ) -> Result<(), String> {
        // SAFETY: see above.
        unsafe { launch(stream, f, self.table_out, &self.outs) }?;
        if self.down_bytes > 0 {
            let host = host
                .and_then(|h| h.get_mut(..self.down_bytes))
                .ok_or_else(|| format!("no host buffer for a {}-byte download", self.down_bytes))?;
            // SAFETY: the download area holds down_bytes bytes.
            unsafe {
                cudarc::driver::result::memcpy_dtoh_async(host, self.down, stream.cu_stream())
            }
            .map_err(|e| format!("download: {e}"))?;
        }
        Ok(())
    }
}

/// Launches `copy_many` over `entries`, whose table is at `table`.
unsafe fn launch(
    stream: &Arc<CudaStream>,
    f: &CudaFunction,
    table: u64,
    entries: &[CopyEntry],
) -> Result<(), String> {
    let Some(most) = entries.iter().map(|e| e.bytes).max() else {
        return Ok(());
    };
    let threads = 256u64;
    let blocks = most.div_ceil(16 * threads).clamp(1, 512) as u32;
    let n = entries.len() as i32;
    let mut b = stream.launch_builder(f);
    b.arg(&table);
    b.arg(&n);
    let cfg = LaunchConfig {
        grid_dim: (blocks, entries.len() as u32, 1),
        block_dim: (threads as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: the kernel takes (const CopyEntry*, int); the caller vouches
    // for the table's addresses.
    unsafe { b.launch(cfg) }
        .map(|_| ())
        .map_err(|e| format!("copy_many: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_ranges_are_aligned_and_sized() {
        let mut t = Transfers::default();
        assert_eq!(t.stage(&[1, 2, 3]), 0);
        assert_eq!(t.stage(&[4; 20]), 16);
        t.input(Src::Staged(0), 1000, 3);
        t.input(Src::Device(77), 2000, 0); // empty copies are dropped
        let a = t.reserve_download(5);
        let b = t.reserve_download(8);
        assert_eq!((a, b), (0, 16));
        t.output(3000, Dst::Download(b), 8);
        // blob 48, tables 2 x 24 = 48 -> download area at 96, 32 bytes long.
        assert_eq!(t.down_at(), 96);
        assert_eq!(t.staging_bytes(), 128);
    }
}
