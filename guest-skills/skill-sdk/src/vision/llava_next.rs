//! LLaVA-NeXT's feature packing (`LlavaNextModel.pack_image_features`) as
//! an index map, so that a graph packs with one gather: an image's tower
//! inputs are the whole image then `rows x cols` tiles (see
//! `image::anyres`), each yielding `side x side` features (the class
//! token dropped). The packed sequence is the whole image's features, then
//! the tiles' features laid out as one (rows * side) x (cols * side) grid,
//! unpadded to the image's aspect ratio ([`unpadded`]: the rows or columns
//! the tiling padded are dropped, as `unpad_image` does), row by row, each
//! row followed by `image_newline`.
//!
//! [`processor_features`] is `LlavaNextProcessor._get_number_of_features`
//! (how many image tokens a prompt's `<image>` becomes), which must agree
//! with the packed length.

/// One position of a packed image: a feature of the image's tower outputs
/// (index into its inputs' features, input-major), or the newline row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    At(u32),
    Newline,
}

/// Python's `int(round(x, 7))` for the non-negative sizes here.
fn round7(x: f64) -> usize {
    ((x * 1e7).round() / 1e7) as usize
}

/// `unpad_image`'s kept region of a (height, width) feature grid for an
/// image of (orig_h, orig_w): ((first row, rows), (first column, columns)).
pub fn unpadded(
    (orig_h, orig_w): (usize, usize),
    (height, width): (usize, usize),
) -> ((usize, usize), (usize, usize)) {
    let original = orig_w as f64 / orig_h as f64;
    let current = width as f64 / height as f64;
    if original > current {
        let new_h = round7(orig_h as f64 * (width as f64 / orig_w as f64));
        let pad = height.saturating_sub(new_h) / 2;
        ((pad, height.saturating_sub(2 * pad)), (0, width))
    } else {
        let new_w = round7(orig_w as f64 * (height as f64 / orig_h as f64));
        let pad = width.saturating_sub(new_w) / 2;
        ((0, height), (pad, width.saturating_sub(2 * pad)))
    }
}

/// The packed features of an image of `orig` (height, width) tiled in a
/// `grid` of (rows, cols) tiles of `side x side` features each (the whole
/// image's `side x side` first).
pub fn pack(orig: (usize, usize), (rows, cols): (usize, usize), side: usize) -> Vec<Feature> {
    let per = side * side;
    let mut out: Vec<Feature> = (0..per as u32).map(Feature::At).collect();
    let ((top, h), (left, w)) = unpadded(orig, (rows * side, cols * side));
    out.reserve(h * (w + 1));
    for y in top..top + h {
        for x in left..left + w {
            // Tile (y / side, x / side), its feature (y % side, x % side);
            // tile k is tower input k + 1.
            let tile = (y / side) * cols + x / side;
            let at = (tile + 1) * per + (y % side) * side + x % side;
            out.push(Feature::At(at as u32));
        }
        out.push(Feature::Newline);
    }
    out
}

/// `LlavaNextProcessor._get_number_of_features` less one when the
/// strategy is "default": the image tokens an image of `orig` (height,
/// width) stands for, tiled at `best` (height, width) resolution in tiles
/// of `tile` pixels, with `patch`-pixel patches and `extra` tokens (a class
/// token) in the whole image's features.
pub fn processor_features(
    orig: (usize, usize),
    best: (usize, usize),
    tile: usize,
    patch: usize,
    extra: usize,
    default_strategy: bool,
) -> usize {
    let (scale_h, scale_w) = (best.0 / tile.max(1), best.1 / tile.max(1));
    let side = tile / patch.max(1);
    let ((_, h), (_, w)) = unpadded(orig, (side * scale_h, side * scale_w));
    let base = side * side + extra;
    (h * w + h + base).saturating_sub(default_strategy as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpadding_keeps_the_image_aspect_ratio() {
        // 48x64 in a 2x2 grid of 4x4: 16x16 features, rows 2..14 kept.
        assert_eq!(unpadded((48, 64), (16, 16)), ((2, 12), (0, 16)));
        // A tall image keeps the middle columns.
        assert_eq!(unpadded((60, 45), (8, 8)), ((0, 8), (1, 6)));
        assert_eq!(unpadded((17, 17), (4, 8)), ((0, 4), (2, 4)));
    }

    #[test]
    fn packing_puts_the_whole_image_first_and_a_newline_after_each_row() {
        // One row of two 2x2 tiles, a wide image: nothing cut.
        let p = pack((10, 20), (1, 2), 2);
        let at = |v: &[u32]| v.iter().map(|&i| Feature::At(i)).collect::<Vec<_>>();
        assert_eq!(p[..4], at(&[0, 1, 2, 3]));
        let mut row0 = at(&[4, 5, 8, 9]);
        row0.push(Feature::Newline);
        let mut row1 = at(&[6, 7, 10, 11]);
        row1.push(Feature::Newline);
        assert_eq!(p[4..9], row0[..]);
        assert_eq!(p[9..], row1[..]);
    }

    #[test]
    fn processor_count_equals_the_packed_length() {
        for (orig, best, grid) in [
            ((48, 64), (64, 64), (2, 2)),
            ((60, 45), (64, 64), (2, 2)),
            ((30, 50), (32, 64), (1, 2)),
            ((17, 17), (32, 64), (1, 2)),
            ((480, 640), (672, 672), (2, 2)),
        ] {
            let side = if best.0 == 672 { 24 } else { 4 };
            let tile = if best.0 == 672 { 336 } else { 32 };
            let patch = tile / side;
            assert_eq!(
                processor_features(orig, best, tile, patch, 1, true),
                pack(orig, grid, side).len(),
                "{orig:?}"
            );
        }
        // The fixture's counts (transformers' own packing).
        assert_eq!(pack((48, 64), (2, 2), 4).len(), 70);
        assert_eq!(pack((60, 45), (2, 2), 4).len(), 72);
        assert_eq!(pack((30, 50), (1, 2), 4).len(), 44);
        assert_eq!(pack((17, 17), (1, 2), 4).len(), 36);
    }
}
