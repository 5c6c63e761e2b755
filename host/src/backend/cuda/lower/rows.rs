//! Session state updated where it lies. A state input that only a
//! `write-rows` reads, and that the run is given as a device tensor, is
//! bound to that tensor ([`Buf::External`]) instead of copied into the
//! arena, and the write touches only its rows: a decode step writes its
//! keys and values into a fixed-slot KV cache without copying the cache in
//! or out.

use super::grid::{elementwise_grid, BLOCK};
use super::{PlanError, Planner};
use crate::backend::cuda::plan::*;
use crate::ir::{NodeId, Op};

/// The arguments a write launch ends with: an empty second update (filled
/// by a merge) and the row index `s`, its largest value and the row size.
fn write_tail(s: &Val, last: i64, row: i64) -> Option<[Arg; 6]> {
    let none = index_param(&[0], [&[0], &[0], &[0]])?;
    Some([
        Arg::Idx(Box::new(none)),
        Arg::Null,
        Arg::Null,
        Arg::Ptr(s.at),
        Arg::I64(last),
        Arg::I64(row),
    ])
}

/// Argument positions of a `rotary2` launch that it reads (both inputs and
/// the cos/sin tables), and of its second (keys) output.
const ROTARY2_READS: [usize; 4] = [1, 5, 8, 9];
const ROTARY2_KEYS: usize = 6;
/// Where `rotary2_write`'s copy (the values) starts among its arguments.
const ROTARY2_COPY: usize = 13;

/// Whether the `rotary2` launch with `args` reads buffer `b`.
fn rotary2_reads(args: &[Arg], b: Buf) -> bool {
    ROTARY2_READS
        .iter()
        .any(|&k| matches!(args.get(k), Some(Arg::Ptr(r)) if r.buf == b))
}

/// A planned kernel's name and arguments.
type KernelRef<'a> = (&'a String, &'a Vec<Arg>);

