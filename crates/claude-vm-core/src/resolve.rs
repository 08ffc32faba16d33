//! Which workspace did the user mean? Every command accepts an id, a name or a unique id
//! prefix, in that order of precedence (Docker's rule, plus names).

/// Something that can be matched by id or name.
pub trait Named {
    fn id(&self) -> &str;
    fn name(&self) -> &str;
}

/// The outcome of matching a user's query against the known workspaces.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolution<'a, T> {
    Found(&'a T),
    NotFound,
    /// Several ids start with the query; carries the candidates.
    Ambiguous(Vec<&'a T>),
}

/// Resolve `query` against `items`: exact id, then exact name, then unique id prefix.
pub fn resolve<'a, T: Named>(query: &str, items: &'a [T]) -> Resolution<'a, T> {
    if query.is_empty() {
        return Resolution::NotFound;
    }
    if let Some(item) = items.iter().find(|i| i.id() == query) {
        return Resolution::Found(item);
    }
    if let Some(item) = items.iter().find(|i| i.name() == query) {
        return Resolution::Found(item);
    }
    let matches: Vec<&T> = items.iter().filter(|i| i.id().starts_with(query)).collect();
    match matches.len() {
        0 => Resolution::NotFound,
        1 => Resolution::Found(matches[0]),
        _ => Resolution::Ambiguous(matches),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    struct W(&'static str, &'static str);
    impl Named for W {
        fn id(&self) -> &str {
            self.0
        }
        fn name(&self) -> &str {
            self.1
        }
    }

    fn check(query: &str, want: &str) {
        let items = [
            W("3f2504e0bb11", "bold-fire-1234"),
            W("3f2599aa0000", "quiet-lake-5678"),
            W("8a9b2c3d4e5f", "3f25"), // a name that is also a prefix of other ids
            W("aaaaaaaaaaaa", "cafe"),
        ];
        let got = match resolve(query, &items) {
            Resolution::Found(w) => format!("found {}", w.0),
            Resolution::NotFound => "not found".into(),
            Resolution::Ambiguous(c) => {
                format!(
                    "ambiguous {}",
                    c.iter().map(|w| w.0).collect::<Vec<_>>().join(",")
                )
            }
        };
        assert_eq!(got, want, "query {query:?}");
    }

    #[test]
    fn resolution_order() {
        check("3f2504e0bb11", "found 3f2504e0bb11");
        check("bold-fire-1234", "found 3f2504e0bb11");
        check("3f2504", "found 3f2504e0bb11");
        check("3f25", "found 8a9b2c3d4e5f"); // exact name beats prefix
        check("3f2", "ambiguous 3f2504e0bb11,3f2599aa0000");
        check("8a", "found 8a9b2c3d4e5f");
        check("cafe", "found aaaaaaaaaaaa");
        check("nope", "not found");
        check("", "not found");
        check("bold-fire", "not found"); // names are never matched by prefix
    }
}
