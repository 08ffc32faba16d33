//! The command-line interface: every command, flag and help text, and nothing else.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "claude-vm",
    version,
    about = "Run coding agents in isolated workspaces that keep working while your laptop sleeps",
    long_about = None,
    after_help = "Examples:\n  claude-vm workspace up .                 # copy this folder into a new workspace\n  claude-vm workspace up https://github.com/org/repo.git --branch fix\n  claude-vm workspace list --long\n  claude-vm workspace down bold-fire-1234\n  claude-vm workspace up bold-fire-1234     # resume it, files intact\n\nState lives in $CLAUDE_VM_HOME (default ~/.claude-vm). Set CLAUDE_VM_LOG=debug for logs."
)]
pub struct Cli {
    /// Config file to use instead of $CLAUDE_VM_HOME/config.yaml
    #[arg(long, global = true, value_name = "FILE", env = "CLAUDE_VM_CONFIG")]
    pub config: Option<PathBuf>,

    /// Print only data and errors (no progress)
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Refuse to work on a stopped workspace instead of starting it first
    #[arg(long, global = true)]
    pub no_start: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage providers: where workspaces run
    #[command(subcommand)]
    Provider(ProviderCommand),

    /// Create, list, stop, resume and delete workspaces
    #[command(subcommand, visible_alias = "ws")]
    Workspace(WorkspaceCommand),

