//! What a POSIX machine says and takes: `uname -m` names, and quoting for `sh`.

/// `uname -m` names to Rust's `std::env::consts::ARCH` names.
pub fn normalize_arch(uname: &str) -> &str {
    match uname.trim() {
        "amd64" | "x86_64" => "x86_64",
        "arm64" | "aarch64" | "armv8l" => "aarch64",
        "i386" | "i486" | "i586" | "i686" => "x86",
        a if a.starts_with("armv") => "arm",
        a => a,
    }
}

/// Quote for a POSIX shell.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// [`sh_quote`], unless every character is one a shell takes as it is.
pub fn sh_quote_if_needed(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@~+,".contains(c))
    {
        s.to_owned()
    } else {
        sh_quote(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architectures_are_compared_by_rust_names() {
        assert_eq!(normalize_arch("x86_64\n"), "x86_64");
        assert_eq!(normalize_arch("amd64"), "x86_64");
        assert_eq!(normalize_arch("arm64"), "aarch64");
        assert_eq!(normalize_arch("aarch64"), "aarch64");
        assert_eq!(normalize_arch("armv7l"), "arm");
        assert_eq!(normalize_arch("riscv64"), "riscv64");
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote_if_needed("/a/b"), "/a/b");
        assert_eq!(sh_quote_if_needed("a;b"), "'a;b'");
        assert_eq!(sh_quote_if_needed(""), "''");
    }
}
