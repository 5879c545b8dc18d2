//! `GET /ui`: one self-contained HTML page, compiled into the binary, that renders `/status`
//! and `/ready` live for operators — on a phone during an incident as well as on a desk.
//!
//! The page (`src/ui.html`) has no external assets, no CDN and no build step; it polls the two
//! JSON endpoints once a second with relative URLs, so it also works behind a reverse proxy's
//! path prefix. This module only serves it; it holds no state.

use crate::exchange::Answer;

/// The page.
pub const PAGE: &str = include_str!("ui.html");

/// The `/ui` answer.
pub fn answer() -> Answer {
    Answer {
        status: 200,
        content_type: "text/html; charset=utf-8".into(),
        body: PAGE.as_bytes().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_is_self_contained() {
        assert!(PAGE.starts_with("<!doctype html>"));
        // Nothing is loaded from elsewhere: no absolute URLs, no protocol-relative ones.
        for needle in ["http://", "https://", "src=\"//", "href=\"//", "@import"] {
            let found: Vec<&str> = PAGE
                .lines()
                .filter(|line| line.contains(needle))
                // The SVG namespace is a name, not a fetch.
                .filter(|line| !line.contains("http://www.w3.org/2000/svg"))
                .collect();
            assert!(found.is_empty(), "{needle}: {found:?}");
        }
        assert!(!PAGE.contains("<script src"), "scripts are inline");
        assert!(
            !PAGE.contains("innerHTML"),
            "values are inserted as text only"
        );
    }

    #[test]
    fn page_polls_the_status_endpoints_relatively() {
        assert!(PAGE.contains("fetchJson(\"status\")"));
        assert!(PAGE.contains("fetchJson(\"ready\")"));
        for id in [
            "followed",
            "wall-slot",
            "slot-axis",
            "upstreams",
            "switches",
            "errors",
        ] {
            assert!(PAGE.contains(&format!("id=\"{id}\"")), "{id}");
        }
        let answer = answer();
        assert_eq!(answer.status, 200);
        assert!(answer.content_type.starts_with("text/html"));
    }
}
