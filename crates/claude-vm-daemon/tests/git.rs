//! `git::diff` against real git in temporary repositories: every case also checks that the
//! repository's `.git` (index included) is byte-identical afterwards, since agents run git in
//! the same repository while the diff is taken.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use claude_vm_daemon::git::{self, GitError, PATCH_LIMIT, TRUNCATED_NOTE};
use claude_vm_protocol::api::{ChangeKind, Diff};

/// What a case does to its repository after the first commit (or instead of it).
enum Op {
    Write(&'static str, &'static [u8]),
    Remove(&'static str),
    Rename(&'static str, &'static str),
    Symlink(&'static str, &'static str),
    /// Rewrite with content of the same size while the file and the index keep one past
    /// modification time: only git's racily-clean check (a content check) sees the change.
    Racy(&'static str, &'static [u8]),
    Git(&'static [&'static str]),
}

/// One expected entry of `Diff::files`.
struct Want {
    path: &'static str,
    old_path: Option<&'static str>,
    change: ChangeKind,
    additions: Option<u64>,
    deletions: Option<u64>,
    binary: bool,
}

const fn text(path: &'static str, change: ChangeKind, add: u64, del: u64) -> Want {
    Want {
        path,
        old_path: None,
        change,
        additions: Some(add),
        deletions: Some(del),
        binary: false,
    }
}

struct Case {
    name: &'static str,
    /// Files of the first commit; no commit at all when empty.
    committed: &'static [(&'static str, &'static [u8])],
    ops: &'static [Op],
    /// Exactly the files of the diff, in git's order.
    files: &'static [Want],
    /// Current branch (`None`: detached).
    branch: Option<&'static str>,
    patch_has: &'static [&'static str],
    patch_lacks: &'static [&'static str],
}

const BASE: &[(&str, &[u8])] = &[
    ("keep.txt", b"unchanged\n"),
    ("t.txt", b"a\nb\nc\n"),
    ("d.txt", b"x\ny\n"),
    ("r.txt", b"one\ntwo\nthree\nfour\nfive\n"),
    (".gitignore", b"*.log\nbuild/\n"),
];

