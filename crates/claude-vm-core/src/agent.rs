//! What claude-vm knows of each agent kind without being told: how its vendor installs it,
//! where the installer leaves it, which accounts it can use and how an account reaches it,
//! and whether a program found on this machine can run in a Linux workspace.

use std::collections::BTreeMap;

/// Seconds an installer may run before it is stopped (`agents.<kind>.install_timeout`).
pub const DEFAULT_INSTALL_TIMEOUT: u64 = 600;

/// A vendor's documented way to install an agent kind, run in the workspace as the agent
/// user with `HOME` set (so what it installs lands in the agent's home, on the volume).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    /// What it is, for progress and errors ("Claude Code's native installer").
    pub what: &'static str,
    /// A POSIX shell script.
    pub script: String,
    /// Where it leaves the program, relative to the agent's home.
    pub program: &'static str,
}

/// Where a default install fetches the vendor's installer, unless
/// `agents.<kind>.installer_url` names another (a mirror, a pinned copy).
pub fn default_installer_url(kind: &str) -> Option<&'static str> {
    match kind {
        "claude" => Some("https://claude.ai/install.sh"),
        "goose" => {
            Some("https://github.com/aaif-goose/goose/releases/download/stable/download_cli.sh")
        }
        // The release binary Codex publishes for Linux (static, musl), by architecture.
        "codex" => Some("https://github.com/openai/codex/releases/latest/download"),
        _ => None,
    }
}

/// `fetch URL`: the URL's body on stdout, with curl or wget, whichever the image has.
const FETCH: &str = r#"fetch() {
  if command -v curl >/dev/null 2>&1; then curl -fsSL --retry 2 "$1"
  elif command -v wget >/dev/null 2>&1; then wget -qO- "$1"
  else echo "neither curl nor wget is in the workspace image: the installer cannot download anything" >&2; return 127
  fi
}
"#;

/// `npm_install PACKAGE [REGISTRY]`: install an npm package into `~/.local`, from REGISTRY
/// when one is given (else from the registry npm's own configuration names).
const NPM: &str = r#"npm_install() {
  if ! command -v npm >/dev/null 2>&1; then
    echo "$1 installs with npm, and the workspace image has no Node.js (npm)" >&2; return 127
  fi
  if [ -n "${2:-}" ]; then
    npm install --global --no-fund --no-audit --prefix "$HOME/.local" --registry "$2" "$1"
  else
    npm install --global --no-fund --no-audit --prefix "$HOME/.local" "$1"
  fi
}
"#;

/// The default install of `kind`, fetching the vendor's installer from `installer_url`
/// (see [`default_installer_url`]); for the kinds published only as npm packages (Gemini
/// CLI, Qwen Code), `installer_url` names the npm registry to install from. `None` for
/// kinds that have none (`acp`).
pub fn default_install(kind: &str, installer_url: Option<&str>) -> Option<Install> {
    let url = installer_url
        .or(default_installer_url(kind))
        .map(crate::posix::sh_quote);
    let registry = url.as_deref().map(|u| format!(" {u}")).unwrap_or_default();
    let (what, body, program) = match kind {
        // The native installer downloads the binary for this platform, checks it against
        // the release manifest and runs its `install`, which leaves `~/.local/bin/claude`.
        "claude" => (
            "Claude Code's native installer",
            format!(
                "{FETCH}set -e\nfetch {} > \"$HOME/.claude-vm-install.sh\"\nbash \"$HOME/.claude-vm-install.sh\"\nrm -f \"$HOME/.claude-vm-install.sh\"\n",
                url?
            ),
            ".local/bin/claude",
        ),
        // npm where Node exists; otherwise the static release binary.
        "codex" => (
            "Codex's npm package or release binary",
            format!(
                "{FETCH}{NPM}set -e\nif command -v npm >/dev/null 2>&1; then npm_install @openai/codex; exit 0; fi\n\
                 case \"$(uname -m)\" in x86_64) arch=x86_64;; aarch64|arm64) arch=aarch64;; *) echo \"Codex publishes no Linux binary for $(uname -m)\" >&2; exit 1;; esac\n\
                 mkdir -p \"$HOME/.local/bin\"\nfetch {}/codex-$arch-unknown-linux-musl.tar.gz > \"$HOME/.codex-download.tar.gz\"\n\
                 tar -xzf \"$HOME/.codex-download.tar.gz\" -C \"$HOME/.local/bin\"\nrm -f \"$HOME/.codex-download.tar.gz\"\n\
                 mv \"$HOME/.local/bin/codex-$arch-unknown-linux-musl\" \"$HOME/.local/bin/codex\"\nchmod 755 \"$HOME/.local/bin/codex\"\n",
                url?
            ),
            ".local/bin/codex",
        ),
        "gemini" => (
            "Gemini CLI's npm package",
            format!("{NPM}npm_install @google/gemini-cli{registry}\n"),
            ".local/bin/gemini",
        ),
        "qwen" => (
            "Qwen Code's npm package",
            format!("{NPM}npm_install @qwen-code/qwen-code{registry}\n"),
            ".local/bin/qwen",
        ),
        "goose" => (
            "Goose's installer",
            format!(
                "{FETCH}set -e\nmkdir -p \"$HOME/.local/bin\"\nfetch {} > \"$HOME/.claude-vm-install.sh\"\n\
                 CONFIGURE=false GOOSE_BIN_DIR=\"$HOME/.local/bin\" bash \"$HOME/.claude-vm-install.sh\"\nrm -f \"$HOME/.claude-vm-install.sh\"\n",
                url?
            ),
            ".local/bin/goose",
        ),
        _ => return None,
    };
    Some(Install {
        what,
        script: body,
        program,
    })
}

