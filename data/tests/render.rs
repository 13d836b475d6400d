//! `recursa_data::render`: PNGs decoded back and checked pixel by pixel, the HTML page, the
//! command-line entry point and the error paths.

use recursa_data::arc::{load_arc_subset, ArcExample, ArcTask, ExampleKind};
use recursa_data::arc_eval::{ArcEvalResult, RankedAnswer};
use recursa_data::grid::Grid;
use recursa_data::render::{
    png_file_name, render_arc, render_html, render_task_png, task_png_layout, ArcSource, Candidate,
    GridRole, RenderOptions, TaskRender, TaskSelection, ARC_PALETTE, CELL_PX, FRAME_CORRECT,
    FRAME_INCORRECT, FRAME_PX, LABEL_PX, MARGIN_PX, TITLE_PX,
};
use recursa_data::DataError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn raw_prefix() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("raw/arc/arc-agi")
}

/// Evaluation tasks by name (with their solutions).
fn eval_tasks(names: &[&str]) -> Vec<ArcTask> {
    let subset = load_arc_subset(&raw_prefix(), "evaluation", false).unwrap();
    names
        .iter()
        .map(|n| {
            subset
                .tasks
                .iter()
                .find(|t| t.name == *n)
                .unwrap_or_else(|| panic!("task {n}"))
                .clone()
        })
        .collect()
}

/// Decodes an RGB8 PNG: (width, height, pixels).
fn decode(path: &Path) -> (usize, usize, Vec<u8>) {
    let f = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let mut reader = png::Decoder::new(f).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    buf.truncate(info.buffer_size());
    (info.width as usize, info.height as usize, buf)
}

fn pixel(img: &(usize, usize, Vec<u8>), x: usize, y: usize) -> [u8; 3] {
    let i = (y * img.0 + x) * 3;
    [img.2[i], img.2[i + 1], img.2[i + 2]]
}

fn nested(g: &Grid) -> Vec<Vec<i64>> {
    g.to_nested()
        .into_iter()
        .map(|r| r.into_iter().map(i64::from).collect())
        .collect()
}

fn candidate(label: &str, grid: Vec<Vec<i64>>) -> Candidate {
    Candidate {
        label: label.into(),
        grid,
        votes: None,
        mean_q: None,
        correct: None,
    }
}

/// The solution of test input 0, and a wrong answer of the same shape.
fn right_and_wrong(task: &ArcTask) -> (Vec<Vec<i64>>, Vec<Vec<i64>>) {
    let sol = nested(&task.examples(ExampleKind::Test).next().unwrap().output);
    let mut wrong = sol.clone();
    wrong[0][0] = (wrong[0][0] + 1) % 10;
    (sol, wrong)
}

/// Every cell of every placed grid has its palette colour at its centre, and the outer grid
/// line is grey.
fn check_cells(img: &(usize, usize, Vec<u8>), view: &TaskRender, grids: &[(GridRole, Grid)]) {
    let layout = task_png_layout(view).unwrap();
    assert_eq!((img.0, img.1), (layout.width, layout.height));
    assert_eq!(layout.grids.len(), grids.len());
    for (placed, (role, g)) in layout.grids.iter().zip(grids) {
        assert_eq!(placed.role, *role);
        assert_eq!((placed.rows, placed.cols), (g.rows(), g.cols()));
        for r in 0..g.rows() {
            for c in 0..g.cols() {
                let (x, y) = placed.cell_origin(r, c);
                let want = ARC_PALETTE[g.get(r, c) as usize];
                assert_eq!(
                    pixel(img, x + CELL_PX / 2, y + CELL_PX / 2),
                    want,
                    "{role:?} ({r},{c})"
                );
                assert_eq!(pixel(img, x, y), want);
                assert_eq!(pixel(img, x + CELL_PX - 1, y + CELL_PX - 1), want);
            }
        }
        assert_eq!(pixel(img, placed.x, placed.y), [0x55, 0x55, 0x55]);
    }
}