const CASES: &[Case] = &[
    Case {
        name: "modified tracked file",
        committed: BASE,
        ops: &[Op::Write("t.txt", b"a\nB\nc\nd\n")],
        files: &[text("t.txt", ChangeKind::Modified, 2, 1)],
        branch: Some("main"),
        patch_has: &[
            "diff --git a/t.txt b/t.txt\n",
            "@@ -1,3 +1,4 @@\n a\n-b\n+B\n c\n+d\n",
        ],
        patch_lacks: &["keep.txt"],
    },
    Case {
        name: "deleted file",
        committed: BASE,
        ops: &[Op::Remove("d.txt")],
        files: &[text("d.txt", ChangeKind::Deleted, 0, 2)],
        branch: Some("main"),
        patch_has: &["deleted file mode 100644\n", "+++ /dev/null\n", "-x\n-y\n"],
        patch_lacks: &[],
    },
    Case {
        name: "renamed in the working tree only",
        committed: BASE,
        ops: &[Op::Rename("r.txt", "moved/s.txt")],
        files: &[Want {
            old_path: Some("r.txt"),
            ..text("moved/s.txt", ChangeKind::Renamed, 0, 0)
        }],
        branch: Some("main"),
        patch_has: &["rename from r.txt\nrename to moved/s.txt\n"],
        patch_lacks: &[],
    },
    Case {
        name: "renamed with git mv and edited",
        committed: BASE,
        ops: &[
            Op::Git(&["mv", "r.txt", "s.txt"]),
            Op::Write("s.txt", b"one\ntwo\nthree\nfour\nFIVE\n"),
        ],
        files: &[Want {
            old_path: Some("r.txt"),
            ..text("s.txt", ChangeKind::Renamed, 1, 1)
        }],
        branch: Some("main"),
        patch_has: &["rename from r.txt\n", "-five\n+FIVE\n"],
        patch_lacks: &[],
    },
    Case {
        name: "racily clean file",
        committed: BASE,
        ops: &[
            Op::Git(&["config", "core.checkStat", "minimal"]),
            Op::Git(&["config", "core.trustctime", "false"]),
            Op::Racy("t.txt", b"a\nX\nc\n"),
        ],
        files: &[text("t.txt", ChangeKind::Modified, 1, 1)],
        branch: Some("main"),
        patch_has: &["-b\n+X\n"],
        patch_lacks: &[],
    },
    Case {
        name: "racily clean file, untracked files too",
        committed: BASE,
        ops: &[
            Op::Git(&["config", "core.checkStat", "minimal"]),
            Op::Git(&["config", "core.trustctime", "false"]),
            Op::Write("u.txt", b"u\n"),
            Op::Racy("t.txt", b"a\nX\nc\n"),
        ],
        files: &[
            text("t.txt", ChangeKind::Modified, 1, 1),
            text("u.txt", ChangeKind::Untracked, 1, 0),
        ],
        branch: Some("main"),
        patch_has: &["-b\n+X\n"],
        patch_lacks: &[],
    },
    Case {
        name: "untracked text file",
        committed: BASE,
        ops: &[Op::Write("new dir/u.txt", b"hello\nworld\n")],
        files: &[text("new dir/u.txt", ChangeKind::Untracked, 2, 0)],
        branch: Some("main"),
        patch_has: &[
            "new file mode 100644\n",
            "--- /dev/null\n+++ b/new dir/u.txt",
            "+hello\n+world\n",
        ],
        patch_lacks: &[],
    },
    Case {
        name: "untracked binary file",
        committed: BASE,
        ops: &[Op::Write("b.bin", b"\0\x01\x02BINARYMARKER\xff\xfe\n")],
        files: &[Want {
            path: "b.bin",
            old_path: None,
            change: ChangeKind::Untracked,
            additions: None,
            deletions: None,
            binary: true,
        }],
        branch: Some("main"),
        patch_has: &["Binary files /dev/null and b/b.bin differ\n"],
        patch_lacks: &["BINARYMARKER", "GIT binary patch"],
    },
    Case {
        name: "staged new file is added, not untracked",
        committed: BASE,
        ops: &[
            Op::Write("staged.txt", b"s\n"),
            Op::Git(&["add", "staged.txt"]),
        ],
        files: &[text("staged.txt", ChangeKind::Added, 1, 0)],
        branch: Some("main"),
        patch_has: &["+s\n"],
        patch_lacks: &[],
    },
    Case {
        name: "ignored files are absent",
        committed: BASE,
        ops: &[
            Op::Write("x.log", b"log\n"),
            Op::Write("build/out.txt", b"built\n"),
            Op::Write("visible.txt", b"v\n"),
        ],
        files: &[text("visible.txt", ChangeKind::Untracked, 1, 0)],
        branch: Some("main"),
        patch_has: &["+v\n"],
        patch_lacks: &["x.log", "build/", "built"],
    },
    Case {
        name: "spaces, unicode, newlines and glob characters in names",
        committed: &[("spaced name.txt", b"1\n"), ("*.txt", b"star\n")],
        ops: &[
            Op::Write("spaced name.txt", b"2\n"),
            Op::Write("dir with space/naïve ☃.txt", b"snow\n"),
            Op::Write("new\nline.txt", b"nl\n"),
            Op::Write("tab\tname [x].txt", b"tab\n"),
        ],
        files: &[
            text("dir with space/naïve ☃.txt", ChangeKind::Untracked, 1, 0),
            text("new\nline.txt", ChangeKind::Untracked, 1, 0),
            text("spaced name.txt", ChangeKind::Modified, 1, 1),
            text("tab\tname [x].txt", ChangeKind::Untracked, 1, 0),
        ],
        branch: Some("main"),
        patch_has: &[
            "diff --git a/dir with space/naïve ☃.txt b/dir with space/naïve ☃.txt\n",
            "+snow\n",
            "-1\n+2\n",
        ],
        patch_lacks: &["\\303"],
    },
    Case {
        name: "empty repository before the first commit",
        committed: &[],
        ops: &[
            Op::Write("a.txt", b"a\n"),
            Op::Write("sub/b.txt", b"b\nb\n"),
            Op::Write("staged.txt", b"s\n"),
            Op::Git(&["add", "staged.txt"]),
            Op::Write("x.log", b"ignored by info/exclude\n"),
            Op::Write(".git/info/exclude", b"*.log\n"),
        ],
        files: &[
            text("a.txt", ChangeKind::Untracked, 1, 0),
            text("staged.txt", ChangeKind::Added, 1, 0),
            text("sub/b.txt", ChangeKind::Untracked, 2, 0),
        ],
        branch: Some("main"),
        patch_has: &["+++ b/a.txt\n", "+b\n+b\n"],
        patch_lacks: &["x.log"],
    },
    Case {
        name: "detached head, type change and no changes elsewhere",
        committed: BASE,
        ops: &[
            Op::Git(&["checkout", "-q", "--detach"]),
            Op::Remove("keep.txt"),
            Op::Symlink("t.txt", "keep.txt"),
        ],
        files: &[Want {
            path: "keep.txt",
            old_path: None,
            change: ChangeKind::TypeChanged,
            additions: Some(1),
            deletions: Some(1),
            binary: false,
        }],
        branch: None,
        patch_has: &["new file mode 120000\n"],
        patch_lacks: &[],
    },
    Case {
        name: "clean repository",
        committed: BASE,
        ops: &[Op::Write("x.log", b"ignored\n")],
        files: &[],
        branch: Some("main"),
        patch_has: &[],
        patch_lacks: &["diff"],
    },
];

