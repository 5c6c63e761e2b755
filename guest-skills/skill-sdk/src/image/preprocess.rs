//! transformers' slow image processors (ViT, DeiT, the shortest-edge
//! ones, and DETR's shortest/longest edge) from `preprocessor_config.json`:
//! resize with the named Pillow filter, center crop (zero padding when the
//! crop is larger), rescale (in f64, then f32) and normalize (in f32),
//! channels first; [`Preprocess::batch_padded`] pads a batch of different
//! sizes to the largest with a pixel mask (DETR's `do_pad`).

use crate::config::Json;
use crate::{Error, Tensor};

use super::resample::{resize, Filter};
use super::Rgb;

/// How an image becomes `pixel_values`.
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocess {
    pub resize: Option<Size>,
    pub filter: Filter,
    /// (height, width)
    pub crop: Option<(usize, usize)>,
    pub rescale: Option<f64>,
    pub normalize: Option<([f32; 3], [f32; 3])>,
}

/// A resize target.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Size {
    /// Exactly (height, width).
    Exact(usize, usize),
    /// The shorter side to this length, keeping the aspect ratio.
    ShortestEdge(usize),
    /// DETR's `{shortest_edge, longest_edge}`: the shorter side to the first
    /// length unless the longer side would then exceed the second.
    ShortestLongest(usize, usize),
}

fn dims(j: &Json, key: &str) -> Result<Option<serde_json::Value>, Error> {
    Ok(j.value.get(key).filter(|v| !v.is_null()).cloned())
}

fn size_of(j: &Json, v: &serde_json::Value, key: &str) -> Result<Size, Error> {
    let n = |k: &str| v.get(k).and_then(|x| x.as_u64()).map(|x| x as usize);
    if let Some(s) = v.as_u64() {
        return Ok(Size::Exact(s as usize, s as usize));
    }
    match (n("height"), n("width"), n("shortest_edge")) {
        (Some(h), Some(w), _) => Ok(Size::Exact(h, w)),
        (_, _, Some(s)) => match n("longest_edge") {
            Some(l) => Ok(Size::ShortestLongest(s, l)),
            None => Ok(Size::ShortestEdge(s)),
        },
        _ => Err(Error::Model(format!(
            "{}: `{key}` must be a number, {{height, width}} or {{shortest_edge}}",
            j.file
        ))),
    }
}

fn triple(j: &Json, key: &str, default: [f32; 3]) -> Result<[f32; 3], Error> {
    match j.value.get(key) {
        None | Some(serde_json::Value::Null) => Ok(default),
        Some(serde_json::Value::Array(a)) if a.len() == 3 => {
            let mut out = [0f32; 3];
            for (o, v) in out.iter_mut().zip(a) {
                *o = v
                    .as_f64()
                    .ok_or_else(|| Error::Model(format!("{}: `{key}` must hold numbers", j.file)))?
                    as f32;
            }
            Ok(out)
        }
        Some(v) => match v.as_f64() {
            Some(x) => Ok([x as f32; 3]),
            None => Err(Error::Model(format!(
                "{}: `{key}` must be 3 numbers",
                j.file
            ))),
        },
    }
}

fn rescale_of(j: &Json) -> Result<Option<f64>, Error> {
    Ok(match j.bool_or("do_rescale", true)? {
        true => Some(j.f64_or("rescale_factor", 1.0 / 255.0)?),
        false => None,
    })
}

/// Per-channel (mean, std).
type Normalize = ([f32; 3], [f32; 3]);

fn normalize_of(j: &Json) -> Result<Option<Normalize>, Error> {
    Ok(match j.bool_or("do_normalize", true)? {
        true => Some((
            triple(j, "image_mean", [0.5; 3])?,
            triple(j, "image_std", [0.5; 3])?,
        )),
        false => None,
    })
}

impl Preprocess {
    /// Reads the model's image processor settings ([`Json::processor`]).
    pub fn read() -> Result<Preprocess, Error> {
        Self::from_json(&Json::processor(crate::config::Processor::Image)?)
    }

