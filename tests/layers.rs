//! The layers of the crate, checked on its source: a module may import only modules of a
//! lower layer (or its own module's parts), and no two modules import each other, however
//! far round. The layers are stated once, here and in docs/how-it-works.md ("Layers").
//!
//! Imports are read from the source text: every `use` tree and every `crate::`, `super::`
//! and `self::` path, resolved to the module it names (through the re-exports of a module's
//! `pub use` lines), comments left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lowest first. A module belongs to the longest prefix listed; `""` is the crate root
/// alone, so a new module must be given its layer here before the checks pass.
const LAYERS: &[(&str, &[&str])] = &[
    ("foundation", &["error", "exit"]),
    ("plan", &["plan"]),
    ("protocol", &["haproxy::proto", "haproxy::view"]),
    ("engine", &["engine"]),
    (
        "world",
        &[
            "haproxy",
            "haproxy::client",
            "ssh",
            "local",
            "health",
            "journal",
            "lock",
            "state",
        ],
    ),
    ("effects", &["effects"]),
    ("driver", &["driver"]),
    ("report", &["report"]),
    ("cli", &["cli"]),
    ("commands", &["commands"]),
    ("root", &[""]),
];

#[test]
fn no_module_imports_a_higher_layer() {
    let crate_ = Crate::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let mut wrong = Vec::new();
    for (module, imports) in &crate_.imports {
        let (from_rank, from_layer) = layer_of(module);
        for target in imports {
            let (to_rank, to_layer) = layer_of(target);
            let own = is_within(target, module) || is_within(module, target);
            if to_rank > from_rank && !own {
                wrong.push(format!(
                    "{} ({from_layer}) imports {} ({to_layer})",
                    shown(module),
                    shown(target)
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn no_two_modules_import_each_other() {
    let crate_ = Crate::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    // A module and its own submodules are one unit: `use super::*` in a child is the
    // child's business. Circles between units are what a reader cannot untangle.
    let unit_graph = crate_.unit_graph();
    let circles: Vec<String> = strongly_connected(&unit_graph)
        .into_iter()
        .filter(|component| component.len() > 1)
        .map(|component| {
            component
                .iter()
                .map(|unit| shown(unit))
                .collect::<Vec<_>>()
                .join(" ⇄ ")
        })
        .collect();
    assert!(
        circles.is_empty(),
        "modules that import each other:\n  {}",
        circles.join("\n  ")
    );
}

#[test]
fn the_check_sees_imports_of_every_kind() {
    // The reader must not miss the forms the crate uses, or the checks above prove nothing.
    let crate_ = Crate::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let imports = |module: &str| crate_.imports.get(module).cloned().unwrap_or_default();
    // `use crate::{a, b::{c}}` trees, resolved through `pub use` re-exports.
    assert!(
        imports("driver").contains("haproxy::proto"),
        "{:?}",
        imports("driver")
    );
    // `super::` paths.
    assert!(imports("engine::preflight").contains("engine::capacity"));
    // inline `crate::` paths in code.
    assert!(
        imports("effects").contains("ssh"),
        "{:?}",
        imports("effects")
    );
    // a higher layer is recognised as higher.
    assert!(layer_of("commands::rollout").0 > layer_of("engine::rollout::server").0);
    assert!(layer_of("haproxy::client").0 > layer_of("engine").0);
    assert!(layer_of("haproxy::proto").0 < layer_of("engine").0);
}

fn layer_of(module: &str) -> (usize, &'static str) {
    let mut best: Option<(usize, usize, &'static str)> = None;
    for (rank, (name, prefixes)) in LAYERS.iter().enumerate() {
        for prefix in *prefixes {
            if is_within(module, prefix) && best.is_none_or(|(_, length, _)| prefix.len() >= length)
            {
                best = Some((rank, prefix.len(), name));
            }
        }
    }
    let (rank, _, name) = best.unwrap_or_else(|| panic!("module {module} is in no layer"));
    (rank, name)
}

/// Whether `module` is `ancestor` or inside it.
fn is_within(module: &str, ancestor: &str) -> bool {
    ancestor.is_empty()
        || module == ancestor
        || module
            .strip_prefix(ancestor)
            .is_some_and(|rest| rest.starts_with("::"))
}

fn shown(module: &str) -> String {
    if module.is_empty() {
        "crate root".to_owned()
    } else {
        module.to_owned()
    }
}

struct Crate {
    /// module → the modules it imports (its own name excluded).
    imports: BTreeMap<String, BTreeSet<String>>,
}

impl Crate {
    fn read(src: PathBuf) -> Crate {
        let mut sources = BTreeMap::new();
        for file in rust_files(&src) {
            let module = module_of(&src, &file);
            if module == "main" {
                continue; // the binary: `haproxy_rollout::run()` and nothing else
            }
            let text = without_comments(&std::fs::read_to_string(&file).unwrap());
            sources.insert(module, text);
        }
        let modules: BTreeSet<String> = sources.keys().cloned().collect();
        let reexports: BTreeMap<String, BTreeMap<String, String>> = sources
            .iter()
            .map(|(module, text)| (module.clone(), reexports_of(module, text, &modules)))
            .collect();
        let imports = sources
            .iter()
            .map(|(module, text)| {
                let targets = parts_of(module, text)
                    .into_iter()
                    .flat_map(|(base, part)| {
                        paths_in(part)
                            .into_iter()
                            .filter_map(move |path| absolute(&base, &path))
                    })
                    .map(|path| resolve(&path, &modules, &reexports))
                    .filter(|target| target != module)
                    .collect();
                (module.clone(), targets)
            })
            .collect();
        Crate { imports }
    }

    /// Imports between units: each top-level module, and each child of `engine`, `plan`,
    /// `haproxy` and `report`, whose parts are layers or stages of their own.
    fn unit_graph(&self) -> BTreeMap<String, BTreeSet<String>> {
        let unit = |module: &str| -> String {
            let parts: Vec<&str> = module.split("::").collect();
            let depth = if ["engine", "plan", "haproxy", "report"].contains(&parts[0]) {
                2
            } else {
                1
            };
            parts[..parts.len().min(depth)].join("::")
        };
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (module, targets) in &self.imports {
            let from = unit(module);
            let entry = graph.entry(from.clone()).or_default();
            for target in targets {
                let to = unit(target);
                // A facade's `pub use` of its own parts is not an import of them.
                if to != from && !is_within(&to, &from) {
                    entry.insert(to);
                }
            }
        }
        graph
    }
}

/// A file's text, split where an inline module (`mod tests {`) begins: paths after it are
/// relative to that module, though they count as the file's own imports.
fn parts_of<'t>(module: &str, text: &'t str) -> Vec<(String, &'t str)> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        let inline = trimmed
            .strip_prefix("pub ")
            .unwrap_or(trimmed)
            .strip_prefix("mod ")
            .and_then(|rest| rest.strip_suffix(" {"));
        if let Some(name) = inline {
            let inner = if module.is_empty() {
                name.to_owned()
            } else {
                format!("{module}::{name}")
            };
            return vec![
                (module.to_owned(), &text[..offset]),
                (inner, &text[offset..]),
            ];
        }
        offset += line.len();
    }
    vec![(module.to_owned(), text)]
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
    files
}

/// `src/engine/rollout/server.rs` → `engine::rollout::server`; `src/lib.rs` → ``.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts.join("::")
}

/// The text without `//` comments (doc comments included) and without string literals'
/// contents, so a path named in prose or a message is not taken for an import.
fn without_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    in_string = false;
                    out.push('"');
                }
                '\n' => out.push('\n'),
                _ => {}
            }
            continue;
        }
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                in_string = true;
                out.push('"');
            }
            // A char literal of a quote must not open a string.
            '\'' if chars.peek() == Some(&'"') => {
                out.push('\'');
                out.push(chars.next().unwrap());
            }
            _ => out.push(c),
        }
    }
    out
}

