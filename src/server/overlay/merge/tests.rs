use proptest::prelude::*;

use super::*;

const YEALINK_SLOT: &str = include_str!("../../../../tests/golden/yealink/slot/000b82123456.cfg");
const YEALINK_STEADY: &str =
    include_str!("../../../../tests/golden/yealink/steady/000b82123456.cfg");
const GS_SLOT: &str = include_str!("../../../../tests/golden/grandstream/slot/cfg000b82123456.xml");
const GS_STEADY: &str =
    include_str!("../../../../tests/golden/grandstream/steady/cfg000b82123456.xml");
const XSTIM_SLOT: &str = include_str!("../../../../tests/golden/xstim/slot/cfg000b82123456.xml");

fn text(b: Vec<u8>) -> String {
    String::from_utf8(b).expect("utf-8")
}

#[test]
fn yealink_keeps_every_upstream_line_and_replaces_only_phonefleets_keys() {
    let upstream = "#!version:1.0.0.1\r\n\
        ## the file header can not be edited or deleted ##\r\n\
        account.1.enable = 1\r\n\
        account.1.password = s3cret\r\n\
        static.auto_provision.power_on=0\r\n\
        # static.auto_provision.repeat.enable = 1\r\n\
        \r\n\
        static.firmware.url = http://old/fw.rom\r\n\
        local_time.time_zone = +1";
    let merged = text(
        merge(
            Format::Yealink,
            upstream.as_bytes(),
            YEALINK_STEADY.as_bytes(),
        )
        .unwrap(),
    );
    let mut expected = String::from(
        "#!version:1.0.0.1\r\n\
        ## the file header can not be edited or deleted ##\r\n\
        account.1.enable = 1\r\n\
        account.1.password = s3cret\r\n\
        static.auto_provision.power_on = 1\r\n\
        # static.auto_provision.repeat.enable = 1\r\n\
        \r\n\
        static.firmware.url = http://old/fw.rom\r\n\
        local_time.time_zone = +1\r\n\
        ## phonefleet: 000b82123456 (SIP-T46U), steady-state schedule\r\n",
    );
    for line in YEALINK_STEADY.lines().skip(3) {
        expected.push_str(line);
        expected.push_str("\r\n");
    }
    assert_eq!(merged, expected);
}

#[test]
fn yealink_slot_file_replaces_the_upstream_firmware_url() {
    let upstream =
        "#!version:1.0.0.1\nstatic.firmware.url = http://old/fw.rom\naccount.1.user_name = 100\n";
    let merged = text(
        merge(
            Format::Yealink,
            upstream.as_bytes(),
            YEALINK_SLOT.as_bytes(),
        )
        .unwrap(),
    );
    assert!(merged.starts_with(
        "#!version:1.0.0.1\nstatic.firmware.url = http://prov.voice.example:8080/firmware/paris-hq/gxp2170fw.bin\naccount.1.user_name = 100\n## phonefleet:"
    ));
    assert_eq!(merged.matches("static.firmware.url").count(), 1);
}

#[test]
fn grandstream_keeps_every_upstream_element_comment_and_the_mac() {
    let upstream = "<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n\
        <!-- site file, <P194>5</P194> in a comment stays -->\n\
        <gs_provision version=\"1\">\n\
        \x20 <mac>000b82123456</mac>\n\
        \x20 <config version=\"1\">\n\
        \x20   <P271>1</P271>\n\
        \x20   <P270>Account &amp; name</P270>\n\
        \x20   <P194 >3</P194 >\n\
        \x20   <P2/>\n\
        \x20   <![CDATA[<P193>1</P193>]]>\n\
        \x20 </config>\n\
        </gs_provision>\n";
    let merged = text(merge(Format::Xml, upstream.as_bytes(), GS_STEADY.as_bytes()).unwrap());
    let expected = "<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n\
        <!-- site file, <P194>5</P194> in a comment stays -->\n\
        <gs_provision version=\"1\">\n\
        \x20 <mac>000b82123456</mac>\n\
        \x20 <config version=\"1\">\n\
        \x20   <P271>1</P271>\n\
        \x20   <P270>Account &amp; name</P270>\n\
        \x20   <P194>0</P194>\n\
        \x20   <P2/>\n\
        \x20   <![CDATA[<P193>1</P193>]]>\n\
        \x20   <!-- phonefleet: 000b82123456 (GXP2170), steady-state schedule -->\n\
        \x20   <P193>10080</P193>\n\
        \x20 </config>\n\
        </gs_provision>\n";
    assert_eq!(merged, expected);
}

#[test]
fn a_code_that_prefixes_another_is_not_confused_with_it() {
    let upstream =
        "<gs_provision><config><P19>a</P19><P1944>b</P1944><P194>c</P194></config></gs_provision>";
    let merged = text(merge(Format::Xml, upstream.as_bytes(), GS_STEADY.as_bytes()).unwrap());
    assert!(merged.starts_with("<gs_provision><config><P19>a</P19><P1944>b</P1944><P194>0</P194>"));
}