    pub fn from_json(j: &Json) -> Result<Preprocess, Error> {
        let types = [
            j.str_or("image_processor_type", "")?,
            j.str_or("feature_extractor_type", "")?,
        ];
        // DETR's processors read a bare `size` as the shortest edge with
        // `max_size` (default 1333) as the longest.
        let detr = types.iter().any(|t| t.starts_with("Detr"));
        // VideoMAE's (also X-CLIP's): a bare `size` is the shortest edge
        // (`default_to_square = False`); left out, the class defaults: a
        // shortest edge of 224 and a 224x224 center crop.
        let videomae = types.iter().any(|t| t.starts_with("VideoMAE"));
        let resize = match (j.bool_or("do_resize", true)?, dims(j, "size")?) {
            (true, Some(v)) => match (detr, videomae, v.as_u64()) {
                (true, _, Some(s)) => Some(Size::ShortestLongest(
                    s as usize,
                    j.u64_or("max_size", 1333)? as usize,
                )),
                (_, true, Some(s)) => Some(Size::ShortestEdge(s as usize)),
                _ => Some(size_of(j, &v, "size")?),
            },
            (true, None) if videomae => Some(Size::ShortestEdge(224)),
            _ => None,
        };
        let code = j.u64_or("resample", 2)?;
        let filter = Filter::from_pil(code)
            .ok_or_else(|| Error::Model(format!("{}: unknown resample filter {code}", j.file)))?;
        // ConvNeXt's processor: a shortest edge s under 384 is resized to
        // int(s / crop_pct) and center cropped to s x s; from 384 on the
        // image is warped to s x s.
        let convnext = j
            .str_or("image_processor_type", "")?
            .starts_with("ConvNext");
        if let (true, Some(Size::ShortestEdge(s))) =
            (convnext && j.bool_or("do_resize", true)?, resize)
        {
            let pct = j.f64_or("crop_pct", 224.0 / 256.0)?;
            if pct.is_nan() || pct <= 0.0 {
                return Err(Error::Model(format!(
                    "{}: `crop_pct` must be positive",
                    j.file
                )));
            }
            let (resize, crop) = match s < 384 {
                true => (Size::ShortestEdge((s as f64 / pct) as usize), Some((s, s))),
                false => (Size::Exact(s, s), None),
            };
            return Ok(Preprocess {
                resize: Some(resize),
                filter,
                crop,
                rescale: rescale_of(j)?,
                normalize: normalize_of(j)?,
            });
        }
        let crop = match (
            j.bool_or("do_center_crop", videomae)?,
            dims(j, "crop_size")?,
        ) {
            (true, Some(v)) => match size_of(j, &v, "crop_size")? {
                Size::Exact(h, w) => Some((h, w)),
                Size::ShortestEdge(s) | Size::ShortestLongest(s, _) => Some((s, s)),
            },
            (true, None) if videomae => Some((224, 224)),
            _ => None,
        };
        Ok(Preprocess {
            resize,
            filter,
            crop,
            rescale: rescale_of(j)?,
            normalize: normalize_of(j)?,
        })
    }

    /// The (height, width) of `pixel_values`, when it does not depend on
    /// the image.
    pub fn output_size(&self) -> Option<(usize, usize)> {
        match (self.crop, self.resize) {
            (Some(c), _) => Some(c),
            (None, Some(Size::Exact(h, w))) => Some((h, w)),
            _ => None,
        }
    }

    /// `pixel_values` [3, height, width] (f32 values, channels first).
    pub fn apply(&self, img: &Rgb) -> (usize, usize, Vec<f32>) {
        let img = match self.resize {
            Some(Size::Exact(h, w)) => resize(img, w, h, self.filter),
            Some(Size::ShortestEdge(s)) => {
                let (h, w) = shortest_edge(img.height, img.width, s);
                resize(img, w, h, self.filter)
            }
            Some(Size::ShortestLongest(s, l)) => {
                let (h, w) = size_with_aspect_ratio(img.height, img.width, s, l);
                resize(img, w, h, self.filter)
            }
            None => img.clone(),
        };
        let img = match self.crop {
            Some((h, w)) => center_crop(&img, h, w),
            None => img,
        };
        let (h, w) = (img.height, img.width);
        // Each channel's value depends only on its byte: a table of 256.
        let table: Vec<[f32; 256]> = (0..3).map(|c| self.channel_table(c)).collect();
        let mut out = vec![0f32; 3 * h * w];
        let (r, rest) = out.split_at_mut(h * w);
        let (g, b) = rest.split_at_mut(h * w);
        for (i, px) in img.data.chunks_exact(3).enumerate() {
            r[i] = table[0][px[0] as usize];
            g[i] = table[1][px[1] as usize];
            b[i] = table[2][px[2] as usize];
        }
        (h, w, out)
    }