/// What a program file is, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryKind {
    /// A Linux (or other ELF) executable for this architecture (named as
    /// [`crate::posix::normalize_arch`] names it).
    Elf(&'static str),
    /// An ELF executable for an architecture claude-vm does not name.
    ElfOther(u16),
    /// A macOS (Mach-O) executable: never runs in a Linux workspace.
    MachO,
    /// A script (`#!`): it needs its interpreter and whatever files it loads.
    Script,
    Unknown,
}

/// Classify a program from (at least) its first 20 bytes.
pub fn binary_kind(head: &[u8]) -> BinaryKind {
    if head.starts_with(b"#!") {
        return BinaryKind::Script;
    }
    if head.len() >= 20 && head.starts_with(b"\x7fELF") {
        let machine = if head[5] == 2 {
            u16::from_be_bytes([head[18], head[19]])
        } else {
            u16::from_le_bytes([head[18], head[19]])
        };
        return match machine {
            62 => BinaryKind::Elf("x86_64"),
            183 => BinaryKind::Elf("aarch64"),
            other => BinaryKind::ElfOther(other),
        };
    }
    let magic = head.get(..4).map(|m| [m[0], m[1], m[2], m[3]]);
    match magic {
        // 64- and 32-bit Mach-O in either byte order, and universal binaries.
        Some([0xcf, 0xfa, 0xed, 0xfe])
        | Some([0xfe, 0xed, 0xfa, 0xcf])
        | Some([0xce, 0xfa, 0xed, 0xfe])
        | Some([0xfe, 0xed, 0xfa, 0xce])
        | Some([0xca, 0xfe, 0xba, 0xbe]) => BinaryKind::MachO,
        _ => BinaryKind::Unknown,
    }
}

/// What sort of account an agent kind is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    /// An API key of the vendor's API.
    ApiKey,
    /// A long-lived OAuth token (`claude setup-token`) of a subscription.
    OauthToken,
    /// The agent's own login file on this machine (`~/.claude/.credentials.json`,
    /// `~/.codex/auth.json`), read each time a conversation starts.
    LocalLogin,
}

/// The environment variables through which `kind` takes an account of `account` kind, the
/// first being the one claude-vm sets; empty when it takes none that way.
pub fn account_env(kind: &str, account: AccountKind) -> &'static [&'static str] {
    match (kind, account) {
        ("claude", AccountKind::ApiKey) => &["ANTHROPIC_API_KEY"],
        // ANTHROPIC_AUTH_TOKEN: a bearer token for a gateway of the user's.
        ("claude", AccountKind::OauthToken) => &["CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_AUTH_TOKEN"],
        ("codex", AccountKind::ApiKey) => &["OPENAI_API_KEY", "CODEX_API_KEY"],
        ("gemini", AccountKind::ApiKey) => &["GEMINI_API_KEY", "GOOGLE_API_KEY"],
        ("qwen", AccountKind::ApiKey) => &["OPENAI_API_KEY", "DASHSCOPE_API_KEY"],
        ("goose", AccountKind::ApiKey) => &["ANTHROPIC_API_KEY", "OPENAI_API_KEY"],
        _ => &[],
    }
}