impl Planner<'_> {
    /// Whether input `id` is a state read by nothing but a `write-rows`
    /// that replaces its rows, so that the write may go where it lies.
    pub(super) fn writable_in_place(&self, id: NodeId) -> bool {
        matches!(self.g.node(id).op, Op::State { .. })
            && self.uses.get(id as usize) == Some(&1)
            && self
                .g
                .nodes
                .iter()
                .any(|n| matches!(n.op, Op::WriteRows { x, .. } if x == id))
    }

    /// For graph output `name` at `v`: the external input whose memory `v`
    /// is all of, when `name` is that state's own next value (another
    /// state's next value, or any other output, gets a copy).
    pub(super) fn state_in_place(&self, name: &str, v: &Val) -> Option<usize> {
        let (Buf::External(k), 0) = (v.at.buf, v.at.offset) else {
            return None;
        };
        let input = self.g.inputs.get(*self.externals.get(k)?)?;
        let Op::State { name: state } = &self.g.node(*input).op else {
            return None;
        };
        (name == crate::ir::state_output_name(state)).then_some(k)
    }

    /// `x` with rows from `start` on replaced by `update`: in place when `x`
    /// is an external state (see [`Planner::writable_in_place`]) or a
    /// gather's output read by nothing else, else in a copy.
    pub(super) fn write_rows(
        &mut self,
        x: NodeId,
        update: NodeId,
        start: NodeId,
    ) -> Result<Val, PlanError> {
        let (xv, u, s) = (self.val(x)?, self.val(update)?, self.val(start)?);
        let rows = xv.shape.first().copied().unwrap_or(0);
        let new = u.shape.first().copied().unwrap_or(0);
        if new > rows || xv.dtype != u.dtype {
            return Err(self.err(format!(
                "update {:?} {:?} does not fit x {:?} {:?}",
                u.dtype, u.shape, xv.dtype, xv.shape
            )));
        }
        // In place: an external state (see above), or a gather's fresh
        // output that nothing else reads (a KV cache reordered for beam
        // search, then written).
        let own_gather = matches!(self.g.node(x).op, Op::Gather { .. })
            && self.uses.get(x as usize) == Some(&1)
            && matches!(xv.at.buf, Buf::Arena(_))
            && xv.at.offset == 0;
        let y = if (matches!(xv.at.buf, Buf::External(_)) || own_gather) && xv.is_contiguous() {
            xv
        } else {
            let y = self.fresh(xv.dtype, xv.shape.clone());
            self.copy_into(&xv, &y.at, &y.strides)?;
            y
        };
        let n = u.numel();
        if n == 0 {
            return Ok(y);
        }
        let dense = contiguous_strides(&u.shape);
        let zeros = vec![0i64; u.shape.len()];
        let p = index_param(&u.shape, [&u.strides, &dense, &zeros])
            .ok_or_else(|| self.err("more than 8 non-mergeable axes"))?;
        let row = (y.numel() / rows.max(1)) as i64;
        self.use_val(&u);
        self.use_val(&s);
        self.use_val(&y);
        let last = (rows - new) as i64;
        if self.rotary_writes(update, &u, &y, &s, last, row) {
            return Ok(y);
        }
        let tail = write_tail(&s, last, row).ok_or_else(|| self.err("empty index space"))?;
        self.kernel(
            format!("write_rows_{}", y.dtype.size()),
            elementwise_grid(n),
            BLOCK,
            0,
            [Arg::Idx(Box::new(p)), Arg::Ptr(u.at), Arg::Ptr(y.at)]
                .into_iter()
                .chain(tail)
                .collect(),
        );
        self.merge_writes();
        Ok(y)
    }

    /// When `u` is all of the keys output of the `rotary2` just planned
    /// (contiguous, read by nothing else), that launch writes the rotated
    /// keys into the cache rows itself (`rotary2_write`).
    fn rotary_writes(
        &mut self,
        update: NodeId,
        u: &Val,
        y: &Val,
        s: &Val,
        last: i64,
        row: i64,
    ) -> bool {
        let Buf::Arena(i) = u.at.buf else {
            return false;
        };
        let whole = u.at.offset == 0 && self.buffers[i].bytes == u.numel() * u.dtype.size();
        if !whole || !u.is_contiguous() || !self.sole_reader(update) {
            return false;
        }
        let Some(tail) = write_tail(s, last, row) else {
            return false;
        };
        let Some(Step::Kernel { name, args, .. }) = self.steps.last_mut() else {
            return false;
        };
        let dt = match name.strip_prefix("rotary2_") {
            Some(dt) if !dt.contains('_') && args.len() == ROTARY2_COPY => dt.to_string(),
            _ => return false,
        };
        match args[ROTARY2_KEYS] {
            Arg::Ptr(y2) if y2 == u.at && !rotary2_reads(args, y.at.buf) => {}
            _ => return false,
        }
        *name = format!("rotary2_write_{dt}");
        args[ROTARY2_KEYS] = Arg::Ptr(y.at);
        args.extend(tail);
        // The keys buffer is no longer written.
        self.buffers[i].last = self.buffers[i].first;
        true
    }

    /// Names and arguments of the last two steps when both are kernels
    /// (the peepholes that merge a launch into the one before it).
    pub(super) fn last_two_kernels(&self) -> Option<(KernelRef<'_>, KernelRef<'_>)> {
        let n = self.steps.len();
        match (
            n.checked_sub(2).and_then(|i| self.steps.get(i)),
            self.steps.last(),
        ) {
            (
                Some(Step::Kernel {
                    name: pn, args: pa, ..
                }),
                Some(Step::Kernel {
                    name: ln, args: la, ..
                }),
            ) => Some(((pn, pa), (ln, la))),
            _ => None,
        }
    }

    /// A `write_rows` just planned joins a single one before it with the
    /// same row index and row shape (a step's values after its keys), or
    /// the copy slot of a `rotary2_write` before it, when neither writes
    /// what the other reads.
    fn merge_writes(&mut self) {
        if self.merge_rotary_write() {
            return;
        }
        let Some(((pn, pa), (ln, la))) = self.last_two_kernels() else {
            return;
        };
        let (
            [Arg::Idx(p1), Arg::Ptr(x1), Arg::Ptr(y1), Arg::Idx(e), Arg::Null, Arg::Null, s1, l1, r1],
            [Arg::Idx(p2), Arg::Ptr(x2), Arg::Ptr(y2), _, _, _, s2, l2, r2],
        ) = (pa.as_slice(), la.as_slice())
        else {
            return;
        };
        let apart = x2.buf != y1.buf && x1.buf != y2.buf && y1.buf != y2.buf;
        if pn != ln || !pn.starts_with("write_rows_") || e.n != 0 || !apart {
            return;
        }
        if (s1, l1, r1) != (s2, l2, r2) {
            return;
        }
        let args = vec![
            Arg::Idx(p1.clone()),
            Arg::Ptr(*x1),
            Arg::Ptr(*y1),
            Arg::Idx(p2.clone()),
            Arg::Ptr(*x2),
            Arg::Ptr(*y2),
            s1.clone(),
            l1.clone(),
            r1.clone(),
        ];
        let (name, total, dst) = (ln.clone(), p1.n + p2.n, y2.buf);
        self.replace_last_two(name, args, total, dst);
    }

    /// Replaces the last two steps with one element-wise launch of `total`
    /// elements; `dst`, written by the second, is now written a step
    /// earlier.
    pub(super) fn replace_last_two(&mut self, name: String, args: Vec<Arg>, total: i64, dst: Buf) {
        let at = self.steps.len().saturating_sub(2);
        self.steps.truncate(at);
        if let Buf::Arena(j) = dst {
            self.buffers[j].first = self.buffers[j].first.min(at);
        }
        self.kernel(
            name,
            elementwise_grid(total.max(0) as usize),
            BLOCK,
            0,
            args,
        );
    }
    /// The single `write_rows` just planned fills the empty copy slot of
    /// the `rotary2_write` before it (same row index and element size).
    fn merge_rotary_write(&mut self) -> bool {
        let Some(((pn, pa), (ln, la))) = self.last_two_kernels() else {
            return false;
        };
        let size = match pn.strip_prefix("rotary2_write_") {
            Some("f32") => "4",
            Some("f16" | "bf16") => "2",
            _ => return false,
        };
        let (
            [Arg::Idx(p), Arg::Ptr(x), Arg::Ptr(y), Arg::Idx(e), Arg::Null, Arg::Null, s, l, r],
            [.., Arg::Idx(e3), Arg::Null, Arg::Null, s3, l3, r3],
        ) = (la.as_slice(), pa.as_slice())
        else {
            return false;
        };
        let keys = matches!(&pa[ROTARY2_KEYS], Arg::Ptr(k) if k.buf == x.buf || k.buf == y.buf);
        if ln.strip_prefix("write_rows_") != Some(size)
            || e.n != 0
            || e3.n != 0
            || (s, l, r) != (s3, l3, r3)
            || keys
            || rotary2_reads(pa, y.buf)
        {
            return false;
        }
        let total = pa.iter().fold(p.n, |t, a| match a {
            Arg::Idx(q) => t + q.n,
            _ => t,
        });
        let mut args = pa.clone();
        args[ROTARY2_COPY] = Arg::Idx(p.clone());
        args[ROTARY2_COPY + 1] = Arg::Ptr(*x);
        args[ROTARY2_COPY + 2] = Arg::Ptr(*y);
        let (name, dst) = (pn.clone(), y.buf);
        self.replace_last_two(name, args, total, dst);
        true
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::super::Planner;
    use crate::backend::cuda::plan::*;
    use crate::backend::Precision;
    use crate::ir::builder::{BuilderLimits, GraphBuilder};
    use crate::ir::{DType, Dim, Graph};

    /// A decode step over two slot-major caches [8, 2, 2, 4]: keys and
    /// values of one token written into slot `slot`, then attended to;
    /// with `rotary`, queries and keys rotated first.
    fn decode_step(rotary: bool) -> Graph {
        let mut b = GraphBuilder::new("t", Arc::new(HashMap::new()), BuilderLimits::default());
        let fixed = |s: &[u64]| s.iter().map(|&d| Dim::Fixed(d)).collect::<Vec<_>>();
        let mut q = b.input("q", DType::F32, fixed(&[2, 2, 1, 4])).unwrap();
        let slot = b.input("slot", DType::I64, fixed(&[1])).unwrap();
        let cos = b.input("cos", DType::F32, fixed(&[2, 1, 1, 4])).unwrap();
        let sin = b.input("sin", DType::F32, fixed(&[2, 1, 1, 4])).unwrap();
        if rotary {
            q = b.rotary(q, cos, sin, false).unwrap();
        }
        let mut kv = Vec::new();
        for name in ["k", "v"] {
            let old = b.state(name, DType::F32, fixed(&[8, 2, 2, 4])).unwrap();
            let mut new = b.input(&format!("{name}_new"), DType::F32, fixed(&[2, 2, 1, 4]));
            if rotary && name == "k" {
                new = b.rotary(new.unwrap(), cos, sin, false);
            }
            let new = b.permute(new.unwrap(), vec![2, 0, 1, 3]).unwrap();
            let written = b.write_rows(old, new, slot).unwrap();
            b.update_state(name, written).unwrap();
            kv.push(b.permute(written, vec![1, 2, 0, 3]).unwrap());
        }
        let y = b.attention(q, kv[0], kv[1], None, false, None).unwrap();
        b.output("y", y).unwrap();
        b.finish().unwrap()
    }

    /// The graph planned with its states given as device tensors, and their
    /// input positions.
    fn planned_resident(g: &Graph) -> (Plan, Vec<usize>) {
        let states: Vec<usize> = (g.inputs.iter().enumerate())
            .filter(|(_, &id)| matches!(g.node(id).op, crate::ir::Op::State { .. }))
            .map(|(i, _)| i)
            .collect();
        let (none, bind) = (HashMap::new(), HashMap::new());
        let plan = Planner::plan_resident(g, Precision::F32, &bind, &none, &states).unwrap();
        (plan, states)
    }

    fn kernels(plan: &Plan) -> Vec<&str> {
        (plan.steps.iter())
            .filter_map(|s| match s {
                Step::Kernel { name, .. } => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Given the caches as device tensors, the step writes both slots in
    /// one launch where the caches lie and copies no cache; given them as
    /// host tensors it copies each into the arena first.
    #[test]
    fn resident_caches_are_written_in_place() {
        let g = decode_step(false);
        let (plan, states) = planned_resident(&g);
        assert_eq!(plan.externals, states);
        let names = kernels(&plan);
        assert_eq!(
            names
                .iter()
                .filter(|n| n.starts_with("write_rows_"))
                .count(),
            1,
            "{names:?}"
        );
        assert!(!names.iter().any(|n| n.starts_with("copy")), "{names:?}");
        let written: Vec<_> = (plan.downloads.iter())
            .filter(|d| d.name.starts_with("state."))
            .map(|d| d.at.buf)
            .collect();
        assert_eq!(written, [Buf::External(0), Buf::External(1)]);
        let in_place: Vec<_> = (plan.downloads.iter())
            .filter(|d| d.name.starts_with("state."))
            .map(|d| d.in_place)
            .collect();
        assert_eq!(in_place, [Some(0), Some(1)]);
        assert!(plan.uploads.iter().all(|u| !states.contains(&u.input)));

        let copied = Planner::plan(&g, Precision::F32, &HashMap::new(), &HashMap::new()).unwrap();
        assert!(copied.externals.is_empty());
        let names = kernels(&copied);
        assert_eq!(
            names.iter().filter(|n| n.starts_with("copy")).count(),
            2,
            "{names:?}"
        );
        assert!(copied
            .downloads
            .iter()
            .all(|d| matches!(d.at.buf, Buf::Arena(_))));
    }

    /// Rotated keys go from the rotary launch straight into their cache
    /// slot, and the values join that launch: one kernel writes the step.
    #[test]
    fn rotated_keys_are_written_by_the_rotary() {
        let (plan, _) = planned_resident(&decode_step(true));
        let names = kernels(&plan);
        assert_eq!(
            names.iter().filter(|n| n.starts_with("rotary")).count(),
            1,
            "{names:?}"
        );
        assert!(names.contains(&"rotary2_write_f32"), "{names:?}");
        assert!(
            !names
                .iter()
                .any(|n| n.starts_with("write_rows") || n.starts_with("copy")),
            "{names:?}"
        );
        let Some(Step::Kernel { args, grid, .. }) = plan
            .steps
            .iter()
            .find(|s| matches!(s, Step::Kernel { name, .. } if name == "rotary2_write_f32"))
        else {
            panic!("no rotary2_write");
        };
        // Queries, keys and values: 16 elements each.
        let total: i64 = args
            .iter()
            .filter_map(|a| match a {
                Arg::Idx(p) => Some(p.n),
                _ => None,
            })
            .sum();
        assert_eq!((total, *grid), (48, 1));
        assert!(matches!(
            args[6],
            Arg::Ptr(Ref {
                buf: Buf::External(0),
                ..
            })
        ));
        assert!(matches!(
            args[15],
            Arg::Ptr(Ref {
                buf: Buf::External(1),
                ..
            })
        ));
    }

    /// A state whose next value is another state's written cache is not
    /// handed that cache's memory: only `k`'s own next value is in place.
    #[test]
    fn only_a_states_own_next_value_takes_its_memory() {
        let mut b = GraphBuilder::new("t", Arc::new(HashMap::new()), BuilderLimits::default());
        let fixed = |s: &[u64]| s.iter().map(|&d| Dim::Fixed(d)).collect::<Vec<_>>();
        let k = b.state("k", DType::F32, fixed(&[4, 2])).unwrap();
        let _v = b.state("v", DType::F32, fixed(&[4, 2])).unwrap();
        let new = b.input("new", DType::F32, fixed(&[1, 2])).unwrap();
        let slot = b.input("slot", DType::I64, fixed(&[1])).unwrap();
        let written = b.write_rows(k, new, slot).unwrap();
        b.update_state("k", written).unwrap();
        b.update_state("v", written).unwrap();
        let (plan, _) = planned_resident(&b.finish().unwrap());
        let by_name: HashMap<&str, Option<usize>> = (plan.downloads.iter())
            .map(|d| (d.name.as_str(), d.in_place))
            .collect();
        assert_eq!(by_name["state.k.next"], Some(0));
        assert_eq!(by_name["state.v.next"], None);
    }
}
