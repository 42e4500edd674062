use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A site: one WAN link with the phones behind it, its time zone and its download cap.
///
/// The phone list lives in the spec (about 60 bytes a phone), so one PhoneSite holds a
/// site of well over 10,000 phones inside the API server's 1.5 MiB object limit; larger
/// locations are split into several sites, which also matches how their links are split.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "phonefleet.io",
    version = "v1alpha1",
    kind = "PhoneSite",
    plural = "phonesites",
    shortname = "psite",
    category = "phonefleet",
    namespaced
)]
#[serde(rename_all = "camelCase")]
pub struct PhoneSiteSpec {
    /// IANA time zone of the site (e.g. `Europe/Paris`). Every window is read in this zone,
    /// daylight-saving changes included.
    pub time_zone: String,
    /// Most phones of this site that may download firmware at the same time: the cap that
    /// protects the site's WAN link.
    pub max_concurrent_downloads: u32,
    /// Bandwidth of the site's uplink in megabits per second. With a firmware `sizeBytes` it
    /// lets phonefleet derive how long one download takes when the schedule does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink_mbps: Option<u32>,
    /// The phones of the site, one entry per MAC address.
    #[serde(default)]
    pub phones: Vec<PhoneEntry>,
}

/// One phone of a site's inventory.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhoneEntry {
    /// MAC address, as printed on the phone's label: 12 hex digits, with or without `:`
    /// or `-` separators (e.g. `00:0b:82:12:34:56`).
    pub mac: String,
    /// Phone model as it appears in the User-Agent (e.g. `GXP2170`, `SIP-T46U`); firmware
    /// rollouts can be limited to some models.
    pub model: String,
}
