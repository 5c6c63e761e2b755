//! Qwen2-VL videos as `Qwen2VLVideoProcessor` (transformers 5) makes
//! them: a video is a list of frames (each a base64 image or data URL, as
//! the images), or one animated GIF/WebP whose frames are all taken; the
//! frames are used as given (`do_sample_frames` is the client's business).
//!
//! Every frame is resized to the size `smart_resize` picks for the
//! video's (shared) frame size, within the video processor's
//! `min_pixels`/`max_pixels` (`size` `shortest_edge`/`longest_edge`; with
//! `cap_pixels_per_frame`, also within an even share of
//! `max_video_tokens`' pixels), rescaled and normalized; the frame count is
//! padded to a multiple of `temporal_patch_size` by repeating the last
//! frame, and each group of `temporal_patch_size` frames is cut into
//! patches in merge-window order, one patch row holding (channel, frame,
//! row, column) values: grid (frames / temporal, h / patch, w / patch).
//! The resize uses Pillow's filter (`skill_sdk::image::resample`), as the
//! image side does; transformers resizes videos with torchvision's
//! antialiased kernel, which can round a few pixel values differently
//! (frames already at their `smart_resize` size are not resized by either).
//!
//! The settings come from `video_preprocessor_config.json`, else from
//! `preprocessor_config.json` (where transformers also looks), with the
//! video processor's own defaults (128 * 28 * 28 to 768 * 28 * 28 pixels)
//! when neither `size` nor `min_pixels`/`max_pixels` is given.

use skill_sdk::config::Json;
use skill_sdk::image::patches::{patchify_frames, smart_resize, PatchPreprocess, Patches};
use skill_sdk::image::preprocess::{Preprocess, Size};
use skill_sdk::image::Rgb;
use skill_sdk::{invalid, Error};

/// The video processor's default pixel limits (`size`).
const MIN_PIXELS: u64 = 128 * 28 * 28;
const MAX_PIXELS: u64 = 28 * 28 * 768;

/// The most pixels of a video's decoded frames (those of an animated
/// GIF/WebP, likewise).
const MAX_VIDEO_PIXELS: u64 = skill_sdk::image::MAX_PIXELS;

/// How a video becomes patches.
#[derive(Clone, Debug, PartialEq)]
pub struct VideoPreprocess {
    pub pre: PatchPreprocess,
    /// `max_video_tokens` when `cap_pixels_per_frame` is on.
    pub cap_tokens: Option<u64>,
    /// The most frames a video may have (`max_frames`, 768 by default).
    pub max_frames: usize,
}

/// A request's videos: the field name errors give (`videos[1]`) and the
/// video (a list of frames, or an animated GIF/WebP string).
pub fn request_videos(v: &serde_json::Value) -> Result<Vec<(String, &serde_json::Value)>, Error> {
    match (v.get("videos"), v.get("video")) {
        (Some(_), Some(_)) => Err(invalid("give `videos` or `video`, not both")),
        (Some(serde_json::Value::Array(a)), None) => Ok(a
            .iter()
            .enumerate()
            .map(|(i, x)| (format!("videos[{i}]"), x))
            .collect()),
        (Some(_), None) => Err(invalid(
            "`videos` must be a list of videos (each a list of base64 frames)",
        )),
        (None, Some(x)) => Ok(vec![("video".into(), x)]),
        (None, None) => Ok(Vec::new()),
    }
}

impl VideoPreprocess {
    /// Reads the model's video processor settings.
    pub fn read() -> Result<VideoPreprocess, Error> {
        Self::from_json(&Json::processor(skill_sdk::config::Processor::Video)?)
    }

    /// The settings of a video (or image) processor config.
    pub fn from_json(j: &Json) -> Result<VideoPreprocess, Error> {
        let mut pre = PatchPreprocess::from_json(j)?;
        let given = |k: &str| j.value.get(k).is_some_and(|v| !v.is_null());
        if !given("size") && !given("min_pixels") && !given("max_pixels") {
            (pre.min_pixels, pre.max_pixels) = (MIN_PIXELS, MAX_PIXELS);
        }
        let cap_tokens = match j.bool_or("cap_pixels_per_frame", false)? {
            true => Some(j.u64_or("max_video_tokens", 128_000)?),
            false => None,
        };
        Ok(VideoPreprocess {
            pre,
            cap_tokens,
            max_frames: j.u64_or("max_frames", 768)?.max(1) as usize,
        })
    }