/// The kinds of account `kind` can use, in the order claude-vm looks for them.
pub fn account_kinds(kind: &str) -> &'static [AccountKind] {
    match kind {
        "claude" => &[
            AccountKind::ApiKey,
            AccountKind::OauthToken,
            AccountKind::LocalLogin,
        ],
        "codex" => &[AccountKind::ApiKey, AccountKind::LocalLogin],
        "gemini" | "qwen" | "goose" => &[AccountKind::ApiKey],
        _ => &[],
    }
}

/// The agent's own login file, relative to the user's home.
pub fn local_login_file(kind: &str) -> Option<&'static str> {
    match kind {
        "claude" => Some(".claude/.credentials.json"),
        "codex" => Some(".codex/auth.json"),
        _ => None,
    }
}

/// Environment variables that, beside an account found in the environment, say where it is
/// used (a proxy or gateway of the user's) and go with it.
pub fn companion_env(kind: &str) -> &'static [&'static str] {
    match kind {
        "claude" => &["ANTHROPIC_BASE_URL"],
        "goose" => &["GOOSE_PROVIDER", "GOOSE_MODEL"],
        "qwen" => &["OPENAI_BASE_URL", "OPENAI_MODEL"],
        _ => &[],
    }
}

/// How a local login reaches the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalLogin {
    /// Set this environment.
    Env(BTreeMap<String, String>),
    /// Write this file (relative to the agent's home, owner-only) with these bytes.
    File(&'static str, Vec<u8>),
}

/// Read the agent's own login file: what the agent needs of it, or why it cannot be used.
/// `now_ms` is the current time in milliseconds since the epoch.
pub fn read_local_login(kind: &str, text: &str, now_ms: i64) -> Result<LocalLogin, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("it is not valid JSON ({e})"))?;
    match kind {
        // {"claudeAiOauth": {"accessToken", "refreshToken", "expiresAt" (ms), ...}}: the
        // access token goes as CLAUDE_CODE_OAUTH_TOKEN. The refresh token stays here: a
        // workspace refreshing it would sign this machine's own login out.
        "claude" => {
            let oauth = v
                .get("claudeAiOauth")
                .ok_or("it has no claudeAiOauth login")?;
            let token = oauth
                .get("accessToken")
                .and_then(|t| t.as_str())
                .filter(|t| !t.is_empty())
                .ok_or("its claudeAiOauth login has no accessToken")?;
            if let Some(exp) = oauth.get("expiresAt").and_then(|e| e.as_i64())
                && exp <= now_ms
            {
                return Err(format!(
                    "its token expired {} ago; run `claude` on this machine once to refresh it, or `claude setup-token` and `claude-vm agents login claude --with-oauth-token`",
                    crate::lifecycle::idle_duration(std::time::Duration::from_millis(
                        (now_ms - exp) as u64
                    ))
                ));
            }
            Ok(LocalLogin::Env(BTreeMap::from([(
                "CLAUDE_CODE_OAUTH_TOKEN".to_owned(),
                token.to_owned(),
            )])))
        }
        // {"OPENAI_API_KEY": "sk-..." | null, "tokens": {...}, "last_refresh": ...}
        "codex" => {
            if let Some(key) = v
                .get("OPENAI_API_KEY")
                .and_then(|k| k.as_str())
                .filter(|k| !k.is_empty())
            {
                return Ok(LocalLogin::Env(BTreeMap::from([(
                    "OPENAI_API_KEY".to_owned(),
                    key.to_owned(),
                )])));
            }
            let tokens = v
                .get("tokens")
                .filter(|t| t.is_object())
                .ok_or("it holds neither an OPENAI_API_KEY nor a ChatGPT login (tokens)")?;
            for field in ["access_token", "refresh_token"] {
                if tokens.get(field).and_then(|t| t.as_str()).is_none() {
                    return Err(format!("its ChatGPT login has no {field}"));
                }
            }
            Ok(LocalLogin::File(
                ".codex/auth.json",
                text.as_bytes().to_vec(),
            ))
        }
        other => Err(format!("{other} has no local login claude-vm can reuse")),
    }
}

/// Whether an agent's error text says its account was refused (a revoked or expired key
/// or token), so the user can be told to log in again.
pub fn is_auth_failure(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "invalid api key",
        "invalid x-api-key",
        "authentication_error",
        "oauth token has expired",
        "incorrect api key",
        "invalid_api_key",
        "401 unauthorized",
        "api error: 401",
        "status 401",
        "please run /login",
    ]
    .iter()
    .any(|p| t.contains(p))
}

