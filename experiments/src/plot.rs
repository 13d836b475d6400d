//! `recursa plot`: the training curves of one or more runs as one PNG, and the plotted
//! numbers as a CSV next to it.
//!
//! A run is a directory written by `recursa train` (or its `metrics.jsonl` itself). The
//! picture has a title line, a legend (one colour per run, named by its directory) and
//! four (or five) panels sharing one x axis:
//!
//! | panel | from |
//! |---|---|
//! | training loss (`lm_loss`, logarithmic axis unless asked otherwise) | `"kind":"train"` lines |
//! | training exact accuracy | `"kind":"train"` lines |
//! | evaluation exact accuracy | `"kind":"eval"` lines |
//! | evaluation token accuracy | `"kind":"eval"` lines |
//! | ARC pass@2 of the voting evaluator (only when a run has it) | `ARC/pass@2` of `"kind":"eval"` lines |
//!
//! The x axis is the optimizer step, the forward passes (network calls summed over every
//! example, `net_calls_total` of the train line of that step) or the examples seen (step
//! times `train.global_batch_size` of the run's `config.toml`). Runs with different
//! schedules or batch sizes compare fairly on forward passes, the default with several runs.
//!
//! Training accuracies are measured over the rows that halted at a step (`count`); steps
//! where none halted log an accuracy of 0 that measures nothing, and are left out.
//!
//! The CSV has one row per plotted point: `run,panel,step,<x>,value`.
//!
//! A metrics line that is not JSON or lacks a plotted field is an error naming the file and
//! the line; a run without any train or eval line is an error. A last line without its
//! newline that does not parse (a run still writing it) is skipped with a warning. When a
//! step appears twice (a run resumed from an earlier checkpoint), the later line is kept.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use recursa_core::{Error, Result};
use recursa_data::canvas::Canvas;
use serde_json::Value;

// ---------------------------------------------------------------------------------------
// Reading runs
// ---------------------------------------------------------------------------------------

/// What the x axis counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum XAxis {
    /// Optimizer steps.
    Step,
    /// Network calls so far, summed over all examples (`net_calls_total`).
    ForwardPasses,
    /// Training examples so far (step x train.global_batch_size).
    Examples,
}

impl XAxis {
    /// The axis title in the picture.
    pub fn title(self) -> &'static str {
        match self {
            XAxis::Step => "optimizer step",
            XAxis::ForwardPasses => "forward passes (network calls, all examples)",
            XAxis::Examples => "training examples seen",
        }
    }

    /// The column name in the CSV.
    pub fn csv_name(self) -> &'static str {
        match self {
            XAxis::Step => "step",
            XAxis::ForwardPasses => "forward_passes",
            XAxis::Examples => "examples",
        }
    }

    /// The default: forward passes to compare several runs, steps for one.
    pub fn default_for(runs: usize) -> XAxis {
        if runs > 1 {
            XAxis::ForwardPasses
        } else {
            XAxis::Step
        }
    }
}

/// The plotted fields of one `"kind":"train"` line. `None`: the value was `null`.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainRow {
    pub step: usize,
    pub lm_loss: Option<f64>,
    pub exact_accuracy: Option<f64>,
    /// Rows that halted at this step (the rows the accuracies are over); with none, the
    /// accuracies are not measured (logged as 0) and not plotted.
    pub count: Option<f64>,
    /// Absent in metrics written before forward passes were counted.
    pub net_calls_total: Option<f64>,
    pub net_calls_per_example: Option<f64>,
}

/// The plotted fields of one `"kind":"eval"` line.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalRow {
    pub step: usize,
    pub exact_accuracy: Option<f64>,
    pub accuracy: Option<f64>,
    /// `ARC/pass@2`: logged by evaluations on ARC datasets (the voting evaluator).
    pub arc_pass_at_2: Option<f64>,
}

/// The lines of a `metrics.jsonl`, sorted by step, one per step (the last one written).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metrics {
    pub train: Vec<TrainRow>,
    pub eval: Vec<EvalRow>,
    /// Things worth knowing that are not errors (a skipped unfinished last line).
    pub warnings: Vec<String>,
}

/// A number field: `Ok(None)` for `null` or for an absent optional field.
fn number(line: &Value, key: &str, required: bool) -> std::result::Result<Option<f64>, String> {
    match line.get(key) {
        None if required => Err(format!("no `{key}` field")),
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| format!("`{key}` is {v}, not a number")),
    }
}

fn step_of(line: &Value) -> std::result::Result<usize, String> {
    match line.get("step") {
        None => Err("no `step` field".into()),
        Some(v) => v
            .as_u64()
            .and_then(|s| usize::try_from(s).ok())
            .ok_or_else(|| format!("`step` is {v}, not a whole number")),
    }
}

/// Parses the text of a `metrics.jsonl`; `path` names the file in errors, which also give
/// the line number (from 1). Lines of other kinds and blank lines are ignored.
pub fn parse_metrics(text: &str, path: &Path) -> Result<Metrics> {
    let mut train = BTreeMap::new();
    let mut eval = BTreeMap::new();
    let mut warnings = Vec::new();
    let lines: Vec<&str> = text.split('\n').collect();
    for (i, raw) in lines.iter().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let at = |message: String| Error::Input(format!("{}:{}: {message}", path.display(), i + 1));
        let unfinished = i + 1 == lines.len() && !text.ends_with('\n');
        let value: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(_) if unfinished => {
                warnings.push(format!(
                    "{}:{}: skipped the unfinished last line",
                    path.display(),
                    i + 1
                ));
                continue;
            }
            Err(e) => return Err(at(format!("not a JSON line: {e}"))),
        };
        if !value.is_object() {
            return Err(at("not a JSON object".into()));
        }
        match value.get("kind").and_then(Value::as_str) {
            Some("train") => {
                let row = TrainRow {
                    step: step_of(&value).map_err(at)?,
                    lm_loss: number(&value, "lm_loss", true).map_err(at)?,
                    exact_accuracy: number(&value, "exact_accuracy", true).map_err(at)?,
                    count: number(&value, "count", false).map_err(at)?,
                    net_calls_total: number(&value, "net_calls_total", false).map_err(at)?,
                    net_calls_per_example: number(&value, "net_calls_per_example", false)
                        .map_err(at)?,
                };
                train.insert(row.step, row);
            }
            Some("eval") => {
                let row = EvalRow {
                    step: step_of(&value).map_err(at)?,
                    exact_accuracy: number(&value, "exact_accuracy", true).map_err(at)?,
                    accuracy: number(&value, "accuracy", false).map_err(at)?,
                    arc_pass_at_2: number(&value, "ARC/pass@2", false).map_err(at)?,
                };
                eval.insert(row.step, row);
            }
            Some(_) => {}
            None => return Err(at("no `kind` field (\"train\" or \"eval\")".into())),
        }
    }
    Ok(Metrics {
        train: train.into_values().collect(),
        eval: eval.into_values().collect(),
        warnings,
    })
}

