//! The `<gs_provision>` XML file of P-values that Grandstream documents (XML Provisioning
//! Guide, "XML provisioning schema and example file") and XSTIM's custom PCODEs are written in.

use super::{Knobs, push_mac, push_u32};
use crate::core::LocalWindow;

/// A `<gs_provision>` file written into `out` as its values come, in the order given. The
/// `<mac>` element is optional for the phone, but when present it must be the phone's own MAC,
/// which it is.
pub(super) struct PValues<'o> {
    out: &'o mut String,
}

impl<'o> PValues<'o> {
    /// The declaration, the comment, `<mac>` and the opening `<config>`.
    pub(super) fn start(k: &Knobs<'_>, out: &'o mut String) -> Self {
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- ");
        k.write_comment(out);
        out.push_str(" -->\n<gs_provision version=\"1\">\n  <mac>");
        push_mac(out, k.mac);
        out.push_str("</mac>\n  <config version=\"1\">\n");
        Self { out }
    }

    /// `<P{code}>` with `pieces` written one after the other, escaped.
    pub(super) fn text(&mut self, code: u32, pieces: &[&str]) {
        self.open(code);
        for piece in pieces {
            escape_into(self.out, piece);
        }
        self.close(code);
    }

    pub(super) fn number(&mut self, code: u32, n: u32) {
        self.open(code);
        push_u32(self.out, n);
        self.close(code);
    }

    pub(super) fn flag(&mut self, code: u32, b: bool) {
        self.number(code, u32::from(b));
    }

    /// Start hour, start minute, end hour, end minute at four consecutive PCODEs.
    pub(super) fn window(&mut self, first: u32, w: LocalWindow) {
        self.number(first, w.start.hour());
        self.number(first + 1, w.start.minute());
        self.number(first + 2, w.end.hour());
        self.number(first + 3, w.end.minute());
    }

    /// The closing tags.
    pub(super) fn finish(self) {
        self.out.push_str("  </config>\n</gs_provision>\n");
    }

    fn open(&mut self, code: u32) {
        self.out.push_str("    <P");
        push_u32(self.out, code);
        self.out.push('>');
    }

    fn close(&mut self, code: u32) {
        self.out.push_str("</P");
        push_u32(self.out, code);
        self.out.push_str(">\n");
    }
}

fn escape_into(out: &mut String, s: &str) {
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
}
