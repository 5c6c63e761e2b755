//! Memory-mapped safetensors weights and their index.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use super::ModelError;
use crate::ir::DType;

/// One weight: where its bytes are and what they hold.
#[derive(Clone, Debug)]
pub struct WeightEntry {
    /// Index into [`WeightStore::files`].
    pub file: usize,
    pub dtype: DType,
    pub shape: Vec<u64>,
    /// Byte offset from the start of the file.
    pub offset: u64,
    pub length: u64,
}

/// A memory-mapped safetensors file.
pub struct WeightFile {
    pub path: PathBuf,
    pub map: Mmap,
}

/// Every weight of a model, memory-mapped.
pub struct WeightStore {
    pub files: Vec<WeightFile>,
    pub index: HashMap<String, WeightEntry>,
}

fn map_dtype(d: Dtype) -> Option<DType> {
    Some(match d {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::I64 => DType::I64,
        Dtype::I32 => DType::I32,
        Dtype::U8 => DType::U8,
        Dtype::BOOL => DType::Bool,
        _ => return None,
    })
}

impl WeightStore {
    /// Maps and indexes `paths`. Every header is validated: known dtypes,
    /// byte ranges inside the file that match the shapes, no name twice.
    pub fn open(paths: &[PathBuf]) -> Result<Self, ModelError> {
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for path in paths {
            let bad = |message: String| ModelError::Weights {
                path: path.clone(),
                message,
            };
            let file = File::open(path).map_err(|e| bad(format!("cannot open: {e}")))?;
            // SAFETY: the file is opened read-only and the map is only read;
            // a model file truncated underneath a running process is outside
            // what any reader of mapped weights can defend against.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| bad(format!("cannot map: {e}")))?;
            let (header_len, meta) = SafeTensors::read_metadata(&map)
                .map_err(|e| bad(format!("invalid safetensors header: {e}")))?;
            let data_start = 8 + header_len as u64;
            for (name, info) in meta.tensors() {
                let dtype = map_dtype(info.dtype).ok_or_else(|| {
                    bad(format!(
                        "weight `{name}` has unsupported dtype {:?}",
                        info.dtype
                    ))
                })?;
                let (start, end) = info.data_offsets;
                let shape: Vec<u64> = info.shape.iter().map(|&d| d as u64).collect();
                let count = shape
                    .iter()
                    .fold(1u128, |a, &d| a.saturating_mul(d as u128));
                let length = (end as u64).saturating_sub(start as u64);
                if end < start
                    || data_start + end as u64 > map.len() as u64
                    || count.saturating_mul(dtype.size() as u128) != length as u128
                {
                    return Err(bad(format!(
                        "weight `{name}`: byte range {start}..{end} does not fit shape {shape:?} of {dtype} in a file of {} bytes",
                        map.len()
                    )));
                }
                let entry = WeightEntry {
                    file: files.len(),
                    dtype,
                    shape,
                    offset: data_start + start as u64,
                    length,
                };
                if index.insert(name.clone(), entry).is_some() {
                    return Err(bad(format!(
                        "weight `{name}` appears in more than one file"
                    )));
                }
            }
            files.push(WeightFile {
                path: path.clone(),
                map,
            });
        }
        Ok(WeightStore { files, index })
    }

    /// Name -> (dtype, shape), for graph building.
    pub fn types(&self) -> crate::ir::builder::WeightTypes {
        Arc::new(
            self.index
                .iter()
                .map(|(k, v)| (k.clone(), (v.dtype, v.shape.clone())))
                .collect(),
        )
    }

    /// The bytes of one weight.
    pub fn bytes(&self, name: &str) -> Option<&[u8]> {
        let e = self.index.get(name)?;
        let map = &self.files.get(e.file)?.map;
        map.get(e.offset as usize..(e.offset + e.length) as usize)
    }

    /// Path of the file holding `name`.
    pub fn file_of(&self, name: &str) -> Option<&Path> {
        self.index
            .get(name)
            .and_then(|e| self.files.get(e.file))
            .map(|f| f.path.as_path())
    }
}
