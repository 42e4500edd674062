//! The configuration files phones fetch, rendered from a schedule's provisioning policy and,
//! during a rollout, the phone's own slot.
//!
//! Pure: the same input gives the same bytes, so the controller can compare a rendered file with
//! what it stored and write nothing when nothing changed. One module per phone family
//! ([`PhoneFamily`]): each writes only the keys its vendor documents (`docs/phones.md`), from
//! the knobs computed once in `Knobs`. A phone no family places gets no file at all.
//!
//! During a rollout slot the file narrows the phone's checks to its own slot: weekly on, every
//! week (interval 0), only the slot's weekday, the slot's check window, flexible off, and a
//! firmware location (Grandstream: daily at the slot's whole hours, see `grandstream`).
//! "Repeatedly" stays as the operator set it on the families that can combine it with a
//! window, like power-on: a phone only learns a new slot when it fetches its file, so a phone
//! that missed its slot needs its repeated checks to hear of the next one within the hour
//! instead of a week later; firmware it asks for outside its slot is refused by the
//! provisioning server (503, Retry-After). Outside a slot, or once the phone is done, the file
//! carries the operator's policy (as far as the family can say it) and no firmware location,
//! so firmware only ever goes out inside planned slots.

mod file_name;
mod grandstream;
pub mod phone;
mod pvalues;
mod xstim;
mod yealink;

use std::fmt;
use std::str::FromStr;

use chrono::Weekday;

pub use file_name::{FileNameError, parse_file_name};
pub use grandstream::GRANDSTREAM_KEYS;
pub use xstim::{DAY_PCODES, XSTIM_KEYS};
pub use yealink::YEALINK_KEYS;

pub use crate::core::PhoneFamily;
use crate::core::{CheckWindow, DaySet, LocalWindow, Mac, ProvisioningPolicy};

/// "Check for upgrade every" when "Repeatedly" is off: the phone's own default (one week), so
/// the file never leaves the value undefined.
const DEFAULT_REPEAT_MINUTES: u32 = 10080;

/// A configuration file's shape: the file name phones of a family request and its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Format {
    /// `<gs_provision>` XML P-values, served as `cfg<mac>.xml` (Grandstream; XSTIM by
    /// assumption, see docs/phones.md).
    Xml,
    /// Yealink `static.*` keys, served as `<mac>.cfg`.
    Yealink,
}

impl Format {
    /// Every format, in a fixed order.
    pub const ALL: [Format; 2] = [Format::Xml, Format::Yealink];

    /// The format phones of `family` read.
    pub fn of(family: PhoneFamily) -> Format {
        match family {
            PhoneFamily::Xstim | PhoneFamily::Grandstream => Format::Xml,
            PhoneFamily::Yealink => Format::Yealink,
        }
    }

    /// The file name a phone with this MAC requests for this format (MAC lower case, bare).
    pub fn file_name(self, mac: Mac) -> String {
        let mac = mac.bare();
        match self {
            Format::Xml => format!("cfg{mac}.xml"),
            Format::Yealink => format!("{mac}.cfg"),
        }
    }

    /// The `Content-Type` the provisioning server sends with the file.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Xml => "application/xml; charset=utf-8",
            Format::Yealink => "text/plain; charset=utf-8",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Xml => "xml",
            Format::Yealink => "yealink",
        })
    }
}

/// Why a renderer input was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("provisioning server URL '{0}' must start with http:// or https:// and name a host")]
    ServerUrl(String),
    #[error(
        "firmware file '{0}' must be a plain file name (letters, digits, '.', '_', '+', '-'; no '/' or '..')"
    )]
    FirmwareFile(String),
    #[error(
        "site name '{0}' must be a Kubernetes object name (lower-case letters, digits, '-', '.')"
    )]
    SiteName(String),
}

/// The provisioning server's base URL as phones reach it, e.g. `http://prov.voice.example:8080`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerUrl {
    https: bool,
    /// Host, port and path prefix, without scheme or trailing `/`.
    rest: String,
}

impl FromStr for ServerUrl {
    type Err = RenderError;

