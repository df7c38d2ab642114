//! Which instance of the fleet a process is: the engine's [`InstanceId`], and the one place
//! its text — the runtime's id, which names pidfiles and logs — is made.

use std::fmt;

/// One instance: a server's revision and the instance's place in it.
///
/// Shown as `<server>-r<revision>-<replica>` (`search-r3-1`, or `search-r3-s7` for a
/// per-session process): the runtime's [`fleet_runtime::InstanceId`], in the names of the
/// pidfiles and logs of fleets already running, so the text must not change.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct InstanceId {
    /// The server it runs.
    pub(crate) server: String,
    /// The server's revision it runs.
    pub(crate) revision: u64,
    /// Which of the revision's instances it is.
    pub(crate) replica: Replica,
}

/// An instance's place among its revision's instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Replica {
    /// One of the `replicas` the engine runs and health-checks (numbered from 1).
    Numbered(u32),
    /// A per-session server's process for one client session (numbered from 0 per pool).
    Session(u64),
}

impl InstanceId {
    /// Replica `replica` of `server`'s `revision`.
    pub(crate) fn replica(server: &str, revision: u64, replica: u32) -> Self {
        InstanceId {
            server: server.to_owned(),
            revision,
            replica: Replica::Numbered(replica),
        }
    }

    /// Session process `number` of `server`'s `revision`.
    pub(crate) fn session(server: &str, revision: u64, number: u64) -> Self {
        InstanceId {
            server: server.to_owned(),
            revision,
            replica: Replica::Session(number),
        }
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-r{}-{}", self.server, self.revision, self.replica)
    }
}

impl fmt::Display for Replica {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Replica::Numbered(n) => write!(f, "{n}"),
            Replica::Session(n) => write!(f, "s{n}"),
        }
    }
}

impl From<&InstanceId> for fleet_runtime::InstanceId {
    fn from(id: &InstanceId) -> Self {
        fleet_runtime::InstanceId(id.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_keeps_the_id_text_of_running_fleets_pidfiles_and_logs() {
        let id = InstanceId::replica("search", 3, 1);
        assert_eq!(id.to_string(), "search-r3-1");
        assert_eq!(fleet_runtime::InstanceId::from(&id).as_str(), "search-r3-1");
    }

    #[test]
    fn a_session_process_keeps_its_id_text() {
        let id = InstanceId::session("files", 12, 7);
        assert_eq!(
            fleet_runtime::InstanceId::from(&id).as_str(),
            "files-r12-s7"
        );
    }

    #[test]
    fn a_server_name_with_dashes_and_r_digits_stays_whole() {
        // The text used to be parsed back with rsplit: a name like this is why the engine
        // keeps the parts instead.
        let id = InstanceId::replica("web-r2-api", 10, 2);
        assert_eq!(id.to_string(), "web-r2-api-r10-2");
        assert_eq!(id.revision, 10);
        assert_eq!(id.server, "web-r2-api");
    }
}
