//! The documentation a newcomer reads: the README stays short (≤ 250 lines, no
//! placeholder), links every page under `docs/`, and every relative link in
//! the README, `CHANGELOG.md` and `docs/*.md` leads to a file or directory
//! of the repository and, for a `#fragment` into a Markdown file, to one of
//! its headings (GitHub's anchors: lower case, punctuation dropped, spaces
//! to hyphens, `-1`, `-2` … for repeats).
//!
//! Reads files only: no network, no build products.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The README's budget (issue 26): what an admin deciding whether to try
/// the sidecar reads; the rest lives under `docs/`.
const README_MAX_LINES: usize = 250;

/// Pages being written on another branch, linked ahead of their merge: a
/// link to one may dangle until it lands. Once the file exists its links
/// and anchors are checked like any other; delete the entry then.
const PENDING: &[&str] = &[];

/// The Markdown files checked: README.md, CHANGELOG.md and docs/*.md,
/// relative to the repository root, sorted.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![PathBuf::from("README.md"), PathBuf::from("CHANGELOG.md")];
    let docs = Path::new(ROOT).join("docs");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&docs)
        .unwrap_or_else(|e| panic!("read {}: {e}", docs.display()))
        .map(|entry| entry.expect("a docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .map(|p| Path::new("docs").join(p.file_name().expect("a file name")))
        .collect();
    found.sort();
    pages.extend(found);
    pages
}

fn read(page: &Path) -> String {
    let path = Path::new(ROOT).join(page);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The lines outside fenced code blocks (```), with their 1-based numbers.
fn prose(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push((i + 1, line));
        }
    }
    out
}

/// A line without its inline code spans (`...`), where brackets are text.
fn without_code(line: &str) -> String {
    let mut out = String::new();
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
        } else if !in_code {
            out.push(c);
        }
    }
    out
}

/// The targets of the inline links and images on a line: `[text](target)`.
fn links(line: &str) -> Vec<String> {
    let line = without_code(line);
    let mut out = Vec::new();
    let mut rest = line.as_str();
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let Some(end) = after.find(')') else { break };
        out.push(after[..end].trim().to_owned());
        rest = &after[end..];
    }
    out
}

/// GitHub's anchor for a heading's text.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every anchor a Markdown file's headings make, repeats numbered as GitHub does.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for (_, line) in prose(text) {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if hashes == 0 || hashes > 6 || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(&line[hashes..]);
        let mut anchor = base.clone();
        let mut n = 0;
        while seen.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        seen.insert(anchor);
    }
    seen
}

/// `a/b/../c` → `a/c`, without touching the file system.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// What is wrong with one link of `page` (relative to the root), if anything.
fn check(page: &Path, target: &str) -> Option<String> {
    if target.contains("://") || target.starts_with("mailto:") {
        return None;
    }
    let (file, fragment) = match target.split_once('#') {
        Some((file, fragment)) => (file, Some(fragment)),
        None => (target, None),
    };
    let linked = if file.is_empty() {
        page.to_path_buf()
    } else {
        normalise(&page.parent().unwrap_or(Path::new("")).join(file))
    };
    let on_disk = Path::new(ROOT).join(&linked);
    if !on_disk.exists() {
        if PENDING.iter().any(|p| Path::new(p) == linked) {
            return None;
        }
        return Some(format!("{target}: no {}", linked.display()));
    }
    let fragment = fragment?;
    if linked.extension().is_none_or(|x| x != "md") {
        return Some(format!(
            "{target}: a #fragment into a file that is not Markdown"
        ));
    }
    let known = anchors(&read(&linked));
    (!known.contains(fragment)).then(|| {
        format!(
            "{target}: {} has no heading with the anchor #{fragment} (it has: {})",
            linked.display(),
            known.into_iter().collect::<Vec<_>>().join(", ")
        )
    })
}

#[test]
fn the_readme_is_at_most_250_lines_and_has_no_placeholder() {
    let readme = read(Path::new("README.md"));
    let lines = readme.lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines, more than {README_MAX_LINES}: move detail to docs/"
    );
    for (n, line) in readme.lines().enumerate() {
        for word in ["TODO", "FIXME", "TBD", "XXX"] {
            assert!(
                !line.contains(word),
                "README.md:{}: a placeholder ({word}): {line}",
                n + 1
            );
        }
    }
}

#[test]
fn the_readme_links_every_page_under_docs() {
    let readme = read(Path::new("README.md"));
    let linked: BTreeSet<String> = prose(&readme)
        .into_iter()
        .flat_map(|(_, line)| links(line))
        .map(|t| t.split('#').next().unwrap_or_default().to_owned())
        .collect();
    let missing: Vec<String> = pages()
        .into_iter()
        .filter(|p| p.starts_with("docs"))
        .map(|p| p.display().to_string())
        .filter(|p| !linked.contains(p))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md links no {missing:?}: a reader would not find them"
    );
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = read(&page);
        for (n, line) in prose(&text) {
            for target in links(line) {
                checked += 1;
                if let Some(why) = check(&page, &target) {
                    broken.push(format!("{}:{n}: {why}", page.display()));
                }
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} links found: is the parser broken?"
    );
    assert!(
        broken.is_empty(),
        "{} broken links:\n{}",
        broken.len(),
        broken.join("\n")
    );
}

#[test]
fn anchors_are_githubs() {
    let text = "# A\n## 3. Install and start the unit\n```\n## not a heading\n```\n\
                ## Packages (.deb and .rpm)\n## Watching it: `demo`\n## A\n## Every Salt release from 2019.2 to 3008\n";
    let got = anchors(text);
    let want: BTreeSet<String> = [
        "a",
        "3-install-and-start-the-unit",
        "packages-deb-and-rpm",
        "watching-it-demo",
        "a-1",
        "every-salt-release-from-20192-to-3008",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(got, want);
    assert_eq!(
        links("see [x](a.md#b), `[not](a link)` and ![img](../c.svg)"),
        ["a.md#b", "../c.svg"]
    );
}
