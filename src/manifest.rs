//! Multi-document YAML manifests, the files an operator would `kubectl apply`: one
//! PhoneSchedule and the PhoneSites it may select. Used by the offline `phonefleet plan`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::api::{self, PhoneSchedule, PhoneSite};
use crate::core::policy::Fleet;
use crate::selection::{self, Candidate, InvalidSchedule, Selection};
use crate::selector::SelectorError;
use crate::validate::ValidationError;

/// The namespace of an object that names none, as `kubectl apply` without `-n` would use.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Why a manifest cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("document {index}: not valid YAML: {source}")]
    Yaml {
        index: usize,
        source: serde_yaml_ng::Error,
    },
    #[error("document {index}: expected a Kubernetes object with apiVersion and kind")]
    NotAnObject { index: usize },
    #[error("document {index}: unknown kind {kind:?} with apiVersion {api_version:?}; expected PhoneSchedule or PhoneSite of {group}/{version}", group = api::GROUP, version = api::VERSION)]
    UnknownKind {
        index: usize,
        api_version: String,
        kind: String,
    },
    #[error("{document}: {field}: {message}")]
    Field {
        document: String,
        field: String,
        message: String,
    },
    #[error("no PhoneSchedule in the manifest: `plan` needs exactly one")]
    NoSchedule,
    #[error("{second}: a second PhoneSchedule (the first is {first}); `plan` takes exactly one")]
    SeveralSchedules { first: String, second: String },
    #[error("{second}: PhoneSite {name} is defined twice (also {first})")]
    DuplicateSite {
        name: String,
        first: String,
        second: String,
    },
    /// Sites the controller would leave out (`Degraded`, reason `InvalidSite`), one a line.
    #[error("{0}")]
    SitesLeftOut(String),
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

/// A parsed manifest: one schedule and every site, each with its document label.
#[derive(Debug)]
pub struct Manifest {
    pub schedule: (String, PhoneSchedule),
    pub sites: Vec<(String, PhoneSite)>,
}

/// Reads and parses a manifest file.
pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text)
}

/// Parses manifest text. Empty documents are skipped; any other document that is not a
/// phonefleet object is an error, so a typo in `kind` is not silently dropped.
pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
    let mut schedule: Option<(String, PhoneSchedule)> = None;
    let mut sites: Vec<(String, PhoneSite)> = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let index = i + 1;
        let value = serde_yaml_ng::Value::deserialize(doc)
            .map_err(|source| ManifestError::Yaml { index, source })?;
        if value.is_null() {
            continue;
        }
        let str_field = |key: &str| value.get(key).and_then(|v| v.as_str()).map(str::to_owned);
        let (Some(api_version), Some(kind)) = (str_field("apiVersion"), str_field("kind")) else {
            return Err(ManifestError::NotAnObject { index });
        };
        let ours = api_version == format!("{}/{}", api::GROUP, api::VERSION);
        match kind.as_str() {
            "PhoneSchedule" if ours => {
                let (label, obj) = typed::<PhoneSchedule>(index, &kind, value)?;
                if let Some((first, _)) = &schedule {
                    return Err(ManifestError::SeveralSchedules {
                        first: first.clone(),
                        second: label,
                    });
                }
                schedule = Some((label, obj));
            }
            "PhoneSite" if ours => sites.push(typed::<PhoneSite>(index, &kind, value)?),
            _ => {
                return Err(ManifestError::UnknownKind {
                    index,
                    api_version,
                    kind,
                });
            }
        }
    }
    let schedule = schedule.ok_or(ManifestError::NoSchedule)?;
    Ok(Manifest { schedule, sites })
}