/// One run: its name, where it is, its metrics.
#[derive(Clone, Debug)]
pub struct Run {
    /// The run directory's name (the legend entry).
    pub name: String,
    pub dir: PathBuf,
    pub metrics_path: PathBuf,
    pub metrics: Metrics,
    /// `train.global_batch_size` of `config.toml`, if readable.
    pub global_batch_size: Option<usize>,
}

/// Reads a run directory (or its `metrics.jsonl` given directly) and its `config.toml`.
/// A run without any train or eval line is an error.
pub fn read_run(path: &Path) -> Result<Run> {
    let (dir, metrics_path) = if path.is_file() {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        (dir.to_path_buf(), path.to_path_buf())
    } else {
        (path.to_path_buf(), path.join("metrics.jsonl"))
    };
    if !dir.is_dir() {
        return Err(Error::Input(format!(
            "{}: no such run directory",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(&metrics_path).map_err(|e| Error::io(&metrics_path, e))?;
    let metrics = parse_metrics(&text, &metrics_path)?;
    if metrics.train.is_empty() && metrics.eval.is_empty() {
        return Err(Error::Input(format!(
            "{}: no \"train\" or \"eval\" lines yet, nothing to plot",
            metrics_path.display()
        )));
    }
    let name = std::fs::canonicalize(&dir)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string());
    let global_batch_size = std::fs::read_to_string(dir.join("config.toml"))
        .ok()
        .and_then(|t| toml::from_str::<toml::Table>(&t).ok())
        .and_then(|t| t.get("train")?.get("global_batch_size")?.as_integer())
        .and_then(|b| usize::try_from(b).ok())
        .filter(|&b| b > 0);
    Ok(Run {
        name,
        dir,
        metrics_path,
        metrics,
        global_batch_size,
    })
}

/// Legend names: directory names, or the paths as given when two directories share a name.
fn legend_names(runs: &[Run], paths: &[PathBuf]) -> Vec<String> {
    let mut names: Vec<String> = runs.iter().map(|r| r.name.clone()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    if sorted.len() < names.len() {
        names = paths.iter().map(|p| p.display().to_string()).collect();
    }
    names
}

// ---------------------------------------------------------------------------------------
// Series
// ---------------------------------------------------------------------------------------

/// One plotted point.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub step: usize,
    pub x: f64,
    pub y: f64,
}

/// One run's points in one panel.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Index of the run (its colour is [`run_colour`] of it).
    pub run: usize,
    pub points: Vec<Point>,
}

/// One panel of the picture.
#[derive(Clone, Debug, PartialEq)]
pub struct Panel {
    pub title: String,
    pub y_title: &'static str,
    /// The panel's name in the CSV.
    pub csv_name: &'static str,
    pub log_y: bool,
    /// Mark every point (sparse series: evaluations).
    pub markers: bool,
    pub series: Vec<Series>,
}

/// The x value of every step of a run.
struct XMap {
    axis: XAxis,
    /// Examples per step (for [`XAxis::Examples`]).
    batch: f64,
    /// (step, net_calls_total) of the train lines that have it, by step.
    calls: Vec<(usize, f64)>,
}

impl XMap {
    fn new(run: &Run, axis: XAxis) -> Result<XMap> {
        let calls: Vec<(usize, f64)> = run
            .metrics
            .train
            .iter()
            .filter_map(|r| Some((r.step, r.net_calls_total?)))
            .collect();
        let batch = match axis {
            XAxis::Examples => {
                // net_calls_total = step * batch * net_calls_per_example.
                let derived = run.metrics.train.iter().find_map(|r| {
                    let (total, per) = (r.net_calls_total?, r.net_calls_per_example?);
                    (r.step > 0 && per > 0.0).then(|| total / per / r.step as f64)
                });
                run.global_batch_size
                    .map(|b| b as f64)
                    .or(derived)
                    .ok_or_else(|| {
                        Error::Input(format!(
                            "{}: --x examples needs train.global_batch_size in {} (not found)",
                            run.name,
                            run.dir.join("config.toml").display()
                        ))
                    })?
            }
            _ => 0.0,
        };
        if axis == XAxis::ForwardPasses && calls.is_empty() {
            return Err(Error::Input(format!(
                "{}: no train line with `net_calls_total`, so forward passes are unknown; use --x step",
                run.metrics_path.display()
            )));
        }
        Ok(XMap { axis, batch, calls })
    }

    fn x(&self, step: usize) -> f64 {
        match self.axis {
            XAxis::Step => step as f64,
            XAxis::Examples => step as f64 * self.batch,
            XAxis::ForwardPasses => {
                // The train line of the same step; otherwise the calls per step of the
                // nearest train line before it (or the first one).
                let i = self.calls.partition_point(|&(s, _)| s <= step);
                match i.checked_sub(1).map(|j| self.calls[j]) {
                    Some((s, total)) if s == step => total,
                    Some((s, total)) if s > 0 => total / s as f64 * step as f64,
                    _ => {
                        let (s, total) = self.calls[i.min(self.calls.len() - 1)];
                        if s == 0 {
                            0.0
                        } else {
                            total / s as f64 * step as f64
                        }
                    }
                }
            }
        }
    }
}

/// The four panels for `runs` against `axis`, and a fifth (ARC pass@2) when a run logged
/// it. The loss axis is logarithmic when `log_loss` and every loss is positive.
pub fn panels(runs: &[Run], axis: XAxis, log_loss: bool) -> Result<Vec<Panel>> {
    let maps = runs
        .iter()
        .map(|r| XMap::new(r, axis))
        .collect::<Result<Vec<_>>>()?;
    type Pick<R> = fn(&R) -> Option<f64>;
    fn collect<R>(
        runs: &[Run],
        maps: &[XMap],
        rows: fn(&Run) -> &[R],
        step: fn(&R) -> usize,
        pick: Pick<R>,
    ) -> Vec<Series> {
        runs.iter()
            .zip(maps)
            .enumerate()
            .map(|(i, (run, map))| Series {
                run: i,
                points: rows(run)
                    .iter()
                    .filter_map(|r| {
                        let y = pick(r).filter(|y| y.is_finite())?;
                        Some(Point {
                            step: step(r),
                            x: map.x(step(r)),
                            y,
                        })
                    })
                    .collect(),
            })
            .collect()
    }
    fn train(r: &Run) -> &[TrainRow] {
        &r.metrics.train
    }
    fn eval(r: &Run) -> &[EvalRow] {
        &r.metrics.eval
    }
    let loss = collect(runs, &maps, train, |r| r.step, |r| r.lm_loss);
    let log_y = log_loss && loss.iter().flat_map(|s| &s.points).all(|p| p.y > 0.0);
    let pass_at_2 = collect(runs, &maps, eval, |r| r.step, |r| r.arc_pass_at_2);
    let mut panels = vec![
        Panel {
            title: if log_y {
                "training loss (log scale)".into()
            } else {
                "training loss".into()
            },
            y_title: "lm loss",
            csv_name: "train_lm_loss",
            log_y,
            markers: false,
            series: loss,
        },
        Panel {
            title: "training exact accuracy".into(),
            y_title: "exact accuracy",
            csv_name: "train_exact_accuracy",
            log_y: false,
            markers: false,
            // Steps where no row halted measure no accuracy.
            series: collect(
                runs,
                &maps,
                train,
                |r| r.step,
                |r| r.exact_accuracy.filter(|_| r.count != Some(0.0)),
            ),
        },
        Panel {
            title: "evaluation exact accuracy".into(),
            y_title: "exact accuracy",
            csv_name: "eval_exact_accuracy",
            log_y: false,
            markers: true,
            series: collect(runs, &maps, eval, |r| r.step, |r| r.exact_accuracy),
        },
        Panel {
            title: "evaluation token accuracy".into(),
            y_title: "token accuracy",
            csv_name: "eval_accuracy",
            log_y: false,
            markers: true,
            series: collect(runs, &maps, eval, |r| r.step, |r| r.accuracy),
        },
    ];
    if pass_at_2.iter().any(|s| !s.points.is_empty()) {
        panels.push(Panel {
            title: "ARC pass@2 (voting over augmentations)".into(),
            y_title: "pass@2",
            csv_name: "eval_arc_pass@2",
            log_y: false,
            markers: true,
            series: pass_at_2,
        });
    }
    Ok(panels)
}

/// The CSV of `panels`: `run,panel,step,<x>,value`, one row per point.
pub fn csv(names: &[String], panels: &[Panel], axis: XAxis) -> String {
    let quote = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut out = format!("run,panel,step,{},value\n", axis.csv_name());
    for panel in panels {
        for s in &panel.series {
            let run = quote(&names[s.run]);
            for p in &s.points {
                let _ = writeln!(out, "{run},{},{},{},{}", panel.csv_name, p.step, p.x, p.y);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Axes and ticks
// ---------------------------------------------------------------------------------------

/// A step of 1, 2, 2.5 or 5 times a power of ten near `span / target`.
fn nice_step(span: f64, target: usize) -> f64 {
    let raw = span / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 2.5 {
        2.5
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// The number of decimals that shows `v` exactly (up to 6).
fn decimals(v: f64) -> usize {
    (0..6)
        .find(|&d| {
            let scaled = v.abs() * 10f64.powi(d as i32);
            (scaled - scaled.round()).abs() < 1e-6 * scaled.max(1.0)
        })
        .unwrap_or(6)
}

/// A tick label: `v` with the decimals of `precision` (a tick step, or the value itself);
/// thousands and up with a K, M, G or T suffix; very small values in E notation.
pub fn tick_label(v: f64, precision: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if a >= 1000.0 {
        let (div, suffix) = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")]
            .into_iter()
            .find(|&(d, _)| a >= d)
            .expect("a >= 1000");
        let d = decimals(precision / div).min(3);
        return format!("{:.*}{suffix}", d, v / div);
    }
    if a < 1e-3 {
        return format!("{v:.0e}");
    }
    format!("{:.*}", decimals(precision).min(4), v)
}

/// One axis: its range, whether it is logarithmic, its ticks (value, label).
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    pub lo: f64,
    pub hi: f64,
    pub log: bool,
    pub ticks: Vec<(f64, String)>,
}

impl Axis {
    /// The coordinate the axis is linear in: `v`, or its log10 on a logarithmic axis.
    pub fn t(&self, v: f64) -> f64 {
        if self.log {
            v.log10()
        } else {
            v
        }
    }

    /// Where `v` lies between `lo` (0) and `hi` (1).
    pub fn fraction(&self, v: f64) -> f64 {
        (self.t(v) - self.t(self.lo)) / (self.t(self.hi) - self.t(self.lo))
    }

    /// A linear axis from `min` (or from 0 when `from_zero` and every value is non-negative)
    /// to `max` (or, when `snap_top`, to the first tick at or above it); ticks every nice step.
    fn linear(min: f64, max: f64, target: usize, from_zero: bool, snap_top: bool) -> Axis {
        let (mut lo, mut hi) = (if from_zero { min.min(0.0) } else { min }, max);
        if hi <= lo {
            hi = if lo == 0.0 { 1.0 } else { lo + lo.abs() };
        }
        let step = nice_step(hi - lo, target);
        lo = (lo / step).floor() * step;
        if snap_top {
            hi = (hi / step - 1e-9).ceil() * step;
        }
        let mut ticks = Vec::new();
        let mut k = (lo / step).round() as i64;
        while (k as f64) * step <= hi * (1.0 + 1e-9) + 1e-12 {
            let v = k as f64 * step;
            ticks.push((v, tick_label(v, step)));
            k += 1;
        }
        Axis {
            lo,
            hi,
            log: false,
            ticks,
        }
    }

    /// A logarithmic axis a little wider than [`min`, `max`] (both positive), ticks at
    /// 1, 2, 5 (or every digit, or only 1) times powers of ten.
    fn logarithmic(min: f64, max: f64) -> Axis {
        let (lo, hi) = if max > min {
            let pad = (max / min).powf(0.05);
            (min / pad, max * pad)
        } else {
            (min / 2.0, max * 2.0)
        };
        let (d0, d1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
        let within = |mantissas: &[f64]| -> Vec<f64> {
            (d0..=d1)
                .flat_map(|d| mantissas.iter().map(move |m| m * 10f64.powi(d)))
                .filter(|&v| v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9))
                .collect()
        };
        let sets: [&[f64]; 3] = [
            &[1.0],
            &[1.0, 2.0, 5.0],
            &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
        ];
        let mut values = sets
            .iter()
            .map(|s| within(s))
            .find(|v| v.len() >= 3)
            .unwrap_or_default();
        if values.len() > 8 {
            // Many decades: every k-th power of ten.
            let k = values.len().div_ceil(8);
            values = values.into_iter().step_by(k).collect();
        }
        let ticks = if values.len() >= 2 {
            values.into_iter().map(|v| (v, tick_label(v, v))).collect()
        } else {
            // Less than a factor of two: plain ticks, placed on the log scale.
            let lin = Axis::linear(lo, hi, 4, false, false);
            lin.ticks
                .into_iter()
                .filter(|&(v, _)| v >= lo && v <= hi)
                .collect()
        };
        Axis {
            lo,
            hi,
            log: true,
            ticks,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Drawing
// ---------------------------------------------------------------------------------------
//
// plotters draws the picture at twice its size into an RGB buffer, which is then averaged
// down 2x2: lines, markers and text come out anti-aliased. The labels are in DejaVu Sans
// (printable ASCII, `assets/DejaVuSans-ascii.ttf`, its license beside it), so the picture
// looks the same on every machine and needs no system fonts.

/// Width of the picture in pixels.
pub const WIDTH_PX: usize = 1280;
/// Height of one panel (caption, plot area, tick labels, x title) in pixels.
pub const PANEL_PX: usize = 380;
/// Margin around the picture and between panels, in pixels.
pub const MARGIN_PX: usize = 24;
/// Font size of the title line, in pixels.
pub const TITLE_PX: f64 = 24.0;
/// Font size of the panel captions, in pixels.
pub const CAPTION_PX: f64 = 18.0;
/// Font size of tick labels, axis titles and the legend, in pixels.
pub const LABEL_PX: f64 = 15.0;
/// Width of a curve in pixels (1.5: three pixels at the drawing size).
pub const LINE_PX: f64 = 1.5;
/// Radius of an evaluation marker in pixels.
pub const MARKER_PX: f64 = 3.5;

/// The factor the picture is drawn larger than it is written.
const SUPERSAMPLE: usize = 2;
/// The font file: DejaVu Sans reduced to printable ASCII (see assets/DejaVuSans-LICENSE.txt).
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans-ascii.ttf");

const TEXT: RGBColor = RGBColor(0x22, 0x22, 0x22);
const AXIS: RGBColor = RGBColor(0x44, 0x44, 0x44);
const GRID: RGBColor = RGBColor(0xE6, 0xE6, 0xE6);
const MUTED: RGBColor = RGBColor(0x77, 0x77, 0x77);

/// Colours of runs 0, 1, 2, ... (then again from the first).
pub const RUN_COLOURS: [[u8; 3]; 10] = [
    [0x1F, 0x77, 0xB4],
    [0xFF, 0x7F, 0x0E],
    [0x2C, 0xA0, 0x2C],
    [0xD6, 0x27, 0x28],
    [0x94, 0x67, 0xBD],
    [0x8C, 0x56, 0x4B],
    [0xE3, 0x77, 0xC2],
    [0x7F, 0x7F, 0x7F],
    [0xBC, 0xBD, 0x22],
    [0x17, 0xBE, 0xCF],
];

/// The colour of run `i`.
pub fn run_colour(i: usize) -> [u8; 3] {
    RUN_COLOURS[i % RUN_COLOURS.len()]
}

fn rgb(c: [u8; 3]) -> RGBColor {
    RGBColor(c[0], c[1], c[2])
}

/// Where a panel's plot area lies in the written picture and what it shows. The plot area
/// spans pixels `left..=right` and `top..=bottom`; the axes are drawn on its edges.
#[derive(Clone, Debug, PartialEq)]
pub struct PanelGeometry {
    pub left: usize,
    pub top: usize,
    pub right: usize,
    pub bottom: usize,
    pub x: Axis,
    pub y: Axis,
}

impl PanelGeometry {
    /// The pixel (fractional) of the data point (x, y).
    pub fn to_px(&self, x: f64, y: f64) -> (f64, f64) {
        (
            self.left as f64 + self.x.fraction(x) * (self.right - self.left) as f64,
            self.bottom as f64 - self.y.fraction(y) * (self.bottom - self.top) as f64,
        )
    }
}

/// A drawn picture and the geometry of its panels (in the order of the panels given).
#[derive(Clone, Debug)]
pub struct Figure {
    pub canvas: Canvas,
    pub panels: Vec<PanelGeometry>,
}

fn drawing_error(e: impl std::fmt::Display) -> Error {
    Error::Other(format!("plot: drawing the picture: {e}"))
}

/// The labels' font at `size` pixels of the written picture.
fn font(size: f64) -> Result<FontDesc<'static>> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok()
    });
    if !ok {
        return Err(drawing_error("the built-in font does not parse"));
    }
    Ok(FontDesc::new(
        FontFamily::SansSerif,
        size * SUPERSAMPLE as f64,
        FontStyle::Normal,
    ))
}

/// Width and height of `text` in pixels of the drawing (not of the written picture).
fn text_size(text: &str, size: f64) -> Result<(usize, usize)> {
    let (w, h) = font(size)?.box_size(text).map_err(drawing_error)?;
    Ok((w as usize, h as usize))
}

/// Where a legend entry goes, in drawing pixels: the top left of run `run`'s entry.
struct LegendEntry {
    x: usize,
    y: usize,
    run: usize,
}

/// Legend entries laid out in rows, in drawing pixels, and the height they take.
fn legend_layout(names: &[String], top: usize) -> Result<(Vec<LegendEntry>, usize)> {
    let s = SUPERSAMPLE;
    let row_h = text_size("Ag", LABEL_PX)?.1 + 8 * s;
    let (mut x, mut y) = (MARGIN_PX * s, top);
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let w = 28 * s + text_size(name, LABEL_PX)?.0 + 24 * s;
        if x > MARGIN_PX * s && x + w > (WIDTH_PX - MARGIN_PX) * s {
            (x, y) = (MARGIN_PX * s, y + row_h);
        }
        out.push(LegendEntry { x, y, run: i });
        x += w;
    }
    Ok((out, y + row_h - top))
}

/// Averages each `factor` x `factor` block of an RGB8 picture `width` pixels wide.
fn shrink(px: &[u8], width: usize, factor: usize) -> Vec<u8> {
    let height = px.len() / 3 / width;
    let (w, h) = (width / factor, height / factor);
    let mut out = vec![0u8; w * h * 3];
    let n = (factor * factor) as u32;
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let mut sum = 0u32;
                for dy in 0..factor {
                    let row = (y * factor + dy) * width;
                    for dx in 0..factor {
                        sum += u32::from(px[(row + x * factor + dx) * 3 + c]);
                    }
                }
                out[(y * w + x) * 3 + c] = ((sum + n / 2) / n) as u8;
            }
        }
    }
    out
}

/// Draws `panels` (two per row) with a title line naming the x axis and a legend of
/// `names` (run `i` in [`run_colour`]`(i)`).
pub fn draw(names: &[String], panels: &[Panel], axis: XAxis) -> Result<Figure> {
    let s = SUPERSAMPLE;
    let title = format!("training curves against {}", axis.title());
    let title_h = text_size(&title, TITLE_PX)?.1 + 12 * s;
    let (legend, legend_h) = legend_layout(names, MARGIN_PX * s + title_h)?;
    let header = (MARGIN_PX * s + title_h + legend_h + 8 * s).div_ceil(s);
    let rows = panels.len().div_ceil(2);
    let height = header + rows * PANEL_PX + rows.saturating_sub(1) * MARGIN_PX + MARGIN_PX;

    // One x axis for every panel.
    let xs = || {
        panels
            .iter()
            .flat_map(|p| &p.series)
            .flat_map(|s| &s.points)
    };
    let x_max = xs().map(|p| p.x).fold(0.0f64, f64::max);
    let x_min = xs().map(|p| p.x).fold(0.0f64, f64::min);
    let x_axis = Axis::linear(x_min, x_max, 6, true, false);

    let mut big = vec![0xFFu8; WIDTH_PX * s * height * s * 3];
    let mut geometry = Vec::new();
    {
        let size = ((WIDTH_PX * s) as u32, (height * s) as u32);
        let root = BitMapBackend::with_buffer(&mut big, size).into_drawing_area();
        let label = font(LABEL_PX)?.color(&TEXT);
        root.draw(&Text::new(
            title,
            ((MARGIN_PX * s) as i32, (MARGIN_PX * s) as i32),
            font(TITLE_PX)?.color(&TEXT),
        ))
        .map_err(drawing_error)?;
        let text_h = text_size("Ag", LABEL_PX)?.1;
        for &LegendEntry { x, y, run: i } in &legend {
            let c = rgb(run_colour(i));
            let (x, y) = (x as i32, y as i32);
            let mid = y + text_h as i32 / 2;
            root.draw(&PathElement::new(
                vec![(x, mid), (x + 20 * s as i32, mid)],
                c.stroke_width((LINE_PX * s as f64).round() as u32),
            ))
            .map_err(drawing_error)?;
            root.draw(&Circle::new(
                (x + 10 * s as i32, mid),
                (MARKER_PX * s as f64).round() as u32,
                c.filled(),
            ))
            .map_err(drawing_error)?;
            root.draw(&Text::new(
                names[i].as_str(),
                (x + 28 * s as i32, y),
                label.clone(),
            ))
            .map_err(drawing_error)?;
        }

        let panel_w = (WIDTH_PX - 3 * MARGIN_PX) / 2;
        for (k, panel) in panels.iter().enumerate() {
            let origin = (
                MARGIN_PX + (k % 2) * (panel_w + MARGIN_PX),
                header + (k / 2) * (PANEL_PX + MARGIN_PX),
            );
            let area = root.clone().shrink(
                ((origin.0 * s) as i32, (origin.1 * s) as i32),
                ((panel_w * s) as i32, (PANEL_PX * s) as i32),
            );
            let g = draw_panel(&area, panel, &x_axis, axis)?;
            geometry.push(g);
        }
        root.present().map_err(drawing_error)?;
    }
    let pixels = shrink(&big, WIDTH_PX * s, s);
    let canvas = Canvas::from_pixels(WIDTH_PX, height, pixels)
        .ok_or_else(|| drawing_error("the picture has the wrong size"))?;
    Ok(Figure {
        canvas,
        panels: geometry,
    })
}

/// An [`Axis`] as a plotters coordinate: linear in `t`, the value (or its log10 on a
/// logarithmic axis), with the axis's ticks as the only grid lines.
struct AxisCoord {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl AxisCoord {
    fn new(axis: &Axis) -> AxisCoord {
        AxisCoord {
            lo: axis.t(axis.lo),
            hi: axis.t(axis.hi),
            ticks: axis.ticks.iter().map(|(v, _)| axis.t(*v)).collect(),
        }
    }
}

impl Ranged for AxisCoord {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, t: &f64, limit: (i32, i32)) -> i32 {
        let f = (t - self.lo) / (self.hi - self.lo);
        limit.0 + (f * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// The y axis of `panel`: logarithmic when asked and there is data, from 0 otherwise.
fn y_axis_of(panel: &Panel) -> Axis {
    let points = || panel.series.iter().flat_map(|s| &s.points);
    let (lo, hi) = points().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
        (a.min(p.y), b.max(p.y))
    });
    if panel.log_y && lo.is_finite() {
        Axis::logarithmic(lo, hi)
    } else if lo.is_finite() {
        Axis::linear(lo, hi, 5, true, true)
    } else {
        Axis::linear(0.0, 1.0, 5, true, true)
    }
}

/// Draws one panel into `area` (a drawing of [`SUPERSAMPLE`] times the written size) and
/// returns where its plot area lies in the written picture.
fn draw_panel(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    panel: &Panel,
    x_axis: &Axis,
    axis: XAxis,
) -> Result<PanelGeometry> {
    let s = SUPERSAMPLE;
    let y_axis = y_axis_of(panel);
    // The label of the tick at chart coordinate `t`.
    let label_of = |a: &Axis, t: f64| {
        a.ticks
            .iter()
            .min_by(|p, q| (a.t(p.0) - t).abs().total_cmp(&(a.t(q.0) - t).abs()))
            .map(|tick| tick.1.clone())
            .unwrap_or_default()
    };
    let mut label_w = 0;
    for (_, l) in &y_axis.ticks {
        label_w = label_w.max(text_size(l, LABEL_PX)?.0);
    }
    let text_h = text_size("Ag", LABEL_PX)?.1;
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, font(CAPTION_PX)?.color(&TEXT))
        .margin_right((16 * s) as u32)
        .x_label_area_size((2 * text_h + 18 * s) as u32)
        .y_label_area_size((label_w + text_h + 22 * s) as u32)
        .build_cartesian_2d(AxisCoord::new(x_axis), AxisCoord::new(&y_axis))
        .map_err(drawing_error)?;
    let x_label = |t: &f64| label_of(x_axis, *t);
    let y_label = |t: &f64| label_of(&y_axis, *t);
    chart
        .configure_mesh()
        .x_label_formatter(&x_label)
        .y_label_formatter(&y_label)
        .x_desc(axis.title())
        .y_desc(panel.y_title)
        .label_style(font(LABEL_PX)?.color(&TEXT))
        .axis_desc_style(font(LABEL_PX)?.color(&MUTED))
        .bold_line_style(GRID.stroke_width(s as u32))
        .axis_style(AXIS.stroke_width(s as u32))
        .set_all_tick_mark_size((5 * s) as u32)
        .draw()
        .map_err(drawing_error)?;

    if panel.series.iter().all(|s| s.points.is_empty()) {
        let centre = (
            (x_axis.lo + x_axis.hi) / 2.0,
            (y_axis.t(y_axis.lo) + y_axis.t(y_axis.hi)) / 2.0,
        );
        let style = font(LABEL_PX)?
            .color(&MUTED)
            .pos(Pos::new(HPos::Center, VPos::Center));
        chart
            .plotting_area()
            .draw(&Text::new("no data", centre, style))
            .map_err(drawing_error)?;
    }
    let line = (LINE_PX * s as f64).round() as u32;
    let marker = (MARKER_PX * s as f64).round() as u32;
    for series in &panel.series {
        let c = rgb(run_colour(series.run));
        let points: Vec<(f64, f64)> = series.points.iter().map(|p| (p.x, y_axis.t(p.y))).collect();
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                c.stroke_width(line),
            ))
            .map_err(drawing_error)?;
        if panel.markers || points.len() == 1 {
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, marker, c.filled())))
                .map_err(drawing_error)?;
        }
    }
    let (xr, yr) = chart.plotting_area().get_pixel_range();
    let written = |v: i32| v.max(0) as usize / s;
    Ok(PanelGeometry {
        left: written(xr.start),
        top: written(yr.start),
        right: written(xr.end - 1),
        bottom: written(yr.end - 1),
        x: x_axis.clone(),
        y: y_axis,
    })
}

