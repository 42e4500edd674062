//! Merging phonefleet's keys into the per-phone file an upstream provisioning server returned,
//! per format (pure: bytes in, bytes out).
//!
//! The rule is the same for both formats: phonefleet's keys replace the upstream's values of
//! the same keys (every occurrence), keys the upstream file does not have are appended after a
//! comment naming phonefleet, and every other byte of the upstream file is kept as it was —
//! comments, blank lines, line endings, the order of the lines, Yealink's first line.
//!
//! - Yealink `<mac>.cfg`: lines `key = value`, comments start with `#`, the first line is
//!   `#!version:1.0.0.1` (Yealink admin guides, "MAC-Oriented CFG File"; docs/phones.md).
//! - Grandstream / XSTIM `cfg<mac>.xml`: `<gs_provision>` holding `<config>` with one element
//!   per P-value, `<P271>0</P271>` (Grandstream "XML Provisioning Guide", "XML schema and
//!   example file"). Comments, processing instructions and CDATA are skipped when looking for
//!   elements; anything that is not such an element is copied as it is.
//!
//! A file the merge cannot read as its format (binary, an encrypted XML file, an XML file
//! without `<config>` when keys must be added) is refused with a [`MergeError`]: the caller
//! decides what the phone gets, never a file with the upstream's settings dropped.

use crate::render::Format;

/// Why an upstream file could not be merged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error("the upstream file is not text (binary, or encrypted)")]
    NotText,
    #[error("the upstream XML file is not well formed: {0}")]
    BadXml(&'static str),
    #[error("the upstream XML file has no </config> to add phonefleet's elements to")]
    NoConfigElement,
}

/// `upstream` with phonefleet's keys from `ours` (phonefleet's rendered file of the same
/// format) merged in. An upstream file of only white space gives `ours` unchanged.
pub fn merge(format: Format, upstream: &[u8], ours: &[u8]) -> Result<Vec<u8>, MergeError> {
    if upstream.iter().all(u8::is_ascii_whitespace) {
        return Ok(ours.to_vec());
    }
    // Binary and encrypted files hold NUL bytes or are not UTF-8 (AES output is neither).
    if upstream.contains(&0) || std::str::from_utf8(upstream).is_err() {
        return Err(MergeError::NotText);
    }
    match format {
        Format::Yealink => Ok(merge_yealink(upstream, ours)),
        Format::Xml => merge_xml(upstream, ours),
    }
}

/// A line without its line ending, and the ending (`\n`, `\r\n` or nothing on the last line).
fn split_eol(line: &[u8]) -> (&[u8], &[u8]) {
    if let Some(content) = line.strip_suffix(b"\r\n") {
        (content, b"\r\n")
    } else if let Some(content) = line.strip_suffix(b"\n") {
        (content, b"\n")
    } else {
        (line, b"")
    }
}

fn trim(s: &[u8]) -> &[u8] {
    s.trim_ascii()
}

/// The key of a Yealink `key = value` line, lower-cased (Yealink keys are lower case; an
/// upstream that spells one differently still means the same setting); `None` for comments,
/// blank lines and anything else.
fn yealink_key(content: &[u8]) -> Option<String> {
    let line = content.trim_ascii_start();
    if line.starts_with(b"#") {
        return None;
    }
    let eq = line.iter().position(|&b| b == b'=')?;
    let key = trim(&line[..eq]);
    if key.is_empty() || key.iter().any(|b| b.is_ascii_whitespace()) {
        return None;
    }
    Some(String::from_utf8_lossy(key).to_ascii_lowercase())
}

fn merge_yealink(upstream: &[u8], ours: &[u8]) -> Vec<u8> {
    // phonefleet's lines, by key, in its order, and its `## phonefleet: …` comment.
    let mut keys: Vec<(String, &[u8])> = Vec::new();
    let mut comment: Option<&[u8]> = None;
    for line in ours.split_inclusive(|&b| b == b'\n') {
        let (content, _) = split_eol(line);
        match yealink_key(content) {
            Some(key) => keys.push((key, content)),
            None if comment.is_none() && content.starts_with(b"## ") => comment = Some(content),
            None => {}
        }
    }
    let crlf = upstream.windows(2).any(|w| w == b"\r\n");
    let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
    let mut seen = vec![false; keys.len()];
    let mut out = Vec::with_capacity(upstream.len() + ours.len());
    for line in upstream.split_inclusive(|&b| b == b'\n') {
        let (content, ending) = split_eol(line);
        let ours_line = yealink_key(content)
            .and_then(|key| keys.iter().position(|(k, _)| *k == key))
            .map(|i| {
                seen[i] = true;
                keys[i].1
            });
        match ours_line {
            Some(replacement) => {
                out.extend_from_slice(replacement);
                out.extend_from_slice(ending);
            }
            None => out.extend_from_slice(line),
        }
    }
    let missing: Vec<&[u8]> = keys
        .iter()
        .zip(&seen)
        .filter(|(_, seen)| !**seen)
        .map(|((_, line), _)| *line)
        .collect();
    if missing.is_empty() {
        return out;
    }
    if !out.ends_with(b"\n") {
        out.extend_from_slice(eol);
    }
    for line in comment.into_iter().chain(missing) {
        out.extend_from_slice(line);
        out.extend_from_slice(eol);
    }
    out
}

