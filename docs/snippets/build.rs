//! Writes `$OUT_DIR/snippets.rs`: each ```rust block of the README and the guide, in a module of
//! its own, inside the frame its `<!-- check: FRAME -->` line (the line before the block) names:
//!
//! - `items`: module items (types, functions, macros), as written;
//! - `server`: statements of an async function of the server side (`crate::server`'s names in
//!   scope: `sse`, `app`, handlers), returning `Result<(), Box<dyn Error>>`;
//! - `component`: statements of a component's body ending with its view (`crate::client`'s
//!   names in scope);
//! - `skip: <why>`: not compiled here (say where it is: a whole program the adopter proof builds).
//!
//! A block without a `check` line fails the build: a new snippet is compiled or says why not.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut pages = vec![root.join("README.md")];
    let mut guide: Vec<PathBuf> = std::fs::read_dir(root.join("docs/guide/src"))
        .expect("docs/guide/src")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    guide.sort();
    pages.extend(guide);
    let mut out = String::new();
    let mut problems = Vec::new();
    for page in &pages {
        println!("cargo:rerun-if-changed={}", page.display());
        let text = std::fs::read_to_string(page).expect("a page");
        let lines: Vec<&str> = text.lines().collect();
        let name = page.strip_prefix(&root).unwrap_or(page).display().to_string();
        let mut i = 0;
        while i < lines.len() {
            if lines[i].trim_end() != "```rust" {
                i += 1;
                continue;
            }
            let start = i + 1;
            let end = start + lines[start..].iter().position(|l| l.trim_end() == "```").expect("a closed block");
            let code = lines[start..end].join("\n");
            let frame = (i > 0)
                .then(|| lines[i - 1].trim())
                .and_then(|l| l.strip_prefix("<!-- check: "))
                .and_then(|l| l.strip_suffix(" -->"));
            let module = format!("snippet_{}", out.matches("mod snippet_").count());
            let place = format!("{name}:{}", start);
            match frame {
                Some("items") => writeln!(out, "// {place}\n#[allow(unused, dead_code)]\nmod {module} {{\n    use crate::client::*;\n{code}\n}}\n"),
                Some("server") => writeln!(
                    out,
                    "// {place}\n#[allow(unused, dead_code, unreachable_code)]\nmod {module} {{\n    use crate::server::*;\n    pub async fn snippet(sse: SseApp, app: Router, my_routes: Router, addr: std::net::SocketAddr, sessions: Sessions) -> Result<(), Box<dyn std::error::Error>> {{\n{code}\n        Ok(())\n    }}\n}}\n"
                ),
                Some("component") => writeln!(
                    out,
                    "// {place}\n#[allow(unused, dead_code)]\nmod {module} {{\n    use crate::client::*;\n    #[component]\n    pub fn Snippet() -> impl IntoView {{\n{code}\n    }}\n}}\n"
                ),
                Some(f) if f.starts_with("skip: ") => Ok(()),
                other => {
                    problems.push(format!("{place}: a ```rust block needs a `<!-- check: items|server|component|skip: why -->` line before it (found {other:?})"));
                    Ok(())
                }
            }
            .expect("writing to a string");
            i = end + 1;
        }
    }
    if !problems.is_empty() {
        panic!("snippets without a frame:\n{}", problems.join("\n"));
    }
    let path = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("snippets.rs");
    std::fs::write(path, out).expect("writing snippets.rs");
}