    /// Channel `c`'s value of every byte: rescaled, then normalised.
    fn channel_table(&self, c: usize) -> [f32; 256] {
        std::array::from_fn(|byte| {
            let mut v = match self.rescale {
                Some(s) => (byte as f64 * s) as f32,
                None => byte as f32,
            };
            if let Some((mean, std)) = self.normalize {
                v = (v - mean[c]) / std[c];
            }
            v
        })
    }

    /// Stacks images of one size into `pixel_values` [n, 3, h, w].
    pub fn batch(&self, images: &[Rgb]) -> Result<Tensor, Error> {
        let mut data = Vec::new();
        let mut size = None;
        for img in images {
            let (h, w, v) = self.apply(img);
            if *size.get_or_insert((h, w)) != (h, w) {
                return Err(crate::internal(
                    "images of one batch differ in size after preprocessing",
                ));
            }
            data.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        }
        let (h, w) = size.unwrap_or((0, 0));
        Ok(Tensor {
            dtype: crate::Dtype::F32,
            shape: vec![images.len() as u64, 3, h as u64, w as u64],
            data,
        })
    }
}

/// Pads images of different sizes to the largest height and width of the
/// batch (zeros after normalisation, bottom and right) as DETR's
/// processor does: `pixel_values` [n, 3, H, W] and each image's (height,
/// width) before padding (its pixel mask is that top-left rectangle).
pub fn pad_batch(images: &[(usize, usize, Vec<f32>)]) -> (Tensor, Vec<(usize, usize)>) {
    let ph = images.iter().map(|i| i.0).max().unwrap_or(0);
    let pw = images.iter().map(|i| i.1).max().unwrap_or(0);
    let mut data = Vec::with_capacity(images.len() * 3 * ph * pw * 4);
    for (h, w, v) in images {
        for c in 0..3 {
            for y in 0..ph {
                for x in 0..pw {
                    let px = match y < *h && x < *w {
                        true => v[c * h * w + y * w + x],
                        false => 0.0,
                    };
                    data.extend_from_slice(&px.to_le_bytes());
                }
            }
        }
    }
    let tensor = Tensor {
        dtype: crate::Dtype::F32,
        shape: vec![images.len() as u64, 3, ph as u64, pw as u64],
        data,
    };
    (tensor, images.iter().map(|i| (i.0, i.1)).collect())
}

/// transformers' `get_size_with_aspect_ratio((h, w), size, max_size)`
/// (DETR): (height, width) with the shorter side `size`, unless the longer
/// would exceed `max_size`, then the longer side about `max_size`.
pub fn size_with_aspect_ratio(h: usize, w: usize, size: usize, max_size: usize) -> (usize, usize) {
    let (min_o, max_o) = (h.min(w) as f64, h.max(w) as f64);
    let mut size = size;
    let mut raw = None;
    if max_o / min_o * size as f64 > max_size as f64 {
        let r = max_size as f64 * min_o / max_o;
        size = r.round_ties_even() as usize;
        raw = Some(r);
    }
    if (h <= w && h == size) || (w <= h && w == size) {
        return (h, w);
    }
    let scaled = |num: usize, den: usize| match raw {
        Some(r) => (r * num as f64 / den as f64) as usize,
        None => ((size * num) as f64 / den as f64) as usize,
    };
    if w < h {
        (scaled(h, w), size)
    } else {
        (size, scaled(w, h))
    }
}

/// transformers' `get_resize_output_image_size(..., default_to_square=False)`:
/// (height, width) with the shorter side `s`.
fn shortest_edge(h: usize, w: usize, s: usize) -> (usize, usize) {
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    let new_long = (s as f64 * long as f64 / short as f64) as usize;
    if w <= h {
        (new_long, s)
    } else {
        (s, new_long)
    }
}

