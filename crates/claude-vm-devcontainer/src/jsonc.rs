//! Reading JSON with comments (devcontainer.json, devcontainer-feature.json) and typing
//! its values with the property path in every error.
//!
//! The format is VS Code's "JSON with comments": `//` and `/* */` comments and trailing
//! commas, nothing else of JSON5 (no single quotes, unquoted keys or hex numbers), so a file
//! we accept is one every other dev container tool accepts too.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use crate::Error;

fn options() -> jsonc_parser::ParseOptions {
    jsonc_parser::ParseOptions {
        allow_comments: true,
        allow_trailing_commas: true,
        allow_loose_object_property_names: false,
        allow_missing_commas: false,
        allow_single_quoted_strings: false,
        allow_hexadecimal_numbers: false,
        allow_unary_plus_numbers: false,
        allow_bare_decimal_point_numbers: false,
        allow_non_finite_numbers: false,
        allow_extended_string_escapes: false,
    }
}

/// Parse `text` (the contents of `path`) as one JSON object.
pub(crate) fn parse_object(path: &Path, text: &str) -> Result<Map<String, Value>, Error> {
    // A byte order mark is allowed by editors that write one.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let value: Value = jsonc_parser::parse_to_serde_value(text, &options()).map_err(|e| {
        let mut message = e.kind().to_string();
        if let Some(first) = message.get(..1) {
            message = first.to_lowercase() + &message[1..];
        }
        Error::Syntax {
            path: path.to_path_buf(),
            line: e.line_display(),
            column: e.column_display(),
            message,
        }
    })?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(Error::NotAnObject {
            path: path.to_path_buf(),
        }),
    }
}

/// Read and parse the file at `path`.
pub(crate) fn read_object(path: &Path) -> Result<Map<String, Value>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_object(path, &text)
}

/// `parent.key`, or `parent["key"]` for keys that are not plain words.
pub(crate) fn child(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (parent.is_empty(), plain) {
        (true, true) => key.to_owned(),
        (true, false) => format!("[{key:?}]"),
        (false, true) => format!("{parent}.{key}"),
        (false, false) => format!("{parent}[{key:?}]"),
    }
}

/// `parent[index]`.
pub(crate) fn item(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// Typing values of one file: each failure is an [`Error::Type`] naming the property.
pub(crate) struct Typer<'a> {
    pub path: &'a Path,
}

impl Typer<'_> {
    pub fn fail<T>(&self, property: &str, expected: &'static str) -> Result<T, Error> {
        Err(Error::Type {
            path: self.path.to_path_buf(),
            property: property.to_owned(),
            expected,
        })
    }

    pub fn string(&self, v: &Value, property: &str) -> Result<String, Error> {
        match v {
            Value::String(s) => Ok(s.clone()),
            _ => self.fail(property, "a string"),
        }
    }

    pub fn opt_string(&self, v: Option<&Value>, property: &str) -> Result<Option<String>, Error> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(v) => self.string(v, property).map(Some),
        }
    }

    pub fn opt_bool(&self, v: Option<&Value>, property: &str) -> Result<Option<bool>, Error> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => self.fail(property, "true or false"),
        }
    }

    pub fn object<'v>(
        &self,
        v: &'v Value,
        property: &str,
    ) -> Result<&'v Map<String, Value>, Error> {
        match v {
            Value::Object(map) => Ok(map),
            _ => self.fail(property, "an object"),
        }
    }

    /// An array of strings; absent or null is empty.
    pub fn strings(&self, v: Option<&Value>, property: &str) -> Result<Vec<String>, Error> {
        match v {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| self.string(v, &item(property, i)))
                .collect(),
            Some(_) => self.fail(property, "an array of strings"),
        }
    }

    /// A string or an array of strings (`cacheFrom`, `dockerComposeFile`).
    pub fn string_or_strings(
        &self,
        v: Option<&Value>,
        property: &str,
    ) -> Result<Vec<String>, Error> {
        match v {
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(_)) | None | Some(Value::Null) => self.strings(v, property),
            Some(_) => self.fail(property, "a string or an array of strings"),
        }
    }

    /// An object of strings; absent or null is empty.
    pub fn string_map(
        &self,
        v: Option<&Value>,
        property: &str,
    ) -> Result<BTreeMap<String, String>, Error> {
        match v {
            None | Some(Value::Null) => Ok(BTreeMap::new()),
            Some(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| Ok((k.clone(), self.string(v, &child(property, k))?)))
                .collect(),
            Some(_) => self.fail(property, "an object of strings"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_trailing_commas_are_json() {
        let text =
            "// header\n{\n  /* block */ \"image\": \"x\", // end\n  \"runArgs\": [\"a\",],\n}\n";
        let map = parse_object(Path::new("dc.json"), text).unwrap();
        assert_eq!(map["image"], "x");
        assert_eq!(map["runArgs"], serde_json::json!(["a"]));
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        let map = parse_object(Path::new("dc.json"), "\u{feff}{\"a\": 1}").unwrap();
        assert_eq!(map["a"], 1);
    }

    /// (text, line, column) of the first error.
    #[test]
    fn syntax_errors_name_file_line_and_column() {
        let cases = [
            ("{\n  \"image\": \"x\"\n  \"name\": \"y\"\n}", 2, 15),
            ("{\n  \"image\": \"x\",,\n}", 2, 16),
            ("{\n  'image': 'x'\n}", 2, 3),
            ("{\n  image: \"x\"\n}", 2, 3),
            ("{\n  \"a\": 1,\n  \"b\": [1, 2\n}", 4, 1),
            ("{ /* never closed", 1, 3),
        ];
        for (text, line, column) in cases {
            let e = parse_object(Path::new("/p/devcontainer.json"), text).unwrap_err();
            match &e {
                Error::Syntax {
                    path,
                    line: l,
                    column: c,
                    ..
                } => {
                    assert_eq!(path, Path::new("/p/devcontainer.json"));
                    assert_eq!((*l, *c), (line, column), "{text:?}: {e}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
            let shown = e.to_string();
            assert!(
                shown.starts_with(&format!(
                    "/p/devcontainer.json:{line}:{column}: invalid JSON: "
                )),
                "{shown}"
            );
        }
    }

    #[test]
    fn the_top_must_be_an_object() {
        for text in ["[]", "\"x\"", "", "  // nothing\n"] {
            assert!(
                matches!(
                    parse_object(Path::new("f"), text),
                    Err(Error::NotAnObject { .. })
                ),
                "{text:?}"
            );
        }
    }

    #[test]
    fn property_paths() {
        assert_eq!(child("", "image"), "image");
        assert_eq!(child("build", "args"), "build.args");
        assert_eq!(child("features", "./hello"), "features[\"./hello\"]");
        assert_eq!(child("", "a b"), "[\"a b\"]");
        assert_eq!(item("mounts", 2), "mounts[2]");
    }
}
