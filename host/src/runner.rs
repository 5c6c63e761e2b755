//! Serving a skill on a model: device fallback at load, request validation,
//! batch calls into the sandbox, fresh instances after a trap, and the
//! response format (skill JSON + tensors + device + precision).

use std::sync::Arc;

use crate::backend::{registry, Device, Precision};
use crate::model::Model;
use crate::sandbox::imports_api::{CompileCache, SkillContext};
use crate::sandbox::{
    Sandbox, SandboxError, SkillComponent, SkillInstance, StreamSender, WitError,
};
use crate::tensor::Tensor;
use crate::{ErrorKind, HostError};

/// Receives answers given before the batch ends: (request index, answer).
pub type EarlyAnswer = Arc<dyn Fn(usize, Result<Output, RequestError>) + Send + Sync>;

/// Hands a running batch at most `max` queued requests: (the caller's index
/// for answering it through [`EarlyAnswer`], request, stream sender).
pub type JoinQueue = Box<dyn FnMut(usize) -> Vec<(usize, String, Option<StreamSender>)> + Send>;

/// Largest request accepted, in bytes of JSON (room for a base64 photo).
pub const MAX_REQUEST_BYTES: usize = 32 << 20;

/// One request's failure, with a stable kind for clients (serialized as
/// `{"kind", "message"}`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RequestError {
    pub kind: ErrorKind,
    pub message: String,
}

impl RequestError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        RequestError {
            kind,
            message: message.into(),
        }
    }

    /// An [`ErrorKind::Internal`] error.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
}

impl std::error::Error for RequestError {}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// Kind and message of a skill's typed error.
pub fn wit_error_parts(e: &WitError) -> (ErrorKind, String) {
    match e {
        WitError::InvalidRequest(m) => (ErrorKind::InvalidRequest, m.clone()),
        WitError::Model(m) => (ErrorKind::Model, m.clone()),
        WitError::Unsupported(m) => (ErrorKind::Unsupported, m.clone()),
        WitError::Graph(m) => (ErrorKind::Graph, m.clone()),
        WitError::Backend(m) => (ErrorKind::Backend, m.clone()),
        WitError::ResourceExhausted(m) => (ErrorKind::ResourceExhausted, m.clone()),
        WitError::Internal(m) => (ErrorKind::Internal, m.clone()),
    }
}

impl From<WitError> for RequestError {
    fn from(e: WitError) -> Self {
        let (kind, message) = wit_error_parts(&e);
        RequestError { kind, message }
    }
}

fn sandbox_kind(e: &SandboxError) -> ErrorKind {
    match e {
        SandboxError::CpuBudget { .. } | SandboxError::Memory { .. } => {
            ErrorKind::ResourceExhausted
        }
        _ => ErrorKind::Internal,
    }
}

/// A successful response.
#[derive(Clone, Debug)]
pub struct Output {
    /// The skill's JSON object.
    pub json: serde_json::Map<String, serde_json::Value>,
    /// Tensors the skill returned, added to the JSON by name.
    pub tensors: Vec<(String, Tensor)>,
    pub device: String,
    pub precision: String,
}

impl Output {
    /// One JSON line: the skill's keys, its tensors as arrays, then
    /// `device` and `precision`.
    pub fn to_json_line(&self) -> Result<String, RequestError> {
        let internal = RequestError::internal;
        let mut out = String::from("{");
        let mut first = true;
        let mut put = |out: &mut String, k: &str, v: &str| {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(&serde_json::to_string(k).unwrap_or_default());
            out.push(':');
            out.push_str(v);
        };
        for (k, v) in &self.json {
            put(&mut out, k, &v.to_string());
        }
        for (k, t) in &self.tensors {
            put(
                &mut out,
                k,
                &t.to_json(k).map_err(|e| internal(e.to_string()))?,
            );
        }
        put(
            &mut out,
            "device",
            &serde_json::Value::from(self.device.clone()).to_string(),
        );
        put(
            &mut out,
            "precision",
            &serde_json::Value::from(self.precision.clone()).to_string(),
        );
        out.push('}');
        Ok(out)
    }

    /// A tensor of the response by name.
    pub fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

/// A skill loaded for one model on one device.
pub struct Runner {
    sandbox: Arc<Sandbox>,
    component: SkillComponent,
    ctx: Arc<SkillContext>,
    instance: Option<SkillInstance>,
    pub device: String,
    pub precision: Precision,
    /// Calls that trapped and were answered with errors.
    pub traps: u64,
}

impl Runner {
    /// Loads `skill` for `model`, trying `devices` in order; skills, the
    /// model and backends are found and opened as the sandbox's
    /// configuration says ([`Sandbox::config`]).
    pub fn open(
        sandbox: Arc<Sandbox>,
        skill: &str,
        model: &str,
        devices: &[Device],
        precision: Precision,
    ) -> Result<Runner, HostError> {
        let model = Arc::new(Model::open_with(model, sandbox.config().hub_offline)?);
        Self::open_model(sandbox, skill, model, devices, precision)
    }

