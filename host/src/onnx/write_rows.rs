//! ONNX lowering of `write-rows`: ScatterND over the rows
//! `clamp(start) .. clamp(start) + rows(update)` of axis 0.

use super::lower::Lowering;
use crate::ir::NodeId;

impl Lowering<'_> {
    pub(super) fn write_rows(&mut self, x: NodeId, update: NodeId, start: NodeId, out: &str) {
        let (x, update, start) = (self.v(x), self.v(update), self.v(start));
        let (zero, one) = (self.ints(&[0]), self.ints(&[1]));
        let first = |this: &mut Self, v: &str| {
            let shape = this.tmp("Shape", &[v], vec![]);
            this.tmp("Slice", &[&shape, &zero, &one], vec![])
        };
        let (rows, new) = (first(self, &x), first(self, &update));
        let last = self.tmp("Sub", &[&rows, &new], vec![]);
        let at = self.tmp("Min", &[&start, &last], vec![]);
        let at = self.tmp("Max", &[&at, &zero], vec![]);
        let end = self.tmp("Add", &[&at, &new], vec![]);
        // Range takes scalars.
        let scalar = self.ints(&[]);
        let (at, end) = (
            self.tmp("Reshape", &[&at, &scalar], vec![]),
            self.tmp("Reshape", &[&end, &scalar], vec![]),
        );
        let step = self.tmp("Reshape", &[&one, &scalar], vec![]);
        let rows = self.tmp("Range", &[&at, &end, &step], vec![]);
        let indices = self.tmp("Unsqueeze", &[&rows, &one], vec![]);
        self.node("ScatterND", &[&x, &indices, &update], out, vec![]);
    }
}
