//! The README stays true to the tree: its module map names every module.

use std::path::Path;

/// Every `.rs` file under `dir`, as paths relative to `src/` (`http/head.rs`).
fn modules(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read src/")
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if path.is_dir() {
            modules(&path, &format!("{prefix}{name}/"), out);
        } else if name.ends_with(".rs") {
            out.push(format!("{prefix}{name}"));
        }
    }
}

#[test]
fn readme_module_map_names_every_module() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let map = readme
        .split("The module map")
        .nth(1)
        .and_then(|rest| rest.split("\n- ").next())
        .expect("README has a module map");
    let mut files = Vec::new();
    modules(&root.join("src"), "", &mut files);
    assert!(files.len() > 20, "{files:?}");
    let missing: Vec<&String> = files
        .iter()
        .filter(|file| file.as_str() != "http/mod.rs" && !map.contains(&format!("`{file}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "modules missing from the README's map: {missing:?}"
    );
}