    fn from_str(s: &str) -> Result<Self, RenderError> {
        let bad = || RenderError::ServerUrl(s.to_owned());
        let (https, rest) = if let Some(rest) = s.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = s.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(bad());
        };
        let rest = rest.trim_end_matches('/');
        // The URL ends up inside line-based files: nothing that could end a line or a value.
        let plain = |c: char| {
            c.is_ascii_graphic() && !matches!(c, '"' | '<' | '>' | '&' | '\'' | '#' | '?')
        };
        if rest.is_empty() || rest.starts_with('/') || !rest.chars().all(plain) {
            return Err(bad());
        }
        Ok(Self {
            https,
            rest: rest.to_owned(),
        })
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.rest)
    }
}

/// Where a site's firmware image lives on the provisioning server: `firmware/<site>/<file>`.
///
/// One directory per site lets the server count downloads against the right site's cap from
/// the path alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirmwarePath {
    site: String,
    file: String,
}

impl FirmwarePath {
    /// Checks both parts, since they end up in URLs and inside the phones' files.
    pub fn new(site: &str, file: &str) -> Result<Self, RenderError> {
        let site_ok = !site.is_empty()
            && site.len() <= 253
            && site
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !site.starts_with(['-', '.']);
        if !site_ok {
            return Err(RenderError::SiteName(site.to_owned()));
        }
        if !is_plain_file_name(file) {
            return Err(RenderError::FirmwareFile(file.to_owned()));
        }
        Ok(Self {
            site: site.to_owned(),
            file: file.to_owned(),
        })
    }

    /// The PhoneSite name.
    pub fn site(&self) -> &str {
        &self.site
    }

    /// The firmware image's file name.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The directory, relative to the server's base URL: `firmware/<site>`.
    pub fn dir(&self) -> String {
        format!("firmware/{}", self.site)
    }
}

impl fmt::Display for FirmwarePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "firmware/{}/{}", self.site, self.file)
    }
}

/// Whether `name` is a file name that cannot leave its directory: `[A-Za-z0-9_][A-Za-z0-9._+-]*`
/// without `..` (the CRD's own rule for `firmware.file`).
pub fn is_plain_file_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    first_ok
        && name.len() <= 253
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
        && !name.contains("..")
}

/// A phone's part of a running rollout, as the controller maps it from the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutSlot {
    /// The version the phone should report once upgraded (shown in the file's comment).
    pub firmware_version: String,
    /// Where the phone fetches the image.
    pub firmware: FirmwarePath,
    /// When the phone checks: the weekday and local window of its slot
    /// ([`crate::core::Slot::check_window`]).
    pub window: CheckWindow,
}

/// Everything one phone's file depends on.
#[derive(Clone, Copy, Debug)]
pub struct PhoneConfig<'a> {
    pub mac: Mac,
    /// The model as in the inventory (shown in the file's comment).
    pub model: &'a str,
    /// Whose keys the file is written in.
    pub family: PhoneFamily,
    /// The schedule's steady-state policy.
    pub provisioning: &'a ProvisioningPolicy,
    /// The phone's slot while it takes part in a rollout and is not done; `None` otherwise.
    pub slot: Option<&'a RolloutSlot>,
}

/// One rendered file: the name the phone requests and the exact bytes served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedFile {
    pub name: String,
    pub content_type: &'static str,
    pub body: String,
}

/// Renders one phone's file, in its family's keys and format.
pub fn render(phone: &PhoneConfig<'_>, server: &ServerUrl) -> RenderedFile {
    let knobs = Knobs::new(phone, server);
    let format = Format::of(phone.family);
    let mut body = String::with_capacity(file_capacity(phone.family));
    match phone.family {
        PhoneFamily::Xstim => xstim::render(&knobs, &mut body),
        PhoneFamily::Yealink => yealink::render(&knobs, &mut body),
        PhoneFamily::Grandstream => grandstream::render(&knobs, phone.provisioning, &mut body),
    }
    RenderedFile {
        name: format.file_name(phone.mac),
        content_type: format.content_type(),
        body,
    }
}

