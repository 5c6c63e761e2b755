//! Tracing: one HTTP request to a text-embedding endpoint (cpu, the tiny
//! BERT fixture) opens the spans `http` -> `request` -> `batch` ->
//! `skill_call` -> `backend_run`, each inside the one before, with their
//! fields. A small in-test layer records every span as it opens.

mod common;

use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use common::http::{agent, embedding_endpoint, server};
use common::{available, fixture};

/// One span as it opened.
#[derive(Clone, Debug)]
struct Opened {
    name: String,
    id: u64,
    parent: Option<u64>,
    /// `key=value` pairs, in field order.
    fields: Vec<(String, String)>,
}

impl Opened {
    fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Records every span that opens, with its parent.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Opened>>>);

struct Fields(Vec<(String, String)>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_string(), value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .push((field.name().to_string(), format!("{value:?}")));
    }
}

impl<S> Layer<S> for Recorder
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let parent = ctx
            .span(id)
            .and_then(|s| s.parent())
            .map(|p| p.id().into_u64());
        let mut fields = Fields(Vec::new());
        attrs.record(&mut fields);
        if let Ok(mut v) = self.0.lock() {
            v.push(Opened {
                name: attrs.metadata().name().to_string(),
                id: id.into_u64(),
                parent,
                fields: fields.0,
            });
        }
    }
}

#[test]
fn a_request_opens_nested_spans() {
    if !available("cpu") {
        return;
    }
    assert!(fixture("tiny-bert").is_dir());
    let recorder = Recorder::default();
    // This test binary's only test: the global subscriber sees the worker
    // threads' and the runtime's spans too.
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(recorder.clone()))
        .expect("the only subscriber");
    let s = server(vec![embedding_endpoint()], 8);
    let body = serde_json::json!({ "model": "emb", "input": "the cat sat on the mat" });
    let response = agent()
        .post(&format!("{}/v1/embeddings", s.base))
        .set("x-request-id", "trace-me-1")
        .send_json(body)
        .expect("embedding answered");
    assert_eq!(response.status(), 200);

    let spans = recorder.0.lock().expect("recorder").clone();
    let find = |name: &str, parent: Option<u64>| {
        spans
            .iter()
            .position(|s| s.name == name && (parent.is_none() || s.parent == parent))
            .unwrap_or_else(|| panic!("no `{name}` span under {parent:?}: {spans:#?}"))
    };
    let http = find("http", None);
    assert_eq!(spans[http].field("request_id"), Some("trace-me-1"));
    assert_eq!(spans[http].field("path"), Some("/v1/embeddings"));
    let request = find("request", Some(spans[http].id));
    assert_eq!(spans[request].field("endpoint"), Some("emb"));
    let batch = find("batch", Some(spans[request].id));
    assert_eq!(spans[batch].field("endpoint"), Some("emb"));
    assert_eq!(spans[batch].field("size"), Some("1"));
    let call = find("skill_call", Some(spans[batch].id));
    assert_eq!(spans[call].field("phase"), Some("handle"));
    assert!(spans[call].field("skill").is_some(), "{:?}", spans[call]);
    let run = find("backend_run", Some(spans[call].id));
    assert_eq!(spans[run].field("device"), Some("cpu"));
    assert!(spans[run].field("graph").is_some(), "{:?}", spans[run]);
    // Opened in that order.
    assert!(http < request && request < batch && batch < call && call < run);
}