// ---------------------------------------------------------------------------------------
// The command
// ---------------------------------------------------------------------------------------

/// Options of [`plot`].
#[derive(Clone, Debug)]
pub struct PlotOptions {
    /// Run directories (or their `metrics.jsonl`).
    pub runs: Vec<PathBuf>,
    /// The PNG to write (default: [`default_out`]); the CSV goes next to it.
    pub out: Option<PathBuf>,
    /// Default: [`XAxis::default_for`] the number of runs.
    pub x: Option<XAxis>,
    /// The training loss on a linear axis instead of a logarithmic one.
    pub linear_loss: bool,
}

impl PlotOptions {
    /// `runs` with every default.
    pub fn new(runs: Vec<PathBuf>) -> PlotOptions {
        PlotOptions {
            runs,
            out: None,
            x: None,
            linear_loss: false,
        }
    }
}

/// What [`plot`] wrote.
#[derive(Clone, Debug)]
pub struct PlotSummary {
    pub png: PathBuf,
    pub csv: PathBuf,
    pub x: XAxis,
    /// Legend names, in run order.
    pub runs: Vec<String>,
    /// Points plotted, all panels together.
    pub points: usize,
    pub warnings: Vec<String>,
}

/// The default PNG: `RUN/curves.png` for one run; for several, `compare-A-B-....png` in
/// the directory holding the first run (`compare-N-runs.png` when the names are long).
pub fn default_out(runs: &[PathBuf]) -> PathBuf {
    let dir_of = |p: &Path| -> PathBuf {
        if p.is_file() {
            p.parent().map(Path::to_path_buf).unwrap_or_default()
        } else {
            p.to_path_buf()
        }
    };
    match runs {
        [one] => dir_of(one).join("curves.png"),
        _ => {
            let dirs: Vec<PathBuf> = runs.iter().map(|p| dir_of(p)).collect();
            let name_of = |d: &Path| {
                std::fs::canonicalize(d)
                    .ok()
                    .and_then(|c| c.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .unwrap_or_else(|| "run".into())
            };
            let safe: Vec<String> = dirs
                .iter()
                .map(|d| {
                    name_of(d)
                        .chars()
                        .map(|c| {
                            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                                c
                            } else {
                                '_'
                            }
                        })
                        .collect()
                })
                .collect();
            let joined = safe.join("-");
            let file = if joined.len() <= 60 {
                format!("compare-{joined}.png")
            } else {
                format!("compare-{}-runs.png", runs.len())
            };
            let parent = std::fs::canonicalize(&dirs[0])
                .ok()
                .and_then(|c| c.parent().map(Path::to_path_buf))
                .unwrap_or_else(|| PathBuf::from("."));
            parent.join(file)
        }
    }
}

