//! Writes example renders for a person to look at (ignored by default):
//! `RENDER_PREVIEW_OUT=/tmp/renders cargo test -p recursa-data --test render_preview -- --ignored`.

use recursa_data::render::{render_arc, RenderOptions, TaskSelection};
use std::path::Path;

#[test]
#[ignore = "writes files for inspection"]
fn write_preview() {
    let out = std::env::var("RENDER_PREVIEW_OUT").unwrap_or_else(|_| "/tmp/recursa-renders".into());
    let out = Path::new(&out);
    std::fs::create_dir_all(out).unwrap();
    // A submission with one right and one wrong attempt for 00576224 (the wrong one is the
    // test input tiled without flipping), and a wrong answer for 31d5ba1a.
    let sub = out.join("example_submission.json");
    std::fs::write(
        &sub,
        r#"{"00576224": [{"attempt_1": [[3,2,3,2,3,2],[7,8,7,8,7,8],[3,2,3,2,3,2],[7,8,7,8,7,8],[3,2,3,2,3,2],[7,8,7,8,7,8]],
                          "attempt_2": [[3,2,3,2,3,2],[7,8,7,8,7,8],[2,3,2,3,2,3],[8,7,8,7,8,7],[3,2,3,2,3,2],[7,8,7,8,7,8]]}],
            "31d5ba1a": [{"attempt_1": [[0,6,0,0,0],[6,6,0,0,0],[0,0,6,0,0]]}, {"attempt_1": [[6]]}]}"#,
    )
    .unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("raw/arc/arc-agi");
    let mut opts = RenderOptions::subset(root, "evaluation", out);
    opts.tasks = TaskSelection::Ids(vec![
        "00576224".into(),
        "31d5ba1a".into(),
        "0a1d4ef5".into(),
    ]);
    opts.submission = Some(sub);
    let summary = render_arc(&opts).unwrap();
    println!("{summary:#?}");
}

/// Renders every evaluation task (timing and size check).
#[test]
#[ignore = "writes files for inspection"]
fn write_all_evaluation() {
    let out = std::env::var("RENDER_PREVIEW_OUT").unwrap_or_else(|_| "/tmp/recursa-renders".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("raw/arc/arc-agi");
    let opts = RenderOptions::subset(root, "evaluation", Path::new(&out).join("all"));
    let start = std::time::Instant::now();
    let summary = render_arc(&opts).unwrap();
    println!("{} tasks in {:?}", summary.tasks.len(), start.elapsed());
}
