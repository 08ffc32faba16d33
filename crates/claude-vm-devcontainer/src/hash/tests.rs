//! Tests of the content hash on a real project: stable, changed by every input, unchanged
//! by what the image does not depend on (times, ignored files, container settings).

use super::*;
use crate::{Context, Located, parse_str, resolve_features};
use std::time::{Duration, SystemTime};

const CONFIG: &str = r#"{
    "build": {"dockerfile": "Dockerfile", "context": "..", "args": {"V": "1"}},
    "features": {"./hello": {"greeting": "hi"}},
    "postCreateCommand": "make"
}"#;

const FEATURE: &str =
    r#"{"id": "hello", "options": {"greeting": {"type": "string", "default": "hey"}}}"#;

/// A project: a build with a context (the project) and one local feature.
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        (".devcontainer/devcontainer.json", CONFIG),
        (".devcontainer/Dockerfile", "FROM debian\nRUN true\n"),
        (".devcontainer/hello/devcontainer-feature.json", FEATURE),
        (".devcontainer/hello/install.sh", "#!/bin/sh\necho hi\n"),
        ("src/main.rs", "fn main() {}\n"),
        ("README.md", "hello\n"),
        ("build.log", "noise\n"),
        ("keep.log", "kept\n"),
        ("node_modules/x/index.js", "x\n"),
        ("deep/tmp/cache", "c\n"),
        (
            ".dockerignore",
            "# comment\nnode_modules\n*.log\n!keep.log\n**/tmp\n/.devcontainer/devcontainer.json\n",
        ),
    ];
    for (path, contents) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
    dir
}

fn hash_of(root: &Path, extra: &BTreeMap<String, String>) -> ContentHash {
    let located = crate::find(root, None).unwrap().unwrap();
    let dc = crate::load(&located, &Context::default()).unwrap();
    let features = resolve_features(&dc, &BTreeMap::new()).unwrap();
    content_hash(&dc, &features, extra).unwrap()
}

