//! Renders a [`crate::core::Plan`] for people and tools: a table, the JSON contract, or an SVG timeline.

mod json;
mod svg;
mod table;

use std::io::Write;
use std::path::Path;

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};

use crate::core::Plan;
use crate::manifest::{self, Manifest, ManifestError};

pub use json::{to_json, write_json};
pub use svg::{MAX_ROWS, to_svg};
pub use table::to_table;

/// Output format of `phonefleet plan`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Svg,
}

/// Why `phonefleet plan` produced no report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("writing the report: {0}")]
    Io(#[from] std::io::Error),
    #[error("encoding JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("drawing the timeline: {0}")]
    Svg(String),
}

/// The offline `plan` command: load the manifest at `path`, plan as of `now` with no phone
/// upgraded yet, and write the report to `out`.
pub fn run(
    path: &Path,
    now: DateTime<Utc>,
    format: Format,
    out: &mut impl Write,
) -> Result<(), ReportError> {
    let fleet = manifest::load(path)?.fleet()?;
    write_fleet(&fleet, now, format, &Default::default(), out)
}

/// Writes the plan of `fleet` as `phonefleet plan` does, leaving out the phones in `done`
/// (already upgraded, from the phones' recorded progress): the controller's own planning entry
/// point, as its first decision would plan (none holding a slot file yet). A closed pipe is not
/// an error.
pub fn write_fleet(
    fleet: &crate::core::Fleet,
    now: DateTime<Utc>,
    format: Format,
    done: &crate::core::MacSet,
    out: &mut impl Write,
) -> Result<(), ReportError> {
    let plan = crate::core::plan_rollout(fleet, now, done, &|_| false, &|_| None);
    let written = write(&plan, format, out);
    // `phonefleet plan -o json | head` closes the pipe early; that is not a failure.
    match written {
        Err(ReportError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(ReportError::Json(e)) if e.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe) => {
            Ok(())
        }
        other => other,
    }
}

/// The plan `phonefleet plan` shows: the fleet the controller would select, planned by the
/// controller's own entry point as its first decision would (no phone upgraded, none holding a
/// slot file yet, so each site's starting announcement lead).
pub fn plan_manifest(manifest: &Manifest, now: DateTime<Utc>) -> Result<Plan, ManifestError> {
    let fleet = manifest.fleet()?;
    Ok(crate::core::plan_rollout(
        &fleet,
        now,
        &Default::default(),
        &|_| false,
        &|_| None,
    ))
}

fn write(plan: &Plan, format: Format, out: &mut impl Write) -> Result<(), ReportError> {
    match format {
        Format::Table => out.write_all(to_table(plan).as_bytes())?,
        Format::Json => write_json(plan, &mut *out)?,
        Format::Svg => out.write_all(to_svg(plan)?.as_bytes())?,
    }
    Ok(out.flush()?)
}

/// RFC 3339 in UTC with `Z`, whole seconds.
pub(crate) fn utc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// RFC 3339 with the local offset, whole seconds.
pub(crate) fn local(t: DateTime<FixedOffset>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, false)
}
