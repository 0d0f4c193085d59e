//! Every relative link in the guide (`docs/**/*.md`) and in the README resolves: the file or
//! directory exists, and a `#fragment` names a heading of the target (GitHub's anchors).
//! External links (`http://`, `https://`, `mailto:`) are not fetched: CI has no internet.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// The markdown files checked: the README and everything under `docs/`.
fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("read docs/")
            .map(|e| e.expect("a directory entry").path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut files = vec![root().join("README.md")];
    walk(&root().join("docs"), &mut files);
    files
}

/// The text outside fenced code blocks and inline code spans, line by line (1-based numbers).
fn prose(text: &str) -> Vec<(usize, String)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Drop inline code: text between pairs of backticks.
        let mut kept = String::new();
        for (j, part) in line.split('`').enumerate() {
            if j % 2 == 0 {
                kept.push_str(part);
            }
        }
        out.push((i + 1, kept));
    }
    out
}

/// The link targets of a line: inline `[text](target)` and reference `[label]: target`.
fn targets(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let trimmed = line.trim_start();
    if let Some(rest) = trimmed.strip_prefix('[') {
        if let Some((_, target)) = rest.split_once("]: ") {
            found.push(target.split_whitespace().next().unwrap_or("").to_owned());
        }
    }
    let mut rest = line;
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let Some(end) = after.find(')') else { break };
        let target = after[..end].split_whitespace().next().unwrap_or("");
        found.push(target.to_owned());
        rest = &after[end..];
    }
    found
}

/// GitHub's anchor of a heading: lower case, spaces to `-`, punctuation other than `-` and
/// `_` dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a markdown file's headings (repeats get `-1`, `-2`, ... as on GitHub).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        if fenced {
            continue;
        }
        let heading = heading.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let heading: String = heading.split('`').collect();
        let base = slug(&heading);
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

/// What is wrong with `target` as a link from `file`, if anything.
fn check(file: &Path, target: &str) -> Option<String> {
    if target.is_empty() {
        return Some("empty link".to_owned());
    }
    if ["http://", "https://", "mailto:"]
        .iter()
        .any(|p| target.starts_with(p))
    {
        return None;
    }
    let (path, fragment) = match target.split_once('#') {
        Some((p, f)) => (p, Some(f)),
        None => (target, None),
    };
    let resolved = if path.is_empty() {
        file.to_path_buf()
    } else {
        file.parent().expect("a file's directory").join(path)
    };
    if !resolved.exists() {
        return Some(format!("{} does not exist", resolved.display()));
    }
    let fragment = fragment?;
    if resolved.extension().is_none_or(|e| e != "md") {
        return Some(format!("#{fragment} on a file that is not markdown"));
    }
    let text = std::fs::read_to_string(&resolved).expect("read the link's target");
    (!anchors(&text).contains(fragment)).then(|| {
        format!(
            "{} has no heading with anchor #{fragment}",
            resolved.display()
        )
    })
}

#[test]
fn every_relative_link_and_anchor_in_the_readme_and_the_guide_resolves() {
    let files = markdown_files();
    assert!(
        files.len() > 5,
        "the guide's chapters were not found: {files:?}"
    );
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read a markdown file");
        for (line, prose) in prose(&text) {
            for target in targets(&prose) {
                checked += 1;
                if let Some(why) = check(file, &target) {
                    broken.push(format!("{}:{line}: ({target}): {why}", file.display()));
                }
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} links found: is the parser broken?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_checker_finds_what_it_must() {
    assert_eq!(slug("Stream semantics"), "stream-semantics");
    assert_eq!(
        slug("TLS, keepalive: tracing & metrics"),
        "tls-keepalive-tracing--metrics"
    );
    assert_eq!(
        targets("see [a](x.md#y) and [b](../z/) or [c]: d.md"),
        ["x.md#y", "../z/"]
    );
    assert_eq!(targets("[c]: d.md \"title\""), ["d.md"]);
    let text = "# A b\n## A b\n```\n# not a heading\n```\n### `Code` here\n";
    let want: BTreeSet<String> = ["a-b", "a-b-1", "code-here"].map(String::from).into();
    assert_eq!(anchors(text), want);
    let me = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/links.rs");
    assert!(check(&me, "missing.md").is_some());
    assert!(check(&me, "links.rs").is_none());
    assert!(check(&me, "https://example.com").is_none());
    let readme = root().join("README.md");
    assert!(check(&readme, "#no-such-heading-anywhere").is_some());
}
