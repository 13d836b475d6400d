//! Experiment files: the paper configs' parameter counts and clear config errors.

use recursa_core::experiment::ExperimentConfig;
use recursa_tests::repo_root;
// Link the plugins: their inventory/typetag registrations live in that crate.
use recursa_plugins as _;

fn params(config: &str) -> usize {
    let path = repo_root().join("experiments/configs").join(config);
    let experiment = ExperimentConfig::load(&path).unwrap();
    let device = recursa_backends::device("cpu").unwrap();
    experiment
        .build(&device)
        .unwrap()
        .net
        .num_trainable_params()
}

#[test]
fn trm_arc_has_the_reference_parameter_count() {
    assert_eq!(params("trm-arc1.toml"), 6_829_058);
}

#[test]
fn trm_sudoku_mlp_t_has_the_reference_parameter_count() {
    assert_eq!(params("trm-sudoku-mlpt.toml"), 5_028_866);
}

/// Every shipped paper config, with the count the config's comment (and the
/// README catalogue) states. The ones the reference code can count directly
/// (TRM ARC, TRM Sudoku, DIS-compact) have their own tests above and in mixing.rs;
/// the rest are the same blocks at other widths and depths, counted by hand:
/// a block is 4h^2 (attention) + 3*h*inter (SwiGLU, inter = 4h*2/3 rounded up to
/// 256), plus token embedding, LM head and Q head.
#[test]
fn every_paper_config_has_its_documented_parameter_count() {
    let block = |h: usize| {
        let inter = (4 * h * 2).div_ceil(3).div_ceil(256) * 256;
        4 * h * h + 3 * h * inter
    };
    let heads = |h: usize| 12 * h + h * 12 + 2 * h + 2;
    let cases = [
        ("trm-arc1.toml", 6_829_058, 2 * block(512) + heads(512)),
        ("trm-arc2.toml", 6_829_058, 2 * block(512) + heads(512)),
        (
            "trm-paper-recursion.toml",
            6_829_058,
            2 * block(512) + heads(512),
        ),
        ("trm-medium.toml", 6_829_058, 2 * block(512) + heads(512)),
        (
            "trm-maze.toml",
            6_822_914,
            2 * block(512) + 6 * 512 * 2 + 2 * 512 + 2,
        ),
        (
            "trm-sudoku-att.toml",
            6_828_034,
            2 * block(512) + 11 * 512 * 2 + 2 * 512 + 2,
        ),
        ("hrm-arc1.toml", 27_276_290, 8 * block(512) + heads(512)),
        (
            "dis-compact.toml",
            860_674,
            block(256) + heads(256) + 8 * 256,
        ),
        (
            "dis-medium.toml",
            6_833_154,
            2 * block(512) + heads(512) + 8 * 512,
        ),
        ("trm-compact.toml", 858_626, block(256) + heads(256)),
    ];
    for (config, documented, by_hand) in cases {
        assert_eq!(documented, by_hand, "{config}: the hand count");
        assert_eq!(params(config), documented, "{config}");
        let text =
            std::fs::read_to_string(repo_root().join("experiments/configs").join(config)).unwrap();
        let printed = documented
            .to_string()
            .as_bytes()
            .rchunks(3)
            .rev()
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(",");
        assert!(
            text.contains(&printed),
            "{config} should state its count {printed} in its comment"
        );
    }
}

const SMALL: &str = r#"
seed = 1
[net]
seq_len = 4
vocab_size = 5
hidden_size = 8
num_heads = 2
l_layers = 1
[schedule]
name = "trm"
h_cycles = 2
l_cycles = 2
[target]
name = "final-answer"
[halting]
name = "act-halt"
max_steps = 3
"#;

#[test]
fn a_small_experiment_parses_and_builds() {
    let e = ExperimentConfig::from_toml(SMALL, "small.toml").unwrap();
    let m = e.build(&recursa_backends::device("cpu").unwrap()).unwrap();
    assert_eq!(m.schedule.calls_per_step().total(), 6);
    assert_eq!(m.halting.max_steps(), 3);
}

fn error(text: &str) -> String {
    ExperimentConfig::from_toml(text, "exp.toml")
        .unwrap_err()
        .to_string()
}

#[test]
fn an_unknown_plugin_lists_the_known_ones() {
    let e = error(&SMALL.replace("name = \"trm\"", "name = \"trn\""));
    assert!(
        e.contains("exp.toml")
            && e.contains("schedule.name")
            && e.contains("`trn`")
            && e.contains("trm"),
        "{e}"
    );
    let e = error(&SMALL.replace("name = \"act-halt\"", "name = \"act\""));
    assert!(
        e.contains("halting.name") && e.contains("act-halt") && e.contains("fixed"),
        "{e}"
    );
}

#[test]
fn a_misspelt_field_is_named_with_its_line() {
    let e = error(&SMALL.replace("l_cycles = 2", "l_cylces = 2"));
    assert!(
        e.contains("l_cylces") && e.contains("l_cycles") && e.contains("line"),
        "{e}"
    );
    let e = error(&SMALL.replace("hidden_size = 8", "hiden_size = 8"));
    assert!(e.contains("hiden_size") && e.contains("exp.toml"), "{e}");
}

#[test]
fn impossible_shapes_are_config_errors() {
    let e = error(&SMALL.replace("num_heads = 2", "num_heads = 3"));
    assert!(
        e.contains("net.num_heads") && e.contains("does not divide"),
        "{e}"
    );
    let e = error(
        &SMALL
            .replace("name = \"trm\"\n", "")
            .replace("h_cycles = 2\n", ""),
    );
    assert!(e.contains("schedule.name") && e.contains("missing"), "{e}");
    // Range checks run at load, before any model or run directory exists.
    let e = error(&SMALL.replace("h_cycles = 2", "h_cycles = 0"));
    assert!(
        e.contains("exp.toml: schedule.h_cycles") && e.contains("1..="),
        "{e}"
    );
}

#[test]
fn every_checked_in_config_parses() {
    for entry in std::fs::read_dir(repo_root().join("experiments/configs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            ExperimentConfig::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }
}

/// The resolved form of every shipped experiment (defaults filled in), so a change
/// of a default or of a config shows up in review as a snapshot diff.
#[test]
fn resolved_configs_snapshot() {
    let dir = repo_root().join("experiments/configs");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    names.sort();
    assert!(names.len() >= 12, "{names:?}");
    for path in names {
        let e = ExperimentConfig::load(&path).unwrap();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        insta::assert_snapshot!(
            format!("resolved_{name}"),
            toml::to_string_pretty(&e).unwrap()
        );
    }
}