/// The phone's knobs with the slot applied: what every format writes, in its own spelling.
///
/// Borrowed from the phone's inputs and written straight into the file by the formats: the
/// provisioning server renders a file on every request its cache does not answer (issue #18),
/// so a file is one buffer, not a string per value.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Knobs<'a> {
    mac: Mac,
    /// The model as in the inventory, for the comment.
    model: &'a str,
    power_on: bool,
    repeat: bool,
    repeat_minutes: u32,
    weekly: bool,
    interval_weeks: u32,
    inactivity_minutes: u32,
    weekly_window: LocalWindow,
    days: DaySet,
    flexible: bool,
    interval_days: u32,
    flexible_window: LocalWindow,
    /// The rollout slot, inside a slot (for the comment).
    rollout: Option<&'a RolloutSlot>,
    firmware: Option<FirmwareLocation<'a>>,
    /// The slot's check window, inside a slot.
    slot: Option<CheckWindow>,
}

/// The firmware location in the two shapes phones take it, as the pieces of its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FirmwareLocation<'a> {
    server: &'a ServerUrl,
    path: &'a FirmwarePath,
}

impl<'a> FirmwareLocation<'a> {
    fn https(self) -> bool {
        self.server.https
    }

    /// The directory without scheme (Grandstream's P192 "Firmware Server Path").
    fn dir_without_scheme(self) -> [&'a str; 3] {
        [&self.server.rest, "/firmware/", &self.path.site]
    }

    /// The image's full URL (Yealink's `static.firmware.url`).
    fn url(self) -> [&'a str; 6] {
        let scheme = if self.server.https {
            "https://"
        } else {
            "http://"
        };
        let [rest, dir, site] = self.dir_without_scheme();
        [scheme, rest, dir, site, "/", &self.path.file]
    }
}

impl<'a> Knobs<'a> {
    fn new(phone: &PhoneConfig<'a>, server: &'a ServerUrl) -> Self {
        let p = phone.provisioning;
        let steady = Knobs {
            mac: phone.mac,
            model: phone.model,
            power_on: p.power_on,
            repeat: p.repeatedly.is_some(),
            repeat_minutes: p.repeatedly.map_or(DEFAULT_REPEAT_MINUTES, |m| m.get()),
            weekly: p.weekly.enabled,
            interval_weeks: u32::from(p.weekly.interval_weeks),
            inactivity_minutes: u32::from(p.weekly.inactivity_minutes),
            weekly_window: p.weekly.window,
            days: p.weekly.days,
            flexible: p.flexible.enabled,
            interval_days: u32::from(p.flexible.interval_days),
            flexible_window: p.flexible.window,
            rollout: None,
            firmware: None,
            slot: None,
        };
        match phone.slot {
            None => steady,
            Some(slot) => Knobs {
                weekly: true,
                interval_weeks: 0,
                // The planner sized the slot for the idle time of the windows it planned in.
                inactivity_minutes: p.rollout_windows().map_or(0, |w| w.inactivity_minutes),
                weekly_window: slot.window.window,
                days: [slot.window.weekday].into_iter().collect(),
                flexible: false,
                rollout: Some(slot),
                firmware: Some(FirmwareLocation {
                    server,
                    path: &slot.firmware,
                }),
                slot: Some(slot.window),
                ..steady
            },
        }
    }

    /// One line for humans: the phone, its model and its slot, each text on one line and
    /// without `--` (which would end an XML comment).
    fn write_comment(&self, out: &mut String) {
        out.push_str("phonefleet: ");
        push_mac(out, self.mac);
        out.push_str(" (");
        push_one_line(out, self.model);
        match self.rollout {
            None => out.push_str("), steady-state schedule"),
            Some(slot) => {
                out.push_str("), rollout slot ");
                out.push_str(weekday_name(slot.window.weekday));
                out.push(' ');
                push_time(out, slot.window.window.start);
                out.push('-');
                push_time(out, slot.window.window.end);
                out.push_str(", firmware ");
                push_one_line(out, &slot.firmware_version);
                out.push_str(" from firmware/");
                push_one_line(out, &slot.firmware.site);
                out.push('/');
                push_one_line(out, &slot.firmware.file);
            }
        }
    }
}

/// Three-letter English day name, as in the CRD.
fn weekday_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Sun => "Sun",
        Weekday::Mon => "Mon",
        Weekday::Tue => "Tue",
        Weekday::Wed => "Wed",
        Weekday::Thu => "Thu",
        Weekday::Fri => "Fri",
        Weekday::Sat => "Sat",
    }
}

