//! Session state updated where it lies. A state input that only a
//! `write-rows` reads, and that the run is given as a device tensor, is
//! bound to that tensor ([`Buf::External`]) instead of copied into the
//! arena, and the write touches only its rows: a decode step writes its
//! keys and values into a fixed-slot KV cache without copying the cache in
//! or out.

use super::grid::{elementwise_grid, BLOCK};
use super::{PlanError, Planner};
use crate::backend::cuda::launch::{CopySpan, Launch, Rotary2Tail, RowIndex};
use crate::backend::cuda::plan::*;
use crate::ir::{DType, NodeId, Op};

/// Whether the `rotary2` launch `l` reads buffer `b` (its inputs and
/// cos/sin tables).
fn rotary2_reads(l: &Launch, b: Buf) -> bool {
    match l {
        Launch::Rotary2 {
            first,
            second,
            cos,
            sin,
            ..
        } => [first.x, second.x, *cos, *sin].iter().any(|r| r.buf == b),
        _ => false,
    }
}

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
        let launch = Launch::WriteRows {
            size: y.dtype.size(),
            first: CopySpan {
                idx: Box::new(p),
                x: u.at,
                y: y.at,
            },
            second: None,
            rows: RowIndex {
                start: s.at,
                last,
                row,
            },
        };
        self.kernel(launch, elementwise_grid(n), BLOCK, 0);
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
        let Some(Step::Kernel { launch, .. }) = self.steps.last_mut() else {
            return false;
        };
        let reads_y = rotary2_reads(launch, y.at.buf);
        let Launch::Rotary2 { second, tail, .. } = launch else {
            return false;
        };
        if *tail != Rotary2Tail::None || second.y != u.at || reads_y {
            return false;
        }
        second.y = y.at;
        *tail = Rotary2Tail::Write {
            copy: None,
            rows: RowIndex {
                start: s.at,
                last,
                row,
            },
        };
        // The keys buffer is no longer written.
        self.buffers[i].last = self.buffers[i].first;
        true
    }

    /// The last two steps' launches when both are kernels (the peepholes
    /// that merge a launch into the one before it).
    pub(super) fn last_two_launches(&self) -> Option<(&Launch, &Launch)> {
        let n = self.steps.len();
        match (
            n.checked_sub(2).and_then(|i| self.steps.get(i)),
            self.steps.last(),
        ) {
            (Some(Step::Kernel { launch: a, .. }), Some(Step::Kernel { launch: b, .. })) => {
                Some((a, b))
            }
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
        let Some((
            Launch::WriteRows {
                size: s1,
                first: c1,
                second: None,
                rows: r1,
            },
            Launch::WriteRows {
                size: s2,
                first: c2,
                rows: r2,
                ..
            },
        )) = self.last_two_launches()
        else {
            return;
        };
        let apart = c2.x.buf != c1.y.buf && c1.x.buf != c2.y.buf && c1.y.buf != c2.y.buf;
        if s1 != s2 || !apart || r1 != r2 {
            return;
        }
        let (total, dst) = (c1.idx.n + c2.idx.n, c2.y.buf);
        let launch = Launch::WriteRows {
            size: *s2,
            first: c1.clone(),
            second: Some(c2.clone()),
            rows: r1.clone(),
        };
        self.replace_last_two(launch, total, dst);
    }

    /// Replaces the last two steps with one element-wise launch of `total`
    /// elements; `dst`, written by the second, is now written a step
    /// earlier.
    pub(super) fn replace_last_two(&mut self, launch: Launch, total: i64, dst: Buf) {
        let at = self.steps.len().saturating_sub(2);
        self.steps.truncate(at);
        if let Buf::Arena(j) = dst {
            self.buffers[j].first = self.buffers[j].first.min(at);
        }
        self.kernel(launch, elementwise_grid(total.max(0) as usize), BLOCK, 0);
    }

    /// The single `write_rows` just planned fills the empty copy slot of
    /// the `rotary2_write` before it (same row index and element size).
    fn merge_rotary_write(&mut self) -> bool {
        let Some((
            prev @ Launch::Rotary2 {
                dt,
                first,
                second,
                tail:
                    Rotary2Tail::Write {
                        copy: None,
                        rows: r3,
                    },
                ..
            },
            Launch::WriteRows {
                size,
                first: c,
                second: None,
                rows: r,
            },
        )) = self.last_two_launches()
        else {
            return false;
        };
        let float = matches!(dt, DType::F32 | DType::F16 | DType::BF16);
        let keys = second.y.buf == c.x.buf || second.y.buf == c.y.buf;
        if !float || dt.size() != *size || r != r3 || keys || rotary2_reads(prev, c.y.buf) {
            return false;
        }
        // The empty slot's index space counts no elements.
        let total = first.idx.n + second.idx.n + c.idx.n;
        let mut launch = prev.clone();
        if let Launch::Rotary2 {
            tail: Rotary2Tail::Write { copy, .. },
            ..
        } = &mut launch
        {
            *copy = Some(c.clone());
        }
        let dst = c.y.buf;
        self.replace_last_two(launch, total, dst);
        true
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::super::Planner;
    use crate::backend::cuda::launch::{Launch, Rotary2Tail};
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

    fn kernels(plan: &Plan) -> Vec<String> {
        (plan.steps.iter())
            .filter_map(|s| match s {
                Step::Kernel { launch, .. } => Some(launch.kernel().0),
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
        assert!(names.iter().any(|n| n == "rotary2_write_f32"), "{names:?}");
        assert!(
            !names
                .iter()
                .any(|n| n.starts_with("write_rows") || n.starts_with("copy")),
            "{names:?}"
        );
        let Some((first, second, copy, grid)) = plan.steps.iter().find_map(|s| match s {
            Step::Kernel {
                launch:
                    Launch::Rotary2 {
                        dt: DType::F32,
                        first,
                        second,
                        tail:
                            Rotary2Tail::Write {
                                copy: Some(copy), ..
                            },
                        ..
                    },
                grid,
                ..
            } => Some((first, second, copy, grid)),
            _ => None,
        }) else {
            panic!("no rotary2_write");
        };
        // Queries, keys and values: 16 elements each.
        let total = first.idx.n + second.idx.n + copy.idx.n;
        assert_eq!((total, *grid), (48, 1));
        assert_eq!(second.y.buf, Buf::External(0));
        assert_eq!(copy.y.buf, Buf::External(1));
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
