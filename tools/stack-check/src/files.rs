//! Reading the stack's files from the repository, wherever the tests run.
//!
//! Every loader panics with the file's path and the parser's message: these
//! are test helpers, and a config that does not parse is the finding.

use std::path::{Path, PathBuf};

use serde_norway::Value;

/// The repository root: this crate lives in `<root>/tools/stack-check`.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("stack-check sits inside the repository")
        .to_path_buf()
}

/// The file at `relative` (to the repository root) as text.
pub fn read_text(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A YAML file, with `<<` merge keys applied as Compose applies them.
pub fn load_yaml(relative: &str) -> Value {
    let mut value: Value = serde_norway::from_str(&read_text(relative))
        .unwrap_or_else(|e| panic!("{relative} is not valid YAML: {e}"));
    value
        .apply_merge()
        .unwrap_or_else(|e| panic!("{relative}: bad merge key: {e}"));
    value
}

/// A JSON file.
pub fn load_json(relative: &str) -> serde_json::Value {
    serde_json::from_str(&read_text(relative))
        .unwrap_or_else(|e| panic!("{relative} is not valid JSON: {e}"))
}

/// Every `.rs` file under `dir`, at any depth.
pub fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
    found
}

/// A JSON-with-comments file such as devcontainer.json: `//` and `/* */`
/// comments are removed (outside strings) before parsing.
pub fn load_jsonc(relative: &str) -> serde_json::Value {
    serde_json::from_str(&strip_json_comments(&read_text(relative)))
        .unwrap_or_else(|e| panic!("{relative} is not valid JSON with comments: {e}"))
}

fn strip_json_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                '\\' => out.extend(chars.next()),
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut previous = ' ';
                for c in chars.by_ref() {
                    if previous == '*' && c == '/' {
                        break;
                    }
                    previous = c;
                }
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_comments_but_not_strings() {
        let text = r#"// head
        { "url": "http://x//y", /* note */ "a": "/* kept */" } // tail"#;
        let value: serde_json::Value = serde_json::from_str(&strip_json_comments(text)).unwrap();
        assert_eq!(value["url"], "http://x//y");
        assert_eq!(value["a"], "/* kept */");
    }

    #[test]
    fn escaped_quote_does_not_end_a_string() {
        let text = r#"{ "a": "say \"//hi\"" }"#;
        let value: serde_json::Value = serde_json::from_str(&strip_json_comments(text)).unwrap();
        assert_eq!(value["a"], "say \"//hi\"");
    }
}
