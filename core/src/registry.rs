//! Every plugin this binary knows, collected at link time with `inventory`.
//!
//! A plugin's config struct derives [`Plugin`], which registers one [`PluginEntry`]
//! and its `#[typetag::serde]` config impl from the name written once;
//! `recursa plugins` prints the entries, and config errors list them.

use crate::{Error, Result};

pub use recursa_macros::Plugin;

/// The registered name of a plugin (the experiment file's `name = "..."`), implemented
/// by `#[derive(Plugin)]`.
pub trait Named {
    fn name(&self) -> &'static str;
}

/// The three plugin axes of a looped model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Axis {
    /// Which network calls one supervision step makes.
    Schedule,
    /// What each supervision step is trained against.
    Target,
    /// Whether a sample gets another supervision step.
    Halting,
}

impl Axis {
    /// The experiment-file table of this axis (`[schedule]`, `[target]`, `[halting]`).
    pub fn key(self) -> &'static str {
        match self {
            Axis::Schedule => "schedule",
            Axis::Target => "target",
            Axis::Halting => "halting",
        }
    }

    /// All axes, in the order a supervision step meets them.
    pub const ALL: [Axis; 3] = [Axis::Schedule, Axis::Target, Axis::Halting];
}

/// One config field of a plugin, for `recursa plugins` and error messages.
#[derive(Debug)]
pub struct Field {
    pub name: &'static str,
    pub doc: &'static str,
}

/// A registered plugin: its name (the config tag), axis, one-line doc and fields.
#[derive(Debug)]
pub struct PluginEntry {
    pub name: &'static str,
    pub axis: Axis,
    pub doc: &'static str,
    pub fields: &'static [Field],
}

inventory::collect!(PluginEntry);

/// Every registered plugin, sorted by axis then name.
pub fn plugins() -> Vec<&'static PluginEntry> {
    let mut all: Vec<_> = inventory::iter::<PluginEntry>.into_iter().collect();
    all.sort_by_key(|p| (p.axis, p.name));
    all
}

/// The registered names on one axis, comma-separated.
pub fn known_names(axis: Axis) -> String {
    let names: Vec<_> = plugins()
        .into_iter()
        .filter(|p| p.axis == axis)
        .map(|p| p.name)
        .collect();
    if names.is_empty() {
        "(none: is the plugin crate linked? add `use recursa_plugins as _;`)".into()
    } else {
        names.join(", ")
    }
}

/// The plugin registered as `name` on `axis`, or an error listing the known ones.
pub fn find(axis: Axis, name: &str) -> Result<&'static PluginEntry> {
    plugins()
        .into_iter()
        .find(|p| p.axis == axis && p.name == name)
        .ok_or_else(|| Error::UnknownPlugin {
            axis: axis.key(),
            name: name.to_string(),
            known: known_names(axis),
        })
}
