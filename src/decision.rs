//! The decision the controller stores per shard, instead of every phone's rendered file: what
//! rendering needs once per site ([`ShardHeader`]: site, time zone, cap, check minutes, server
//! URL, provisioning policy, firmware, models) under [`DECISION_KEY`], and one short line per
//! phone ([`DecidedPhone`]: MAC, model, slot) under [`PHONES_KEY`]. The provisioning server
//! renders a phone's file on request from it ([`RenderContext::render`]) with
//! [`crate::render::phone::phone_file`], the function `phonefleet render` calls, so the served
//! bytes are what the decision implies.
//!
//! A phone line is `<bare mac>,<model>` without a slot and
//! `<bare mac>,<model>,<stage>,<start>,<length>[,h]` with one: `<model>` indexes
//! [`ShardHeader::models`], `<start>` counts seconds from [`ShardHeader::base`] and `<length>`
//! the slot's seconds (`n<nanoseconds>` when not whole seconds), `h` marks a slot announced
//! ahead of its stage ([`IndexSlot::held`]). About 30 bytes a phone with a slot, 15 without
//! (docs/controller.md, "Children and their size").

use std::num::NonZeroU32;

use chrono::{DateTime, Duration, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::children::{IndexFirmware, IndexPhone, IndexSlot, ShardIndex};
use crate::core::{
    DaySet, FirmwareTarget, FlexiblePolicy, LocalTime, LocalWindow, Mac, PhoneFamily,
    ProvisioningPolicy, WeeklyPolicy,
};
use crate::render::phone::{PhoneFile, phone_file};
use crate::render::{Format, RenderedFile, ServerUrl};

/// Data key of a shard's [`ShardHeader`] (JSON).
pub const DECISION_KEY: &str = "phonefleet-decision.json";
/// Data key of a shard's phone lines.
pub const PHONES_KEY: &str = "phonefleet-phones";

/// What rendering needs once per site, and what the server needs to gate downloads.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ShardHeader {
    /// `namespace/name` of the schedule.
    pub schedule: String,
    pub site: String,
    pub time_zone: String,
    /// Effective cap of concurrent firmware downloads for the site.
    pub cap: u32,
    /// Minutes of the site's check window inside a slot.
    pub check_minutes: u32,
    /// Base URL phones reach the provisioning server at, as written into their files.
    pub server_url: String,
    pub provisioning: WirePolicy,
    /// The rollout's firmware, if a rollout is running (not paused, not halted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<IndexFirmware>,
    /// The (model, family) pairs the phone lines index.
    pub models: Vec<WireModel>,
    /// Unix seconds the phone lines' slot starts count from.
    #[serde(default)]
    pub base: i64,
}

/// A model as the inventory names it, with the family whose keys its file is written in.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct WireModel {
    pub model: String,
    pub family: PhoneFamily,
}

/// [`ProvisioningPolicy`] on the wire: times in minutes after midnight, days as a list.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WirePolicy {
    pub power_on: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_minutes: Option<u32>,
    pub weekly: WireWeekly,
    pub flexible: WireFlexible,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WireWeekly {
    pub enabled: bool,
    pub interval_weeks: u8,
    pub inactivity_minutes: u8,
    pub start: u32,
    pub end: u32,
    /// Days from Monday (0) to Sunday (6).
    pub days: Vec<u8>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WireFlexible {
    pub enabled: bool,
    pub interval_days: u16,
    pub start: u32,
    pub end: u32,
}

/// One phone of a shard, as the decision has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecidedPhone {
    pub mac: Mac,
    /// Index into [`ShardHeader::models`].
    pub model: u32,
    pub slot: Option<IndexSlot>,
}

