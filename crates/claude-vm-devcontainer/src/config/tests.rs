//! Tests of loading devcontainer.json: every property typed, the one warning, variables
//! and their errors, sources, paths kept inside the project, features' entries.

use super::*;
use crate::{MountKind, VariableProblem};
use serde_json::json;

fn located() -> Located {
    Located {
        project: PathBuf::from("/home/ann/proj"),
        config: PathBuf::from("/home/ann/proj/.devcontainer/devcontainer.json"),
        name: None,
    }
}

fn ctx() -> Context {
    Context {
        local_env: [("USER", "ann"), ("HOME", "/home/ann")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        id_labels: BTreeMap::from([("dev.claude-vm.workspace".into(), "ws1".into())]),
        ..Context::default()
    }
}

fn parse(text: &str) -> Result<DevContainer, Error> {
    parse_str(text, &located(), &ctx())
}

#[test]
fn a_full_configuration_is_typed() {
    let dc = parse(
        r#"{
        // A comment, and trailing commas below.
        "name": "Proj",
        "build": {
            "dockerfile": "Dockerfile",
            "context": "..",
            "args": {"USER": "${localEnv:USER}"},
            "target": "dev",
            "cacheFrom": "ghcr.io/x/cache",
            "options": ["--network=host"],
        },
        "features": {
            "./hello": {"greeting": "hi", "loud": true, "count": 3},
            "ghcr.io/devcontainers/features/node:1": "20",
            "ghcr.io/devcontainers/features/git:1": true,
            "ghcr.io/devcontainers/features/python:1": false,
        },
        "overrideFeatureInstallOrder": ["./hello"],
        "initializeCommand": "echo host",
        "onCreateCommand": ["make", "setup"],
        "postCreateCommand": {"a": "npm ci", "b": ["echo", "b"]},
        "postStartCommand": "echo ${HOME}",
        "remoteUser": "vscode",
        "containerUser": "vscode",
        "updateRemoteUserUID": false,
        "containerEnv": {"PROJECT": "${localWorkspaceFolderBasename}"},
        "remoteEnv": {"PATH": "${containerEnv:PATH}:/extra", "UNSET": null},
        "mounts": [
            "source=${localEnv:HOME}/.ssh,target=/home/vscode/.ssh,type=bind",
            {"source": "cache-${devcontainerId}", "target": "/cache", "type": "volume"},
        ],
        "runArgs": ["--shm-size=1g"],
        "workspaceFolder": "/work/${localWorkspaceFolderBasename}",
        "workspaceMount": "source=${localWorkspaceFolder},target=${containerWorkspaceFolder},type=bind",
        "forwardPorts": [3000, "db:5432"],
        "portsAttributes": {"3000": {"label": "App"}},
        "privileged": true,
        "capAdd": ["SYS_PTRACE"],
        "customizations": {
            "vscode": {"extensions": ["x.y"], "settings": {"a": "${not a variable"}},
            "claude-vm": {"agent": "claude", "dir": "${containerWorkspaceFolder}"},
        },
        "hostRequirements": {"cpus": 4},
        "shutdownAction": "none",
    }"#,
    )
    .unwrap();

    assert_eq!(dc.name.as_deref(), Some("Proj"));
    let Source::Build(build) = &dc.source else {
        panic!("{:?}", dc.source)
    };
    assert_eq!(
        build.dockerfile,
        Path::new("/home/ann/proj/.devcontainer/Dockerfile")
    );
    assert_eq!(build.context, Path::new("/home/ann/proj"));
    assert_eq!(build.args["USER"], "ann");
    assert_eq!(build.target.as_deref(), Some("dev"));
    assert_eq!(build.cache_from, ["ghcr.io/x/cache"]);
    assert_eq!(build.options, ["--network=host"]);

    let keys: Vec<&str> = dc.features.iter().map(|f| f.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "./hello",
            "ghcr.io/devcontainers/features/git:1",
            "ghcr.io/devcontainers/features/node:1",
        ],
        "sorted by key, false left out"
    );
    let hello = &dc.features[0];
    assert_eq!(
        hello.folder.as_deref(),
        Some(Path::new("/home/ann/proj/.devcontainer/hello"))
    );
    assert_eq!(hello.options["greeting"], OptionValue::String("hi".into()));
    assert_eq!(hello.options["loud"], OptionValue::Bool(true));
    assert_eq!(hello.options["count"], OptionValue::String("3".into()));
    assert!(dc.features[1].options.is_empty());
    assert_eq!(
        dc.features[2].options["version"],
        OptionValue::String("20".into())
    );
    assert_eq!(dc.override_feature_install_order, ["./hello"]);

    assert_eq!(
        dc.lifecycle.initialize,
        Some(Command::Shell("echo host".into()))
    );
    assert_eq!(
        dc.lifecycle.on_create,
        Some(Command::Exec(vec!["make".into(), "setup".into()]))
    );
    assert!(matches!(&dc.lifecycle.post_create, Some(Command::Parallel(m)) if m.len() == 2));
    assert_eq!(
        dc.lifecycle.post_start,
        Some(Command::Shell("echo ${HOME}".into())),
        "the shell's variables are the shell's"
    );

    assert_eq!(dc.remote_user.as_deref(), Some("vscode"));
    assert_eq!(dc.container_user.as_deref(), Some("vscode"));
    assert_eq!(dc.update_remote_user_uid, Some(false));
    assert_eq!(dc.container_env["PROJECT"], "proj");
    assert_eq!(
        dc.remote_env["PATH"].as_deref(),
        Some("${containerEnv:PATH}:/extra")
    );
    assert_eq!(dc.remote_env["UNSET"], None);
    assert_eq!(dc.container_env_refs, ["remoteEnv.PATH"]);

    assert_eq!(dc.mounts.len(), 2);
    assert_eq!(dc.mounts[0].source.as_deref(), Some("/home/ann/.ssh"));
    assert_eq!(dc.mounts[1].kind, MountKind::Volume);
    assert_eq!(
        dc.mounts[1].source.as_deref(),
        Some(format!("cache-{}", dc.devcontainer_id).as_str())
    );
    assert_eq!(dc.bind_mounts().count(), 1);
    assert_eq!(dc.run_args, ["--shm-size=1g"]);
    assert_eq!(dc.workspace_folder.as_deref(), Some("/work/proj"));
    assert_eq!(dc.container_workspace_folder, "/work/proj");
    assert_eq!(
        dc.workspace_mount.as_deref(),
        Some("source=/home/ann/proj,target=/work/proj,type=bind")
    );
    assert_eq!(
        dc.forward_ports,
        [
            ForwardPort {
                host: None,
                port: 3000
            },
            ForwardPort {
                host: Some("db".into()),
                port: 5432
            }
        ]
    );
    assert_eq!(dc.ports_attributes["3000"].label.as_deref(), Some("App"));
    assert!(dc.runtime.privileged);
    assert_eq!(dc.runtime.cap_add, ["SYS_PTRACE"]);
    assert_eq!(
        dc.claude_vm,
        Some(json!({"agent": "claude", "dir": "/work/proj"}))
    );
    assert!(
        dc.unknown_properties.is_empty(),
        "{:?}",
        dc.unknown_properties
    );
    assert!(dc.warning().is_none());
    assert_eq!(dc.devcontainer_id, crate::devcontainer_id(&ctx().id_labels));
    dc.ensure_supported().unwrap();
}