/// Reads every run, draws the panels and writes the PNG and the CSV (each atomically;
/// missing directories are created). Nothing is written when a run cannot be read.
pub fn plot(opts: &PlotOptions) -> Result<PlotSummary> {
    if opts.runs.is_empty() {
        return Err(Error::Usage("plot: give at least one run directory".into()));
    }
    let runs = opts
        .runs
        .iter()
        .map(|p| read_run(p))
        .collect::<Result<Vec<_>>>()?;
    let x = opts.x.unwrap_or(XAxis::default_for(runs.len()));
    let png_path = opts.out.clone().unwrap_or_else(|| default_out(&opts.runs));
    let is_png = png_path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if !is_png {
        return Err(Error::Usage(format!(
            "{}: --out must name a .png file (the CSV is written next to it)",
            png_path.display()
        )));
    }
    let csv_path = png_path.with_extension("csv");
    let names = legend_names(&runs, &opts.runs);
    let panels = panels(&runs, x, !opts.linear_loss)?;
    let mut warnings: Vec<String> = runs
        .iter()
        .flat_map(|r| r.metrics.warnings.iter().cloned())
        .collect();
    if !opts.linear_loss && !panels[0].log_y {
        warnings.push("a training loss is not positive: drawn on a linear axis".into());
    }
    let figure = draw(&names, &panels, x)?;
    let bytes = figure
        .canvas
        .to_png()
        .map_err(|e| Error::Other(format!("{}: PNG encoding: {e}", png_path.display())))?;
    if let Some(dir) = png_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    recursa_core::weights::write_atomic(&png_path, &bytes)?;
    recursa_core::weights::write_atomic(&csv_path, csv(&names, &panels, x).as_bytes())?;
    Ok(PlotSummary {
        png: png_path,
        csv: csv_path,
        x,
        runs: names,
        points: panels
            .iter()
            .flat_map(|p| &p.series)
            .map(|s| s.points.len())
            .sum(),
        warnings,
    })
}

