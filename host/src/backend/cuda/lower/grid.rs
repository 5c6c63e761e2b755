//! Launch sizes shared by the lowerings: threads per block, grids over
//! elements or rows, and the (outer, len, inner) split around an axis.

/// Threads per block of the element-wise kernels.
pub(super) const BLOCK: u32 = 256;

pub(super) fn elementwise_grid(n: usize) -> u32 {
    (n.div_ceil(BLOCK as usize)).clamp(1, 1 << 16) as u32
}

pub(super) fn rows_grid(rows: usize) -> u32 {
    rows.clamp(1, 1 << 16) as u32
}

/// Threads per block for kernels that reduce a row of `width`.
pub(super) fn row_block(width: usize) -> u32 {
    match width {
        0..=128 => 64,
        129..=1024 => 128,
        _ => 256,
    }
}

/// (outer, len, inner) of `shape` around `axis`.
pub(super) fn split3(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = shape[..axis].iter().product();
    let len = shape.get(axis).copied().unwrap_or(1);
    let inner = shape[axis + 1..].iter().product();
    (outer, len, inner)
}
