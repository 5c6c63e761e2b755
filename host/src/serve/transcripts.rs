//! OpenAI's transcription response formats from an
//! automatic-speech-recognition answer (`{"text", "chunks": [{"text",
//! "timestamp": [start, end]}], "language", "duration"}`): `json`, `text`,
//! `verbose_json` (segments with ids and times), and the subtitle formats
//! `srt` and `vtt`. A chunk without an end time (the transcript ran out
//! before its closing timestamp) ends at the audio's duration, or at its
//! start when that is unknown.

use serde_json::{json, Value};

use crate::endpoint::contract::response::{CHUNKS, DURATION, LANGUAGE, TEXT, TIMESTAMP};

/// A response format of `/v1/audio/transcriptions`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Text,
    VerboseJson,
    Srt,
    Vtt,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        Some(match s {
            "json" => Format::Json,
            "text" => Format::Text,
            "verbose_json" => Format::VerboseJson,
            "srt" => Format::Srt,
            "vtt" => Format::Vtt,
            _ => return None,
        })
    }

    /// Whether the format needs timed chunks.
    pub fn timed(self) -> bool {
        matches!(self, Format::Srt | Format::Vtt)
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json | Format::VerboseJson => "application/json",
            Format::Text | Format::Srt => "text/plain; charset=utf-8",
            Format::Vtt => "text/vtt; charset=utf-8",
        }
    }
}

/// One timed segment.
#[derive(Clone, Debug, PartialEq)]
struct Segment {
    start: f64,
    end: f64,
    text: String,
}

fn segments(answer: &Value) -> Vec<Segment> {
    let duration = answer.get(DURATION).and_then(Value::as_f64);
    let Some(chunks) = answer.get(CHUNKS).and_then(Value::as_array) else {
        return Vec::new();
    };
    chunks
        .iter()
        .map(|c| {
            let ts = c.get(TIMESTAMP).and_then(Value::as_array);
            let at = |i: usize| ts.and_then(|t| t.get(i)).and_then(Value::as_f64);
            let start = at(0).unwrap_or(0.0);
            Segment {
                start,
                end: at(1).or(duration).unwrap_or(start),
                text: c
                    .get(TEXT)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            }
        })
        .collect()
}

/// `hh:mm:ss<sep>mmm`.
fn clock(seconds: f64, sep: char) -> String {
    let ms = (seconds.max(0.0) * 1000.0).round() as u64;
    let (h, m, s, ms) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    format!("{h:02}:{m:02}:{s:02}{sep}{ms:03}")
}

/// The body of `answer` in `format`.
pub fn render(format: Format, answer: &Value) -> String {
    let text = answer.get(TEXT).and_then(Value::as_str).unwrap_or("");
    match format {
        Format::Json => json!({ "text": text }).to_string(),
        Format::Text => text.to_string(),
        Format::VerboseJson => {
            let segs: Vec<Value> = segments(answer)
                .into_iter()
                .enumerate()
                .map(|(id, s)| json!({"id": id, "start": s.start, "end": s.end, "text": s.text}))
                .collect();
            let mut out = json!({
                "task": "transcribe",
                "language": answer.get(LANGUAGE).cloned().unwrap_or(Value::Null),
                "duration": answer.get(DURATION).cloned().unwrap_or(Value::Null),
                "text": text,
                "segments": segs,
            });
            // Word timestamps (`timestamp_granularities[]=word`): the
            // skill's word chunks as OpenAI's `words`.
            if let Some(words) = answer.get("words").and_then(Value::as_array) {
                let at = |w: &Value, i: usize| w[TIMESTAMP].get(i).cloned().unwrap_or(Value::Null);
                out["words"] = words
                    .iter()
                    .map(|w| json!({"word": w[TEXT], "start": at(w, 0), "end": at(w, 1)}))
                    .collect();
            }
            out.to_string()
        }
        Format::Srt => segments(answer)
            .iter()
            .enumerate()
            .map(|(i, s)| {
                format!(
                    "{}\n{} --> {}\n{}\n\n",
                    i + 1,
                    clock(s.start, ','),
                    clock(s.end, ','),
                    s.text.trim()
                )
            })
            .collect(),
        Format::Vtt => {
            let cues: String = segments(answer)
                .iter()
                .map(|s| {
                    format!(
                        "{} --> {}\n{}\n\n",
                        clock(s.start, '.'),
                        clock(s.end, '.'),
                        s.text.trim()
                    )
                })
                .collect();
            format!("WEBVTT\n\n{cues}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> Value {
        json!({
            "text": " Hello world. Again",
            "language": "en",
            "duration": 4.5,
            "chunks": [
                {"text": " Hello world.", "timestamp": [0.0, 2.5]},
                {"text": " Again", "timestamp": [2.5, null]},
            ],
        })
    }

    #[test]
    fn subtitles_number_and_time_every_chunk() {
        assert_eq!(
            render(Format::Srt, &answer()),
            "1\n00:00:00,000 --> 00:00:02,500\nHello world.\n\n2\n00:00:02,500 --> 00:00:04,500\nAgain\n\n"
        );
        assert!(
            render(Format::Vtt, &answer()).starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:02.500\n")
        );
        assert_eq!(clock(3725.25, ','), "01:02:05,250");
    }

    #[test]
    fn verbose_json_has_segments_and_duration() {
        let v: Value = serde_json::from_str(&render(Format::VerboseJson, &answer())).unwrap();
        assert_eq!(v["segments"][1]["end"], 4.5);
        assert_eq!(v["segments"][1]["id"], 1);
        assert_eq!(v["duration"], 4.5);
        assert_eq!(render(Format::Text, &answer()), " Hello world. Again");
        assert!(v.get("words").is_none());
    }

    #[test]
    fn verbose_json_lists_words() {
        let mut a = answer();
        a["words"] = json!([{"text": " Hello", "timestamp": [0.0, 0.42]}]);
        let v: Value = serde_json::from_str(&render(Format::VerboseJson, &a)).unwrap();
        assert_eq!(
            v["words"],
            json!([{"word": " Hello", "start": 0.0, "end": 0.42}])
        );
    }
}
