//! One run of a compiled graph: inputs staged and copied in, the plan's
//! steps enqueued (or its CUDA graph replayed), outputs copied to kept
//! device tensors or downloaded into page-locked memory, and an event
//! recorded after the last copy. Nothing here waits for the GPU:
//! the run's `wait` does, so a session can queue its next decode step
//! while the skill reads the last one ([`crate::backend::Executable::submit`]).
//! Tensors a run keeps carry its event, and a run on another stream that
//! reads them waits for it on the device first.

use std::sync::{Arc, Mutex};

use super::*;

/// Page-locked buffers kept per executable, two per run in flight (more
/// runs in flight allocate).
const PINNED_KEPT: usize = 8;

/// A host output's place in the download.
struct HostOut {
    name: String,
    dtype: DType,
    device_dtype: DType,
    shape: Vec<u64>,
    at: usize,
    bytes: usize,
}

/// A run queued on the GPU; [`PendingRun::wait`] returns its host outputs.
/// Dropped without waiting, it still waits before releasing its buffers.
pub(super) struct Enqueued {
    device: String,
    graph: String,
    done: Arc<RunDone>,
    up: Option<Pinned>,
    down: Option<Pinned>,
    pool: Arc<Mutex<Vec<Pinned>>>,
    outputs: Vec<HostOut>,
    flag_at: usize,
    /// Released only after the run: the resident inputs it copies from.
    _resident: NamedDeviceTensors,
    /// For `HOST_CUDA_TRACE`: host time before the launch, of the enqueue,
    /// and the launch instant.
    trace: Option<(f64, f64, std::time::Instant, bool)>,
}

impl Enqueued {
    fn fail(&self, message: String) -> BackendError {
        BackendError::Run {
            device: self.device.clone(),
            graph: self.graph.clone(),
            message,
        }
    }
}

impl Drop for Enqueued {
    fn drop(&mut self) {
        // Immediate when the run was waited for.
        let _ = self.done.event.synchronize();
        if let Ok(mut pool) = self.pool.lock() {
            for p in [self.up.take(), self.down.take()].into_iter().flatten() {
                if pool.len() < PINNED_KEPT {
                    pool.push(p);
                }
            }
        }
    }
}

impl PendingRun for Enqueued {
    fn wait(mut self: Box<Self>) -> Result<NamedTensors, BackendError> {
        let waited = std::time::Instant::now();
        self.done
            .event
            .synchronize()
            .map_err(|x| self.fail(format!("synchronize: {x}")))?;
        let synchronised = waited.elapsed();
        let mut buf = self.down.take();
        let down: &[u8] = match buf.as_mut() {
            Some(p) => p.bytes(),
            None => &[],
        };
        let flag = down
            .get(self.flag_at..self.flag_at + 4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0);
        let outputs: NamedTensors = self
            .outputs
            .iter()
            .map(|o| {
                let bytes = down.get(o.at..o.at + o.bytes).unwrap_or(&[]).to_vec();
                let data = convert_owned(bytes, o.device_dtype, o.dtype);
                let shape = o.shape.clone();
                (
                    o.name.clone(),
                    Tensor {
                        dtype: o.dtype,
                        shape,
                        data,
                    },
                )
            })
            .collect();
        // Back to the pool when this run drops.
        self.down = buf;
        if flag != 0 {
            return Err(
                self.fail("an embedding or gather index is out of range for its table".into())
            );
        }
        if let Some((prepare_ms, enqueue_ms, launched, graph)) = self.trace {
            tracing::debug!(
                target: "host::trace::cuda",
                "cuda: ran `{}`: prepare {prepare_ms:.3} ms, enqueue {enqueue_ms:.3} ms, until synchronised {:.3} ms (waited {:.3} ms), outputs {:.3} ms{}",
                self.graph,
                (waited - launched + synchronised).as_secs_f64() * 1e3,
                synchronised.as_secs_f64() * 1e3,
                (waited.elapsed() - synchronised).as_secs_f64() * 1e3,
                if graph { " (graph)" } else { "" }
            );
        }
        Ok(outputs)
    }
}