#[test]
fn unreadable_upstream_files_are_refused_not_replaced() {
    let binary = [0x1f, 0x8b, 0x00, 0x12, 0xff, 0xfe];
    assert_eq!(
        merge(Format::Xml, &binary, GS_STEADY.as_bytes()),
        Err(MergeError::NotText)
    );
    assert_eq!(
        merge(Format::Yealink, &binary, YEALINK_STEADY.as_bytes()),
        Err(MergeError::NotText)
    );
    // Keys to add and nowhere to add them.
    assert_eq!(
        merge(
            Format::Xml,
            b"<gs_provision><P2>x</P2></gs_provision>",
            GS_STEADY.as_bytes()
        ),
        Err(MergeError::NoConfigElement)
    );
    assert!(matches!(
        merge(
            Format::Xml,
            b"<config><P193>1</config>",
            GS_STEADY.as_bytes()
        ),
        Err(MergeError::BadXml(_))
    ));
    assert!(matches!(
        merge(
            Format::Xml,
            b"<config><!-- never closed </config>",
            GS_STEADY.as_bytes()
        ),
        Err(MergeError::BadXml(_))
    ));
}

#[test]
fn an_empty_upstream_file_is_phonefleets_alone() {
    assert_eq!(
        merge(Format::Yealink, b" \n", YEALINK_SLOT.as_bytes()).unwrap(),
        YEALINK_SLOT.as_bytes()
    );
    assert_eq!(
        merge(Format::Xml, b"", GS_SLOT.as_bytes()).unwrap(),
        GS_SLOT.as_bytes()
    );
}

// ---- properties ----

/// The lines of a Yealink file as (key if any, content, ending).
fn yealink_lines(file: &[u8]) -> Vec<(Option<String>, Vec<u8>, Vec<u8>)> {
    file.split_inclusive(|&b| b == b'\n')
        .map(|l| {
            let (c, e) = split_eol(l);
            (yealink_key(c), c.to_vec(), e.to_vec())
        })
        .collect()
}

fn ours_yealink(ours: &str) -> Vec<(String, Vec<u8>)> {
    yealink_lines(ours.as_bytes())
        .into_iter()
        .filter_map(|(k, c, _)| Some((k?, c)))
        .collect()
}

fn yealink_line(keys: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        "account\\.[1-3]\\.(user_name|password|label) ?= ?[a-zA-Z0-9 @.]{0,12}",
        "#[ -~]{0,30}",
        "## [ -~]{0,30}",
        Just(String::new()),
        "[ \t]{1,3}",
        (
            prop::sample::select(keys),
            "[0-9:]{0,6}",
            prop::bool::ANY,
            prop::bool::ANY
        )
            .prop_map(|(k, v, spaced, upper)| {
                let k = if upper {
                    k.to_ascii_uppercase()
                } else {
                    k.to_owned()
                };
                if spaced {
                    format!("{k} = {v}")
                } else {
                    format!("  {k}={v}")
                }
            }),
        // Looks like a key but is a comment.
        prop::sample::select(keys).prop_map(|k| format!("# {k} = 9")),
    ]
}

fn yealink_file() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(yealink_line(&crate::render::YEALINK_KEYS), 0..30),
        prop::bool::ANY,
        prop::bool::ANY,
    )
        .prop_map(|(lines, crlf, last_eol)| {
            let eol = if crlf { "\r\n" } else { "\n" };
            let mut s = format!("#!version:1.0.0.1{eol}");
            for (i, l) in lines.iter().enumerate() {
                s.push_str(l);
                if i + 1 < lines.len() || last_eol {
                    s.push_str(eol);
                }
            }
            s
        })
}

fn xml_item(codes: &'static [u32]) -> impl Strategy<Value = String> {
    prop_oneof![
        (1u32..400, "[a-z0-9 ]{0,8}").prop_map(|(c, v)| format!("<P{c}>{v}</P{c}>")),
        (prop::sample::select(codes), "[a-z0-9]{0,8}")
            .prop_map(|(c, v)| format!("<P{c}>{v}</P{c}>")),
        prop::sample::select(codes).prop_map(|c| format!("<P{c}/>")),
        prop::sample::select(codes).prop_map(|c| format!("<!-- <P{c}>9</P{c}> -->")),
        "<!--[a-z ]{0,10}-->",
        Just("<item name=\"x\">1</item>".to_owned()),
    ]
}

const XML_CODES: [u32; 14] = [
    192, 193, 194, 238, 285, 6767, 8375, 8458, 8459, 25020, 25021, 25022, 25025, 25038,
];

fn xml_file() -> impl Strategy<Value = String> {
    (prop::collection::vec(xml_item(&XML_CODES), 0..25), prop::bool::ANY).prop_map(|(items, crlf)| {
        let eol = if crlf { "\r\n" } else { "\n" };
        let mut s = format!("<?xml version=\"1.0\"?>{eol}<gs_provision version=\"1\">{eol}  <config version=\"1\">{eol}");
        for i in items {
            s.push_str("    ");
            s.push_str(&i);
            s.push_str(eol);
        }
        s.push_str(&format!("  </config>{eol}</gs_provision>{eol}"));
        s
    })
}

