//! The Files API's file operations: every way out of the root is refused (traversal,
//! symlinks, archive entries), writes are atomic, archives round-trip a tree faithfully.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use claude_vm_daemon::files::{FileError, Root};
use claude_vm_protocol::api::FileKind;

/// A temporary directory holding the root (`ws`), a directory beside it that must never be
/// touched (`outside`), and a sibling whose name extends the root's (`ws2`).
struct Fixture {
    _dir: tempfile::TempDir,
    outer: PathBuf,
    ws: PathBuf,
    root: Root,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let outer = fs::canonicalize(dir.path()).unwrap();
    let ws = outer.join("ws");
    let proj = ws.join("proj");
    fs::create_dir_all(proj.join("sub")).unwrap();
    fs::create_dir_all(outer.join("outside")).unwrap();
    fs::create_dir_all(outer.join("ws2")).unwrap();
    fs::write(proj.join("a.txt"), "hello").unwrap();
    fs::write(proj.join("sub/b.txt"), "bee").unwrap();
    fs::write(outer.join("outside/secret.txt"), "secret").unwrap();
    fs::write(outer.join("ws2/x"), "sibling").unwrap();
    let links: &[(&str, String)] = &[
        ("out", format!("{}/outside", outer.display())),
        ("rel_out", "../../outside".into()),
        (
            "secret_link",
            format!("{}/outside/secret.txt", outer.display()),
        ),
        (
            "dangling_out",
            format!("{}/outside/new.txt", outer.display()),
        ),
        ("dangling_rel", "../../outside/new2.txt".into()),
        ("sneaky", "sub/../../../outside".into()),
        ("in_file", "a.txt".into()),
        ("in_dir", "sub".into()),
        ("here", ".".into()),
        ("up_in", "sub/..".into()),
        ("abs_in", format!("{}/proj/sub", ws.display())),
        ("dangling_in", "created.txt".into()),
        ("loop_a", "loop_b".into()),
        ("loop_b", "loop_a".into()),
    ];
    for (name, target) in links {
        symlink(target, proj.join(name)).unwrap();
    }
    let root = Root::new(&ws).unwrap();
    Fixture {
        _dir: dir,
        outer,
        ws,
        root,
    }
}

impl Fixture {
    /// `{ws}` and `{outer}` in a test path stand for the fixture's directories.
    fn path(&self, p: &str) -> String {
        p.replace("{ws}", &self.ws.to_string_lossy())
            .replace("{outer}", &self.outer.to_string_lossy())
    }

    /// Everything outside the root, to compare before and after.
    fn outside_state(&self) -> Vec<(String, String)> {
        let mut top: Vec<_> = fs::read_dir(&self.outer)
            .unwrap()
            .map(|e| {
                (
                    e.unwrap().file_name().to_string_lossy().into_owned(),
                    String::new(),
                )
            })
            .collect();
        top.sort();
        top.extend(snapshot(&self.outer.join("outside")));
        top.extend(snapshot(&self.outer.join("ws2")));
        top
    }
}

/// (relative path, description) of every entry below `dir`, symlinks not followed.
fn snapshot(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            let meta = fs::symlink_metadata(&p).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            let desc = if meta.file_type().is_symlink() {
                format!("link {}", fs::read_link(&p).unwrap().display())
            } else if meta.is_dir() {
                stack.push(p.clone());
                format!("dir {mode:o} {}", meta.mtime())
            } else {
                let data = fs::read(&p).unwrap();
                format!("file {mode:o} {} {data:?}", meta.mtime())
            };
            out.push((rel, desc));
        }
    }
    out.sort();
    out
}

/// A tar with one small file, for extraction cases.
fn small_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    b.append_data(&mut h, "x.txt", &b"xyz"[..]).unwrap();
    b.into_inner().unwrap()
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Resolve,
    Stat,
    StatFollow,
    List,
    Read,
    Write,
    WriteParents,
    Mkdir,
    MkdirParents,
    Remove,
    RemoveAll,
    /// Rename the path to `proj/renamed`.
    RenameFrom,
    /// Rename `proj/a.txt` to the path.
    RenameTo,
    Archive,
    Extract,
}

