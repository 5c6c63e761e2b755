//! LLaVA-NeXT's "anyres" tiling, as `LlavaNextImageProcessorPil` does it
//! (transformers 5; the torchvision backend's resize rounds differently and
//! is not reproduced): the grid resolution that fits the image best
//! ([`select_best_resolution`], from `image_grid_pinpoints`), the image
//! resized into it keeping its aspect ratio ([`patch_output_size`]) and
//! padded with black, centred ([`pad_centered`]), cut into square tiles
//! row by row ([`crop`]); the whole image resized to one tile comes first.
//! Each of these then goes through the processor's usual resize, center
//! crop, rescale and normalize ([`Preprocess::apply`]).

use crate::config::Json;
use crate::Error;

use super::preprocess::{Preprocess, Size};
use super::resample::resize;
use super::Rgb;

/// `LlavaNextImageProcessor`'s default `image_grid_pinpoints` (height, width).
pub const DEFAULT_PINPOINTS: [(usize, usize); 5] =
    [(336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008)];

/// transformers' `select_best_resolution`: among `(height, width)`
/// resolutions, the one that keeps the most of the image's pixels when it
/// is scaled (down or up) to fit, then wastes the fewest; the first of
/// equals. `None` when there are none.
pub fn select_best_resolution(
    (height, width): (usize, usize),
    resolutions: &[(usize, usize)],
) -> Option<(usize, usize)> {
    let (oh, ow) = (height as f64, width as f64);
    let mut best = None;
    let (mut max_effective, mut min_wasted) = (0f64, f64::INFINITY);
    for &(h, w) in resolutions {
        let scale = (w as f64 / ow).min(h as f64 / oh);
        let (dw, dh) = ((ow * scale) as i64 as f64, (oh * scale) as i64 as f64);
        let effective = (dw * dh).min(ow * oh);
        let wasted = (w * h) as f64 - effective;
        if effective > max_effective || (effective == max_effective && wasted < min_wasted) {
            max_effective = effective;
            min_wasted = wasted;
            best = Some((h, w));
        }
    }
    best
}

/// transformers' `get_patch_output_size`: the (height, width) an image of
/// (height, width) is resized to inside `target` (height, width), keeping
/// its aspect ratio (the scaled side rounded up).
pub fn patch_output_size(
    (height, width): (usize, usize),
    (th, tw): (usize, usize),
) -> (usize, usize) {
    let (scale_w, scale_h) = (tw as f64 / width as f64, th as f64 / height as f64);
    if scale_w < scale_h {
        let h = (height as f64 * scale_w).ceil() as usize;
        (h.min(th), tw)
    } else {
        let w = (width as f64 * scale_h).ceil() as usize;
        (th, w.min(tw))
    }
}

/// `img` in the middle of a black (height, width) canvas: the left/top
/// margin is half the difference rounded down (numpy/torchvision padding
/// as `LlavaNextImageProcessor` computes it). The image must fit.
pub fn pad_centered(img: &Rgb, height: usize, width: usize) -> Rgb {
    let top = height.saturating_sub(img.height) / 2;
    let left = width.saturating_sub(img.width) / 2;
    let mut data = vec![0u8; height * width * 3];
    for y in 0..img.height.min(height - top) {
        let src = &img.data[y * img.width * 3..];
        let n = img.width.min(width - left) * 3;
        let dst = ((y + top) * width + left) * 3;
        data[dst..dst + n].copy_from_slice(&src[..n]);
    }
    Rgb {
        width,
        height,
        data,
    }
}

/// The (height, width) region of `img` from (top, left), clipped to the
/// image (numpy slicing).
pub fn crop(img: &Rgb, (top, left): (usize, usize), (height, width): (usize, usize)) -> Rgb {
    let h = height.min(img.height.saturating_sub(top));
    let w = width.min(img.width.saturating_sub(left));
    let mut data = Vec::with_capacity(h * w * 3);
    for y in top..top + h {
        let row = (y * img.width + left) * 3;
        data.extend_from_slice(&img.data[row..row + w * 3]);
    }
    Rgb {
        width: w,
        height: h,
        data,
    }
}

/// How `LlavaNextImageProcessor` tiles an image.
#[derive(Clone, Debug, PartialEq)]
pub struct AnyRes {
    /// `image_grid_pinpoints`, (height, width) each a multiple of `tile`.
    pub pinpoints: Vec<(usize, usize)>,
    /// The tiles' side (`crop_size` height, else `size`'s).
    pub tile: usize,
    /// The size the whole image is resized to (`size` height and width,
    /// or the shortest edge squared).
    pub base: (usize, usize),
}