/// Run git for the test itself, with no user or system configuration.
fn git_cmd(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.com",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "safe.directory=*",
        ])
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_OPTIONAL_LOCKS", "0")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn write(root: &Path, path: &str, content: &[u8]) {
    let path = root.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// Every file under `.git` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(dir: &Path, into: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, into);
            } else {
                into.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(&dir.join(".git"), &mut files);
    files
}

/// Build the case's repository in `root/project`.
fn build(root: &Path, case: &Case) -> PathBuf {
    let dir = root.join("project");
    std::fs::create_dir(&dir).unwrap();
    git_cmd(&dir, &["init", "-q"]);
    for (path, content) in case.committed {
        write(&dir, path, content);
    }
    if !case.committed.is_empty() {
        git_cmd(&dir, &["add", "-A"]);
        git_cmd(&dir, &["commit", "-q", "-m", "first"]);
    }
    for op in case.ops {
        match op {
            Op::Write(path, content) => write(&dir, path, content),
            Op::Remove(path) => std::fs::remove_file(dir.join(path)).unwrap(),
            Op::Rename(from, to) => {
                std::fs::create_dir_all(dir.join(to).parent().unwrap()).unwrap();
                std::fs::rename(dir.join(from), dir.join(to)).unwrap();
            }
            Op::Symlink(target, path) => {
                std::os::unix::fs::symlink(target, dir.join(path)).unwrap()
            }
            Op::Racy(path, content) => {
                // The index records the file at a past time, and is itself from that time.
                let past = std::time::SystemTime::now() - std::time::Duration::from_secs(100);
                let touch = |file: PathBuf| {
                    let file = std::fs::File::options().write(true).open(file).unwrap();
                    file.set_modified(past).unwrap();
                };
                touch(dir.join(path));
                git_cmd(&dir, &["update-index", "--refresh"]);
                write(&dir, path, content);
                touch(dir.join(path));
                touch(dir.join(".git/index"));
            }
            Op::Git(args) => {
                git_cmd(&dir, args);
            }
        }
    }
    dir
}