/// Draws `RUN/curves.png` (and `.csv`) at the end of training; reports on stderr and never
/// fails the run.
pub fn curves_after_training(run_dir: &Path) {
    match plot(&PlotOptions::new(vec![run_dir.to_path_buf()])) {
        Ok(s) => eprintln!(
            "curves: {} (numbers in {})",
            s.png.display(),
            s.csv.display()
        ),
        Err(e) => eprintln!("warning: no curves drawn: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn train_line(step: usize, loss: f64, exact: f64) -> String {
        format!(
            r#"{{"kind":"train","step":{step},"lr":0.001,"lm_loss":{loss},"q_halt_loss":0.1,"accuracy":0.5,"exact_accuracy":{exact},"q_halt_accuracy":0.9,"steps":2.0,"count":16,"net_calls_per_example":6,"net_calls_with_grad":2,"net_calls_total":{},"examples_per_s":100.0,"tokens_per_s":900.0}}"#,
            step * 16 * 6
        )
    }

    fn eval_line(step: usize, exact: f64, acc: f64) -> String {
        format!(
            r#"{{"kind":"eval","step":{step},"exact_accuracy":{exact},"accuracy":{acc},"examples":64,"seconds":0.5,"net_calls_per_example":24}}"#
        )
    }

    fn run(name: &str, text: &str, batch: Option<usize>) -> Run {
        let path = PathBuf::from(name).join("metrics.jsonl");
        Run {
            name: name.into(),
            dir: PathBuf::from(name),
            metrics: parse_metrics(text, &path).unwrap(),
            metrics_path: path,
            global_batch_size: batch,
        }
    }

    #[test]
    fn parses_train_and_eval_lines_sorted_with_the_last_duplicate_kept() {
        let text = [
            train_line(1, 2.0, 0.0),
            train_line(2, 1.5, 0.1),
            eval_line(2, 0.25, 0.5),
            r#"{"kind":"note","text":"ignored"}"#.to_string(),
            String::new(),
            // Resumed from step 1: step 2 again, then 3.
            train_line(2, 1.4, 0.2),
            train_line(3, 1.0, 0.3),
        ]
        .join("\n")
            + "\n";
        let m = parse_metrics(&text, Path::new("r/metrics.jsonl")).unwrap();
        assert_eq!(
            m.train.iter().map(|r| r.step).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(m.train[1].lm_loss, Some(1.4));
        assert_eq!(m.train[2].net_calls_total, Some(288.0));
        assert_eq!(m.train[2].count, Some(16.0));
        assert_eq!(
            m.eval,
            [EvalRow {
                step: 2,
                exact_accuracy: Some(0.25),
                accuracy: Some(0.5),
                arc_pass_at_2: None,
            }]
        );
        assert!(m.warnings.is_empty());
    }

    #[test]
    fn malformed_lines_are_errors_naming_file_and_line() {
        let path = Path::new("runs/x/metrics.jsonl");
        let cases = [
            (
                format!("{}\nnot json\n", train_line(1, 1.0, 0.0)),
                ":2: not a JSON line",
            ),
            (
                r#"{"kind":"train","step":1}"#.to_string() + "\n",
                ":1: no `lm_loss`",
            ),
            (
                r#"{"kind":"eval","step":"x","exact_accuracy":1}"#.to_string() + "\n",
                ":1: `step` is \"x\"",
            ),
            (
                r#"{"kind":"eval","step":3,"exact_accuracy":"high"}"#.to_string() + "\n",
                ":1: `exact_accuracy` is \"high\", not a number",
            ),
            ("[1,2]\n".to_string(), ":1: not a JSON object"),
            ("{\"step\":1}\n".to_string(), ":1: no `kind`"),
        ];
        for (text, expected) in cases {
            let e = parse_metrics(&text, path).unwrap_err().to_string();
            assert!(e.starts_with("runs/x/metrics.jsonl:"), "{e}");
            assert!(e.contains(expected), "{e} should contain {expected}");
        }
        // An unfinished last line (being written) is skipped with a warning.
        let text = format!("{}\n{{\"kind\":\"tra", train_line(1, 1.0, 0.0));
        let m = parse_metrics(&text, path).unwrap();
        assert_eq!(m.train.len(), 1);
        assert!(m.warnings[0].contains(":2: skipped"), "{:?}", m.warnings);
        // null values are gaps, not errors.
        let text = r#"{"kind":"train","step":1,"lm_loss":1.0,"exact_accuracy":null}"#;
        let m = parse_metrics(&format!("{text}\n"), path).unwrap();
        assert_eq!(m.train[0].exact_accuracy, None);
    }

    #[test]
    fn x_axes_use_forward_passes_and_batch_size() {
        let text = [
            train_line(1, 2.0, 0.0),
            train_line(2, 1.0, 0.5),
            eval_line(2, 0.5, 0.75),
            eval_line(4, 0.75, 0.9),
        ]
        .join("\n");
        let r = run("a", &text, Some(16));
        let by = |axis| panels(std::slice::from_ref(&r), axis, true).unwrap();
        let p = by(XAxis::ForwardPasses);
        assert_eq!(p.len(), 4);
        assert!(p[0].log_y);
        let xs = |panel: &Panel| {
            panel.series[0]
                .points
                .iter()
                .map(|p| p.x)
                .collect::<Vec<_>>()
        };
        assert_eq!(xs(&p[0]), [96.0, 192.0]);
        // Eval at step 2: the train line of step 2; at step 4 (no train line): 96 per step.
        assert_eq!(xs(&p[2]), [192.0, 384.0]);
        assert_eq!(p[3].series[0].points[1].y, 0.9);
        assert_eq!(xs(&by(XAxis::Examples)[2]), [32.0, 64.0]);
        assert_eq!(xs(&by(XAxis::Step)[1]), [1.0, 2.0]);
        // Without config.toml the batch comes from net_calls_total / net_calls_per_example.
        let r = run("a", &text, None);
        let p = panels(&[r], XAxis::Examples, true).unwrap();
        assert_eq!(xs(&p[0]), [16.0, 32.0]);
        // Older metrics without net_calls_total: forward passes are refused, steps work.
        let old = r#"{"kind":"train","step":1,"lm_loss":1.0,"exact_accuracy":0.0}"#;
        let r = run("old", old, None);
        let e = panels(std::slice::from_ref(&r), XAxis::ForwardPasses, true).unwrap_err();
        assert!(e.to_string().contains("--x step"), "{e}");
        assert!(panels(&[r], XAxis::Step, true).is_ok());
    }

    #[test]
    fn steps_where_no_row_halted_have_no_training_accuracy() {
        let text = [
            train_line(1, 2.0, 0.5),
            train_line(2, 1.9, 0.0).replace("\"count\":16", "\"count\":0"),
            train_line(3, 1.8, 0.75),
        ]
        .join("\n");
        let p = panels(&[run("a", &text, None)], XAxis::Step, true).unwrap();
        assert_eq!(p[0].series[0].points.len(), 3);
        let steps: Vec<usize> = p[1].series[0].points.iter().map(|p| p.step).collect();
        assert_eq!(steps, [1, 3]);
    }

    #[test]
    fn ticks_are_round_numbers_with_readable_labels() {
        let a = Axis::linear(0.0, 0.97, 5, true, true);
        assert_eq!((a.lo, a.hi), (0.0, 1.0));
        let labels: Vec<&str> = a.ticks.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(labels, ["0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        let a = Axis::linear(0.0, 1.3e9, 6, true, false);
        assert_eq!(a.hi, 1.3e9);
        assert_eq!(a.ticks[1].1, "250M");
        assert_eq!(a.ticks.last().unwrap().1, "1.25G");
        assert_eq!(tick_label(1500.0, 500.0), "1.5K");
        assert_eq!(tick_label(0.0001, 0.0001), "1e-4");
        let a = Axis::logarithmic(0.02, 3.0);
        let labels: Vec<&str> = a.ticks.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(labels, ["0.02", "0.05", "0.1", "0.2", "0.5", "1", "2"]);
        let a = Axis::logarithmic(1e-6, 10.0);
        assert_eq!(a.ticks.first().unwrap().1, "1e-6");
        assert!(a.ticks.len() <= 8);
        // A narrow range still gets two or more ticks.
        let a = Axis::logarithmic(1.1, 1.3);
        assert!(a.ticks.len() >= 2, "{:?}", a.ticks);
        // All values equal.
        let a = Axis::linear(0.0, 0.0, 5, true, true);
        assert_eq!((a.lo, a.hi), (0.0, 1.0));
    }

    /// How much of `colour` over the white background the pixel `px` is (0 to 1), or `None`
    /// when `px` is no blend of white and `colour` (another colour, grey, text).
    fn tint(px: [u8; 3], colour: [u8; 3]) -> Option<f64> {
        let share = |p: u8, c: u8| (255.0 - f64::from(p)) / (255.0 - f64::from(c)).max(1.0);
        let darkest = (0..3).max_by_key(|&i| 255 - colour[i])?;
        let a = share(px[darkest], colour[darkest]);
        // Every channel within 4 levels of white blended with `colour` by `a`.
        (0..3)
            .all(|i| {
                let expected = 255.0 - a * (255.0 - f64::from(colour[i]));
                (f64::from(px[i]) - expected).abs() <= 4.0
            })
            .then_some(a)
    }

    #[test]
    fn the_picture_has_each_run_colour_where_its_points_are() {
        // Run a: loss falls, exact accuracy rises; run b: flat loss, no evaluations.
        let a: Vec<String> = (1..=20)
            .map(|s| train_line(s, 2.0 / s as f64, s as f64 / 20.0))
            .chain([eval_line(10, 0.5, 0.8), eval_line(20, 1.0, 1.0)])
            .collect();
        let b: Vec<String> = (1..=10).map(|s| train_line(s, 1.0, 0.0)).collect();
        let runs = [
            run("a", &a.join("\n"), Some(16)),
            run("b", &b.join("\n"), Some(16)),
        ];
        let names = vec!["a".to_string(), "b".to_string()];
        let p = panels(&runs, XAxis::Step, true).unwrap();
        assert_eq!(p.len(), 4, "no ARC panel without ARC/pass@2");
        let fig = draw(&names, &p, XAxis::Step).unwrap();
        assert_eq!(fig.canvas.width(), WIDTH_PX);
        assert_eq!(fig.panels.len(), 4);
        // The strongest tint of run `run`'s colour within two pixels of the point.
        let strongest = |panel: usize, x: f64, y: f64, run: usize| {
            let (px, py) = fig.panels[panel].to_px(x, y);
            let (px, py) = (px.round() as i64, py.round() as i64);
            (-2..=2)
                .flat_map(|dy| (-2..=2).map(move |dx| (px + dx, py + dy)))
                .filter_map(|(x, y)| fig.canvas.get(x as usize, y as usize))
                .filter_map(|c| tint(c, run_colour(run)))
                .fold(0.0f64, f64::max)
        };
        let on = |panel, x, y, run| {
            let t = strongest(panel, x, y, run);
            assert!(t > 0.6, "panel {panel} ({x}, {y}): run {run} tint {t}");
        };
        // The panels share the x axis: steps 0..20.
        assert_eq!(fig.panels[0].x, fig.panels[3].x);
        assert_eq!(fig.panels[0].x.hi, 20.0);
        // Loss of a at step 1 (2.0) and step 20 (0.1), of b at step 10 (1.0).
        on(0, 1.0, 2.0, 0);
        on(0, 20.0, 0.1, 0);
        on(0, 10.0, 1.0, 1);
        // Halfway between two points of a line: on the line.
        on(0, 5.5, 1.0, 1);
        on(1, 15.5, 15.5 / 20.0, 0);
        // Evaluation markers; nothing of b in the eval panels.
        on(2, 10.0, 0.5, 0);
        on(3, 20.0, 1.0, 0);
        // Far from any line of a: none of its colour.
        assert!(strongest(1, 15.0, 0.2, 0) < 0.05);
        let pixels_of = |panel: usize, run: usize| {
            let g = &fig.panels[panel];
            (g.top..=g.bottom)
                .flat_map(|y| (g.left..=g.right).map(move |x| (x, y)))
                .filter_map(|(x, y)| fig.canvas.get(x, y))
                .filter(|&c| tint(c, run_colour(run)).is_some_and(|t| t > 0.5))
                .count()
        };
        assert_eq!(pixels_of(2, 1), 0);
        assert!(pixels_of(0, 1) > 100);
        // Lines are anti-aliased: along b's flat line there are partial tints too.
        let g = &fig.panels[0];
        let partial = (g.top..=g.bottom)
            .flat_map(|y| (g.left..=g.right).map(move |x| (x, y)))
            .filter_map(|(x, y)| fig.canvas.get(x, y))
            .filter(|&c| tint(c, run_colour(0)).is_some_and(|t| t > 0.1 && t < 0.9))
            .count();
        assert!(partial > 20, "{partial} partly covered pixels of a's line");
        // The title is text in a real font: dark pixels and anti-aliased grey ones.
        let title_row: Vec<[u8; 3]> = (MARGIN_PX..MARGIN_PX + 20)
            .flat_map(|y| (MARGIN_PX..WIDTH_PX / 2).map(move |x| (x, y)))
            .filter_map(|(x, y)| fig.canvas.get(x, y))
            .collect();
        assert!(title_row.iter().any(|c| c[0] < 0x50));
        assert!(title_row.iter().any(|c| c[0] > 0x90 && c[0] < 0xE0));
        // The PNG decodes to the canvas.
        let bytes = fig.canvas.to_png().unwrap();
        let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(
            (info.width as usize, info.height as usize),
            (fig.canvas.width(), fig.canvas.height())
        );
        assert_eq!(&buf[..info.buffer_size()], fig.canvas.pixels());
    }

    #[test]
    fn arc_runs_get_a_pass_at_2_panel() {
        let arc = |step: usize, p2: f64| {
            eval_line(step, 0.1, 0.5).replace(
                "\"seconds\"",
                &format!(
                    "\"ARC/pass@1\":{},\"ARC/pass@2\":{p2},\"seconds\"",
                    p2 / 2.0
                ),
            )
        };
        let text = [
            train_line(1, 2.0, 0.0),
            arc(1, 0.125),
            train_line(2, 1.0, 0.0),
            arc(2, 0.25),
        ]
        .join("\n");
        let runs = [
            run("arc", &text, None),
            run("plain", &train_line(1, 1.0, 0.0), None),
        ];
        let p = panels(&runs, XAxis::Step, true).unwrap();
        assert_eq!(p.len(), 5);
        let ys: Vec<f64> = p[4].series[0].points.iter().map(|p| p.y).collect();
        assert_eq!(ys, [0.125, 0.25]);
        assert!(p[4].series[1].points.is_empty());
        let names = vec!["arc".to_string(), "plain".to_string()];
        assert!(csv(&names, &p, XAxis::Step).contains("arc,eval_arc_pass@2,2,2,0.25\n"));
        let fig = draw(&names, &p, XAxis::Step).unwrap();
        assert_eq!(fig.panels.len(), 5);
        // Three rows of panels; the fifth's points are drawn.
        assert!(fig.canvas.height() > 3 * PANEL_PX);
        let (x, y) = fig.panels[4].to_px(2.0, 0.25);
        let near = (-2i64..=2)
            .flat_map(|dy| {
                (-2i64..=2).map(move |dx| (x.round() as i64 + dx, y.round() as i64 + dy))
            })
            .filter_map(|(x, y)| fig.canvas.get(x as usize, y as usize))
            .filter_map(|c| tint(c, run_colour(0)))
            .fold(0.0f64, f64::max);
        assert!(near > 0.6, "{near}");
    }

    #[test]
    fn csv_lists_every_point_of_every_run() {
        let runs = [
            run(
                "a",
                &[train_line(1, 2.0, 0.0), eval_line(1, 0.5, 0.7)].join("\n"),
                None,
            ),
            run("b,c", &train_line(1, 3.0, 0.1), None),
        ];
        let names = vec!["a".to_string(), "b,c".to_string()];
        let p = panels(&runs, XAxis::ForwardPasses, true).unwrap();
        let text = csv(&names, &p, XAxis::ForwardPasses);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "run,panel,step,forward_passes,value");
        assert!(lines.contains(&"a,train_lm_loss,1,96,2"));
        assert!(lines.contains(&"a,eval_accuracy,1,96,0.7"));
        assert!(lines.contains(&"\"b,c\",train_exact_accuracy,1,96,0.1"));
        assert_eq!(lines.len(), 1 + 4 + 2);
    }
}
