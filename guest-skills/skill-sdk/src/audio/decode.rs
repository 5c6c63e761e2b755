//! Audio file decoding inside the sandbox: the container is recognised by
//! its first bytes, never by a name or MIME type, then decoded to mono f32
//! (channels averaged) at the file's own rate.
//!
//! * WAV (`RIFF....WAVE`): `hound`, PCM 8/16/24/32-bit (scaled by
//!   1 / 2^(bits - 1)) and IEEE float 32-bit ([`super::decode_wav`]).
//! * FLAC (`fLaC`), MP3 (an `ID3` tag or an MPEG-1/2/2.5 layer III frame
//!   header) and OGG/Vorbis (`OggS`): `symphonia` (pure Rust, only these
//!   formats and codecs compiled in). Integer FLAC samples scale as WAV's, so
//!   a FLAC copy of a WAV file decodes to the same floats.
//!
//! Hostile input: every symphonia error is an `invalid-request` error that
//! names the format and the problem; the length limit
//! ([`super::MAX_SECONDS`] at the file's rate) is checked against the
//! declared length before decoding and against the decoded length after
//! every packet, so decoding stops before memory grows past it; a FLAC
//! stream that ends before its declared length is reported as truncated.

use symphonia::core::audio::{AudioBuffer, Signal};
use symphonia::core::codecs::{Decoder, DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
use symphonia::default::codecs::{FlacDecoder, MpaDecoder, VorbisDecoder};
use symphonia::default::formats::{FlacReader, MpaReader, OggReader};

use super::{Audio, MAX_SECONDS};
use crate::{invalid, Error};

/// The containers recognised by their first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Wav,
    Flac,
    Mp3,
    OggVorbis,
}

impl Format {
    /// The format's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Format::Wav => "WAV",
            Format::Flac => "FLAC",
            Format::Mp3 => "MP3",
            Format::OggVorbis => "OGG/Vorbis",
        }
    }

    /// The format of `bytes` by its magic bytes, if one of ours.
    pub fn sniff(bytes: &[u8]) -> Option<Format> {
        match bytes {
            [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'A', b'V', b'E', ..] => Some(Format::Wav),
            [b'f', b'L', b'a', b'C', ..] => Some(Format::Flac),
            [b'O', b'g', b'g', b'S', ..] => Some(Format::OggVorbis),
            [b'I', b'D', b'3', ..] => Some(Format::Mp3),
            // An MPEG audio frame header: 11 sync bits, a version other than
            // "reserved" (01) and layer III (01).
            [0xFF, b, ..] if b & 0xE0 == 0xE0 && (b >> 3) & 3 != 1 && (b >> 1) & 3 == 1 => {
                Some(Format::Mp3)
            }
            _ => None,
        }
    }
}

/// Decodes an audio file (WAV, FLAC, MP3 or OGG/Vorbis, by content) to
/// mono f32 at its own rate; `field` names the request field in errors.
pub fn decode(field: &str, bytes: &[u8]) -> Result<Audio, Error> {
    match Format::sniff(bytes) {
        Some(Format::Wav) => super::decode_wav(field, bytes),
        Some(f) => decode_symphonia(field, f, bytes),
        None => Err(invalid(format!(
            "`{field}`: not a WAV, FLAC, MP3 or OGG/Vorbis file (it starts with {}); send one of \
             those or an `array` with `sampling_rate`",
            leading(bytes)
        ))),
    }
}

