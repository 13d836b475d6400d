//! The plugin registry against serde: the fields `recursa plugins` lists for every
//! registered plugin (from `#[derive(Plugin)]`) are exactly the fields its experiment-file
//! table accepts, and every registered name builds through its `typetag` config.

use std::collections::BTreeSet;

use recursa_core::registry::{self, Axis, PluginEntry};
use recursa_core::{HaltingConfig, ScheduleConfig, TargetConfig};
use recursa_plugins as _;

/// Deserialises `[axis] text` as the experiment file would; the error text if it fails.
fn parse(axis: Axis, text: &str) -> Result<(), String> {
    let value: toml::Value = toml::from_str(text).map_err(|e| e.to_string())?;
    let r = match axis {
        Axis::Schedule => value.try_into::<Box<dyn ScheduleConfig>>().map(|_| ()),
        Axis::Target => value.try_into::<Box<dyn TargetConfig>>().map(|_| ()),
        Axis::Halting => value.try_into::<Box<dyn HaltingConfig>>().map(|_| ()),
    };
    r.map_err(|e| e.to_string())
}

/// The fields serde says a plugin's table has, from its "unknown field" error:
/// "expected `a`", "expected `a` or `b`", "expected one of `a`, `b`, `c`", or
/// "there are no fields".
fn serde_fields(entry: &PluginEntry) -> BTreeSet<String> {
    let text = format!("name = \"{}\"\nnot_a_field_of_any_plugin = 1\n", entry.name);
    let e = parse(entry.axis, &text).expect_err("an unknown field is refused");
    assert!(
        e.contains("unknown field `not_a_field_of_any_plugin`"),
        "{}: {e}",
        entry.name
    );
    if e.contains("there are no fields") {
        return BTreeSet::new();
    }
    let expected = e
        .split_once("expected")
        .unwrap_or_else(|| panic!("{}: no expected fields in {e}", entry.name))
        .1;
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[test]
fn every_registered_field_is_a_field_of_the_config_and_back() {
    let plugins = registry::plugins();
    assert!(plugins.len() >= 10, "{} plugins registered", plugins.len());
    for entry in plugins {
        let listed: BTreeSet<String> = entry.fields.iter().map(|f| f.name.to_string()).collect();
        assert_eq!(
            listed,
            serde_fields(entry),
            "{} ({}): the registry's fields and the config's",
            entry.name,
            entry.axis.key()
        );
        assert!(!entry.doc.is_empty(), "{}: no doc line", entry.name);
        for f in entry.fields {
            assert!(!f.doc.is_empty(), "{}.{}: no doc", entry.name, f.name);
        }
    }
}

#[test]
fn a_config_field_of_the_wrong_type_is_refused_naming_it() {
    // Every listed field is really read: a value of a type no field takes is refused.
    for entry in registry::plugins() {
        for f in entry.fields {
            let text = format!(
                "name = \"{}\"\n{} = 1979-05-27T07:32:00Z\n",
                entry.name, f.name
            );
            let e = parse(entry.axis, &text).expect_err("a date is no plugin setting");
            assert!(
                !e.contains("unknown field"),
                "{}.{}: {e}",
                entry.name,
                f.name
            );
        }
    }
}

#[test]
fn the_derive_keeps_the_first_doc_paragraph_and_skips_skipped_fields() {
    let trm = registry::find(Axis::Schedule, "trm").unwrap();
    let h = trm.fields.iter().find(|f| f.name == "h_cycles").unwrap();
    // The field's second paragraph ("ARC 3.") is for rustdoc only.
    assert_eq!(h.doc, "T, cycles per supervision step (reference H_cycles)");
    // A doc comment over two lines is one line in the registry.
    let hrm = registry::find(Axis::Schedule, "hrm").unwrap();
    assert!(
        hrm.doc.contains("each closed by z_H = f_H(z_H, z_L)"),
        "{}",
        hrm.doc
    );
    // `fixed_paths` is `#[serde(skip)]`: not an experiment-file field.
    let path = registry::find(Axis::Target, "dis-linear-path").unwrap();
    let names: Vec<&str> = path.fields.iter().map(|f| f.name).collect();
    assert_eq!(names, ["steps", "step_decay"]);
}
