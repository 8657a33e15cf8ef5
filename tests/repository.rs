//! The repository carries its own documentation: no doc or code comment may send a reader to a
//! file outside it, and every relative link between its files must lead somewhere.

use std::path::{Component, Path, PathBuf};
use std::process::Command;

/// Names of the documents the project started from, which live outside the repository. Each
/// is spelled in two pieces, so that this file names none of them itself.
fn outside_names() -> Vec<String> {
    [
        ("SPEC", " §"),
        ("SPEC", ".md"),
        ("STYLE", ".md"),
        ("../", "shared"),
        ("shared", "/SPEC"),
    ]
    .iter()
    .map(|(head, tail)| format!("{head}{tail}"))
    .collect()
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every tracked text file of the repository, except third-party lock files and fuzz corpora.
fn tracked_text_files() -> Vec<PathBuf> {
    let listed = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root())
        .output()
        .expect("git ls-files runs (the tests run in a git checkout)");
    assert!(listed.status.success(), "git ls-files failed");
    listed
        .stdout
        .split(|byte| *byte == 0)
        .filter(|name| !name.is_empty())
        .map(|name| PathBuf::from(String::from_utf8_lossy(name).into_owned()))
        .filter(|path| {
            let text = path.to_string_lossy();
            !text.starts_with("fuzz/corpus/")
                && !text.ends_with(".lock")
                && !text.ends_with("package-lock.json")
                && !text.ends_with(".png")
        })
        .filter(|path| std::fs::read_to_string(root().join(path)).is_ok())
        .collect()
}

#[test]
fn no_file_refers_to_a_document_outside_the_repository() {
    let outside = outside_names();
    let mut found = Vec::new();
    for path in tracked_text_files() {
        let text = std::fs::read_to_string(root().join(&path)).expect("read");
        for (number, line) in text.lines().enumerate() {
            if let Some(name) = outside.iter().find(|name| line.contains(name.as_str())) {
                found.push(format!("{}:{}: {name}", path.display(), number + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "references outside the repository:\n{}",
        found.join("\n")
    );
}

/// The relative targets of Markdown links `[text](target)` in `text`.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("](") {
        let after = &rest[start + 2..];
        let Some(end) = after.find(')') else { break };
        let target = after[..end].split('#').next().unwrap_or("").trim();
        let external = target.contains("://") || target.starts_with("mailto:");
        if !target.is_empty() && !external && !target.contains(' ') {
            targets.push(target.to_owned());
        }
        rest = &after[end..];
    }
    targets
}

/// `path` with `.` and `..` resolved lexically; `None` if it climbs above its start.
fn normalise(path: &Path) -> Option<PathBuf> {
    let mut parts: Vec<Component> = Vec::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.iter().collect())
}

#[test]
fn every_relative_markdown_link_stays_inside_the_repository_and_leads_somewhere() {
    let mut broken = Vec::new();
    for path in tracked_text_files() {
        if path.extension().is_none_or(|ext| ext != "md") {
            continue;
        }
        let text = std::fs::read_to_string(root().join(&path)).expect("read");
        let dir = path.parent().unwrap_or(Path::new(""));
        for target in link_targets(&text) {
            match normalise(&dir.join(&target)) {
                None => broken.push(format!(
                    "{}: {target} leaves the repository",
                    path.display()
                )),
                Some(resolved) if !root().join(&resolved).exists() => {
                    broken.push(format!("{}: {target} does not exist", path.display()))
                }
                Some(_) => {}
            }
        }
    }
    assert!(broken.is_empty(), "bad links:\n{}", broken.join("\n"));
}