/// `image_grid_pinpoints` of a config (`file` in errors): a list of
/// [height, width] pairs; `None` when absent.
pub fn pinpoints(j: &Json) -> Result<Option<Vec<(usize, usize)>>, Error> {
    let bad = || {
        Error::Model(format!(
            "{}: `image_grid_pinpoints` must be a list of [height, width] pairs",
            j.file
        ))
    };
    let Some(v) = j.value.get("image_grid_pinpoints").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let list = v.as_array().ok_or_else(bad)?;
    let mut out = Vec::with_capacity(list.len());
    for p in list {
        match p.as_array().map(|a| a.as_slice()) {
            Some([h, w]) => match (h.as_u64(), w.as_u64()) {
                (Some(h), Some(w)) if h > 0 && w > 0 => out.push((h as usize, w as usize)),
                _ => return Err(bad()),
            },
            _ => return Err(bad()),
        }
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(Some(out))
}

impl AnyRes {
    /// Reads the tiling of a `preprocessor_config.json` whose other steps
    /// `pre` holds.
    pub fn from_json(j: &Json, pre: &Preprocess) -> Result<AnyRes, Error> {
        let pinpoints = pinpoints(j)?.unwrap_or_else(|| DEFAULT_PINPOINTS.to_vec());
        let base = match pre.resize {
            Some(Size::Exact(h, w)) => (h, w),
            Some(Size::ShortestEdge(s)) => (s, s),
            _ => {
                return Err(Error::Model(format!(
                    "{}: anyres tiling needs `size` as {{height, width}} or {{shortest_edge}}",
                    j.file
                )))
            }
        };
        let tile = pre.crop.map_or(base.0, |c| c.0);
        if tile == 0
            || pinpoints
                .iter()
                .any(|&(h, w)| h % tile != 0 || w % tile != 0)
        {
            return Err(Error::Model(format!(
                "{}: `image_grid_pinpoints` {pinpoints:?} are not multiples of the {tile}-pixel tiles",
                j.file
            )));
        }
        Ok(AnyRes {
            pinpoints,
            tile,
            base,
        })
    }

    /// The (height, width) grid resolution an image of (height, width) is
    /// tiled at.
    pub fn best(&self, size: (usize, usize)) -> (usize, usize) {
        // `pinpoints` is never empty (see `pinpoints`).
        select_best_resolution(size, &self.pinpoints).unwrap_or((self.tile, self.tile))
    }

    /// `pixel_values` of one image: the whole image, then its tiles row by
    /// row, each [3, h, w] after `pre`'s resize, crop, rescale, normalize.
    pub fn apply(&self, img: &Rgb, pre: &Preprocess) -> Vec<Vec<f32>> {
        let best = self.best((img.height, img.width));
        let (nh, nw) = patch_output_size((img.height, img.width), best);
        let fitted = pad_centered(&resize(img, nw, nh, pre.filter), best.0, best.1);
        let whole = resize(img, self.base.1, self.base.0, pre.filter);
        let mut out = vec![pre.apply(&whole).2];
        for top in (0..best.0).step_by(self.tile) {
            for left in (0..best.1).step_by(self.tile) {
                let tile = crop(&fitted, (top, left), (self.tile, self.tile));
                out.push(pre.apply(&tile).2);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_resolution_keeps_the_most_pixels_then_wastes_the_least() {
        let grid = [(32, 64), (64, 32), (64, 64), (32, 96), (96, 32)];
        assert_eq!(select_best_resolution((48, 64), &grid), Some((64, 64)));
        assert_eq!(select_best_resolution((30, 50), &grid), Some((32, 64)));
        // A small square image fits every one whole: the least waste, first.
        assert_eq!(select_best_resolution((17, 17), &grid), Some((32, 64)));
        assert_eq!(select_best_resolution((120, 300), &grid), Some((32, 96)));
        assert_eq!(
            select_best_resolution((480, 640), &DEFAULT_PINPOINTS),
            Some((672, 672))
        );
    }

    #[test]
    fn patch_output_size_rounds_the_scaled_side_up() {
        assert_eq!(patch_output_size((48, 64), (64, 64)), (48, 64));
        assert_eq!(patch_output_size((30, 50), (32, 64)), (32, 54));
        assert_eq!(patch_output_size((60, 45), (64, 64)), (64, 48));
        assert_eq!(patch_output_size((17, 17), (32, 64)), (32, 32));
    }

    #[test]
    fn padding_centres_and_crops_clip() {
        let img = Rgb {
            width: 2,
            height: 1,
            data: vec![1, 2, 3, 4, 5, 6],
        };
        let p = pad_centered(&img, 3, 5);
        assert_eq!((p.width, p.height), (5, 3));
        // Top margin 1, left margin 1.
        assert_eq!(&p.data[(5 + 1) * 3..(5 + 3) * 3], &[1, 2, 3, 4, 5, 6]);
        assert_eq!(p.data.iter().filter(|&&v| v != 0).count(), 6);
        let c = crop(&p, (1, 1), (4, 4));
        assert_eq!((c.width, c.height), (4, 2));
        assert_eq!(&c.data[..6], &[1, 2, 3, 4, 5, 6]);
    }
}
