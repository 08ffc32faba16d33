//! This machine in the words of provider.yaml: Go's names for operating systems and
//! architectures (`darwin`, `amd64`), which `binaries` entries are keyed by and which
//! commands see as `DEVPOD_OS` and `DEVPOD_ARCH`.

use crate::manifest::Binary;

/// This machine's operating system as Go names it (`linux`, `darwin`, `windows`, ...).
pub fn devpod_os() -> &'static str {
    go_os(std::env::consts::OS)
}

/// This machine's architecture as Go names it (`amd64`, `arm64`, ...).
pub fn devpod_arch() -> &'static str {
    go_arch(std::env::consts::ARCH, cfg!(target_endian = "little"))
}

fn go_os(rust: &'static str) -> &'static str {
    match rust {
        "macos" => "darwin",
        other => other,
    }
}

fn go_arch(rust: &'static str, little_endian: bool) -> &'static str {
    match rust {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if little_endian => "ppc64le",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// The entry of `builds` for `os`/`arch`. When several match, the last one wins, as it
/// does in DevPod ([`crate::parse`] warns about such duplicates).
pub fn binary_for<'a>(builds: &'a [Binary], os: &str, arch: &str) -> Option<&'a Binary> {
    builds.iter().rev().find(|b| b.os == os && b.arch == arch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_platforms_as_go_does() {
        assert_eq!(go_os("macos"), "darwin");
        assert_eq!(go_os("linux"), "linux");
        assert_eq!(go_os("windows"), "windows");
        assert_eq!(go_arch("x86_64", true), "amd64");
        assert_eq!(go_arch("aarch64", true), "arm64");
        assert_eq!(go_arch("x86", true), "386");
        assert_eq!(go_arch("powerpc64", true), "ppc64le");
        assert_eq!(go_arch("powerpc64", false), "ppc64");
        assert_eq!(go_arch("riscv64", true), "riscv64");
        // This machine is one of the platforms providers publish binaries for.
        assert!(["linux", "darwin", "windows"].contains(&devpod_os()));
        assert!(["amd64", "arm64"].contains(&devpod_arch()));
    }

    #[test]
    fn picks_the_build_for_a_platform() {
        let build = |os: &str, arch: &str, path: &str| Binary {
            os: os.into(),
            arch: arch.into(),
            path: path.into(),
            ..Binary::default()
        };
        let builds = [
            build("linux", "amd64", "first"),
            build("linux", "arm64", "arm"),
            build("darwin", "arm64", "mac"),
            build("linux", "amd64", "second"),
        ];
        let path = |os, arch| binary_for(&builds, os, arch).map(|b| b.path.as_str());
        assert_eq!(path("linux", "amd64"), Some("second"));
        assert_eq!(path("linux", "arm64"), Some("arm"));
        assert_eq!(path("darwin", "arm64"), Some("mac"));
        assert_eq!(path("darwin", "amd64"), None);
        assert_eq!(path("windows", "amd64"), None);
    }
}
