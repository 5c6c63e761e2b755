//! Device names, precisions, availability probes and backend construction.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::{cpu, cuda, faulty, openvino, Backend, BackendError};
use crate::config::{BackendOptions, HostConfig};

/// Numeric precision a backend computes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    F32,
    F16,
    BF16,
    /// Linear layers in int8 (cpu): weights quantized by the host at load
    /// (one scale per output channel), their inputs per row at run time;
    /// everything else in f32 (`onnx::quantize` says which layers and how).
    Int8,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::BF16 => "bf16",
            Precision::Int8 => "int8",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "f16" | "fp16" | "float16" => Ok(Precision::F16),
            "bf16" | "bfloat16" => Ok(Precision::BF16),
            "int8" | "i8" | "qint8" => Ok(Precision::Int8),
            _ => Err(format!(
                "unknown precision `{s}`; expected f32, f16, bf16 or int8"
            )),
        }
    }
}

/// A device an endpoint can run on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    Cpu,
    OpenVino(String),
    Cuda(u32),
    /// Fault injection (see `backend::faulty`), only where the configuration
    /// enables it (`HOST_FAULT_INJECTION=1`).
    Faulty,
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::OpenVino(d) if d == "CPU" => f.write_str("openvino"),
            Device::OpenVino(d) => write!(f, "openvino:{d}"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
            Device::Faulty => f.write_str("faulty"),
        }
    }
}

impl Device {
    /// Parses a device name; `faulty` only when `fault_injection`
    /// ([`HostConfig::fault_injection`]).
    pub fn parse_with(s: &str, fault_injection: bool) -> Result<Self, BackendError> {
        let t = s.trim();
        let (kind, sub) = match t.split_once(':') {
            Some((k, s)) => (k, Some(s)),
            None => (t, None),
        };
        match (kind.to_ascii_lowercase().as_str(), sub) {
            ("cpu", None) => Ok(Device::Cpu),
            ("openvino", None) => Ok(Device::OpenVino("CPU".into())),
            ("openvino", Some(d))
                if !d.is_empty() && d.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') =>
            {
                Ok(Device::OpenVino(d.to_ascii_uppercase()))
            }
            ("faulty", None) if fault_injection => Ok(Device::Faulty),
            ("cuda", None) => Ok(Device::Cuda(0)),
            ("cuda", Some(n)) => n
                .parse()
                .map(Device::Cuda)
                .map_err(|_| BackendError::UnknownDevice(s.to_string())),
            _ => Err(BackendError::UnknownDevice(s.to_string())),
        }
    }
}

impl FromStr for Device {
    type Err = BackendError;
    /// [`Device::parse_with`], `faulty` allowed as the environment says
    /// ([`faulty::enabled_by_env`]): a parser cannot be handed a
    /// configuration, and endpoint configs deserialize through this one.
    fn from_str(s: &str) -> Result<Self, BackendError> {
        Self::parse_with(s, faulty::enabled_by_env())
    }
}

/// [`parse_list_with`], `faulty` allowed as the environment says
/// ([`faulty::enabled_by_env`]), for callers without a configuration.
pub fn parse_list(s: &str) -> Result<Vec<Device>, BackendError> {
    parse_list_with(s, faulty::enabled_by_env())
}

/// Parses a comma-separated device list such as `cuda:0,openvino,cpu`;
/// `faulty` only when `fault_injection` ([`HostConfig::fault_injection`]).
pub fn parse_list_with(s: &str, fault_injection: bool) -> Result<Vec<Device>, BackendError> {
    let list: Vec<Device> = s
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|d| Device::parse_with(d, fault_injection))
        .collect::<Result<_, _>>()?;
    if list.is_empty() {
        return Err(BackendError::UnknownDevice(s.to_string()));
    }
    Ok(list)
}

/// Whether a device can serve, and why not.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeviceStatus {
    pub device: String,
    pub available: bool,
    pub detail: String,
}

/// Probes every backend this build knows, with the environment's
/// configuration ([`HostConfig::from_env_lenient`]), for callers without
/// one.
pub fn probe_all() -> Vec<DeviceStatus> {
    probe_all_with(&HostConfig::from_env_lenient().backend_options())
}

/// Probes every backend this build knows.
pub fn probe_all_with(options: &BackendOptions) -> Vec<DeviceStatus> {
    let mut out = vec![cpu::probe(options)];
    out.extend(openvino::probe(options));
    out.extend(cuda::probe());
    out
}

/// Opens the backend for `device` at `precision`, with the environment's
/// configuration ([`HostConfig::from_env_lenient`]), for callers without
/// one.
pub fn open(device: &Device, precision: Precision) -> Result<Arc<dyn Backend>, BackendError> {
    open_with(
        device,
        precision,
        &HostConfig::from_env_lenient().backend_options(),
    )
}

/// Opens the backend for `device` at `precision` with `options`.
pub fn open_with(
    device: &Device,
    precision: Precision,
    options: &BackendOptions,
) -> Result<Arc<dyn Backend>, BackendError> {
    match device {
        Device::Cpu => Ok(Arc::new(cpu::CpuBackend::new(precision, options)?)),
        Device::OpenVino(d) => Ok(Arc::new(openvino::OpenVinoBackend::new(
            d, precision, options,
        )?)),
        Device::Faulty => Ok(Arc::new(faulty::FaultyBackend::new(precision, options)?)),
        Device::Cuda(n) => cuda::open(*n, precision, options),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_lists() {
        let l = parse_list("cuda:1, openvino ,cpu,openvino:gpu").unwrap();
        assert_eq!(
            l,
            vec![
                Device::Cuda(1),
                Device::OpenVino("CPU".into()),
                Device::Cpu,
                Device::OpenVino("GPU".into())
            ]
        );
        assert_eq!(l[1].to_string(), "openvino");
        assert!(parse_list("tpu").is_err());
        assert!(parse_list("cuda:x").is_err());
        assert!(parse_list("").is_err());
        assert_eq!("BF16".parse::<Precision>().unwrap(), Precision::BF16);
    }
}