/// Why a stored decision could not be read (the shard is skipped and logged).
#[derive(Debug, thiserror::Error)]
pub enum DecisionError {
    #[error("{DECISION_KEY} is not a shard header: {0}")]
    Header(serde_json::Error),
    #[error("{PHONES_KEY} line {line}: {what}")]
    Line { line: usize, what: &'static str },
    #[error("unknown time zone '{0}'")]
    TimeZone(String),
    #[error("{0}")]
    ServerUrl(#[from] crate::render::RenderError),
    #[error("provisioning policy holds an impossible value: {0}")]
    Policy(&'static str),
}

impl From<&ProvisioningPolicy> for WirePolicy {
    fn from(p: &ProvisioningPolicy) -> Self {
        WirePolicy {
            power_on: p.power_on,
            repeat_minutes: p.repeatedly.map(NonZeroU32::get),
            weekly: WireWeekly {
                enabled: p.weekly.enabled,
                interval_weeks: p.weekly.interval_weeks,
                inactivity_minutes: p.weekly.inactivity_minutes,
                start: p.weekly.window.start.minutes(),
                end: p.weekly.window.end.minutes(),
                days: p
                    .weekly
                    .days
                    .iter()
                    .map(|d| d.num_days_from_monday() as u8)
                    .collect(),
            },
            flexible: WireFlexible {
                enabled: p.flexible.enabled,
                interval_days: p.flexible.interval_days,
                start: p.flexible.window.start.minutes(),
                end: p.flexible.window.end.minutes(),
            },
        }
    }
}

impl WirePolicy {
    /// The policy again; fails only on values no controller writes.
    pub fn to_policy(&self) -> Result<ProvisioningPolicy, DecisionError> {
        let time = |m: u32| LocalTime::from_minutes(m).ok_or(DecisionError::Policy("time"));
        let days = self
            .weekly
            .days
            .iter()
            .map(|&d| Weekday::try_from(d).map_err(|_| DecisionError::Policy("weekday")))
            .collect::<Result<DaySet, _>>()?;
        Ok(ProvisioningPolicy {
            power_on: self.power_on,
            repeatedly: self.repeat_minutes.and_then(NonZeroU32::new),
            weekly: WeeklyPolicy {
                enabled: self.weekly.enabled,
                interval_weeks: self.weekly.interval_weeks,
                inactivity_minutes: self.weekly.inactivity_minutes,
                window: LocalWindow {
                    start: time(self.weekly.start)?,
                    end: time(self.weekly.end)?,
                },
                days,
            },
            flexible: FlexiblePolicy {
                enabled: self.flexible.enabled,
                interval_days: self.flexible.interval_days,
                window: LocalWindow {
                    start: time(self.flexible.start)?,
                    end: time(self.flexible.end)?,
                },
            },
        })
    }
}

/// The base for a set of slots, from their starts: the earliest, in whole seconds (0 without
/// slots).
pub fn base_of(starts: impl IntoIterator<Item = DateTime<Utc>>) -> i64 {
    starts
        .into_iter()
        .map(|start| start.timestamp())
        .min()
        .unwrap_or(0)
}

/// Appends one phone's line (with its newline) to `out`.
pub fn encode_phone(base: i64, phone: &DecidedPhone, out: &mut String) {
    // Written by hand rather than with `write!`: every reconcile encodes every phone (to hash
    // each shard), a million lines at the largest fleets.
    let mut number = itoa::Buffer::new();
    push_bare_mac(out, phone.mac);
    out.push(',');
    out.push_str(number.format(phone.model));
    if let Some(slot) = phone.slot {
        let from_base = slot.start - DateTime::from_timestamp(base, 0).unwrap_or_default();
        out.push(',');
        out.push_str(number.format(slot.stage));
        out.push(',');
        write_span(out, from_base);
        out.push(',');
        write_span(out, slot.end - slot.start);
        if slot.held {
            out.push_str(",h");
        }
    }
    out.push('\n');
}

/// The MAC as twelve lowercase hex digits (as [`Mac::bare`] displays it).
fn push_bare_mac(out: &mut String, mac: Mac) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let v = mac.as_u64();
    for shift in (0..12).rev() {
        out.push(char::from(HEX[((v >> (shift * 4)) & 0xf) as usize]));
    }
}

/// Whole seconds as a number, anything finer as `n<nanoseconds>` (exact either way).
fn write_span(out: &mut String, d: Duration) {
    let mut number = itoa::Buffer::new();
    match d.num_nanoseconds() {
        Some(n) if n % 1_000_000_000 != 0 => {
            out.push('n');
            out.push_str(number.format(n));
        }
        _ => out.push_str(number.format(d.num_seconds())),
    }
}

fn read_span(s: &str) -> Option<Duration> {
    match s.strip_prefix('n') {
        Some(n) => n.parse().ok().map(Duration::nanoseconds),
        None => s.parse().ok().and_then(Duration::try_seconds),
    }
}

/// The phone lines of `phones`.
pub fn encode_phones<'a>(base: i64, phones: impl IntoIterator<Item = &'a DecidedPhone>) -> String {
    let mut out = String::new();
    for p in phones {
        encode_phone(base, p, &mut out);
    }
    out
}

/// Reads phone lines back, calling `each` per phone (so a caller keeps only what it needs).
pub fn decode_phones(
    base: i64,
    lines: &str,
    mut each: impl FnMut(DecidedPhone),
) -> Result<(), DecisionError> {
    let base = DateTime::from_timestamp(base, 0).ok_or(DecisionError::Line {
        line: 0,
        what: "base out of range",
    })?;
    for (i, line) in lines.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let bad = |what| DecisionError::Line { line: i + 1, what };
        let mut fields = line.split(',');
        let mac: Mac = fields
            .next()
            .and_then(|m| m.parse().ok())
            .ok_or_else(|| bad("not a MAC"))?;
        let model: u32 = fields
            .next()
            .and_then(|m| m.parse().ok())
            .ok_or_else(|| bad("no model index"))?;
        let slot = match fields.next() {
            None => None,
            Some(stage) => {
                let stage: u32 = stage.parse().map_err(|_| bad("bad stage"))?;
                let start = fields
                    .next()
                    .and_then(read_span)
                    .and_then(|d| base.checked_add_signed(d))
                    .ok_or_else(|| bad("bad slot start"))?;
                let end = fields
                    .next()
                    .and_then(read_span)
                    .and_then(|d| start.checked_add_signed(d))
                    .ok_or_else(|| bad("bad slot length"))?;
                let held = match fields.next() {
                    None => false,
                    Some("h") => true,
                    Some(_) => return Err(bad("unknown flag")),
                };
                Some(IndexSlot {
                    stage,
                    start,
                    end,
                    held,
                })
            }
        };
        if fields.next().is_some() {
            return Err(bad("trailing fields"));
        }
        each(DecidedPhone { mac, model, slot });
    }
    Ok(())
}

