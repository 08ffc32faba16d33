//! Tests of [`parse`]: example providers written for these tests (not copies of
//! published ones) that together use every field published providers use, then every
//! error, warning and spelling, one table at a time.

use super::*;
use crate::manifest::{EnumChoice, OptionDef, OptionGroup, Script, StrBool};

/// A machine provider using every feature of the format.
const ACME: &str = r#"
name: acme-cloud
version: v0.3.1-beta.2
description: |-
  Acme Cloud machines.
  Two lines.
icon: https://acme.example/icon.svg
iconDark: https://acme.example/icon-dark.svg
home: https://acme.example/devpod
optionGroups:
  - name: Acme options
    defaultVisible: true
    options:
      - ACME_TOKEN
      - ACME_REGION
      - ACME_ZONE
  - name: Agent options
    options: [AGENT_PATH, INACTIVITY_TIMEOUT, INJECT_GIT_CREDENTIALS]
options:
  ACME_TOKEN:
    description: The Acme API token.
    required: true
    password: true
    command: printf '%s' "${ACME_TOKEN:-}"
  ACME_REGION:
    description: The region to create machines in.
    required: true
    default: ams
    suggestions: [ams, fra, nyc]
    mutable: true
  ACME_ZONE:
    description: The zone, in the region.
    default: ${ACME_REGION}-1
  ACME_SIZE:
    displayName: Machine size
    description: The machine size.
    default: m2
    enum:
      - value: m1
        displayName: Small (1 CPU)
      - value: m2
        displayName: Medium (2 CPUs)
  ACME_DISK_GB:
    description: Disk size in GB.
    type: number
    default: 40
  ACME_IMAGE:
    description: The image.
    enum: [debian-12, ubuntu-24.04]
    default: debian-12
  ACME_SESSION:
    description: A short-lived session token.
    local: true
    hidden: true
    cache: 5m
    command: |-
      ${ACME_CLI} session --machine "${MACHINE_ID}"
  ACME_ACCOUNT:
    description: The account, shared by all machines.
    global: true
    command: ${ACME_CLI} whoami
  ACME_LABEL:
    description: A label for the machines.
    validationPattern: ^[a-z]+$
    validationMessage: lowercase letters only
  AGENT_PATH:
    description: Where to install the agent.
    default: /var/lib/toolbox/devpod
  INACTIVITY_TIMEOUT:
    description: Stop the machine after this long without use.
    default: 10m
    type: duration
  INJECT_GIT_CREDENTIALS:
    description: Whether to forward git credentials.
    type: boolean
    default: "true"
  USER_DATA:
    description: Cloud-init user data.
    type: multiline
    hidden: true
agent:
  path: ${AGENT_PATH}
  inactivityTimeout: ${INACTIVITY_TIMEOUT}
  injectGitCredentials: ${INJECT_GIT_CREDENTIALS}
  injectDockerCredentials: true
  containerInactivityTimeout: 300
  binaries:
    ACME_CLI:
      - os: linux
        arch: amd64
        path: https://acme.example/v0.3.1/acme-linux-amd64.tar.gz
        archivePath: acme
        checksum: <sha-1>
      - os: linux
        arch: arm64
        path: https://acme.example/v0.3.1/acme-linux-arm64.tar.gz
        archivePath: acme
        checksum: <sha-2>
  exec:
    shutdown: |-
      ${ACME_CLI} stop --self
  docker:
    path: /usr/bin/docker
    install: false
    env:
      DOCKER_BUILDKIT: 1
      ZONE: ${ACME_ZONE}
binaries:
  ACME_CLI:
    - os: linux
      arch: amd64
      path: https://acme.example/v0.3.1/acme-linux-amd64
      checksum: <sha-3>
    - os: linux
      arch: arm64
      path: https://acme.example/v0.3.1/acme-linux-arm64
      checksum: <SHA-4>
    - os: darwin
      arch: arm64
      path: https://acme.example/v0.3.1/acme-darwin-arm64.zip
      archivePath: bin/acme
      checksum: <sha-5>
    - os: windows
      arch: amd64
      path: https://acme.example/v0.3.1/acme-windows-amd64.exe
      name: acme.exe
      checksum: <sha-6>
exec:
  init: ${ACME_CLI} init
  command: ${ACME_CLI} command
  create: ${ACME_CLI} create
  delete: "${ACME_CLI} delete"
  start: ${ACME_CLI} start
  stop: ["${ACME_CLI}", "stop", "--wait"]
  status: |
    set -e
    ${ACME_CLI} status \
      --machine "$MACHINE_ID"
"#;

/// A provider that runs commands on an existing host: no machine lifecycle.
const HOST: &str = r#"
name: my-host
version: 1.0.0
options:
  HOST:
    description: The host to connect to.
    required: true
  INSTALL_DOCKER:
    default: "true"
