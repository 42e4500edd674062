use compact_str::CompactString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::core::PhoneFamily;

/// A MAC address as printed on labels: 12 hex digits, bare or in six pairs separated by `:`
/// or by `-`.
pub const MAC_PATTERN: &str =
    "^([0-9A-Fa-f]{12}|([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}|([0-9A-Fa-f]{2}-){5}[0-9A-Fa-f]{2})$";
/// The shape of an IANA zone name (`UTC`, `Europe/Paris`, `America/Port-au-Prince`); whether
/// the zone exists is checked by the controller.
pub const TIME_ZONE_PATTERN: &str = "^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$";

/// A site: one WAN link with the phones behind it, its time zone and its download cap.
///
/// The phone list lives in the spec (about 60 bytes a phone), so one PhoneSite holds a
/// site of well over 10,000 phones inside the API server's 1.5 MiB object limit; larger
/// locations are split into several sites, which also matches how their links are split.
// Each `printcolumn(...)` repeats `type_`; clippy takes the repeats for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "phonefleet.io",
    version = "v1alpha1",
    kind = "PhoneSite",
    plural = "phonesites",
    shortname = "psite",
    category = "phonefleet",
    namespaced,
    status = "PhoneSiteStatus",
    doc = "A site: one WAN link with the phones behind it (MAC and model), its IANA time zone \
           and the most phones that may download firmware at once without saturating the link.",
    printcolumn(
        name = "Zone",
        type_ = "string",
        json_path = ".spec.timeZone",
        description = "IANA time zone every window of the site is read in"
    ),
    printcolumn(
        name = "Phones",
        type_ = "integer",
        json_path = ".status.phoneCount",
        description = "Phones in the inventory, as last counted by the controller"
    ),
    printcolumn(
        name = "Cap",
        type_ = "integer",
        json_path = ".spec.maxConcurrentDownloads",
        description = "Most concurrent firmware downloads"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PhoneSiteSpec {
    /// IANA time zone of the site (e.g. `Europe/Paris`). Every window is read in this zone,
    /// daylight-saving changes included. An unknown zone is reported by the controller.
    #[schemars(length(min = 1, max = 64), regex(pattern = TIME_ZONE_PATTERN))]
    pub time_zone: String,
    /// Most phones of this site that may download firmware at the same time: the cap that
    /// protects the site's WAN link. At least 1.
    #[schemars(range(min = 1))]
    pub max_concurrent_downloads: u32,
    /// Bandwidth of the site's uplink in megabits per second. With a firmware `sizeBytes` it
    /// lets phonefleet derive how long one download takes when the schedule does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub uplink_mbps: Option<u32>,
    /// The phones of the site, one entry per MAC address (at most 20,000). The API server
    /// rejects the same MAC written twice the same way; the controller also catches the same
    /// MAC written in two forms (`00:0b:82:12:34:56` and `000b82123456`).
    #[serde(default)]
    #[schemars(
        length(max = 20000),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["mac"])
    )]
    pub phones: Vec<PhoneEntry>,
}

/// One phone of a site's inventory.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhoneEntry {
    /// MAC address, as printed on the phone's label: 12 hex digits, bare or as six pairs
    /// separated by `:` or `-` (e.g. `00:0b:82:12:34:56`). Case does not matter to phonefleet.
    #[schemars(regex(pattern = MAC_PATTERN))]
    pub mac: CompactString,
    /// Phone model as it appears in the User-Agent (e.g. `GXP2170`, `SIP-T46U`); firmware
    /// rollouts can be limited to some models.
    #[schemars(length(min = 1, max = 64))]
    pub model: CompactString,
    /// Whose provisioning keys the phone reads: `xstim`, `yealink` or `grandstream`. Leave it
    /// out to place the phone by its model (Yealink `SIP-…`/`T…`/`CP…`/`VP…`/`W…`/`AX…`,
    /// Grandstream `GXP21xx`/`GRP261x`; see docs/phones.md). XSTIM phones and every other
    /// model need it: a phone no family places is reported and gets no file, never another
    /// vendor's keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<PhoneFamily>,
}

/// What the controller observed about a site; written only by phonefleet.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhoneSiteStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Phones in `spec.phones` (a printer column cannot count a list, so the controller
    /// writes the count here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_count: Option<u32>,
    /// Standard conditions, e.g. `Valid=False` for an unknown time zone or a MAC listed twice
    /// in two written forms.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
