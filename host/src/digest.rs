//! Content identity of skill components: the SHA-256 digest of the
//! component's bytes, written `sha256:<64 hex digits>`, and the equivalent
//! IPFS CIDv1 (the seed's content addressing): version 1, codec `raw`
//! (0x55), a sha2-256 multihash (0x12, 32 bytes), in base32 lower case
//! with the multibase prefix `b` (so every such CID starts `bafkrei`).
//!
//! Both forms name the same bytes; either may pin a skill
//! (`skill_digest` of an endpoint, or `SKILL@sha256:...` wherever a skill
//! is named), and loading refuses a file whose bytes differ.

use std::fmt;
use std::path::Path;

use sha2::{Digest as _, Sha256};

/// Why a digest could not be read or computed.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error(
        "`{text}` is not a skill digest: expected `sha256:` and 64 hex digits, \
         or a CIDv1 of the raw codec with a sha2-256 multihash (`bafkrei...`)"
    )]
    Syntax { text: String },
    #[error("cannot read {path} to compute its digest: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

/// The SHA-256 digest of a component.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest([u8; 32]);

/// CIDv1 prefix: version 1, codec raw (0x55), multihash sha2-256 (0x12)
/// of 32 bytes (0x20).
const CID_PREFIX: [u8; 4] = [0x01, 0x55, 0x12, 0x20];

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }

    /// The digest of the file at `path`.
    pub fn of_file(path: &Path) -> Result<Digest, DigestError> {
        std::fs::read(path)
            .map(|b| Digest::of(&b))
            .map_err(|source| DigestError::Read {
                path: path.display().to_string(),
                source,
            })
    }

    /// The 32 digest bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex of the digest (64 characters).
    pub fn hex(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.0)
    }

    /// The IPFS CIDv1 (raw codec, sha2-256, base32 lower, prefix `b`).
    pub fn cid(&self) -> String {
        let mut bytes = CID_PREFIX.to_vec();
        bytes.extend_from_slice(&self.0);
        format!(
            "b{}",
            data_encoding::BASE32_NOPAD.encode(&bytes).to_lowercase()
        )
    }

    /// Parses `sha256:<hex>` (upper or lower case hex) or a raw sha2-256
    /// CIDv1 in base32 (`bafkrei...`).
    pub fn parse(text: &str) -> Result<Digest, DigestError> {
        let t = text.trim();
        let bad = || DigestError::Syntax { text: t.into() };
        if let Some(hex) = t.strip_prefix("sha256:") {
            if hex.len() != 64 {
                return Err(bad());
            }
            let raw = data_encoding::HEXLOWER_PERMISSIVE
                .decode(hex.as_bytes())
                .map_err(|_| bad())?;
            return raw.try_into().map(Digest).map_err(|_| bad());
        }
        let b32 = t.strip_prefix('b').ok_or_else(bad)?;
        let raw = data_encoding::BASE32_NOPAD
            .decode(b32.to_ascii_uppercase().as_bytes())
            .map_err(|_| bad())?;
        match raw.strip_prefix(&CID_PREFIX[..]) {
            Some(d) => d.try_into().map(Digest).map_err(|_| bad()),
            None => Err(bad()),
        }
    }

    /// `sha256:` and the first 12 hex digits, for tables.
    pub fn short(&self) -> String {
        format!("sha256:{}", &self.hex()[..12])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl std::str::FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

/// A component whose bytes are not the pinned ones.
#[derive(Debug)]
pub struct PinMismatch {
    pub skill: String,
    pub path: String,
    pub expected: Digest,
    pub got: Digest,
}

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "skill `{}` is pinned to {} but {} is {} (CID {}): refusing to load a different \
             component; rebuild the pinned one or update the pin",
            self.skill,
            self.expected,
            self.path,
            self.got,
            self.got.cid()
        )
    }
}

/// Splits a skill spec `SKILL@sha256:...` (or `SKILL@bafkrei...`) into the
/// skill and its pinned digest. A suffix after `@` that is not a digest
/// leaves the spec whole (a path may contain `@`).
pub fn split_pin(spec: &str) -> (&str, Option<Digest>) {
    match spec.rsplit_once('@') {
        Some((skill, pin)) if !skill.is_empty() => match Digest::parse(pin) {
            Ok(d) => (skill, Some(d)),
            Err(_) => (spec, None),
        },
        _ => (spec, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_input_has_the_well_known_digest_and_cid() {
        let d = Digest::of(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        // The CID IPFS gives an empty raw block.
        assert_eq!(
            d.cid(),
            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
        );
    }

    #[test]
    fn both_forms_parse_back() {
        let d = Digest::of(b"hello");
        assert_eq!(Digest::parse(&d.to_string()).ok(), Some(d));
        assert_eq!(Digest::parse(&d.cid()).ok(), Some(d));
        assert_eq!(
            Digest::parse(&d.to_string().to_uppercase().replace("SHA256", "sha256")).ok(),
            Some(d)
        );
        for bad in [
            "",
            "sha256:",
            "sha256:abc",
            "md5:00",
            "bafy",
            "Qm123",
            "bafkreixyz",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pins_split_off_skill_specs() {
        let d = Digest::of(b"x");
        let spec = format!("text-embedding@{d}");
        assert_eq!(split_pin(&spec), ("text-embedding", Some(d)));
        let spec = format!("dir/a.wasm@{}", d.cid());
        assert_eq!(split_pin(&spec), ("dir/a.wasm", Some(d)));
        assert_eq!(split_pin("me@host/a.wasm"), ("me@host/a.wasm", None));
        assert_eq!(split_pin("plain"), ("plain", None));
    }
}
