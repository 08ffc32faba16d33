//! A feature's options as its install script sees them: environment variables.
//!
//! Names follow the spec's rule, `str.replace(/[^\w_]/g, '_').replace(/^[\d_]+/g,
//! '_').toUpperCase()`: every character but ASCII letters, digits and `_` becomes `_` (one
//! per UTF-16 unit, as in JavaScript), a leading run of digits and underscores becomes one
//! `_`, and the rest is upper-cased. Values are the user's, else the option's default;
//! an option with neither is not set at all.
//!
//! Values are checked where the reference implementation passes anything through: an
//! unknown option is an error listing the valid ones, an `enum` option takes only its
//! values, and a boolean option takes `true`/`false` or the strings `"true"`/`"false"`
//! (any case, written lower-case), since an install script testing `[ "$X" = true ]`
//! would silently read anything else as false. A boolean or a number given to a string
//! option is passed as its text, as the reference implementation does.

use std::collections::BTreeMap;

use crate::Error;
use crate::config::OptionValue;
use crate::features::metadata::{FeatureMetadata, OptionType};

/// The environment variable name of an option id.
pub fn option_env_name(id: &str) -> String {
    let mut name = String::with_capacity(id.len());
    for c in id.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            name.push(c);
        } else {
            name.extend(std::iter::repeat_n('_', c.len_utf16()));
        }
    }
    let rest = name.trim_start_matches(|c: char| c.is_ascii_digit() || c == '_');
    if rest.len() != name.len() {
        name = format!("_{rest}");
    }
    name.to_ascii_uppercase()
}