    /// Like [`Runner::open`] with a model already opened (shared by instances).
    pub fn open_model(
        sandbox: Arc<Sandbox>,
        skill: &str,
        model: Arc<Model>,
        devices: &[Device],
        precision: Precision,
    ) -> Result<Runner, HostError> {
        Self::open_model_with(sandbox, skill, model, devices, precision, None)
    }

    /// [`Runner::open_model`] telling the skill `fixed_shapes` (when given)
    /// instead of the backend's own answer (`runtime.device`): a test can run
    /// the fixed-slot KV cache of CUDA on the cpu.
    pub fn open_model_with(
        sandbox: Arc<Sandbox>,
        skill: &str,
        model: Arc<Model>,
        devices: &[Device],
        precision: Precision,
        fixed_shapes: Option<bool>,
    ) -> Result<Runner, HostError> {
        let config = sandbox.config().clone();
        let (name, path, pin) = crate::skills::resolve_pinned(skill, &config.skills_dirs)?;
        let component = sandbox.load_pinned(&name, &path, pin.as_ref())?;
        let options = config.backend_options();
        let mut reasons = Vec::new();
        for device in devices {
            let backend = match registry::open_with(device, precision, &options) {
                Ok(b) => b,
                Err(e) => {
                    reasons.push(format!("{device}: {e}"));
                    continue;
                }
            };
            let mut ctx = SkillContext::new(
                &name,
                model.clone(),
                backend,
                Arc::new(CompileCache::default()),
                &config,
            );
            ctx.fixed_shapes = fixed_shapes.or(ctx.fixed_shapes);
            let ctx = Arc::new(ctx);
            let mut inst = sandbox.instantiate(&component, ctx.clone())?;
            match inst.load()? {
                Ok(()) => {
                    return Ok(Runner {
                        sandbox,
                        component,
                        ctx,
                        instance: Some(inst),
                        device: device.to_string(),
                        precision,
                        traps: 0,
                    })
                }
                Err(e) => {
                    let (kind, message) = wit_error_parts(&e);
                    if kind.is_device_failure() {
                        reasons.push(format!("{device}: {kind}: {message}"));
                        continue;
                    }
                    return Err(HostError::SkillLoad {
                        skill: name,
                        model: model.id.clone(),
                        kind,
                        message,
                    });
                }
            }
        }
        let devices = devices
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(",");
        Err(HostError::NoDevice {
            devices,
            reasons: reasons.join("; "),
        })
    }

    fn instance(&mut self) -> Result<&mut SkillInstance, RequestError> {
        if self.instance.as_ref().is_none_or(|i| i.is_poisoned()) {
            self.instance = None;
            let fail =
                |e: String| RequestError::internal(format!("restarting the skill failed: {e}"));
            let mut inst = self
                .sandbox
                .instantiate(&self.component, self.ctx.clone())
                .map_err(|e| fail(e.to_string()))?;
            match inst.load() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(fail(wit_error_parts(&e).1)),
                Err(e) => return Err(fail(e.to_string())),
            }
            self.instance = Some(inst);
        }
        self.instance
            .as_mut()
            .ok_or_else(|| RequestError::internal("no skill instance"))
    }

    /// The component being served.
    pub fn component(&self) -> &SkillComponent {
        &self.component
    }

    /// Memory and fuel the current instance used, against its limits
    /// (`None` after a trap, until the next call makes a fresh one).
    pub fn usage(&self) -> Option<crate::sandbox::Usage> {
        self.instance.as_ref().map(|i| i.usage())
    }

    /// Gives the next calls `fuel` per call instead of the sandbox's limit,
    /// until a trap replaces the instance (tests provoke one this way).
    pub fn set_fuel_per_call(&mut self, fuel: u64) -> Result<(), RequestError> {
        self.instance()?.set_fuel_per_call(fuel);
        Ok(())
    }

    /// Serves a batch of JSON requests; one result per request, in order.
    /// A failure of the whole batch becomes the same error for each request.
    pub fn handle(&mut self, batch: &[String]) -> Vec<Result<Output, RequestError>> {
        match self.try_handle(batch) {
            Ok(results) => results,
            Err(e) => vec![Err(e); batch.len()],
        }
    }

    /// Like [`Runner::handle`], but a failure of the whole batch (a trap, a
    /// skill that cannot restart, a backend error for every request) is
    /// returned as `Err` so the caller can retry it elsewhere.
    pub fn try_handle(
        &mut self,
        batch: &[String],
    ) -> Result<Vec<Result<Output, RequestError>>, RequestError> {
        self.try_handle_streaming(batch, &[], None, None)
    }