/// Deserializes one document, naming the field path of a type error.
fn typed<T>(
    index: usize,
    kind: &str,
    value: serde_yaml_ng::Value,
) -> Result<(String, T), ManifestError>
where
    T: for<'de> Deserialize<'de> + kube::Resource,
{
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or("<unnamed>")
        .to_owned();
    let namespace = value
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(|n| n.as_str())
        .unwrap_or(DEFAULT_NAMESPACE)
        .to_owned();
    let label = format!("document {index} ({kind} {namespace}/{name})");
    // A misspelt field would otherwise be dropped and its default used without a word.
    let mut unknown = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let de = serde_ignored::Deserializer::new(value, &mut record);
    let obj: T = serde_path_to_error::deserialize(de).map_err(|e| {
        let mut field = e.path().to_string();
        let message = e.into_inner().to_string();
        // serde reports a missing field at its parent; name the field itself.
        if let Some(missing) = message
            .strip_prefix("missing field `")
            .and_then(|m| m.strip_suffix('`'))
        {
            field = if field == "." {
                missing.to_owned()
            } else {
                format!("{field}.{missing}")
            };
        }
        ManifestError::Field {
            document: label.clone(),
            field,
            message,
        }
    })?;
    // apiVersion and kind were checked above; the derived types skip them.
    let unknown = unknown
        .into_iter()
        .find(|f| f != "apiVersion" && f != "kind");
    if let Some(field) = unknown {
        return Err(ManifestError::Field {
            document: label,
            field,
            message: format!("unknown field, not part of {}/{}", api::GROUP, api::VERSION),
        });
    }
    Ok((label, obj))
}

fn namespace_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
}

impl Manifest {
    /// Selects and validates the fleet exactly as the controller would
    /// ([`crate::selection::select`]): the schedule and the sites of its namespace that its
    /// `siteSelector` selects, sorted by name, with the sites it would leave out.
    pub fn selection(&self) -> Result<Selection, ManifestError> {
        let (schedule_doc, schedule) = &self.schedule;
        let namespace = namespace_of(&schedule.metadata);
        let name = format!(
            "{namespace}/{}",
            schedule.metadata.name.as_deref().unwrap_or_default()
        );
        // Two documents of one name cannot both exist in a cluster: a mistake in the file.
        let mut by_name: BTreeMap<(String, String), &str> = BTreeMap::new();
        for (doc, site) in &self.sites {
            let site_ns = namespace_of(&site.metadata);
            let site_name = site.metadata.name.clone().unwrap_or_default();
            if let Some(first) = by_name.insert((site_ns.to_owned(), site_name.clone()), doc) {
                return Err(ManifestError::DuplicateSite {
                    name: format!("{site_ns}/{site_name}"),
                    first: first.to_owned(),
                    second: doc.clone(),
                });
            }
        }
        let candidates: Vec<Candidate<'_>> = self
            .sites
            .iter()
            .filter(|(_, site)| namespace_of(&site.metadata) == namespace)
            .map(|(doc, site)| Candidate {
                document: doc.clone(),
                site,
                checked: None,
            })
            .collect();
        // A manifest holds one schedule: no older one can claim a site.
        selection::select(schedule_doc, &name, schedule, &candidates, &|_| None).map_err(
            |e| match e {
                InvalidSchedule::Spec(e) => ManifestError::Invalid(e),
                InvalidSchedule::Selector(e) => {
                    let (field, message) = split_selector_error(&e);
                    ManifestError::Field {
                        document: schedule_doc.clone(),
                        field,
                        message,
                    }
                }
            },
        )
    }

    /// The fleet the controller would plan, refusing a manifest in which it would leave a
    /// whole site out (an invalid site, a phone listed in two sites): offline, the operator
    /// hears of it before applying. Phones of no family only give a warning in the plan, as
    /// they do in the controller.
    pub fn fleet(&self) -> Result<Fleet, ManifestError> {
        let selection = self.selection()?;
        let left_out: Vec<&str> = selection
            .excluded
            .iter()
            .filter(|e| e.reason.drops_site())
            .map(|e| e.message.as_str())
            .collect();
        if !left_out.is_empty() {
            return Err(ManifestError::SitesLeftOut(left_out.join("\n")));
        }
        Ok(selection.fleet)
    }
}

