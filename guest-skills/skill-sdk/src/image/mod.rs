//! Images for vision skills, decoded inside the sandbox: base64 or data URL
//! bytes -> RGB pixels (PNG, JPEG with its EXIF orientation, WebP, GIF's
//! first frame, BMP) under size limits, then the preprocessing of
//! transformers' (PIL-based) image processors: [`resample`] reproduces
//! Pillow's resize bit for bit on 8-bit images, [`Preprocess`] reads
//! `preprocessor_config.json` (resize, center crop, rescale, normalize),
//! [`patches`] cuts images into Qwen2-VL's dynamic grids of patches,
//! [`anyres`] tiles them as LLaVA-NeXT's processor does.
//!
//! Enabled by the SDK's `image` feature.

pub mod anyres;
pub mod frames;
pub mod patches;
pub mod preprocess;
pub mod resample;

use image::{DynamicImage, ImageDecoder, ImageReader, Limits};

pub use preprocess::Preprocess;

use crate::{invalid, Error};

/// Largest decoded image, in pixels (width x height), and bytes the
/// decoder may allocate.
pub const MAX_PIXELS: u64 = 40_000_000;
const MAX_ALLOC: u64 = 512 << 20;

/// An 8-bit RGB image, row-major, 3 bytes a pixel.
#[derive(Clone, Debug, PartialEq)]
pub struct Rgb {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

pub use crate::binary::base64_bytes;

/// Decodes image bytes to RGB as transformers' `load_image` does: EXIF
/// orientation applied, the first frame of an animation, alpha dropped.
pub fn decode(field: &str, bytes: &[u8]) -> Result<Rgb, Error> {
    let bad = |e: String| invalid(format!("`{field}`: {e}"));
    let reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| bad(format!("cannot read the image: {e}")))?;
    if reader.format().is_none() {
        return Err(bad(
            "not an image in a supported format (PNG, JPEG, WebP, GIF, BMP)".into(),
        ));
    }
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_ALLOC);
    let mut decoder = reader.into_decoder().map_err(|e| decode_error(field, e))?;
    let (w, h) = decoder.dimensions();
    if (w as u64) * (h as u64) > MAX_PIXELS || w == 0 || h == 0 {
        return Err(bad(format!(
            "a {w}x{h} image is outside the limits (1 to {MAX_PIXELS} pixels)"
        )));
    }
    decoder
        .set_limits(limits)
        .map_err(|e| bad(format!("image limits: {e}")))?;
    let orientation = decoder.orientation().ok();
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| decode_error(field, e))?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    let rgb = img.into_rgb8();
    Ok(Rgb {
        width: rgb.width() as usize,
        height: rgb.height() as usize,
        data: rgb.into_raw(),
    })
}

/// A decoder failure: over the limits, or malformed.
fn decode_error(field: &str, e: image::ImageError) -> Error {
    match e {
        image::ImageError::Limits(_) => invalid(format!(
            "`{field}`: the image is outside the limits ({MAX_PIXELS} pixels, {} MiB decoded)",
            MAX_ALLOC >> 20
        )),
        e => invalid(format!("`{field}`: cannot decode the image: {e}")),
    }
}

/// [`base64_bytes`] then [`decode`].
pub fn from_base64(field: &str, s: &str) -> Result<Rgb, Error> {
    decode(field, &base64_bytes(field, s)?)
}

/// A request's base64 images: `images` (a list) or one `image`, each with
/// the field name errors give (`images[1]`); neither is none.
pub fn request_images(v: &serde_json::Value) -> Result<Vec<(String, &str)>, Error> {
    match (v.get("images"), v.get("image")) {
        (Some(_), Some(_)) => Err(invalid("give `images` or `image`, not both")),
        (Some(serde_json::Value::Array(a)), None) => a
            .iter()
            .enumerate()
            .map(|(i, x)| {
                x.as_str()
                    .map(|s| (format!("images[{i}]"), s))
                    .ok_or_else(|| invalid(format!("`images[{i}]` must be a base64 string")))
            })
            .collect(),
        (Some(_), None) => Err(invalid("`images` must be a list of base64 strings")),
        (None, Some(serde_json::Value::String(s))) => Ok(vec![("image".into(), s.as_str())]),
        (None, Some(_)) => Err(invalid("`image` must be a base64 string")),
        (None, None) => Ok(Vec::new()),
    }
}