agent:
  path: /tmp/devpod
  local: "false"
  docker:
    install: ${INSTALL_DOCKER}
binaries:
  HELPER:
    - os: linux
      arch: amd64
      path: ./bin/helper
exec:
  command:
    - ssh
    - -oBatchMode=yes
    - ${HOST}
    - ${COMMAND}
"#;

/// Replaces `<sha-N>` (and `<SHA-N>`) by a 64-digit hex checksum (with letters: YAML
/// reads 64 plain digits as a number).
fn with_sums(yaml: &str) -> String {
    let mut out = yaml.to_string();
    for n in 1..=6 {
        out = out.replace(&format!("<sha-{n}>"), &format!("{n}f").repeat(32));
        out = out.replace(&format!("<SHA-{n}>"), &format!("{n}F").repeat(32));
    }
    out
}

fn ok(yaml: &str) -> Parsed {
    parse(&with_sums(yaml)).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

/// Checks each `(yaml, error)` case, saying which failed.
fn check_errors(cases: &[(&str, &str)]) {
    for (yaml, want) in cases {
        match parse(&with_sums(yaml)) {
            Ok(_) => panic!("parsed, but should fail with {want:?}:\n{yaml}"),
            Err(err) => assert_eq!(err.to_string(), *want, "\n{yaml}"),
        }
    }
}

/// Checks that each `(yaml, warnings)` case parses with exactly these warnings.
fn check_warnings(cases: &[(&str, &[&str])]) {
    for (yaml, want) in cases {
        assert_eq!(ok(yaml).warnings, *want, "\n{yaml}");
    }
}

const MINIMAL: &str = "name: t\nexec:\n  command: run\n";

fn minimal(extra: &str) -> String {
    format!("{MINIMAL}{extra}")
}

fn script(lines: &[&str]) -> Option<Script> {
    Some(Script(lines.iter().map(|s| s.to_string()).collect()))
}

#[test]
fn reads_a_machine_provider() {
    let Parsed {
        manifest: m,
        warnings,
    } = ok(ACME);
    assert_eq!(
        warnings,
        ["option 'ACME_LABEL': validationPattern '^[a-z]+$' is not checked by claude-vm"]
    );
    assert_eq!(m.name, "acme-cloud");
    assert_eq!(m.version.as_deref(), Some("v0.3.1-beta.2"));
    assert_eq!(
        m.description.as_deref(),
        Some("Acme Cloud machines.\nTwo lines.")
    );
    assert_eq!(m.icon.as_deref(), Some("https://acme.example/icon.svg"));
    assert_eq!(
        m.icon_dark.as_deref(),
        Some("https://acme.example/icon-dark.svg")
    );
    assert_eq!(m.home.as_deref(), Some("https://acme.example/devpod"));
    assert!(m.is_machine_provider());
    assert_eq!(
        m.option_groups,
        [
            OptionGroup {
                name: "Acme options".into(),
                options: vec![
                    "ACME_TOKEN".into(),
                    "ACME_REGION".into(),
                    "ACME_ZONE".into()
                ],
                default_visible: true,
            },
            OptionGroup {
                name: "Agent options".into(),
                options: vec![
                    "AGENT_PATH".into(),
                    "INACTIVITY_TIMEOUT".into(),
                    "INJECT_GIT_CREDENTIALS".into()
                ],
                default_visible: false,
            },
        ]
    );
    assert_eq!(
        m.option_names(),
        [
            "ACME_TOKEN",
            "ACME_REGION",
            "ACME_ZONE",
            "ACME_SIZE",
            "ACME_DISK_GB",
            "ACME_IMAGE",
            "ACME_SESSION",
            "ACME_ACCOUNT",
            "ACME_LABEL",
            "AGENT_PATH",
            "INACTIVITY_TIMEOUT",
            "INJECT_GIT_CREDENTIALS",
            "USER_DATA",
        ]
    );

    let token = &m.options["ACME_TOKEN"];
    assert_eq!(
        *token,
        OptionDef {
            description: Some("The Acme API token.".into()),
            required: true,
            password: true,
            command: Some(r#"printf '%s' "${ACME_TOKEN:-}""#.into()),
            ..OptionDef::default()
        }
    );
    assert!(token.is_secret());
    assert!(!m.options["ACME_REGION"].is_secret());
    let region = &m.options["ACME_REGION"];
    assert_eq!(region.suggestions, ["ams", "fra", "nyc"]);
    assert!(region.mutable && region.required);
    assert_eq!(
        m.options["ACME_ZONE"].default.as_deref(),
        Some("${ACME_REGION}-1")
    );
    let size = &m.options["ACME_SIZE"];
    assert_eq!(size.display_name.as_deref(), Some("Machine size"));
    assert_eq!(
        size.choices,
        [
            EnumChoice {
                value: "m1".into(),
                display_name: Some("Small (1 CPU)".into())
            },
            EnumChoice {
                value: "m2".into(),
                display_name: Some("Medium (2 CPUs)".into())
            },
        ]
    );
    assert_eq!(m.options["ACME_DISK_GB"].kind.as_deref(), Some("number"));
    assert_eq!(m.options["ACME_DISK_GB"].default.as_deref(), Some("40"));
    assert_eq!(
        m.options["ACME_IMAGE"].choices,
        [
            EnumChoice {
                value: "debian-12".into(),
                display_name: None
            },
            EnumChoice {
                value: "ubuntu-24.04".into(),
                display_name: None
            },
        ]
    );
    let session = &m.options["ACME_SESSION"];
    assert!(session.local && session.hidden && !session.global);
    assert_eq!(session.cache.as_deref(), Some("5m"));
    assert_eq!(
        session.command.as_deref(),
        Some(r#"${ACME_CLI} session --machine "${MACHINE_ID}""#)
    );
    assert!(m.options["ACME_ACCOUNT"].global);
    let label = &m.options["ACME_LABEL"];
    assert_eq!(label.validation_pattern.as_deref(), Some("^[a-z]+$"));
    assert_eq!(
        label.validation_message.as_deref(),
        Some("lowercase letters only")
    );
    assert_eq!(
        m.options["INACTIVITY_TIMEOUT"].kind.as_deref(),
        Some("duration")
    );
    assert_eq!(
        m.options["INJECT_GIT_CREDENTIALS"].default.as_deref(),
        Some("true")
    );
    assert_eq!(m.options["USER_DATA"].kind.as_deref(), Some("multiline"));

    let agent = &m.agent;
    assert_eq!(agent.path.as_deref(), Some("${AGENT_PATH}"));
    assert_eq!(
        agent.inactivity_timeout.as_deref(),
        Some("${INACTIVITY_TIMEOUT}")
    );
    assert_eq!(
        agent.inject_git_credentials,
        Some(StrBool("${INJECT_GIT_CREDENTIALS}".into()))
    );
    assert_eq!(
        agent.inject_docker_credentials,
        Some(StrBool("true".into()))
    );
    assert_eq!(agent.container_inactivity_timeout.as_deref(), Some("300"));
    assert_eq!(agent.exec.shutdown, script(&["${ACME_CLI} stop --self"]));
    assert_eq!(agent.docker.path.as_deref(), Some("/usr/bin/docker"));
    assert_eq!(agent.docker.install, Some(StrBool("false".into())));
    assert_eq!(
        agent.docker.env,
        BTreeMap::from([
            ("DOCKER_BUILDKIT".to_string(), "1".to_string()),
            ("ZONE".to_string(), "${ACME_ZONE}".to_string()),
        ])
    );
    let agent_cli = &agent.binaries["ACME_CLI"];
    assert_eq!(agent_cli.len(), 2);
    assert_eq!(agent_cli[1].arch, "arm64");
    assert_eq!(agent_cli[1].archive_path.as_deref(), Some("acme"));
    assert_eq!(agent_cli[1].checksum, Some("2f".repeat(32)));

    let linux = m.binary_for("ACME_CLI", "linux", "arm64").unwrap();
    assert_eq!(linux.path, "https://acme.example/v0.3.1/acme-linux-arm64");
    assert_eq!(linux.checksum, Some("4F".repeat(32)));
    let mac = m.binary_for("ACME_CLI", "darwin", "arm64").unwrap();
    assert_eq!(mac.archive_path.as_deref(), Some("bin/acme"));
    assert!(mac.is_archive() && mac.is_remote());
    assert_eq!(
        m.binary_for("ACME_CLI", "windows", "amd64")
            .unwrap()
            .name
            .as_deref(),
        Some("acme.exe")
    );
    assert_eq!(m.binary_for("ACME_CLI", "darwin", "amd64"), None);
    assert_eq!(m.binary_for("OTHER", "linux", "amd64"), None);

    let e = &m.exec;
    assert_eq!(e.init, script(&["${ACME_CLI} init"]));
    assert_eq!(Some(e.command.clone()), script(&["${ACME_CLI} command"]));
    assert_eq!(e.create, script(&["${ACME_CLI} create"]));
    assert_eq!(e.delete, script(&["${ACME_CLI} delete"]));
    assert_eq!(e.start, script(&["${ACME_CLI} start"]));
    assert_eq!(e.stop, script(&["${ACME_CLI}", "stop", "--wait"]));
    assert_eq!(
        e.status,
        script(&["set -e\n${ACME_CLI} status \\\n  --machine \"$MACHINE_ID\"\n"])
    );
    assert_eq!(
        e.stop.as_ref().unwrap().argv(),
        ["${ACME_CLI}", "stop", "--wait"]
    );
    assert_eq!(
        e.create.as_ref().unwrap().argv(),
        ["sh", "-c", "${ACME_CLI} create"]
    );
}

#[test]
fn reads_a_provider_without_machines() {
    let Parsed {
        manifest: m,
        warnings,
    } = ok(HOST);
    assert_eq!(
        warnings,
        [
            "binary HELPER for linux/amd64 (./bin/helper) has no checksum; it is a file on this \
             machine and is used as it is"
        ]
    );
    assert!(!m.is_machine_provider());
    assert_eq!(m.version.as_deref(), Some("1.0.0"));
    assert_eq!(
        m.exec.command.argv(),
        ["ssh", "-oBatchMode=yes", "${HOST}", "${COMMAND}"]
    );
    assert_eq!(m.exec.create, None);
    assert_eq!(m.agent.local, Some(StrBool("false".into())));
    assert_eq!(
        m.agent.docker.install.as_ref().map(StrBool::as_str),
        Some("${INSTALL_DOCKER}")
    );
    assert_eq!(m.option_names(), ["HOST", "INSTALL_DOCKER"]);
}

#[test]
fn warns_about_unknown_fields_with_their_paths() {
    let yaml = r#"
name: future
futureTopLevel: 1
options:
  A:
    description: x
    newOptionField: yes
    enum:
      - value: a
        color: red
exec:
  command: x
  foo: bar
agent:
  newAgentThing: {}
  docker:
    rootless: true
  exec:
    reboot: now
binaries:
  TOOL:
    - os: linux
      arch: amd64
      path: /usr/local/bin/tool
      signature: abc
optionGroups:
  - name: g
    collapsed: true
    options: [A, B]
"#;
    check_warnings(&[(
        yaml,
        &[
            "unknown field futureTopLevel, ignored",
            "unknown field options.A.newOptionField, ignored",
            "unknown field options.A.enum[0].color, ignored",
            "unknown field exec.foo, ignored",
            "unknown field agent.newAgentThing, ignored",
            "unknown field agent.docker.rootless, ignored",
            "unknown field agent.exec.reboot, ignored",
            "unknown field binaries.TOOL[0].signature, ignored",
            "unknown field optionGroups[0].collapsed, ignored",
            "binary TOOL for linux/amd64 (/usr/local/bin/tool) has no checksum; it is a file on \
             this machine and is used as it is",
            "optionGroups[0] ('g') lists option 'B', which is not defined, ignored",
        ],
    )]);
    // What is not known is dropped, what is known is kept.
    let m = ok(yaml).manifest;
    assert_eq!(m.options["A"].description.as_deref(), Some("x"));
    assert_eq!(m.options["A"].choices[0].value, "a");
    assert_eq!(m.exec.command, Script(vec!["x".into()]));
}

#[test]
fn warns_about_what_claude_vm_ignores() {
    let sum = "1f".repeat(32);
    let duplicate = minimal(&format!(
        "binaries:\n  T:\n    - {{os: linux, arch: amd64, path: 'https://e.com/a', checksum: {sum}}}\n    \
         - {{os: linux, arch: amd64, path: 'https://e.com/b', checksum: {sum}}}\n"
    ));
    check_warnings(&[
        (MINIMAL, &[]),
        (
            &minimal("agent:\n  dockerless:\n    image: x\n"),
            &["agent.dockerless is ignored: claude-vm runs workspaces with Docker"],
        ),
        (
            &minimal("agent:\n  driver: docker\n  kubernetes:\n    namespace: x\n  custom: {}\n"),
            &[
                "agent.kubernetes is ignored: claude-vm runs workspaces with Docker",
                "agent.custom is ignored: claude-vm runs workspaces with Docker",
            ],
        ),
        (
            &minimal("options:\n  A:\n    subOptionsCommand: list-more\n"),
            &["option 'A': subOptionsCommand is not supported by claude-vm, ignored"],
        ),
        (
            &duplicate,
            &["binary T is listed more than once for linux/amd64; the last entry is used"],
        ),
    ]);
    let m = ok(&duplicate).manifest;
    assert_eq!(
        m.binary_for("T", "linux", "amd64").unwrap().path,
        "https://e.com/b"
    );
}

#[test]
fn accepts_the_spellings_devpod_accepts() {
    let m = ok(&minimal(
        r#"version: 0.0.1
options:
  NUMBER:
    default: 40
  FLOAT_WHOLE:
    default: 1.0
  FLOAT:
    default: 1.5
  BOOL:
    default: true
    required: yes
    hidden: off
  SUGGESTED:
    suggestions: [20, 40, true]
  EMPTY:
  123:
    description: a number as a name
agent:
  injectGitCredentials: false
  local: true
  containerInactivityTimeout: 300
  exec:
    shutdown: [shutdown, -h, now]
  docker:
    env:
      A: 1
      DROPPED:
"#,
    ))
    .manifest;
    assert_eq!(m.options["NUMBER"].default.as_deref(), Some("40"));
    assert_eq!(m.options["FLOAT_WHOLE"].default.as_deref(), Some("1"));
    assert_eq!(m.options["FLOAT"].default.as_deref(), Some("1.5"));
    assert_eq!(m.options["BOOL"].default.as_deref(), Some("true"));
    assert!(m.options["BOOL"].required);
    assert!(!m.options["BOOL"].hidden);
    assert_eq!(m.options["SUGGESTED"].suggestions, ["20", "40", "true"]);
    assert_eq!(m.options["EMPTY"], OptionDef::default());
    assert_eq!(
        m.options["123"].description.as_deref(),
        Some("a number as a name")
    );
    assert_eq!(
        m.agent.inject_git_credentials,
        Some(StrBool("false".into()))
    );
    assert_eq!(m.agent.local, Some(StrBool("true".into())));
    assert_eq!(m.agent.container_inactivity_timeout.as_deref(), Some("300"));
    assert_eq!(m.agent.exec.shutdown, script(&["shutdown", "-h", "now"]));
    assert_eq!(
        m.agent.docker.env,
        BTreeMap::from([("A".to_string(), "1".to_string())])
    );
}

#[test]
fn empty_values_are_not_given() {
    let m = ok("name: t\nexec:\n  command: run\n  init:\n  create: []\n  delete: []\n  proxy:\n")
        .manifest;
    assert_eq!(m.exec.init, None);
    assert_eq!(m.exec.create, None);
    assert_eq!(m.exec.proxy, None);
    assert!(!m.is_machine_provider());

    // An empty text is no value, as in DevPod (`default: ""` is no default).
    let m = ok(&minimal(
        "version: ''\noptions:\n  A:\n    default: ''\n    description: ''\n    command: \
         ''\nagent:\n  driver: ''\n  injectGitCredentials: ''\n",
    ))
    .manifest;
    assert_eq!(m.version, None);
    assert_eq!(m.options["A"], OptionDef::default());
    assert_eq!(m.agent.driver, None);
    assert_eq!(m.agent.inject_git_credentials, None);
}

#[test]
fn applies_yaml_merge_keys() {
    let m = ok(&minimal(
        r#"binaries:
  TOOL:
    - &linux
      os: linux
      arch: amd64
      path: https://e.com/tool-amd64
      checksum: <sha-1>
    - <<: *linux
      arch: arm64
      path: https://e.com/tool-arm64
"#,
    ))
    .manifest;
    let arm = m.binary_for("TOOL", "linux", "arm64").unwrap();
    assert_eq!(arm.os, "linux");
    assert_eq!(arm.path, "https://e.com/tool-arm64");
    assert_eq!(arm.checksum, Some("1f".repeat(32)));
}

#[test]
fn refuses_what_is_not_a_provider() {
    check_errors(&[
        (
            "",
            "provider.yaml: the file is empty; a provider needs at least a name and exec.command",
        ),
        (
            "# only a comment\n",
            "provider.yaml: the file is empty; a provider needs at least a name and exec.command",
        ),
        (
            "- a\n- b\n",
            "provider.yaml: the file must be a mapping of fields (name, version, options, exec, \
             ...)",
        ),
        (
            "just text",
            "provider.yaml: the file must be a mapping of fields (name, version, options, exec, \
             ...)",
        ),
    ]);
    for yaml in ["name: [unclosed", "a: 1\na: 2\n", "name: t\n\tbad: tab\n"] {
        let err = parse(yaml).unwrap_err();
        assert!(matches!(err, ManifestError::Yaml(_)), "{yaml:?}: {err:?}");
        assert!(
            err.to_string()
                .starts_with("provider.yaml is not valid YAML: ")
        );
    }
}

#[test]
fn refuses_bad_names_and_versions() {
    check_errors(&[
        (
            "exec:\n  command: x\n",
            "provider.yaml: name is missing; give the provider a name like my-cloud",
        ),
        (
            "name: ''\nexec:\n  command: x\n",
            "provider.yaml: name is missing; give the provider a name like my-cloud",
        ),
        (
            "name: My_Cloud\nexec:\n  command: x\n",
            "provider.yaml: name 'My_Cloud' may only contain lowercase letters, digits and dashes",
        ),
        (
            "name: a-provider-name-thirty-three-long\nexec:\n  command: x\n",
            "provider.yaml: name 'a-provider-name-thirty-three-long' is longer than 32 characters",
        ),
        (
            "name: t\nversion: '1.0'\nexec:\n  command: x\n",
            "provider.yaml: version '1.0' is not a semantic version like v1.2.3 or 0.4.0-beta.1",
        ),
        (
            "name: t\nversion: 1.0\nexec:\n  command: x\n",
            "provider.yaml: version '1' is not a semantic version like v1.2.3 or 0.4.0-beta.1",
        ),
        (
            "name: t\nversion: vv1.2.3\nexec:\n  command: x\n",
            "provider.yaml: version 'vv1.2.3' is not a semantic version like v1.2.3 or \
             0.4.0-beta.1",
        ),
        (
            "name: [t]\nexec:\n  command: x\n",
            "provider.yaml: name must be text, not a list",
        ),
        (
            "name: !custom t\nexec:\n  command: x\n",
            "provider.yaml: name has the YAML tag !custom, which provider.yaml does not use; \
             remove it",
        ),
    ]);
    // The name may be exactly 32 characters.
    assert_eq!(
        ok("name: a-provider-name-thirty-three-lon\nexec:\n  command: x\n")
            .manifest
            .name
            .len(),
        32
    );
}

#[test]
fn checks_versions_as_semver() {
    let good = [
        "0.0.1",
        "1.2.3",
        "10.20.30",
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-0.3.7",
        "1.0.0-x-y.z",
        "1.0.0+build.5",
        "1.0.0-rc.1+sha.abc-def",
    ];
    let bad = [
        "",
        "1",
        "1.2",
        "1.2.3.4",
        "01.2.3",
        "1.02.3",
        "1.2.03",
        "1.2.3-",
        "1.2.3-01",
        "1.2.3-a..b",
        "1.2.3+",
        "1.2.3+a_b",
        "a.b.c",
        "1.2.-3",
        " 1.2.3",
    ];
    for v in good {
        assert!(is_semver(v), "{v} should be a version");
    }
    for v in bad {
        assert!(!is_semver(v), "{v:?} should not be a version");
    }
}

#[test]
fn refuses_bad_options() {
    let o = |body: &str| minimal(&format!("options:\n{body}"));
    check_errors(&[
        (
            &o("  region:\n    default: x\n"),
            "provider.yaml: option name 'region' may only contain upper-case letters, digits and \
             underscores (like MY_OPTION): it becomes an environment variable",
        ),
        (
            &o("  MY-OPTION:\n    default: x\n"),
            "provider.yaml: option name 'MY-OPTION' may only contain upper-case letters, digits \
             and underscores (like MY_OPTION): it becomes an environment variable",
        ),
        (
            &o("  REGION:\n    default: ams\n    command: echo fra\n"),
            "provider.yaml: option 'REGION': default and command cannot be used together; keep \
             one",
        ),
        (
            &o("  A:\n    global: true\n    cache: 5m\n    command: x\n"),
            "provider.yaml: option 'A': global and cache cannot be used together",
        ),
        (
            &o("  A:\n    global: true\n    mutable: true\n"),
            "provider.yaml: option 'A': global and mutable cannot be used together",
        ),
        (
            &o("  A:\n    cache: 5 minutes\n    command: x\n"),
            "provider.yaml: option 'A': cache: '5 minutes' is not a duration (its unit is not \
             one of ns, us, ms, s, m, h); write one like 30s, 10m or 1h30m",
        ),
        (
            &o("  A:\n    cache: 5m\n"),
            "provider.yaml: option 'A': cache needs a command (it says how long the command's \
             value is kept)",
        ),
        (
            &o("  A:\n    type: int\n"),
            "provider.yaml: option 'A': type 'int' is not one of string, multiline, duration, \
             number, boolean",
        ),
        (
            &o("  A:\n    required: maybe\n"),
            "provider.yaml: options.A.required must be true or false, not 'maybe'",
        ),
        (
            &o("  A:\n    password: 1\n"),
            "provider.yaml: options.A.password must be true or false, not a number",
        ),
        (
            &o("  A:\n    default: [a]\n"),
            "provider.yaml: options.A.default must be text, not a list",
        ),
        (
            &o("  A:\n    suggestions: a\n"),
            "provider.yaml: options.A.suggestions must be a list of text, not text",
        ),
        (
            &o("  A:\n    suggestions: [[a]]\n"),
            "provider.yaml: options.A.suggestions[0] must be text, not a list",
        ),
        (
            &o("  A:\n    enum: a\n"),
            "provider.yaml: options.A.enum must be a list of allowed values, not text",
        ),
        (
            &o("  A:\n    enum: [[a]]\n"),
            "provider.yaml: options.A.enum[0] must be a value or {value, displayName}, not a list",
        ),
        (
            &o("  A: text\n"),
            "provider.yaml: options.A must be a mapping of fields, not text",
        ),
        (
            "name: t\noptions: [A]\nexec:\n  command: x\n",
            "provider.yaml: options must be a mapping of names, not a list",
        ),
        (
            "name: t\noptions:\n  [A, B]: {}\nexec:\n  command: x\n",
            "provider.yaml: options has a key that is a list; keys must be names",
        ),
    ]);
}

#[test]
fn refuses_bad_binaries() {
    let b = |entry: &str| minimal(&format!("binaries:\n  TOOL:\n    - {entry}\n"));
    let a = |entry: &str| {
        minimal(&format!(
            "agent:\n  binaries:\n    TOOL:\n      - {entry}\n"
        ))
    };
    check_errors(&[
        (
            &minimal("binaries:\n  tool:\n    - {os: linux, arch: amd64, path: ./tool}\n"),
            "provider.yaml: binaries: binary name 'tool' may only contain upper-case letters, \
             digits and underscores (like MY_TOOL): it becomes an environment variable",
        ),
        (
            &b("{arch: amd64, path: ./tool}"),
            "provider.yaml: binaries.TOOL[0]: os '' must be linux, darwin or windows",
        ),
        (
            &b("{os: freebsd, arch: amd64, path: ./tool}"),
            "provider.yaml: binaries.TOOL[0]: os 'freebsd' must be linux, darwin or windows",
        ),
        (
            &b("{os: linux, path: ./tool}"),
            "provider.yaml: binaries.TOOL[0]: arch is missing (like amd64 or arm64)",
        ),
        (
            &b("{os: linux, arch: amd64}"),
            "provider.yaml: binary TOOL for linux/amd64 has no path (an https URL or a file)",
        ),
        (
            &b("{os: linux, arch: amd64, path: 'https://e.com/t.tgz', checksum: <sha-1>}"),
            "provider.yaml: binary TOOL for linux/amd64: https://e.com/t.tgz is an archive, so \
             archivePath must say which file in it is the binary",
        ),
        (
            &b("{os: linux, arch: amd64, path: 'https://e.com/tool'}"),
            "provider.yaml: binary TOOL for linux/amd64 has no checksum; claude-vm runs only \
             checksum-verified binaries",
        ),
        (
            &b("{os: linux, arch: amd64, path: 'http://e.com/tool'}"),
            "provider.yaml: binary TOOL for linux/amd64 has no checksum; claude-vm runs only \
             checksum-verified binaries",
        ),
        (
            &b("{os: linux, arch: amd64, path: 'https://e.com/tool', checksum: abc123}"),
            "provider.yaml: binary TOOL for linux/amd64: checksum 'abc123' is not a SHA-256 (64 \
             hexadecimal digits)",
        ),
        (
            &a("{os: linux, arch: arm64, path: 'https://e.com/tool'}"),
            "provider.yaml: agent binary TOOL for linux/arm64 has no checksum; claude-vm runs \
             only checksum-verified binaries",
        ),
        (
            &a("{os: linux, arch: arm64, path: ./t.zip}"),
            "provider.yaml: agent binary TOOL for linux/arm64: ./t.zip is an archive, so \
             archivePath must say which file in it is the binary",
        ),
        (
            &minimal("binaries:\n  TOOL:\n    -\n"),
            "provider.yaml: binaries.TOOL[0] is empty",
        ),
        (
            &minimal("binaries:\n  TOOL: ./tool\n"),
            "provider.yaml: binaries.TOOL must be a list, not text",
        ),
    ]);
}

#[test]
fn refuses_incomplete_exec() {
    let e = |body: &str| format!("name: t\nexec:\n{body}");
    check_errors(&[
        (
            "name: t\n",
            "provider.yaml: exec.command is missing; claude-vm needs it to run commands in the \
             machine",
        ),
        (
            &e("  init: x\n"),
            "provider.yaml: exec.command is missing; claude-vm needs it to run commands in the \
             machine",
        ),
        (
            &e("  command: x\n  create: x\n"),
            "provider.yaml: exec.create is given without exec.delete; a machine provider needs \
             both",
        ),
        (
            &e("  command: x\n  delete: x\n"),
            "provider.yaml: exec.delete is given without exec.create; a machine provider needs \
             both",
        ),
        (
            &e("  command: x\n  create: x\n  delete: x\n  start: x\n  status: x\n"),
            "provider.yaml: exec.start is given without exec.stop; give both or neither",
        ),
        (
            &e("  command: x\n  create: x\n  delete: x\n  stop: x\n"),
            "provider.yaml: exec.stop is given without exec.start; give both or neither",
        ),
        (
            &e("  command: x\n  create: x\n  delete: x\n  start: x\n  stop: x\n"),
            "provider.yaml: exec.start needs exec.status, to know when the machine is stopped",
        ),
        (
            &e("  command: x\n  start: x\n  stop: x\n  status: x\n"),
            "provider.yaml: exec.start needs exec.create: only machine providers start machines",
        ),
        (
            &e("  command: 5\n"),
            "provider.yaml: exec.command must be a script (a string) or a command (a list of \
             strings), not a number",
        ),
        (
            &e("  command: [ls, 1]\n"),
            "provider.yaml: exec.command[1] must be text (a script is a string or a list of \
             strings), not a number",
        ),
        (
            "name: t\nexec: run\n",
            "provider.yaml: exec must be a mapping of fields, not text",
        ),
        (
            &minimal("agent:\n  injectGitCredentials: 1\n"),
            "provider.yaml: agent.injectGitCredentials must be true, false or text like \
             ${OPTION}, not a number",
        ),
    ]);
}

#[test]
fn refuses_providers_claude_vm_does_not_run() {
    check_errors(&[
        (
            "name: t\nexec:\n  proxy:\n    up: x\n    ssh: x\n",
            "provider.yaml: exec.proxy: proxy providers (DevPod Pro) are not supported by \
             claude-vm (it needs exec.command)",
        ),
        (
            "name: t\nexec:\n  daemon:\n    start: x\n",
            "provider.yaml: exec.daemon: daemon providers (DevPod Pro) are not supported by \
             claude-vm (it needs exec.command)",
        ),
        (
            &minimal("agent:\n  driver: kubernetes\n"),
            "provider.yaml: claude-vm runs workspaces with Docker; agent.driver kubernetes is not \
             supported",
        ),
        (
            &minimal("agent:\n  driver: custom\n"),
            "provider.yaml: claude-vm runs workspaces with Docker; agent.driver custom is not \
             supported",
        ),
        (
            &minimal("agent:\n  driver: podman\n"),
            "provider.yaml: agent.driver 'podman' is not a driver; leave it out or write docker",
        ),
    ]);
    let err = parse(&minimal("agent:\n  driver: kubernetes\n")).unwrap_err();
    assert!(matches!(err, ManifestError::Unsupported(_)));
    assert!(
        ok(&minimal("agent:\n  driver: docker\n"))
            .warnings
            .is_empty()
    );
}

#[test]
fn refuses_bad_groups_and_dependencies() {
    let o = |body: &str| minimal(&format!("options:\n{body}"));
    check_errors(&[
        (
            &minimal("optionGroups:\n  - options: [A]\n"),
            "provider.yaml: optionGroups[0].name is empty; name the group",
        ),
        (
            &o("  A:\n    default: ${B}-x\n  B:\n    command: echo ${A}\n"),
            "provider.yaml: options A -> B -> A refer to each other in their defaults or \
             commands; break the cycle",
        ),
        (
            &o("  A:\n    default: $B\n  B:\n    default: $C\n  C:\n    default: $B\n"),
            "provider.yaml: options B -> C -> B refer to each other in their defaults or \
             commands; break the cycle",
        ),
        (
            &o("  A:\n    default: ${L}-x\n  L:\n    local: true\n    default: ${MACHINE_ID}\n"),
            "provider.yaml: option 'A' is filled once per provider, but its default uses 'L', \
             which is local (filled per machine); make 'A' local too",
        ),
        (
            &o("  G:\n    global: true\n    command: echo $N\n  N:\n    default: n\n"),
            "provider.yaml: option 'G' is global, but its command uses 'N', which is not; make \
             'N' global too",
        ),
    ]);
    // An option may mention itself (it is not yet known then), and use built-ins.
    let m = ok(&o(
        "  A:\n    default: x${A}\n  L:\n    local: true\n    default: ${A}-${MACHINE_ID}\n",
    ))
    .manifest;
    assert_eq!(
        m.options["L"].default.as_deref(),
        Some("${A}-${MACHINE_ID}")
    );
}

#[test]
fn round_trips_through_json() {
    let Parsed { manifest, .. } = ok(ACME);
    let json = serde_json::to_string(&manifest).unwrap();
    let mut back: crate::Manifest = serde_json::from_str(&json).unwrap();
    assert_eq!(back.option_order, Vec::<String>::new());
    back.option_order = manifest.option_order.clone();
    assert_eq!(back, manifest);
    // Scripts keep their spelling: one string, or a list.
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["exec"]["create"], "${ACME_CLI} create");
    assert_eq!(
        value["exec"]["stop"],
        serde_json::json!(["${ACME_CLI}", "stop", "--wait"])
    );
    assert_eq!(
        value["agent"]["injectGitCredentials"],
        "${INJECT_GIT_CREDENTIALS}"
    );
    assert_eq!(value["options"]["ACME_DISK_GB"]["type"], "number");
}