fn run(f: &Fixture, op: Op, path: &str, base: Option<&str>) -> Result<(), FileError> {
    let r = &f.root;
    let elsewhere = format!("{}/proj/renamed", f.ws.display());
    let a_txt = format!("{}/proj/a.txt", f.ws.display());
    match op {
        Op::Resolve => r.resolve(path, base).map(drop),
        Op::Stat => r.stat(path, base, false).map(drop),
        Op::StatFollow => r.stat(path, base, true).map(drop),
        Op::List => r.list(path, base).map(drop),
        Op::Read => r.open_read(path, base).map(drop),
        Op::Write => r
            .write_atomic(path, base, None, false, None, &b"pwned"[..])
            .map(drop),
        Op::WriteParents => r
            .write_atomic(path, base, None, true, None, &b"pwned"[..])
            .map(drop),
        Op::Mkdir => r.mkdir(path, base, false, None).map(drop),
        Op::MkdirParents => r.mkdir(path, base, true, None).map(drop),
        Op::Remove => r.remove(path, base, false),
        Op::RemoveAll => r.remove(path, base, true),
        Op::RenameFrom => r.rename(path, &elsewhere, base).map(drop),
        Op::RenameTo => r.rename(&a_txt, path, base).map(drop),
        Op::Archive => r.write_archive(path, base, io::sink()),
        Op::Extract => r
            .extract_archive(path, base, &small_tar()[..], None)
            .map(drop),
    }
}

/// Run `op` on a fresh fixture; `want` is the HTTP status of the expected error, or 0 for
/// success. Whatever happens, nothing outside the root may change.
fn check(op: Op, path: &str, base: Option<&str>, want: u16) {
    let f = fixture();
    let path = f.path(path);
    let base = base.map(|b| f.path(b));
    let before = f.outside_state();
    let got = run(&f, op, &path, base.as_deref());
    let status = got.as_ref().err().map_or(0, FileError::status);
    assert_eq!(
        status, want,
        "{op:?} {path:?} (base {base:?}) answered {got:?}"
    );
    assert_eq!(
        f.outside_state(),
        before,
        "{op:?} {path:?} changed something outside the root"
    );
}

#[test]
fn lexical_traversal_is_refused() {
    use Op::*;
    let cases: &[(Op, &str, Option<&str>, u16)] = &[
        (Stat, "../x", None, 400),
        (Stat, "a/../../x", None, 400),
        (Stat, "proj/../proj/a.txt", None, 400),
        (Stat, "../a.txt", Some("proj"), 400),
        (Stat, "a.txt", Some("../outside"), 400),
        (Stat, "a.txt", Some("/etc"), 403),
        (Stat, "/etc/passwd", None, 403),
        (Read, "/etc/passwd", None, 403),
        (Stat, "/etc/passwd", Some("proj"), 403),
        (Stat, "{outer}/ws2/x", None, 403),
        (Read, "{outer}/ws2/x", None, 403),
        (Write, "{outer}/ws2/x", None, 403),
        (Stat, "{outer}/ws/../outside/secret.txt", None, 400),
        (Read, "{outer}/outside/secret.txt", None, 403),
        (Stat, "", None, 400),
        (Stat, "", Some("proj"), 400),
        (Stat, "a.txt", Some(""), 400),
        (Stat, "proj/a\0.txt", None, 400),
        (Write, "proj/a\0.txt", None, 400),
        (Mkdir, "../evil", Some("proj"), 400),
        (Remove, "..", None, 400),
        (Extract, "..", None, 400),
        (Archive, "../outside", None, 400),
        (RenameFrom, "../outside/secret.txt", None, 400),
        (RenameTo, "../outside/stolen", None, 400),
        // The same places, spelled correctly.
        (Stat, "{ws}/proj/a.txt", None, 0),
        (Stat, "proj/a.txt", None, 0),
        (Stat, "./proj//a.txt", None, 0),
        (Stat, "a.txt", Some("proj"), 0),
        (Stat, "a.txt", Some("{ws}/proj"), 0),
        (Stat, "{ws}/proj/a.txt", Some("proj/sub"), 0),
        (Stat, "{ws}", None, 0),
        (Stat, ".", None, 0),
        (List, "/", Some("proj"), 403),
    ];
    for &(op, path, base, want) in cases {
        check(op, path, base, want);
    }
}

