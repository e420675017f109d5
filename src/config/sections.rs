//! Reads the YAML tree into `FileConfig` one section (and one list entry) at
//! a time, so a file with several mistakes gets all of them back, each with
//! its path, instead of only the first one serde meets.

use super::file::FileConfig;
use super::FieldError;
use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};

/// Every top-level key `FileConfig` knows (keep in step with its fields:
/// the struct literal in `read` fails to compile when one is missing there).
const SECTIONS: &[&str] = &[
    "server",
    "storage",
    "access_log",
    "admin",
    "demo_upstream",
    "routing",
    "billing",
    "channels",
    "models",
    "plans",
    "console",
    "payments",
    "cluster",
];

pub fn read(tree: Value) -> Result<FileConfig, Vec<FieldError>> {
    let Value::Mapping(mut map) = tree else {
        return Err(vec![FieldError {
            path: "(root)".into(),
            message: "the file must be a mapping of sections".into(),
        }]);
    };
    let mut errors = Vec::new();
    for key in map.keys() {
        let name = key.as_str().map_or_else(|| format!("{key:?}"), str::to_string);
        if !SECTIONS.contains(&name.as_str()) {
            errors.push(FieldError { path: name, message: format!("unknown section, expected one of {SECTIONS:?}") });
        }
    }
    let mut r = Reader { map: &mut map, errors: &mut errors };
    let file = FileConfig {
        server: r.section("server"),
        storage: r.section("storage"),
        access_log: r.section("access_log"),
        admin: r.section("admin"),
        demo_upstream: r.section("demo_upstream"),
        routing: r.section("routing"),
        billing: r.section("billing"),
        channels: r.list("channels"),
        models: r.list("models"),
        plans: r.list("plans"),
        console: r.section("console"),
        payments: r.section("payments"),
        cluster: r.section("cluster"),
    };
    if errors.is_empty() {
        Ok(file)
    } else {
        Err(errors)
    }
}

struct Reader<'a> {
    map: &'a mut Mapping,
    errors: &'a mut Vec<FieldError>,
}

impl Reader<'_> {
    /// One section; its default when absent or broken (the errors decide).
    fn section<T: DeserializeOwned + Default>(&mut self, key: &str) -> T {
        match self.map.remove(key) {
            None | Some(Value::Null) => T::default(),
            Some(v) => self.value(key, v).unwrap_or_default(),
        }
    }

    /// A list section, entry by entry.
    fn list<T: DeserializeOwned>(&mut self, key: &str) -> Vec<T> {
        match self.map.remove(key) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Sequence(items)) => {
                items.into_iter().enumerate().filter_map(|(i, v)| self.value(&format!("{key}[{i}]"), v)).collect()
            }
            Some(_) => {
                self.errors.push(FieldError { path: key.to_string(), message: "must be a list".into() });
                Vec::new()
            }
        }
    }

    fn value<T: DeserializeOwned>(&mut self, prefix: &str, v: Value) -> Option<T> {
        serde_path_to_error::deserialize(v)
            .map_err(|e| {
                let inner = e.path().to_string();
                let path = if inner == "." { prefix.to_string() } else { format!("{prefix}.{inner}") };
                self.errors.push(FieldError { path, message: e.into_inner().to_string() });
            })
            .ok()
    }
}
