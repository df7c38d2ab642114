//! MCP protocol revisions as the gateway and the link tell them apart: legacy revisions
//! open a session with `initialize`; modern ones (2026-07-28 on) are stateless.

/// Legacy protocol revisions, oldest first.
pub const LEGACY_REVISIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];

/// The newest legacy revision: what a shared link initializes its process with (a modern
/// server answers it too, as its latest legacy revision or with an error).
pub const LATEST_LEGACY_REVISION: &str = LEGACY_REVISIONS[LEGACY_REVISIONS.len() - 1];

/// Whether `version` (a `YYYY-MM-DD` revision) is a modern, stateless revision.
pub fn is_modern_revision(version: &str) -> bool {
    version.len() == LATEST_LEGACY_REVISION.len() && version > LATEST_LEGACY_REVISION
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_after_the_last_legacy_one_are_modern() {
        assert!(is_modern_revision("2026-07-28"));
        assert!(!is_modern_revision("2025-11-25"));
        assert!(!is_modern_revision("2025-03-26"));
        assert!(!is_modern_revision("later"), "not a revision");
    }
}