/// transformers' `center_crop`: offsets floor((orig - crop) / 2), zero
/// padding (centred, ceil) where the crop is larger than the image.
fn center_crop(img: &Rgb, ch: usize, cw: usize) -> Rgb {
    let (h, w) = (img.height as i64, img.width as i64);
    let (ch_, cw_) = (ch as i64, cw as i64);
    let (nh, nw) = (h.max(ch_), w.max(cw_));
    let top_pad = (nh - h + 1) / 2;
    let left_pad = (nw - w + 1) / 2;
    let top = (h - ch_).div_euclid(2) + top_pad;
    let left = (w - cw_).div_euclid(2) + left_pad;
    let mut data = vec![0u8; ch * cw * 3];
    for y in 0..ch_ {
        let sy = top + y - top_pad;
        if !(0..h).contains(&sy) {
            continue;
        }
        for x in 0..cw_ {
            let sx = left + x - left_pad;
            if !(0..w).contains(&sx) {
                continue;
            }
            let src = ((sy * w + sx) * 3) as usize;
            let dst = ((y * cw_ + x) * 3) as usize;
            data[dst..dst + 3].copy_from_slice(&img.data[src..src + 3]);
        }
    }
    Rgb {
        width: cw,
        height: ch,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn center_crop_takes_the_middle_and_pads_when_larger() {
        let img = Rgb {
            width: 4,
            height: 4,
            data: (0..48).map(|v| v as u8).collect(),
        };
        let c = center_crop(&img, 2, 2);
        assert_eq!(&c.data[..3], &img.data[(4 + 1) * 3..(4 + 1) * 3 + 3]);
        let p = center_crop(&img, 6, 6);
        assert_eq!(&p.data[..3], &[0, 0, 0]);
        assert_eq!(&p.data[(6 + 1) * 3..(6 + 1) * 3 + 3], &img.data[..3]);
    }

    #[test]
    fn detr_sizes_follow_get_size_with_aspect_ratio() {
        assert_eq!(size_with_aspect_ratio(480, 640, 800, 1333), (800, 1066));
        assert_eq!(size_with_aspect_ratio(100, 400, 800, 1333), (333, 1333));
        assert_eq!(size_with_aspect_ratio(800, 600, 800, 1333), (1066, 800));
        assert_eq!(size_with_aspect_ratio(64, 48, 64, 96), (85, 64));
        assert_eq!(size_with_aspect_ratio(64, 64, 64, 96), (64, 64));
    }

    #[test]
    fn detr_hub_config_reads_size_and_max_size() {
        let j = Json::parse(
            "preprocessor_config.json",
            r#"{"feature_extractor_type": "DetrFeatureExtractor", "size": 800, "max_size": 1333,
                "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}"#,
        )
        .unwrap();
        let p = Preprocess::from_json(&j).unwrap();
        assert_eq!(p.resize, Some(Size::ShortestLongest(800, 1333)));
        assert_eq!(p.crop, None);
        assert_eq!(p.filter, Filter::Bilinear);
    }

    #[test]
    fn videomae_legacy_config_reads_a_bare_size_as_the_shortest_edge() {
        // The form of X-CLIP's hub checkpoints: no crop_size (the class
        // default 224x224), `size` a bare number.
        let j = Json::parse(
            "preprocessor_config.json",
            r#"{"do_center_crop": true, "do_normalize": true, "do_resize": true,
                "feature_extractor_type": "VideoMAEFeatureExtractor",
                "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
                "processor_class": "XCLIPProcessor", "resample": 2, "size": 224}"#,
        )
        .unwrap();
        let p = Preprocess::from_json(&j).unwrap();
        assert_eq!(p.resize, Some(Size::ShortestEdge(224)));
        assert_eq!(p.crop, Some((224, 224)));
        let j = Json::parse(
            "preprocessor_config.json",
            r#"{"image_processor_type": "VideoMAEImageProcessor", "size": 36, "crop_size": 32}"#,
        )
        .unwrap();
        let p = Preprocess::from_json(&j).unwrap();
        assert_eq!(p.resize, Some(Size::ShortestEdge(36)));
        assert_eq!(p.crop, Some((32, 32)));
    }

    #[test]
    fn shortest_edge_keeps_the_aspect_ratio() {
        assert_eq!(shortest_edge(100, 200, 50), (50, 100));
        assert_eq!(shortest_edge(300, 120, 224), (560, 224));
    }
}
