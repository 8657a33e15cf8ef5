//! The crate's plan matches its pipeline: no source file of `src/` depends, through its
//! imports, on a file that depends back on it. Data flows one way (request → token → socket;
//! change → match → recompute → push), so a cycle means two concepts leaning on each other,
//! which makes both harder to read and to change.
//!
//! Edges are read from the code as text: every `crate::…`, `super::…` and child-module path in
//! a file (outside its `#[cfg(test)]` part) names the file of the module it reaches. A parent
//! declaring `mod child;` is not an edge; using the child's items is.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every module of the library and its file (`main.rs`, the binary, is not part of it).
fn modules() -> BTreeMap<Module, PathBuf> {
    let mut found = BTreeMap::new();
    collect(&src(), &mut Vec::new(), &mut found);
    found
}

fn collect(dir: &Path, prefix: &mut Module, found: &mut BTreeMap<Module, PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read src")
        .map(|entry| entry.expect("entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if path.is_dir() {
            prefix.push(name);
            collect(&path, prefix, found);
            prefix.pop();
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let module = match name.as_str() {
                "lib" if prefix.is_empty() => Vec::new(),
                "main" if prefix.is_empty() => continue,
                "mod" => prefix.clone(),
                _ => prefix.iter().cloned().chain([name]).collect(),
            };
            found.insert(module, path);
        }
    }
}

/// The code of a file without its comments and its test code: a `#[cfg(test)] mod tests;`
/// declaration is dropped where it stands (the code after it still counts), an inline
/// `#[cfg(test)]` item ends the file's code.
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read source");
    let text = without_test_code(&text);
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn without_test_code(text: &str) -> String {
    const MARK: &str = "#[cfg(test)]";
    let mut kept = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(MARK) {
        kept.push_str(&rest[..at]);
        let after = &rest[at + MARK.len()..];
        let item = after.trim_start();
        let declaration = item.starts_with("mod ")
            && item
                .find(';')
                .is_some_and(|semi| item.find('{').is_none_or(|brace| semi < brace));
        if !declaration {
            return kept;
        }
        let semi = after.find(';').map_or(after.len(), |semi| semi + 1);
        rest = &after[semi..];
    }
    kept.push_str(rest);
    kept
}

/// The paths a piece of code names: each `crate::`, `super::` or `child::` path, expanded
/// through `{…}` groups, as module-relative segment lists (`["crate", "hub", "Hub"]`).
fn paths(code: &str, children: &BTreeSet<String>) -> Vec<Vec<String>> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let boundary = i == 0
            || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_' || chars[i - 1] == ':');
        if boundary && (chars[i].is_alphabetic() || chars[i] == '_') {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let rooted = word == "crate" || word == "super" || children.contains(&word);
            if rooted && chars.get(i) == Some(&':') && chars.get(i + 1) == Some(&':') {
                let (tree, end) = use_tree(&chars, i + 2);
                for mut tail in tree {
                    tail.insert(0, word.clone());
                    out.push(tail);
                }
                i = end;
            }
            continue;
        }
        i += 1;
    }
    out
}

/// Reads a path tail (`a::b::{c, d::e}`) from `start`; returns its expansions and the end.
fn use_tree(chars: &[char], mut i: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    loop {
        while chars.get(i).is_some_and(|c| c.is_whitespace()) {
            i += 1;
        }
        if chars.get(i) == Some(&'{') {
            let mut all = Vec::new();
            i += 1;
            loop {
                while chars.get(i).is_some_and(|c| c.is_whitespace() || *c == ',') {
                    i += 1;
                }
                match chars.get(i) {
                    None => return (all, i),
                    Some('}') => return (all, i + 1),
                    _ => {}
                }
                let (inner, end) = use_tree(chars, i);
                for tail in inner {
                    all.push(prefix.iter().cloned().chain(tail).collect());
                }
                if end == i {
                    i += 1;
                } else {
                    i = end;
                }
            }
        }
        let start = i;
        while chars
            .get(i)
            .is_some_and(|c| c.is_alphanumeric() || *c == '_' || *c == '*')
        {
            i += 1;
        }
        if start == i {
            return (vec![prefix], i);
        }
        prefix.push(chars[start..i].iter().collect());
        if chars.get(i) == Some(&':') && chars.get(i + 1) == Some(&':') {
            i += 2;
        } else {
            return (vec![prefix], i);
        }
    }
}

/// The module a path reaches from `here`: the longest known module its segments name.
fn target(here: &Module, path: &[String], known: &BTreeMap<Module, PathBuf>) -> Option<Module> {
    let mut base: Module = here.clone();
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &path[1..];
        }
        Some("super") => {
            while rest.first().map(String::as_str) == Some("super") {
                base.pop()?;
                rest = &rest[1..];
            }
        }
        _ => {}
    }
    let mut best = None;
    let mut candidate = base.clone();
    if known.contains_key(&candidate) {
        best = Some(candidate.clone());
    }
    for segment in rest {
        candidate.push(segment.clone());
        if known.contains_key(&candidate) {
            best = Some(candidate.clone());
        } else {
            break;
        }
    }
    best
}