#[test]
fn unknown_properties_make_one_warning() {
    let dc = parse(
        r#"{
        "image": "debian",
        "colour": "blue",
        "appPort": 3000,
        "build2": {},
        "hostRequirements": {"memory": "8gb"},
        "otherPortsAttributes": {"onAutoForward": "silent"},
        "shutdownAction": "stopContainer",
        "overrideCommand": false,
        "waitFor": "postCreateCommand",
        "$schema": "https://example.com/schema.json",
        "customizations": {"vscode": {}, "codespaces": {}},
    }"#,
    )
    .unwrap();
    assert_eq!(dc.unknown_properties, ["build2", "colour"]);
    assert_eq!(dc.unsupported_properties, ["appPort"]);
    assert_eq!(
        dc.warning().unwrap(),
        "/home/ann/proj/.devcontainer/devcontainer.json: ignoring unknown properties build2, colour and unsupported properties appPort"
    );
    assert_eq!(dc.claude_vm, None);

    let dc = parse(r#"{"build": {"dockerfile": "D", "pull": true}}"#).unwrap();
    assert_eq!(dc.unknown_properties, ["build.pull"]);
}

#[test]
fn ignored_and_unknown_properties_are_not_substituted() {
    let dc = parse(
        r#"{
        "image": "debian",
        "customizations": {"vscode": {"settings": {"x": "${nope"}}},
        "hostRequirements": {"x": "${unknown}"},
        "somethingElse": "${localEnv"
    }"#,
    )
    .unwrap();
    assert_eq!(dc.unknown_properties, ["somethingElse"]);
}

