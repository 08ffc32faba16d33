//! Tests of [`resolve`]: the order options are filled in, defaults, commands (through a
//! fake runner that records what it was asked), per-machine options, and the checks of the
//! user's values.

use super::*;
use crate::parse;

/// A provider with options of every kind; its commands are answered by [`Runner`].
const CLOUD: &str = r#"
name: cloud
options:
  ZONE:
    description: The zone.
    default: ${REGION}-${ZONE_LETTER}
  REGION:
    description: The region.
    required: true
    default: ${DEFAULT_REGION}
  DEFAULT_REGION:
    hidden: true
    command: cloud default-region
  ZONE_LETTER:
    default: a
  TOKEN:
    description: The API token.
    required: true
    password: true
    command: printf '%s' "${CLOUD_TOKEN:-}"
  SESSION:
    local: true
    cache: 10m
    command: cloud session ${MACHINE_ID} ${REGION}
  DISK_NAME:
    local: true
    default: ${PROVIDER_ID}-${MACHINE_ID}-disk
  KEY_PATH:
    default: ${MACHINE_FOLDER}/key
  SIZE:
    enum:
      - value: small
      - value: large
    default: small
  ONLY:
    enum: [the-one]
  DISK_GB:
    type: number
    default: 40
  SPOT:
    type: boolean
  TIMEOUT:
    type: duration
  PROJECT:
    description: The project.
    required: true
exec:
  command: cloud ssh
"#;

fn cloud() -> Manifest {
    parse(CLOUD).unwrap().manifest
}

/// Answers option commands and records each call with its environment.
#[derive(Default)]
struct Runner {
    calls: Vec<(String, BTreeMap<String, String>)>,
    token: String,
}

impl Runner {
    fn run(&mut self, command: &str, env: &BTreeMap<String, String>) -> Result<String, String> {
        self.calls.push((command.to_string(), env.clone()));
        match command {
            "cloud default-region" => Ok("fra\n".into()),
            "printf '%s' \"${CLOUD_TOKEN:-}\"" => Ok(self.token.clone()),
            "cloud session ${MACHINE_ID} ${REGION}" => {
                Ok(format!("  session-{}\r\n\n", env["MACHINE_ID"]))
            }
            other => Err(format!("unexpected command {other}")),
        }
    }