/// Room for a file of the family with names of usual length, so it is written without
/// growing (and held in the server's cache without much slack).
fn file_capacity(family: PhoneFamily) -> usize {
    match family {
        PhoneFamily::Grandstream => 640,
        PhoneFamily::Xstim | PhoneFamily::Yealink => 1024,
    }
}

/// `s` with control characters replaced, so it cannot end a comment line, and `--` broken up
/// (`-_`, pairs from the left) so it cannot end an XML comment either.
fn push_one_line(out: &mut String, s: &str) {
    if s.bytes().all(|b| (b' '..=b'~').contains(&b)) && !s.contains("--") {
        out.push_str(s);
        return;
    }
    let mut dash = false;
    for c in s.chars() {
        let c = if c.is_control() { '?' } else { c };
        if c == '-' && dash {
            out.push('_');
            dash = false;
        } else {
            out.push(c);
            dash = c == '-';
        }
    }
}

/// The MAC's twelve lower-case digits, as in file names.
fn push_mac(out: &mut String, mac: Mac) {
    for digit in mac.bare().digits() {
        out.push(char::from(digit));
    }
}

fn push_u32(out: &mut String, n: u32) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// `HH:MM`, as [`LocalTime`](crate::core::LocalTime)'s `Display` writes it.
fn push_time(out: &mut String, t: crate::core::LocalTime) {
    push_two_digits(out, t.hour());
    out.push(':');
    push_two_digits(out, t.minute());
}

