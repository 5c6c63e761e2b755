//! Images as flattened patches of a dynamic grid, as Qwen2-VL's image
//! processor makes them (`Qwen2VLImageProcessorPil`, transformers 5; the
//! torchvision backend resizes with another kernel and is not reproduced):
//! [`smart_resize`] picks a size that keeps the aspect ratio, is a
//! multiple of patch x merge on both sides and has between `min_pixels`
//! and `max_pixels` pixels; the image is resized to it with Pillow's filter
//! ([`super::resample`]), rescaled and normalized as the slow processors do
//! ([`super::Preprocess::apply`]), then cut into patches. A still image is
//! repeated `temporal_patch_size` times (a clip of identical frames), and
//! the patches are ordered by merge window: window rows, window columns,
//! then the merge x merge patches inside a window, row-major. Each patch is
//! one row of `channels * temporal * patch * patch` values (channel, frame,
//! row, column), the layout the vision tower's Conv3d weight flattens to.

use crate::config::Json;
use crate::{invalid, Error};

use super::preprocess::{Preprocess, Size};
use super::resample::Filter;
use super::Rgb;

/// transformers' OPENAI_CLIP_MEAN / OPENAI_CLIP_STD (the class defaults).
const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// How an image becomes patches (`preprocessor_config.json`).
#[derive(Clone, Debug, PartialEq)]
pub struct PatchPreprocess {
    /// Filter, rescale and normalize (the resize is set per image).
    pub base: Preprocess,
    pub resize: bool,
    pub min_pixels: u64,
    pub max_pixels: u64,
    pub patch: usize,
    pub temporal: usize,
    pub merge: usize,
}

/// One image's patches.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Patches {
    /// [grid_h * grid_w, 3 * temporal * patch * patch], row-major.
    pub values: Vec<f32>,
    /// (t, h, w) in patches: `image_grid_thw`.
    pub grid: [u64; 3],
}

impl Patches {
    /// Patches in the grid.
    pub fn count(&self) -> u64 {
        self.grid.iter().product()
    }
}

fn triple(j: &Json, key: &str, default: [f32; 3]) -> Result<[f32; 3], Error> {
    let bad = || Error::Model(format!("{}: `{key}` must be 3 numbers", j.file));
    match j.value.get(key) {
        None | Some(serde_json::Value::Null) => Ok(default),
        Some(serde_json::Value::Array(a)) if a.len() == 3 => {
            let mut out = [0f32; 3];
            for (o, v) in out.iter_mut().zip(a) {
                *o = v.as_f64().ok_or_else(bad)? as f32;
            }
            Ok(out)
        }
        Some(v) => v.as_f64().map(|x| [x as f32; 3]).ok_or_else(bad),
    }
}

impl PatchPreprocess {
    /// Reads the model's `preprocessor_config.json`.
    pub fn read() -> Result<PatchPreprocess, Error> {
        let j = Json::processor(crate::config::Processor::Image)?;
        Self::from_json(&j)
    }

    /// The processor's settings with Qwen2-VL's class defaults (bicubic,
    /// CLIP mean and std, 56x56 to 28x28x1280 pixels, patch 14, temporal
    /// 2, merge 2); `min_pixels`/`max_pixels` override `size`'s
    /// `shortest_edge`/`longest_edge`, as the processor's constructor does.
    pub fn from_json(j: &Json) -> Result<PatchPreprocess, Error> {
        let size = j.value.get("size").filter(|v| !v.is_null());
        // `size` holds {shortest_edge, longest_edge} (transformers 5) or,
        // in some older saves, {min_pixels, max_pixels}.
        let edge = |k: &str| size.and_then(|s| s.get(k)).and_then(|v| v.as_u64());
        let pixels = |k: &str, edge_key: &str, default: u64| -> Result<u64, Error> {
            match j.value.get(k).filter(|v| !v.is_null()) {
                Some(v) => v.as_u64().ok_or_else(|| {
                    Error::Model(format!("{}: `{k}` must be a positive integer", j.file))
                }),
                None => Ok(edge(edge_key).or_else(|| edge(k)).unwrap_or(default)),
            }
        };
        let min_pixels = pixels("min_pixels", "shortest_edge", 56 * 56)?;
        let max_pixels = pixels("max_pixels", "longest_edge", 28 * 28 * 1280)?;
        let code = j.u64_or("resample", 3)?;
        let filter = Filter::from_pil(code)
            .ok_or_else(|| Error::Model(format!("{}: unknown resample filter {code}", j.file)))?;
        let rescale = match j.bool_or("do_rescale", true)? {
            true => Some(j.f64_or("rescale_factor", 1.0 / 255.0)?),
            false => None,
        };
        let normalize = match j.bool_or("do_normalize", true)? {
            true => Some((
                triple(j, "image_mean", CLIP_MEAN)?,
                triple(j, "image_std", CLIP_STD)?,
            )),
            false => None,
        };
        let p = PatchPreprocess {
            base: Preprocess {
                resize: None,
                filter,
                crop: None,
                rescale,
                normalize,
            },
            resize: j.bool_or("do_resize", true)?,
            min_pixels,
            max_pixels,
            patch: j.u64_or("patch_size", 14)? as usize,
            temporal: j.u64_or("temporal_patch_size", 2)? as usize,
            merge: j.u64_or("merge_size", 2)? as usize,
        };
        if p.patch == 0 || p.temporal == 0 || p.merge == 0 || max_pixels == 0 {
            return Err(Error::Model(format!(
                "{}: patch_size, temporal_patch_size, merge_size and max_pixels must be positive",
                j.file
            )));
        }
        Ok(p)
    }