fn split_selector_error(e: &SelectorError) -> (String, String) {
    let text = e.to_string();
    match text.split_once(": ") {
        Some((field, message)) => (format!("spec.siteSelector.{field}"), message.to_owned()),
        None => ("spec.siteSelector".to_owned(), text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEDULE: &str = "apiVersion: phonefleet.io/v1alpha1
kind: PhoneSchedule
metadata: {name: night, namespace: voice}
spec:
  siteSelector: {matchLabels: {region: eu}}
  provisioning: {weekly: {enabled: true, window: {start: '01:00', end: '05:00'}, days: [Mon]}}
";

    fn site(name: &str, ns: &str, region: &str, mac: &str) -> String {
        format!(
            "apiVersion: phonefleet.io/v1alpha1
kind: PhoneSite
metadata: {{name: {name}, namespace: {ns}, labels: {{region: {region}}}}}
spec:
  timeZone: Europe/Paris
  maxConcurrentDownloads: 2
  phones: [{{mac: '{mac}', model: GXP2170}}]
"
        )
    }

    #[test]
    fn selects_matching_sites_of_the_schedule_namespace() {
        let text = [
            SCHEDULE.to_owned(),
            site("paris", "voice", "eu", "00:0b:82:00:00:01"),
            site("austin", "voice", "us", "00:0b:82:00:00:02"),
            site("lyon", "other", "eu", "00:0b:82:00:00:03"),
            site("berlin", "voice", "eu", "00:0b:82:00:00:04"),
        ]
        .join("---\n");
        let fleet = parse(&text).unwrap().fleet().unwrap();
        assert_eq!(fleet.schedule.name, "voice/night");
        let names: Vec<_> = fleet.sites.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["berlin", "paris"]);
    }

    #[test]
    fn unknown_kind_names_the_document() {
        let text =
            format!("{SCHEDULE}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\n");
        let e = parse(&text).unwrap_err().to_string();
        assert!(
            e.starts_with("document 2: unknown kind \"ConfigMap\""),
            "{e}"
        );
    }

    #[test]
    fn type_errors_name_the_field_path() {
        let text = format!(
            "{SCHEDULE}---\n{}",
            site("paris", "voice", "eu", "x")
                .replace("maxConcurrentDownloads: 2", "maxConcurrentDownloads: -2")
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(
            e.contains("document 2 (PhoneSite voice/paris): spec.maxConcurrentDownloads:"),
            "{e}"
        );
    }

    #[test]
    fn unknown_fields_are_refused_not_dropped() {
        let text = SCHEDULE.replace("enabled: true,", "enabled: true, intervalWeek: 2,");
        let e = parse(&text).unwrap_err().to_string();
        assert_eq!(
            e,
            "document 1 (PhoneSchedule voice/night): spec.provisioning.weekly.intervalWeek: unknown field, not part of phonefleet.io/v1alpha1"
        );
    }

    #[test]
    fn invalid_values_name_document_field_and_value() {
        let text = format!(
            "{SCHEDULE}---\n{}",
            site("paris", "voice", "eu", "00:0b:82:00:00:zz")
        );
        let e = parse(&text).unwrap().fleet().unwrap_err().to_string();
        assert!(
            e.contains(
                "document 2 (PhoneSite voice/paris): spec.phones[0].mac: \"00:0b:82:00:00:zz\""
            ),
            "{e}"
        );
    }

    #[test]
    fn a_phone_in_two_sites_is_refused() {
        let text = [
            SCHEDULE.to_owned(),
            site("paris", "voice", "eu", "00:0b:82:00:00:01"),
            site("berlin", "voice", "eu", "000b82000001"),
        ]
        .join("---\n");
        let e = parse(&text).unwrap().fleet().unwrap_err().to_string();
        assert_eq!(
            e,
            "phone 00:0b:82:00:00:01 of site paris is already in site berlin"
        );
    }

    #[test]
    fn needs_exactly_one_schedule() {
        assert!(matches!(
            parse(&site("a", "voice", "eu", "000b82000001")),
            Err(ManifestError::NoSchedule)
        ));
        let two = format!("{SCHEDULE}---\n{SCHEDULE}");
        assert!(matches!(
            parse(&two),
            Err(ManifestError::SeveralSchedules { .. })
        ));
    }
}
