//! Build facts for `sync-proxy --version`: the git commit (when built from a git checkout with
//! `git` on the PATH, else "unknown"; the build never fails for lack of either), the target
//! triple and the build profile, handed to the crate as environment variables.

use std::process::Command;

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SYNC_PROXY_GIT_COMMIT={commit}");
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=SYNC_PROXY_TARGET={target}");
    // Cargo gives build scripts the base profile: "release" for release and its descendants.
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=SYNC_PROXY_PROFILE={profile}");
    println!("cargo:rerun-if-changed=build.rs");
    // Rebuild when HEAD moves: the files git changes on commit and checkout. Without these
    // lines Cargo would rerun this script on any change in the package.
    // A path that does not exist would make Cargo rerun this script on every build.
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for path in watched {
        if let Some(file) = git(&["rev-parse", "--git-path", &path]) {
            if std::path::Path::new(&file).exists() {
                println!("cargo:rerun-if-changed={file}");
            }
        }
    }
}

/// The trimmed output of a successful `git` command, or `None`.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}