/// Every path the text names: the leaves of each `use` tree, and each `crate::`, `super::`
/// or `self::` path outside them.
fn paths_in(text: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut rest = text;
    let mut outside = String::new();
    while let Some(start) = find_use(rest) {
        outside.push_str(&rest[..start]);
        let after = &rest[start..];
        let keyword = after.find("use ").unwrap() + 4;
        let end = after.find(';').unwrap_or(after.len());
        expand_tree(&after[keyword..end], &mut Vec::new(), &mut paths);
        rest = &after[end..];
    }
    outside.push_str(rest);
    let text = outside;
    for root in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(found) = text[from..].find(root) {
            let at = from + found;
            from = at + root.len();
            let before = text[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let path: String = text[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            paths.push(
                path.split("::")
                    .filter(|part| !part.is_empty())
                    .map(str::to_owned)
                    .collect(),
            );
        }
    }
    paths
}

/// Where the next `use` item starts (`use`, `pub use`, `pub(crate) use` at a line start).
fn find_use(text: &str) -> Option<usize> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let item = trimmed
            .strip_prefix("pub(crate) ")
            .or_else(|| trimmed.strip_prefix("pub(super) "))
            .or_else(|| trimmed.strip_prefix("pub "))
            .unwrap_or(trimmed);
        if item.starts_with("use ") {
            return Some(offset + (line.len() - trimmed.len()));
        }
        offset += line.len();
    }
    None
}

