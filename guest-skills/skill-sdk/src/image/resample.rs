//! Pillow's resize of 8-bit images, reproduced exactly: separable
//! convolution (horizontal pass first, over the rows the vertical pass
//! needs), filter support scaled by the downscale factor, coefficients
//! normalised then rounded to fixed point with 22 fractional bits, sums
//! rounded and clipped to 0..=255 after each pass. transformers' "slow"
//! image processors resize through Pillow, so this is what their
//! `pixel_values` are made from.

use super::Rgb;

/// Pillow's resampling filters, numbered as transformers'
/// `PILImageResampling` (and `preprocessor_config.json`'s `resample`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Filter {
    Nearest,
    Lanczos,
    Bilinear,
    Bicubic,
    Box,
    Hamming,
}

impl Filter {
    pub fn from_pil(code: u64) -> Option<Filter> {
        Some(match code {
            0 => Filter::Nearest,
            1 => Filter::Lanczos,
            2 => Filter::Bilinear,
            3 => Filter::Bicubic,
            4 => Filter::Box,
            5 => Filter::Hamming,
            _ => return None,
        })
    }

    fn support(self) -> f64 {
        match self {
            Filter::Nearest | Filter::Box => 0.5,
            Filter::Bilinear | Filter::Hamming => 1.0,
            Filter::Bicubic => 2.0,
            Filter::Lanczos => 3.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let sinc = |x: f64| {
            if x == 0.0 {
                1.0
            } else {
                let x = x * std::f64::consts::PI;
                x.sin() / x
            }
        };
        match self {
            Filter::Nearest | Filter::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Filter::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let x = x * std::f64::consts::PI;
                    x.sin() / x * (0.54 + 0.46 * x.cos())
                }
            }
            Filter::Bicubic => {
                let a = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * a
                } else {
                    0.0
                }
            }
            Filter::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// One output pixel's source range and fixed-point weights.
struct Taps {
    start: usize,
    weights: Vec<i32>,
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for one axis.
fn coefficients(in_size: usize, out_size: usize, filter: Filter) -> Vec<Taps> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let count = xmax.saturating_sub(xmin);
            let raw: Vec<f64> = (0..count)
                .map(|x| filter.weight((x as f64 + xmin as f64 - center + 0.5) * ss))
                .collect();
            let total: f64 = raw.iter().sum();
            let weights = raw
                .iter()
                .map(|&w| {
                    let k = if total != 0.0 { w / total } else { w };
                    let f = k * (1u32 << PRECISION_BITS) as f64;
                    if k < 0.0 {
                        (-0.5 + f) as i32
                    } else {
                        (0.5 + f) as i32
                    }
                })
                .collect();
            Taps {
                start: xmin,
                weights,
            }
        })
        .collect()
}

/// A fixed-point sum back to 8 bits (Pillow's `clip8`). Pillow sums in
/// 32-bit ints; `PRECISION_BITS` leaves room for them not to overflow.
fn clip8(v: i32) -> u8 {
    if v >= (1i32 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// The horizontal pass over one row of RGB pixels: one output pixel per
/// entry of `taps`, appended to `out`.
fn horizontal_row(taps: &[Taps], row: &[u8], out: &mut Vec<u8>) {
    const HALF: i32 = 1 << (PRECISION_BITS - 1);
    for t in taps {
        let src = &row[t.start * 3..(t.start + t.weights.len()) * 3];
        let (mut r, mut g, mut b) = (HALF, HALF, HALF);
        for (px, &w) in src.chunks_exact(3).zip(&t.weights) {
            r += px[0] as i32 * w;
            g += px[1] as i32 * w;
            b += px[2] as i32 * w;
        }
        out.extend_from_slice(&[clip8(r), clip8(g), clip8(b)]);
    }
}

/// The vertical pass for one output row: the weighted sum of the source
/// rows `rows(i)` that `t` names, sample by sample (row-major: every
/// sample of a row at once), written to `out`.
fn vertical_row<'a>(t: &Taps, rows: impl Fn(usize) -> &'a [u8], acc: &mut [i32], out: &mut [u8]) {
    acc.fill(1 << (PRECISION_BITS - 1));
    for (j, &w) in t.weights.iter().enumerate() {
        for (a, &v) in acc.iter_mut().zip(rows(t.start + j)) {
            *a += v as i32 * w;
        }
    }
    for (o, &a) in out.iter_mut().zip(acc.iter()) {
        *o = clip8(a);
    }
}

/// Resizes like Pillow's `Image.resize((width, height), filter)`. Pillow 13
/// runs the vertical pass first when the height shrinks by more than twice
/// as many pixels as the width (python-pillow/Pillow#9549), else the
/// horizontal one; the order changes the rounding between the passes.
pub fn resize(img: &Rgb, width: usize, height: usize, filter: Filter) -> Rgb {
    if width == img.width && height == img.height {
        return img.clone();
    }
    if filter == Filter::Nearest {
        return nearest(img, width, height);
    }
    let (dw, dh) = (
        img.width as i64 - width as i64,
        img.height as i64 - height as i64,
    );
    if dh > 0 && dh > 2 * dw {
        // Vertical first = horizontal first on the transposed image.
        let t = transpose(img);
        return transpose(&horizontal_first(&t, height, width, filter));
    }
    horizontal_first(img, width, height, filter)
}

/// The image with its axes swapped.
fn transpose(img: &Rgb) -> Rgb {
    let (w, h) = (img.width, img.height);
    let mut data = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            let (src, dst) = ((y * w + x) * 3, (x * h + y) * 3);
            data[dst..dst + 3].copy_from_slice(&img.data[src..src + 3]);
        }
    }
    Rgb {
        width: h,
        height: w,
        data,
    }
}

