//! Pictures of ARC tasks: one PNG per task and one self-contained HTML page for a set of tasks,
//! optionally with predictions (a `submission.json` or the vote tables of an
//! [`ArcEvalResult`]).
//!
//! * [`render_task_png`] draws one task: a title, one row per demonstration pair
//!   (input | output), then one row per test input (input | solution | candidates in ranked
//!   order). Candidates are framed green (correct), red (incorrect) or grey (unknown).
//! * [`render_html`] writes one HTML page (inline CSS, grids as HTML tables, no scripts, no
//!   external resources) with the same content plus, per test input, a table of the candidates
//!   with their vote counts and mean q.
//! * [`render_arc`] is the command-line entry point: it reads raw ARC data, selects tasks,
//!   reads optional predictions and writes `index.html` plus `<task>.png` into a directory.
//!
//! Every grid is checked before anything is drawn: an empty or ragged grid, one larger than
//! 30x30 or one with a colour outside 0-9 is a [`DataError::InvalidGrid`] naming the task and
//! the place (`train[1].output`, `test[0].candidate[2]`, ...). Files are written atomically
//! (a hidden temporary sibling, then a rename).
//!
//! The PNG geometry is fixed (see the `*_PX` constants) and exposed by [`task_png_layout`], so
//! the pixel of any cell can be computed.

use crate::arc::{parse_arc_subset, parse_test_puzzles, ArcTask, ExampleKind};
use crate::arc_eval::{ArcEvalResult, RankedAnswer};
use crate::canvas::{text_width, Canvas};
use crate::error::DataError;
use crate::grid::{Grid, ARC_MAX_GRID_SIZE};
use crate::json::Ordered;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------------
// Palette and geometry
// ---------------------------------------------------------------------------------------

/// The standard ARC colours 0-9 as RGB: black, blue, red, green, yellow, grey, magenta,
/// orange, light blue, maroon.
pub const ARC_PALETTE: [[u8; 3]; 10] = [
    [0x00, 0x00, 0x00],
    [0x00, 0x74, 0xD9],
    [0xFF, 0x41, 0x36],
    [0x2E, 0xCC, 0x40],
    [0xFF, 0xDC, 0x00],
    [0xAA, 0xAA, 0xAA],
    [0xF0, 0x12, 0xBE],
    [0xFF, 0x85, 0x1B],
    [0x7F, 0xDB, 0xFF],
    [0x87, 0x0C, 0x25],
];

/// Side of one cell in the PNG, in pixels.
pub const CELL_PX: usize = 12;
/// Width of the grid lines between (and around) cells, in pixels.
pub const LINE_PX: usize = 1;
/// Width of the frame around every grid slot (coloured for candidates only), in pixels.
pub const FRAME_PX: usize = 3;
/// Margin around the picture, in pixels.
pub const MARGIN_PX: usize = 10;
/// Horizontal gap between grid slots of a row, in pixels (twice this before candidates).
pub const GAP_PX: usize = 16;
/// Vertical gap between rows (pairs), in pixels; a separator line is drawn in its middle.
pub const ROW_GAP_PX: usize = 16;
/// Scale of the built-in 3x5 pixel font.
pub const TEXT_SCALE: usize = 2;
/// Height of a text line (5 font pixels).
pub const TEXT_PX: usize = 5 * TEXT_SCALE;
/// Height reserved for the label above each grid slot (text plus spacing).
pub const LABEL_PX: usize = TEXT_PX + 4;
/// Height reserved for the title line.
pub const TITLE_PX: usize = TEXT_PX + 10;
/// Largest picture side accepted (a wider picture needs a smaller `top_k`).
pub const MAX_PICTURE_PX: usize = 16_384;

const BACKGROUND: [u8; 3] = [0xFF, 0xFF, 0xFF];
const GRID_LINE: [u8; 3] = [0x55, 0x55, 0x55];
const TEXT: [u8; 3] = [0x22, 0x22, 0x22];
const SEPARATOR: [u8; 3] = [0xDD, 0xDD, 0xDD];
const SECTION_SEPARATOR: [u8; 3] = [0x88, 0x88, 0x88];
/// Frame of a correct candidate.
pub const FRAME_CORRECT: [u8; 3] = [0x18, 0xA0, 0x18];
/// Frame of an incorrect candidate.
pub const FRAME_INCORRECT: [u8; 3] = [0xD8, 0x1E, 0x1E];
/// Frame of a candidate whose correctness is unknown (no solution).
pub const FRAME_UNKNOWN: [u8; 3] = [0x99, 0x99, 0x99];

// ---------------------------------------------------------------------------------------
// What to draw
// ---------------------------------------------------------------------------------------

/// One candidate answer for one test input (a submission attempt or a voted answer).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Candidate {
    /// Short name, e.g. `#1` (rank) or `attempt_1`.
    pub label: String,
    /// The grid as nested rows; checked when rendering.
    pub grid: Vec<Vec<i64>>,
    /// Number of votes, if known.
    pub votes: Option<usize>,
    /// Mean `sigmoid(q_halt)` of the votes, if known.
    pub mean_q: Option<f64>,
    /// Whether it equals the solution; `None`: unknown (filled in from the task's solution by
    /// [`TaskRender::with_candidates`] when the solution is known).
    pub correct: Option<bool>,
}

impl Candidate {
    /// A candidate from one row of an evaluator vote table (`rank` counts from 1).
    pub fn from_ranked(rank: usize, answer: &RankedAnswer) -> Candidate {
        Candidate {
            label: format!("#{rank}"),
            grid: nested_u8_to_i64(&answer.grid),
            votes: Some(answer.votes),
            mean_q: Some(answer.mean_q),
            correct: Some(answer.is_correct),
        }
    }
}

