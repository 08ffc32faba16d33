//! Variables in option defaults and agent fields (`default: ${REGION}-a`,
//! `injectGitCredentials: ${INJECT_GIT_CREDENTIALS}`), expanded the way DevPod's
//! provider.yaml means them.
//!
//! That way is not a shell's, and providers are written against it:
//! - a name is upper-case letters, digits and `_` only: `$home` and `${home}` stay as
//!   written;
//! - `$NAME` and `${NAME}` are the same, and the braces need not pair: `$NAME}` and
//!   `${NAME` are references too (the stray brace goes with them);
//! - a name the lookup does not know stays as written (so a shell running the text later
//!   can still expand it), a known name with an empty value becomes empty;
//! - `${NAME:-word}` and `${NAME:+word}` are the value of `NAME` when it is known (the
//!   word is dropped, whatever the operator), and stay as written otherwise; the word
//!   runs to the next `}` or the end of the text, with or without the opening brace;
//! - `$$` is not an escape: `$$NAME` is a `$` followed by the value of `NAME`.

use std::collections::BTreeSet;

/// `text` with every variable reference that `lookup` knows replaced by its value.
pub fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut done = 0;
    for reference in References::new(text) {
        out.push_str(&text[done..reference.start]);
        match lookup(reference.name) {
            Some(value) => out.push_str(&value),
            None => out.push_str(&text[reference.start..reference.end]),
        }
        done = reference.end;
    }
    out.push_str(&text[done..]);
    out
}

/// The names `text` refers to, sorted, each once.
pub fn references(text: &str) -> Vec<String> {
    References::new(text)
        .map(|reference| reference.name.to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// One `$NAME`, `${NAME}` or `${NAME:-word}` in a text: its byte range and name.
struct Reference<'a> {
    start: usize,
    end: usize,
    name: &'a str,
}

/// The references of a text, left to right, not overlapping.
struct References<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> References<'a> {
    fn new(text: &'a str) -> Self {
        References { text, at: 0 }
    }
}

impl<'a> Iterator for References<'a> {
    type Item = Reference<'a>;

    fn next(&mut self) -> Option<Reference<'a>> {
        let text = self.text;
        let bytes = text.as_bytes();
        while let Some(offset) = text[self.at..].find('$') {
            let start = self.at + offset;
            let mut end = start + 1;
            if bytes.get(end) == Some(&b'{') {
                end += 1;
            }
            let name_start = end;
            while bytes.get(end).is_some_and(|b| is_name_byte(*b)) {
                end += 1;
            }
            if end == name_start {
                self.at = start + 1;
                continue;
            }
            let name = &text[name_start..end];
            if bytes.get(end) == Some(&b':') && matches!(bytes.get(end + 1), Some(b'-' | b'+')) {
                let word = end + 2;
                let word_end = text[word..].find('}').map_or(text.len(), |i| word + i);
                if word_end > word {
                    end = word_end;
                }
            }
            if bytes.get(end) == Some(&b'}') {
                end += 1;
            }
            self.at = end;
            return Some(Reference { start, end, name });
        }
        self.at = text.len();
        None
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<String> {
        match name {
            "REGION" => Some("eu-west-1".into()),
            "ZONE" => Some("a".into()),
            "EMPTY" => Some(String::new()),
            "DOLLAR" => Some("$ZONE".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_like_devpod() {
        let cases = [
            ("${REGION}-${ZONE}", "eu-west-1-a"),
            ("$REGION/$ZONE", "eu-west-1/a"),
            ("no variables", "no variables"),
            ("", ""),
            // Unknown names stay as written, braces and all.
            ("${MACHINE_ID}-disk", "${MACHINE_ID}-disk"),
            ("$UNKNOWN", "$UNKNOWN"),
            // Known but empty: empty.
            ("[${EMPTY}]", "[]"),
            // Lower-case is not a name.
            ("${region} $region", "${region} $region"),
            // Braces need not pair; the stray one goes with the reference.
            ("$REGION}x", "eu-west-1x"),
            ("${REGION", "eu-west-1"),
            // The name runs as long as it can: `$REGIONS` is another name.
            ("$REGIONS", "$REGIONS"),
            ("$REGION_1", "$REGION_1"),
            ("$REGION-1", "eu-west-1-1"),
            // Fallbacks: the value when known (whatever the operator), verbatim otherwise.
            ("${REGION:-us-east-1}", "eu-west-1"),
            ("${REGION:+set}", "eu-west-1"),
            ("${NOPE:-us-east-1}", "${NOPE:-us-east-1}"),
            ("$REGION:-x y", "eu-west-1"),
            ("${REGION:-}", "eu-west-1:-}"),
            ("${REGION:=x}", "eu-west-1:=x}"),
            // No escape for `$`.
            ("$$REGION", "$eu-west-1"),
            ("$ ${} $", "$ ${} $"),
            // Values are not expanded again.
            ("${DOLLAR}", "$ZONE"),
            ("été ${ZONE} ü", "été a ü"),
        ];
        for (text, want) in cases {
            assert_eq!(expand(text, &lookup), want, "expand({text:?})");
        }
    }

    #[test]
    fn lists_references() {
        let cases: [(&str, &[&str]); 6] = [
            ("${B}-$A-${B}", &["A", "B"]),
            ("echo ${AWS_PROVIDER} token", &["AWS_PROVIDER"]),
            ("${X:-${Y}}", &["X"]),
            ("$lower ${}", &[]),
            ("$1 and $_", &["1", "_"]),
            ("", &[]),
        ];
        for (text, want) in cases {
            assert_eq!(references(text), want, "references({text:?})");
        }
    }
}