/// What the provisioning server renders a shard's files with, read once per shard.
#[derive(Clone, Debug)]
pub struct RenderContext {
    pub site: String,
    pub time_zone: Tz,
    pub check_minutes: u32,
    pub provisioning: ProvisioningPolicy,
    pub server_url: ServerUrl,
    pub firmware: Option<FirmwareTarget>,
    pub models: Vec<WireModel>,
}

impl ShardHeader {
    /// Reads a header from its JSON.
    pub fn parse(json: &str) -> Result<Self, DecisionError> {
        serde_json::from_str(json).map_err(DecisionError::Header)
    }

    /// The header as stored (serialising plain structs cannot fail).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// What files of this shard are rendered with.
    pub fn render_context(&self) -> Result<RenderContext, DecisionError> {
        Ok(RenderContext {
            site: self.site.clone(),
            time_zone: self
                .time_zone
                .parse()
                .map_err(|_| DecisionError::TimeZone(self.time_zone.clone()))?,
            check_minutes: self.check_minutes,
            provisioning: self.provisioning.to_policy()?,
            server_url: self.server_url.parse()?,
            firmware: self.firmware.as_ref().map(|f| FirmwareTarget {
                version: f.version.clone(),
                file: f.file.clone(),
                size_bytes: None,
                models: None,
            }),
            models: self.models.clone(),
        })
    }
}

/// A shard's data read as the older [`ShardIndex`] (MAC → model, file name, slot): one view
/// for readers that only look (`kubectl phonefleet`, tests). `None` without a decision.
pub fn shard_index(
    data: &std::collections::BTreeMap<String, String>,
) -> Option<Result<ShardIndex, DecisionError>> {
    let header = data.get(DECISION_KEY)?;
    Some((|| {
        let header = ShardHeader::parse(header)?;
        let mut phones = std::collections::BTreeMap::new();
        let lines = data.get(PHONES_KEY).map_or("", String::as_str);
        let mut missing = None;
        decode_phones(header.base, lines, |p| {
            let Some(model) = header.models.get(p.model as usize) else {
                missing = Some(p.mac);
                return;
            };
            phones.insert(
                p.mac.bare().to_string(),
                IndexPhone {
                    model: model.model.clone(),
                    file: Format::of(model.family).file_name(p.mac),
                    slot: p.slot,
                },
            );
        })?;
        if missing.is_some() {
            return Err(DecisionError::Line {
                line: 0,
                what: "model index outside the header's models",
            });
        }
        Ok(ShardIndex {
            schedule: header.schedule,
            site: header.site,
            time_zone: header.time_zone,
            cap: header.cap,
            firmware: header.firmware,
            phones,
        })
    })())
}