#[test]
fn png_of_real_tasks_decodes_with_palette_colours() {
    let dir = tempfile::tempdir().unwrap();
    for task in eval_tasks(&["00576224", "31d5ba1a", "0a1d4ef5"]) {
        let view = TaskRender::new(&task);
        let path = dir.path().join(png_file_name(&task.name));
        render_task_png(&view, &path).unwrap();
        let img = decode(&path);

        let mut grids = Vec::new();
        for (i, e) in task.examples(ExampleKind::Train).enumerate() {
            grids.push((GridRole::TrainInput(i), e.input.clone()));
            grids.push((GridRole::TrainOutput(i), e.output.clone()));
        }
        for (i, e) in task.examples(ExampleKind::Test).enumerate() {
            grids.push((GridRole::TestInput(i), e.input.clone()));
            grids.push((GridRole::TestOutput(i), e.output.clone()));
        }
        check_cells(&img, &view, &grids);

        // The first grid's position from the documented geometry alone.
        let first = &task.examples(ExampleKind::Train).next().unwrap().input;
        let (x0, y0) = (
            MARGIN_PX + FRAME_PX,
            MARGIN_PX + TITLE_PX + LABEL_PX + FRAME_PX,
        );
        assert_eq!(
            pixel(&img, x0 + 1 + CELL_PX / 2, y0 + 1 + CELL_PX / 2),
            ARC_PALETTE[first.get(0, 0) as usize]
        );
        assert_eq!(pixel(&img, 0, 0), [0xFF, 0xFF, 0xFF]);
    }
    // Atomic writes leave no temporary files.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names
        .iter()
        .all(|n| n.ends_with(".png") && !n.starts_with('.')));
}

#[test]
fn png_frames_candidates_green_and_red() {
    let task = eval_tasks(&["00576224"]).remove(0);
    let (right, wrong) = right_and_wrong(&task);
    let view = TaskRender::new(&task).with_candidates(vec![vec![
        candidate("attempt_1", wrong.clone()),
        candidate("attempt_2", right.clone()),
    ]]);
    assert_eq!(view.predictions[0][0].correct, Some(false));
    assert_eq!(view.predictions[0][1].correct, Some(true));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.png");
    render_task_png(&view, &path).unwrap();
    let img = decode(&path);
    let layout = task_png_layout(&view).unwrap();
    let cands: Vec<_> = layout
        .grids
        .iter()
        .filter(|g| matches!(g.role, GridRole::Candidate { .. }))
        .collect();
    assert_eq!(cands.len(), 2);
    // Ranked order, left to right.
    assert!(cands[0].x < cands[1].x);
    assert_eq!(pixel(&img, cands[0].x - 1, cands[0].y - 1), FRAME_INCORRECT);
    assert_eq!(
        pixel(&img, cands[1].x - FRAME_PX, cands[1].y + 5),
        FRAME_CORRECT
    );
    let to_grid = |v: &Vec<Vec<i64>>| Grid::from_nested(v).unwrap();
    let mut grids = Vec::new();
    for (i, e) in task.examples(ExampleKind::Train).enumerate() {
        grids.push((GridRole::TrainInput(i), e.input.clone()));
        grids.push((GridRole::TrainOutput(i), e.output.clone()));
    }
    let t = task.examples(ExampleKind::Test).next().unwrap();
    grids.push((GridRole::TestInput(0), t.input.clone()));
    grids.push((GridRole::TestOutput(0), t.output.clone()));
    grids.push((GridRole::Candidate { test: 0, rank: 0 }, to_grid(&wrong)));
    grids.push((GridRole::Candidate { test: 0, rank: 1 }, to_grid(&right)));
    check_cells(&img, &view, &grids);

    // Without solutions: no solution grid, no verdict.
    let view = TaskRender::new(&task)
        .without_solutions()
        .with_candidates(vec![vec![candidate("a", right)]]);
    assert_eq!(view.predictions[0][0].correct, None);
    let roles: Vec<GridRole> = task_png_layout(&view)
        .unwrap()
        .grids
        .iter()
        .map(|g| g.role)
        .collect();
    assert!(!roles.contains(&GridRole::TestOutput(0)));
}