/// One task to draw, with what is known about its test outputs and optional candidates.
#[derive(Clone, Debug)]
pub struct TaskRender<'a> {
    /// The task (demonstration pairs and test pairs).
    pub task: &'a ArcTask,
    /// Whether the test outputs of `task` are real solutions. `false` when they are unknown
    /// (e.g. the `[[0]]` placeholders of a challenges file without solutions): they are not
    /// drawn and candidates are not scored.
    pub test_outputs_known: bool,
    /// Per test input (in task order), the candidates, best first. Shorter than the number of
    /// test inputs (or empty) when some have none.
    pub predictions: Vec<Vec<Candidate>>,
}

impl<'a> TaskRender<'a> {
    /// The task alone, with its test outputs taken as solutions.
    pub fn new(task: &'a ArcTask) -> TaskRender<'a> {
        TaskRender {
            task,
            test_outputs_known: true,
            predictions: Vec::new(),
        }
    }

    /// Marks the test outputs as unknown (not drawn, candidates not scored).
    pub fn without_solutions(mut self) -> TaskRender<'a> {
        self.test_outputs_known = false;
        self
    }

    /// Adds candidates per test input. Candidates whose `correct` is `None` are scored
    /// against the solution when it is known.
    pub fn with_candidates(mut self, per_test: Vec<Vec<Candidate>>) -> TaskRender<'a> {
        let solutions: Vec<Vec<Vec<i64>>> = self
            .task
            .examples(ExampleKind::Test)
            .map(|e| nested_u8_to_i64(&e.output.to_nested()))
            .collect();
        self.predictions = per_test
            .into_iter()
            .enumerate()
            .map(|(i, cands)| {
                cands
                    .into_iter()
                    .map(|mut c| {
                        if c.correct.is_none() && self.test_outputs_known {
                            c.correct = solutions.get(i).map(|s| *s == c.grid);
                        }
                        c
                    })
                    .collect()
            })
            .collect();
        self
    }

    /// Adds the first `top_k` rows of the evaluator's vote tables (one table per test input,
    /// as in [`ArcEvalResult::rankings`]).
    pub fn with_rankings(self, tables: &[Vec<RankedAnswer>], top_k: usize) -> TaskRender<'a> {
        self.with_candidates(candidates_from_tables(tables, top_k))
    }
}

/// The first `top_k` candidates of each vote table, in rank order.
pub fn candidates_from_tables(tables: &[Vec<RankedAnswer>], top_k: usize) -> Vec<Vec<Candidate>> {
    tables
        .iter()
        .map(|t| {
            t.iter()
                .take(top_k)
                .enumerate()
                .map(|(i, a)| Candidate::from_ranked(i + 1, a))
                .collect()
        })
        .collect()
}

/// Per task of an evaluation result, the first `top_k` candidates of each test input.
pub fn predictions_from_eval(
    result: &ArcEvalResult,
    top_k: usize,
) -> HashMap<String, Vec<Vec<Candidate>>> {
    result
        .rankings
        .iter()
        .map(|(name, tables)| (name.clone(), candidates_from_tables(tables, top_k)))
        .collect()
}

