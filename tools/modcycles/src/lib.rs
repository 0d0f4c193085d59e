//! Finds import circles among the top-level modules of a crate.
//!
//! Every `.rs` file of the crate is parsed (with `syn`, following `mod` declarations from
//! `lib.rs`, whatever their `cfg`), and every path that names something in the crate —
//! `use crate::…`, `use super::…`, `crate::x::Y` in code, types and macro arguments — becomes an
//! edge from the top-level module the path is written in to the top-level module it names
//! (an item re-exported at the crate root counts as the module it comes from). Comments and
//! docs are not code and do not count. A circle among top-level modules (`client` uses
//! `unary`, `unary` uses `client`) is reported with its path.

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

/// The module graph of one crate: for each top-level module, the top-level modules it uses
/// (with one example path each, for the report).
#[derive(Debug, Default)]
pub struct Graph {
    /// `from -> (to -> an example "file: path" that made the edge)`.
    pub edges: BTreeMap<String, BTreeMap<String, String>>,
}

/// Builds the graph of the crate whose `src/lib.rs` is under `crate_dir`.
pub fn graph(crate_dir: &Path) -> Result<Graph, String> {
    let src = crate_dir.join("src");
    let lib_path = src.join("lib.rs");
    let lib = parse(&lib_path)?;
    let mut top = BTreeSet::new();
    let mut root_items: BTreeMap<String, String> = BTreeMap::new();
    for item in &lib.items {
        match item {
            syn::Item::Mod(m) => {
                top.insert(m.ident.to_string());
            }
            syn::Item::Use(u) => {
                let mut leaves = Vec::new();
                use_leaves(&u.tree, &mut Vec::new(), &mut leaves);
                for (path, name) in leaves {
                    if let Some(first) = path.first() {
                        if first != "crate" && first != "self" {
                            root_items.insert(name, first.clone());
                        } else if let Some(second) = path.get(1) {
                            root_items.insert(name, second.clone());
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let mut g = Graph::default();
    for m in &top {
        g.edges.entry(m.clone()).or_default();
    }
    let ctx = Ctx {
        top: &top,
        root_items: &root_items,
    };
    // Top-level modules declared in lib.rs: files, then their own `mod` declarations.
    for item in &lib.items {
        if let syn::Item::Mod(m) = item {
            let name = m.ident.to_string();
            match &m.content {
                Some((_, items)) => {
                    walk_items(&ctx, &mut g, &lib_path, &src, vec![name], items)?;
                }
                None => {
                    let (file, dir) = module_file(&src, &name)?;
                    let parsed = parse(&file)?;
                    walk_items(&ctx, &mut g, &file, &dir, vec![name], &parsed.items)?;
                }
            }
        }
    }
    Ok(g)
}

/// The circles among top-level modules: each as `a -> b -> ... -> a`, with the path that
/// makes each step. Empty when there is none.
pub fn cycles(g: &Graph) -> Vec<String> {
    let mut reported = BTreeSet::new();
    let mut out = Vec::new();
    for sccs in tarjan(g) {
        if sccs.len() < 2 {
            continue;
        }
        // One concrete circle through the component: shortest way back to the first node.
        let start = sccs[0].clone();
        if let Some(cycle) = shortest_cycle(g, &start, &sccs) {
            let key: BTreeSet<_> = cycle.iter().cloned().collect();
            if reported.insert(key) {
                let mut s = format!("{} (component: {})", cycle.join(" -> "), sccs.join(", "));
                for w in cycle.windows(2) {
                    s.push_str(&format!(
                        "\n    {} -> {}: {}",
                        w[0], w[1], g.edges[&w[0]][&w[1]]
                    ));
                }
                out.push(s);
            }
        }
    }
    out
}

struct Ctx<'a> {
    top: &'a BTreeSet<String>,
    root_items: &'a BTreeMap<String, String>,
}

fn parse(path: &Path) -> Result<syn::File, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    syn::parse_file(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// `dir/name.rs` or `dir/name/mod.rs`, and the directory its own `mod` declarations are in.
fn module_file(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), String> {
    let flat = dir.join(format!("{name}.rs"));
    if flat.exists() {
        return Ok((flat, dir.join(name)));
    }
    let nested = dir.join(name).join("mod.rs");
    if nested.exists() {
        return Ok((nested, dir.join(name)));
    }
    Err(format!(
        "module {name}: neither {} nor its mod.rs",
        flat.display()
    ))
}

/// Walks the items of module `path` (written in `file`); `child_dir` is where its `mod x;`
/// files live.
fn walk_items(
    ctx: &Ctx<'_>,
    g: &mut Graph,
    file: &Path,
    child_dir: &Path,
    path: Vec<String>,
    items: &[syn::Item],
) -> Result<(), String> {
    for item in items {
        match item {
            syn::Item::Mod(m) => {
                let mut sub = path.clone();
                sub.push(m.ident.to_string());
                match &m.content {
                    Some((_, inner)) => {
                        // An inline module's `mod x;` children live in `child_dir/<name>/`.
                        let dir = child_dir.join(m.ident.to_string());
                        walk_items(ctx, g, file, &dir, sub, inner)?;
                    }
                    None => {
                        let (f, d) = module_file(child_dir, &m.ident.to_string())?;
                        let parsed = parse(&f)?;
                        walk_items(ctx, g, &f, &d, sub, &parsed.items)?;
                    }
                }
            }
            other => {
                let mut v = Collect { found: Vec::new() };
                v.visit_item(other);
                for p in v.found {
                    record(ctx, g, file, &path, &p);
                }
            }
        }
    }
    Ok(())
}

/// Paths found in one item: each as its segments (`["crate", "client", "Client"]`).
struct Collect {
    found: Vec<Vec<String>>,
}

impl<'ast> Visit<'ast> for Collect {
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        let mut leaves = Vec::new();
        use_leaves(&u.tree, &mut Vec::new(), &mut leaves);
        for (mut p, name) in leaves {
            if name != "self" && name != "*" {
                p.push(name);
            }
            self.found.push(p);
        }
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        if p.leading_colon.is_none() {
            self.found
                .push(p.segments.iter().map(|s| s.ident.to_string()).collect());
        }
        syn::visit::visit_path(self, p);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        tokens_paths(m.tokens.clone(), &mut self.found);
        syn::visit::visit_macro(self, m);
    }

    fn visit_item_mod(&mut self, _m: &'ast syn::ItemMod) {
        // Nested modules are walked by `walk_items` with their own path.
    }
}

/// `crate :: a :: b` and `super :: a` sequences inside a macro's tokens (not `$crate`).
fn tokens_paths(tokens: TokenStream, out: &mut Vec<Vec<String>>) {
    let tts: Vec<TokenTree> = tokens.into_iter().collect();
    let mut i = 0;
    while i < tts.len() {
        match &tts[i] {
            TokenTree::Group(gr) => tokens_paths(gr.stream(), out),
            TokenTree::Ident(id) if id == "crate" || id == "super" => {
                let dollar =
                    i > 0 && matches!(&tts[i - 1], TokenTree::Punct(p) if p.as_char() == '$');
                if !dollar {
                    let mut path = vec![id.to_string()];
                    let mut j = i + 1;
                    while j + 2 < tts.len() + 1 {
                        let colons = matches!((&tts.get(j), &tts.get(j + 1)),
                            (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
                                if a.as_char() == ':' && b.as_char() == ':');
                        match (colons, tts.get(j + 2)) {
                            (true, Some(TokenTree::Ident(next))) => {
                                path.push(next.to_string());
                                j += 3;
                            }
                            _ => break,
                        }
                    }
                    out.push(path);
                    i = j;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
}

/// The leaves of a use tree: (path before the leaf, leaf name).
fn use_leaves(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<(Vec<String>, String)>) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            use_leaves(&p.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) => out.push((prefix.clone(), n.ident.to_string())),
        syn::UseTree::Rename(r) => out.push((prefix.clone(), r.ident.to_string())),
        syn::UseTree::Glob(_) => out.push((prefix.clone(), "*".to_owned())),
        syn::UseTree::Group(gr) => {
            for t in &gr.items {
                use_leaves(t, prefix, out);
            }
        }
    }
}

/// Adds the edge a path written in module `module` makes, if it names another top-level
/// module of the crate.
fn record(ctx: &Ctx<'_>, g: &mut Graph, file: &Path, module: &[String], path: &[String]) {
    let Some(first) = path.first() else {
        return;
    };
    let absolute: Vec<String> = match first.as_str() {
        "crate" => path[1..].to_vec(),
        "super" => {
            let mut base = module.to_vec();
            let mut rest = path;
            while rest.first().is_some_and(|s| s == "super") {
                if base.pop().is_none() {
                    return;
                }
                rest = &rest[1..];
            }
            base.extend(rest.iter().cloned());
            base
        }
        _ => return,
    };
    let Some(target) = absolute.first() else {
        return;
    };
    let target_top = if ctx.top.contains(target) {
        target.clone()
    } else if let Some(m) = ctx.root_items.get(target) {
        if !ctx.top.contains(m) {
            return;
        }
        m.clone()
    } else {
        return; // an item of lib.rs itself (a macro), not a module
    };
    let from = &module[0];
    if *from == target_top {
        return;
    }
    let example = format!("{}: {}", file.display(), path.join("::"));
    g.edges
        .entry(from.clone())
        .or_default()
        .entry(target_top)
        .or_insert(example);
}

/// Strongly connected components (Tarjan), each sorted.
fn tarjan(g: &Graph) -> Vec<Vec<String>> {
    struct St<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        on: BTreeSet<&'a str>,
        stack: Vec<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn strong<'a>(s: &mut St<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on.insert(v);
        let g = s.g;
        if let Some(es) = g.edges.get(v) {
            for w in es.keys() {
                let w = w.as_str();
                if !s.index.contains_key(w) {
                    strong(s, w);
                    let lw = s.low[w];
                    let lv = s.low[v];
                    s.low.insert(v, lv.min(lw));
                } else if s.on.contains(w) {
                    let iw = s.index[w];
                    let lv = s.low[v];
                    s.low.insert(v, lv.min(iw));
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                comp.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            comp.sort();
            s.out.push(comp);
        }
    }
    let mut s = St {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        on: BTreeSet::new(),
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in g.edges.keys() {
        if !s.index.contains_key(v.as_str()) {
            strong(&mut s, v);
        }
    }
    s.out
}

/// The shortest circle from `start` back to itself within `within` (breadth first).
fn shortest_cycle(g: &Graph, start: &str, within: &[String]) -> Option<Vec<String>> {
    let allowed: BTreeSet<&str> = within.iter().map(String::as_str).collect();
    let mut prev: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::new();
    queue.push_back(start.to_owned());
    while let Some(v) = queue.pop_front() {
        for w in g.edges.get(&v).map(|e| e.keys()).into_iter().flatten() {
            if !allowed.contains(w.as_str()) {
                continue;
            }
            if w == start {
                let mut path = vec![start.to_owned()];
                let mut cur = v.clone();
                while cur != start {
                    path.push(cur.clone());
                    cur = prev[&cur].clone();
                }
                path.push(start.to_owned());
                path.reverse();
                return Some(path);
            }
            if !prev.contains_key(w) {
                prev.insert(w.clone(), v.clone());
                queue.push_back(w.clone());
            }
        }
    }
    None
}