    /// Values per patch: 3 * temporal * patch * patch.
    pub fn patch_width(&self) -> usize {
        3 * self.temporal * self.patch * self.patch
    }

    /// The image's patches and grid (`field` names it in errors).
    pub fn apply(&self, field: &str, img: &Rgb) -> Result<Patches, Error> {
        let factor = self.patch * self.merge;
        let (h, w) = match self.resize {
            true => smart_resize(
                img.height,
                img.width,
                factor,
                self.min_pixels,
                self.max_pixels,
            )
            .map_err(|e| invalid(format!("`{field}`: {e}")))?,
            false => (img.height, img.width),
        };
        if h == 0 || w == 0 || h % factor != 0 || w % factor != 0 {
            return Err(invalid(format!(
                "`{field}`: a {}x{} image does not split into {factor}x{factor} merged patches",
                img.width, img.height
            )));
        }
        let pre = Preprocess {
            resize: Some(Size::Exact(h, w)),
            ..self.base.clone()
        };
        let (h, w, values) = pre.apply(img);
        Ok(Patches {
            values: patchify(&values, (h, w), self.patch, self.merge, self.temporal),
            grid: [1, (h / self.patch) as u64, (w / self.patch) as u64],
        })
    }
}

/// transformers' `smart_resize`: (height, width) multiples of `factor`
/// near the image's, with between `min_pixels` and `max_pixels` pixels
/// (Python's float arithmetic and round-half-to-even); an aspect ratio
/// over 200 is refused, as there.
pub fn smart_resize(
    height: usize,
    width: usize,
    factor: usize,
    min_pixels: u64,
    max_pixels: u64,
) -> Result<(usize, usize), String> {
    let (hf, wf, f) = (height as f64, width as f64, factor as f64);
    if height == 0 || width == 0 || factor == 0 {
        return Err(format!("cannot resize a {width}x{height} image"));
    }
    let ratio = hf.max(wf) / hf.min(wf);
    if ratio > 200.0 {
        return Err(format!(
            "absolute aspect ratio must be smaller than 200, got {ratio}"
        ));
    }
    let mut h_bar = (hf / f).round_ties_even() * f;
    let mut w_bar = (wf / f).round_ties_even() * f;
    if h_bar * w_bar > max_pixels as f64 {
        let beta = (hf * wf / max_pixels as f64).sqrt();
        h_bar = f.max((hf / beta / f).floor() * f);
        w_bar = f.max((wf / beta / f).floor() * f);
    } else if h_bar * w_bar < min_pixels as f64 {
        let beta = (min_pixels as f64 / (hf * wf)).sqrt();
        h_bar = (hf * beta / f).ceil() * f;
        w_bar = (wf * beta / f).ceil() * f;
    }
    Ok((h_bar as usize, w_bar as usize))
}

/// `values` [3, h, w] as patches [grid_h * grid_w, 3 * temporal * patch *
/// patch] in merge-window order, each frame a copy of the image.
pub fn patchify(
    values: &[f32],
    size: (usize, usize),
    patch: usize,
    merge: usize,
    temporal: usize,
) -> Vec<f32> {
    patchify_frames(&vec![values; temporal], size, patch, merge, temporal)
}