fn nested_u8_to_i64(g: &[Vec<u8>]) -> Vec<Vec<i64>> {
    g.iter()
        .map(|r| r.iter().map(|&v| i64::from(v)).collect())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Reading predictions
// ---------------------------------------------------------------------------------------

/// Reads a submission (`{task: [{"attempt_1": grid, "attempt_2": grid}, ...]}`, the format
/// of [`ArcEvalResult::write_submission`] and of Kaggle) into candidates per task and test
/// input, attempts in file order. A `null` attempt is skipped; any other grid must be valid.
pub fn parse_submission(
    bytes: &[u8],
    path: &Path,
) -> Result<HashMap<String, Vec<Vec<Candidate>>>, DataError> {
    type Raw = Ordered<Vec<Ordered<Option<Vec<Vec<i64>>>>>>;
    let raw: Raw = serde_json::from_slice(bytes).map_err(|e| DataError::json(path, e))?;
    let mut out = HashMap::new();
    for (task, inputs) in raw.0 {
        let mut per_test = Vec::with_capacity(inputs.len());
        for (i, attempts) in inputs.into_iter().enumerate() {
            let mut cands = Vec::new();
            for (key, grid) in attempts.0 {
                let Some(grid) = grid else { continue };
                Grid::from_nested(&grid).map_err(|message| DataError::InvalidGrid {
                    path: path.to_path_buf(),
                    task: task.clone(),
                    field: format!("[{i}].{key}"),
                    message,
                })?;
                cands.push(Candidate {
                    label: key,
                    grid,
                    votes: None,
                    mean_q: None,
                    correct: None,
                });
            }
            per_test.push(cands);
        }
        out.insert(task, per_test);
    }
    Ok(out)
}

#[derive(Deserialize)]
struct RawRanked {
    votes: usize,
    /// `null` when the mean was NaN (serde_json writes NaN as null).
    mean_q: Option<f64>,
    grid: Vec<Vec<i64>>,
    is_correct: bool,
}

#[derive(Deserialize)]
struct RawEvalResult {
    rankings: Vec<(String, Vec<Vec<RawRanked>>)>,
}

/// Reads the vote tables from an [`ArcEvalResult`] serialised as JSON (`serde_json` of the
/// struct; only its `rankings` field is used), keeping the first `top_k` per test input.
pub fn parse_eval_result(
    bytes: &[u8],
    path: &Path,
    top_k: usize,
) -> Result<HashMap<String, Vec<Vec<Candidate>>>, DataError> {
    let raw: RawEvalResult = serde_json::from_slice(bytes).map_err(|e| DataError::json(path, e))?;
    let mut out = HashMap::new();
    for (task, tables) in raw.rankings {
        let mut per_test = Vec::with_capacity(tables.len());
        for (i, table) in tables.into_iter().enumerate() {
            let mut cands = Vec::new();
            for (r, a) in table.into_iter().take(top_k).enumerate() {
                candidate_grid(&a.grid).map_err(|message| DataError::InvalidGrid {
                    path: path.to_path_buf(),
                    task: task.clone(),
                    field: format!("rankings[{i}][{r}].grid"),
                    message,
                })?;
                cands.push(Candidate {
                    label: format!("#{}", r + 1),
                    grid: a.grid,
                    votes: Some(a.votes),
                    mean_q: Some(a.mean_q.unwrap_or(f64::NAN)),
                    correct: Some(a.is_correct),
                });
            }
            per_test.push(cands);
        }
        out.insert(task, per_test);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------

/// A test input with its checked grids.
struct CheckedTest<'c> {
    input: Grid,
    /// `None` when the solution is unknown.
    output: Option<Grid>,
    candidates: Vec<(Grid, &'c Candidate)>,
}

/// A task whose grids have all been checked.
struct Checked<'c> {
    name: &'c str,
    train: Vec<(Grid, Grid)>,
    tests: Vec<CheckedTest<'c>>,
}

/// A predicted grid: an ARC grid, or empty (an untrained model may predict no
/// cell at all; the evaluator crops that to 0x0, and it is drawn as an empty frame).
fn candidate_grid(rows: &[Vec<i64>]) -> Result<Grid, String> {
    if rows.iter().all(|r| r.is_empty()) {
        return Ok(Grid::new(0, 0, Vec::new()).expect("0 x 0 holds no cells"));
    }
    Grid::from_nested(rows)
}

/// The ARC rules for a grid already in [`Grid`] form (which is rectangular by construction).
fn check_grid(g: &Grid) -> Result<(), String> {
    let (r, c) = (g.rows(), g.cols());
    if r == 0 || c == 0 {
        return Err(format!("empty grid ({r}x{c})"));
    }
    if r > ARC_MAX_GRID_SIZE || c > ARC_MAX_GRID_SIZE {
        return Err(format!(
            "grid is {r}x{c}, larger than {ARC_MAX_GRID_SIZE}x{ARC_MAX_GRID_SIZE}"
        ));
    }
    if let Some(i) = g.data().iter().position(|&v| v > 9) {
        return Err(format!(
            "colour {} at row {}, column {} is outside 0-9",
            g.data()[i],
            i / c,
            i % c
        ));
    }
    Ok(())
}

/// Checks every grid of `view`; errors name `path` (the file being written), the task and
/// the place of the grid.
fn check_view<'c>(view: &'c TaskRender, path: &Path) -> Result<Checked<'c>, DataError> {
    let name = view.task.name.as_str();
    let err = |field: String, message: String| DataError::InvalidGrid {
        path: path.to_path_buf(),
        task: name.to_string(),
        field,
        message,
    };
    let checked = |g: &Grid, field: String| -> Result<Grid, DataError> {
        check_grid(g).map_err(|m| err(field, m))?;
        Ok(g.clone())
    };
    let mut train = Vec::new();
    for (i, e) in view.task.examples(ExampleKind::Train).enumerate() {
        train.push((
            checked(&e.input, format!("train[{i}].input"))?,
            checked(&e.output, format!("train[{i}].output"))?,
        ));
    }
    let mut tests = Vec::new();
    for (i, e) in view.task.examples(ExampleKind::Test).enumerate() {
        let input = checked(&e.input, format!("test[{i}].input"))?;
        let output = if view.test_outputs_known {
            Some(checked(&e.output, format!("test[{i}].output"))?)
        } else {
            None
        };
        let mut candidates = Vec::new();
        for (k, c) in view.predictions.get(i).into_iter().flatten().enumerate() {
            let g = candidate_grid(&c.grid)
                .map_err(|m| err(format!("test[{i}].candidate[{k}] ({})", c.label), m))?;
            candidates.push((g, c));
        }
        tests.push(CheckedTest {
            input,
            output,
            candidates,
        });
    }
    if view.predictions.len() > tests.len() {
        return Err(DataError::InvalidTask {
            path: path.to_path_buf(),
            task: name.to_string(),
            message: format!(
                "predictions for {} test inputs, the task has {}",
                view.predictions.len(),
                tests.len()
            ),
        });
    }
    Ok(Checked { name, train, tests })
}

// ---------------------------------------------------------------------------------------
// PNG layout
// ---------------------------------------------------------------------------------------

/// What a grid in the picture shows. Indices count from 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GridRole {
    TrainInput(usize),
    TrainOutput(usize),
    TestInput(usize),
    /// The solution of a test input.
    TestOutput(usize),
    /// Candidate `rank` (0 = best) for test input `test`.
    Candidate {
        test: usize,
        rank: usize,
    },
}

/// Where one grid lies in the picture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlacedGrid {
    pub role: GridRole,
    /// Left edge of the grid (its outer grid line), in pixels.
    pub x: usize,
    /// Top edge of the grid (its outer grid line), in pixels.
    pub y: usize,
    pub rows: usize,
    pub cols: usize,
}

impl PlacedGrid {
    /// Top-left pixel of cell (`r`, `c`); the cell covers `CELL_PX` x `CELL_PX` pixels.
    pub fn cell_origin(&self, r: usize, c: usize) -> (usize, usize) {
        (
            self.x + LINE_PX + c * (CELL_PX + LINE_PX),
            self.y + LINE_PX + r * (CELL_PX + LINE_PX),
        )
    }