/// `a::{b, c::{d, e as f}}` → `a::b`, `a::c::d`, `a::c::e`.
fn expand_tree(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head: Vec<String> = tree[..open]
            .split("::")
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(str::to_owned)
            .collect();
        let close = tree.rfind('}').unwrap_or(tree.len());
        let inner = &tree[open + 1..close];
        let depth = prefix.len();
        prefix.extend(head);
        for item in split_top_level(inner) {
            expand_tree(item, prefix, out);
        }
        prefix.truncate(depth);
    } else if !tree.is_empty() {
        let path = tree.split(" as ").next().unwrap_or(tree);
        let mut full = prefix.clone();
        full.extend(
            path.split("::")
                .map(str::trim)
                .filter(|part| !part.is_empty())
                .map(str::to_owned),
        );
        out.push(full);
    }
}

fn split_top_level(text: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (index, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    items.push(&text[start..]);
    items
}

/// The path from the crate root, for paths of this crate; `None` for other crates'.
fn absolute(module: &str, path: &[String]) -> Option<Vec<String>> {
    let mut here: Vec<String> = if module.is_empty() {
        Vec::new()
    } else {
        module.split("::").map(str::to_owned).collect()
    };
    let mut parts = path.iter().peekable();
    match parts.peek().map(|part| part.as_str()) {
        Some("crate") => {
            parts.next();
            here.clear();
        }
        Some("super") => {
            while parts.peek().map(|part| part.as_str()) == Some("super") {
                parts.next();
                here.pop();
            }
        }
        Some("self") => {
            parts.next();
        }
        _ => return None,
    }
    here.extend(parts.cloned());
    Some(here)
}

/// The module a path ends in: its longest prefix that is a module, followed through that
/// module's re-exports of its own submodules.
fn resolve(
    path: &[String],
    modules: &BTreeSet<String>,
    reexports: &BTreeMap<String, BTreeMap<String, String>>,
) -> String {
    let mut module = String::new();
    for (length, part) in path.iter().enumerate() {
        let candidate = if module.is_empty() {
            part.clone()
        } else {
            format!("{module}::{part}")
        };
        if modules.contains(&candidate) {
            module = candidate;
            continue;
        }
        if let Some(source) = reexports.get(&module).and_then(|names| names.get(part)) {
            return resolve(
                &[
                    source.split("::").map(str::to_owned).collect::<Vec<_>>(),
                    path[length + 1..].to_vec(),
                ]
                .concat(),
                modules,
                reexports,
            );
        }
        break;
    }
    module
}

/// A module's `pub use` lines of its own submodules: name → the submodule it comes from.
fn reexports_of(module: &str, text: &str, modules: &BTreeSet<String>) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for line in text.lines() {
        let Some(tree) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let mut leaves = Vec::new();
        expand_tree(tree.trim_end_matches(';'), &mut Vec::new(), &mut leaves);
        for leaf in leaves {
            let Some((name, from)) = leaf.split_last() else {
                continue;
            };
            let source = if module.is_empty() {
                from.join("::")
            } else {
                format!("{module}::{}", from.join("::"))
            };
            if modules.contains(&source) && name != "*" {
                names.insert(name.clone(), source);
            }
        }
    }
    names
}

/// Tarjan's strongly connected components.
fn strongly_connected(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        components: Vec<Vec<String>>,
    }
    fn visit<'a>(state: &mut State<'a>, node: &'a str) {
        let number = state.index.len();
        state.index.insert(node, number);
        state.low.insert(node, number);
        state.stack.push(node);
        state.on_stack.insert(node);
        if let Some(targets) = state.graph.get(node) {
            for target in targets {
                let target = target.as_str();
                if !state.index.contains_key(target) {
                    visit(state, target);
                    let low = state.low[node].min(state.low[target]);
                    state.low.insert(node, low);
                } else if state.on_stack.contains(target) {
                    let low = state.low[node].min(state.index[target]);
                    state.low.insert(node, low);
                }
            }
        }
        if state.low[node] == state.index[node] {
            let mut component = Vec::new();
            while let Some(member) = state.stack.pop() {
                state.on_stack.remove(member);
                component.push(member.to_owned());
                if member == node {
                    break;
                }
            }
            state.components.push(component);
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        components: Vec::new(),
    };
    for node in graph.keys() {
        if !state.index.contains_key(node.as_str()) {
            visit(&mut state, node);
        }
    }
    state.components
}