fn write(root: &Path, path: &str, contents: &str) {
    let path = root.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

#[cfg(unix)]
fn chmod(root: &Path, path: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join(path), std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn the_hash_is_stable_and_names_an_image() {
    let dir = project();
    let none = BTreeMap::new();
    let a = hash_of(dir.path(), &none);
    let b = hash_of(dir.path(), &none);
    assert_eq!(a, b);
    assert_eq!(a.hex().len(), 64);
    assert!(a.hex().chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(a.image_tag(), format!("claude-vm-dc-{}", &a.hex()[..16]));
    assert_eq!(a.to_string(), a.hex());

    // The same project somewhere else has the same hash.
    let other = project();
    assert_eq!(hash_of(other.path(), &none), a);
}

/// Each change to an input changes the hash.
#[test]
fn any_input_changes_the_hash() {
    type Change = fn(&Path);
    let changes: &[(&str, Change)] = &[
        ("the Dockerfile", |r| {
            write(r, ".devcontainer/Dockerfile", "FROM debian\nRUN false\n")
        }),
        ("a context file", |r| {
            write(r, "src/main.rs", "fn main() { }\n")
        }),
        ("a new context file", |r| write(r, "src/lib.rs", "")),
        ("an empty folder", |r| {
            std::fs::create_dir(r.join("empty")).unwrap()
        }),
        ("a removed file", |r| {
            std::fs::remove_file(r.join("README.md")).unwrap()
        }),
        ("a renamed file", |r| {
            std::fs::rename(r.join("README.md"), r.join("README.txt")).unwrap()
        }),
        ("a re-included file", |r| write(r, "keep.log", "changed\n")),
        ("the .dockerignore", |r| {
            write(r, ".dockerignore", "node_modules\n")
        }),
        ("a build arg", |r| {
            write(
                r,
                ".devcontainer/devcontainer.json",
                &CONFIG.replace("\"1\"", "\"2\""),
            )
        }),
        ("a feature option", |r| {
            write(
                r,
                ".devcontainer/devcontainer.json",
                &CONFIG.replace("\"hi\"", "\"ho\""),
            )
        }),
        ("the remote user", |r| {
            write(
                r,
                ".devcontainer/devcontainer.json",
                &CONFIG.replace("\"make\"", "\"make\", \"remoteUser\": \"x\""),
            )
        }),
        ("a feature's script", |r| {
            write(r, ".devcontainer/hello/install.sh", "#!/bin/sh\necho ho\n")
        }),
        ("a feature's metadata", |r| {
            write(
                r,
                ".devcontainer/hello/devcontainer-feature.json",
                &FEATURE.replace("hey", "yo"),
            )
        }),
        ("a new file in a feature", |r| {
            write(r, ".devcontainer/hello/lib.sh", "")
        }),
        #[cfg(unix)]
        ("a file's mode", |r| chmod(r, "src/main.rs", 0o755)),
        #[cfg(unix)]
        ("a symlink", |r| {
            std::os::unix::fs::symlink("README.md", r.join("link")).unwrap()
        }),
    ];
    let none = BTreeMap::new();
    let base = hash_of(project().path(), &none);
    for (what, change) in changes {
        let dir = project();
        change(dir.path());
        assert_ne!(hash_of(dir.path(), &none), base, "{what}");
    }
    let dir = project();
    let extra = BTreeMap::from([("base-image-id".to_owned(), "sha256:abc".to_owned())]);
    assert_ne!(hash_of(dir.path(), &extra), base, "an extra fact");
}

/// What the image does not depend on leaves the hash alone.
#[test]
fn unrelated_changes_keep_the_hash() {
    type Change = fn(&Path);
    let changes: &[(&str, Change)] = &[
        ("mtimes", |r| {
            let old = SystemTime::now() - Duration::from_secs(86_400);
            for path in [
                "src/main.rs",
                ".devcontainer/Dockerfile",
                ".devcontainer/hello/install.sh",
            ] {
                std::fs::File::options()
                    .write(true)
                    .open(r.join(path))
                    .unwrap()
                    .set_modified(old)
                    .unwrap();
            }
        }),
        ("a rewrite with the same bytes", |r| {
            write(r, "src/main.rs", "fn main() {}\n")
        }),
        ("an ignored file", |r| {
            write(r, "build.log", "other noise\n")
        }),
        ("a new ignored file", |r| write(r, "more.log", "")),
        ("a file below an ignored folder", |r| {
            write(r, "node_modules/y.js", "")
        }),
        ("a file below **/tmp", |r| write(r, "deep/tmp/other", "")),
        ("a lifecycle command", |r| {
            write(
                r,
                ".devcontainer/devcontainer.json",
                &CONFIG.replace("\"make\"", "\"make all\""),
            )
        }),
        ("comments and spacing", |r| {
            write(
                r,
                ".devcontainer/devcontainer.json",
                &format!(
                    "// note\n{}\n\n",
                    CONFIG.replace(", \"args\"", ",\n  \"args\"")
                ),
            )
        }),
        ("container settings", |r| {
            write(
                r,
                ".devcontainer/devcontainer.json",
                &CONFIG.replace(
                    "\"make\"",
                    "\"make\", \"forwardPorts\": [3000], \"containerEnv\": {\"A\": \"b\"}",
                ),
            )
        }),
    ];
    let none = BTreeMap::new();
    let base = hash_of(project().path(), &none);
    for (what, change) in changes {
        let dir = project();
        change(dir.path());
        assert_eq!(hash_of(dir.path(), &none), base, "{what}");
    }
}

#[test]
fn an_image_configuration_hashes_without_files() {
    let located = Located {
        project: PathBuf::from("/nonexistent/p"),
        config: PathBuf::from("/nonexistent/p/.devcontainer.json"),
        name: None,
    };
    let hash = |text: &str| {
        let dc = parse_str(text, &located, &Context::default()).unwrap();
        content_hash(&dc, &ResolvedFeatures::default(), &BTreeMap::new()).unwrap()
    };
    assert_eq!(
        hash(r#"{"image": "debian"}"#),
        hash(r#"{"image": "debian", "name": "x"}"#)
    );
    assert_ne!(
        hash(r#"{"image": "debian"}"#),
        hash(r#"{"image": "ubuntu"}"#)
    );
    assert_ne!(
        hash(r#"{"image": "debian"}"#),
        hash(r#"{"image": "debian", "containerUser": "app"}"#)
    );
}

#[test]
fn a_dockerfile_dockerignore_wins() {
    let dir = project();
    let none = BTreeMap::new();
    // Beside the Dockerfile: README.md is now ignored, build.log no longer is.
    write(
        dir.path(),
        ".devcontainer/Dockerfile.dockerignore",
        "README.md\n",
    );
    let with = hash_of(dir.path(), &none);
    write(dir.path(), "README.md", "changed\n");
    assert_eq!(hash_of(dir.path(), &none), with);
    write(dir.path(), "build.log", "changed\n");
    assert_ne!(hash_of(dir.path(), &none), with);
}

#[test]
fn canonical_json_sorts_keys_at_every_level() {
    let v = json!({"b": {"z": 1, "a": [ {"y": true, "x": null} ]}, "a": "s\"q"});
    assert_eq!(
        canonical(&v),
        r#"{"a":"s\"q","b":{"a":[{"x":null,"y":true}],"z":1}}"#
    );
}