    /// Run a command in a workspace
    #[command(
        after_help = "Examples:\n  claude-vm exec bold-fire-1234 -- git status\n  claude-vm exec -t bold-fire-1234 -- bash\n  echo data | claude-vm exec bold-fire-1234 -- sh -c 'cat > in.txt'\n  claude-vm exec -d bold-fire-1234 -- ./long-job.sh\n\nThe command runs in the project folder as the agent user unless -w/-u say otherwise; its exit code becomes claude-vm's."
    )]
    Exec(ExecArgs),

    /// Copy files between a workspace and this machine (WORKSPACE:PATH on one side)
    #[command(
        after_help = "Examples:\n  claude-vm cp bold-fire-1234:src/main.rs .\n  claude-vm cp ./data bold-fire-1234:data\n  claude-vm cp bold-fire-1234:/workspace/shop/out ./out\n\nRelative workspace paths start at the project folder; absolute ones must be under /workspace. Directories are copied whole; modes are kept."
    )]
    Cp {
        /// Source: a local path or WORKSPACE:PATH
        src: String,
        /// Destination: a local path or WORKSPACE:PATH
        dest: String,
    },

    /// Show what changed in a workspace's project (untracked files included)
    Diff {
        /// Workspace id, name or unique id prefix
        workspace: String,
        /// Only list changed files with added/removed line counts
        #[arg(long)]
        stat: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
        /// When to color the output
        #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
        color: ColorChoice,
    },

    /// Talk to coding agents: interactive without a subcommand
    #[command(
        args_conflicts_with_subcommands = true,
        after_help = "Examples:\n  claude-vm chat                          # pick a workspace, then a conversation\n  claude-vm chat -w bold-fire-1234        # pick a conversation in a workspace\n  claude-vm chat -c 4f2a                  # straight into a conversation\n  claude-vm chat send -c 4f2a 'also add tests' --wait\n  claude-vm chat log -c 4f2a --follow\n\nIn the interactive chat, type a message and Enter at any time (it is queued while the agent works); /interrupt stops the current turn, /status shows where things are, /allow ID and /deny ID answer approvals, /quit leaves (the agent keeps working)."
    )]
    Chat(ChatArgs),

    /// Start a conversation with a coding agent in a workspace; prints its id
    NewChat {
        /// Workspace id, name or unique id prefix
        workspace: String,
        /// Agent to run [default: agents.defaults.agent in config.yaml]
        #[arg(long, value_parser = ["claude", "codex", "gemini", "goose", "qwen", "acp"])]
        agent: Option<String>,
        /// First message
        #[arg(short, long, value_name = "TEXT")]
        message: Option<String>,
        /// Ask before every tool use instead of letting the agent act (the workspace is its sandbox)
        #[arg(long)]
        ask: bool,
        /// Wait for the first turn to end and print the agent's answer (the id goes to stderr)
        #[arg(long, requires = "message", conflicts_with = "json")]
        wait: bool,
        /// Print the conversation as JSON
        #[arg(long)]
        json: bool,
    },

    /// Run the control plane: the web UI and the API for phones, browsers and remote CLIs
    #[command(
        after_help = "Agents keep running in their workspaces whether or not the server runs.\n\nExamples:\n  claude-vm server                          # http://127.0.0.1:7878, this machine only\n  claude-vm server --listen 0.0.0.0:7878    # put HTTPS in front (e.g. Caddy, tailscale serve)\n  claude-vm server --public-url https://cvm.example.com   # the name a reverse proxy serves it under"
    )]
    #[command(args_conflicts_with_subcommands = true)]
    Server {
        #[command(subcommand)]
        action: Option<ServerCommand>,
        /// Address to listen on
        #[arg(long, default_value = "127.0.0.1:7878", value_name = "ADDR")]
        listen: String,
        /// URL browsers and CLIs use to reach this server through a reverse proxy or under
        /// another name (e.g. https://cvm.example.com); repeatable. Requests naming any
        /// other host are refused
        #[arg(
            long = "public-url",
            value_name = "URL",
            env = "CLAUDE_VM_PUBLIC_URL",
            value_delimiter = ','
        )]
        public_url: Vec<String>,
    },

    /// Open the web UI: starts a local server if none runs, prints a one-time login link and a QR code
    Web {
        /// Address for the server, when one has to be started
        #[arg(long, default_value = "127.0.0.1:7878", value_name = "ADDR")]
        listen: String,
        /// Do not open a browser
        #[arg(long)]
        no_open: bool,
        /// Print the URLs as JSON
        #[arg(long)]
        json: bool,
    },

    /// Manage API tokens for scripts and remote CLIs (`claude-vm login`)
    #[command(subcommand)]
    Token(TokenCommand),

    /// List and prune the backups of workspaces (restic-format snapshots)
    #[command(subcommand)]
    Backup(BackupCommand),

    /// Notifications `claude-vm server` sends (config.yaml `notify:`): ntfy, webhooks,
    /// Slack, Discord, mail
    #[command(subcommand)]
    Notify(NotifyCommand),

    /// Work against a claude-vm server: workspace and chat commands then run there
    #[command(
        after_help = "The token comes from --token, else $CLAUDE_VM_TOKEN, else it is asked for (or read from stdin). It is checked against the server and kept in $CLAUDE_VM_HOME/remote.json (owner-only).\n\nExamples:\n  claude-vm login http://127.0.0.1:7878     # a server here, or through `ssh -L 7878:127.0.0.1:7878 host`\n  claude-vm login --status"
    )]
    Login {
        /// Server URL, as `claude-vm server` prints it
        #[arg(required_unless_present = "status")]
        url: Option<String>,
        /// API token from `claude-vm token create` on the server
        #[arg(long, value_name = "TOKEN")]
        token: Option<String>,
        /// Show which server this CLI works against, if any
        #[arg(long, conflicts_with_all = ["url", "token"])]
        status: bool,
    },

    /// Forget the server: commands work on this machine again
    Logout,

    /// Open a shell or run a command in a workspace over SSH (no OpenSSH needed)
    #[command(
        after_help = "Examples:\n  claude-vm ssh bold-fire-1234                 # login shell with a terminal\n  claude-vm ssh bold-fire-1234 -- make test    # run a command; its exit code becomes claude-vm's\n  claude-vm ssh bold-fire-1234 --user root\n  ssh -o ProxyCommand='claude-vm ssh --stdio %h' bold-fire-1234.claude-vm\n\nThe connection goes through the link to the workspace's own SSH server; nothing listens on a port. The workspace's host key is pinned in $CLAUDE_VM_HOME/known_hosts on first use and a different one is refused. See `claude-vm ssh-config` for OpenSSH, scp, rsync, git and editors."
    )]
    Ssh(SshArgs),

    /// Write an OpenSSH config so `ssh <workspace>.claude-vm` (scp, rsync, git, VS Code) works
    #[command(
        after_help = "Writes $CLAUDE_VM_HOME/ssh_config: one `Host *.claude-vm` block whose ProxyCommand is this claude-vm (`ssh --stdio %h`), with the managed known_hosts, StrictHostKeyChecking yes, the default user (ssh.user in config.yaml) and claude-vm's key plus your usual keys. It also pins the host keys of running workspaces.\n\nWith --install, adds one `Include` line for it at the top of ~/.ssh/config (created 0600 if missing; never added twice). Nothing outside $CLAUDE_VM_HOME is touched without --install.\n\nOnce you have run this command, `claude-vm workspace up` keeps the file current and pins each new workspace's host key. Accepted keys: claude-vm's own, ~/.ssh/*.pub, and ssh.authorized_keys in config.yaml (set ssh.user_keys: false to leave out ~/.ssh/*.pub)."
    )]
    SshConfig {
        /// Also add `Include <that file>` to ~/.ssh/config
        #[arg(long)]
        install: bool,
        /// Print the config block on stdout
        #[arg(long)]
        print: bool,
        /// Print what was done as JSON
        #[arg(long, conflicts_with = "print")]
        json: bool,
    },

    /// Agent kinds: which are ready to use, and the accounts they use
    #[command(subcommand)]
    Agents(AgentsCommand),

    /// A project's devcontainer.json: the environment `workspace up` builds for it
    #[command(subcommand)]
    Devcontainer(DevcontainerCommand),

    /// Check that everything `workspace up` and `new-chat` need is ready
    #[command(
        after_help = "Checks the providers (Docker reachable, its version), the default image, each enabled agent (can it be installed, has it an account), the server, the SSH config, the backup repository and free disk. Each check prints one verdict and, when it is not ok, what to do.\n\nExit code 0 only when everything `workspace up` and `new-chat` need is ready (warnings do not count)."
    )]
    Doctor {
        /// Print the checks as JSON
        #[arg(long)]
        json: bool,
    },

    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },

    /// The in-workspace side of claude-vm (run inside workspaces, not by hand)
    #[command(subcommand, hide = true)]
    Agent(AgentCommand),
}

