//! A workspace's changes: one collapsible block per file, lines colored by kind.

use claude_vm_protocol::api::{Diff, FileChange, PatchLine, PatchReader};
use maud::{Markup, html};

/// Lines shown per file; the rest is summarised (`claude-vm diff` shows it all).
const MAX_LINES: usize = 4000;

/// The patch cut at each `diff --git` header.
fn chunks(patch: &str) -> Vec<&str> {
    let mut starts: Vec<usize> = Vec::new();
    let mut pos = 0;
    for line in patch.split_inclusive('\n') {
        if line.starts_with("diff --git ") {
            starts.push(pos);
        }
        pos += line.len();
    }
    starts
        .iter()
        .enumerate()
        .map(|(i, &s)| &patch[s..starts.get(i + 1).copied().unwrap_or(patch.len())])
        .collect()
}

/// Whether a chunk's header names this file (git quotes unusual names: then compare
/// loosely, since the index and the file list come from the same diff run).
fn names(chunk: &str, f: &FileChange) -> bool {
    let header = chunk.lines().next().unwrap_or("");
    header.ends_with(&format!(" b/{}", f.path)) || header.ends_with(&format!(" \"b/{}\"", f.path))
}

fn line_class(reader: &mut PatchReader, line: &str) -> &'static str {
    match reader.line(line) {
        PatchLine::Header => "meta",
        PatchLine::Hunk => "hunk",
        PatchLine::Added => "add",
        PatchLine::Removed => "del",
        PatchLine::Context => "ctx",
    }
}

fn patch_lines(chunk: &str) -> Markup {
    let total = chunk.lines().count();
    let mut reader = PatchReader::new();
    html! {
        pre.diff {
            @for line in chunk.lines().take(MAX_LINES) {
                span class={"l " (line_class(&mut reader, line))} { (line) "\n" }
            }
            @if total > MAX_LINES {
                span.l.meta { "… " (total - MAX_LINES) " more lines (see " code { "claude-vm diff" } ")\n" }
            }
        }
    }
}

pub fn render(d: &Diff) -> Markup {
    let chunks = chunks(&d.patch);
    let mut used = vec![false; chunks.len()];
    let mut rows = Vec::new();
    for (i, f) in d.files.iter().enumerate() {
        // Usually the chunks come in the order of the files.
        let found = chunks
            .iter()
            .enumerate()
            .find(|(j, c)| !used[*j] && names(c, f))
            .map(|(j, _)| j)
            .or_else(|| (i < chunks.len() && !used[i]).then_some(i));
        if let Some(j) = found {
            used[j] = true;
        }
        rows.push((f, found.map(|j| chunks[j])));
    }
    html! {
        @if d.files.is_empty() {
            p.muted { "No changes." }
        } @else {
            p.meta {
                (d.files.len()) @if d.files.len() == 1 { " file" } @else { " files" } " changed"
                @if let Some(b) = &d.branch { " on " span.branch { "⎇ " (b) } }
            }
            @for (f, chunk) in rows {
                details.file data-path=(f.path) {
                    summary {
                        span.path { (f.path) }
                        @if let Some(old) = &f.old_path { span.muted { " (from " (old) ")" } }
                        " "
                        span class={"badge ch-" (f.change.label().replace(' ', "-"))} { (f.change.label()) }
                        @if f.binary {
                            " " span.muted { "binary" }
                        } @else {
                            " " span.plus { "+" (f.additions.unwrap_or(0)) }
                            " " span.minus { "−" (f.deletions.unwrap_or(0)) }
                        }
                    }
                    @match chunk {
                        Some(c) => (patch_lines(c)),
                        None => p.muted { "No textual diff." },
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use claude_vm_protocol::api::ChangeKind;

    fn change(path: &str, change: ChangeKind) -> FileChange {
        FileChange {
            path: path.into(),
            old_path: None,
            change,
            additions: Some(1),
            deletions: Some(0),
            binary: false,
        }
    }

    #[test]
    fn patches_are_split_per_file_and_escaped() {
        let patch = "diff --git a/a.txt b/a.txt\nindex 1..2\n--- a/a.txt\n+++ b/a.txt\n@@ -1 +1 @@\n-old\n+<script>x</script>\ndiff --git a/new file.md b/new file.md\nnew file mode 100644\n+hi\n";
        let d = Diff {
            project_dir: "/workspace/p".into(),
            branch: Some("main".into()),
            head: None,
            files: vec![
                change("new file.md", ChangeKind::Untracked),
                change("a.txt", ChangeKind::Modified),
            ],
            patch: patch.into(),
        };
        let html = render(&d).into_string();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        // Each file got its own chunk, even out of order.
        let a = html.find("data-path=\"a.txt\"").unwrap();
        let new = html.find("data-path=\"new file.md\"").unwrap();
        assert!(new < a);
        assert!(html[new..a].contains("new file mode"), "{html}");
        assert!(html[a..].contains("<span class=\"l del\">-old"), "{html}");
        assert!(html[a..].contains("<span class=\"l hunk\">@@"), "{html}");
        assert_eq!(chunks(patch).len(), 2);
    }
}
