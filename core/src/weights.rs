//! Weights in and out as safetensors under the reference `state_dict` names.
//!
//! [`visit_net`] (in [`crate::model::names`]) walks the network once, naming every
//! tensor as the reference does; the loader and the saver are two visitors.
//! Linear weights are `[out, in]` on disk (PyTorch) and `[in, out]` in burn.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use burn::module::Param;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

use crate::model::names::{visit_net, Layout, Role, WeightVisitor};
use crate::model::ReasoningNet;
use crate::{Error, Result};

/// A float tensor read from a file: shape and f32 values.
#[derive(Clone, Debug)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Reads a safetensors tensor as f32 (F32, or F64/F16/BF16 converted), naming file and tensor on error.
pub fn read_f32(st: &SafeTensors, file: &str, name: &str) -> Result<HostTensor> {
    let err = |message: String| Error::Weights {
        file: file.to_string(),
        name: name.to_string(),
        message,
    };
    let view = st.tensor(name).map_err(|_| err("missing".into()))?;
    let bytes = view.data();
    let values = match view.dtype() {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("chunk of 8")) as f32)
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
            .collect(),
        other => return Err(err(format!("dtype {other:?}, expected a float tensor"))),
    };
    Ok(HostTensor {
        shape: view.shape().to_vec(),
        values,
    })
}

/// Loads each visited tensor from a safetensors file, checking its shape.
struct Loader<'a> {
    st: &'a SafeTensors<'a>,
    file: &'a str,
    prefix: &'a str,
    seen: HashSet<String>,
    error: Option<Error>,
}

impl<B: Backend> WeightVisitor<B> for Loader<'_> {
    fn visit<const D: usize>(
        &mut self,
        name: &str,
        role: Role,
        layout: Layout,
        p: &mut Param<Tensor<B, D>>,
    ) {
        if self.error.is_some() {
            return;
        }
        let key = format!("{}{name}", self.prefix);
        self.seen.insert(key.clone());
        let host = match read_f32(self.st, self.file, &key) {
            Ok(h) => h,
            Err(e) => {
                self.error = Some(e);
                return;
            }
        };
        let mut expected: Vec<usize> = p.shape().dims::<D>().to_vec();
        if layout == Layout::Transposed {
            expected.reverse();
        }
        if host.shape != expected {
            self.error = Some(Error::Weights {
                file: self.file.to_string(),
                name: key,
                message: format!(
                    "shape {:?}, but this model's config expects {:?}",
                    host.shape, expected
                ),
            });
            return;
        }
        let device = p.val().device();
        let mut t = Tensor::<B, D>::from_data(TensorData::new(host.values, host.shape), &device);
        if layout == Layout::Transposed {
            t = t.transpose();
        }
        let t = t.set_require_grad(role == Role::Param);
        *p = Param::initialized(p.id, t);
    }
}

/// Loads every tensor of `net` from safetensors `bytes` (keys `{prefix}inner.…`).
///
/// A tensor that is missing or has another shape is an error naming it. A tensor
/// under `{prefix}inner.` that the network has no place for is an error too: it
/// means the file was written for another configuration.
pub fn load_net<B: Backend>(
    net: &mut ReasoningNet<B>,
    bytes: &[u8],
    file: &str,
    prefix: &str,
) -> Result<()> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| Error::Weights {
        file: file.into(),
        name: "*".into(),
        message: format!("not a safetensors file: {e}"),
    })?;
    let mut loader = Loader {
        st: &st,
        file,
        prefix,
        seen: HashSet::new(),
        error: None,
    };
    visit_net(net, &mut loader);
    if let Some(e) = loader.error {
        return Err(e);
    }
    let inner = format!("{prefix}inner.");
    let mut extra: Vec<_> = st
        .names()
        .into_iter()
        .filter(|n| n.starts_with(&inner) && !loader.seen.contains(*n))
        .cloned()
        .collect();
    extra.sort();
    if let Some(first) = extra.first() {
        return Err(Error::Weights {
            file: file.into(),
            name: first.clone(),
            message: format!(
                "the model has no such tensor ({} unexpected in all); was the file written for another configuration?",
                extra.len()
            ),
        });
    }
    Ok(())
}

/// Loads `net` from a safetensors file on disk (reference names, no prefix).
pub fn load_net_file<B: Backend>(net: &mut ReasoningNet<B>, path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    load_net(net, &bytes, &path.display().to_string(), "")
}

/// Collects every tensor of the network under its reference name, in reference layout.
struct Collector {
    tensors: Vec<(String, HostTensor)>,
}

impl<B: Backend> WeightVisitor<B> for Collector {
    fn visit<const D: usize>(
        &mut self,
        name: &str,
        _role: Role,
        layout: Layout,
        p: &mut Param<Tensor<B, D>>,
    ) {
        let mut t = p.val();
        if layout == Layout::Transposed {
            t = t.transpose();
        }
        let shape = t.dims().to_vec();
        let values = t
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("converted to f32 above");
        self.tensors
            .push((name.to_string(), HostTensor { shape, values }));
    }
}

