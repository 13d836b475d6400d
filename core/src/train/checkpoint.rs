//! Checkpoints: one directory per saved step, written whole or not at all.
//!
//! ```text
//! checkpoints/step-000120/model.safetensors   network, reference names (loads in PyTorch too)
//!                         optimizer.mpk       AdamATan2 moments (burn record, keyed by name-derived ids)
//!                         carry.safetensors   the ACT carry (latents, steps, halted, data)
//!                         trainer.json        step, sampler position, the experiment file
//! checkpoints/latest                          name of the newest complete step directory
//! ```
//! A step directory is written under a temporary name and renamed when complete;
//! `latest` is replaced atomically afterwards, then older steps beyond
//! `train.keep_checkpoints` (default: keep one) are removed.

use std::path::{Path, PathBuf};

use burn::tensor::{Int, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::state::{Batch, Carry, Episode, Latents};
use crate::train::data::SamplerState;
use crate::weights::{read_f32, write_atomic};
use crate::{Device, Error, Result, B};

/// `trainer.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct TrainerState {
    pub step: usize,
    pub sampler: SamplerState,
    /// The experiment file the run was started with.
    pub experiment: String,
}

/// How many checkpoints a run keeps: `keep_checkpoints = "all"` (one per save, as the
/// reference's `checkpoint_every_eval`) or the newest `N` (default 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepCheckpoints {
    All,
    Newest(usize),
}

impl Default for KeepCheckpoints {
    fn default() -> Self {
        KeepCheckpoints::Newest(1)
    }
}

impl KeepCheckpoints {
    /// The default (serialised only when it differs).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl Serialize for KeepCheckpoints {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            KeepCheckpoints::All => s.serialize_str("all"),
            KeepCheckpoints::Newest(n) => s.serialize_u64(*n as u64),
        }
    }
}

impl<'de> Deserialize<'de> for KeepCheckpoints {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let keep = count_or_keyword(d, "all", "\"all\" or a number of checkpoints (1 or more)")?;
        Ok(keep.map_or(KeepCheckpoints::All, KeepCheckpoints::Newest))
    }
}

/// A config value that is a count of 1 or more, or `keyword` (`None`):
/// `keep_checkpoints` ("all") and `micro_batches` ("auto").
pub(crate) fn count_or_keyword<'de, D: serde::Deserializer<'de>>(
    d: D,
    keyword: &'static str,
    expecting: &'static str,
) -> std::result::Result<Option<usize>, D::Error> {
    struct Visitor {
        keyword: &'static str,
        expecting: &'static str,
    }
    impl serde::de::Visitor<'_> for Visitor {
        type Value = Option<usize>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
            if v == self.keyword {
                Ok(None)
            } else {
                Err(E::invalid_value(serde::de::Unexpected::Str(v), &self))
            }
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Self::Value, E> {
            if v >= 1 {
                Ok(Some(v as usize))
            } else {
                Err(E::invalid_value(serde::de::Unexpected::Signed(v), &self))
            }
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Self::Value, E> {
            self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
        }
    }
    d.deserialize_any(Visitor { keyword, expecting })
}

/// Writes a checkpoint of `step` with `write(tmp_dir)`, publishes it, then removes
/// the older ones `keep` does not keep.
pub fn save(
    dir: &Path,
    step: usize,
    keep: KeepCheckpoints,
    write: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = format!("step-{step:06}");
    let tmp = dir.join(format!(".{name}.tmp"));
    let done = dir.join(&name);
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    if let Err(e) = write(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    recursa_data::fault::point("checkpoint", step);
    let _ = std::fs::remove_dir_all(&done);
    std::fs::rename(&tmp, &done).map_err(|e| Error::io(&done, e))?;
    write_atomic(&dir.join("latest"), name.as_bytes())?;
    if let KeepCheckpoints::Newest(n) = keep {
        // Newest first; the one just written is always kept.
        let mut older: Vec<(usize, PathBuf)> =
            list(dir).into_iter().filter(|(s, _)| *s != step).collect();
        older.reverse();
        for (_, path) in older.into_iter().skip(n.saturating_sub(1)) {
            let _ = std::fs::remove_dir_all(path);
        }
    }
    Ok(done)
}

/// The complete checkpoint directories under `dir` (`step-N`), by step, oldest first.
pub fn list(dir: &Path) -> Vec<(usize, PathBuf)> {
    let mut found: Vec<(usize, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().to_string();
            let step = name.strip_prefix("step-")?.parse().ok()?;
            entry.path().is_dir().then(|| (step, entry.path()))
        })
        .collect();
    found.sort();
    found
}

/// The newest complete checkpoint directory under `dir`.
pub fn latest(dir: &Path) -> Result<PathBuf> {
    let latest = dir.join("latest");
    let name = std::fs::read_to_string(&latest).map_err(|e| Error::io(&latest, e))?;
    let name = name.trim();
    let path = dir.join(name);
    if !name.starts_with("step-") || name.contains(['/', '\\']) || !path.is_dir() {
        return Err(Error::Input(format!(
            "{}: names {name:?}, which is not a checkpoint directory beside it",
            latest.display()
        )));
    }
    Ok(path)
}