/// The options environment of one feature: variable name to value, sorted by name.
pub fn options_env(
    key: &str,
    metadata: &FeatureMetadata,
    given: &BTreeMap<String, OptionValue>,
) -> Result<BTreeMap<String, String>, Error> {
    for option in given.keys() {
        if !metadata.options.contains_key(option) {
            return Err(Error::UnknownOption {
                key: key.to_owned(),
                option: option.clone(),
                valid: metadata.options.keys().cloned().collect(),
            });
        }
    }
    let mut env = BTreeMap::new();
    let mut named: BTreeMap<String, &str> = BTreeMap::new();
    for (option, spec) in &metadata.options {
        let variable = option_env_name(option);
        if variable.is_empty() {
            continue;
        }
        if let Some(first) = named.insert(variable.clone(), option) {
            return Err(Error::OptionCollision {
                key: key.to_owned(),
                first: first.to_owned(),
                second: option.clone(),
                variable,
            });
        }
        let (value, from_user) = match (given.get(option), &spec.default) {
            (Some(v), _) => (v, true),
            (None, Some(default)) => (default, false),
            (None, None) => continue,
        };
        let bad = |expected: String| Error::BadOptionValue {
            key: key.to_owned(),
            option: option.clone(),
            value: match value {
                OptionValue::Bool(b) => b.to_string(),
                OptionValue::String(s) => format!("{s:?}"),
            },
            expected,
        };
        let text = match (spec.kind, value) {
            (OptionType::Boolean, OptionValue::Bool(b)) => b.to_string(),
            (OptionType::Boolean, OptionValue::String(s)) => {
                match s.to_ascii_lowercase().as_str() {
                    "true" => "true".to_owned(),
                    "false" => "false".to_owned(),
                    _ if !from_user => s.clone(),
                    _ => return Err(bad("it is a boolean option: true or false".to_owned())),
                }
            }
            (OptionType::String, v) => v.as_env(),
        };
        if from_user && !spec.allowed.is_empty() && !spec.allowed.contains(&text) {
            return Err(bad(format!(
                "it must be one of {}",
                spec.allowed.join(", ")
            )));
        }
        env.insert(variable, text);
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::metadata::OptionSpec;

    #[test]
    fn names_are_normalised_like_the_spec() {
        // Expected values from the spec's JavaScript expression.
        let cases = [
            ("version", "VERSION"),
            ("installZsh", "INSTALLZSH"),
            ("node-version", "NODE_VERSION"),
            ("with.dots and spaces", "WITH_DOTS_AND_SPACES"),
            ("1st", "_ST"),
            ("_private", "_PRIVATE"),
            ("__x", "_X"),
            ("9_9x", "_X"),
            ("123", "_"),
            ("_", "_"),
            ("a1_b2", "A1_B2"),
            ("café", "CAF_"),
            ("emoji😀", "EMOJI__"),
            ("-lead", "_LEAD"),
        ];
        for (id, want) in cases {
            assert_eq!(option_env_name(id), want, "{id:?}");
        }
    }

    fn spec(kind: OptionType, default: Option<OptionValue>, allowed: &[&str]) -> OptionSpec {
        OptionSpec {
            kind,
            default,
            allowed: allowed.iter().map(|s| s.to_string()).collect(),
            proposals: Vec::new(),
            description: None,
        }
    }

    fn python() -> FeatureMetadata {
        FeatureMetadata {
            id: "python".into(),
            version: None,
            name: None,
            description: None,
            options: BTreeMap::from([
                (
                    "version".into(),
                    spec(
                        OptionType::String,
                        Some(OptionValue::String("latest".into())),
                        &["latest", "3.10", "3.9"],
                    ),
                ),
                (
                    "pip".into(),
                    spec(OptionType::Boolean, Some(OptionValue::Bool(true)), &[]),
                ),
                (
                    "optimize".into(),
                    spec(OptionType::Boolean, Some(OptionValue::Bool(true)), &[]),
                ),
                ("toolsPath".into(), spec(OptionType::String, None, &[])),
                (
                    "extra-index".into(),
                    spec(
                        OptionType::String,
                        Some(OptionValue::String("".into())),
                        &[],
                    ),
                ),
            ]),
            container_env: BTreeMap::new(),
            installs_after: Vec::new(),
            depends_on: BTreeMap::new(),
            entrypoint: None,
            mounts: Vec::new(),
            privileged: false,
            init: false,
            cap_add: Vec::new(),
            security_opt: Vec::new(),
        }
    }

    fn given(pairs: &[(&str, OptionValue)]) -> BTreeMap<String, OptionValue> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn the_spec_example() {
        let env = options_env(
            "python",
            &python(),
            &given(&[
                ("version", OptionValue::String("3.10".into())),
                ("pip", OptionValue::Bool(false)),
            ]),
        )
        .unwrap();
        let want: BTreeMap<String, String> = [
            ("VERSION", "3.10"),
            ("PIP", "false"),
            ("OPTIMIZE", "true"),
            ("EXTRA_INDEX", ""),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(env, want);
    }

    /// (option, value given, the variable's value or a piece of the error)
    #[test]
    fn values_table() {
        let s = |v: &str| OptionValue::String(v.into());
        type Case = (
            &'static str,
            OptionValue,
            Result<(&'static str, &'static str), &'static str>,
        );
        let cases: &[Case] = &[
            ("pip", OptionValue::Bool(true), Ok(("PIP", "true"))),
            ("pip", s("false"), Ok(("PIP", "false"))),
            ("pip", s("TRUE"), Ok(("PIP", "true"))),
            ("pip", s("yes"), Err("true or false")),
            ("version", s("3.9"), Ok(("VERSION", "3.9"))),
            ("version", s("2.7"), Err("one of latest, 3.10, 3.9")),
            (
                "toolsPath",
                s("/opt/tools"),
                Ok(("TOOLSPATH", "/opt/tools")),
            ),
            (
                "toolsPath",
                OptionValue::Bool(true),
                Ok(("TOOLSPATH", "true")),
            ),
            ("toolsPath", s("42"), Ok(("TOOLSPATH", "42"))),
            (
                "colour",
                s("red"),
                Err(
                    "has no option \"colour\"; its options are extra-index, optimize, pip, toolsPath, version",
                ),
            ),
        ];
        for (option, value, want) in cases {
            let got = options_env("python", &python(), &given(&[(option, value.clone())]));
            match (got, want) {
                (Ok(env), Ok((var, v))) => assert_eq!(
                    env.get(*var).map(String::as_str),
                    Some(*v),
                    "{option} {value:?}"
                ),
                (Err(e), Err(piece)) => {
                    assert!(e.to_string().contains(piece), "{option} {value:?}: {e}")
                }
                (got, want) => panic!("{option} {value:?}: {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn an_option_without_default_or_value_is_unset() {
        let env = options_env("python", &python(), &BTreeMap::new()).unwrap();
        assert!(!env.contains_key("TOOLSPATH"));
        assert_eq!(env["VERSION"], "latest");
    }

    #[test]
    fn a_feature_without_options_says_so() {
        let mut m = python();
        m.options.clear();
        let e = options_env(
            "./x",
            &m,
            &given(&[("version", OptionValue::String("1".into()))]),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "feature \"./x\" has no option \"version\"; it takes no options"
        );
    }

    #[test]
    fn colliding_names_are_refused() {
        let mut m = python();
        m.options
            .insert("extra_index".into(), spec(OptionType::String, None, &[]));
        assert!(matches!(
            options_env("python", &m, &BTreeMap::new()),
            Err(Error::OptionCollision { variable, .. }) if variable == "EXTRA_INDEX"
        ));
    }
}