/// Every tensor of `net` by reference name, in reference layout, on the host.
pub fn net_state_dict<B: Backend>(net: &ReasoningNet<B>) -> HashMap<String, HostTensor> {
    let mut collector = Collector {
        tensors: Vec::new(),
    };
    visit_net(&mut net.clone(), &mut collector);
    collector.tensors.into_iter().collect()
}

/// Writes `net` as safetensors under reference names, atomically: the file is
/// written next to `path` under a temporary name and renamed when complete.
pub fn save_net_file<B: Backend>(
    net: &ReasoningNet<B>,
    path: &Path,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let state = net_state_dict(net);
    let mut names: Vec<_> = state.keys().cloned().collect();
    names.sort();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = names
        .iter()
        .map(|n| {
            let t = &state[n];
            let view = safetensors::tensor::TensorView::new(
                Dtype::F32,
                t.shape.clone(),
                bytemuck_f32(&t.values),
            )
            .expect("shape and byte length agree by construction");
            (n.clone(), view)
        })
        .collect();
    let bytes =
        safetensors::serialize(views, &metadata).map_err(|e| Error::Other(e.to_string()))?;
    write_atomic(path, &bytes)
}

fn bytemuck_f32(values: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and any byte pattern of the same length is a valid u8 slice.
    unsafe {
        std::slice::from_raw_parts(values.as_ptr() as *const u8, std::mem::size_of_val(values))
    }
}

/// Writes `bytes` to `path` through a temporary file beside it and a rename, so a
/// crash or a full disk never leaves a half-written file under `path`
/// ([`recursa_data::atomic::write_atomic`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    recursa_data::atomic::write_atomic(path, bytes).map_err(crate::train::data::data_error)
}

/// What [`import_torch`] did besides copying tensors.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImportReport {
    /// Tensors taken from the checkpoint.
    pub tensors: usize,
    /// `(found, expected)` shape of a puzzle table replaced by its mean row.
    pub puzzle_table_reset: Option<(Vec<usize>, Vec<usize>)>,
}

/// Loads an official PyTorch TRM checkpoint (`torch.save` of the state dict, keys
/// `_orig_mod.model.inner.…`, or `model.inner.…` / `inner.…`) into `net`.
///
/// As the reference `pretrain.py` does when it loads a checkpoint, a puzzle-embedding
/// table whose shape differs from this network's (another dataset) is replaced by
/// its mean row repeated to the expected shape. Every other tensor must match.
pub fn import_torch<B: Backend>(net: &mut ReasoningNet<B>, path: &Path) -> Result<ImportReport> {
    let file = path.display().to_string();
    let reader = burn_store::pytorch::PytorchReader::new(path).map_err(|e| Error::Weights {
        file: file.clone(),
        name: "*".into(),
        message: format!("not a readable PyTorch checkpoint: {e}"),
    })?;
    let mut state: Vec<(String, HostTensor)> = Vec::new();
    for (key, snapshot) in reader.into_tensors() {
        let name = key.strip_prefix("_orig_mod.").unwrap_or(&key);
        let name = name.strip_prefix("model.").unwrap_or(name);
        if !name.starts_with("inner.") {
            continue;
        }
        let data = snapshot.to_data().map_err(|e| Error::Weights {
            file: file.clone(),
            name: key.clone(),
            message: format!("{e:?}"),
        })?;
        let shape = data.shape.to_vec();
        let values = data
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| Error::Weights {
                file: file.clone(),
                name: key.clone(),
                message: format!("{e:?}"),
            })?;
        state.push((name.to_string(), HostTensor { shape, values }));
    }
    let mut report = ImportReport {
        tensors: state.len(),
        puzzle_table_reset: None,
    };
    if let Some(table) = &net.puzzle_emb {
        let expected = table.weights.shape().dims::<2>().to_vec();
        if let Some((_, t)) = state
            .iter_mut()
            .find(|(n, _)| n == "inner.puzzle_emb.weights")
        {
            if t.shape != expected
                && t.shape.len() == 2
                && t.shape[1] == expected[1]
                && t.shape[0] > 0
            {
                let (rows, width) = (t.shape[0], t.shape[1]);
                let mean: Vec<f32> = (0..width)
                    .map(|j| {
                        ((0..rows)
                            .map(|i| t.values[i * width + j] as f64)
                            .sum::<f64>()
                            / rows as f64) as f32
                    })
                    .collect();
                report.puzzle_table_reset = Some((t.shape.clone(), expected.clone()));
                *t = HostTensor {
                    values: mean.repeat(expected[0]),
                    shape: expected,
                };
            }
        }
    }
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = state
        .into_iter()
        .map(|(n, t)| (n, t.shape, bytemuck_f32(&t.values).to_vec()))
        .collect();
    let views = bytes.iter().map(|(n, s, b)| {
        (
            n.clone(),
            safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b)
                .expect("shape and byte length agree"),
        )
    });
    let st = safetensors::serialize(views, &None).map_err(|e| Error::Other(e.to_string()))?;
    load_net(net, &st, &file, "")?;
    Ok(report)
}