/// (property and value, the failing property, the variable as written, the problem)
#[test]
fn variable_errors_name_property_and_variable() {
    let cases = [
        (
            r#""containerEnv": {"A": "${HOME}"}"#,
            "containerEnv.A",
            "${HOME}",
            VariableProblem::Unknown,
        ),
        (
            r#""runArgs": ["--x", "${localEnv:USER"]"#,
            "runArgs[1]",
            "${localEnv:USER",
            VariableProblem::Unterminated,
        ),
        (
            r#""mounts": ["source=${containerEnv:HOME},target=/x"]"#,
            "mounts[0]",
            "${containerEnv:HOME}",
            VariableProblem::ContainerEnvTooEarly,
        ),
        (
            r#""initializeCommand": "echo ${containerEnv:HOME}""#,
            "initializeCommand",
            "${containerEnv:HOME}",
            VariableProblem::ContainerEnvTooEarly,
        ),
        (
            r#""workspaceFolder": "${containerWorkspaceFolder}/x""#,
            "workspaceFolder",
            "${containerWorkspaceFolder}",
            VariableProblem::SelfReference,
        ),
        (
            r#""remoteEnv": {"A": "${localEnv:}"}"#,
            "remoteEnv.A",
            "${localEnv:}",
            VariableProblem::NoName,
        ),
        (
            r#""customizations": {"claude-vm": {"x": ["${oops}"]}}"#,
            "customizations.claude-vm.x[0]",
            "${oops}",
            VariableProblem::Unknown,
        ),
        (
            r#""features": {"./f": {"version": "${what}"}}"#,
            "features[\"./f\"].version",
            "${what}",
            VariableProblem::Unknown,
        ),
        (
            r#""postCreateCommand": {"a": ["x", "${"]}"#,
            "postCreateCommand.a[1]",
            "${",
            VariableProblem::Unterminated,
        ),
    ];
    for (property, want_property, want_variable, want_problem) in cases {
        let text = format!("{{\"image\": \"debian\", {property}}}");
        let e = parse(&text).unwrap_err();
        let (p, v, problem) = variable_problem(&e).unwrap_or_else(|| panic!("{text}: {e:?}"));
        assert_eq!(
            (p, v, problem),
            (want_property, want_variable, &want_problem),
            "{text}"
        );
        let shown = e.to_string();
        assert!(
            shown.contains(want_property) && shown.contains(want_variable),
            "{shown}"
        );
        assert!(e.hint().is_some());
    }
}

#[test]
fn container_variables_wait_for_the_container() {
    let text = r#"{
        "image": "debian",
        "remoteEnv": {"PATH": "${containerEnv:PATH}:/x", "HOME_TOO": "${containerEnv:HOME}"},
        "postCreateCommand": "echo ${containerEnv:HOME} ${HOME}",
        "postAttachCommand": ["echo", "${containerEnv:SHELL:/bin/sh}"],
    }"#;
    let dc = parse(text).unwrap();
    assert_eq!(
        dc.container_env_refs,
        [
            "postAttachCommand[1]",
            "postCreateCommand",
            "remoteEnv.HOME_TOO",
            "remoteEnv.PATH"
        ]
    );
    let env = BTreeMap::from([
        ("PATH".to_owned(), "/usr/bin".to_owned()),
        ("HOME".to_owned(), "/home/vscode".to_owned()),
    ]);
    let dc = dc.with_container_env(env).unwrap();
    assert!(dc.container_env_refs.is_empty());
    assert_eq!(dc.remote_env["PATH"].as_deref(), Some("/usr/bin:/x"));
    assert_eq!(dc.remote_env["HOME_TOO"].as_deref(), Some("/home/vscode"));
    assert_eq!(
        dc.lifecycle.post_create,
        Some(Command::Shell("echo /home/vscode ${HOME}".into()))
    );
    assert_eq!(
        dc.lifecycle.post_attach,
        Some(Command::Exec(vec!["echo".into(), "/bin/sh".into()]))
    );
}

