//! The timeline picture of `phonefleet plan -o svg`: one row per site, one bar per slot,
//! coloured by stage, its height the slot's phones against the site's cap.

use chrono::Duration;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::ReportError;
use crate::core::plan::Plan;

/// Most site rows drawn; a larger fleet shows its first sites by name and says so.
pub const MAX_ROWS: usize = 40;

const WIDTH: u32 = 1400;
const ROW_PX: u32 = 30;
const HEADER_PX: u32 = 90;
const FOOTER_PX: u32 = 60;
/// Warnings listed under the timeline; more are counted, not listed.
const MAX_WARNINGS: usize = 6;
const WARNING_PX: u32 = 18;
const LABEL_PX: i32 = 230;

/// Stage colours, canary first (colour-blind-safe Okabe–Ito palette).
const STAGE_COLOURS: [RGBColor; 7] = [
    RGBColor(230, 159, 0),
    RGBColor(0, 114, 178),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(240, 228, 66),
];

fn stage_colour(stage: usize) -> RGBColor {
    STAGE_COLOURS[stage % STAGE_COLOURS.len()]
}

fn err(e: impl std::fmt::Display) -> ReportError {
    ReportError::Svg(e.to_string())
}

/// Draws the plan as an SVG document.
pub fn to_svg(plan: &Plan) -> Result<String, ReportError> {
    let shown = &plan.sites[..plan.sites.len().min(MAX_ROWS)];
    let rows = shown.len().max(1);
    let listed = plan.warnings.len().min(MAX_WARNINGS);
    let warning_lines = listed + usize::from(plan.warnings.len() > listed);
    let warnings_px = if warning_lines > 0 {
        10 + WARNING_PX * warning_lines as u32
    } else {
        0
    };
    let chart_px = ROW_PX * rows as u32 + FOOTER_PX;
    let height = HEADER_PX + chart_px + warnings_px;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (header, rest) = root.split_vertically(HEADER_PX);
        let (body, footer) = rest.split_vertically(chart_px);
        let warning_style = ("sans-serif", 13).into_font().color(&RGBColor(170, 60, 0));
        for (i, w) in plan.warnings.iter().take(MAX_WARNINGS).enumerate() {
            footer
                .draw(&Text::new(
                    format!("⚠ {w}"),
                    (12, 6 + (WARNING_PX as usize * i) as i32),
                    warning_style.clone(),
                ))
                .map_err(err)?;
        }
        if plan.warnings.len() > listed {
            footer
                .draw(&Text::new(
                    format!(
                        "… and {} more warnings (see `-o table`)",
                        plan.warnings.len() - listed
                    ),
                    (12, 6 + (WARNING_PX as usize * listed) as i32),
                    warning_style.clone(),
                ))
                .map_err(err)?;
        }

        let title = ("sans-serif", 20).into_font().color(&BLACK);
        let text = ("sans-serif", 13).into_font().color(&BLACK);
        let grey = ("sans-serif", 12).into_font().color(&RGBColor(90, 90, 90));
        let firmware = plan.firmware.as_deref().unwrap_or("none");
        header
            .draw(&Text::new(
                format!(
                    "{} — firmware {} — {} phones",
                    plan.schedule,
                    firmware,
                    plan.phones()
                ),
                (12, 10),
                title,
            ))
            .map_err(err)?;
        let completion = plan
            .completion
            .map_or_else(|| "none (see the warnings below)".to_owned(), super::utc);
        let mut subtitle = format!("predicted completion {completion}");
        if plan.paused {
            subtitle.push_str("  —  PAUSED");
        }
        if plan.sites.len() > shown.len() {
            subtitle.push_str(&format!(
                "  —  showing the first {} of {} sites by name",
                shown.len(),
                plan.sites.len()
            ));
        }
        header
            .draw(&Text::new(subtitle, (12, 38), text.clone()))
            .map_err(err)?;
        let mut x = 12;
        for (i, stage) in plan.stages.iter().enumerate() {
            header
                .draw(&Rectangle::new(
                    [(x, 64), (x + 14, 78)],
                    stage_colour(i).filled(),
                ))
                .map_err(err)?;
            let label = format!("{} ({}%)", stage.name, stage.percent);
            header
                .draw(&Text::new(label.clone(), (x + 20, 64), text.clone()))
                .map_err(err)?;
            x += 40 + 8 * label.len() as i32;
        }
        header
            .draw(&Text::new(
                "bar height: phones in the slot against the site's cap (grey line); dashed: end of a stage",
                (x + 20, 64),
                grey.clone(),
            ))
            .map_err(err)?;

        let end_hours = shown
            .iter()
            .filter_map(|s| s.slots.last())
            .map(|s| (s.end - plan.start).num_minutes() as f64 / 60.0)
            .fold(0.0_f64, f64::max);
        let span = if end_hours > 0.0 {
            end_hours * 1.03
        } else {
            24.0
        };
        let start = plan.start;
        let label_format = if span > 96.0 {
            "%a %d %b"
        } else {
            "%a %d %b %H:%M"
        };

        let mut chart = ChartBuilder::on(&body)
            .margin_left(LABEL_PX)
            .margin_right(20)
            .margin_top(4)
            .x_label_area_size(40)
            .build_cartesian_2d(0f64..span, 0f64..rows as f64)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_labels(10)
            .x_desc("time (UTC)")
            .x_label_style(("sans-serif", 12))
            .axis_desc_style(("sans-serif", 12))
            .x_label_formatter(&|h| {
                (start + Duration::minutes((h * 60.0) as i64))
                    .format(label_format)
                    .to_string()
            })
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(err)?;

        // Alternate row shading, translucent so the time grid stays visible.
        chart
            .draw_series((0..shown.len()).filter(|i| i % 2 == 0).map(|i| {
                let base = (rows - i - 1) as f64;
                Rectangle::new(
                    [(0.0, base), (span, base + 1.0)],
                    RGBColor(60, 60, 120).mix(0.05).filled(),
                )
            }))
            .map_err(err)?;

        // The controller releases the next stage only after this instant.
        for (i, stage) in plan.stages.iter().enumerate() {
            if let Some(end) = stage.end {
                let x = (end - start).num_minutes() as f64 / 60.0;
                chart
                    .draw_series(DashedLineSeries::new(
                        [(x, 0.0), (x, rows as f64)],
                        6,
                        4,
                        stage_colour(i).stroke_width(1),
                    ))
                    .map_err(err)?;
            }
        }

        if shown.is_empty() {
            let message = plan
                .warnings
                .first()
                .map_or_else(|| "no sites selected".to_owned(), ToString::to_string);
            let (px, py) = chart.backend_coord(&(0.0, 0.5));
            root.draw(&Text::new(message, (px + 10, py), text.clone()))
                .map_err(err)?;
        }

        for (i, site) in shown.iter().enumerate() {
            let base = (rows - i - 1) as f64;
            let cap = f64::from(site.cap.get());
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(0.0, base + 0.85), (span, base + 0.85)],
                    RGBColor(160, 160, 160).stroke_width(1),
                )))
                .map_err(err)?;
            chart
                .draw_series(site.slots.iter().map(|slot| {
                    let x0 = (slot.start - start).num_minutes() as f64 / 60.0;
                    let x1 = (slot.end - start).num_minutes() as f64 / 60.0;
                    let h = 0.7 * f64::from(slot.len()) / cap;
                    Rectangle::new(
                        [(x0, base + 0.15), (x1, base + 0.15 + h)],
                        stage_colour(slot.stage as usize).filled(),
                    )
                }))
                .map_err(err)?;

            let (px, py) = chart.backend_coord(&(0.0, base + 0.5));
            let name = format!(
                "{}  ({} phones, cap {})",
                site.name,
                site.phones,
                site.cap.get()
            );
            let anchor = Pos::new(HPos::Right, VPos::Center);
            root.draw(&Text::new(name, (px - 8, py - 6), text.clone().pos(anchor)))
                .map_err(err)?;
            let zone = format!("{}  {}", site.time_zone.name(), site.family_constraint());
            let detail = match site.completion {
                Some(c) => format!("{zone}  done {}", c.format("%a %d %b %H:%M")),
                None if !site.unplaced.is_empty() => {
                    format!("{zone}  {} unplaced", site.unplaced.len())
                }
                None => zone,
            };
            root.draw(&Text::new(
                detail,
                (px - 8, py + 8),
                grey.clone().pos(anchor),
            ))
            .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}
