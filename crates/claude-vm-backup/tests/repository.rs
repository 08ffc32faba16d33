//! The repository half against a real local restic-format repository: incremental reads,
//! restore as a tar stream byte for byte, forget and purge.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use claude_vm_backup::scan::{self, Checker, ScanOptions};
use claude_vm_backup::{BackupError, Opener, Repo, RepoConfig, SnapshotMeta};
use claude_vm_core::backup::Location;

/// Reads files from the local disk, counting the opens.
struct CountingOpener(AtomicUsize);

impl Opener for CountingOpener {
    fn open(&self, path: &Path) -> std::io::Result<Box<dyn Read + Send>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(std::fs::File::open(path)?))
    }
}

fn config(repo: &Path, password: &str) -> RepoConfig {
    RepoConfig {
        location: Location::Local(repo.to_owned()),
        s3: Default::default(),
        password: password.to_owned(),
        cache_dir: None,
    }
}

fn scan_tree(root: &Path) -> Vec<(PathBuf, rustic_core::repofile::Node)> {
    let mut out = Vec::new();
    scan::scan(
        root,
        &ScanOptions {
            git_ignore: true,
            exclude: vec![],
            with_root: false,
            from_cwd: false,
        },
        &mut out,
    )
    .unwrap();
    let mut c = Checker::new(root);
    out.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| c.check(l).unwrap().unwrap())
        .collect()
}

fn meta() -> SnapshotMeta {
    SnapshotMeta {
        workspace_id: "wsabc123".into(),
        workspace_name: "brave-otter".into(),
        provider: "docker".into(),
        source: "/home/u/project".into(),
        image: "debian:bookworm".into(),
        version: "0.1.0".into(),
    }
}

/// Path → (mode, content or link target) of every entry of an extracted tree.
fn tree(root: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    for e in walk(root) {
        let rel = e.strip_prefix(root).unwrap().display().to_string();
        let m = std::fs::symlink_metadata(&e).unwrap();
        let body = if m.file_type().is_symlink() {
            std::fs::read_link(&e)
                .unwrap()
                .into_os_string()
                .into_encoded_bytes()
        } else if m.is_file() {
            std::fs::read(&e).unwrap()
        } else {
            Vec::new()
        };
        out.insert(rel, (m.permissions().mode(), body));
    }
    out
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        out.push(p.clone());
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            out.extend(walk(&p));
        }
    }
    out
}