fn push_two_digits(out: &mut String, n: u32) {
    if n < 10 {
        out.push('0');
    }
    push_u32(out, n);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{FlexiblePolicy, WeeklyPolicy};

    fn window(start: &str, end: &str) -> LocalWindow {
        LocalWindow {
            start: start.parse().expect("HH:MM"),
            end: end.parse().expect("HH:MM"),
        }
    }

    fn policy() -> ProvisioningPolicy {
        ProvisioningPolicy {
            power_on: true,
            repeatedly: std::num::NonZeroU32::new(60),
            weekly: WeeklyPolicy {
                enabled: true,
                interval_weeks: 2,
                inactivity_minutes: 15,
                window: window("01:00", "05:00"),
                days: DaySet::ALL,
            },
            flexible: FlexiblePolicy {
                enabled: true,
                interval_days: 7,
                window: window("02:00", "03:00"),
            },
        }
    }

    fn slot() -> RolloutSlot {
        RolloutSlot {
            firmware_version: "1.2.3".into(),
            firmware: FirmwarePath::new("site-a", "fw.bin").expect("valid"),
            window: CheckWindow {
                weekday: Weekday::Wed,
                window: window("02:30", "02:55"),
            },
        }
    }

    static POLICY: std::sync::LazyLock<ProvisioningPolicy> = std::sync::LazyLock::new(policy);
    static SERVER: std::sync::LazyLock<ServerUrl> =
        std::sync::LazyLock::new(|| "http://prov:8080/".parse().expect("URL"));
    static SLOT: std::sync::LazyLock<RolloutSlot> = std::sync::LazyLock::new(slot);

    /// The knobs of a Grandstream phone, in `SLOT` or steady.
    fn knobs(in_slot: bool) -> Knobs<'static> {
        let phone = PhoneConfig {
            mac: "000b82123456".parse().expect("MAC"),
            model: "GXP2170",
            family: PhoneFamily::Grandstream,
            provisioning: &POLICY,
            slot: in_slot.then_some(&*SLOT),
        };
        Knobs::new(&phone, &SERVER)
    }

    #[test]
    fn steady_state_carries_the_policy_unchanged_and_no_firmware() {
        let k = knobs(false);
        assert_eq!((k.slot, k.firmware), (None, None));
        assert!(k.power_on && k.repeat && k.weekly && k.flexible);
        assert_eq!(
            (k.repeat_minutes, k.interval_weeks, k.inactivity_minutes),
            (60, 2, 15)
        );
        assert_eq!(
            (k.weekly_window, k.days),
            (window("01:00", "05:00"), DaySet::ALL)
        );
        assert_eq!(
            (k.interval_days, k.flexible_window),
            (7, window("02:00", "03:00"))
        );
    }

    #[test]
    fn a_slot_narrows_checks_to_its_weekday_and_window() {
        let k = knobs(true);
        assert!(k.weekly && k.interval_weeks == 0);
        assert_eq!(k.days.iter().collect::<Vec<_>>(), vec![Weekday::Wed]);
        assert_eq!(k.weekly_window, window("02:30", "02:55"));
    }

    #[test]
    fn a_slot_turns_flexible_off_and_keeps_power_on_and_repeated_checks() {
        let k = knobs(true);
        assert!(!k.flexible);
        // Power-on and repeated checks stay as the operator set them: the server refuses
        // firmware outside the slot, and repeated checks carry re-planned slots to the phone.
        assert!(k.power_on);
        assert_eq!(k.repeat, knobs(false).repeat);
    }

    #[test]
    fn a_slot_points_at_the_sites_firmware_directory() {
        let fw = knobs(true).firmware.expect("firmware location");
        assert_eq!(
            fw.dir_without_scheme().concat(),
            "prov:8080/firmware/site-a"
        );
        assert_eq!(fw.url().concat(), "http://prov:8080/firmware/site-a/fw.bin");
        assert!(!fw.https());
    }

    #[test]
    fn server_urls_need_a_scheme_and_a_host() {
        for bad in [
            "prov:8080",
            "ftp://prov",
            "http://",
            "https:///x",
            "http://a b",
            "http://p/\n",
        ] {
            assert!(bad.parse::<ServerUrl>().is_err(), "{bad:?}");
        }
        let url: ServerUrl = "https://prov.example/base/".parse().expect("valid");
        assert_eq!(url.to_string(), "https://prov.example/base");
    }

    #[test]
    fn firmware_paths_cannot_leave_their_directory() {
        for file in [
            "",
            "../fw.bin",
            "a/b.bin",
            ".hidden",
            "a..b",
            "fw bin",
            "fw\n.bin",
        ] {
            assert_eq!(
                FirmwarePath::new("site-a", file),
                Err(RenderError::FirmwareFile(file.into())),
                "{file:?}"
            );
        }
        for site in ["", "Site", "a/b", "-a", "a b"] {
            assert!(FirmwarePath::new(site, "fw.bin").is_err(), "{site:?}");
        }
        assert_eq!(
            FirmwarePath::new("site-a", "gxp2170fw_1.0+b-2.bin").map(|p| p.to_string()),
            Ok("firmware/site-a/gxp2170fw_1.0+b-2.bin".into())
        );
    }

    #[test]
    fn comments_cannot_break_out_of_their_line() {
        let one_line = |s: &str| {
            let mut out = String::new();
            push_one_line(&mut out, s);
            out
        };
        assert_eq!(one_line("a\nb--c"), "a?b-_c");
        assert_eq!(one_line("---x----"), "-_-x-_-_");
        assert_eq!(one_line("\u{1b}-\n-"), "?-?-");
    }

    /// XML forbids `--` inside a comment: a strict parser on the phone would refuse the whole
    /// file. Site and firmware file names may hold `--` (both pass their own checks).
    #[test]
    fn xml_comments_hold_no_double_hyphen_whatever_the_names() {
        let slot = RolloutSlot {
            firmware_version: "2--0".into(),
            firmware: FirmwarePath::new("a--b", "fw--1.bin").expect("valid"),
            ..slot()
        };
        let policy = policy();
        let server = "http://prov--1.example/".parse().expect("URL");
        for family in [PhoneFamily::Xstim, PhoneFamily::Grandstream] {
            for slot in [None, Some(&slot)] {
                let phone = PhoneConfig {
                    mac: "000b82123456".parse().expect("MAC"),
                    model: "m--x",
                    family,
                    provisioning: &policy,
                    slot,
                };
                let body = render(&phone, &server).body;
                let comment = body.lines().nth(1).expect("a comment line");
                let inner = comment
                    .strip_prefix("<!-- ")
                    .and_then(|c| c.strip_suffix(" -->"))
                    .expect("a comment");
                assert!(!inner.contains("--"), "{family}: {comment}");
                assert!(inner.contains("m-_x"), "{family}: {comment}");
            }
        }
    }

    #[test]
    fn each_family_reads_its_vendors_file_shape() {
        assert_eq!(Format::of(PhoneFamily::Yealink), Format::Yealink);
        assert_eq!(Format::of(PhoneFamily::Grandstream), Format::Xml);
        assert_eq!(Format::of(PhoneFamily::Xstim), Format::Xml);
    }
}
