//! Binary request fields (images, audio): base64 text or a data URL.

use base64::Engine;

use crate::{invalid, Error};

/// The bytes of a base64 string or a `data:<mime>;base64,` URL.
pub fn base64_bytes(field: &str, s: &str) -> Result<Vec<u8>, Error> {
    let payload = match s.strip_prefix("data:") {
        Some(rest) => match rest.split_once(',') {
            Some((meta, data)) if meta.ends_with(";base64") => data,
            _ => {
                return Err(invalid(format!(
                    "`{field}`: a data URL must be `data:<mime>;base64,<data>`"
                )))
            }
        },
        None => s,
    };
    // Line breaks (MIME-style base64) are dropped; most payloads have none
    // and are decoded in place.
    let clean: std::borrow::Cow<[u8]> = match payload.bytes().any(|b| b.is_ascii_whitespace()) {
        true => payload
            .bytes()
            .filter(|b| !b.is_ascii_whitespace())
            .collect::<Vec<u8>>()
            .into(),
        false => payload.as_bytes().into(),
    };
    base64::engine::general_purpose::STANDARD
        .decode(&clean)
        .map_err(|e| invalid(format!("`{field}` is not valid base64: {e}")))
}