#[test]
fn backup_is_incremental_and_restores_byte_for_byte() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    let repo_dir = d.path().join("repo");
    std::fs::create_dir_all(src.join("p/.git")).unwrap();
    std::fs::create_dir_all(src.join("p/empty")).unwrap();
    std::fs::create_dir_all(src.join("p/node_modules/x")).unwrap();
    std::fs::write(src.join("p/.gitignore"), "node_modules/\n").unwrap();
    std::fs::write(src.join("p/node_modules/x/big.js"), "ignored").unwrap();
    std::fs::write(src.join("p/.git/HEAD"), "ref: refs/heads/main\n").unwrap();
    let blob: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(src.join("p/data.bin"), &blob).unwrap();
    std::fs::write(src.join("p/run.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(src.join("p/run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    symlink("data.bin", src.join("p/link")).unwrap();

    let opener = Arc::new(CountingOpener(AtomicUsize::new(0)));
    let first = Repo::open(&config(&repo_dir, "pw"))
        .unwrap()
        .backup(&src, scan_tree(&src), vec![], opener.clone(), &meta())
        .unwrap();
    assert_eq!(
        opener.0.swap(0, Ordering::SeqCst),
        4,
        "every file read once"
    );
    assert!(first.snapshot.bytes_added >= blob.len() as u64);

    // Nothing changed: nothing is read, and the first snapshot stands.
    let second = Repo::open(&config(&repo_dir, "pw"))
        .unwrap()
        .backup(&src, scan_tree(&src), vec![], opener.clone(), &meta())
        .unwrap();
    assert_eq!(opener.0.swap(0, Ordering::SeqCst), 0);
    assert!(second.unchanged);
    assert_eq!(second.snapshot.id, first.snapshot.id);

    // A changed mode alone is a change: a new snapshot (the file is read again, its
    // ctime having changed, as restic would).
    std::fs::set_permissions(src.join("p/run.sh"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let second = Repo::open(&config(&repo_dir, "pw"))
        .unwrap()
        .backup(&src, scan_tree(&src), vec![], opener.clone(), &meta())
        .unwrap();
    assert!(!second.unchanged);
    assert_ne!(second.snapshot.id, first.snapshot.id);
    assert_eq!(opener.0.swap(0, Ordering::SeqCst), 1);
    assert_eq!(
        second.snapshot.files_unmodified, 4,
        "three files and a symlink"
    );
    std::fs::set_permissions(src.join("p/run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();

    // One file changed: only it is read, and little is added.
    std::fs::write(src.join("p/run.sh"), "#!/bin/sh\necho changed\n").unwrap();
    let third = Repo::open(&config(&repo_dir, "pw"))
        .unwrap()
        .backup(&src, scan_tree(&src), vec![], opener.clone(), &meta())
        .unwrap();
    assert_eq!(opener.0.swap(0, Ordering::SeqCst), 1);
    assert!(
        third.snapshot.bytes_added < 10_000,
        "{}",
        third.snapshot.bytes_added
    );

    let repo = Repo::open(&config(&repo_dir, "pw")).unwrap();
    let list = repo.snapshots(Some("wsabc123")).unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[0].workspace_name.as_deref(), Some("brave-otter"));
    assert_eq!(list[0].source.as_deref(), Some("/home/u/project"));
    assert!(repo.snapshots(Some("other")).unwrap().is_empty());

    // Restore the first snapshot: the tree as it was then, ignored files left out.
    let mut tar = Vec::new();
    Repo::open(&config(&repo_dir, "pw"))
        .unwrap()
        .write_tar(&list[0].short_id, &mut tar)
        .unwrap();
    let out = d.path().join("out");
    tar::Archive::new(&tar[..]).unpack(&out).unwrap();
    std::fs::write(src.join("p/run.sh"), "#!/bin/sh\n").unwrap();
    std::fs::remove_dir_all(src.join("p/node_modules")).unwrap();
    assert_eq!(tree(&out.join("workspace")), tree(&src));

    // Unknown and malformed ids.
    for bad in ["deadbeef", "zz", ""] {
        let e = Repo::open(&config(&repo_dir, "pw"))
            .unwrap()
            .write_tar(bad, Vec::new())
            .unwrap_err();
        assert!(
            matches!(e, BackupError::UnknownSnapshot { .. }),
            "{bad}: {e:?}"
        );
    }

    // Retention keeps the newest.
    let forgotten = Repo::open(&config(&repo_dir, "pw"))
        .unwrap()
        .forget("wsabc123", 1, 0)
        .unwrap();
    assert_eq!(forgotten.len(), 2);
    let left = Repo::open(&config(&repo_dir, "pw"))
        .unwrap()
        .snapshots(None)
        .unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, list[2].id);

    // Purge leaves no data behind.
    assert_eq!(
        Repo::open(&config(&repo_dir, "pw"))
            .unwrap()
            .purge("wsabc123")
            .unwrap(),
        1
    );
    let data_files = walk(&repo_dir.join("data"))
        .into_iter()
        .filter(|p| p.is_file())
        .count();
    assert_eq!(data_files, 0);
    assert!(
        Repo::open(&config(&repo_dir, "pw"))
            .unwrap()
            .snapshots(None)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn wrong_password_and_failed_reads_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), "a").unwrap();
    let repo_dir = d.path().join("repo");
    Repo::open(&config(&repo_dir, "right")).unwrap();
    let e = Repo::open(&config(&repo_dir, "wrong")).err().unwrap();
    assert!(matches!(e, BackupError::WrongPassword), "{e:?}");
    assert!(e.hint().unwrap().contains("password"));

    struct Failing;
    impl Opener for Failing {
        fn open(&self, _: &Path) -> std::io::Result<Box<dyn Read + Send>> {
            Err(std::io::Error::other("link broke"))
        }
    }
    let e = Repo::open(&config(&repo_dir, "right"))
        .unwrap()
        .backup(&src, scan_tree(&src), vec![], Arc::new(Failing), &meta())
        .unwrap_err();
    assert!(
        matches!(e, BackupError::Incomplete { count: 1, .. }),
        "{e:?}"
    );
    // No snapshot that lacks the file was kept.
    assert!(
        Repo::open(&config(&repo_dir, "right"))
            .unwrap()
            .snapshots(None)
            .unwrap()
            .is_empty()
    );
}