#[derive(Debug, Subcommand)]
pub enum DevcontainerCommand {
    /// Write a starter .devcontainer/devcontainer.json for a project that has none, chosen
    /// by what the project holds (Cargo.toml, package.json, pyproject.toml, go.mod, ...)
    #[command(
        after_help = "The file names the matching language image and a postCreateCommand for the project's lockfile; edit it to taste. `claude-vm workspace up` then builds the workspace from it.\n\nExamples:\n  claude-vm devcontainer init\n  claude-vm devcontainer init ~/src/shop --force"
    )]
    Init {
        /// The project folder [default: .]
        path: Option<std::path::PathBuf>,
        /// Replace an existing .devcontainer/devcontainer.json
        #[arg(long)]
        force: bool,
        /// Print what was written as JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// Which agent kinds are ready, how they reach workspaces and where their accounts
    /// come from (secrets masked)
    #[command(visible_alias = "ls")]
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Connect an agent kind to an account, once, on this machine
    #[command(
        after_help = "Without a flag: your own login of that agent on this machine is used when there is one (~/.claude/.credentials.json, ~/.codex/auth.json), else a key or token is asked for (or read from stdin). Claude OAuth tokens (sk-ant-oat…, from `claude setup-token`) are told from API keys by their prefix.\n\nThe account is kept in $CLAUDE_VM_HOME/accounts/<kind>.json (owner-only) and given to the agent's conversations; a local login is read again each time, so a refreshed login keeps working.\n\nWithout `agents login`, claude-vm also finds ANTHROPIC_API_KEY, CLAUDE_CODE_OAUTH_TOKEN, OPENAI_API_KEY, GEMINI_API_KEY in its environment and the login files above.\n\nExamples:\n  claude-vm agents login claude                           # reuse this machine's Claude Code login, or paste a key\n  claude setup-token | claude-vm agents login claude --with-oauth-token\n  printenv OPENAI_API_KEY | claude-vm agents login codex --with-api-key\n  claude-vm agents login codex --from-local ~/.codex/auth.json"
    )]
    Login {
        /// claude, codex, gemini, goose or qwen
        kind: String,
        /// Read an API key from stdin (or ask for it)
        #[arg(long, group = "how")]
        with_api_key: bool,
        /// Read an OAuth token from stdin (Claude: `claude setup-token`)
        #[arg(long, group = "how")]
        with_oauth_token: bool,
        /// Reuse the agent's own login on this machine [default file: the agent's usual one]
        #[arg(long, group = "how", value_name = "FILE", num_args = 0..=1)]
        from_local: Option<Option<std::path::PathBuf>>,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Forget the account `agents login` saved for an agent kind
    Logout { kind: String },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; it is printed once and only its hash is kept
    Create {
        /// A name to recognise it by [default: token-<date>]
        name: Option<String>,
        /// Print the token and its record as JSON
        #[arg(long)]
        json: bool,
    },
    /// List tokens (never their secret)
    #[command(visible_alias = "ls")]
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: requests with it fail from now on
    #[command(visible_alias = "rm")]
    Revoke {
        /// Token id or name
        token: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProviderCommand {
    /// Add a provider
    #[command(
        after_help = "Examples:\n  claude-vm provider add gpu-box --type docker --option host=tcp://10.0.0.5:2375 --option cpus=8\n  claude-vm provider add small --type docker --option memory=2g\n  claude-vm provider add box --type ssh --option host=build.example.com --option user=dev\n  claude-vm provider add lab --type ssh --option host=10.0.0.7 --option port=2222 --option identity=~/.ssh/id_ed25519\n\nDocker options: host, network, cpus, memory, image, registry_user, registry_password.\nSSH options: host (required), user, port, identity, known_hosts, ssh_config, docker_socket, and the Docker ones but host.\n\nAn ssh provider runs workspaces as Docker containers on a remote Linux host, all traffic over your SSH connection (your ssh config, agent, keys and known_hosts apply; claude-vm never prompts and never accepts an unknown host key). Adding it logs in, checks the host and installs claude-vm there.\n\nA devpod provider uses a DevPod provider.yaml: workspaces run on machines (cloud VMs) it creates, stops with the last workspace on them, starts again and deletes with the last workspace:\n  claude-vm provider add digitalocean            # the published provider; asks for its required options\n  claude-vm provider add aws --option AWS_REGION=eu-west-1\n  claude-vm provider add mine --type devpod --option source=./provider.yaml\n  claude-vm provider add hz --type devpod --option source=mrsimonemms/devpod-provider-hetzner@v0.2.0\nShortcuts: digitalocean, aws, gcloud, azure, hetzner (their published provider.yaml). The provider.yaml's options are UPPER_CASE; claude-vm's own: source, machine_reuse, machine_idle_stop, machine_timeout, docker_socket and the Docker ones but host."
    )]
    Add {
        /// Name to refer to it by
        name: String,
        /// Provider type [default: the name, when it is a type]
        #[arg(long = "type", short = 't', value_name = "TYPE")]
        kind: Option<String>,
        /// Set an option (repeatable)
        #[arg(long = "option", short = 'o', value_name = "KEY=VALUE")]
        options: Vec<String>,
        /// Add it without connecting first (an ssh provider is otherwise checked; a devpod
        /// provider's init command is otherwise run)
        #[arg(long)]
        no_check: bool,
        /// Never ask for options: fail naming the required ones that are missing
        #[arg(long)]
        no_input: bool,
        /// Print the provider as JSON
        #[arg(long)]
        json: bool,
    },
    /// List the machines a devpod provider made, with their state; flags the unused ones
    Machines {
        name: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// List providers
    #[command(visible_alias = "ls")]
    List {
        /// Show options (secrets are masked)
        #[arg(short, long)]
        verbose: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Set or change options of a provider (an empty value removes the option)
    SetOptions {
        name: String,
        /// Set an option (repeatable)
        #[arg(
            long = "option",
            short = 'o',
            value_name = "KEY=VALUE",
            required = true
        )]
        options: Vec<String>,
        /// Print the provider as JSON
        #[arg(long)]
        json: bool,
    },
    /// Delete a provider that has no workspaces
    #[command(visible_alias = "rm")]
    Delete {
        name: String,
        /// Do not ask for confirmation
        #[arg(short, long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Create a workspace from a folder or git URL, or resume an existing one
    #[command(
        after_help = "TARGET is, in this order: a workspace id or name (resume it), a git URL (clone it inside the workspace), a folder (copy it: tracked and untracked files and .git, not ignored files), or a unique prefix of a workspace id. Without TARGET, the current folder."
    )]
    Up(UpArgs),
    /// List workspaces with their live status
    #[command(visible_alias = "ls")]
    List {
        /// Show more columns (image, branch, source, reason)
        #[arg(short, long)]
        long: bool,
        /// Only workspaces with this status
        #[arg(long, value_enum)]
        status: Option<StatusFilter>,
        /// Print JSON (an array of workspace objects)
        #[arg(long)]
        json: bool,
    },
    /// Print the output of a workspace's devcontainer.json lifecycle commands
    Logs {
        /// Workspace id, name or unique id prefix
        workspace: String,
    },
    /// Change a workspace's settings
    #[command(
        after_help = "Examples:\n  claude-vm workspace set bold-fire-1234 --idle-stop 10m\n  claude-vm workspace set bold-fire-1234 --idle-stop off\n  claude-vm workspace set bold-fire-1234 --idle-stop default\n\nA workspace is idle when no conversation is starting or in a turn, no message waits to be delivered, no approval younger than lifecycle.approval_wait is pending, and no exec, SSH session, file transfer, followed event stream or `exec -d` process is open. A running workspace gets the new setting at once."
    )]
    Set {
        /// Workspace id, name or unique id prefix
        workspace: String,
        /// Stop it after this long idle (30m, 2h), never (off), or as config.yaml says (default)
        #[arg(long, value_name = "DURATION|off|default", value_parser = parse_idle_stop_setting, required = true)]
        idle_stop: Option<IdleStopSetting>,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Stop a workspace; `up` resumes it with its files intact
    #[command(visible_alias = "stop")]
    Down {
        /// Workspace id, name or unique id prefix
        workspace: String,
        /// Kill it at once instead of stopping gracefully
        #[arg(short, long)]
        force: bool,
        /// Seconds to wait for a graceful stop before killing
        #[arg(long, default_value_t = 10, value_name = "SECONDS")]
        timeout: u64,
        /// Do not take the final backup first
        #[arg(long)]
        no_backup: bool,
        /// Print the workspace as JSON
        #[arg(long)]
        json: bool,
    },
    /// Delete a workspace's container and volume (its backups are kept, unless --purge)
    #[command(
        visible_alias = "rm",
        after_help = "A final backup is taken first (a stopped workspace is started for it, unless it was backed up as it stopped); if it fails, nothing is deleted unless --force. The backups stay in the repository: `claude-vm workspace restore NAME` brings the workspace back."
    )]
    Delete {
        /// Workspace id, name or unique id prefix
        workspace: String,
        /// Also remove every backup of the workspace, and the data only they use
        #[arg(long)]
        purge: bool,
        /// Delete even if the final backup fails
        #[arg(long)]
        force: bool,
        /// Do not ask for confirmation
        #[arg(short, long)]
        yes: bool,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Back up a running workspace now; prints the snapshot id
    Backup {
        /// Workspace id, name or unique id prefix
        workspace: String,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Create a workspace from a backup (of an existing or a deleted workspace)
    #[command(
        after_help = "WORKSPACE may name a deleted workspace by its old name or id. The new workspace gets the original's name when that is free, its files byte for byte (tracked, untracked, .git, modes, symlinks) and its conversations, which resume with their context. With --provider it moves to another machine."
    )]
    Restore {
        /// Workspace (existing or deleted) whose backup to restore
        workspace: String,
        /// Snapshot id or unique prefix [default: the workspace's newest]
        #[arg(long)]
        snapshot: Option<String>,
        /// Name of the new workspace [default: the original's]
        #[arg(long)]
        name: Option<String>,
        /// Provider to create it on [default: the original's]
        #[arg(long)]
        provider: Option<String>,
        /// Container image [default: the original's]
        #[arg(long)]
        image: Option<String>,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Write a backup of a workspace to one portable archive
    Export {
        /// Workspace (existing or deleted)
        workspace: String,
        /// The archive to write
        #[arg(short, long, value_name = "FILE")]
        output: std::path::PathBuf,
        /// Snapshot id or unique prefix [default: the workspace's newest]
        #[arg(long)]
        snapshot: Option<String>,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Create a workspace from an archive `workspace export` wrote
    Import {
        /// The archive
        file: std::path::PathBuf,
        /// Name of the new workspace [default: the original's]
        #[arg(long)]
        name: Option<String>,
        /// Provider to create it on [default: the original's]
        #[arg(long)]
        provider: Option<String>,
        /// Container image [default: the original's]
        #[arg(long)]
        image: Option<String>,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Keep the server running on this machine (a systemd unit, started now and at boot);
    /// where there is no systemd, prints the unit and what to do with it
    #[command(
        after_help = "Examples:\n  claude-vm server install --user --listen 0.0.0.0:7878 --public-url https://cvm.example.com\n  claude-vm server install --print > claude-vm-server.service"
    )]
    Install {
        /// A unit of your user's systemd (~/.config/systemd/user), not the system's
        #[arg(long)]
        user: bool,
        /// Only print the unit
        #[arg(long)]
        print: bool,
        /// Address the server listens on
        #[arg(long, default_value = "127.0.0.1:7878", value_name = "ADDR")]
        listen: String,
        /// The server's public URL(s), as for `claude-vm server`
        #[arg(long = "public-url", value_name = "URL", value_delimiter = ',')]
        public_url: Vec<String>,
    },
    /// Whether a server runs for this claude-vm home, and where
    Status {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// How each channel fares: delivered, waiting, given up, the last error
    Status {
        /// Print JSON (an array of channel objects)
        #[arg(long)]
        json: bool,
    },
    /// Send a test message to every channel now
    Test {
        /// Print JSON (an array of results)
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// List snapshots, of every workspace or of one (existing or deleted)
    #[command(visible_alias = "ls")]
    List {
        workspace: Option<String>,
        /// Print JSON (an array of snapshot objects)
        #[arg(long)]
        json: bool,
    },
    /// Remove old snapshots of a workspace (and the data only they use)
    #[command(
        after_help = "Without --keep-*, keeps what config.yaml's backup.keep_last and backup.keep_daily say."
    )]
    Forget {
        /// Workspace (existing or deleted)
        workspace: String,
        /// Keep the newest N snapshots
        #[arg(long, value_name = "N")]
        keep_last: Option<u32>,
        /// Keep the newest snapshot of each of the last N days that have one
        #[arg(long, value_name = "N")]
        keep_daily: Option<u32>,
        /// Print the removed snapshot ids as JSON
        #[arg(long)]
        json: bool,
    },
    /// Print the environment for the restic CLI to use the repository
    #[command(
        after_help = "eval \"$(claude-vm backup env)\" && restic snapshots    # then restic ls, restic restore, ..."
    )]
    Env,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Workspace id/name, git URL, or folder [default: .]
    pub target: Option<String>,
    /// Provider to create the workspace on [default: default_provider in config.yaml]
    #[arg(long)]
    pub provider: Option<String>,
    /// Container image [default: the provider's `image` option, then default_image]
    #[arg(long)]
    pub image: Option<String>,
    /// Check out this branch, creating it if it does not exist
    #[arg(long, short = 'b')]
    pub branch: Option<String>,
    /// Name of the new workspace [default: a generated one like bold-fire-1234]
    #[arg(long)]
    pub name: Option<String>,
    /// Stop the workspace after this long with nothing going on in it (30m, 2h, off)
    /// [default: lifecycle.idle_stop in config.yaml]; kept for later starts
    #[arg(long, value_name = "DURATION|off", value_parser = parse_idle_stop)]
    pub idle_stop: Option<claude_vm_core::lifecycle::IdleStop>,
    /// Use .devcontainer/NAME/devcontainer.json (when the project has several)
    #[arg(long, value_name = "NAME", conflicts_with = "no_devcontainer")]
    pub devcontainer: Option<String>,
    /// Ignore the project's devcontainer.json
    #[arg(long)]
    pub no_devcontainer: bool,
    /// Build the devcontainer's image again, even if it was built before
    #[arg(long, conflicts_with = "no_devcontainer")]
    pub rebuild: bool,
    /// Let the devcontainer.json mount folders of the Docker host (the agent can read and
    /// change them)
    #[arg(long, conflicts_with = "no_devcontainer")]
    pub allow_host_mounts: bool,
    /// Let the devcontainer.json's initializeCommand run on this machine (remembered for
    /// that file and command; without it you are asked on a terminal)
    #[arg(long, conflicts_with = "no_devcontainer")]
    pub trust: bool,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