    /// Width in pixels, outer grid lines included.
    pub fn width_px(&self) -> usize {
        grid_px(self.cols)
    }

    /// Height in pixels, outer grid lines included.
    pub fn height_px(&self) -> usize {
        grid_px(self.rows)
    }
}

/// The geometry of a task picture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PngLayout {
    pub width: usize,
    pub height: usize,
    /// Every grid drawn, in drawing order (train pairs, then per test input: input, solution,
    /// candidates).
    pub grids: Vec<PlacedGrid>,
}

/// Side in pixels of a grid of `n` cells, outer lines included.
fn grid_px(n: usize) -> usize {
    n * (CELL_PX + LINE_PX) + LINE_PX
}

/// Width in pixels of `s` in the built-in font.
fn text_px(s: &str) -> usize {
    text_width(s, TEXT_SCALE)
}

/// A text to draw at (x, y).
struct Label {
    x: usize,
    y: usize,
    text: String,
}

/// A rectangle outline (x, y, w, h, thickness, colour).
type FrameRect = (usize, usize, usize, usize, usize, [u8; 3]);

/// Everything to paint.
struct Plan<'c> {
    layout: PngLayout,
    /// The grid of each entry of `layout.grids`.
    cells: Vec<&'c Grid>,
    labels: Vec<Label>,
    frames: Vec<FrameRect>,
    /// Horizontal separators (y, colour).
    separators: Vec<(usize, [u8; 3])>,
}

/// The label drawn above a candidate in the PNG (upper case in the built-in font).
fn candidate_caption(c: &Candidate) -> String {
    let mut s = c.label.clone();
    if let Some(v) = c.votes {
        let _ = write!(s, " {v}v");
    }
    if let Some(q) = c.mean_q {
        let _ = write!(s, " q{q:.2}");
    }
    s
}

fn frame_colour(correct: Option<bool>) -> [u8; 3] {
    match correct {
        Some(true) => FRAME_CORRECT,
        Some(false) => FRAME_INCORRECT,
        None => FRAME_UNKNOWN,
    }
}

fn plan<'c>(t: &'c Checked<'c>) -> Plan<'c> {
    let mut p = Plan {
        layout: PngLayout {
            width: 0,
            height: 0,
            grids: Vec::new(),
        },
        cells: Vec::new(),
        labels: vec![Label {
            x: MARGIN_PX,
            y: MARGIN_PX,
            text: format!(
                "{}  {} train  {} test",
                t.name,
                t.train.len(),
                t.tests.len()
            ),
        }],
        frames: Vec::new(),
        separators: Vec::new(),
    };
    let mut max_x = MARGIN_PX + text_px(&p.labels[0].text);
    let mut y = MARGIN_PX + TITLE_PX;

    /// One slot of a row: role, grid, caption, optional frame colour, extra gap before it.
    type Slot<'g> = (GridRole, &'g Grid, String, Option<[u8; 3]>, usize);
    let mut rows: Vec<(Vec<Slot>, bool)> = Vec::new();
    for (i, (a, b)) in t.train.iter().enumerate() {
        rows.push((
            vec![
                (
                    GridRole::TrainInput(i),
                    a,
                    format!("train {} in", i + 1),
                    None,
                    0,
                ),
                (
                    GridRole::TrainOutput(i),
                    b,
                    format!("train {} out", i + 1),
                    None,
                    0,
                ),
            ],
            false,
        ));
    }
    for (i, test) in t.tests.iter().enumerate() {
        let mut slots = vec![(
            GridRole::TestInput(i),
            &test.input,
            format!("test {} in", i + 1),
            None,
            0,
        )];
        if let Some(o) = &test.output {
            slots.push((
                GridRole::TestOutput(i),
                o,
                format!("test {} out", i + 1),
                None,
                0,
            ));
        }
        for (k, (g, c)) in test.candidates.iter().enumerate() {
            let extra = if k == 0 { GAP_PX } else { 0 };
            slots.push((
                GridRole::Candidate { test: i, rank: k },
                g,
                candidate_caption(c),
                Some(frame_colour(c.correct)),
                extra,
            ));
        }
        // The first test row starts a new section.
        rows.push((slots, i == 0));
    }

    for (ri, (slots, new_section)) in rows.iter().enumerate() {
        if ri > 0 {
            let colour = if *new_section {
                SECTION_SEPARATOR
            } else {
                SEPARATOR
            };
            p.separators.push((y + ROW_GAP_PX / 2, colour));
            y += ROW_GAP_PX;
        }
        let mut x = MARGIN_PX;
        let mut row_h = 0;
        for (si, (role, g, caption, frame, extra)) in slots.iter().enumerate() {
            if si > 0 {
                x += GAP_PX + extra;
            }
            let (gw, gh) = (grid_px(g.cols()), grid_px(g.rows()));
            let slot_w = (gw + 2 * FRAME_PX).max(text_px(caption));
            p.labels.push(Label {
                x,
                y,
                text: caption.clone(),
            });
            let (fx, fy) = (x, y + LABEL_PX);
            if let Some(colour) = frame {
                p.frames.push((
                    fx,
                    fy,
                    gw + 2 * FRAME_PX,
                    gh + 2 * FRAME_PX,
                    FRAME_PX,
                    *colour,
                ));
            }
            p.layout.grids.push(PlacedGrid {
                role: *role,
                x: fx + FRAME_PX,
                y: fy + FRAME_PX,
                rows: g.rows(),
                cols: g.cols(),
            });
            p.cells.push(g);
            row_h = row_h.max(LABEL_PX + gh + 2 * FRAME_PX);
            x += slot_w;
        }
        max_x = max_x.max(x);
        y += row_h;
    }
    p.layout.width = max_x + MARGIN_PX;
    p.layout.height = y + MARGIN_PX;
    p
}