/// The first bytes, for messages: printable ASCII as text, else hex.
fn leading(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(8)];
    if head.is_empty() {
        return "nothing: it is empty".into();
    }
    if head.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("{:?}", String::from_utf8_lossy(head))
    } else {
        head.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn open(format: Format, bytes: &[u8]) -> Result<Box<dyn FormatReader>, SymError> {
    let source = Box::new(std::io::Cursor::new(bytes.to_vec()));
    let mss = MediaSourceStream::new(source, MediaSourceStreamOptions::default());
    // Gapless: the encoder delay and padding that MP3 (LAME/Xing header)
    // declares are trimmed, so the clip starts where the original did.
    let opts = FormatOptions {
        enable_gapless: true,
        ..FormatOptions::default()
    };
    Ok(match format {
        Format::Flac => Box::new(FlacReader::try_new(mss, &opts)?),
        Format::Mp3 => Box::new(MpaReader::try_new(mss, &opts)?),
        Format::OggVorbis | Format::Wav => Box::new(OggReader::try_new(mss, &opts)?),
    })
}

fn decoder(
    format: Format,
    params: &symphonia::core::codecs::CodecParameters,
) -> Result<Box<dyn Decoder>, SymError> {
    let opts = DecoderOptions::default();
    Ok(match format {
        Format::Flac => Box::new(FlacDecoder::try_new(params, &opts)?),
        Format::Mp3 => Box::new(MpaDecoder::try_new(params, &opts)?),
        Format::OggVorbis | Format::Wav => Box::new(VorbisDecoder::try_new(params, &opts)?),
    })
}

/// The end of the stream: symphonia reports it as an unexpected EOF.
fn is_end(e: &SymError) -> bool {
    matches!(e, SymError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof)
}

fn decode_symphonia(field: &str, format: Format, bytes: &[u8]) -> Result<Audio, Error> {
    let name = format.name();
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        invalid(format!(
            "`{field}`: a {name} file that cannot be {what}: {e}"
        ))
    };
    let mut reader = open(format, bytes).map_err(|e| bad("read", &e))?;
    let track = reader
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| invalid(format!("`{field}`: the {name} file has no audio track")))?;
    let (track_id, params) = (track.id, track.codec_params.clone());
    let declared = params.n_frames;
    let mut rate = params.sample_rate.unwrap_or(0);
    let limit = |rate: u32| MAX_SECONDS.saturating_mul(rate as u64);
    if let (Some(n), true) = (declared, rate > 0) {
        if n > limit(rate) {
            return Err(invalid(format!(
                "`{field}`: {n} frames at {rate} Hz is over the limit of {MAX_SECONDS} s"
            )));
        }
    }
    let mut dec = decoder(format, &params).map_err(|e| bad("decoded", &e))?;
    let mut samples: Vec<f32> = Vec::new();
    loop {
        let packet = match reader.next_packet() {
            Ok(p) => p,
            Err(e) if is_end(&e) => break,
            Err(e) => return Err(bad("read", &e)),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = dec.decode(&packet).map_err(|e| bad("decoded", &e))?;
        let spec = *decoded.spec();
        if spec.rate == 0 || (rate != 0 && spec.rate != rate) {
            return Err(invalid(format!(
                "`{field}`: the {name} file changes its sample rate ({rate} Hz, then {} Hz)",
                spec.rate
            )));
        }
        rate = spec.rate;
        let frames = decoded.frames();
        if (samples.len() + frames) as u64 > limit(rate) {
            return Err(invalid(format!(
                "`{field}`: the {name} file is longer than the limit of {MAX_SECONDS} s"
            )));
        }
        let mut buf: AudioBuffer<f32> = decoded.make_equivalent();
        decoded.convert(&mut buf);
        let channels = buf.spec().channels.count().max(1);
        let planes = (0..channels).map(|c| buf.chan(c)).collect::<Vec<_>>();
        samples.extend(
            (0..frames).map(|i| planes.iter().map(|p| p[i]).sum::<f32>() / channels as f32),
        );
    }
    if samples.is_empty() {
        return Err(invalid(format!(
            "`{field}`: the {name} file has no audio samples (empty or truncated)"
        )));
    }
    if format == Format::Flac {
        if let Some(n) = declared.filter(|&n| n > samples.len() as u64) {
            return Err(invalid(format!(
                "`{field}`: the FLAC file is truncated: {} of its {n} frames decoded",
                samples.len()
            )));
        }
    }
    Ok(Audio { rate, samples })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
        std::fs::read(root.join("audio").join(name)).expect("fixture file")
    }

    const FILES: [(&str, Format); 4] = [
        ("tone_16k.wav", Format::Wav),
        ("tone_16k.flac", Format::Flac),
        ("tone_16k.ogg", Format::OggVorbis),
        ("tone_16k.mp3", Format::Mp3),
    ];

    #[test]
    fn formats_are_recognised_by_content() {
        for (file, format) in FILES {
            assert_eq!(Format::sniff(&fixture(file)), Some(format), "{file}");
        }
        assert_eq!(Format::sniff(b"\xff\xfb\x90\x00"), Some(Format::Mp3));
        assert_eq!(Format::sniff(b"\xff\xfd\x90\x00"), None, "layer II");
        assert_eq!(Format::sniff(b"\x89PNG\r\n\x1a\n"), None);
        assert_eq!(Format::sniff(b""), None);
    }

    /// FLAC is lossless: the same floats as the WAV it was made from; the
    /// lossy codecs come back at the same rate and length, close to it.
    #[test]
    fn every_format_decodes_the_same_tone() {
        let wav = decode("audio", &fixture("tone_16k.wav")).expect("wav");
        for (file, format) in FILES {
            let a = decode("audio", &fixture(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(a.rate, 16000, "{file}");
            if format == Format::Flac {
                assert_eq!(a, wav, "{file}");
            }
            // Gapless: MP3's encoder delay and padding (its LAME tag) and
            // Vorbis' pre-skip are trimmed.
            assert_eq!(a.samples.len(), wav.samples.len(), "{file}: length");
            let err = a
                .samples
                .iter()
                .zip(&wav.samples)
                .map(|(x, y)| (x - y).powi(2))
                .sum::<f32>()
                / wav.samples.iter().map(|y| y * y).sum::<f32>();
            assert!(err < 0.01, "{file}: relative squared error {err}");
        }
    }

    /// Truncated files and garbage after each format's magic are typed
    /// errors (or, for a stream cut at a packet boundary, shorter audio),
    /// never panics.
    #[test]
    fn hostile_bytes_are_errors_not_panics() {
        for (file, format) in FILES {
            let bytes = fixture(file);
            for cut in [0, 4, 12, 40, 100, 1000, bytes.len() / 2, bytes.len() - 7] {
                let head = &bytes[..cut.min(bytes.len())];
                match decode("audio", head) {
                    Ok(a) => assert!(!a.samples.is_empty() && cut > 100, "{file} cut at {cut}"),
                    Err(e) => assert!(matches!(e, Error::InvalidRequest(_)), "{file} {cut}: {e}"),
                }
            }
            // Each format's magic followed by noise (a fixed LCG).
            let mut state = 0x2545_f491_4f6c_dd1du64;
            let mut noise = bytes[..4].to_vec();
            noise.extend((0..4096).map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 56) as u8
            }));
            if let Err(e) = decode("audio", &noise) {
                assert!(matches!(e, Error::InvalidRequest(_)), "{file}: {e}");
            }
            // The real header with its body scrambled.
            let mut flipped = bytes.clone();
            for b in flipped.iter_mut().skip(200).step_by(3) {
                *b ^= 0x5A;
            }
            if let Err(e) = decode("audio", &flipped) {
                assert!(matches!(e, Error::InvalidRequest(_)), "{file}: {e}");
            }
            let _ = format;
        }
        let err = decode("audio", b"\x89PNG\r\n\x1a\nnot audio").expect_err("png");
        assert!(err.to_string().contains("WAV, FLAC, MP3 or OGG"), "{err}");
        let err = decode("audio", b"").expect_err("empty");
        assert!(err.to_string().contains("empty"), "{err}");
    }

    #[test]
    fn a_truncated_flac_names_the_problem() {
        let bytes = fixture("tone_16k.flac");
        let err = decode("audio", &bytes[..bytes.len() * 2 / 3]).expect_err("truncated");
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}
