//! Tests of resolving features against real folders (metadata, options, order, fetched
//! folders) and of the Dockerfile and build context they make.

use super::*;
use crate::{Context, FeatureCopy, FeatureUsers, Located, features_dockerfile, parse_str};

/// A project with the given files (path, contents) and a devcontainer.json.
fn project(config: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, DevContainer) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    for (path, contents) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
    let located = Located {
        project: root.clone(),
        config: root.join(".devcontainer/devcontainer.json"),
        name: None,
    };
    std::fs::create_dir_all(located.config.parent().unwrap()).unwrap();
    std::fs::write(&located.config, config).unwrap();
    let ctx = Context {
        id_labels: BTreeMap::from([("dev.claude-vm.workspace".into(), "ws".into())]),
        ..Context::default()
    };
    let dc = parse_str(config, &located, &ctx).unwrap();
    (dir, dc)
}

const HELLO: &str = r#"{
    // A local feature.
    "id": "hello",
    "version": "1.0.0",
    "options": {
        "greeting": {"type": "string", "default": "hey"},
        "loud": {"type": "boolean", "default": false},
        "version": {"type": "string", "default": "latest"},
    },
    "containerEnv": {"HELLO_HOME": "/opt/hello", "PATH": "/opt/hello/bin:${PATH}"},
    "installsAfter": ["ghcr.io/devcontainers/features/common-utils", "./world"],
    "mounts": [{"source": "hello-${devcontainerId}", "target": "/var/hello", "type": "volume"}],
    "privileged": true,
    "capAdd": ["SYS_PTRACE"],
}"#;

const WORLD: &str = r#"{"id": "world", "options": {}, "capAdd": ["SYS_PTRACE", "NET_ADMIN"], "entrypoint": "/usr/local/bin/world-init"}"#;

fn hello_project(config: &str) -> (tempfile::TempDir, DevContainer) {
    project(
        config,
        &[
            (".devcontainer/hello/devcontainer-feature.json", HELLO),
            (".devcontainer/hello/install.sh", "#!/bin/sh\necho hello\n"),
            (".devcontainer/world/devcontainer-feature.json", WORLD),
            (".devcontainer/world/install.sh", "#!/bin/sh\n"),
        ],
    )
}

#[test]
fn local_features_resolve_in_order_with_their_options() {
    let (_dir, dc) = hello_project(
        r#"{"image": "debian", "features": {"./hello": {"greeting": "hi", "loud": "true"}, "./world": {}}}"#,
    );
    let resolved = resolve_features(&dc, &BTreeMap::new()).unwrap();
    let keys: Vec<&str> = resolved.features.iter().map(|f| f.key.as_str()).collect();
    assert_eq!(keys, ["./world", "./hello"], "hello installsAfter ./world");
    let hello = &resolved.features[1];
    assert_eq!(hello.metadata.id, "hello");
    assert_eq!(
        hello.env,
        BTreeMap::from([
            ("GREETING".to_owned(), "hi".to_owned()),
            ("LOUD".to_owned(), "true".to_owned()),
            ("VERSION".to_owned(), "latest".to_owned()),
        ])
    );
    assert_eq!(
        hello.metadata.mounts[0].source.as_deref(),
        Some(format!("hello-{}", dc.devcontainer_id).as_str())
    );
    let runtime = &resolved.runtime;
    assert!(runtime.privileged);
    assert_eq!(runtime.cap_add, ["NET_ADMIN", "SYS_PTRACE"]);
    assert_eq!(runtime.entrypoints, ["/usr/local/bin/world-init"]);
    assert_eq!(runtime.mounts.len(), 1);
    let requests = resolved.requests();
    assert!(
        requests.contains(&"feature \"./hello\" asks for a privileged container".to_owned()),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.contains("/usr/local/bin/world-init"))
    );
}

