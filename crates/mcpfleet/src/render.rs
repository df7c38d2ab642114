//! `render kubernetes`: the fleet's Kubernetes manifests, to standard output as one YAML
//! stream or into a directory, one file per object, for `kubectl apply` or a GitOps
//! repository.

use crate::commands::{check, print_diagnostics, write_atomically};
use anyhow::{Context, Result};
use fleet_manifests::yaml::{to_yaml, to_yaml_stream};
use fleet_spec::ValidFleet;
use fleet_spec::diag::render_all;
use std::path::Path;
use std::process::ExitCode;

/// The first line of every file `render` writes into a directory: how a later run knows
/// which files are its own to replace or remove.
const HEADER: &str = "# Written by `mcpfleet render kubernetes`";

const REFUSED: u8 = 1;

/// A fleet file's Kubernetes objects, in apply order, with the fleet they came from.
pub(crate) struct Rendered {
    pub fleet: ValidFleet,
    pub objects: Vec<serde_json::Value>,
    /// The fleet file's name, as diagnostics show it.
    pub source_name: String,
}

/// Reads, checks and renders a fleet file. `Ok(Err(code))`: the file or its servers were
/// refused, the reasons printed (located), `code` is the exit code to return.
///
/// # Errors
/// When the file cannot be read.
pub(crate) fn objects(
    file: &Path,
    environment: Option<String>,
) -> Result<std::result::Result<Rendered, ExitCode>> {
    let checked = check(file, environment)?;
    print_diagnostics(&checked);
    let source = checked.source.clone();
    let Ok(fleet) = checked.into_valid() else {
        return Ok(Err(ExitCode::from(REFUSED)));
    };
    let options = fleet_manifests::Options::new(source.text.as_ref());
    match fleet_manifests::render(&fleet, &options) {
        Ok(objects) => Ok(Ok(Rendered {
            fleet,
            objects,
            source_name: source.name.clone(),
        })),
        Err(error) => {
            eprint!("{}", render_all(&error.diagnostics(), &source));
            Ok(Err(ExitCode::from(REFUSED)))
        }
    }
}

pub(crate) fn kubernetes(
    file: &Path,
    environment: Option<String>,
    out: Option<&Path>,
    json: bool,
) -> Result<ExitCode> {
    let Rendered {
        objects,
        source_name,
        ..
    } = match objects(file, environment)? {
        Ok(rendered) => rendered,
        Err(code) => return Ok(code),
    };
    let Some(dir) = out else {
        print!("{}", to_yaml_stream(&objects));
        return Ok(ExitCode::SUCCESS);
    };
    let names = write_directory(dir, &objects, &source_name)?;
    if json {
        let report = serde_json::json!({ "dir": dir, "files": names });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "wrote {} manifests to {} (apply with `kubectl apply -f {}`)",
            names.len(),
            dir.display(),
            dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One file per object, each written whole or not at all; files an earlier run wrote for
/// objects that are gone are removed, so that applying the directory applies exactly the
/// fleet. Anything else in the directory is left alone.
fn write_directory(
    dir: &Path,
    objects: &[serde_json::Value],
    fleet_file: &str,
) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let names = fleet_manifests::file_names(objects);
    let header = format!("{HEADER} from {fleet_file}: edit the fleet file, not this file.\n");
    for (name, object) in names.iter().zip(objects) {
        let text = format!("{header}{}", to_yaml(object));
        write_atomically(&dir.join(name), &text, 0o644)?;
    }
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        let stale = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".yaml") && !names.iter().any(|m| m == n));
        if stale && written_by_render(&path) {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(names)
}

fn written_by_render(path: &Path) -> bool {
    use std::io::Read as _;
    let mut start = [0u8; HEADER.len()];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut start))
        .is_ok_and(|()| start == HEADER.as_bytes())
}