#[test]
fn the_workspace_folder_defaults() {
    let dc = parse(r#"{"image": "debian", "postStartCommand": "cd ${containerWorkspaceFolder}"}"#)
        .unwrap();
    assert_eq!(dc.workspace_folder, None);
    assert_eq!(dc.container_workspace_folder, "/workspaces/proj");
    assert_eq!(
        dc.lifecycle.post_start,
        Some(Command::Shell("cd /workspaces/proj".into()))
    );

    let ctx = Context {
        default_workspace_folder: Some("/workspace/proj".into()),
        local_workspace_folder: Some("/elsewhere/other".into()),
        ..ctx()
    };
    let dc = parse_str(
        r#"{"image": "debian", "containerEnv": {"B": "${containerWorkspaceFolderBasename}", "L": "${localWorkspaceFolder}"}}"#,
        &located(),
        &ctx,
    )
    .unwrap();
    assert_eq!(dc.container_workspace_folder, "/workspace/proj");
    assert_eq!(dc.container_env["B"], "proj");
    assert_eq!(dc.container_env["L"], "/elsewhere/other");
}

#[test]
fn sources() {
    let dc = parse(r#"{"image": "mcr.microsoft.com/devcontainers/base:bookworm"}"#).unwrap();
    assert_eq!(
        dc.source,
        Source::Image("mcr.microsoft.com/devcontainers/base:bookworm".into())
    );

    // The older top-level dockerFile and context.
    let dc = parse(r#"{"dockerFile": "../Dockerfile", "context": ".."}"#).unwrap();
    let Source::Build(build) = &dc.source else {
        panic!()
    };
    assert_eq!(build.dockerfile, Path::new("/home/ann/proj/Dockerfile"));
    assert_eq!(build.context, Path::new("/home/ann/proj"));

    // A build wins over an image; the context defaults to the file's folder.
    let dc =
        parse(r#"{"image": "x", "build": {"dockerfile": "Dockerfile", "cacheFrom": ["a", "b"]}}"#)
            .unwrap();
    let Source::Build(build) = &dc.source else {
        panic!()
    };
    assert_eq!(build.context, Path::new("/home/ann/proj/.devcontainer"));
    assert_eq!(build.cache_from, ["a", "b"]);

    let e = parse(r#"{"name": "nothing"}"#).unwrap_err();
    assert!(matches!(e, Error::NoSource { .. }), "{e:?}");
    let e = parse(r#"{"build": {"context": "."}}"#).unwrap_err();
    assert!(
        matches!(&e, Error::Type { property, .. } if property == "build.dockerfile"),
        "{e:?}"
    );
}

#[test]
fn compose_is_recognised_and_refused() {
    let dc = parse(
        r#"{"dockerComposeFile": ["a.yml", "b.yml"], "service": "app", "runServices": ["db"]}"#,
    )
    .unwrap();
    assert_eq!(
        dc.source,
        Source::Compose(Compose {
            files: vec!["a.yml".into(), "b.yml".into()],
            service: Some("app".into()),
            run_services: vec!["db".into()],
        })
    );
    let e = dc.ensure_supported().unwrap_err();
    assert_eq!(
        e.to_string(),
        "/home/ann/proj/.devcontainer/devcontainer.json: Docker Compose configurations are not supported yet (planned)"
    );
    let dc = parse(r#"{"dockerComposeFile": "docker-compose.yml", "service": "app"}"#).unwrap();
    assert!(matches!(&dc.source, Source::Compose(c) if c.files == ["docker-compose.yml"]));
}

#[test]
fn paths_stay_inside_the_project() {
    let cases = [
        (
            r#"{"build": {"dockerfile": "../../Dockerfile"}}"#,
            "build.dockerfile",
        ),
        (
            r#"{"build": {"dockerfile": "Dockerfile", "context": "../.."}}"#,
            "build.context",
        ),
        (
            r#"{"image": "x", "features": {"../../outside": {}}}"#,
            "features[\"../../outside\"]",
        ),
    ];
    for (text, property) in cases {
        match parse(text) {
            Err(Error::OutsideProject { property: p, .. }) => assert_eq!(p, property, "{text}"),
            other => panic!("{text}: {other:?}"),
        }
    }
    // Up to the project itself is fine.
    parse(r#"{"build": {"dockerfile": "../Dockerfile", "context": ".."}}"#).unwrap();
}

/// (features object, a piece of the error)
#[test]
fn bad_features() {
    let cases = [
        (r#"{"node": {}}"#, "ghcr.io/devcontainers/features/node:1"),
        (r#"{"owner/repo/go@1": {}}"#, "deprecated"),
        (r#"{"/abs/hello": {}}"#, "relative"),
        (
            r#"{"./a": 42}"#,
            "must be an object of options, a version string or true",
        ),
        (
            r#"{"./a": {"x": [1]}}"#,
            "features[\"./a\"].x must be a string or a boolean",
        ),
        (
            r#"{"ghcr.io/devcontainers/features/node:1": {}, "ghcr.io/devcontainers/features/node:2": {}}"#,
            "is listed twice",
        ),
        (r#"{"./a": {}, "./a/": {}}"#, "is listed twice"),
    ];
    for (features, piece) in cases {
        let text = format!("{{\"image\": \"x\", \"features\": {features}}}");
        let e = parse(&text).unwrap_err();
        assert!(e.to_string().contains(piece), "{features}: {e}");
    }
}

/// (property and value, the property the error names)
#[test]
fn type_errors_name_the_property() {
    let cases = [
        (r#""image": 3"#, "image"),
        (r#""name": true"#, "name"),
        (r#""runArgs": "--x""#, "runArgs"),
        (r#""runArgs": [1]"#, "runArgs[0]"),
        (r#""containerEnv": {"A": 1}"#, "containerEnv.A"),
        (r#""remoteEnv": {"A": 1}"#, "remoteEnv.A"),
        (r#""forwardPorts": [3000, "nope"]"#, "forwardPorts[1]"),
        (r#""mounts": [{"source": "x"}]"#, "mounts[0].target"),
        (r#""postCreateCommand": 1"#, "postCreateCommand"),
        (r#""updateRemoteUserUID": "yes""#, "updateRemoteUserUID"),
        (r#""customizations": []"#, "customizations"),
        (
            r#""overrideFeatureInstallOrder": "./a""#,
            "overrideFeatureInstallOrder",
        ),
        (
            r#""portsAttributes": {"3000": {"label": 1}}"#,
            "portsAttributes.3000.label",
        ),
    ];
    for (property, want) in cases {
        let image = if property.starts_with("\"image\"") {
            ""
        } else {
            "\"image\": \"x\", "
        };
        let text = format!("{{{image}{property}}}");
        match parse(&text) {
            Err(Error::Type { property: p, .. }) => assert_eq!(p, want, "{text}"),
            other => panic!("{text}: {other:?}"),
        }
    }
}

#[test]
fn load_reads_the_file_and_reports_syntax_errors_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join(".devcontainer/devcontainer.json");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, "{\n  \"image\": \"debian\",\n}\n").unwrap();
    let located = crate::find(dir.path(), None).unwrap().unwrap();
    let dc = load(&located, &Context::default()).unwrap();
    assert_eq!(dc.source, Source::Image("debian".into()));
    assert_eq!(dc.folder(), config.parent().unwrap());

    std::fs::write(
        &config,
        "{\n  \"image\": \"debian\"\n  \"name\": \"x\"\n}\n",
    )
    .unwrap();
    let e = load(&located, &Context::default()).unwrap_err();
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!(
            "{}:2:20: invalid JSON: expected comma",
            config.display()
        )),
        "{shown}"
    );
}
