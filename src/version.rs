//! What this binary is: package version, git commit, target triple and build profile, as
//! `sync-proxy --version` prints them and `/status` reports them. The facts come from
//! `build.rs`; a build outside a git checkout says "unknown" for the commit.

/// The package version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit built (short hash), or "unknown".
pub const COMMIT: &str = env!("SYNC_PROXY_GIT_COMMIT");

/// The target triple, e.g. `x86_64-unknown-linux-musl`.
pub const TARGET: &str = env!("SYNC_PROXY_TARGET");

/// The build profile: `release` or `debug`.
pub const PROFILE: &str = env!("SYNC_PROXY_PROFILE");

/// The `--version` text, one fact per line.
pub fn describe() -> String {
    format!("sync-proxy {VERSION}\ncommit:  {COMMIT}\ntarget:  {TARGET}\nprofile: {PROFILE}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_names_every_fact() {
        let text = describe();
        assert!(
            text.starts_with(&format!("sync-proxy {VERSION}\n")),
            "{text}"
        );
        for fact in [COMMIT, TARGET, PROFILE] {
            assert!(!fact.is_empty());
            assert!(text.contains(fact), "{text}");
        }
        assert_eq!(PROFILE, "debug", "tests build with the dev profile");
        assert!(TARGET.contains("linux") || TARGET.contains('-'), "{TARGET}");
    }
}