/// What to tell a user whose agent's account was refused.
pub fn login_again(kind: &str) -> String {
    format!("log in again: `claude-vm agents login {kind}`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_told_apart_by_their_first_bytes() {
        let mut elf = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0];
        elf.resize(18, 0);
        let x86 = [elf.clone(), vec![62, 0]].concat();
        let arm = [elf.clone(), vec![183, 0]].concat();
        let riscv = [elf, vec![243, 0]].concat();
        assert_eq!(binary_kind(&x86), BinaryKind::Elf("x86_64"));
        assert_eq!(binary_kind(&arm), BinaryKind::Elf("aarch64"));
        assert_eq!(binary_kind(&riscv), BinaryKind::ElfOther(243));
        assert_eq!(
            binary_kind(&[0xcf, 0xfa, 0xed, 0xfe, 7, 0, 0, 1]),
            BinaryKind::MachO
        );
        assert_eq!(
            binary_kind(&[0xca, 0xfe, 0xba, 0xbe, 0, 0]),
            BinaryKind::MachO
        );
        assert_eq!(binary_kind(b"#!/usr/bin/env node\n"), BinaryKind::Script);
        assert_eq!(binary_kind(b"\x7fEL"), BinaryKind::Unknown);
        assert_eq!(binary_kind(b""), BinaryKind::Unknown);
    }

    #[test]
    fn every_installable_kind_has_a_default_install_and_a_mirror_replaces_the_url() {
        for kind in ["claude", "codex", "gemini", "qwen", "goose"] {
            let i = default_install(kind, None).unwrap();
            assert!(i.program.starts_with(".local/bin/"), "{kind}");
        }
        assert!(default_install("acp", None).is_none());
        let c = default_install("claude", None).unwrap();
        assert!(c.script.contains("'https://claude.ai/install.sh'"));
        let m = default_install("claude", Some("http://10.0.0.1/it's.sh")).unwrap();
        assert!(
            m.script.contains(r"'http://10.0.0.1/it'\''s.sh'"),
            "{}",
            m.script
        );
        let gemini = default_install("gemini", None).unwrap().script;
        assert!(
            gemini.ends_with("npm_install @google/gemini-cli\n"),
            "{gemini}"
        );
        // For an npm package, the mirror is a registry.
        let mirrored = default_install("qwen", Some("http://10.0.0.1:4873/")).unwrap();
        assert!(
            mirrored
                .script
                .ends_with("npm_install @qwen-code/qwen-code 'http://10.0.0.1:4873/'\n"),
            "{}",
            mirrored.script
        );
    }

    #[test]
    fn local_logins_are_read_and_bad_ones_refused_with_the_reason() {
        let now = 1_800_000_000_000;
        let ok = r#"{"claudeAiOauth":{"accessToken":"sk-ant-oat01-x","refreshToken":"r","expiresAt":1800000600000}}"#;
        assert_eq!(
            read_local_login("claude", ok, now).unwrap(),
            LocalLogin::Env(BTreeMap::from([(
                "CLAUDE_CODE_OAUTH_TOKEN".to_owned(),
                "sk-ant-oat01-x".to_owned()
            )]))
        );
        let expired = ok.replace("1800000600000", "1799996400000");
        let e = read_local_login("claude", &expired, now).unwrap_err();
        assert!(e.contains("expired 1h ago"), "{e}");
        assert!(
            read_local_login("claude", "{not json", now)
                .unwrap_err()
                .contains("not valid JSON")
        );
        assert!(
            read_local_login("claude", "{}", now)
                .unwrap_err()
                .contains("claudeAiOauth")
        );
        let key = r#"{"OPENAI_API_KEY":"sk-codex","tokens":null}"#;
        assert!(
            matches!(read_local_login("codex", key, now), Ok(LocalLogin::Env(e)) if e["OPENAI_API_KEY"] == "sk-codex")
        );
        let chatgpt = r#"{"OPENAI_API_KEY":null,"tokens":{"id_token":"i","access_token":"a","refresh_token":"r","account_id":"x"}}"#;
        assert!(matches!(
            read_local_login("codex", chatgpt, now),
            Ok(LocalLogin::File(".codex/auth.json", _))
        ));
        assert!(
            read_local_login("codex", r#"{"tokens":{"access_token":"a"}}"#, now)
                .unwrap_err()
                .contains("refresh_token")
        );
    }

    #[test]
    fn refused_accounts_are_recognised() {
        assert!(is_auth_failure("Invalid API key · Please run /login"));
        assert!(is_auth_failure(
            r#"API Error: 401 {"type":"error","error":{"type":"authentication_error"}}"#
        ));
        assert!(is_auth_failure(
            "OAuth token has expired. Please obtain a new token"
        ));
        assert!(!is_auth_failure("the agent exited with status 1"));
    }
}
