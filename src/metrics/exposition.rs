//! The Prometheus text format, written straight from rows for the per-site families.
//!
//! Per-site series grow with the inventory: 7 per (schedule, site) on the leader and 9 per
//! site on every server replica, 160,000 series at 10,000 sites. As prometheus-crate vectors
//! each series held its label pairs as protobuf strings (about 640 bytes a series: 45 MB of a
//! replica's heap at 10,000 sites, heaptrack), and every scrape copied them all into protobuf
//! families before encoding them. These families are written from compact rows instead, with
//! the names, help, types and labels the vectors had; the other families stay in the registry.

use std::fmt::Write as _;

/// A family's `# TYPE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        }
    }
}

/// One metric family written by hand: what its `# HELP` and `# TYPE` lines say.
#[derive(Clone, Copy, Debug)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    /// Label names in the order samples give their values: sorted, as the prometheus crate
    /// writes them.
    pub labels: &'static [&'static str],
}

impl Family {
    /// The `# HELP` and `# TYPE` lines.
    pub fn header(&self, out: &mut String) {
        out.push_str("# HELP ");
        out.push_str(self.name);
        out.push(' ');
        for c in self.help.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        let _ = write!(out, "\n# TYPE {} {}\n", self.name, self.kind.as_str());
    }

    /// One sample line; `values` are the label values in the order of [`Family::labels`].
    pub fn sample(&self, out: &mut String, values: &[&str], value: f64) {
        debug_assert_eq!(values.len(), self.labels.len(), "{}", self.name);
        out.push_str(self.name);
        if !self.labels.is_empty() {
            out.push('{');
            for (i, (name, v)) in self.labels.iter().zip(values).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(name);
                out.push_str("=\"");
                for c in v.chars() {
                    match c {
                        '\\' => out.push_str("\\\\"),
                        '"' => out.push_str("\\\""),
                        '\n' => out.push_str("\\n"),
                        c => out.push(c),
                    }
                }
                out.push('"');
            }
            out.push('}');
        }
        out.push(' ');
        if value.is_nan() {
            out.push_str("NaN");
        } else if value.is_infinite() {
            out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            let _ = write!(out, "{value}");
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use prometheus::{Encoder, GaugeVec, IntCounterVec, Opts, Registry, TextEncoder};

    const GAUGE: Family = Family {
        name: "x_gauge",
        help: "A gauge \\ with\nodd help.",
        kind: Kind::Gauge,
        labels: &["a", "b"],
    };
    const COUNTER: Family = Family {
        name: "x_total",
        help: "A counter.",
        kind: Kind::Counter,
        labels: &["site"],
    };

    /// The same families through the prometheus crate's vectors and encoder: the oracle.
    fn through_the_crate(gauges: &[([&str; 2], f64)], counters: &[(&str, u64)]) -> String {
        let r = Registry::new();
        let g = GaugeVec::new(Opts::new(GAUGE.name, GAUGE.help), GAUGE.labels).unwrap();
        let c = IntCounterVec::new(Opts::new(COUNTER.name, COUNTER.help), COUNTER.labels).unwrap();
        r.register(Box::new(g.clone())).unwrap();
        r.register(Box::new(c.clone())).unwrap();
        for (labels, v) in gauges {
            g.with_label_values(labels).set(*v);
        }
        for (site, v) in counters {
            c.with_label_values(&[site]).inc_by(*v);
        }
        let mut out = Vec::new();
        TextEncoder::new().encode(&r.gather(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn hand_written_families_read_as_the_crate_writes_them() {
        let gauges = [
            (["p", "q\"uote"], 1_767_574_800.0),
            (["p", "back\\slash"], 0.25),
            (["r", "new\nline"], -3.0),
            (["s", "big"], 1e21),
        ];
        let counters = [
            ("oslo", 0),
            ("paris", 4100),
            ("zürich", u64::from(u32::MAX) + 7),
        ];
        let mut ours = String::new();
        GAUGE.header(&mut ours);
        // The crate orders samples by their label values' hash; compare as sets of lines.
        for (labels, v) in &gauges {
            GAUGE.sample(&mut ours, labels, *v);
        }
        COUNTER.header(&mut ours);
        for (site, v) in &counters {
            COUNTER.sample(&mut ours, &[site], *v as f64);
        }
        let theirs = through_the_crate(&gauges, &counters);
        let sorted = |s: &str| {
            let mut l: Vec<String> = s.lines().map(str::to_owned).collect();
            l.sort();
            l
        };
        assert_eq!(
            sorted(&ours),
            sorted(&theirs),
            "ours:\n{ours}\ntheirs:\n{theirs}"
        );
    }

    /// The text format spells infinities `+Inf`/`-Inf` (the crate's encoder writes Rust's
    /// `inf`, which Prometheus' parser does not read as a float).
    #[test]
    fn infinities_are_spelled_as_the_text_format_says() {
        let mut out = String::new();
        GAUGE.sample(&mut out, &["a", "b"], f64::INFINITY);
        GAUGE.sample(&mut out, &["a", "b"], f64::NEG_INFINITY);
        assert_eq!(
            out,
            "x_gauge{a=\"a\",b=\"b\"} +Inf\nx_gauge{a=\"a\",b=\"b\"} -Inf\n"
        );
    }

    #[test]
    fn a_family_without_labels_has_no_braces() {
        let f = Family {
            name: "x",
            help: "h",
            kind: Kind::Gauge,
            labels: &[],
        };
        let mut out = String::new();
        f.sample(&mut out, &[], f64::NAN);
        assert_eq!(out, "x NaN\n");
    }
}