/// The geometry of the picture [`render_task_png`] draws for `view` (after checking its
/// grids; errors name the task).
pub fn task_png_layout(view: &TaskRender) -> Result<PngLayout, DataError> {
    let checked = check_view(view, Path::new("<layout>"))?;
    Ok(plan(&checked).layout)
}

// ---------------------------------------------------------------------------------------
// Painting
// ---------------------------------------------------------------------------------------

/// Paints one grid: the grid lines, then every cell in its ARC colour.
fn paint_grid(canvas: &mut Canvas, at: &PlacedGrid, g: &Grid) {
    canvas.fill(at.x, at.y, at.width_px(), at.height_px(), GRID_LINE);
    for r in 0..g.rows() {
        for c in 0..g.cols() {
            let (x, y) = at.cell_origin(r, c);
            // Checked before painting: every colour is in 0..=9.
            canvas.fill(x, y, CELL_PX, CELL_PX, ARC_PALETTE[g.get(r, c) as usize]);
        }
    }
}

/// Encodes the picture of `view` as PNG bytes; `path` is only used in messages.
fn task_png_bytes(view: &TaskRender, path: &Path) -> Result<Vec<u8>, DataError> {
    let checked = check_view(view, path)?;
    let p = plan(&checked);
    let (w, h) = (p.layout.width, p.layout.height);
    if w > MAX_PICTURE_PX || h > MAX_PICTURE_PX {
        return Err(DataError::InvalidTask {
            path: path.to_path_buf(),
            task: view.task.name.clone(),
            message: format!(
                "picture would be {w}x{h} pixels, more than {MAX_PICTURE_PX} on a side; draw fewer candidates"
            ),
        });
    }
    let mut canvas = Canvas::new(w, h, BACKGROUND);
    for &(sy, colour) in &p.separators {
        canvas.fill(MARGIN_PX, sy, w - 2 * MARGIN_PX, 1, colour);
    }
    for &(x, y, fw, fh, t, colour) in &p.frames {
        canvas.outline(x, y, fw, fh, t, colour);
    }
    for (at, g) in p.layout.grids.iter().zip(&p.cells) {
        paint_grid(&mut canvas, at, g);
    }
    for l in &p.labels {
        canvas.text(l.x, l.y, &l.text, TEXT_SCALE, TEXT);
    }
    canvas
        .to_png()
        .map_err(|e| DataError::io(path, std::io::Error::other(format!("PNG encoding: {e}"))))
}

/// Draws one task into a PNG at `path` (written atomically): a title line, one row per
/// demonstration pair (input | output), then one row per test input (input | solution if
/// known | candidates in ranked order, framed green / red / grey for correct / incorrect /
/// unknown). Invalid grids are an error naming the task; nothing is written then.
pub fn render_task_png(view: &TaskRender, path: &Path) -> Result<(), DataError> {
    let bytes = task_png_bytes(view, path)?;
    write_atomic(path, &bytes)
}

// ---------------------------------------------------------------------------------------
// HTML
// ---------------------------------------------------------------------------------------

/// Escapes text for HTML content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
    out
}