#[test]
fn a_version_string_sets_the_version_option() {
    let (_dir, dc) = hello_project(r#"{"image": "debian", "features": {"./hello": "2.1"}}"#);
    let resolved = resolve_features(&dc, &BTreeMap::new()).unwrap();
    assert_eq!(resolved.features[0].env["VERSION"], "2.1");
    let (_dir, dc) = hello_project(r#"{"image": "debian", "features": {"./world": "2.1"}}"#);
    let e = resolve_features(&dc, &BTreeMap::new()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "feature \"./world\" has no option \"version\"; it takes no options"
    );
}

#[test]
fn unknown_options_name_feature_option_and_the_valid_ones() {
    let (_dir, dc) =
        hello_project(r#"{"image": "debian", "features": {"./hello": {"colour": "red"}}}"#);
    let e = resolve_features(&dc, &BTreeMap::new()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "feature \"./hello\" has no option \"colour\"; its options are greeting, loud, version"
    );
}

#[test]
fn the_override_order_comes_first() {
    let (_dir, dc) = hello_project(
        r#"{"image": "debian", "features": {"./hello": {}, "./world": {}}, "overrideFeatureInstallOrder": ["./hello"]}"#,
    );
    let resolved = resolve_features(&dc, &BTreeMap::new()).unwrap();
    let keys: Vec<&str> = resolved.features.iter().map(|f| f.key.as_str()).collect();
    assert_eq!(keys, ["./hello", "./world"]);
}

#[test]
fn non_local_features_need_a_fetched_folder() {
    let (dir, dc) = hello_project(
        r#"{"image": "debian", "features": {"ghcr.io/devcontainers/features/git:1": {}}}"#,
    );
    let e = resolve_features(&dc, &BTreeMap::new()).unwrap_err();
    assert!(
        matches!(&e, Error::FeatureNotAvailable { key } if key == "ghcr.io/devcontainers/features/git:1")
    );
    assert!(e.hint().unwrap().contains("./folder"));

    let fetched = BTreeMap::from([(
        "ghcr.io/devcontainers/features/git:1".to_owned(),
        dir.path().join(".devcontainer/world"),
    )]);
    let resolved = resolve_features(&dc, &fetched).unwrap();
    assert_eq!(resolved.features[0].metadata.id, "world");
}

#[test]
fn a_feature_needs_its_files() {
    let (_dir, dc) = project(
        r#"{"image": "debian", "features": {"./nometa": {}}}"#,
        &[(".devcontainer/nometa/install.sh", "")],
    );
    let e = resolve_features(&dc, &BTreeMap::new()).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");

    let (_dir, dc) = project(
        r#"{"image": "debian", "features": {"./noinstall": {}}}"#,
        &[(
            ".devcontainer/noinstall/devcontainer-feature.json",
            r#"{"id": "noinstall"}"#,
        )],
    );
    let e = resolve_features(&dc, &BTreeMap::new()).unwrap_err();
    assert!(matches!(e, Error::NoInstallScript { .. }), "{e:?}");

    let (_dir, dc) = project(
        r#"{"image": "debian", "features": {"./bad": {}}}"#,
        &[
            (
                ".devcontainer/bad/devcontainer-feature.json",
                "{\n \"id\": \"bad\",,\n}",
            ),
            (".devcontainer/bad/install.sh", ""),
        ],
    );
    let e = resolve_features(&dc, &BTreeMap::new()).unwrap_err();
    assert!(
        matches!(&e, Error::Syntax { path, line: 2, .. } if path.ends_with("bad/devcontainer-feature.json")),
        "{e:?}"
    );
}

#[test]
fn no_features_resolve_to_nothing() {
    let (_dir, dc) = project(r#"{"image": "debian"}"#, &[]);
    let resolved = resolve_features(&dc, &BTreeMap::new()).unwrap();
    assert!(resolved.is_empty());
    assert!(resolved.requests().is_empty());
}

#[test]
fn the_dockerfile_layers_each_feature() {
    let (_dir, dc) = hello_project(
        r#"{"image": "debian", "remoteUser": "vscode", "features": {"./hello": {"greeting": "it's me"}, "./world": {}}}"#,
    );
    let resolved = resolve_features(&dc, &BTreeMap::new()).unwrap();
    let build = features_dockerfile("debian:bookworm", Some("node"), &dc, &resolved).unwrap();
    let d = &build.dockerfile;

    let expected_lines = [
        "# Written by claude-vm: the dev container features of .devcontainer/devcontainer.json.",
        "FROM debian:bookworm",
        "USER root",
        "COPY claude-vm-features/builtin.env /tmp/claude-vm-features/builtin.env",
        "# 1/2: ./world (world)",
        "COPY claude-vm-features/01-world/ /tmp/claude-vm-features/01-world/",
        "COPY claude-vm-features/01-world.env /tmp/claude-vm-features/01-world.env",
        "RUN cd /tmp/claude-vm-features/01-world \\",
        "# 2/2: ./hello (hello 1.0.0)",
        "ENV HELLO_HOME=\"/opt/hello\" PATH=\"/opt/hello/bin:${PATH}\"",
        "COPY claude-vm-features/02-hello/ /tmp/claude-vm-features/02-hello/",
        " && (set -a && . /tmp/claude-vm-features/builtin.env && . /tmp/claude-vm-features/02-hello.env && set +a && ./install.sh) \\",
        " && cd / && rm -rf /tmp/claude-vm-features/02-hello /tmp/claude-vm-features/02-hello.env",
        "RUN rm -rf /tmp/claude-vm-features",
        "USER node",
    ];
    let lines: Vec<&str> = d.lines().collect();
    let mut at = 0;
    for want in expected_lines {
        match lines[at..].iter().position(|l| *l == want) {
            Some(i) => at += i + 1,
            None => panic!("missing or out of order: {want:?}\n{d}"),
        }
    }
    assert_eq!(lines.last(), Some(&"USER node"));
    assert!(d.contains("home 'node'"), "{d}");
    assert!(d.contains("home 'vscode'"), "{d}");
    assert!(d.contains("${c:-/home/node}"), "{d}");
    assert!(d.contains("_REMOTE_USER_HOME"), "{d}");
    assert!(!d.contains("it's me"), "values stay out of the Dockerfile");

    assert_eq!(
        build.copies,
        [
            FeatureCopy {
                key: "./world".into(),
                from: dc.folder().join("world"),
                to: "claude-vm-features/01-world".into(),
            },
            FeatureCopy {
                key: "./hello".into(),
                from: dc.folder().join("hello"),
                to: "claude-vm-features/02-hello".into(),
            },
        ]
    );
    let files: BTreeMap<&str, &str> = build
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.contents.as_str()))
        .collect();
    assert_eq!(
        files["claude-vm-features/builtin.env"],
        "_CONTAINER_USER='node'\n_REMOTE_USER='vscode'\n"
    );
    assert_eq!(files["claude-vm-features/01-world.env"], "");
    assert_eq!(
        files["claude-vm-features/02-hello.env"],
        "GREETING='it'\\''s me'\nLOUD='false'\nVERSION='latest'\n"
    );
}

#[test]
fn the_users_follow_the_spec() {
    let (_dir, dc) = project(r#"{"image": "debian"}"#, &[]);
    let users = |dc: &DevContainer, image_user: Option<&str>| {
        let u = FeatureUsers::new(dc, image_user);
        (u.container_user, u.remote_user)
    };
    assert_eq!(users(&dc, None), ("root".into(), "root".into()));
    assert_eq!(users(&dc, Some("")), ("root".into(), "root".into()));
    assert_eq!(users(&dc, Some("node")), ("node".into(), "node".into()));
    let (_dir, dc) = project(r#"{"image": "debian", "containerUser": "app"}"#, &[]);
    assert_eq!(users(&dc, Some("node")), ("app".into(), "app".into()));
    let (_dir, dc) = project(r#"{"image": "debian", "remoteUser": "vscode"}"#, &[]);
    assert_eq!(users(&dc, None), ("root".into(), "vscode".into()));

    let empty = ResolvedFeatures::default();
    let build = features_dockerfile("debian", None, &dc, &empty).unwrap();
    assert!(
        build.dockerfile.contains("${c:-/root}"),
        "{}",
        build.dockerfile
    );
    assert!(build.dockerfile.ends_with("USER root\n"));
    assert!(build.copies.is_empty());
}

#[test]
fn what_cannot_go_into_a_dockerfile_is_refused() {
    let (_dir, dc) = project(r#"{"image": "debian", "remoteUser": "bad user"}"#, &[]);
    let empty = ResolvedFeatures::default();
    assert!(matches!(
        features_dockerfile("debian", None, &dc, &empty),
        Err(Error::Dockerfile { .. })
    ));
    let (_dir, dc) = project(r#"{"image": "debian"}"#, &[]);
    for image in ["", "debian\nRUN evil", "a b"] {
        assert!(
            matches!(
                features_dockerfile(image, None, &dc, &empty),
                Err(Error::Dockerfile { .. })
            ),
            "{image:?}"
        );
    }
    let (_dir, dc) = project(
        r#"{"image": "debian", "features": {"./f": {}}}"#,
        &[
            (
                ".devcontainer/f/devcontainer-feature.json",
                r#"{"id": "f", "containerEnv": {"A": "line\nRUN evil"}}"#,
            ),
            (".devcontainer/f/install.sh", ""),
        ],
    );
    let resolved = resolve_features(&dc, &BTreeMap::new()).unwrap();
    let e = features_dockerfile("debian", None, &dc, &resolved).unwrap_err();
    assert!(
        e.to_string().contains("containerEnv A of feature \"./f\""),
        "{e}"
    );
}