    fn commands(&self) -> Vec<&str> {
        self.calls.iter().map(|(c, _)| c.as_str()).collect()
    }
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn builtins() -> BTreeMap<String, String> {
    map(&[("PROVIDER_ID", "cloud"), ("DEVPOD_OS", "linux")])
}

fn resolve_with(
    manifest: &Manifest,
    scope: Scope,
    user: &[(&str, &str)],
    builtins: &BTreeMap<String, String>,
    runner: &mut Runner,
) -> Result<Resolved, ResolveError> {
    resolve(manifest, &map(user), builtins, scope, &mut |c, env| {
        runner.run(c, env)
    })
}

#[test]
fn fills_provider_options_in_dependency_order() {
    let m = cloud();
    let mut runner = Runner {
        token: "tok-123".into(),
        ..Runner::default()
    };
    let resolved = resolve_with(
        &m,
        Scope::Provider,
        &[("PROJECT", "p1")],
        &builtins(),
        &mut runner,
    )
    .unwrap();
    assert_eq!(
        resolved.values,
        map(&[
            ("ZONE", "fra-a"),
            ("REGION", "fra"),
            ("DEFAULT_REGION", "fra"),
            ("ZONE_LETTER", "a"),
            ("TOKEN", "tok-123"),
            // MACHINE_FOLDER is not known yet: the reference stays as written.
            ("KEY_PATH", "${MACHINE_FOLDER}/key"),
            ("SIZE", "small"),
            ("ONLY", "the-one"),
            ("DISK_GB", "40"),
            ("SPOT", ""),
            ("TIMEOUT", ""),
            ("PROJECT", "p1"),
        ])
    );
    assert!(resolved.missing.is_empty());
    assert!(resolved.cached.is_empty());
    assert_eq!(
        runner.commands(),
        ["cloud default-region", "printf '%s' \"${CLOUD_TOKEN:-}\""]
    );
    // A command sees the built-ins and the options filled before it.
    let (_, env) = &runner.calls[1];
    assert_eq!(
        *env,
        map(&[
            ("PROVIDER_ID", "cloud"),
            ("DEVPOD_OS", "linux"),
            ("ZONE", "fra-a"),
            ("REGION", "fra"),
            ("DEFAULT_REGION", "fra"),
            ("ZONE_LETTER", "a"),
        ])
    );
}

#[test]
fn the_order_follows_references_then_the_manifest() {
    let m = cloud();
    assert_eq!(
        resolution_order(&m).unwrap(),
        [
            "DEFAULT_REGION",
            "REGION",
            "ZONE_LETTER",
            "ZONE",
            "TOKEN",
            "SESSION",
            "DISK_NAME",
            "KEY_PATH",
            "SIZE",
            "ONLY",
            "DISK_GB",
            "SPOT",
            "TIMEOUT",
            "PROJECT",
        ]
    );
}

#[test]
fn user_values_win() {
    let m = cloud();
    let mut runner = Runner::default();
    let resolved = resolve_with(
        &m,
        Scope::Provider,
        &[
            ("REGION", "ams"),
            ("TOKEN", "mine"),
            ("PROJECT", "p"),
            ("SIZE", "large"),
            // A user value for a local option is kept, even per provider.
            ("DISK_NAME", "my-disk"),
            ("ZONE_LETTER", ""),
        ],
        &builtins(),
        &mut runner,
    )
    .unwrap();
    assert_eq!(resolved.values["REGION"], "ams");
    assert_eq!(resolved.values["ZONE"], "ams-");
    assert_eq!(resolved.values["TOKEN"], "mine");
    assert_eq!(resolved.values["SIZE"], "large");
    assert_eq!(resolved.values["DISK_NAME"], "my-disk");
    // DEFAULT_REGION still runs: nothing the user gave replaces it.
    assert_eq!(runner.commands(), ["cloud default-region"]);
}

#[test]
fn lists_required_options_still_empty() {
    let m = cloud();
    let mut runner = Runner::default();
    let resolved = resolve_with(&m, Scope::Provider, &[], &builtins(), &mut runner).unwrap();
    // In manifest order; descriptions and secrecy come from the manifest.
    assert_eq!(resolved.missing, ["TOKEN", "PROJECT"]);
    // An empty value the user gave is still missing.
    let resolved = resolve_with(
        &m,
        Scope::Provider,
        &[("PROJECT", "")],
        &builtins(),
        &mut runner,
    )
    .unwrap();
    assert_eq!(resolved.missing.len(), 2);
}

#[test]
fn fills_local_options_per_machine() {
    let m = cloud();
    let mut runner = Runner {
        token: "t".into(),
        ..Runner::default()
    };
    let mut machine = builtins();
    machine.extend(map(&[
        ("MACHINE_ID", "m-42"),
        ("MACHINE_FOLDER", "/state/machines/m-42"),
    ]));
    let resolved = resolve_with(
        &m,
        Scope::Machine,
        &[("PROJECT", "p")],
        &machine,
        &mut runner,
    )
    .unwrap();
    assert_eq!(resolved.values["SESSION"], "session-m-42");
    assert_eq!(resolved.values["DISK_NAME"], "cloud-m-42-disk");
    assert_eq!(resolved.values["KEY_PATH"], "/state/machines/m-42/key");
    assert_eq!(
        resolved.cached,
        BTreeMap::from([("SESSION".to_string(), Duration::from_secs(600))])
    );
    let (_, env) = runner
        .calls
        .iter()
        .find(|(c, _)| c.starts_with("cloud session"))
        .unwrap();
    assert_eq!(env["REGION"], "fra");
    assert_eq!(env["MACHINE_ID"], "m-42");
}

#[test]
fn checks_user_values() {
    let m = cloud();
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("SIZE", "small", None),
        (
            "SIZE",
            "huge",
            Some("option 'SIZE': 'huge' is not one of small, large"),
        ),
        (
            "SIZE",
            "",
            Some("option 'SIZE': '' is not one of small, large"),
        ),
        (
            "ONLY",
            "other",
            Some("option 'ONLY': 'other' is not one of the-one"),
        ),
        ("DISK_GB", "100", None),
        ("DISK_GB", "-5", None),
        ("DISK_GB", "+5", None),
        (
            "DISK_GB",
            "1.5",
            Some("option 'DISK_GB': '1.5' must be a whole number"),
        ),
        (
            "DISK_GB",
            "40GB",
            Some("option 'DISK_GB': '40GB' must be a whole number"),
        ),
        (
            "DISK_GB",
            "99999999999999999999",
            Some("option 'DISK_GB': '99999999999999999999' must be a whole number"),
        ),
        ("SPOT", "true", None),
        ("SPOT", "F", None),
        ("SPOT", "1", None),
        (
            "SPOT",
            "yes",
            Some("option 'SPOT': 'yes' must be true or false"),
        ),
        ("TIMEOUT", "1h30m", None),
        (
            "TIMEOUT",
            "90",
            Some("option 'TIMEOUT': '90' must be a duration like 10s, 5m or 24h"),
        ),
        ("REGION", "anything", None),
    ];
    for (option, value, want) in cases {
        let got = resolve_with(
            &m,
            Scope::Provider,
            &[(option, value), ("TOKEN", "t")],
            &builtins(),
            &mut Runner::default(),
        );
        match want {
            None => assert!(got.is_ok(), "{option}={value}: {got:?}"),
            Some(want) => assert_eq!(got.unwrap_err().to_string(), *want, "{option}={value}"),
        }
    }
}

