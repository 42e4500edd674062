//! The human-readable summary of `phonefleet plan` (the default output).

use std::fmt::Write;

use chrono::{DateTime, FixedOffset, Utc};

use super::utc;
use crate::core::plan::Plan;

fn local_short(t: DateTime<FixedOffset>) -> String {
    t.format("%a %Y-%m-%d %H:%M %:z").to_string()
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "-".to_owned(), utc)
}

/// Per site: phones, cap, slot length, slots, first and last slot in local time, completion;
/// then the stages, the fleet completion and the warnings.
pub fn to_table(plan: &Plan) -> String {
    let mut out = String::new();
    let firmware = plan.firmware.as_deref().unwrap_or("none (steady state)");
    let _ = writeln!(
        out,
        "Schedule {}  firmware {}  now {}",
        plan.schedule,
        firmware,
        utc(plan.now)
    );
    if plan.start > plan.now {
        let _ = writeln!(
            out,
            "No slot before {} (rollout.notBefore)",
            utc(plan.start)
        );
    }
    if plan.paused {
        let _ = writeln!(
            out,
            "PAUSED: the plan shows what happens once the rollout is resumed"
        );
    }
    let _ = writeln!(out);

    let header = [
        "SITE",
        "ZONE",
        "PHONES",
        "CAP",
        "SLOT",
        "SLOTS",
        "FIRST SLOT (LOCAL)",
        "LAST SLOT (LOCAL)",
        "COMPLETION (UTC)",
        "FAMILIES",
    ];
    let mut rows: Vec<[String; 10]> = Vec::with_capacity(plan.sites.len());
    for site in &plan.sites {
        let phones = if site.unplaced.is_empty() {
            site.phones.to_string()
        } else {
            format!("{} ({} unplaced)", site.phones, site.unplaced.len())
        };
        rows.push([
            site.name.clone(),
            site.time_zone.name().to_owned(),
            phones,
            site.cap.get().to_string(),
            match plan.firmware {
                Some(_) => format!("{}m", site.slot_minutes),
                None => "-".to_owned(),
            },
            site.slots.len().to_string(),
            site.slots
                .first()
                .map_or_else(|| "-".into(), |s| local_short(s.local_start)),
            site.slots
                .last()
                .map_or_else(|| "-".into(), |s| local_short(s.local_start)),
            when(site.completion),
            site.family_constraint(),
        ]);
    }
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: &[String]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            let pad = w - cell.chars().count();
            // Numbers right-aligned, text left-aligned.
            if (2..=5).contains(&i) {
                l.push_str(&" ".repeat(pad));
                l.push_str(cell);
            } else {
                l.push_str(cell);
                l.push_str(&" ".repeat(pad));
            }
            l.push_str("  ");
        }
        let _ = writeln!(out, "{}", l.trim_end());
    };
    line(&header.map(str::to_owned));
    for row in &rows {
        line(row);
    }

    let _ = writeln!(out);
    if plan.firmware.is_some() {
        let _ = writeln!(out, "Stages:");
        for s in &plan.stages {
            let _ = writeln!(
                out,
                "  {:<12} {:>3}%  {:>7} phones  {} → {}",
                s.name,
                s.percent,
                s.phones,
                when(s.start),
                when(s.end)
            );
        }
        let _ = writeln!(
            out,
            "Fleet: {} phones, {} unplaced, completion {}",
            plan.phones(),
            plan.unplaced(),
            when(plan.completion)
        );
    }
    if !plan.warnings.is_empty() {
        let _ = writeln!(out, "Warnings:");
        for w in &plan.warnings {
            let _ = writeln!(out, "  - {w}");
        }
    }
    out
}
