//! An HTTP server of endpoints on loopback for the serve tests, and a
//! small client.

use std::sync::Arc;
use std::time::Duration;

use host::backend::{registry, Precision};
use host::endpoint::{BatchPolicy, EndpointConfig, Endpoints};
use host::serve::{router, ServeOptions};

use super::{sandbox, skill};

/// A server on an ephemeral port; lives as long as the test process.
pub struct Server {
    pub base: String,
    pub endpoints: Arc<Endpoints>,
    pub rt: &'static tokio::runtime::Runtime,
}

pub fn server(configs: Vec<EndpointConfig>, max_concurrent: usize) -> Server {
    let rt: &'static tokio::runtime::Runtime = Box::leak(Box::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap(),
    ));
    let endpoints = Arc::new(Endpoints::new(sandbox()));
    let eps = endpoints.clone();
    let base = rt.block_on(async move {
        for c in configs {
            eps.add(c).await.expect("endpoint loads");
        }
        let opts = ServeOptions {
            addr: "127.0.0.1:0".parse().unwrap(),
            max_concurrent_requests: max_concurrent,
            max_body_bytes: 1 << 20,
            default_endpoint: None,
        };
        let listener = tokio::net::TcpListener::bind(opts.addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(eps, &opts);
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    });
    Server {
        base,
        endpoints,
        rt,
    }
}

pub fn config(
    name: &str,
    skill_name: &str,
    model: &std::path::Path,
    devices: &str,
    batching: BatchPolicy,
    instances: usize,
) -> EndpointConfig {
    let mut c = EndpointConfig::new(
        name,
        skill(skill_name).to_str().unwrap(),
        model.to_str().unwrap(),
        registry::parse_list(devices).unwrap(),
        Precision::F32,
    );
    c.batching = batching;
    c.instances = instances;
    c
}

pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build()
}

/// (status, body) of a POST.
pub fn post(agent: &ureq::Agent, url: &str, body: &str) -> (u16, serde_json::Value) {
    let r = agent
        .post(url)
        .set("content-type", "application/json")
        .send_string(body);
    let (code, resp) = match r {
        Ok(resp) => (resp.status(), resp),
        Err(ureq::Error::Status(code, resp)) => (code, resp),
        Err(e) => panic!("transport error: {e}"),
    };
    let text = resp.into_string().unwrap_or_default();
    (
        code,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}
