//! Frames of an animated GIF or WebP (a short video), decoded inside the
//! sandbox as the full composited canvas of each frame, alpha dropped
//! (Pillow's `seek(i)` then `convert("RGB")` for opaque frames).

use image::codecs::gif::GifDecoder;
use image::codecs::webp::WebPDecoder;
use image::{AnimationDecoder, ImageFormat};

use super::{Rgb, MAX_PIXELS};
use crate::{invalid, Error};

/// The first `max` frames of an animated GIF or WebP; at most
/// [`MAX_PIXELS`] pixels over the frames decoded.
pub fn animation_frames(field: &str, bytes: &[u8], max: usize) -> Result<Vec<Rgb>, Error> {
    let bad = |e: String| invalid(format!("`{field}`: {e}"));
    let cursor = std::io::Cursor::new(bytes);
    let frames = match image::guess_format(bytes) {
        Ok(ImageFormat::Gif) => GifDecoder::new(cursor)
            .map_err(|e| bad(format!("cannot decode the GIF: {e}")))?
            .into_frames(),
        Ok(ImageFormat::WebP) => WebPDecoder::new(cursor)
            .map_err(|e| bad(format!("cannot decode the WebP: {e}")))?
            .into_frames(),
        _ => return Err(bad("a video must be an animated GIF or WebP".into())),
    };
    let mut out = Vec::new();
    let mut pixels = 0u64;
    for frame in frames.take(max) {
        let frame = frame.map_err(|e| bad(format!("cannot decode a frame: {e}")))?;
        let rgba = frame.into_buffer();
        pixels += rgba.width() as u64 * rgba.height() as u64;
        if pixels > MAX_PIXELS {
            return Err(bad(format!(
                "the frames are over the limit of {MAX_PIXELS} pixels"
            )));
        }
        let rgb = image::DynamicImage::ImageRgba8(rgba).into_rgb8();
        out.push(Rgb {
            width: rgb.width() as usize,
            height: rgb.height() as usize,
            data: rgb.into_raw(),
        });
    }
    Ok(out)
}