/// `frames` (each [3, h, w], a multiple of `temporal` of them) as patches
/// [t * grid_h * grid_w, 3 * temporal * patch * patch]: temporal groups,
/// then merge windows, the patches inside a window, row-major; each row
/// (channel, frame, row, column), as Qwen2-VL's processors' `patchify`.
pub fn patchify_frames<F: AsRef<[f32]>>(
    frames: &[F],
    (h, w): (usize, usize),
    patch: usize,
    merge: usize,
    temporal: usize,
) -> Vec<f32> {
    let (gh, gw) = (h / patch, w / patch);
    let mut out = Vec::with_capacity(frames.len() * gh * gw * 3 * patch * patch);
    for group in frames.chunks_exact(temporal) {
        for wy in 0..gh / merge {
            for wx in 0..gw / merge {
                for my in 0..merge {
                    for mx in 0..merge {
                        let (y0, x0) = ((wy * merge + my) * patch, (wx * merge + mx) * patch);
                        for c in 0..3 {
                            for f in group {
                                for py in 0..patch {
                                    let at = c * h * w + (y0 + py) * w + x0;
                                    out.extend_from_slice(&f.as_ref()[at..at + patch]);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smart_resize_follows_transformers() {
        // Values from transformers' smart_resize.
        assert_eq!(smart_resize(48, 64, 16, 256, 2304), Ok((32, 48)));
        assert_eq!(smart_resize(40, 40, 16, 256, 2304), Ok((32, 32)));
        assert_eq!(smart_resize(17, 17, 16, 256, 2304), Ok((16, 16)));
        assert_eq!(smart_resize(10, 10, 28, 3136, 1003520), Ok((56, 56)));
        assert_eq!(smart_resize(1080, 1920, 28, 3136, 1003520), Ok((728, 1316)));
        assert!(smart_resize(1, 300, 28, 3136, 1003520).is_err());
    }

    #[test]
    fn pixel_limits_come_from_every_config_form() {
        let read = |text: &str| {
            PatchPreprocess::from_json(&Json::parse("preprocessor_config.json", text).unwrap())
                .unwrap()
        };
        // The hub's Qwen2-VL-7B-Instruct form: no size, no resample.
        let hub = read(
            r#"{"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14,
                "temporal_patch_size": 2, "merge_size": 2,
                "image_processor_type": "Qwen2VLImageProcessor"}"#,
        );
        assert_eq!((hub.min_pixels, hub.max_pixels), (3136, 12845056));
        assert_eq!(hub.base.filter, Filter::Bicubic);
        assert_eq!(hub.base.normalize, Some((CLIP_MEAN, CLIP_STD)));
        let v5 = read(r#"{"size": {"shortest_edge": 256, "longest_edge": 2304}, "patch_size": 8}"#);
        assert_eq!((v5.min_pixels, v5.max_pixels, v5.patch), (256, 2304, 8));
        let old = read(r#"{"size": {"min_pixels": 100, "max_pixels": 200}}"#);
        assert_eq!((old.min_pixels, old.max_pixels), (100, 200));
        assert_eq!(read("{}").max_pixels, 28 * 28 * 1280);
    }

    #[test]
    fn patches_follow_merge_windows() {
        // A 1-channel-like ramp over 3 channels, 4x4 pixels, patch 1, merge 2.
        let (h, w) = (4, 4);
        let values: Vec<f32> = (0..3 * h * w).map(|v| v as f32).collect();
        let p = patchify(&values, (h, w), 1, 2, 2);
        assert_eq!(p.len(), 16 * 6);
        // Window (0, 0): pixels (0,0), (0,1), (1,0), (1,1); each row c0 c0 c1 c1 c2 c2.
        let firsts: Vec<f32> = p.chunks(6).map(|r| r[0]).collect();
        assert_eq!(
            firsts,
            vec![0., 1., 4., 5., 2., 3., 6., 7., 8., 9., 12., 13., 10., 11., 14., 15.]
        );
        assert_eq!(&p[..6], &[0., 0., 16., 16., 32., 32.]);
    }

    #[test]
    fn identical_frames_patch_as_a_still_image() {
        let (h, w) = (4, 4);
        let img: Vec<f32> = (0..3 * h * w).map(|v| v as f32).collect();
        let two = patchify_frames(&[img.clone(), img.clone()], (h, w), 1, 2, 2);
        assert_eq!(two, patchify(&img, (h, w), 1, 2, 2));
    }

    #[test]
    fn frames_interleave_per_channel_and_group() {
        // Two temporal groups of two 2x2 frames, patch 1, merge 2: a row is
        // (c0 f0, c0 f1, c1 f0, c1 f1, c2 f0, c2 f1).
        let frame = |k: f32| -> Vec<f32> { (0..12).map(|v| v as f32 + 100.0 * k).collect() };
        let p = patchify_frames(
            &[frame(0.), frame(1.), frame(2.), frame(3.)],
            (2, 2),
            1,
            2,
            2,
        );
        assert_eq!(p.len(), 2 * 4 * 6);
        assert_eq!(&p[..6], &[0., 100., 4., 104., 8., 108.]);
        assert_eq!(&p[4 * 6..4 * 6 + 6], &[200., 300., 204., 304., 208., 308.]);
    }
}