#[test]
fn html_is_self_contained_with_one_table_per_grid() {
    let tasks = eval_tasks(&["00576224", "31d5ba1a", "0a1d4ef5"]);
    let (right, wrong) = right_and_wrong(&tasks[0]);
    let ranked = vec![vec![
        RankedAnswer {
            pred_hash: "h1".into(),
            votes: 7,
            mean_q: 0.8125,
            grid: wrong
                .iter()
                .map(|r| r.iter().map(|&v| v as u8).collect())
                .collect(),
            is_correct: false,
        },
        RankedAnswer {
            pred_hash: "h2".into(),
            votes: 3,
            mean_q: 0.25,
            grid: right
                .iter()
                .map(|r| r.iter().map(|&v| v as u8).collect())
                .collect(),
            is_correct: true,
        },
    ]];
    let views: Vec<TaskRender> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let v = TaskRender::new(t);
            if i == 0 {
                v.with_rankings(&ranked, 5)
            } else {
                v
            }
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.html");
    render_html(&views, "three <tasks>", &path).unwrap();
    let html = std::fs::read_to_string(&path).unwrap();

    let mut expected_grids = 0;
    for t in &tasks {
        assert!(html.contains(&format!("<h2>{}</h2>", t.name)), "{}", t.name);
        expected_grids += 2 * t.parts.iter().map(|(_, v)| v.len()).sum::<usize>();
    }
    expected_grids += 2; // the two candidates
    assert_eq!(
        html.matches("<table class=\"grid\"").count(),
        expected_grids
    );
    assert!(html.contains("three &lt;tasks&gt;"));
    assert!(!html.contains("src=\"http"));
    assert!(!html.contains("<script"));
    assert!(!html.contains("http://") && !html.contains("https://"));
    assert!(!html.contains("<link") && !html.contains("<img"));
    // The vote table: votes, mean q and the verdicts.
    assert!(html.contains("<table class=\"votes\">"));
    assert!(html.contains("<td class=\"t\">7</td><td class=\"t\">0.8125</td>"));
    assert!(html.contains("<span class=\"yes\">yes</span>"));
    assert!(html.contains("<span class=\"no\">no</span>"));
    // The palette.
    assert!(html.contains(".c1{background:#0074D9}"));
    assert!(html.contains(".c9{background:#870C25}"));
}

fn bad_task(grid: Grid) -> ArcTask {
    let ok = Grid::new(1, 1, vec![1]).unwrap();
    ArcTask {
        name: "badtask".into(),
        parts: vec![
            (
                ExampleKind::Train,
                vec![ArcExample {
                    input: ok.clone(),
                    output: grid,
                }],
            ),
            (
                ExampleKind::Test,
                vec![ArcExample {
                    input: ok.clone(),
                    output: ok,
                }],
            ),
        ],
    }
}