#[test]
fn symlinks_cannot_lead_outside() {
    use Op::*;
    let cases: &[(Op, &str, Option<&str>, u16)] = &[
        // Reading through links.
        (Read, "proj/out/secret.txt", None, 403),
        (Read, "proj/rel_out/secret.txt", None, 403),
        (Read, "proj/sneaky/secret.txt", None, 403),
        (Read, "proj/secret_link", None, 403),
        (Read, "secret_link", Some("proj"), 403),
        (Read, "secret.txt", Some("proj/out"), 403),
        (Resolve, "proj/out/secret.txt", None, 403),
        // Writing through links, dangling or not.
        (Write, "proj/out/secret.txt", None, 403),
        (Write, "proj/out/new.txt", None, 403),
        (Write, "proj/secret_link", None, 403),
        (Write, "proj/dangling_out", None, 403),
        (Write, "proj/dangling_rel", None, 403),
        (WriteParents, "proj/out/deep/new.txt", None, 403),
        (WriteParents, "proj/dangling_out/x", None, 403),
        // Following for stat.
        (StatFollow, "proj/out", None, 403),
        (StatFollow, "proj/secret_link", None, 403),
        (StatFollow, "proj/dangling_out", None, 403),
        (Stat, "proj/out/secret.txt", None, 403),
        // Listing and creating under links.
        (List, "proj/out", None, 403),
        (List, "proj/out/", None, 403),
        (List, "proj/rel_out", None, 403),
        (List, "proj/sneaky", None, 403),
        (List, "{outer}/ws2", None, 403),
        (Mkdir, "proj/out/sub", None, 403),
        (MkdirParents, "proj/out/a/b", None, 403),
        (MkdirParents, "proj/dangling_out/x", None, 403),
        // Removing and renaming through links.
        (Remove, "proj/out/secret.txt", None, 403),
        (RemoveAll, "proj/rel_out/secret.txt", None, 403),
        (RenameFrom, "proj/out/secret.txt", None, 403),
        (RenameTo, "proj/out/stolen.txt", None, 403),
        (RenameTo, "proj/dangling_out/x", None, 403),
        // Archives.
        (Archive, "proj/out/secret.txt", None, 403),
        (Extract, "proj/out", None, 403),
        (Extract, "proj/rel_out", None, 403),
        // Loops.
        (Read, "proj/loop_a", None, 400),
        (Write, "proj/loop_a", None, 400),
        // The link itself, never its target: allowed.
        (Stat, "proj/out", None, 0),
        (Stat, "proj/dangling_out", None, 0),
        (Remove, "proj/out", None, 0),
        (RemoveAll, "proj/rel_out", None, 0),
        (RemoveAll, "proj/rel_out/", None, 0),
        (RenameFrom, "proj/out", None, 0),
        (RenameTo, "proj/dangling_out", None, 0),
        (Mkdir, "proj/out", None, 409),
        (Archive, "proj/out", None, 0),
        (Archive, "proj", None, 0),
        // Links that stay inside are followed.
        (Read, "proj/in_file", None, 0),
        (Read, "proj/abs_in/b.txt", None, 0),
        (Read, "b.txt", Some("proj/in_dir"), 0),
        (Read, "proj/here/here/a.txt", None, 0),
        (Read, "proj/up_in/a.txt", None, 0),
        (List, "proj/here", None, 0),
        (Write, "proj/in_file", None, 0),
        (Write, "proj/dangling_in", None, 0),
        (List, "proj/in_dir", None, 0),
        (StatFollow, "proj/abs_in", None, 0),
        (Extract, "proj/in_dir", None, 0),
    ];
    for &(op, path, base, want) in cases {
        check(op, path, base, want);
    }
}

#[test]
fn followed_links_answer_the_target() {
    let f = fixture();
    let info = f.root.stat("proj/in_file", None, true).unwrap();
    assert_eq!(
        (info.path.as_str(), info.kind),
        ("proj/a.txt", FileKind::File)
    );
    let info = f.root.stat("proj/out", None, false).unwrap();
    assert_eq!(info.kind, FileKind::Symlink);
    assert_eq!(
        info.link_target.as_deref(),
        Some(f.outer.join("outside").to_str().unwrap())
    );

    // Writing through an inside link replaces the target, keeps the link.
    f.root
        .write_atomic("proj/in_file", None, None, false, None, &b"new"[..])
        .unwrap();
    assert_eq!(fs::read_to_string(f.ws.join("proj/a.txt")).unwrap(), "new");
    assert!(
        fs::symlink_metadata(f.ws.join("proj/in_file"))
            .unwrap()
            .is_symlink()
    );
    // A dangling inside link gets its target created.
    f.root
        .write_atomic("proj/dangling_in", None, None, false, None, &b"made"[..])
        .unwrap();
    assert_eq!(
        fs::read_to_string(f.ws.join("proj/created.txt")).unwrap(),
        "made"
    );

    assert_eq!(
        f.root.resolve("proj/in_dir/b.txt", None).unwrap(),
        f.ws.join("proj/sub/b.txt")
    );
    assert_eq!(
        f.root.resolve("proj/in_file", None).unwrap(),
        f.ws.join("proj/in_file")
    );
    assert_eq!(
        f.root.resolve_follow("proj/in_file", None).unwrap(),
        f.ws.join("proj/a.txt")
    );
}

