//! TensorBoard event files: every number of `metrics.jsonl`, as scalars.
//!
//! A small writer of TensorBoard's documented format (no TensorFlow needed): a file
//! `events.out.tfevents.*` of TFRecords (length, masked CRC-32C of the length, the
//! bytes, masked CRC-32C of the bytes), each an `Event` protocol buffer. The first
//! event names the file version; each later one holds the scalars of one metrics
//! line at its `step`, tagged `train/lm_loss`, `eval/exact_accuracy`,
//! `eval/ARC/pass@2`, ... Written by hand because the format is six protobuf
//! fields and the crates that write it pull in a protobuf toolchain.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Appends scalar events to one event file.
pub struct EventWriter {
    path: PathBuf,
    file: File,
}

impl EventWriter {
    /// Creates a new event file in `dir` (TensorBoard reads every event file of a
    /// directory, in name order).
    pub fn create(dir: &Path) -> Result<EventWriter> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let path = dir.join(format!(
            "events.out.tfevents.{:010}.{:09}.recursa.{}",
            now.as_secs(),
            now.subsec_nanos(),
            std::process::id()
        ));
        let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
        let mut w = EventWriter { path, file };
        let mut event = Vec::new();
        proto_double(&mut event, 1, wall_time());
        proto_bytes(&mut event, 3, b"brain.Event:2");
        w.write_record(&event)?;
        Ok(w)
    }

    /// The event file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One event at `step` holding the scalars `(tag, value)`.
    pub fn scalars(&mut self, step: i64, scalars: &[(String, f32)]) -> Result<()> {
        let mut summary = Vec::new();
        for (tag, value) in scalars {
            let mut v = Vec::new();
            proto_bytes(&mut v, 1, tag.as_bytes());
            proto_key(&mut v, 2, 5);
            v.extend_from_slice(&value.to_le_bytes());
            proto_bytes(&mut summary, 1, &v);
        }
        let mut event = Vec::new();
        proto_double(&mut event, 1, wall_time());
        proto_key(&mut event, 2, 0);
        proto_varint(&mut event, step as u64);
        proto_bytes(&mut event, 5, &summary);
        self.write_record(&event)
    }

    /// The scalars of one `metrics.jsonl` line: every number except `step`, tagged
    /// `{kind}/{key}`.
    pub fn metrics_line(&mut self, line: &serde_json::Value) -> Result<()> {
        let Some(map) = line.as_object() else {
            return Ok(());
        };
        let kind = map
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or("metrics");
        let step = map.get("step").and_then(|s| s.as_i64()).unwrap_or(0);
        let scalars: Vec<(String, f32)> = map
            .iter()
            .filter(|(k, _)| k.as_str() != "step")
            .filter_map(|(k, v)| v.as_f64().map(|x| (format!("{kind}/{k}"), x as f32)))
            .collect();
        self.scalars(step, &scalars)
    }

    /// Writes everything so far to the file.
    pub fn flush(&mut self) -> Result<()> {
        self.file.flush().map_err(|e| Error::io(&self.path, e))
    }

    fn write_record(&mut self, data: &[u8]) -> Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        let mut record = Vec::with_capacity(data.len() + 16);
        record.extend_from_slice(&len);
        record.extend_from_slice(&masked_crc(&len).to_le_bytes());
        record.extend_from_slice(data);
        record.extend_from_slice(&masked_crc(data).to_le_bytes());
        self.file
            .write_all(&record)
            .map_err(|e| Error::io(&self.path, e))
    }
}

fn wall_time() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// TFRecord's checksum: CRC-32C, rotated right by 15 bits plus a constant.
fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

fn proto_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A field key: number and wire type (0 varint, 1 64-bit, 2 bytes, 5 32-bit).
fn proto_key(out: &mut Vec<u8>, field: u32, wire: u32) {
    proto_varint(out, u64::from(field << 3 | wire));
}

fn proto_double(out: &mut Vec<u8>, field: u32, v: f64) {
    proto_key(out, field, 1);
    out.extend_from_slice(&v.to_le_bytes());
}

fn proto_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    proto_key(out, field, 2);
    proto_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TFRecord framing: lengths and both checksums as TensorFlow's reader checks
    /// them (CRC-32C of "123456789" is 0xe3069283, the standard check value).
    #[test]
    fn records_are_framed_and_checksummed() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        let dir = std::env::temp_dir().join(format!("recursa-tb-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut w = EventWriter::create(&dir).unwrap();
        w.scalars(7, &[("train/lm_loss".into(), 1.5)]).unwrap();
        w.flush().unwrap();
        let bytes = std::fs::read(w.path()).unwrap();
        let mut at = 0;
        let mut records = Vec::new();
        while at < bytes.len() {
            let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
            let len_crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap());
            assert_eq!(len_crc, masked_crc(&bytes[at..at + 8]));
            let data = &bytes[at + 12..at + 12 + len];
            let crc = u32::from_le_bytes(bytes[at + 12 + len..at + 16 + len].try_into().unwrap());
            assert_eq!(crc, masked_crc(data));
            records.push(data.to_vec());
            at += 16 + len;
        }
        assert_eq!(records.len(), 2);
        // The second event: wall_time (9 bytes), step 7 (0x10 0x07), summary.
        assert_eq!(&records[1][9..11], &[0x10, 7]);
        let tail = &records[1][11..];
        assert_eq!(tail[0], 0x2a);
        assert!(tail.windows(13).any(|w| w == b"train/lm_loss"));
        assert!(tail.ends_with(&[0x15, 0, 0, 0xc0, 0x3f]));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