    /// Like [`Runner::try_handle`]; partial results of request `i` go to
    /// `streams[i]` when present, and answers the skill gives before the
    /// batch ends (`partial.complete`) to `early` as `(i, answer)`. The
    /// returned list still holds an entry for every request; the caller
    /// keeps the first answer of each. With `early`, `queue` lets the skill
    /// take queued requests into the running batch (`partial.take-queued`);
    /// they are answered through `early` only, by the index `queue` gave.
    pub fn try_handle_streaming(
        &mut self,
        batch: &[String],
        streams: &[Option<StreamSender>],
        early: Option<EarlyAnswer>,
        queue: Option<JoinQueue>,
    ) -> Result<Vec<Result<Output, RequestError>>, RequestError> {
        let mut results: Vec<Option<Result<Output, RequestError>>> = vec![None; batch.len()];
        let mut valid_idx = Vec::new();
        let mut valid = Vec::new();
        let mut valid_streams = Vec::new();
        for (i, r) in batch.iter().enumerate() {
            match validate_request(r) {
                Ok(()) => {
                    valid_idx.push(i);
                    valid.push(r.clone());
                    valid_streams.push(streams.get(i).cloned().flatten());
                }
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        if !valid.is_empty() {
            let (device, precision) = (self.device.clone(), self.precision.to_string());
            // The skill's request numbers -> the caller's (joiners append).
            let index = Arc::new(std::sync::Mutex::new(valid_idx.clone()));
            let completer = early.clone().map(|early| {
                let (index, device, precision) = (index.clone(), device.clone(), precision.clone());
                Box::new(
                    move |i: u32, r: Result<crate::sandbox::WitResponse, WitError>| {
                        let at = index.lock().ok().and_then(|ix| ix.get(i as usize).copied());
                        if let Some(at) = at {
                            early(at, convert_response(r, &device, &precision));
                        }
                    },
                ) as crate::sandbox::Completer
            });
            let queue = match (early, queue) {
                (Some(early), Some(mut queue)) => {
                    let index = index.clone();
                    Some(Box::new(move |max: usize| {
                        let mut taken = Vec::new();
                        for (at, request, stream) in queue(max) {
                            // Invalid joiners are answered here; the skill
                            // never sees them.
                            if let Err(e) = validate_request(&request) {
                                early(at, Err(e));
                                continue;
                            }
                            if let Ok(mut ix) = index.lock() {
                                ix.push(at);
                                taken.push((request, stream));
                            }
                        }
                        taken
                    }) as crate::sandbox::Queue)
                }
                _ => None,
            };
            let inst = self.instance()?;
            let answers: Vec<Result<Output, RequestError>> =
                match inst.handle_streaming(&valid, valid_streams, completer, queue) {
                    Err(e) => {
                        self.traps += 1;
                        return Err(RequestError {
                            kind: sandbox_kind(&e),
                            message: e.to_string(),
                        });
                    }
                    Ok(list) if list.len() != valid.len() => {
                        let message = format!(
                            "skill returned {} results for {} requests",
                            list.len(),
                            valid.len()
                        );
                        return Err(RequestError::internal(message));
                    }
                    Ok(list) => list
                        .into_iter()
                        .map(|r| convert_response(r, &device, &precision))
                        .collect(),
                };
            if let Some(Err(first)) = answers.first() {
                if first.kind == ErrorKind::Backend
                    && answers
                        .iter()
                        .all(|a| a.as_ref().is_err_and(|e| e.kind == ErrorKind::Backend))
                {
                    return Err(first.clone());
                }
            }
            for (i, a) in valid_idx.into_iter().zip(answers) {
                results[i] = Some(a);
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(RequestError::internal("request lost"))))
            .collect())
    }
}

fn validate_request(r: &str) -> Result<(), RequestError> {
    let bad = |message: String| RequestError::new(ErrorKind::InvalidRequest, message);
    if r.len() > MAX_REQUEST_BYTES {
        return Err(bad(format!(
            "request of {} bytes exceeds the limit of {MAX_REQUEST_BYTES}",
            r.len()
        )));
    }
    match serde_json::from_str::<serde_json::Value>(r) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        Ok(_) => Err(bad("a request must be a JSON object".into())),
        Err(e) => Err(bad(format!("not valid JSON: {e}"))),
    }
}

fn convert_response(
    r: Result<crate::sandbox::WitResponse, WitError>,
    device: &str,
    precision: &str,
) -> Result<Output, RequestError> {
    let resp = r.map_err(RequestError::from)?;
    let internal = |message: String| RequestError::internal(format!("skill response: {message}"));
    let json = match serde_json::from_str::<serde_json::Value>(&resp.json) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => return Err(internal("`json` is not a JSON object".into())),
    };
    if json.contains_key("device") || json.contains_key("precision") {
        return Err(internal(
            "`device` and `precision` are set by the host".into(),
        ));
    }
    let mut tensors = Vec::new();
    for nt in resp.tensors {
        let t = crate::sandbox::tensor_from_wit(nt.value);
        t.check(&nt.name).map_err(|e| internal(e.to_string()))?;
        if json.contains_key(&nt.name)
            || tensors
                .iter()
                .any(|(n, _): &(String, Tensor)| *n == nt.name)
        {
            return Err(internal(format!("key `{}` appears twice", nt.name)));
        }
        tensors.push((nt.name, t));
    }
    Ok(Output {
        json,
        tensors,
        device: device.to_string(),
        precision: precision.to_string(),
    })
}