impl CudaExecutable {
    /// The resident tensor given for input `name`, checked against this
    /// device and `dtype`; the stream first waits for the run that writes
    /// it when that run is on another stream.
    fn resident_input<'a>(
        &self,
        name: &str,
        dtype: DType,
        resident: &'a NamedDeviceTensors,
        stream: &CudaStream,
    ) -> Result<&'a CudaTensor, BackendError> {
        let src = (resident.iter())
            .find(|(n, _)| n == name)
            .and_then(|(_, d)| d.as_any().downcast_ref::<CudaTensor>())
            .filter(|c| c.ordinal == self.gpu.ordinal && c.device_dtype == dtype)
            .ok_or_else(|| {
                self.fail(format!(
                    "input `{name}` lives on another device or precision"
                ))
            })?;
        if let Some(r) = src.ready.as_ref() {
            if r.stream != stream.cu_stream() as usize {
                stream
                    .wait(&r.event)
                    .map_err(|x| self.fail(format!("wait for `{name}`: {x}")))?;
            }
        }
        Ok(src)
    }

    /// Queues one run: `resident` inputs are copied device to device (after
    /// the runs that write them), outputs named in `keep` are returned as
    /// [`CudaTensor`]s, the rest come from the returned run's `wait`.
    pub(super) fn start_run(
        &self,
        inputs: NamedTensors,
        resident: NamedDeviceTensors,
        keep: &[String],
    ) -> Result<(NamedDeviceTensors, Enqueued), BackendError> {
        let entered = std::time::Instant::now();
        self.gpu
            .ctx
            .bind_to_thread()
            .map_err(|e| self.fail(e.to_string()))?;
        let mut st = self
            .state
            .lock()
            .map_err(|_| self.fail("a previous run panicked".into()))?;
        // Plans differ by input shapes and by which inputs lie on the device.
        let on_device: Vec<usize> = (inputs.iter().enumerate())
            .filter(|(_, (n, _))| resident.iter().any(|(r, _)| r == n))
            .map(|(i, _)| i)
            .collect();
        let mut key: Vec<Vec<u64>> = inputs.iter().map(|(_, t)| t.shape.clone()).collect();
        key.push(on_device.iter().map(|&i| i as u64).collect());
        let prepared = match st.plans.get(&key) {
            Some(p) => p.clone(),
            None => {
                let p = self.prepare(&inputs, &on_device)?;
                if st.plans.len() >= MAX_PLANS {
                    st.plans.clear();
                    st.graphs.clear();
                    st.runs.clear();
                }
                st.plans.insert(key.clone(), p.clone());
                p
            }
        };
        let plan = &prepared.plan;
        let stream = st.stream.clone();
        if st.arena.as_ref().is_none_or(|a| a.bytes < plan.arena_bytes) {
            // Runs still queued use the old arena; captured graphs point
            // into it. Growing by a quarter more than asked spares most
            // regrowths as a KV cache lengthens.
            stream
                .synchronize()
                .map_err(|x| self.fail(format!("synchronize: {x}")))?;
            st.graphs.clear();
            st.arena = None;
            let bytes = plan.arena_bytes + plan.arena_bytes / 4;
            st.arena = Some(DeviceBuffer::new(&self.gpu.ctx, bytes).map_err(|e| self.fail(e))?);
        }
        // External inputs: the session's tensors, written in place.
        let mut external = Vec::with_capacity(plan.externals.len());
        let mut in_place = Vec::with_capacity(plan.externals.len());
        for &pos in &plan.externals {
            let (name, tensor) = inputs
                .get(pos)
                .ok_or_else(|| self.fail(format!("input {pos} missing")))?;
            let dtype = storage(tensor.dtype, self.precision);
            let src = self.resident_input(name, dtype, &resident, &stream)?;
            let need = tensor.shape.iter().product::<u64>() as usize * dtype.size();
            if src.bytes < need {
                return Err(self.fail(format!(
                    "input `{name}` holds {} bytes, the plan needs {need}",
                    src.bytes
                )));
            }
            external.push(src.ptr());
            in_place.push((src.buf.clone(), src.offset));
        }
        let base = Bases {
            arena: st.arena.as_ref().map(|a| a.ptr).unwrap_or(0),
            external,
        };
        let at = |r: &Ref| resolve(plan, &base, &self.persistent, r);
        let mut t = Transfers::default();
        let zero = t.stage(&[0; 4]);
        t.input(Src::Staged(zero), at(&plan.error_flag), 4);
        for u in &plan.uploads {
            let (name, tensor) = inputs
                .get(u.input)
                .ok_or_else(|| self.fail(format!("input {} missing", u.input)))?;
            if resident.iter().any(|(n, _)| n == name) {
                let src = self.resident_input(name, u.dtype, &resident, &stream)?;
                let n = src.shape.iter().product::<u64>() as usize * u.dtype.size();
                t.input(Src::Device(src.ptr()), at(&u.at), n.min(src.bytes));
                continue;
            }
            let off = if tensor.dtype == u.dtype {
                t.stage(&tensor.data)
            } else {
                t.stage(&convert(&tensor.data, tensor.dtype, u.dtype))
            };
            let n = tensor.data.len() / tensor.dtype.size().max(1) * u.dtype.size();
            t.input(Src::Staged(off), at(&u.at), n);
        }
        // Kept outputs share one pooled allocation; the rest are downloaded.
        let sizes: Vec<usize> = plan
            .downloads
            .iter()
            .map(|d| d.shape.iter().product::<usize>() * d.device_dtype.size())
            .collect();
        // A kept state written in place is its input's memory again.
        let aliases: Vec<Option<&(Arc<DeviceBuffer>, usize)>> = (plan.downloads.iter())
            .map(|d| {
                (d.in_place)
                    .filter(|_| keep.contains(&d.name))
                    .and_then(|k| in_place.get(k))
            })
            .collect();
        let mut kept_bytes = 0usize;
        let kept_at: Vec<Option<usize>> = plan
            .downloads
            .iter()
            .zip(&sizes)
            .zip(&aliases)
            .map(|((d, &n), alias)| {
                (keep.contains(&d.name) && alias.is_none()).then(|| {
                    let o = kept_bytes;
                    kept_bytes += n.div_ceil(256) * 256;
                    o
                })
            })
            .collect();
        let pool = if kept_bytes > 0 {
            Some(Arc::new(
                DeviceBuffer::pooled(&self.gpu.ctx, &stream, &self.gpu.free_stream, kept_bytes)
                    .map_err(|x| self.fail(x))?,
            ))
        } else {
            None
        };
        let mut outputs = Vec::new();
        let mut kept_meta = Vec::new();
        for (((d, &n), k), alias) in (plan.downloads.iter().zip(&sizes))
            .zip(&kept_at)
            .zip(&aliases)
        {
            let shape: Vec<u64> = d.shape.iter().map(|&x| x as u64).collect();
            match (k, &pool, alias) {
                (_, _, Some((buf, offset))) => {
                    kept_meta.push((d.name.clone(), buf.clone(), *offset, n, d, shape));
                }
                (Some(o), Some(p), _) => {
                    t.output(at(&d.at), Dst::Device(p.ptr + *o as u64), n);
                    kept_meta.push((d.name.clone(), p.clone(), *o, n, d, shape));
                }
                _ => {
                    let o = t.reserve_download(n);
                    t.output(at(&d.at), Dst::Download(o), n);
                    outputs.push(HostOut {
                        name: d.name.clone(),
                        dtype: d.dtype,
                        device_dtype: d.device_dtype,
                        shape,
                        at: o,
                        bytes: n,
                    });
                }
            }
        }
        let flag_at = t.reserve_download(4);
        t.output(at(&plan.error_flag), Dst::Download(flag_at), 4);
        let need = t.staging_bytes();
        if st.staging.as_ref().is_none_or(|b| b.bytes < need) {
            // Runs still queued copy through the old staging buffer.
            stream
                .synchronize()
                .map_err(|x| self.fail(format!("synchronize: {x}")))?;
            st.staging = None;
            st.staging = Some(
                DeviceBuffer::new(&self.gpu.ctx, need.max(64 << 10)).map_err(|e| self.fail(e))?,
            );
        }
        let staging = st
            .staging
            .as_ref()
            .ok_or_else(|| self.fail("no staging buffer".into()))?;
        let mut up = self.pinned_for(t.upload_bytes())?;
        let mut down = self.pinned_for(t.download_bytes())?;
        // SAFETY: every address above is inside the arena sized by the plan,
        // a persistent buffer, a resident tensor of the checked size, the
        // pooled output buffer or the staging buffer sized for `t`; all of
        // them (and `up`, `down`) outlive the run: the arena and staging
        // buffer are only replaced after synchronising the stream; resident
        // inputs, `up` and `down` are held by the returned run until its
        // event.
        // Once anything is queued, a failure waits for the stream before the
        // buffers the queued work uses (resident inputs, the kept pool, `up`,
        // `down`) are released.
        let queued = |e: BackendError| {
            let _ = stream.synchronize();
            e
        };
        let pending = unsafe {
            t.upload_and_copy_in(&stream, &self.copy, staging, up.as_mut().map(|p| p.bytes()))
        }
        .map_err(|x| queued(self.fail(x)))?;
        let launched = std::time::Instant::now();
        // Captured graphs hold the external addresses too.
        let mut graph_key = key;
        graph_key.push(base.external.clone());
        if st.runs.len() >= MAX_PLANS * 4 {
            st.runs.clear();
        }
        if !st.graphs.contains_key(&graph_key) && st.graphs.len() >= MAX_PLANS {
            st.graphs.clear();
        }
        self.execute(&mut st, &graph_key, &prepared, &base, &stream)
            .map_err(queued)?;
        let enqueued = launched.elapsed();
        // SAFETY: see above.
        unsafe { pending.copy_out(&stream, &self.copy, down.as_mut().map(|p| p.bytes())) }
            .map_err(|x| queued(self.fail(x)))?;
        let event = self
            .gpu
            .ctx
            .new_event(None)
            .map_err(|x| queued(self.fail(format!("event: {x}"))))?;
        event
            .record(&stream)
            .map_err(|x| queued(self.fail(format!("event: {x}"))))?;
        let done = Arc::new(RunDone {
            event,
            stream: stream.cu_stream() as usize,
        });
        let graph = st.graphs.contains_key(&graph_key);
        drop(st);
        let kept: NamedDeviceTensors = (kept_meta.into_iter())
            .map(|(name, buf, offset, bytes, d, shape)| {
                let t: Arc<dyn DeviceTensor> = Arc::new(CudaTensor {
                    ready: Some(done.clone()),
                    buf,
                    offset,
                    bytes,
                    ordinal: self.gpu.ordinal,
                    dtype: d.dtype,
                    device_dtype: d.device_dtype,
                    shape,
                });
                (name, t)
            })
            .collect();
        let run = Enqueued {
            device: self.device.clone(),
            graph: self.graph.name.clone(),
            done,
            up,
            down,
            pool: self.pinned.clone(),
            outputs,
            flag_at,
            _resident: resident,
            trace: self.trace().then(|| {
                (
                    (launched - entered).as_secs_f64() * 1e3,
                    enqueued.as_secs_f64() * 1e3,
                    launched,
                    graph,
                )
            }),
        };
        Ok((kept, run))
    }

    /// A page-locked buffer of at least `bytes` from the pool, or a new one.
    fn pinned_for(&self, bytes: usize) -> Result<Option<Pinned>, BackendError> {
        if bytes == 0 {
            return Ok(None);
        }
        let mut pool = self
            .pinned
            .lock()
            .map_err(|_| self.fail("a previous run panicked".into()))?;
        if let Some(i) = pool.iter().position(|p| p.len >= bytes) {
            return Ok(Some(pool.swap_remove(i)));
        }
        drop(pool);
        let len = bytes.next_power_of_two().max(64 << 10);
        Pinned::new(&self.gpu.ctx, len)
            .map(Some)
            .map_err(|x| self.fail(x))
    }
}