/// An anchor id for a task name (letters, digits, `-` and `_` kept, the rest `_`).
fn anchor(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("task-{safe}")
}

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:16px;color:#222;background:#fff}\
h2{margin:28px 0 4px;border-top:2px solid #888;padding-top:8px}h3{margin:10px 0 4px;font-size:14px;color:#555}\
.row{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start;margin:6px 0 14px;padding-bottom:10px;border-bottom:1px solid #ddd}\
figure{margin:0}figcaption{font-size:12px;color:#444;margin-bottom:2px}\
.arrow{align-self:center;font-size:20px;color:#888}\
table.grid{border-collapse:collapse;border:1px solid #555;background:#555}\
table.grid td{width:12px;height:12px;padding:0;border:1px solid #555}\
.ok table.grid{outline:3px solid #18a018}.bad table.grid{outline:3px solid #d81e1e}.unk table.grid{outline:3px solid #999}\
table.votes{border-collapse:collapse;font-size:13px;margin:4px 0 16px}\
table.votes th,table.votes td.t{border:1px solid #ccc;padding:3px 8px;text-align:right;vertical-align:top}\
table.votes td.g{border:1px solid #ccc;padding:4px}\
.yes{color:#18a018;font-weight:bold}.no{color:#d81e1e}.none{color:#888}nav a{margin-right:10px}";

/// Appends one grid as an HTML table with a caption.
fn html_grid(out: &mut String, g: &Grid, caption: &str, class: &str) {
    let _ = write!(
        out,
        "<figure class=\"{class}\"><figcaption>{} ({}x{})</figcaption><table class=\"grid\">",
        esc(caption),
        g.rows(),
        g.cols()
    );
    for r in 0..g.rows() {
        out.push_str("<tr>");
        for c in 0..g.cols() {
            // `</td>` is optional in HTML5; leaving it out keeps large pages a third smaller.
            let _ = write!(out, "<td class=c{}>", g.get(r, c));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table></figure>");
}

fn correctness_class(correct: Option<bool>) -> &'static str {
    match correct {
        Some(true) => "ok",
        Some(false) => "bad",
        None => "unk",
    }
}

fn html_task(out: &mut String, t: &Checked) {
    let _ = write!(
        out,
        "<section id=\"{}\"><h2>{}</h2><p>{} demonstration pair(s), {} test input(s)</p><h3>Demonstrations</h3>",
        anchor(t.name),
        esc(t.name),
        t.train.len(),
        t.tests.len()
    );
    for (i, (a, b)) in t.train.iter().enumerate() {
        out.push_str("<div class=\"row\">");
        html_grid(out, a, &format!("train {} input", i + 1), "");
        out.push_str("<div class=\"arrow\">&rarr;</div>");
        html_grid(out, b, &format!("train {} output", i + 1), "");
        out.push_str("</div>");
    }
    out.push_str("<h3>Test</h3>");
    for (i, test) in t.tests.iter().enumerate() {
        out.push_str("<div class=\"row\">");
        html_grid(out, &test.input, &format!("test {} input", i + 1), "");
        if let Some(o) = &test.output {
            out.push_str("<div class=\"arrow\">&rarr;</div>");
            html_grid(out, o, &format!("test {} solution", i + 1), "");
        }
        out.push_str("</div>");
        if test.candidates.is_empty() {
            continue;
        }
        let _ = write!(
            out,
            "<table class=\"votes\"><caption>test {} candidates</caption><tr><th>rank</th><th>name</th><th>votes</th><th>mean q</th><th>correct</th><th>answer</th></tr>",
            i + 1
        );
        for (k, (g, c)) in test.candidates.iter().enumerate() {
            let votes = c.votes.map_or("&ndash;".to_string(), |v| v.to_string());
            let q = c
                .mean_q
                .map_or("&ndash;".to_string(), |q| format!("{q:.4}"));
            let verdict = match c.correct {
                Some(true) => "<span class=\"yes\">yes</span>",
                Some(false) => "<span class=\"no\">no</span>",
                None => "<span class=\"none\">unknown</span>",
            };
            let _ = write!(
                out,
                "<tr><td class=\"t\">{}</td><td class=\"t\">{}</td><td class=\"t\">{votes}</td><td class=\"t\">{q}</td><td class=\"t\">{verdict}</td><td class=\"g\">",
                k + 1,
                esc(&c.label)
            );
            html_grid(out, g, &c.label, correctness_class(c.correct));
            out.push_str("</td></tr>");
        }
        out.push_str("</table>");
    }
    out.push_str("</section>");
}

/// The HTML page for `views`; `path` is only used in messages.
fn html_page(views: &[TaskRender], title: &str, path: &Path) -> Result<String, DataError> {
    let checked = views
        .iter()
        .map(|v| check_view(v, path))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{CSS}",
        esc(title)
    );
    for (i, [r, g, b]) in ARC_PALETTE.iter().enumerate() {
        let _ = write!(out, ".c{i}{{background:#{r:02X}{g:02X}{b:02X}}}");
    }
    let _ = write!(out, "</style></head><body><h1>{}</h1>", esc(title));
    let scored: usize = checked
        .iter()
        .flat_map(|t| &t.tests)
        .filter(|t| !t.candidates.is_empty())
        .count();
    let _ = write!(
        out,
        "<p>{} task(s); {} test input(s) with candidates. Candidate frames: <span class=\"yes\">green</span> correct, <span class=\"no\">red</span> incorrect, grey unknown.</p><nav>",
        checked.len(),
        scored
    );
    for t in &checked {
        let _ = write!(out, "<a href=\"#{}\">{}</a>", anchor(t.name), esc(t.name));
    }
    out.push_str("</nav>");
    for t in &checked {
        html_task(&mut out, t);
    }
    out.push_str("</body></html>\n");
    Ok(out)
}

/// Writes one self-contained HTML page for `views` to `path` (atomically): inline CSS, every
/// grid an HTML table, no scripts and no external resources. Per test input it shows the
/// input, the solution (if known) and, if there are candidates, a table of them (rank, name,
/// votes, mean q, correct, the grid). Invalid grids are an error naming the task.
pub fn render_html(views: &[TaskRender], title: &str, path: &Path) -> Result<(), DataError> {
    let page = html_page(views, title, path)?;
    write_atomic(path, page.as_bytes())
}

// ---------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------

use crate::atomic::write_atomic;

/// A file name for a task's PNG: letters, digits, `-` and `_` kept, the rest `_`.
pub fn png_file_name(task: &str) -> String {
    let safe: String = task
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}.png")
}

/// What [`render_dir`] / [`render_arc`] wrote.
#[derive(Clone, Debug, Serialize)]
pub struct RenderSummary {
    /// The output directory.
    pub out: PathBuf,
    /// `out/index.html`.
    pub index: PathBuf,
    /// The PNG files, in task order (empty when PNGs were not requested).
    pub pngs: Vec<PathBuf>,
    /// The tasks drawn, in order.
    pub tasks: Vec<String>,
    /// Test inputs drawn with at least one candidate.
    pub test_inputs_with_candidates: usize,
    /// Of those, the ones whose first candidate is correct.
    pub top1_correct: usize,
    /// Things worth knowing that are not errors (e.g. a submission whose number of entries
    /// differs from the task's number of test inputs).
    pub warnings: Vec<String>,
}

/// Writes `index.html` (titled `title`) and, if `write_png`, one `<task>.png` per view into
/// `out` (created if missing; existing files of the same names are replaced atomically).
/// All grids are checked first, so an invalid one leaves the directory as it was.
pub fn render_dir(
    views: &[TaskRender],
    out: &Path,
    title: &str,
    write_png: bool,
) -> Result<RenderSummary, DataError> {
    std::fs::create_dir_all(out).map_err(|e| DataError::io(out, e))?;
    let index = out.join("index.html");
    let page = html_page(views, title, &index)?;

    // Distinct file names even if two task names sanitise to the same one.
    let mut used = HashSet::new();
    let pngs: Vec<PathBuf> = views
        .iter()
        .map(|v| {
            let base = png_file_name(&v.task.name);
            let mut name = base.clone();
            let mut n = 2;
            while !used.insert(name.clone()) {
                name = format!("{}-{n}.png", base.trim_end_matches(".png"));
                n += 1;
            }
            out.join(name)
        })
        .collect();
    if write_png {
        let encoded = views
            .par_iter()
            .zip(&pngs)
            .map(|(v, p)| task_png_bytes(v, p))
            .collect::<Result<Vec<_>, _>>()?;
        encoded
            .par_iter()
            .zip(&pngs)
            .try_for_each(|(bytes, p)| write_atomic(p, bytes))?;
    }
    write_atomic(&index, page.as_bytes())?;

    let mut with = 0;
    let mut top1 = 0;
    for v in views {
        for cands in &v.predictions {
            if let Some(first) = cands.first() {
                with += 1;
                top1 += usize::from(first.correct == Some(true));
            }
        }
    }
    Ok(RenderSummary {
        out: out.to_path_buf(),
        index,
        pngs: if write_png { pngs } else { Vec::new() },
        tasks: views.iter().map(|v| v.task.name.clone()).collect(),
        test_inputs_with_candidates: with,
        top1_correct: top1,
        warnings: Vec::new(),
    })
}

// ---------------------------------------------------------------------------------------
// The command-line entry point
// ---------------------------------------------------------------------------------------

/// Where the tasks come from.
#[derive(Clone, Debug, Serialize)]
pub enum ArcSource {
    /// `{input_prefix}_{subset}_challenges.json`, with test outputs from
    /// `{input_prefix}_{subset}_solutions.json` when that file exists.
    Subset {
        input_prefix: PathBuf,
        subset: String,
    },
    /// A challenges file (or a `test_puzzles.json`, whose test outputs are inline), with an
    /// optional solutions file. Without one, a `*_challenges.json` looks for the sibling
    /// `*_solutions.json`.
    Challenges {
        path: PathBuf,
        solutions: Option<PathBuf>,
    },
}

/// Which tasks to draw.
#[derive(Clone, Debug, Serialize)]
pub enum TaskSelection {
    /// Every task, in file order.
    All,
    /// The first N tasks in file order.
    First(usize),
    /// These tasks, in this order (each must exist).
    Ids(Vec<String>),
    /// The tasks that have predictions, in file order (all tasks without predictions).
    Predicted,
}

/// Options of [`render_arc`].
#[derive(Clone, Debug, Serialize)]
pub struct RenderOptions {
    pub source: ArcSource,
    pub tasks: TaskSelection,
    /// Output directory (created if missing).
    pub out: PathBuf,
    /// A `submission.json` (`{task: [{"attempt_1": grid, "attempt_2": grid}, ...]}`).
    pub submission: Option<PathBuf>,
    /// An [`ArcEvalResult`] serialised as JSON; its vote tables give votes and mean q.
    /// At most one of `submission` and `eval_result`.
    pub eval_result: Option<PathBuf>,
    /// Candidates drawn per test input (vote tables are cut to this; default 5).
    pub top_k: usize,
    /// Write `<task>.png` files besides `index.html` (default true).
    pub write_png: bool,
    /// Page title (default: the source and the prediction file).
    pub title: Option<String>,
}

impl RenderOptions {
    /// Every task of `{input_prefix}_{subset}_challenges.json`, PNGs on, no predictions,
    /// `top_k` 5.
    pub fn subset(
        input_prefix: impl Into<PathBuf>,
        subset: impl Into<String>,
        out: impl Into<PathBuf>,
    ) -> RenderOptions {
        RenderOptions::from_source(
            ArcSource::Subset {
                input_prefix: input_prefix.into(),
                subset: subset.into(),
            },
            out.into(),
        )
    }

    /// Every task of a challenges file, PNGs on, no predictions, `top_k` 5.
    pub fn challenges(path: impl Into<PathBuf>, out: impl Into<PathBuf>) -> RenderOptions {
        RenderOptions::from_source(
            ArcSource::Challenges {
                path: path.into(),
                solutions: None,
            },
            out.into(),
        )
    }

    fn from_source(source: ArcSource, out: PathBuf) -> RenderOptions {
        RenderOptions {
            source,
            tasks: TaskSelection::All,
            out,
            submission: None,
            eval_result: None,
            top_k: 5,
            write_png: true,
            title: None,
        }
    }
}

/// Reads the tasks of `source`; the flag says whether their test outputs are real.
fn load_source(source: &ArcSource) -> Result<(Vec<ArcTask>, bool, String), DataError> {
    let (name, cpath, spath) = match source {
        ArcSource::Subset {
            input_prefix,
            subset,
        } => {
            let file = |kind: &str| {
                let mut s = input_prefix.as_os_str().to_owned();
                s.push(format!("_{subset}_{kind}.json"));
                PathBuf::from(s)
            };
            (subset.clone(), file("challenges"), Some(file("solutions")))
        }
        ArcSource::Challenges { path, solutions } => {
            let stem = path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let sibling = solutions.clone().or_else(|| {
                stem.strip_suffix("_challenges.json")
                    .map(|s| path.with_file_name(format!("{s}_solutions.json")))
            });
            (stem, path.clone(), sibling)
        }
    };
    let cbytes = std::fs::read(&cpath).map_err(|e| DataError::io(&cpath, e))?;
    // An explicitly given solutions file must exist; a derived one is optional.
    let explicit = matches!(
        source,
        ArcSource::Challenges {
            solutions: Some(_),
            ..
        }
    );
    let sbytes = match &spath {
        Some(p) => match std::fs::read(p) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => None,
            Err(e) => return Err(DataError::io(p, e)),
        },
        None => None,
    };
    if let (Some(b), Some(p)) = (&sbytes, &spath) {
        let subset = parse_arc_subset(&name, &cbytes, &cpath, Some((b, p)))?;
        return Ok((subset.tasks, true, cpath.display().to_string()));
    }
    // No solutions: test outputs are real only if every test pair has one inline.
    if let Ok(tasks) = parse_test_puzzles(&cbytes, &cpath) {
        return Ok((tasks, true, cpath.display().to_string()));
    }
    let subset = parse_arc_subset(&name, &cbytes, &cpath, None)?;
    Ok((subset.tasks, false, cpath.display().to_string()))
}

/// The command-line entry point (`recursa render`): reads the tasks of `opts.source`, selects
/// `opts.tasks`, reads the optional predictions and writes `index.html` plus one
/// `<task>.png` per task into `opts.out`.
///
/// Predictions are matched to test inputs by position. A submission only lists test inputs
/// the model answered, so when its number of entries differs from the task's number of test
/// inputs the match may be off; that case is reported in [`RenderSummary::warnings`].
pub fn render_arc(opts: &RenderOptions) -> Result<RenderSummary, DataError> {
    if opts.top_k == 0 {
        return Err(DataError::InvalidOptions("top_k must be at least 1".into()));
    }
    if opts.submission.is_some() && opts.eval_result.is_some() {
        return Err(DataError::InvalidOptions(
            "give a submission or an evaluation result, not both".into(),
        ));
    }
    let (tasks, known, source_name) = load_source(&opts.source)?;

    let mut pred_name = None;
    let predictions: HashMap<String, Vec<Vec<Candidate>>> =
        match (&opts.submission, &opts.eval_result) {
            (Some(p), _) => {
                pred_name = Some(p.display().to_string());
                let bytes = std::fs::read(p).map_err(|e| DataError::io(p, e))?;
                let mut subs = parse_submission(&bytes, p)?;
                for per_test in subs.values_mut() {
                    for c in per_test.iter_mut() {
                        c.truncate(opts.top_k);
                    }
                }
                subs
            }
            (None, Some(p)) => {
                pred_name = Some(p.display().to_string());
                let bytes = std::fs::read(p).map_err(|e| DataError::io(p, e))?;
                parse_eval_result(&bytes, p, opts.top_k)?
            }
            (None, None) => HashMap::new(),
        };

    let selected: Vec<&ArcTask> = match &opts.tasks {
        TaskSelection::All => tasks.iter().collect(),
        TaskSelection::First(n) => tasks.iter().take(*n).collect(),
        TaskSelection::Predicted if predictions.is_empty() => tasks.iter().collect(),
        TaskSelection::Predicted => tasks
            .iter()
            .filter(|t| predictions.contains_key(&t.name))
            .collect(),
        TaskSelection::Ids(ids) => {
            let by_name: HashMap<&str, &ArcTask> =
                tasks.iter().map(|t| (t.name.as_str(), t)).collect();
            let missing: Vec<&str> = ids
                .iter()
                .map(String::as_str)
                .filter(|id| !by_name.contains_key(id))
                .collect();
            if !missing.is_empty() {
                return Err(DataError::InvalidOptions(format!(
                    "task(s) {} not found in {source_name}",
                    missing.join(", ")
                )));
            }
            ids.iter().map(|id| by_name[id.as_str()]).collect()
        }
    };

    let mut warnings = Vec::new();
    let views: Vec<TaskRender> = selected
        .into_iter()
        .map(|t| {
            let mut v = TaskRender::new(t);
            v.test_outputs_known = known;
            match predictions.get(&t.name) {
                Some(per_test) => {
                    let n_test = t.examples(ExampleKind::Test).count();
                    let mut per_test = per_test.clone();
                    if per_test.len() != n_test {
                        warnings.push(format!(
                            "task {}: predictions for {} test input(s), the task has {n_test}; matched by position{}",
                            t.name,
                            per_test.len(),
                            if per_test.len() > n_test { ", extra entries ignored" } else { "" }
                        ));
                        per_test.truncate(n_test);
                    }
                    v.with_candidates(per_test)
                }
                None => v,
            }
        })
        .collect();
    if !predictions.is_empty() {
        let with = views
            .iter()
            .filter(|v| predictions.contains_key(&v.task.name))
            .count();
        if with < views.len() {
            warnings.push(format!(
                "{} of {} task(s) have no predictions",
                views.len() - with,
                views.len()
            ));
        }
    }
    let title = opts.title.clone().unwrap_or_else(|| match &pred_name {
        Some(p) => format!("ARC tasks from {source_name}, predictions from {p}"),
        None => format!("ARC tasks from {source_name}"),
    });
    let mut summary = render_dir(&views, &opts.out, &title, opts.write_png)?;
    summary.warnings = warnings;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_prediction_is_a_candidate_and_a_bad_one_is_an_error() {
        let json = br#"{"rankings": [["t", [[
            {"votes": 3, "mean_q": 0.5, "grid": [], "is_correct": false},
            {"votes": 1, "mean_q": null, "grid": [[1, 2]], "is_correct": true}
        ]]]]}"#;
        let got = parse_eval_result(json, Path::new("e.json"), 5).unwrap();
        let cands = &got["t"][0];
        assert_eq!(cands.len(), 2);
        assert!(cands[0].grid.is_empty() && cands[0].votes == Some(3));
        let bad = br#"{"rankings": [["t", [[
            {"votes": 1, "mean_q": 0.1, "grid": [[1, 2], [3]], "is_correct": false}
        ]]]]}"#;
        let e = parse_eval_result(bad, Path::new("e.json"), 5).unwrap_err();
        assert!(e.to_string().contains("e.json"), "{e}");
    }
}
