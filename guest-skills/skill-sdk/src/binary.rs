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
    let clean: String = payload
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(clean.as_bytes())
        .map_err(|e| invalid(format!("`{field}` is not valid base64: {e}")))
}
