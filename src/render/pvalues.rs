//! The `<gs_provision>` XML file of P-values that Grandstream documents (XML Provisioning
//! Guide, "XML provisioning schema and example file") and XSTIM's custom PCODEs are written in.

use std::fmt::Write;

use crate::core::{LocalWindow, Mac};

/// `<gs_provision>` XML with `values` in the order given. The `<mac>` element is optional for
/// the phone, but when present it must be the phone's own MAC, which it is.
pub(super) fn xml(comment: &str, mac: Mac, values: &[(u32, String)]) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(out, "<!-- {comment} -->");
    out.push_str("<gs_provision version=\"1\">\n");
    let _ = writeln!(out, "  <mac>{}</mac>", mac.bare());
    out.push_str("  <config version=\"1\">\n");
    for (code, value) in values {
        let _ = writeln!(out, "    <P{code}>{}</P{code}>", escape(value));
    }
    out.push_str("  </config>\n</gs_provision>\n");
    out
}

/// Start hour, start minute, end hour, end minute at four consecutive PCODEs.
pub(super) fn push_window(p: &mut Vec<(u32, String)>, first: u32, w: LocalWindow) {
    p.push((first, w.start.hour().to_string()));
    p.push((first + 1, w.start.minute().to_string()));
    p.push((first + 2, w.end.hour().to_string()));
    p.push((first + 3, w.end.minute().to_string()));
}

pub(super) fn flag(b: bool) -> String {
    u32::from(b).to_string()
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}