#[test]
fn root_given_through_a_symlink_accepts_both_spellings() {
    let f = fixture();
    let alias = f.outer.join("alias");
    symlink(&f.ws, &alias).unwrap();
    let root = Root::new(&alias).unwrap();
    assert_eq!(root.path(), f.ws);
    for p in [
        format!("{}/proj/a.txt", alias.display()),
        format!("{}/proj/a.txt", f.ws.display()),
    ] {
        assert_eq!(root.stat(&p, None, false).unwrap().path, "proj/a.txt");
    }
    let err = root
        .stat(
            &format!("{}/outside/secret.txt", f.outer.display()),
            None,
            false,
        )
        .unwrap_err();
    assert_eq!(err.status(), 403);
}

/// Exchange two entries in one step where the kernel can (so `d` always exists), else in
/// four renames.
fn swap(a: &Path, b: &Path) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let _ = nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            a,
            nix::fcntl::AT_FDCWD,
            b,
            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
        );
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let tmp = a.with_extension("swap");
        let _ = fs::rename(a, &tmp);
        let _ = fs::rename(b, a);
        let _ = fs::rename(&tmp, b);
    }
}

/// An agent swapping a directory for a symlink to outside, as fast as it can, while the
/// daemon writes below it: nothing may ever land outside.
#[test]
fn swapping_a_directory_for_a_symlink_midway_never_escapes() {
    let f = fixture();
    let before = f.outside_state();
    let proj = f.ws.join("proj");
    fs::create_dir(proj.join("d")).unwrap();
    symlink(f.outer.join("outside"), proj.join("d_link")).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let stop = stop.clone();
        let proj = proj.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                swap(&proj.join("d"), &proj.join("d_link"));
            }
        })
    };
    for i in 0..3000 {
        let name = format!("proj/d/f{}", i % 10);
        let _ = f
            .root
            .write_atomic(&name, None, None, false, None, &b"pwned"[..]);
        let _ = f.root.mkdir("proj/d/m", None, true, None);
        if let Ok((mut file, _)) = f.root.open_read("proj/d/secret.txt", None) {
            let mut s = String::new();
            file.read_to_string(&mut s).unwrap();
            assert_ne!(s, "secret", "read outside the root");
        }
        let _ = f.root.remove("proj/d/secret.txt", None, false);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    swapper.join().unwrap();
    assert_eq!(f.outside_state(), before);
}

#[test]
fn errors_carry_their_status() {
    let f = fixture();
    let r = &f.root;
    let status = |res: Result<(), FileError>| res.unwrap_err().status();
    assert_eq!(status(r.stat("proj/nope", None, false).map(drop)), 404);
    assert_eq!(status(r.stat("proj/nope/x", None, false).map(drop)), 404);
    assert_eq!(status(r.stat("proj/a.txt/x", None, false).map(drop)), 400);
    assert_eq!(status(r.list("proj/a.txt", None).map(drop)), 400);
    assert_eq!(status(r.open_read("proj/sub", None).map(drop)), 400);
    assert_eq!(
        status(r.mkdir("proj/sub", None, false, None).map(drop)),
        409
    );
    assert_eq!(
        status(r.mkdir("proj/a.txt", None, true, None).map(drop)),
        409
    );
    assert_eq!(status(r.remove("proj/sub", None, false)), 409);
    assert_eq!(status(r.remove("proj/nope", None, true)), 404);
    assert_eq!(status(r.remove(".", None, true)), 400);
    assert_eq!(status(r.remove(&f.ws.to_string_lossy(), None, true)), 400);
    assert_eq!(status(r.rename(".", "x", None).map(drop)), 400);
    assert_eq!(status(r.rename("proj/nope", "x", None).map(drop)), 404);
    assert_eq!(
        status(r.rename("proj", "proj/sub/proj", None).map(drop)),
        400
    );
    assert_eq!(
        status(r.rename("proj/a.txt", "proj/sub", None).map(drop)),
        400
    );
    fs::create_dir(f.ws.join("other")).unwrap();
    fs::write(f.ws.join("other/keep"), "").unwrap();
    assert_eq!(status(r.rename("proj/sub", "other", None).map(drop)), 409);
    assert_eq!(
        fs::read_to_string(f.ws.join("proj/sub/b.txt")).unwrap(),
        "bee"
    );
    let api =
        claude_vm_protocol::api::ApiError::from(&r.stat("proj/nope", None, false).unwrap_err());
    assert_eq!(api.error, "no such file or directory: proj/nope");
}