impl RenderContext {
    /// The file of `phone`; `None` if its model index is not in the header.
    pub fn render(&self, phone: &DecidedPhone) -> Option<RenderedFile> {
        let model = self.models.get(phone.model as usize)?;
        Some(phone_file(&PhoneFile {
            mac: phone.mac,
            model: &model.model,
            family: model.family,
            site: &self.site,
            time_zone: self.time_zone,
            check_minutes: self.check_minutes,
            slot: phone.slot,
            firmware: self.firmware.as_ref(),
            provisioning: &self.provisioning,
            server_url: &self.server_url,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    fn slot(start: i64, len: i64, nanos: u32, stage: u32, held: bool) -> IndexSlot {
        let start = DateTime::from_timestamp(start, nanos).unwrap();
        IndexSlot {
            stage,
            start,
            end: start + Duration::seconds(len),
            held,
        }
    }

    proptest! {
        /// The hand-written encoding spells numbers and MACs as `Display` does.
        #[test]
        fn phone_lines_spell_macs_and_numbers_as_display_does(
            mac in 0u64..(1 << 48),
            model in any::<u32>(),
            stage in any::<u32>(),
            start in 0i64..4_000_000_000,
            nanos in prop_oneof![Just(0u32), 1u32..1_000_000_000],
            len in 0i64..10_000_000,
        ) {
            let mac = Mac::from_u64(mac).expect("48 bits");
            let slot = slot(start, len, nanos, stage, false);
            let base = start - 1000;
            let mut line = String::new();
            encode_phone(base, &DecidedPhone { mac, model, slot: Some(slot) }, &mut line);
            let from_base = slot.start - DateTime::from_timestamp(base, 0).unwrap();
            let span = |d: Duration| match d.num_nanoseconds() {
                Some(n) if n % 1_000_000_000 != 0 => format!("n{n}"),
                _ => d.num_seconds().to_string(),
            };
            prop_assert_eq!(
                line,
                format!("{},{model},{stage},{},{}\n", mac.bare(), span(from_base), span(slot.end - slot.start))
            );
        }
    }

    fn round_trip(base: i64, phones: &[DecidedPhone]) -> Vec<DecidedPhone> {
        let text = encode_phones(base, phones);
        let mut back = Vec::new();
        decode_phones(base, &text, |p| back.push(p)).expect("decodes");
        back
    }

    proptest! {
        #[test]
        fn phone_lines_round_trip(
            phones in proptest::collection::vec(
                (any::<u64>(), 0u32..20, proptest::option::of((
                    1_700_000_000i64..1_900_000_000, 0i64..1_000_000, prop_oneof![Just(0u32), 0u32..1_000_000_000],
                    0u32..10, any::<bool>(),
                ))),
                0..50,
            )
        ) {
            let phones: Vec<DecidedPhone> = phones
                .into_iter()
                .map(|(bits, model, s)| DecidedPhone {
                    mac: Mac::from_u64(bits & 0xffff_ffff_ffff).unwrap(),
                    model,
                    slot: s.map(|(start, len, nanos, stage, held)| slot(start, len, nanos, stage, held)),
                })
                .collect();
            let base = base_of(phones.iter().filter_map(|p| p.slot.map(|s| s.start)));
            prop_assert_eq!(round_trip(base, &phones), phones);
        }
    }

    /// The budget is 50 bytes a phone in the API, ConfigMap metadata included: a line
    /// with a slot stays well under it.
    #[test]
    fn a_phone_line_stays_short() {
        let base = 1_780_000_000;
        let with_slot = DecidedPhone {
            mac: "00:0b:82:12:34:56".parse().unwrap(),
            model: 12,
            slot: Some(slot(base + 6 * 86_400 + 3_600, 600, 0, 3, true)),
        };
        let without = DecidedPhone {
            slot: None,
            ..with_slot
        };
        let line = encode_phones(base, [&with_slot]);
        assert!(line.len() <= 32, "{} bytes: {line:?}", line.len());
        assert!(encode_phones(base, [&without]).len() <= 16);
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        for bad in [
            "zz,0\n",
            "000b82123456\n",
            "000b82123456,0,1\n",
            "000b82123456,0,1,0,60,x\n",
            "000b82123456,0,1,0,60,h,1\n",
        ] {
            let text = format!("000b82000001,0\n{bad}");
            let err = decode_phones(0, &text, |_| {}).unwrap_err();
            assert!(
                matches!(err, DecisionError::Line { line: 2, .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_policy_survives_the_wire() {
        let policy = ProvisioningPolicy {
            power_on: false,
            repeatedly: NonZeroU32::new(90),
            weekly: WeeklyPolicy {
                enabled: true,
                interval_weeks: 2,
                inactivity_minutes: 15,
                window: LocalWindow {
                    start: "22:30".parse().unwrap(),
                    end: "05:00".parse().unwrap(),
                },
                days: [Weekday::Mon, Weekday::Sun].into_iter().collect(),
            },
            flexible: FlexiblePolicy {
                enabled: false,
                interval_days: 3,
                window: LocalWindow {
                    start: "01:00".parse().unwrap(),
                    end: "02:00".parse().unwrap(),
                },
            },
        };
        let wire = WirePolicy::from(&policy);
        let json = serde_json::to_string(&wire).unwrap();
        let back: WirePolicy = serde_json::from_str(&json).unwrap();
        assert_eq!(back.to_policy().unwrap(), policy);
    }
}
