//! What the fleet-spec test binaries share.

use fleet_spec::template::Host;
use std::path::Path;

/// A machine with a fixed environment (these variables, every file present but unreadable),
/// so results do not depend on who runs the tests.
pub(crate) struct FixedHost(pub(crate) Vec<(&'static str, &'static str)>);

impl Host for FixedHost {
    fn env_var(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
    fn file_exists(&self, _: &Path) -> bool {
        true
    }
    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            path.display().to_string(),
        ))
    }
}