#[test]
fn stat_list_read() {
    let f = fixture();
    fs::set_permissions(f.ws.join("proj/a.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    let info = f.root.stat("a.txt", Some("proj"), false).unwrap();
    assert_eq!(info.path, "proj/a.txt");
    assert_eq!(info.name, "a.txt");
    assert_eq!(info.kind, FileKind::File);
    assert_eq!(info.size, 5);
    assert_eq!(info.mode, 0o640);
    assert_eq!(
        info.mtime,
        fs::metadata(f.ws.join("proj/a.txt")).unwrap().mtime()
    );
    assert_eq!(info.link_target, None);

    let root = f.root.stat(".", None, false).unwrap();
    assert_eq!((root.path.as_str(), root.kind), (".", FileKind::Dir));

    let names: Vec<_> = f
        .root
        .list("proj", None)
        .unwrap()
        .into_iter()
        .map(|i| (i.path, i.kind))
        .collect();
    let mut want: Vec<_> = fs::read_dir(f.ws.join("proj"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    want.sort();
    assert_eq!(
        names.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
        want.iter().map(|n| format!("proj/{n}")).collect::<Vec<_>>()
    );
    assert!(names.contains(&("proj/sub".into(), FileKind::Dir)));
    assert!(names.contains(&("proj/out".into(), FileKind::Symlink)));
    let in_dir = f.root.list("proj/in_dir", None).unwrap();
    assert_eq!(in_dir.len(), 1);
    assert_eq!(in_dir[0].path, "proj/sub/b.txt");

    let (mut file, info) = f.root.open_read("proj/in_file", None).unwrap();
    let mut s = String::new();
    file.read_to_string(&mut s).unwrap();
    assert_eq!((s.as_str(), info.path.as_str()), ("hello", "proj/a.txt"));
}

/// Fails after yielding some data.
struct FailingReader(usize);

impl Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.0 == 0 {
            return Err(io::Error::other("client went away"));
        }
        let n = self.0.min(buf.len());
        buf[..n].fill(b'!');
        self.0 -= n;
        Ok(n)
    }
}

#[test]
fn write_atomic_replaces_or_leaves_intact() {
    let f = fixture();
    let r = &f.root;
    let a = f.ws.join("proj/a.txt");
    fs::set_permissions(&a, fs::Permissions::from_mode(0o755)).unwrap();
    let old_inode = fs::metadata(&a).unwrap().ino();

    let info = r
        .write_atomic("proj/a.txt", None, None, false, None, &b"replaced"[..])
        .unwrap();
    assert_eq!(fs::read_to_string(&a).unwrap(), "replaced");
    assert_eq!(
        (info.size, info.mode, info.path.as_str()),
        (8, 0o755, "proj/a.txt")
    );
    assert_ne!(
        fs::metadata(&a).unwrap().ino(),
        old_inode,
        "a new file was renamed in"
    );

    // A reader failing midway: the old content stays, no temporary file is left.
    let before: Vec<_> = fs::read_dir(f.ws.join("proj"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let err = r
        .write_atomic(
            "proj/a.txt",
            None,
            Some(0o600),
            false,
            None,
            FailingReader(100_000),
        )
        .unwrap_err();
    assert_eq!(err.status(), 500, "{err}");
    assert!(err.to_string().contains("client went away"), "{err}");
    assert_eq!(fs::read_to_string(&a).unwrap(), "replaced");
    assert_eq!(fs::metadata(&a).unwrap().mode() & 0o7777, 0o755);
    let after: Vec<_> = fs::read_dir(f.ws.join("proj"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before.len(), after.len(), "{after:?}");

    // New files: default mode, explicit mode, parents only on request.
    let info = r
        .write_atomic("new.txt", Some("proj"), None, false, None, &b"n"[..])
        .unwrap();
    assert_eq!((info.mode, info.path.as_str()), (0o644, "proj/new.txt"));
    let info = r
        .write_atomic("proj/x.sh", None, Some(0o750), false, None, &b"#!"[..])
        .unwrap();
    assert_eq!(
        fs::metadata(f.ws.join("proj/x.sh")).unwrap().mode() & 0o7777,
        0o750
    );
    assert_eq!(info.mode, 0o750);
    let err = r
        .write_atomic("proj/deep/er/f", None, None, false, None, &b"x"[..])
        .unwrap_err();
    assert_eq!(err.status(), 404);
    r.write_atomic("proj/deep/er/f", None, None, true, None, &b"x"[..])
        .unwrap();
    assert_eq!(
        fs::read_to_string(f.ws.join("proj/deep/er/f")).unwrap(),
        "x"
    );
    assert_eq!(
        r.write_atomic("proj/sub", None, None, false, None, &b"x"[..])
            .unwrap_err()
            .status(),
        400
    );
    assert_eq!(
        r.write_atomic(".", None, None, false, None, &b"x"[..])
            .unwrap_err()
            .status(),
        400
    );

    if nix::unistd::geteuid().is_root() {
        r.write_atomic(
            "proj/owned/f",
            None,
            None,
            true,
            Some((1000, 1001)),
            &b"x"[..],
        )
        .unwrap();
        for p in ["proj/owned", "proj/owned/f"] {
            let m = fs::metadata(f.ws.join(p)).unwrap();
            assert_eq!((m.uid(), m.gid()), (1000, 1001), "{p}");
        }
        // Replacing keeps the owner unless told otherwise.
        r.write_atomic("proj/owned/f", None, None, false, None, &b"y"[..])
            .unwrap();
        let m = fs::metadata(f.ws.join("proj/owned/f")).unwrap();
        assert_eq!((m.uid(), m.gid()), (1000, 1001));
    }
}

#[test]
fn mkdir_remove_rename() {
    let f = fixture();
    let r = &f.root;
    let info = r.mkdir("proj/new", None, false, None).unwrap();
    assert_eq!((info.path.as_str(), info.kind), ("proj/new", FileKind::Dir));
    assert_eq!(
        r.mkdir("proj/a/b/c", None, false, None)
            .unwrap_err()
            .status(),
        404
    );
    r.mkdir("proj/a/b/c", None, true, None).unwrap();
    r.mkdir("proj/a/b/c", None, true, None).unwrap();
    assert!(f.ws.join("proj/a/b/c").is_dir());
    if nix::unistd::geteuid().is_root() {
        r.mkdir("proj/o/p", None, true, Some((1000, 1000))).unwrap();
        assert_eq!(fs::metadata(f.ws.join("proj/o")).unwrap().uid(), 1000);
        assert_eq!(fs::metadata(f.ws.join("proj/o/p")).unwrap().uid(), 1000);
    }

    // Rename: file over file, dir over empty dir; never over a non-empty dir.
    r.rename("proj/a.txt", "proj/sub/b.txt", None).unwrap();
    assert_eq!(
        fs::read_to_string(f.ws.join("proj/sub/b.txt")).unwrap(),
        "hello"
    );
    r.rename("proj/a", "proj/new", None).unwrap();
    assert!(f.ws.join("proj/new/b/c").is_dir());
    assert_eq!(
        r.rename("proj/new", "proj/sub", None).unwrap_err().status(),
        409
    );
    let info = r.rename("sub", "moved", Some("proj")).unwrap();
    assert_eq!(info.path, "proj/moved");

    // Remove: a symlink, never its target; a tree only when asked.
    r.remove("proj/in_dir", None, false).unwrap();
    assert!(f.ws.join("proj/moved/b.txt").exists());
    assert_eq!(
        r.remove("proj/moved", None, false).unwrap_err().status(),
        409
    );
    fs::create_dir_all(f.ws.join("proj/moved/x/y/z")).unwrap();
    symlink(f.outer.join("outside"), f.ws.join("proj/moved/x/y/z/out")).unwrap();
    fs::write(f.ws.join("proj/moved/x/y/z/f"), "f").unwrap();
    r.remove("proj/moved", None, true).unwrap();
    assert!(!f.ws.join("proj/moved").exists());
    assert!(f.outer.join("outside/secret.txt").exists());
    r.remove("proj/new/b/c", None, false).unwrap();
    assert!(!f.ws.join("proj/new/b/c").exists());
}

/// Sets a file's or symlink's mtime without following it.
fn set_mtime(p: &Path, secs: i64) {
    let t = nix::sys::time::TimeSpec::new(secs, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

#[test]
fn archives_round_trip_a_tree() {
    let f = fixture();
    let tree = f.ws.join("proj/tree");
    let long = "l".repeat(150);
    fs::create_dir_all(tree.join("bin")).unwrap();
    fs::create_dir_all(tree.join(format!("deep/{long}/empty"))).unwrap();
    fs::create_dir_all(tree.join("private")).unwrap();
    let binary: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    fs::write(tree.join("bin/tool"), &binary).unwrap();
    fs::write(tree.join("README"), "read me").unwrap();
    fs::write(tree.join("private/key"), "k").unwrap();
    fs::write(tree.join(format!("deep/{long}/f.txt")), "deep").unwrap();
    fs::write(tree.join("empty.txt"), "").unwrap();
    symlink("README", tree.join("readme-link")).unwrap();
    symlink("/etc/passwd", tree.join("abs-link")).unwrap();
    symlink("nowhere", tree.join("dangling")).unwrap();
    symlink(format!("deep/{long}/f.txt"), tree.join("long-link")).unwrap();
    let modes = [
        ("bin/tool", 0o755),
        ("README", 0o644),
        ("private/key", 0o600),
        ("private", 0o700),
        ("empty.txt", 0o444),
        ("bin", 0o750),
    ];
    for (p, m) in modes {
        fs::set_permissions(tree.join(p), fs::Permissions::from_mode(m)).unwrap();
    }
    // Children first, so setting them does not move their parents' mtimes.
    let mut all = snapshot(&tree);
    all.reverse();
    for (i, (rel, _)) in all.iter().enumerate() {
        set_mtime(&tree.join(rel), 1_600_000_000 + i as i64 * 1000);
    }
    set_mtime(&tree, 1_500_000_000);

    let mut tar = Vec::new();
    f.root
        .write_archive("tree", Some("proj"), &mut tar)
        .unwrap();
    let mut names = Vec::new();
    for e in tar::Archive::new(&tar[..]).entries().unwrap() {
        names.push(e.unwrap().path().unwrap().to_string_lossy().into_owned());
    }
    assert_eq!(names[0], "tree", "named relative to the parent: {names:?}");
    assert!(
        names.iter().all(|n| n == "tree" || n.starts_with("tree/")),
        "{names:?}"
    );

    fs::create_dir(f.ws.join("copy")).unwrap();
    let owner = nix::unistd::geteuid().is_root().then_some((1000, 1000));
    let n = f
        .root
        .extract_archive("copy", None, &tar[..], owner)
        .unwrap();
    assert_eq!(n as usize, names.len());
    let copy = f.ws.join("copy/tree");
    assert_eq!(snapshot(&copy), snapshot(&tree));
    assert_eq!(
        fs::metadata(&copy).unwrap().mtime(),
        fs::metadata(&tree).unwrap().mtime()
    );
    assert_eq!(fs::read(copy.join("bin/tool")).unwrap(), binary);
    if owner.is_some() {
        for (rel, _) in snapshot(&copy) {
            let m = fs::symlink_metadata(copy.join(&rel)).unwrap();
            assert_eq!((m.uid(), m.gid()), (1000, 1000), "{rel}");
        }
    }

    // A single file archives under its own name; extracting again replaces it.
    let mut tar = Vec::new();
    f.root.write_archive("proj/a.txt", None, &mut tar).unwrap();
    fs::write(f.ws.join("copy/a.txt"), "old").unwrap();
    assert_eq!(
        f.root
            .extract_archive("copy", None, &tar[..], None)
            .unwrap(),
        1
    );
    assert_eq!(
        fs::read_to_string(f.ws.join("copy/a.txt")).unwrap(),
        "hello"
    );

    // The root archives as its children.
    let mut tar = Vec::new();
    f.root.write_archive(".", None, &mut tar).unwrap();
    let first = tar::Archive::new(&tar[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    assert!(first.contains(&"proj/a.txt".to_owned()), "{first:?}");
}

/// A raw tar entry; the name and link name are written as given, unchecked.
fn raw_entry(
    b: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: tar::EntryType,
    link: &str,
    data: &[u8],
    mode: u32,
) {
    let mut h = tar::Header::new_gnu();
    let old = h.as_old_mut();
    old.name[..name.len()].copy_from_slice(name.as_bytes());
    old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_mtime(1_600_000_000);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

type Entry<'a> = (&'a str, tar::EntryType, &'a str, &'a [u8]);

#[test]
fn archive_attacks_are_refused() {
    use tar::EntryType::{Char, Directory, Fifo, Link, Regular, Symlink};
    let file = |name: &'static str| -> Entry<'static> { (name, Regular, "", &b"pwned"[..]) };
    // (entries, expected status); every archive is extracted into `proj`.
    let cases: Vec<(Vec<Entry>, u16)> = vec![
        (vec![file("/etc/pwned")], 400),
        (vec![file("{outer}/outside/pwned")], 400),
        (vec![file("../../outside/pwned")], 400),
        (vec![file("a/../../../outside/pwned")], 400),
        (vec![file("ok"), file("../pwned")], 400),
        // Place a symlink, then write through it.
        (
            vec![
                ("link", Symlink, "{outer}/outside", b""),
                file("link/pwned"),
            ],
            403,
        ),
        (
            vec![("link", Symlink, "../../outside", b""), file("link/pwned")],
            403,
        ),
        (
            vec![("link", Symlink, "/etc", b""), file("link/passwd")],
            403,
        ),
        (vec![("link", Symlink, ".", b""), file("link/x")], 403),
        (
            vec![
                ("link", Symlink, "{outer}/outside", b""),
                ("link/d", Directory, "", b""),
            ],
            403,
        ),
        (
            vec![
                ("link", Symlink, "{outer}/outside", b""),
                ("link/l", Symlink, "x", b""),
            ],
            403,
        ),
        // Symlinks already there are not followed either.
        (vec![file("out/pwned")], 403),
        (vec![file("rel_out/secret.txt")], 403),
        (vec![file("in_dir/x")], 403),
        // Hard links may only point at files extracted here.
        (vec![("h", Link, "/etc/passwd", b"")], 400),
        (vec![("h", Link, "{outer}/outside/secret.txt", b"")], 400),
        (vec![("h", Link, "../../outside/secret.txt", b"")], 400),
        (vec![("h", Link, "out/secret.txt", b"")], 403),
        (
            vec![
                ("l", Symlink, "{outer}/outside", b""),
                ("h", Link, "l/secret.txt", b""),
            ],
            403,
        ),
        (vec![("h", Link, "secret_link", b"")], 400),
        (vec![("h", Link, "sub", b"")], 400),
        // A file entry replaces an existing symlink instead of writing through it.
        (
            vec![file("secret_link"), file("dangling_out"), file("out")],
            0,
        ),
        // Links are stored as they are, never followed on the way in.
        (vec![("l2", Symlink, "/etc/shadow", b"")], 0),
        // Hard links inside are fine.
        (vec![file("orig"), ("h", Link, "orig", b"")], 0),
        // Devices and FIFOs are skipped.
        (vec![("dev", Char, "", b""), ("fifo", Fifo, "", b"")], 0),
    ];
    for (entries, want) in cases {
        let f = fixture();
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, link, data) in &entries {
            raw_entry(&mut b, &f.path(name), *kind, &f.path(link), data, 0o644);
        }
        let tar = b.into_inner().unwrap();
        let before = f.outside_state();
        let got = f.root.extract_archive("proj", None, &tar[..], None);
        let status = got.as_ref().err().map_or(0, FileError::status);
        assert_eq!(status, want, "{entries:?}: {got:?}");
        assert_eq!(f.outside_state(), before, "{entries:?} changed the outside");
        assert!(!Path::new("/etc/pwned").exists());
        let proj = f.ws.join("proj");
        if want == 0 {
            for (name, kind, _, _) in &entries {
                let m = fs::symlink_metadata(proj.join(name));
                match kind {
                    Char | Fifo => assert!(m.is_err(), "{name} was created"),
                    Symlink => assert!(m.unwrap().is_symlink(), "{name}"),
                    _ => assert!(m.unwrap().is_file(), "{name}"),
                }
            }
        }
    }
}

#[test]
fn extraction_drops_set_id_bits_and_keeps_modes() {
    let f = fixture();
    let mut b = tar::Builder::new(Vec::new());
    raw_entry(&mut b, "suid", tar::EntryType::Regular, "", b"x", 0o4755);
    raw_entry(&mut b, "ro", tar::EntryType::Directory, "", b"", 0o555);
    raw_entry(
        &mut b,
        "ro/inside",
        tar::EntryType::Regular,
        "",
        b"y",
        0o600,
    );
    raw_entry(
        &mut b,
        "implicit/parent/f",
        tar::EntryType::Regular,
        "",
        b"z",
        0o640,
    );
    let tar = b.into_inner().unwrap();
    assert_eq!(
        f.root
            .extract_archive("proj", None, &tar[..], None)
            .unwrap(),
        4
    );
    let mode = |p: &str| fs::metadata(f.ws.join("proj").join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("suid"), 0o755);
    assert_eq!(mode("ro"), 0o555);
    assert_eq!(mode("ro/inside"), 0o600);
    assert_eq!(mode("implicit/parent"), 0o755);
    assert_eq!(mode("implicit/parent/f"), 0o640);
    assert_eq!(
        fs::metadata(f.ws.join("proj/ro")).unwrap().mtime(),
        1_600_000_000
    );

    // A corrupt archive is the client's fault.
    let err = f
        .root
        .extract_archive("proj", None, &[1u8; 1024][..], None)
        .unwrap_err();
    assert_eq!(err.status(), 400, "{err}");
    // So is a truncated one.
    let mut b = tar::Builder::new(Vec::new());
    raw_entry(
        &mut b,
        "big",
        tar::EntryType::Regular,
        "",
        &[7u8; 10_000],
        0o644,
    );
    let tar = b.into_inner().unwrap();
    let err = f
        .root
        .extract_archive("proj", None, &tar[..2000], None)
        .unwrap_err();
    assert_eq!(err.status(), 400, "{err}");
    // The destination must exist.
    let err = f
        .root
        .extract_archive("proj/nope", None, &small_tar()[..], None)
        .unwrap_err();
    assert_eq!(err.status(), 404);
}
