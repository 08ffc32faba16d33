//! Workspace names: generated ones look like `bold-fire-1234`; chosen ones must be usable
//! as a DNS label, because a workspace is reachable as `<name>.claude-vm` over SSH.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use rand::seq::IndexedRandom;
use serde::{Deserialize, Serialize};

use crate::id::WorkspaceId;

const ADJECTIVES: &[&str] = &[
    "autumn",
    "bold",
    "brave",
    "bright",
    "calm",
    "clever",
    "cool",
    "crimson",
    "dark",
    "dawn",
    "eager",
    "early",
    "fancy",
    "fast",
    "fierce",
    "gentle",
    "golden",
    "green",
    "hidden",
    "icy",
    "jolly",
    "keen",
    "kind",
    "late",
    "lively",
    "lucky",
    "misty",
    "noble",
    "odd",
    "patient",
    "proud",
    "quick",
    "quiet",
    "rapid",
    "red",
    "rough",
    "royal",
    "shy",
    "silent",
    "silver",
    "small",
    "snowy",
    "solid",
    "sparkling",
    "steady",
    "still",
    "sunny",
    "swift",
    "tidy",
    "twilight",
    "vivid",
    "wandering",
    "warm",
    "wild",
    "winter",
    "wise",
    "young",
    "zesty",
];

const NOUNS: &[&str] = &[
    "bird",
    "breeze",
    "brook",
    "cloud",
    "dew",
    "dream",
    "dust",
    "field",
    "fire",
    "flower",
    "fog",
    "forest",
    "frost",
    "glade",
    "grass",
    "haze",
    "hill",
    "lake",
    "leaf",
    "meadow",
    "moon",
    "morning",
    "mountain",
    "night",
    "paper",
    "pine",
    "pond",
    "rain",
    "resonance",
    "river",
    "sea",
    "shadow",
    "shape",
    "silence",
    "sky",
    "smoke",
    "snow",
    "sound",
    "star",
    "stone",
    "sun",
    "surf",
    "thunder",
    "tree",
    "violet",
    "voice",
    "water",
    "wave",
    "wildflower",
    "wind",
];

/// Longest name accepted (a DNS label).
pub const MAX_NAME_LEN: usize = 63;

/// A valid workspace name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WorkspaceName(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidName {
    #[error("workspace name is empty")]
    Empty,
    #[error("workspace name {0:?} is longer than {MAX_NAME_LEN} characters")]
    TooLong(String),
    #[error(
        "workspace name {0:?} may only contain lowercase letters, digits and '-', and must start and end with a letter or digit"
    )]
    BadCharacters(String),
    #[error(
        "workspace name {0:?} looks like a workspace id; pick a name that is not 12 hex digits"
    )]
    LooksLikeId(String),
}

impl WorkspaceName {
    /// A random `adjective-noun-NNNN` name.
    pub fn generate(rng: &mut impl Rng) -> Self {
        let adjective = ADJECTIVES.choose(rng).expect("non-empty list");
        let noun = NOUNS.choose(rng).expect("non-empty list");
        let n: u16 = rng.random_range(1000..10000);
        WorkspaceName(format!("{adjective}-{noun}-{n}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for WorkspaceName {
    type Err = InvalidName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(InvalidName::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(InvalidName::TooLong(s.to_owned()));
        }
        let ok_chars = s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok_chars || s.starts_with('-') || s.ends_with('-') {
            return Err(InvalidName::BadCharacters(s.to_owned()));
        }
        if WorkspaceId::looks_like_id(s) {
            return Err(InvalidName::LooksLikeId(s.to_owned()));
        }
        Ok(WorkspaceName(s.to_owned()))
    }
}

impl TryFrom<String> for WorkspaceName {
    type Error = InvalidName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<WorkspaceName> for String {
    fn from(n: WorkspaceName) -> String {
        n.0
    }
}

impl fmt::Display for WorkspaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for WorkspaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WorkspaceName({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn generated_names_are_valid_and_shaped_like_the_design() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..1000 {
            let name = WorkspaceName::generate(&mut rng);
            let parsed: WorkspaceName = name.as_str().parse().unwrap();
            assert_eq!(parsed, name);
            let parts: Vec<&str> = name.as_str().split('-').collect();
            assert_eq!(parts.len(), 3, "{name}");
            assert_eq!(parts[2].len(), 4);
            assert!(parts[2].parse::<u16>().is_ok());
        }
    }

    #[test]
    fn name_validation() {
        let cases: &[(&str, Option<InvalidName>)] = &[
            ("bold-fire-1234", None),
            ("a", None),
            ("my-ws2", None),
            ("", Some(InvalidName::Empty)),
            ("Bold", Some(InvalidName::BadCharacters("Bold".into()))),
            ("-x", Some(InvalidName::BadCharacters("-x".into()))),
            ("x-", Some(InvalidName::BadCharacters("x-".into()))),
            ("a_b", Some(InvalidName::BadCharacters("a_b".into()))),
            ("a/b", Some(InvalidName::BadCharacters("a/b".into()))),
            ("../etc", Some(InvalidName::BadCharacters("../etc".into()))),
            (
                "3f2504e0bb11",
                Some(InvalidName::LooksLikeId("3f2504e0bb11".into())),
            ),
        ];
        for (input, want) in cases {
            let got = input.parse::<WorkspaceName>().err();
            assert_eq!(&got, want, "{input}");
        }
        let long = "a".repeat(64);
        assert_eq!(
            long.parse::<WorkspaceName>().err(),
            Some(InvalidName::TooLong(long.clone()))
        );
        assert!("a".repeat(63).parse::<WorkspaceName>().is_ok());
    }
}
