//! One keep-alive HTTP/1.1 connection sending requests in a closed or open
//! loop, reading each answer to the end (streams event by event).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::stats::{Outcome, WorkerStats};

/// Where requests go.
pub struct Target {
    /// `host:port` to connect to.
    authority: String,
    path: String,
    headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
}

impl Target {
    /// Parses `http://host:port/path` and `Name: value` headers.
    pub fn parse(url: &str, headers: &[String]) -> Result<Target> {
        let uri: hyper::Uri = url.parse().with_context(|| format!("bad --url `{url}`"))?;
        if uri.scheme_str() != Some("http") {
            bail!("--url must be http:// (got `{url}`)");
        }
        let host = uri.host().context("--url has no host")?;
        let port = uri.port_u16().unwrap_or(80);
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let mut parsed = Vec::with_capacity(headers.len());
        for h in headers {
            let (name, value) = h
                .split_once(':')
                .with_context(|| format!("--header `{h}` is not `Name: value`"))?;
            parsed.push((
                name.trim()
                    .parse()
                    .with_context(|| format!("bad header name in `{h}`"))?,
                value
                    .trim()
                    .parse()
                    .with_context(|| format!("bad header value in `{h}`"))?,
            ));
        }
        Ok(Target {
            authority: format!("{host}:{port}"),
            path,
            headers: parsed,
        })
    }

    /// `POST http://authority/path`, for the report.
    pub fn describe(&self) -> String {
        format!("POST http://{}{}", self.authority, self.path)
    }

    fn request(&self, body: Bytes) -> Result<hyper::Request<Full<Bytes>>> {
        let mut b = hyper::Request::post(self.path.as_str())
            .header(hyper::header::HOST, self.authority.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json");
        for (k, v) in &self.headers {
            b = b.header(k, v);
        }
        Ok(b.body(Full::new(body))?)
    }
}

/// One connection's schedule.
pub struct Worker {
    pub target: Arc<Target>,
    pub bodies: Arc<Vec<Bytes>>,
    pub first_body: usize,
    /// When the first request is due.
    pub start: Instant,
    /// Open loop: time between this connection's requests.
    pub interval: Option<Duration>,
    pub measure_from: Instant,
    pub end: Instant,
}

impl Worker {
    /// Sends requests until `end`; the statistics of those due after
    /// `measure_from`.
    pub async fn run(self) -> Result<WorkerStats> {
        let mut stats = WorkerStats::new()?;
        let mut conn: Option<SendRequest<Full<Bytes>>> = None;
        let mut next_body = self.first_body;
        let mut due = self.start;
        tokio::time::sleep_until(due.into()).await;
        loop {
            let now = Instant::now();
            let sent_at = match self.interval {
                // Open loop: the request counts from when it was due.
                Some(_) => {
                    if due > now {
                        tokio::time::sleep_until(due.into()).await;
                    }
                    due
                }
                None => now,
            };
            if sent_at >= self.end {
                break;
            }
            let body = self.bodies[next_body % self.bodies.len()].clone();
            next_body += 1;
            let outcome = match self.send(&mut conn, body, sent_at).await {
                Ok(o) => o,
                Err(e) => {
                    conn = None;
                    Outcome::transport(format!("{e:#}"))
                }
            };
            if sent_at >= self.measure_from {
                stats.record(&outcome)?;
            }
            if let Some(iv) = self.interval {
                due += iv;
            }
        }
        Ok(stats)
    }

    /// One request on the connection (opened first if needed).
    async fn send(
        &self,
        conn: &mut Option<SendRequest<Full<Bytes>>>,
        body: Bytes,
        sent_at: Instant,
    ) -> Result<Outcome> {
        let sender = match conn {
            Some(s) if !s.is_closed() => s,
            _ => conn.insert(connect(&self.target.authority).await?),
        };
        sender.ready().await.context("connection not ready")?;
        let res = sender.send_request(self.target.request(body)?).await?;
        let status = res.status().as_u16();
        let streaming = res
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let mut body = res.into_body();
        let mut first_event = None;
        let mut events = 0u64;
        let mut tokens = None;
        let mut carry = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.context("reading the answer")?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            if streaming {
                let n = count_events(&mut carry, data);
                if n.count > 0 && first_event.is_none() {
                    first_event = Some(Instant::now());
                }
                events += n.count;
                tokens = n.completion_tokens.or(tokens);
            }
        }
        let done = Instant::now();
        Ok(Outcome {
            status,
            latency: done.saturating_duration_since(sent_at),
            first_event: first_event.map(|t| t.saturating_duration_since(sent_at)),
            events,
            tokens,
            transport_error: None,
        })
    }
}

async fn connect(authority: &str) -> Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .with_context(|| format!("connecting to {authority}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // The connection ends with an error when the server closes it; the
        // next request on it reports that.
        let _ = conn.await;
    });
    Ok(sender)
}

/// What the complete lines of a stream's frame held.
#[derive(Debug, Default, PartialEq)]
struct Events {
    /// `data:` lines other than `data: [DONE]`.
    count: u64,
    /// `usage.completion_tokens` of an event that reports usage (OpenAI's
    /// `stream_options.include_usage`).
    completion_tokens: Option<u64>,
}

/// Reads the complete `data:` lines in `data`, keeping an incomplete last
/// line in `carry` for the next frame.
fn count_events(carry: &mut Vec<u8>, data: &[u8]) -> Events {
    carry.extend_from_slice(data);
    let mut n = Events::default();
    let mut consumed = 0;
    while let Some(pos) = carry[consumed..].iter().position(|&b| b == b'\n') {
        let line = &carry[consumed..consumed + pos];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(rest) = line.strip_prefix(b"data:") {
            let rest = rest.trim_ascii();
            if rest != b"[DONE]" {
                n.count += 1;
                if let Some(t) = completion_tokens(rest) {
                    n.completion_tokens = Some(t);
                }
            }
        }
        consumed += pos + 1;
    }
    carry.drain(..consumed);
    n
}

/// `usage.completion_tokens` of an event, when it reports usage.
fn completion_tokens(event: &[u8]) -> Option<u64> {
    // Only events that mention usage are parsed.
    if !event.windows(7).any(|w| w == b"\"usage\"") {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(event).ok()?;
    v.get("usage")?.get("completion_tokens")?.as_u64()
}

#[cfg(test)]
mod tests {
    use super::count_events;

    #[test]
    fn events_split_across_frames_are_counted_once() {
        let mut carry = Vec::new();
        let events = |count, completion_tokens| super::Events {
            count,
            completion_tokens,
        };
        assert_eq!(
            count_events(&mut carry, b"data: {\"a\":1}\n\nda"),
            events(1, None)
        );
        assert_eq!(
            count_events(
                &mut carry,
                b"ta: {\"usage\":{\"completion_tokens\":7}}\r\n\r\n"
            ),
            events(1, Some(7))
        );
        assert_eq!(
            count_events(&mut carry, b"data: [DONE]\n\n"),
            events(0, None)
        );
        assert!(carry.is_empty());
    }
}
