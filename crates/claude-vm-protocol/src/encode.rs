//! Percent-encoding of what goes into the API's URLs, with `percent-encoding`'s sets: one
//! for a path segment, one for a query value.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// One segment of a path (`/api/v1/workspaces/<segment>`): everything but RFC 3986's
/// unreserved characters (letters, digits, `-`, `.`, `_`, `~`) is escaped, `/` included.
pub const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A value in a query string (`?key=<value>&...`): as a segment, but `/` stays (a query may
/// hold it, RFC 3986 §3.4), so local paths read as paths; `&`, `=`, `+`, `#`, `%` and
/// spaces are escaped.
pub const QUERY_VALUE: &AsciiSet = &PATH_SEGMENT.remove(b'/');

/// `s` as one path segment.
pub fn path_segment(s: &str) -> String {
    utf8_percent_encode(s, PATH_SEGMENT).to_string()
}

/// `s` as a query value.
pub fn query_value(s: &str) -> String {
    utf8_percent_encode(s, QUERY_VALUE).to_string()
}

/// `key=value&...` of the pairs that have a value, in order.
pub fn query<'a>(pairs: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> String {
    let mut out = String::new();
    for (key, value) in pairs {
        if let Some(v) = value {
            if !out.is_empty() {
                out.push('&');
            }
            out.push_str(key);
            out.push('=');
            out.push_str(&query_value(v));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_and_query_values() {
        assert_eq!(path_segment("a b/c"), "a%20b%2Fc");
        assert_eq!(path_segment("bold-fire-1"), "bold-fire-1");
        assert_eq!(path_segment("é?#%"), "%C3%A9%3F%23%25");
        assert_eq!(query_value("/w/a b?x=1&y+z"), "/w/a%20b%3Fx%3D1%26y%2Bz");
        assert_eq!(
            query([("a", Some("1 2")), ("b", None), ("c", Some("/x"))]),
            "a=1%202&c=/x"
        );
        assert_eq!(query([("a", None)]), "");
    }
}