#[test]
fn does_not_quote_secret_values() {
    let m = parse(
        "name: t\noptions:\n  KEY:\n    password: true\n    type: number\nexec:\n  command: x\n",
    )
    .unwrap()
    .manifest;
    let err = resolve_with(
        &m,
        Scope::Provider,
        &[("KEY", "s3cret")],
        &BTreeMap::new(),
        &mut Runner::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "option 'KEY': the value must be a whole number"
    );
}

#[test]
fn refuses_unknown_user_options() {
    let m = cloud();
    let err = resolve_with(
        &m,
        Scope::Provider,
        &[("REGOIN", "x"), ("ZONE", "a")],
        &builtins(),
        &mut Runner::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown option REGOIN; this provider's options are ZONE, REGION, DEFAULT_REGION, \
         ZONE_LETTER, TOKEN, SESSION, DISK_NAME, KEY_PATH, SIZE, ONLY, DISK_GB, SPOT, TIMEOUT, \
         PROJECT"
    );
    let none = parse("name: t\nexec:\n  command: x\n").unwrap().manifest;
    let err = resolve_with(
        &none,
        Scope::Provider,
        &[("A", "1"), ("B", "2")],
        &BTreeMap::new(),
        &mut Runner::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown options A, B; this provider has no options"
    );
}

#[test]
fn reports_failing_commands_and_cycles() {
    let m = parse("name: t\noptions:\n  A:\n    command: broken\nexec:\n  command: x\n")
        .unwrap()
        .manifest;
    let err = resolve_with(
        &m,
        Scope::Provider,
        &[],
        &BTreeMap::new(),
        &mut Runner::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "option 'A': its command failed: unexpected command broken"
    );

    // parse refuses cycles; a manifest built otherwise is still checked.
    let mut m = Manifest::default();
    for (name, default) in [("A", "${B}"), ("B", "${C}"), ("C", "${A}")] {
        m.options.insert(
            name.into(),
            OptionDef {
                default: Some(default.into()),
                ..OptionDef::default()
            },
        );
    }
    let err = resolve_with(
        &m,
        Scope::Provider,
        &[],
        &BTreeMap::new(),
        &mut Runner::default(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        ResolveError::Cycle {
            cycle: vec!["A".into(), "B".into(), "C".into(), "A".into()]
        }
    );
    assert_eq!(
        err.to_string(),
        "options A -> B -> C -> A refer to each other in their defaults or commands; break the \
         cycle"
    );
}
