//! Property tests of what the daemon decodes from the outside: exec frames, paths, and tar
//! archives. 256 cases each in the test command; `PROPTEST_CASES` raises them.
//!
//! - frames: any frames, cut into any chunks, decode back exactly; arbitrary bytes never
//!   panic the decoder and never make it buffer past the frame limit;
//! - paths: whatever path is asked (`..`, absolute, symlinks out of the root, NUL, `//`),
//!   the answer is an error or a place inside the root;
//! - archives: whatever an archive holds (`..`, absolute names, symlinks out of the root and
//!   files written through them, hard links out), unpacking writes nothing outside the root.

use std::path::Path;

use claude_vm_daemon::files::Root;
use claude_vm_protocol::frame::{self, Decoder, Kind};
use proptest::prelude::*;

fn kind() -> impl Strategy<Value = Kind> {
    (0u8..10).prop_map(|b| Kind::from_u8(b).unwrap())
}

proptest! {
    #[test]
    fn frames_cut_anywhere_decode_back_exactly(
        frames in prop::collection::vec((kind(), prop::collection::vec(any::<u8>(), 0..300)), 0..12),
        cuts in prop::collection::vec(1usize..64, 1..20),
    ) {
        let mut wire = Vec::new();
        for (k, p) in &frames {
            wire.extend_from_slice(&frame::encode(*k, p));
        }
        let mut d = Decoder::default();
        let mut got = Vec::new();
        let mut at = 0;
        let mut i = 0;
        while at < wire.len() {
            let n = cuts[i % cuts.len()].min(wire.len() - at);
            d.push(&wire[at..at + n]);
            at += n;
            i += 1;
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        prop_assert_eq!(got, frames);
        prop_assert_eq!(d.pending(), 0);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_frame_decoder(data in prop::collection::vec(any::<u8>(), 0..2048)) {
        let mut d = Decoder::default();
        d.push(&data);
        for _ in 0..data.len() + 1 {
            match d.next_frame() {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        prop_assert!(d.pending() <= data.len());
    }
}

/// A root with a file, a folder, a symlink inside and two leading out, and a sibling folder
/// outside that nothing may reach.
fn fixture() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(root.join("dir/sub")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(root.join("a.txt"), "a").unwrap();
    std::fs::write(outside.join("secret"), "s").unwrap();
    std::os::unix::fs::symlink("dir", root.join("in")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("out")).unwrap();
    std::os::unix::fs::symlink("../outside/secret", root.join("dir/up")).unwrap();
    (dir, root, outside)
}

fn component() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "..", ".", "", "a.txt", "dir", "sub", "in", "out", "up", "new", "%2e%2e", "\u{0}",
        "outside", "secret", "root", "...", "dir/..", "/",
    ])
    .prop_map(str::to_owned)
}

fn path() -> impl Strategy<Value = String> {
    (any::<bool>(), prop::collection::vec(component(), 0..8)).prop_map(|(absolute, parts)| {
        let p = parts.join("/");
        if absolute { format!("/{p}") } else { p }
    })
}

/// `p` lies inside `root` once every symlink it goes through is followed.
fn inside(root: &Path, p: &Path) -> bool {
    // The deepest existing ancestor decides: what does not exist yet would be created in it.
    let mut probe = p.to_path_buf();
    loop {
        if let Ok(c) = std::fs::canonicalize(&probe) {
            return c.starts_with(root);
        }
        if !probe.pop() {
            return false;
        }
    }
}

proptest! {
    #[test]
    fn resolved_paths_never_leave_the_root(p in path(), base in prop::option::of(path())) {
        let (_dir, root, _) = fixture();
        let r = Root::new(&root).unwrap();
        let canonical = std::fs::canonicalize(&root).unwrap();
        if let Ok(found) = r.resolve_follow(&p, base.as_deref()) {
            prop_assert!(inside(&canonical, &found), "{p:?} (base {base:?}) resolved to {}", found.display());
        }
        if let Ok(found) = r.resolve(&p, base.as_deref()) {
            // Not followed in the last component: the root itself, or its parent is inside.
            let parent = found.parent().unwrap_or(&found);
            prop_assert!(
                found == canonical || inside(&canonical, parent),
                "{p:?} resolved to {}",
                found.display()
            );
        }
        // Reads through the same names never reach the secret outside.
        if let Ok((mut f, _)) = r.open_read(&p, base.as_deref()) {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut f, &mut s);
            prop_assert_ne!(s, "s", "{:?} read the file outside the root", p);
        }
    }
}