#[test]
fn invalid_grids_are_errors_naming_the_task() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("bad.png");
    let html = dir.path().join("bad.html");
    let cases = [
        (
            Grid::new(31, 31, vec![0; 961]).unwrap(),
            "larger than 30x30",
        ),
        (Grid::new(0, 0, vec![]).unwrap(), "empty grid"),
        (Grid::new(1, 2, vec![3, 10]).unwrap(), "colour 10"),
    ];
    for (g, what) in cases {
        let task = bad_task(g);
        let view = TaskRender::new(&task);
        for err in [
            render_task_png(&view, &png).unwrap_err(),
            render_html(std::slice::from_ref(&view), "t", &html).unwrap_err(),
            task_png_layout(&view).unwrap_err(),
        ] {
            assert!(matches!(err, DataError::InvalidGrid { .. }), "{err}");
            let msg = err.to_string();
            assert!(
                msg.contains("badtask") && msg.contains("train[0].output"),
                "{msg}"
            );
            assert!(msg.contains(what), "{msg}");
        }
        assert!(!png.exists() && !html.exists());
    }

    // Ragged and out-of-range candidates.
    let task = bad_task(Grid::new(1, 1, vec![2]).unwrap());
    for (grid, what) in [
        (vec![vec![1, 2], vec![3]], "ragged"),
        (vec![vec![-1]], "outside 0-9"),
    ] {
        let view = TaskRender::new(&task).with_candidates(vec![vec![candidate("attempt_1", grid)]]);
        let msg = render_task_png(&view, &png).unwrap_err().to_string();
        assert!(
            msg.contains("badtask") && msg.contains("test[0].candidate[0]"),
            "{msg}"
        );
        assert!(msg.contains(what), "{msg}");
    }
    // An empty prediction (an untrained model may predict no cell) is an empty frame.
    let view = TaskRender::new(&task).with_candidates(vec![vec![candidate("attempt_1", vec![])]]);
    let empty_png = png.with_file_name("empty-prediction.png");
    render_task_png(&view, &empty_png).unwrap();
    assert!(empty_png.exists());
    std::fs::remove_file(&empty_png).unwrap();
    // More prediction lists than test inputs.
    let view = TaskRender::new(&task).with_candidates(vec![vec![], vec![]]);
    assert!(render_task_png(&view, &png)
        .unwrap_err()
        .to_string()
        .contains("badtask"));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn render_arc_with_submission_and_eval_result() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = eval_tasks(&["00576224", "31d5ba1a"]);
    let (right, wrong) = right_and_wrong(&tasks[0]);
    let sub = dir.path().join("submission.json");
    std::fs::write(
        &sub,
        serde_json::json!({
            "00576224": [{"attempt_1": right, "attempt_2": wrong}],
            "31d5ba1a": [{"attempt_1": [[1, 2]], "attempt_2": null}, {"attempt_1": [[3]]}],
            "not_rendered": [{"attempt_1": [[0]]}],
        })
        .to_string(),
    )
    .unwrap();
    let out = dir.path().join("renders");
    let mut opts = RenderOptions::subset(raw_prefix(), "evaluation", &out);
    opts.tasks = TaskSelection::Ids(vec!["00576224".into(), "31d5ba1a".into()]);
    opts.submission = Some(sub.clone());
    let summary = render_arc(&opts).unwrap();
    assert_eq!(summary.tasks, ["00576224", "31d5ba1a"]);
    assert_eq!(summary.pngs.len(), 2);
    assert_eq!(summary.test_inputs_with_candidates, 3);
    assert_eq!(summary.top1_correct, 1);
    assert!(summary.warnings.is_empty(), "{:?}", summary.warnings);
    assert_eq!(summary.index, out.join("index.html"));
    for p in &summary.pngs {
        let (w, h, _) = decode(p);
        assert!(w > 100 && h > 100);
    }
    let html = std::fs::read_to_string(&summary.index).unwrap();
    assert!(html.contains("attempt_1") && html.contains("attempt_2"));
    assert!(!html.contains("not_rendered"));
    assert!(!html.contains("<script"));

    // Rerunning replaces the files; unknown ids are an error naming them.
    render_arc(&opts).unwrap();
    opts.tasks = TaskSelection::Ids(vec!["00576224".into(), "zzzzzzzz".into()]);
    let msg = render_arc(&opts).unwrap_err().to_string();
    assert!(msg.contains("zzzzzzzz"), "{msg}");

    // Tasks with predictions only; a submission whose entry count differs warns.
    std::fs::write(
        &sub,
        r#"{"31d5ba1a": [{"attempt_1": [[1]]}, {"attempt_1": [[2]]}, {"attempt_1": [[3]]}]}"#,
    )
    .unwrap();
    opts.tasks = TaskSelection::Predicted;
    opts.out = dir.path().join("pred");
    let summary = render_arc(&opts).unwrap();
    assert_eq!(summary.tasks, ["31d5ba1a"]);
    assert_eq!(summary.warnings.len(), 1, "{:?}", summary.warnings);

    // A bad submission grid names the task and the attempt.
    std::fs::write(&sub, r#"{"31d5ba1a": [{"attempt_1": [[1, 2], [3]]}]}"#).unwrap();
    let msg = render_arc(&opts).unwrap_err().to_string();
    assert!(
        msg.contains("31d5ba1a") && msg.contains("attempt_1") && msg.contains("ragged"),
        "{msg}"
    );

    // An evaluation result serialised with serde_json: votes and mean q reach the page.
    let to_u8 = |g: &Vec<Vec<i64>>| -> Vec<Vec<u8>> {
        g.iter()
            .map(|r| r.iter().map(|&v| v as u8).collect())
            .collect()
    };
    let result = ArcEvalResult {
        metrics: BTreeMap::new(),
        pass_at: vec![],
        submission: vec![],
        rankings: vec![(
            "00576224".into(),
            vec![vec![
                RankedAnswer {
                    pred_hash: "a".into(),
                    votes: 11,
                    mean_q: 0.5,
                    grid: to_u8(&right),
                    is_correct: true,
                },
                RankedAnswer {
                    pred_hash: "b".into(),
                    votes: 4,
                    mean_q: f64::NAN,
                    grid: to_u8(&wrong),
                    is_correct: false,
                },
                RankedAnswer {
                    pred_hash: "c".into(),
                    votes: 1,
                    mean_q: 0.1,
                    grid: vec![vec![0]],
                    is_correct: false,
                },
            ]],
        )],
    };
    let eval = dir.path().join("eval.json");
    std::fs::write(&eval, serde_json::to_vec(&result).unwrap()).unwrap();
    let mut opts = RenderOptions::subset(raw_prefix(), "evaluation", dir.path().join("eval"));
    opts.tasks = TaskSelection::Predicted;
    opts.eval_result = Some(eval);
    opts.top_k = 2;
    let summary = render_arc(&opts).unwrap();
    assert_eq!(summary.tasks, ["00576224"]);
    assert_eq!(summary.top1_correct, 1);
    let html = std::fs::read_to_string(&summary.index).unwrap();
    assert!(
        html.contains("<td class=\"t\">11</td><td class=\"t\">0.5000</td>"),
        "votes"
    );
    assert!(html.contains("<td class=\"t\">4</td><td class=\"t\">NaN</td>"));
    assert!(
        !html.contains("<td class=\"t\">3</td><td class=\"t\">#3</td>"),
        "top_k 2"
    );

    // Both prediction sources at once, and top_k 0, are option errors.
    opts.submission = Some(sub);
    assert!(matches!(
        render_arc(&opts),
        Err(DataError::InvalidOptions(_))
    ));
    opts.submission = None;
    opts.top_k = 0;
    assert!(matches!(
        render_arc(&opts),
        Err(DataError::InvalidOptions(_))
    ));
}

