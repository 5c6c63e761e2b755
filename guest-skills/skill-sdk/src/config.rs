//! Typed access to JSON config files with errors that name the file and key.

use serde_json::Value;

use crate::Error;

/// A parsed JSON asset and its file name (for error messages).
pub struct Json {
    pub file: String,
    pub value: Value,
}

impl Json {
    /// Parses `text` read from `file`.
    pub fn parse(file: &str, text: &str) -> Result<Json, Error> {
        let value = serde_json::from_str(text)
            .map_err(|e| Error::Model(format!("{file}: not valid JSON: {e}")))?;
        Ok(Json {
            file: file.to_string(),
            value,
        })
    }

    /// The model's config.json.
    pub fn config() -> Result<Json, Error> {
        Json::parse("config.json", &crate::model::config()?)
    }

    /// An optional asset of the model.
    pub fn asset(path: &str) -> Result<Option<Json>, Error> {
        crate::model::asset(path)?
            .map(|t| Json::parse(path, &t))
            .transpose()
    }

    /// The settings of the model's `kind` of processor, found where
    /// transformers looks: nested in `processor_config.json` (where
    /// transformers 5 saves a processor's parts), else its own file
    /// (`preprocessor_config.json`; for videos `video_preprocessor_config.json`,
    /// then `preprocessor_config.json`). An error names what is missing.
    pub fn processor(kind: Processor) -> Result<Json, Error> {
        if let Some(p) = Json::asset("processor_config.json")? {
            let nested = kind.keys().iter().find_map(|k| p.value.get(*k));
            if let Some(v) = nested.filter(|v| v.is_object()) {
                return Ok(Json {
                    file: format!("processor_config.json's `{}`", kind.keys()[0]),
                    value: v.clone(),
                });
            }
        }
        for file in kind.files() {
            if let Some(j) = Json::asset(file)? {
                return Ok(j);
            }
        }
        Err(Error::Model(format!(
            "the model has no {} settings: no {} and no `{}` in processor_config.json",
            kind.keys()[0].replace('_', " "),
            kind.files().join(" or "),
            kind.keys()[0]
        )))
    }

    fn missing(&self, key: &str, what: &str) -> Error {
        Error::Model(format!("{}: `{key}` must be {what}", self.file))
    }

    pub fn u64(&self, key: &str) -> Result<u64, Error> {
        self.value
            .get(key)
            .and_then(Value::as_u64)
            .ok_or_else(|| self.missing(key, "a non-negative integer"))
    }

    pub fn u64_or(&self, key: &str, default: u64) -> Result<u64, Error> {
        match self.value.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(_) => self.u64(key),
        }
    }

    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64, Error> {
        match self.value.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| self.missing(key, "a number")),
        }
    }

    pub fn str_or<'a>(&'a self, key: &str, default: &'a str) -> Result<&'a str, Error> {
        match self.value.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_str().ok_or_else(|| self.missing(key, "a string")),
        }
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, Error> {
        match self.value.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.missing(key, "true or false")),
        }
    }

    /// The names of `n` labels from `id2label` (`LABEL_i` where it has none).
    /// A list of non-negative integers (`depths`, `conv_kernel`).
    pub fn u64_list(&self, key: &str) -> Result<Vec<u64>, Error> {
        self.value
            .get(key)
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(Value::as_u64).collect::<Option<Vec<_>>>())
            .ok_or_else(|| self.missing(key, "a list of non-negative integers"))
    }

    pub fn labels(&self, n: u64) -> Result<Vec<String>, Error> {
        let map = self.value.get("id2label").and_then(Value::as_object);
        (0..n)
            .map(|i| match map.and_then(|m| m.get(&i.to_string())) {
                None => Ok(format!("LABEL_{i}")),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(self.missing(&format!("id2label.{i}"), "a string")),
            })
            .collect()
    }
}

/// A kind of processor whose settings a model ships ([`Json::processor`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Processor {
    /// Audio feature extraction (`feature_extractor`, or `audio_processor`).
    FeatureExtractor,
    /// Image preprocessing (`image_processor`).
    Image,
    /// Video preprocessing (`video_processor`).
    Video,
}

impl Processor {
    /// Its keys in a nested `processor_config.json`, in transformers' order.
    fn keys(self) -> &'static [&'static str] {
        match self {
            Processor::FeatureExtractor => &["feature_extractor", "audio_processor"],
            Processor::Image => &["image_processor"],
            Processor::Video => &["video_processor"],
        }
    }

    /// Its own files, in transformers' order.
    fn files(self) -> &'static [&'static str] {
        match self {
            Processor::FeatureExtractor | Processor::Image => &["preprocessor_config.json"],
            Processor::Video => &["video_preprocessor_config.json", "preprocessor_config.json"],
        }
    }
}