/// Take the diff of the case's repository and check it, and that the repository is untouched.
fn check(case: &Case, stat_only: bool, run_as: Option<(u32, u32)>) -> Diff {
    let root = tempfile::tempdir().unwrap();
    let dir = build(root.path(), case);
    if let Some((uid, gid)) = run_as {
        let owner = format!("{uid}:{gid}");
        let status = Command::new("chown")
            .args(["-R", "-h", &owner])
            .arg(root.path())
            .status()
            .unwrap();
        assert!(status.success());
    }
    let index = std::fs::read(dir.join(".git/index")).ok();
    let before = snapshot(&dir);
    let status = git_cmd(&dir, &["status", "--porcelain", "-z"]);

    let diff = git::diff(&dir, stat_only, run_as)
        .unwrap_or_else(|e| panic!("{}: diff failed: {e}", case.name));

    assert_eq!(
        std::fs::read(dir.join(".git/index")).ok(),
        index,
        "{}: index changed",
        case.name
    );
    assert_eq!(
        git_cmd(&dir, &["status", "--porcelain", "-z"]),
        status,
        "{}: status changed",
        case.name
    );
    let after = snapshot(&dir);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "{}: files under .git changed",
        case.name
    );
    assert!(after == before, "{}: .git content changed", case.name);

    let got: Vec<_> = diff
        .files
        .iter()
        .map(|f| {
            let old = f.old_path.as_deref();
            (
                f.path.as_str(),
                old,
                f.change,
                f.additions,
                f.deletions,
                f.binary,
            )
        })
        .collect();
    let want: Vec<_> = case
        .files
        .iter()
        .map(|w| {
            (
                w.path,
                w.old_path,
                w.change,
                w.additions,
                w.deletions,
                w.binary,
            )
        })
        .collect();
    assert_eq!(got, want, "{}: files", case.name);
    assert_eq!(diff.branch.as_deref(), case.branch, "{}: branch", case.name);
    let head = (!case.committed.is_empty()).then(|| {
        let sha = git_cmd(&dir, &["rev-parse", "HEAD"]);
        String::from_utf8(sha.trim_ascii().to_vec()).unwrap()
    });
    assert_eq!(diff.head, head, "{}: head", case.name);
    assert_eq!(diff.project_dir, dir.to_str().unwrap());

    if stat_only {
        assert_eq!(diff.patch, "", "{}: stat only", case.name);
    } else {
        for want in case.patch_has {
            assert!(
                diff.patch.contains(want),
                "{}: patch lacks {want:?}:\n{}",
                case.name,
                diff.patch
            );
        }
        for unwanted in case.patch_lacks {
            assert!(
                !diff.patch.contains(unwanted),
                "{}: patch has {unwanted:?}:\n{}",
                case.name,
                diff.patch
            );
        }
        assert!(!diff.patch.contains(TRUNCATED_NOTE));
    }
    diff
}

#[test]
fn cases() {
    for case in CASES {
        check(case, false, None);
    }
}

#[test]
fn stat_only_lists_every_file_without_a_patch() {
    const CASE: Case = Case {
        name: "stat only",
        committed: BASE,
        ops: &[
            Op::Write("t.txt", b"a\n"),
            Op::Remove("d.txt"),
            Op::Write("u.txt", b"u\n"),
        ],
        files: &[
            text("d.txt", ChangeKind::Deleted, 0, 2),
            text("t.txt", ChangeKind::Modified, 0, 2),
            text("u.txt", ChangeKind::Untracked, 1, 0),
        ],
        branch: Some("main"),
        patch_has: &[],
        patch_lacks: &[],
    };
    check(&CASE, true, None);
    let full = check(&CASE, false, None);
    assert!(full.patch.contains("+u\n"));
}