fn parse_idle_stop(s: &str) -> Result<claude_vm_core::lifecycle::IdleStop, String> {
    claude_vm_core::lifecycle::IdleStop::parse(s)
}

/// `--idle-stop` of `workspace set`: also `default` (back to config.yaml's).
fn parse_idle_stop_setting(s: &str) -> Result<IdleStopSetting, String> {
    match s.trim() {
        "default" => Ok(IdleStopSetting::Default),
        other => parse_idle_stop(other).map(IdleStopSetting::Own),
    }
}

#[derive(Debug, Clone, Copy)]
pub enum IdleStopSetting {
    Default,
    Own(claude_vm_core::lifecycle::IdleStop),
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Workspace id, name or unique id prefix
    pub workspace: String,
    /// Allocate a terminal (for interactive programs)
    #[arg(short, long)]
    pub tty: bool,
    /// Keep stdin open even when it is a terminal
    #[arg(short, long)]
    pub interactive: bool,
    /// Set an environment variable (repeatable)
    #[arg(short, long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Working directory inside the workspace [default: the project folder]
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// User to run as (name, uid or uid:gid) [default: the agent user]
    #[arg(short, long)]
    pub user: Option<String>,
    /// Start the command and return; it keeps running in the workspace
    #[arg(short, long)]
    pub detach: bool,
    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SshArgs {
    /// Workspace: name, id, unique id prefix, or any of them followed by .claude-vm
    pub workspace: String,
    /// Log in as this user: agent (the agent user, also by its own name) or root [default: ssh.user in config.yaml]
    #[arg(short, long)]
    pub user: Option<String>,
    /// Allocate a terminal even for a command
    #[arg(short, long)]
    pub tty: bool,
    /// Join stdin/stdout to the workspace's SSH server (for OpenSSH's ProxyCommand)
    #[arg(long, conflicts_with_all = ["user", "tty", "command"])]
    pub stdio: bool,
    /// Command to run instead of a login shell (joined with spaces, as ssh does)
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ChatArgs {
    #[command(subcommand)]
    pub command: Option<ChatCommand>,
    /// Workspace whose conversations to pick from
    #[arg(short, long)]
    pub workspace: Option<String>,
    /// Conversation id (or unique prefix) to join
    #[arg(short, long)]
    pub conversation: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ChatCommand {
    /// Send a message (queued if the agent is busy)
    Send {
        #[arg(short, long = "conversation", value_name = "CONV")]
        conversation: String,
        /// The message
        text: String,
        /// Wait for the turn to finish and print the agent's answer
        #[arg(long)]
        wait: bool,
    },
    /// Print a conversation's transcript
    Log {
        #[arg(short, long = "conversation", value_name = "CONV")]
        conversation: String,
        /// Keep printing new events as they happen
        #[arg(short, long)]
        follow: bool,
        /// Print events as JSON lines
        #[arg(long)]
        json: bool,
    },
    /// List conversations
    #[command(visible_alias = "ls")]
    List {
        /// Only this workspace's
        #[arg(short, long)]
        workspace: Option<String>,
        /// Also show each agent's version and queued messages
        #[arg(short, long)]
        long: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Stop a conversation's agent (a new message starts it again)
    Stop {
        #[arg(short, long = "conversation", value_name = "CONV")]
        conversation: String,
    },
    /// Interrupt the running turn
    Interrupt {
        #[arg(short, long = "conversation", value_name = "CONV")]
        conversation: String,
    },
    /// Allow a pending tool use
    Allow {
        #[arg(short, long = "conversation", value_name = "CONV")]
        conversation: String,
        approval: String,
    },
    /// Deny a pending tool use
    Deny {
        #[arg(short, long = "conversation", value_name = "CONV")]
        conversation: String,
        approval: String,
        /// Tell the agent why
        #[arg(short, long)]
        message: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StatusFilter {
    Running,
    Stopped,
    Error,
    Creating,
    Unknown,
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// PID 1 of a workspace: reap children, run and restart the daemon
    Init {
        /// Ignored (an image's CMD may be appended)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        rest: Vec<String>,
    },
    /// The workspace daemon
    Serve,
    /// Join stdin/stdout to the daemon's socket (the link's transport)
    Connect,
    /// Join stdin/stdout to a Docker socket (the ssh provider's transport, run on the host)
    DialDocker {
        /// The Docker socket
        #[arg(long, default_value = "/var/run/docker.sock")]
        socket: std::path::PathBuf,
    },
    /// Stop a devpod provider's machine when no workspace has run on it for a while (run
    /// on the machine, detached)
    MachineWatch {
        /// The machine's id (its workspaces' containers carry it as a label)
        #[arg(long)]
        machine: String,
        /// Seconds without a running workspace before the shutdown script runs
        #[arg(long)]
        idle: u64,
        /// Seconds between checks
        #[arg(long, default_value_t = 60)]
        every: u64,
        /// The Docker socket
        #[arg(long, default_value = "/var/run/docker.sock")]
        socket: std::path::PathBuf,
        /// The shutdown script (owner-only)
        #[arg(long)]
        script: std::path::PathBuf,
    },
    /// SFTP server on stdin/stdout (the SSH server's sftp subsystem)
    SftpServer,
    /// List a folder for a backup, one JSON line per entry (run by the daemon as the agent)
    BackupScan {
        #[arg(long)]
        root: std::path::PathBuf,
        /// Leave out this path and everything below it (repeatable)
        #[arg(long)]
        exclude: Vec<std::path::PathBuf>,
        /// Honour .gitignore files
        #[arg(long)]
        git_ignore: bool,
    },
    /// Show a conversation live and send typed lines (runs in its tmux session)
    ChatTty { conversation: String },
    /// Ask the daemon for its version and health; prints JSON
    Health {
        /// Keep trying for this many seconds while the daemon starts
        #[arg(long, default_value_t = 0)]
        wait: u64,
    },
}
