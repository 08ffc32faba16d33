//! Short hex ids, as Docker shows them: 12 lowercase hex digits.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Length in hex digits of a workspace id.
pub const ID_LEN: usize = 12;

/// The stable identity of a workspace (`3f2504e0bb11`). Names can be chosen by the user;
/// ids cannot, and every provider resource carries the id.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WorkspaceId(String);

impl WorkspaceId {
    /// A fresh random id.
    pub fn generate(rng: &mut impl Rng) -> Self {
        let n: u64 = rng.random();
        WorkspaceId(format!("{:012x}", n & 0xffff_ffff_ffff))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `s` has the shape of an id (so it cannot be used as a name).
    pub fn looks_like_id(s: &str) -> bool {
        s.len() == ID_LEN
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid workspace id {0:?}: expected {ID_LEN} lowercase hex digits")]
pub struct InvalidId(pub String);

impl FromStr for WorkspaceId {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if Self::looks_like_id(s) {
            Ok(WorkspaceId(s.to_owned()))
        } else {
            Err(InvalidId(s.to_owned()))
        }
    }
}

impl TryFrom<String> for WorkspaceId {
    type Error = InvalidId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<WorkspaceId> for String {
    fn from(id: WorkspaceId) -> String {
        id.0
    }
}

impl fmt::Display for WorkspaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for WorkspaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WorkspaceId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn generated_ids_have_the_id_shape() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..1000 {
            let id = WorkspaceId::generate(&mut rng);
            assert!(WorkspaceId::looks_like_id(id.as_str()), "{id}");
            assert_eq!(id.as_str().parse::<WorkspaceId>().unwrap(), id);
        }
    }

    #[test]
    fn rejects_non_ids() {
        for s in ["", "abc", "3F2504E0BB11", "3f2504e0bb1z", "3f2504e0bb112"] {
            assert!(s.parse::<WorkspaceId>().is_err(), "{s}");
        }
    }
}