/// Elements of a document: (code, bytes).
fn elements(doc: &[u8]) -> Vec<(u32, Vec<u8>)> {
    scan_xml(doc)
        .expect("scans")
        .elements
        .into_iter()
        .map(|(c, s)| (c, doc[s].to_vec()))
        .collect()
}

/// Everything but the P-value elements phonefleet owns and phonefleet's comment: what must
/// survive byte for byte, in order (white space between elements aside).
fn foreign_xml(doc: &[u8], owned: &[u32], ours_comment: &[u8]) -> Vec<u8> {
    let scan = scan_xml(doc).expect("scans");
    let mut cut: Vec<std::ops::Range<usize>> = scan
        .elements
        .iter()
        .filter(|(c, _)| owned.contains(c))
        .map(|(_, s)| s.clone())
        .collect();
    if let Some(at) = find(doc, 0, ours_comment) {
        cut.push(at..at + ours_comment.len());
    }
    cut.sort_by_key(|r| r.start);
    let mut parts = Vec::new();
    let mut at = 0;
    for r in cut {
        parts.push(doc[at..r.start].to_vec());
        at = r.end;
    }
    parts.push(doc[at..].to_vec());
    parts
        .into_iter()
        .flatten()
        .filter(|b| !b.is_ascii_whitespace())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn yealink_merge_keeps_the_rest_and_carries_phonefleets_keys(
        upstream in yealink_file(),
        slot in prop::bool::ANY,
    ) {
        let ours = if slot { YEALINK_SLOT } else { YEALINK_STEADY };
        let merged = merge(Format::Yealink, upstream.as_bytes(), ours.as_bytes()).unwrap();
        let owned = ours_yealink(ours);
        let lines = yealink_lines(&merged);
        // Every phonefleet key is there, and every line with that key is phonefleet's.
        for (key, line) in &owned {
            let with_key: Vec<_> = lines.iter().filter(|(k, _, _)| k.as_ref() == Some(key)).collect();
            prop_assert!(!with_key.is_empty(), "{key} missing");
            for (_, content, _) in with_key {
                prop_assert_eq!(content, line);
            }
        }
        // The upstream's other lines, byte for byte and in order, endings included (but the
        // last line's, which phonefleet's appended lines may need).
        let is_owned = |k: &Option<String>| k.as_ref().is_some_and(|k| owned.iter().any(|(o, _)| o == k));
        let foreign = |file: &[u8]| -> Vec<Vec<u8>> {
            yealink_lines(file).into_iter().filter(|(k, _, _)| !is_owned(k)).map(|(_, c, _)| c).collect()
        };
        let before = foreign(upstream.as_bytes());
        let after = foreign(&merged);
        prop_assert!(after.len() >= before.len());
        prop_assert_eq!(&after[..before.len()], &before[..]);
        // Anything after the upstream's lines is phonefleet's comment.
        for extra in &after[before.len()..] {
            prop_assert!(extra.starts_with(b"## phonefleet:"));
        }
        // Whole lines of the upstream that phonefleet does not own keep their endings.
        let up_lines = yealink_lines(upstream.as_bytes());
        let kept: Vec<_> = up_lines.iter().filter(|(k, _, e)| !is_owned(k) && !e.is_empty()).collect();
        let merged_kept: Vec<_> = lines.iter().filter(|(k, _, _)| !is_owned(k)).take(kept.len()).collect();
        for (a, b) in kept.iter().zip(merged_kept) {
            prop_assert_eq!(&a.2, &b.2);
        }
        // The first line stays first.
        prop_assert!(merged.starts_with(b"#!version:1.0.0.1"));
        // Merging again changes nothing.
        let again = merge(Format::Yealink, &merged, ours.as_bytes()).unwrap();
        prop_assert_eq!(again, merged);
    }

    #[test]
    fn xml_merge_keeps_the_rest_and_carries_phonefleets_elements(
        upstream in xml_file(),
        which in 0usize..3,
    ) {
        let ours = [GS_STEADY, GS_SLOT, XSTIM_SLOT][which];
        let merged = merge(Format::Xml, upstream.as_bytes(), ours.as_bytes()).unwrap();
        let owned = elements(ours.as_bytes());
        let owned_codes: Vec<u32> = owned.iter().map(|(c, _)| *c).collect();
        let got = elements(&merged);
        for (code, element) in &owned {
            let with_code: Vec<_> = got.iter().filter(|(c, _)| c == code).collect();
            prop_assert!(!with_code.is_empty(), "P{code} missing");
            for (_, e) in with_code {
                prop_assert_eq!(e, element);
            }
        }
        let comment = {
            let scan = scan_xml(ours.as_bytes()).unwrap();
            ours.as_bytes()[scan.first_comment.unwrap()].to_vec()
        };
        prop_assert_eq!(
            foreign_xml(&merged, &owned_codes, &comment),
            foreign_xml(upstream.as_bytes(), &owned_codes, &comment)
        );
        let again = merge(Format::Xml, &merged, ours.as_bytes()).unwrap();
        prop_assert_eq!(again, merged);
    }
}