#[test]
fn challenges_file_without_solutions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mine_challenges.json");
    std::fs::write(
        &path,
        r#"{"t/1": {"train": [{"input": [[1, 2]], "output": [[3]]}], "test": [{"input": [[0, 5]]}]}}"#,
    )
    .unwrap();
    let mut opts = RenderOptions::challenges(&path, dir.path().join("out"));
    opts.tasks = TaskSelection::First(1);
    let summary = render_arc(&opts).unwrap();
    assert_eq!(summary.tasks, ["t/1"]);
    // The file name is sanitised.
    assert_eq!(summary.pngs, [dir.path().join("out/t_1.png")]);
    let html = std::fs::read_to_string(&summary.index).unwrap();
    assert!(
        !html.contains("solution ("),
        "unknown solutions are not drawn"
    );

    // With the sibling solutions file the solution is drawn.
    std::fs::write(
        dir.path().join("mine_solutions.json"),
        r#"{"t/1": [[[7, 7]]]}"#,
    )
    .unwrap();
    let summary = render_arc(&opts).unwrap();
    let html = std::fs::read_to_string(&summary.index).unwrap();
    assert!(html.contains("test 1 solution (1x2)"));

    // A bad grid in the challenges file names the task.
    std::fs::write(
        &path,
        r#"{"t/1": {"train": [{"input": [[1, 12]], "output": [[3]]}], "test": [{"input": [[0]]}]}}"#,
    )
    .unwrap();
    let msg = render_arc(&opts).unwrap_err().to_string();
    assert!(msg.contains("t/1") && msg.contains("outside 0-9"), "{msg}");

    // A missing explicit solutions file is an error.
    opts.source = ArcSource::Challenges {
        path: path.clone(),
        solutions: Some(dir.path().join("nope.json")),
    };
    assert!(matches!(render_arc(&opts), Err(DataError::Io { .. })));
}