/// What the XML scan found: P-value elements (code and byte span) and `</config>` tags.
#[derive(Debug, Default)]
struct XmlScan {
    elements: Vec<(u32, std::ops::Range<usize>)>,
    config_closes: Vec<usize>,
    /// The first comment's span (phonefleet's own file names itself in it).
    first_comment: Option<std::ops::Range<usize>>,
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// Finds the P-value elements and `</config>` tags of an XML document, skipping comments,
/// processing instructions, CDATA and declarations.
fn scan_xml(doc: &[u8]) -> Result<XmlScan, MergeError> {
    let mut scan = XmlScan::default();
    let mut i = 0;
    while let Some(lt) = find(doc, i, b"<") {
        let rest = &doc[lt..];
        let skip_to = |end: &[u8], what: &'static str| {
            find(doc, lt + 1, end)
                .map(|p| p + end.len())
                .ok_or(MergeError::BadXml(what))
        };
        if rest.starts_with(b"<!--") {
            let end = skip_to(b"-->", "unterminated comment")?;
            if scan.first_comment.is_none() {
                scan.first_comment = Some(lt..end);
            }
            i = end;
        } else if rest.starts_with(b"<![CDATA[") {
            i = skip_to(b"]]>", "unterminated CDATA")?;
        } else if rest.starts_with(b"<?") {
            i = skip_to(b"?>", "unterminated processing instruction")?;
        } else if rest.starts_with(b"<!") {
            i = skip_to(b">", "unterminated declaration")?;
        } else if rest.starts_with(b"</config")
            && rest
                .get(8)
                .is_some_and(|b| *b == b'>' || b.is_ascii_whitespace())
        {
            scan.config_closes.push(lt);
            i = lt + 8;
        } else if let Some((code, end)) = p_element(doc, lt)? {
            scan.elements.push((code, lt..end));
            i = end;
        } else {
            i = lt + 1;
        }
    }
    Ok(scan)
}

/// The P-value element starting at `lt` (`<P123>…</P123>` or `<P123/>`): its code and the end
/// of its span; `None` when the tag at `lt` is another element.
fn p_element(doc: &[u8], lt: usize) -> Result<Option<(u32, usize)>, MergeError> {
    let rest = &doc[lt..];
    if rest.get(1) != Some(&b'P') {
        return Ok(None);
    }
    let digits = rest[2..].iter().take_while(|b| b.is_ascii_digit()).count();
    let after = rest.get(2 + digits).copied();
    let ends_name =
        matches!(after, Some(b'>' | b'/')) || after.is_some_and(|b| b.is_ascii_whitespace());
    if digits == 0 || digits > 9 || !ends_name {
        return Ok(None);
    }
    let code: u32 = std::str::from_utf8(&rest[2..2 + digits])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(MergeError::BadXml("P-value code"))?;
    let gt = find(doc, lt, b">").ok_or(MergeError::BadXml("unterminated tag"))?;
    if doc[gt - 1] == b'/' {
        return Ok(Some((code, gt + 1)));
    }
    let close = format!("</P{code}");
    let mut from = gt + 1;
    loop {
        let at = find(doc, from, close.as_bytes()).ok_or(MergeError::BadXml("unclosed P-value"))?;
        let mut j = at + close.len();
        while doc.get(j).is_some_and(u8::is_ascii_whitespace) {
            j += 1;
        }
        match doc.get(j) {
            Some(b'>') => return Ok(Some((code, j + 1))),
            // `</P12` found inside `</P123>`: look further.
            _ => from = at + 1,
        }
    }
}

fn merge_xml(upstream: &[u8], ours: &[u8]) -> Result<Vec<u8>, MergeError> {
    let mine = scan_xml(ours)?;
    let keys: Vec<(u32, &[u8])> = mine
        .elements
        .iter()
        .map(|(code, span)| (*code, &ours[span.clone()]))
        .collect();
    let scan = scan_xml(upstream)?;
    let mut seen = vec![false; keys.len()];
    let mut out = Vec::with_capacity(upstream.len() + ours.len());
    let mut at = 0;
    for (code, span) in &scan.elements {
        if let Some(i) = keys.iter().position(|(k, _)| k == code) {
            seen[i] = true;
            out.extend_from_slice(&upstream[at..span.start]);
            out.extend_from_slice(keys[i].1);
            at = span.end;
        }
    }
    let missing: Vec<&[u8]> = keys
        .iter()
        .zip(&seen)
        .filter(|(_, seen)| !**seen)
        .map(|((_, element), _)| *element)
        .collect();
    if missing.is_empty() {
        out.extend_from_slice(&upstream[at..]);
        return Ok(out);
    }
    // Added before the last `</config>`, indented one step deeper than it.
    let close = *scan
        .config_closes
        .last()
        .ok_or(MergeError::NoConfigElement)?;
    if close < at {
        return Err(MergeError::BadXml("</config> before a P-value"));
    }
    let line_start = upstream[..close]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let indent = &upstream[line_start..close];
    let indent: &[u8] = if indent.iter().all(|b| *b == b' ' || *b == b'\t') {
        indent
    } else {
        b""
    };
    let eol: &[u8] = if upstream.windows(2).any(|w| w == b"\r\n") {
        b"\r\n"
    } else {
        b"\n"
    };
    out.extend_from_slice(&upstream[at..close]);
    let comment = mine.first_comment.map(|span| &ours[span]);
    for line in comment.into_iter().chain(missing) {
        out.extend_from_slice(b"  ");
        out.extend_from_slice(line);
        out.extend_from_slice(eol);
        out.extend_from_slice(indent);
    }
    out.extend_from_slice(&upstream[close..]);
    Ok(out)
}

#[cfg(test)]
mod tests;
