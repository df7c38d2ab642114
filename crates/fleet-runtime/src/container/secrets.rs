//! A container's secrets as files: each value is written to a file on a tmpfs of the host
//! (never the state directory, which is on disk), bind-mounted read-only at its path in the
//! container, and removed with the container.
//!
//! Layout: `<secrets_dir>/mcpfleet-<fleet>/<instance id>/<n>`, both directories mode 0700
//! so no other host user can reach the files. A file is mode 0400 and owned by the
//! container's user when that user is numeric (`UID` or `UID:GID`), the same ids inside the
//! container as on the host for a rootful engine. A user given by name is resolved inside
//! the image, which the host cannot do, and a rootless engine maps ids so that a chown is
//! refused: then the file is mode 0444, readable by whoever the container runs as, and the
//! 0700 directories still keep other host users out (a bind mount bypasses the
//! permissions of the directories above its source).

use crate::instance::{ContainerSecret, InstanceId};
use std::fs::{DirBuilder, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// The secret files of one instance's container.
#[derive(Debug)]
pub(crate) struct SecretFiles {
    dir: PathBuf,
    /// Host path → path in the container.
    mounts: Vec<(PathBuf, String)>,
}

/// The directory holding instance `id`'s files.
pub(crate) fn instance_dir(secrets_dir: &Path, fleet: &str, id: &InstanceId) -> PathBuf {
    secrets_dir
        .join(format!("mcpfleet-{fleet}"))
        .join(id.as_str())
}

impl SecretFiles {
    /// Writes `secrets` for a container running as `user`, replacing whatever an earlier
    /// run of the same instance left. No secrets, no directory.
    ///
    /// # Errors
    /// A directory or file cannot be created or written.
    pub(crate) fn write(
        dir: PathBuf,
        secrets: &[ContainerSecret],
        user: &str,
    ) -> io::Result<SecretFiles> {
        remove_dir(&dir)?;
        let mut files = SecretFiles {
            dir,
            mounts: Vec::new(),
        };
        if secrets.is_empty() {
            return Ok(files);
        }
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&files.dir)?;
        let owner = numeric_owner(user);
        for (n, secret) in secrets.iter().enumerate() {
            let path = files.dir.join(n.to_string());
            // Recorded first, so a failure below still removes what was written.
            files.mounts.push((path.clone(), secret.target.clone()));
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o400)
                .open(&path)?;
            file.write_all(secret.value.as_bytes())?;
            let owned = owner
                .is_some_and(|(uid, gid)| std::os::unix::fs::chown(&path, Some(uid), gid).is_ok());
            if !owned {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444))?;
            }
        }
        Ok(files)
    }

    /// The files in `dir` an earlier control plane wrote for a container that is being
    /// adopted: mounted already, removed with it.
    pub(crate) fn adopted(dir: PathBuf) -> SecretFiles {
        SecretFiles {
            dir,
            mounts: Vec::new(),
        }
    }

    /// The engine's bind specifications: `HOST:TARGET:ro`.
    pub(crate) fn binds(&self) -> impl Iterator<Item = String> + '_ {
        self.mounts
            .iter()
            .map(|(host, target)| format!("{}:{target}:ro", host.display()))
    }

    /// Removes the files and their directory; a failure is logged.
    pub(crate) fn remove(&self) {
        if let Err(e) = remove_dir(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove a container's secret files");
        }
    }
}

/// Removes `dir` and everything in it; one already gone is fine.
pub(crate) fn remove_dir(dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// `UID` or `UID:GID` as numbers; `None` when either part is a name.
fn numeric_owner(user: &str) -> Option<(u32, Option<u32>)> {
    match user.split_once(':') {
        Some((uid, gid)) => Some((uid.parse().ok()?, Some(gid.parse().ok()?))),
        None => Some((user.parse().ok()?, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(target: &str, value: &str) -> ContainerSecret {
        ContainerSecret {
            target: target.into(),
            value: value.into(),
        }
    }

    #[test]
    fn numeric_users_own_their_files_and_names_do_not() {
        assert_eq!(numeric_owner("1000"), Some((1000, None)));
        assert_eq!(numeric_owner("1000:100"), Some((1000, Some(100))));
        assert_eq!(numeric_owner("app"), None);
        assert_eq!(numeric_owner("1000:staff"), None);
    }

    #[test]
    fn files_hold_the_values_are_bound_read_only_and_go_on_remove() {
        let root = std::env::temp_dir().join(format!("secret-files-{}", std::process::id()));
        let dir = root.join("mcpfleet-demo").join("web-r1-1");
        let files = SecretFiles::write(
            dir.clone(),
            &[secret("/run/secrets/a", "alpha"), secret("/b", "beta")],
            "app",
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("0")).unwrap(), "alpha");
        assert_eq!(std::fs::read_to_string(dir.join("1")).unwrap(), "beta");
        let mode = std::fs::metadata(dir.join("0"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o444, "a named user cannot be chowned to");
        let dir_mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let binds: Vec<String> = files.binds().collect();
        assert_eq!(
            binds,
            [
                format!("{}:/run/secrets/a:ro", dir.join("0").display()),
                format!("{}:/b:ro", dir.join("1").display()),
            ]
        );
        // A second write (a new start of the instance) replaces the first.
        let files = SecretFiles::write(dir.clone(), &[secret("/c", "gamma")], "app").unwrap();
        assert!(!dir.join("1").exists());
        files.remove();
        assert!(!dir.exists());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