/// Reads a JSON file, naming it on error.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Input(format!("{}: {e}", path.display())))
}

fn f32_bytes<const D: usize>(t: &Tensor<B, D>) -> (Vec<usize>, Vec<u8>) {
    let v = t
        .clone()
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("converted to f32");
    (
        t.dims().to_vec(),
        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

fn i32_bytes<const D: usize>(t: &Tensor<B, D, Int>) -> (Vec<usize>, Vec<u8>) {
    let v = t
        .clone()
        .into_data()
        .convert::<i32>()
        .to_vec::<i32>()
        .expect("converted to i32");
    (
        t.dims().to_vec(),
        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

/// Writes the carry (exact values) to a safetensors file.
pub fn save_carry(carry: &Carry, path: &Path) -> Result<()> {
    write_atomic(path, &carry_bytes(carry)?)
}

/// The carry as the bytes of a safetensors file ([`save_carry`] writes them).
pub fn carry_bytes(carry: &Carry) -> Result<Vec<u8>> {
    let mut items = vec![
        ("z_H", Dtype::F32, f32_bytes(&carry.latents.z_h)),
        ("z_L", Dtype::F32, f32_bytes(&carry.latents.z_l)),
        ("steps", Dtype::I32, i32_bytes(&carry.steps)),
        ("halted", Dtype::I32, i32_bytes(&carry.halted.clone().int())),
        ("inputs", Dtype::I32, i32_bytes(&carry.current_data.inputs)),
        ("labels", Dtype::I32, i32_bytes(&carry.current_data.labels)),
        (
            "puzzle_identifiers",
            Dtype::I32,
            i32_bytes(&carry.current_data.puzzle_identifiers),
        ),
        ("preds", Dtype::I32, i32_bytes(&carry.preds)),
    ];
    let episode_names: Vec<String> = carry
        .episode
        .iter()
        .flat_map(|e| e.parts())
        .map(|(name, _)| format!("episode.{name}"))
        .collect();
    for ((_, part), name) in carry
        .episode
        .iter()
        .flat_map(|e| e.parts())
        .zip(&episode_names)
    {
        items.push((name.as_str(), Dtype::I32, i32_bytes(part)));
    }
    let views: Vec<_> = items
        .iter()
        .map(|(n, d, (shape, bytes))| {
            (
                n.to_string(),
                safetensors::tensor::TensorView::new(*d, shape.clone(), bytes)
                    .expect("shape matches bytes"),
            )
        })
        .collect();
    safetensors::serialize(views, &None).map_err(|e| Error::Other(e.to_string()))
}

fn int<const D: usize>(
    st: &SafeTensors,
    file: &str,
    name: &str,
    device: &Device,
) -> Result<Tensor<B, D, Int>> {
    let view = st.tensor(name).map_err(|_| Error::Weights {
        file: file.into(),
        name: name.into(),
        message: "missing".into(),
    })?;
    let values: Vec<i32> = view
        .data()
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(Tensor::from_data(
        TensorData::new(values, view.shape().to_vec()),
        device,
    ))
}

/// Reads a carry written by [`save_carry`].
pub fn load_carry(path: &Path, device: &Device) -> Result<Carry> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let file = path.display().to_string();
    let st = SafeTensors::deserialize(&bytes).map_err(|e| Error::Input(format!("{file}: {e}")))?;
    let float = |name: &str| -> Result<Tensor<B, 3>> {
        let h = read_f32(&st, &file, name)?;
        Ok(Tensor::from_data(
            TensorData::new(h.values, h.shape),
            device,
        ))
    };
    let halted: Tensor<B, 1, Int> = int(&st, &file, "halted", device)?;
    Ok(Carry {
        latents: Latents {
            z_h: float("z_H")?,
            z_l: float("z_L")?,
        },
        steps: int(&st, &file, "steps", device)?,
        halted: halted.equal_elem(1),
        current_data: Batch {
            inputs: int(&st, &file, "inputs", device)?,
            labels: int(&st, &file, "labels", device)?,
            puzzle_identifiers: int(&st, &file, "puzzle_identifiers", device)?,
        },
        preds: int(&st, &file, "preds", device)?,
        episode: load_episode(&st, &file, device)?,
    })
}

/// The per-episode state's parts, `episode.NAME` each (none: `None`).
fn load_episode(st: &SafeTensors, file: &str, device: &Device) -> Result<Option<Episode>> {
    if st.tensor("episode").is_ok() {
        return Err(Error::Input(format!(
            "{file}: `episode` is the per-episode state of an earlier recursa (one packed \
             tensor); this one stores its parts as `episode.NAME`: restart the run or resume \
             from a checkpoint written by this version"
        )));
    }
    let mut names: Vec<String> = st
        .names()
        .into_iter()
        .filter(|n| n.starts_with("episode."))
        .cloned()
        .collect();
    if names.is_empty() {
        return Ok(None);
    }
    names.sort();
    let mut episode = Episode::default();
    for name in names {
        let part = int(st, file, &name, device)?;
        episode = episode.with(&name["episode.".len()..], part);
    }
    Ok(Some(episode))
}