/// Pillow's two passes, horizontal first (over the rows the vertical pass
/// reads), then vertical.
fn horizontal_first(img: &Rgb, width: usize, height: usize, filter: Filter) -> Rgb {
    let (w0, h0) = (img.width, img.height);
    let vert = coefficients(h0, height, filter);
    // The horizontal pass covers only the rows the vertical one reads.
    let (first, last) = match (vert.first(), vert.last()) {
        (Some(f), Some(l)) => (f.start, l.start + l.weights.len()),
        _ => (0, h0),
    };
    let mut tmp = Rgb {
        width: w0,
        height: h0,
        data: img.data.clone(),
    };
    let mut row0 = 0;
    if width != w0 {
        let horiz = coefficients(w0, width, filter);
        let mut data = Vec::with_capacity(width * (last - first) * 3);
        for y in first..last {
            horizontal_row(&horiz, &img.data[y * w0 * 3..(y + 1) * w0 * 3], &mut data);
        }
        tmp = Rgb {
            width,
            height: last - first,
            data,
        };
        row0 = first;
    }
    if height == h0 {
        return tmp;
    }
    let stride = tmp.width * 3;
    let mut out = vec![0u8; stride * height];
    let mut acc = vec![0i32; stride];
    let rows = |i: usize| &tmp.data[(i - row0) * stride..(i - row0 + 1) * stride];
    for (t, dst) in vert.iter().zip(out.chunks_exact_mut(stride)) {
        vertical_row(t, rows, &mut acc, dst);
    }
    Rgb {
        width: tmp.width,
        height,
        data: out,
    }
}

/// Pillow's nearest-neighbour resize: source pixel floor((i + 0.5) * scale).
fn nearest(img: &Rgb, width: usize, height: usize) -> Rgb {
    let (sx, sy) = (
        img.width as f64 / width as f64,
        img.height as f64 / height as f64,
    );
    let mut data = Vec::with_capacity(width * height * 3);
    for y in 0..height {
        let yy = (((y as f64 + 0.5) * sy) as usize).min(img.height - 1);
        for x in 0..width {
            let xx = (((x as f64 + 0.5) * sx) as usize).min(img.width - 1);
            let at = (yy * img.width + xx) * 3;
            data.extend_from_slice(&img.data[at..at + 3]);
        }
    }
    Rgb {
        width,
        height,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_of_each_output_sum_to_one_in_fixed_point() {
        for f in [
            Filter::Bilinear,
            Filter::Bicubic,
            Filter::Lanczos,
            Filter::Box,
        ] {
            for (i, o) in [(10, 3), (3, 10), (224, 224), (97, 31)] {
                for t in coefficients(i, o, f) {
                    let s: i64 = t.weights.iter().map(|&w| w as i64).sum();
                    assert!(
                        (s - (1 << PRECISION_BITS)).abs() <= t.weights.len() as i64,
                        "{f:?} {i}->{o}: {s}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_flat_image_stays_flat() {
        let img = Rgb {
            width: 7,
            height: 5,
            data: [10u8, 200, 77].repeat(35),
        };
        let r = resize(&img, 3, 11, Filter::Bicubic);
        assert!(r.data.chunks(3).all(|p| p == [10, 200, 77]));
    }
}