    /// Decodes the video of `field` and cuts it into patches.
    pub fn apply(&self, field: &str, video: &serde_json::Value) -> Result<Patches, Error> {
        let frames = match video {
            serde_json::Value::Array(a) => {
                if a.len() > self.max_frames {
                    return Err(invalid(format!(
                        "`{field}` has {} frames; at most {} are taken",
                        a.len(),
                        self.max_frames
                    )));
                }
                let mut frames: Vec<Rgb> = Vec::with_capacity(a.len());
                let mut pixels = 0u64;
                for (k, f) in a.iter().enumerate() {
                    let name = format!("{field}[{k}]");
                    let s = f.as_str().ok_or_else(|| {
                        invalid(format!("`{name}` must be a base64 image (a video frame)"))
                    })?;
                    let frame = skill_sdk::image::from_base64(&name, s)?;
                    pixels += (frame.width * frame.height) as u64;
                    if pixels > MAX_VIDEO_PIXELS {
                        return Err(invalid(format!(
                            "`{field}`: the frames are over the limit of {MAX_VIDEO_PIXELS} pixels"
                        )));
                    }
                    frames.push(frame);
                }
                frames
            }
            serde_json::Value::String(s) => {
                let bytes = skill_sdk::image::base64_bytes(field, s)?;
                skill_sdk::image::frames::animation_frames(field, &bytes, self.max_frames)?
            }
            _ => {
                return Err(invalid(format!(
                    "`{field}` must be a list of base64 frames (or an animated GIF/WebP)"
                )))
            }
        };
        self.patches(field, &frames)
    }

    /// The frames' patches and grid.
    pub fn patches(&self, field: &str, frames: &[Rgb]) -> Result<Patches, Error> {
        let first = frames
            .first()
            .ok_or_else(|| invalid(format!("`{field}` has no frames")))?;
        if let Some((k, f)) = (frames.iter().enumerate())
            .find(|(_, f)| (f.width, f.height) != (first.width, first.height))
        {
            return Err(invalid(format!(
                "`{field}`: frame {k} is {}x{} and frame 0 {}x{}; a video's frames share one size",
                f.width, f.height, first.width, first.height
            )));
        }
        let p = &self.pre;
        let factor = p.patch * p.merge;
        let (h, w) = match p.resize {
            true => {
                let max_pixels = match self.cap_tokens {
                    Some(tokens) => {
                        let total = (tokens as f64 * (factor * factor) as f64 * 0.9) as u64;
                        let share = total * p.temporal as u64 / frames.len() as u64;
                        p.max_pixels
                            .min(share)
                            .max((p.min_pixels as f64 * 1.05) as u64)
                    }
                    None => p.max_pixels,
                };
                smart_resize(first.height, first.width, factor, p.min_pixels, max_pixels)
                    .map_err(|e| invalid(format!("`{field}`: {e}")))?
            }
            false => (first.height, first.width),
        };
        if h == 0 || w == 0 || h % factor != 0 || w % factor != 0 {
            return Err(invalid(format!(
                "`{field}`: {}x{} frames do not split into {factor}x{factor} merged patches",
                first.width, first.height
            )));
        }
        let pre = Preprocess {
            resize: Some(Size::Exact(h, w)),
            ..p.base.clone()
        };
        let mut values: Vec<Vec<f32>> = frames.iter().map(|f| pre.apply(f).2).collect();
        while !values.len().is_multiple_of(p.temporal) {
            let last = values.last().cloned().unwrap_or_default();
            values.push(last);
        }
        Ok(Patches {
            values: patchify_frames(&values, (h, w), p.patch, p.merge, p.temporal),
            grid: [
                (values.len() / p.temporal) as u64,
                (h / p.patch) as u64,
                (w / p.patch) as u64,
            ],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_and_padding_follow_the_video_processor() {
        let read = |t: &str| {
            VideoPreprocess::from_json(&Json::parse("video_preprocessor_config.json", t).unwrap())
                .unwrap()
        };
        let d = read("{}");
        assert_eq!(
            (d.pre.min_pixels, d.pre.max_pixels),
            (MIN_PIXELS, MAX_PIXELS)
        );
        let v = read(
            r#"{"size": {"shortest_edge": 256, "longest_edge": 2304}, "patch_size": 8,
                "merge_size": 2, "temporal_patch_size": 2}"#,
        );
        // Three 32x32 frames: the last repeated, grid (2, 4, 4).
        let f = Rgb {
            width: 32,
            height: 32,
            data: vec![7; 32 * 32 * 3],
        };
        let p = v
            .patches("video", &[f.clone(), f.clone(), f.clone()])
            .unwrap();
        assert_eq!(p.grid, [2, 4, 4]);
        assert_eq!(p.values.len(), 2 * 16 * 384);
        assert!(v.patches("video", &[]).is_err());
        let odd = Rgb {
            width: 16,
            height: 32,
            data: vec![0; 16 * 32 * 3],
        };
        assert!(v.patches("video", &[f, odd]).is_err());
    }
}