#[derive(Debug, Clone)]
enum Entry {
    File(String, Vec<u8>),
    Dir(String),
    Symlink(String, String),
    HardLink(String, String),
}

fn name() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            "..", ".", "x", "y", "out", "in", "dir", "up", "secret", "outside", "/", "",
        ]),
        1..5,
    )
    .prop_map(|v| v.join("/"))
}

fn entry() -> impl Strategy<Value = Entry> {
    prop_oneof![
        (name(), prop::collection::vec(any::<u8>(), 0..64)).prop_map(|(n, d)| Entry::File(n, d)),
        name().prop_map(Entry::Dir),
        (
            name(),
            prop::sample::select(vec![
                "../outside",
                "/",
                "../../..",
                "x",
                "dir",
                "../outside/secret"
            ])
        )
            .prop_map(|(n, t)| Entry::Symlink(n, t.to_owned())),
        (
            name(),
            prop::sample::select(vec!["../outside/secret", "/etc/passwd", "x", "a.txt"])
        )
            .prop_map(|(n, t)| Entry::HardLink(n, t.to_owned())),
    ]
}

/// Write a raw name into a header, bypassing the tar crate's own checks (a hostile archive
/// is made by anything, not by this crate).
fn set_raw_name(h: &mut tar::Header, name: &str) {
    let bytes = name.as_bytes();
    let field = &mut h.as_old_mut().name;
    let n = bytes.len().min(field.len());
    field.fill(0);
    field[..n].copy_from_slice(&bytes[..n]);
}

fn set_raw_link(h: &mut tar::Header, target: &str) {
    let bytes = target.as_bytes();
    let field = &mut h.as_old_mut().linkname;
    let n = bytes.len().min(field.len());
    field.fill(0);
    field[..n].copy_from_slice(&bytes[..n]);
}

fn archive(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_old();
        h.set_mode(0o644);
        h.set_mtime(1);
        let data: &[u8] = match e {
            Entry::File(n, d) => {
                set_raw_name(&mut h, n);
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(d.len() as u64);
                d
            }
            Entry::Dir(n) => {
                set_raw_name(&mut h, n);
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                &[]
            }
            Entry::Symlink(n, t) => {
                set_raw_name(&mut h, n);
                set_raw_link(&mut h, t);
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                &[]
            }
            Entry::HardLink(n, t) => {
                set_raw_name(&mut h, n);
                set_raw_link(&mut h, t);
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                &[]
            }
        };
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = std::fs::symlink_metadata(e.path()).unwrap();
        let data = if meta.is_file() {
            std::fs::read(e.path()).unwrap()
        } else {
            Vec::new()
        };
        out.push((e.file_name().to_string_lossy().into_owned(), data));
    }
    out.sort();
    out
}

proptest! {
    #[test]
    fn unpacking_any_archive_writes_nothing_outside_the_root(
        entries in prop::collection::vec(entry(), 1..10),
        dest in prop::sample::select(vec![".", "dir", "in", "out", "dir/sub"]),
    ) {
        let (dir, root, outside) = fixture();
        let before = snapshot(&outside);
        let parent_before = snapshot(dir.path());
        let r = Root::new(&root).unwrap();
        let tar = archive(&entries);
        let _ = r.extract_archive(dest, None, &tar[..], None);
        prop_assert_eq!(snapshot(&outside), before, "{:?} into {}", entries, dest);
        prop_assert_eq!(snapshot(dir.path()), parent_before, "{:?} into {}", entries, dest);
        prop_assert_eq!(std::fs::read_to_string(outside.join("secret")).unwrap(), "s");
    }
}