#[test]
fn runs_as_the_given_user() {
    // As root: the agent's uid, owning the repository (git runs with HOME at its parent).
    // Otherwise: ourselves, which still goes through the uid/gid and chown paths.
    let run_as = if nix::unistd::geteuid().is_root() {
        (1000, 1000)
    } else {
        (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    };
    for case in CASES {
        check(case, false, Some(run_as));
    }
}

#[test]
fn a_folder_that_is_not_a_repository_is_an_error() {
    let root = tempfile::tempdir().unwrap();
    // A plain folder, a folder inside a repository (git must not look above the project) and
    // a folder that does not exist.
    let plain = root.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    let outer = root.path().join("outer");
    std::fs::create_dir(&outer).unwrap();
    git_cmd(&outer, &["init", "-q"]);
    let inner = outer.join("inner");
    std::fs::create_dir(&inner).unwrap();
    let missing = root.path().join("missing");
    for dir in [plain, inner, missing, outer.join(".git")] {
        match git::diff(&dir, false, None) {
            Err(e @ GitError::NotARepository { .. }) => {
                let GitError::NotARepository { path } = &e else {
                    unreachable!()
                };
                assert_eq!(path, &dir);
                assert_eq!(
                    e.to_string(),
                    format!("{} is not a git repository", dir.display())
                );
            }
            other => panic!("{}: {other:?}", dir.display()),
        }
    }
}

#[test]
fn a_huge_patch_is_truncated_with_a_note() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("project");
    std::fs::create_dir(&dir).unwrap();
    git_cmd(&dir, &["init", "-q"]);
    let line = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\n";
    let lines = PATCH_LIMIT / line.len() + 1000;
    std::fs::write(dir.join("big.txt"), line.repeat(lines)).unwrap();
    std::fs::write(dir.join("small.txt"), "small\n").unwrap();

    let diff = git::diff(&dir, false, None).unwrap();
    assert!(diff.patch.ends_with(&format!("\n{TRUNCATED_NOTE}")));
    assert!(diff.patch.len() <= PATCH_LIMIT + TRUNCATED_NOTE.len());
    assert!(diff.patch.len() > PATCH_LIMIT / 2);
    let body = &diff.patch[..diff.patch.len() - TRUNCATED_NOTE.len()];
    assert!(
        body.lines()
            .skip(6)
            .all(|l| l == &line[..line.len() - 1] || l.starts_with('+'))
    );
    let files: Vec<_> = diff
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.additions))
        .collect();
    assert_eq!(
        files,
        [("big.txt", Some(lines as u64)), ("small.txt", Some(1))]
    );
}

#[test]
fn a_repository_owned_by_someone_else_is_fine() {
    // Only meaningful as root (git's ownership check); otherwise the repository is ours.
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("project");
    std::fs::create_dir(&dir).unwrap();
    git_cmd(&dir, &["init", "-q"]);
    std::fs::write(dir.join("u.txt"), "u\n").unwrap();
    if nix::unistd::geteuid().is_root() {
        let status = Command::new("chown")
            .args(["-R", "1000:1000"])
            .arg(root.path())
            .status()
            .unwrap();
        assert!(status.success());
    }
    let diff = git::diff(&dir, false, None).unwrap();
    assert_eq!(diff.files.len(), 1);
    assert_eq!(diff.files[0].change, ChangeKind::Untracked);
    assert!(diff.patch.contains("+u\n"));
}

#[test]
fn run_as_really_is_that_user_with_home_at_the_parent() {
    if !nix::unistd::geteuid().is_root() {
        return; // cannot become anyone else
    }
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("project");
    std::fs::create_dir(&dir).unwrap();
    git_cmd(&dir, &["init", "-q"]);
    write(&dir, "visible.txt", b"v\n");
    write(&dir, "x.home", b"ignored by the global config in HOME\n");
    write(
        root.path(),
        ".gitconfig",
        b"[core]\n\texcludesFile = ~/home-ignore\n",
    );
    write(root.path(), "home-ignore", b"*.home\n");
    let status = Command::new("chown")
        .args(["-R", "1000:1000"])
        .arg(root.path())
        .status()
        .unwrap();
    assert!(status.success());
    // Readable by root only: the agent cannot see it, so it is not in its diff.
    write(&dir, "secret/s.txt", b"s\n");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("secret"), std::fs::Permissions::from_mode(0o700)).unwrap();

    let diff = git::diff(&dir, false, Some((1000, 1000))).unwrap();
    let paths: Vec<_> = diff.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["visible.txt"]);
    let as_root = git::diff(&dir, false, None).unwrap();
    let paths: Vec<_> = as_root.files.iter().map(|f| f.path.as_str()).collect();
    assert!(paths.contains(&"secret/s.txt"), "{paths:?}");
}