fn edges(known: &BTreeMap<Module, PathBuf>) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut graph = BTreeMap::new();
    for (module, path) in known {
        let children: BTreeSet<String> = known
            .keys()
            .filter(|other| other.len() == module.len() + 1 && other.starts_with(module))
            .filter_map(|child| child.last().cloned())
            .collect();
        let mut reached = BTreeSet::new();
        for path in paths(&code_of(path), &children) {
            if let Some(to) = target(module, &path, known) {
                if &to != module {
                    reached.insert(to);
                }
            }
        }
        graph.insert(module.clone(), reached);
    }
    graph
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct State<'a> {
        graph: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on_stack: BTreeSet<&'a Module>,
        next: usize,
        found: Vec<Vec<Module>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Module) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v) {
            visit(&mut state, v);
        }
    }
    state.found
}

fn name(module: &Module) -> String {
    if module.is_empty() {
        "crate".to_owned()
    } else {
        module.join("::")
    }
}

#[test]
fn no_module_depends_on_a_module_that_depends_back_on_it() {
    let known = modules();
    let graph = edges(&known);
    let found = cycles(&graph);
    let described: Vec<String> = found
        .iter()
        .map(|component| {
            let members: BTreeSet<&Module> = component.iter().collect();
            let mut lines = vec![format!(
                "cycle: {}",
                component.iter().map(name).collect::<Vec<_>>().join(", ")
            )];
            for from in component {
                for to in graph[from].iter().filter(|to| members.contains(to)) {
                    lines.push(format!("  {} -> {}", name(from), name(to)));
                }
            }
            lines.join("\n")
        })
        .collect();
    assert!(described.is_empty(), "{}", described.join("\n"));
}

#[test]
fn the_checker_finds_a_cycle_when_there_is_one() {
    // Guards the checker itself: two modules naming each other, and a third naming one.
    let a: Module = vec!["a".into()];
    let b: Module = vec!["b".into()];
    let c: Module = vec!["c".into()];
    let known: BTreeMap<Module, PathBuf> = [
        (a.clone(), PathBuf::new()),
        (b.clone(), PathBuf::new()),
        (c.clone(), PathBuf::new()),
    ]
    .into_iter()
    .collect();
    let parsed = paths(
        "use crate::{b::Thing, c};\nfn f() { super::a::x(); }",
        &BTreeSet::new(),
    );
    let targets: BTreeSet<Module> = parsed
        .iter()
        .filter_map(|path| target(&a, path, &known))
        .collect();
    assert!(targets.contains(&b) && targets.contains(&c), "{parsed:?}");
    let graph: BTreeMap<Module, BTreeSet<Module>> = [
        (a.clone(), [b.clone()].into()),
        (b.clone(), [a.clone()].into()),
        (c.clone(), [a.clone()].into()),
    ]
    .into_iter()
    .collect();
    assert_eq!(cycles(&graph).len(), 1);
}

/// A `#[cfg(test)] mod tests;` near the top of a file (as in most `mod.rs`) must not hide the
/// code after it from the check, while an inline test module is left out.
#[test]
fn only_test_code_is_left_out_of_a_file() {
    let file = "mod a;\n#[cfg(test)]\nmod tests;\nuse super::x;\n#[cfg(test)]\nmod inline {\n    use crate::y;\n}\n";
    let code = without_test_code(file);
    assert!(code.contains("use super::x;"), "{code}");
    assert!(!code.contains("mod tests;"), "{code}");
    assert!(!code.contains("crate::y"), "{code}");
}

/// The same graph seen from the top: each edge between files of two different top-level
/// modules (`hub::fanout -> registry::query` counts as `hub -> registry`).
fn top_level(graph: &BTreeMap<Module, BTreeSet<Module>>) -> BTreeMap<Module, BTreeSet<Module>> {
    let top = |module: &Module| module.iter().take(1).cloned().collect::<Module>();
    let mut collapsed: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (from, targets) in graph {
        let entry = collapsed.entry(top(from)).or_default();
        for to in targets {
            if top(to) != top(from) && !top(to).is_empty() {
                entry.insert(top(to));
            }
        }
    }
    collapsed
}

#[test]
fn top_level_modules_form_no_cycle_either() {
    let graph = top_level(&edges(&modules()));
    let described: Vec<String> = cycles(&graph)
        .iter()
        .map(|component| {
            let members: BTreeSet<&Module> = component.iter().collect();
            let mut lines = vec![format!(
                "cycle: {}",
                component.iter().map(name).collect::<Vec<_>>().join(", ")
            )];
            for from in component {
                for to in graph[from].iter().filter(|to| members.contains(to)) {
                    lines.push(format!("  {} -> {}", name(from), name(to)));
                }
            }
            lines.join("\n")
        })
        .collect();
    assert!(described.is_empty(), "{}", described.join("\n"));
}
