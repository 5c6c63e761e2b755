//! A Whisper transcript's text and timed chunks from its tokens, as the
//! transformers ASR pipeline assembles them (`_decode_asr`, one output
//! without stride): text tokens gather into a chunk between a start and an
//! end timestamp; times are `(token - begin) * precision` plus the length
//! of earlier segments when timestamps restart (a later decoding pass),
//! rounded to 0.01 s; a chunk left open at the end has no end time. The
//! text is the chunks' texts joined.

use skill_sdk::Error;

/// One timed chunk.
#[derive(Clone, Debug, PartialEq)]
pub struct Chunk {
    pub text: String,
    pub start: Option<f64>,
    pub end: Option<f64>,
    /// Where its text tokens are in the transcript's tokens.
    pub at: Vec<usize>,
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Text and chunks of `tokens` (generated tokens, prompt excluded): ids
/// below `text_end` (end of text) are text, ids from `begin` on are
/// timestamps, those between (control and language tokens) are skipped.
/// `segment` is a window's length in timestamp steps.
pub fn assemble(
    tokens: &[i64],
    text_end: i64,
    begin: i64,
    precision: f64,
    segment: f64,
    text: impl Fn(&[i64]) -> Result<String, Error>,
) -> Result<(String, Vec<Chunk>), Error> {
    let new = || Chunk {
        text: String::new(),
        start: None,
        end: None,
        at: Vec::new(),
    };
    let mut chunks = Vec::new();
    let mut chunk = new();
    let mut current: Vec<i64> = Vec::new();
    let mut cur_max = 0.0f64;
    let mut penultimate = 0.0f64;
    let mut earlier = 0.0f64;
    for (i, &token) in tokens.iter().enumerate() {
        if token < text_end {
            current.push(token);
            chunk.at.push(i);
            continue;
        }
        if token < begin {
            continue;
        }
        let timestamp = (token - begin) as f64 * precision;
        if timestamp < cur_max {
            let single_ending = i >= 2 && !(tokens[i - 1] >= begin && tokens[i - 2] >= begin);
            if single_ending {
                earlier += precision * segment;
            } else {
                cur_max = penultimate;
                earlier += penultimate;
            }
        }
        penultimate = cur_max;
        cur_max = timestamp;
        let time = round2((token - begin) as f64 * precision + earlier);
        match chunk.start {
            None => chunk.start = Some(time),
            Some(s) if s == time => {}
            Some(_) => {
                chunk.end = Some(time);
                chunk.text = text(&current)?;
                chunks.push(std::mem::replace(&mut chunk, new()));
                current.clear();
            }
        }
    }
    if !current.is_empty() {
        chunk.text = text(&current)?;
        chunks.push(chunk);
    }
    let full = chunks.iter().map(|c| c.text.as_str()).collect();
    Ok((full, chunks))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letters(t: &[i64]) -> Result<String, Error> {
        Ok(t.iter().map(|&c| (b'a' + c as u8) as char).collect())
    }

    #[test]
    fn chunks_between_timestamps() {
        // begin 100, 0.02 s per step: <0.00> a b <0.50> <0.50> c <1.00>
        let (text, chunks) = assemble(
            &[100, 0, 1, 125, 125, 2, 150],
            90,
            100,
            0.02,
            1500.0,
            letters,
        )
        .unwrap();
        assert_eq!(text, "abc");
        assert_eq!(chunks.len(), 2);
        assert_eq!((chunks[0].start, chunks[0].end), (Some(0.0), Some(0.5)));
        assert_eq!((chunks[1].start, chunks[1].end), (Some(0.5), Some(1.0)));
    }

    #[test]
    fn open_chunk_and_restarted_timestamps() {
        // A second pass restarts at 0.00 after a pair ending at 0.40.
        let (_, chunks) = assemble(
            &[100, 0, 120, 120, 100, 1, 110, 2],
            90,
            100,
            0.02,
            1500.0,
            letters,
        )
        .unwrap();
        assert_eq!(chunks[0].end, Some(0.4));
        assert_eq!(chunks.last().map(|c| c.end), Some(None));
    }
}
