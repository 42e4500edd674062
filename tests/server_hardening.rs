//! Hardening of the provisioning server (issue #12), against the real local control plane over
//! real HTTP. Each test states a property a phone or an attacker relies on; each failed on the
//! code before its fix.

mod support;

use phonefleet::render::Format;
use phonefleet::server::{Outcome, ServerStats};

use support::provisioning::{OLD, TestPhone, fixture, get, http, mac, started, ua};

#[tokio::test]
async fn upper_case_mac_file_names_are_the_same_phone() {
    let f = fixture(
        "hard-upper",
        3,
        &[TestPhone {
            mac: mac(0xabcdef),
            slot: None,
        }],
        1024,
    )
    .await;
    let srv = started(f.config("r1"), f.client.clone(), ServerStats::new()).await;
    let http = http();
    let phone = mac(0xabcdef);
    let canonical = Format::Xml.file_name(phone);
    let body = &f.files[&canonical];
    // `cfg000B82ABCDEF.xml`: the MAC's hex digits upper-cased, the rest as the phone sends it.
    let upper = format!("cfg{}.xml", phone.bare().to_string().to_uppercase());
    assert_ne!(upper, canonical);
    for agent in [None, Some(ua(phone, OLD))] {
        let headers: Vec<(&str, &str)> = agent.iter().map(|a| ("user-agent", a.as_str())).collect();
        let reply = get(&http, srv.local_addr(), &format!("/{upper}"), &headers).await;
        assert_eq!(reply.status, 200, "{upper} is {canonical}");
        assert_eq!(
            reply.body,
            body.as_bytes(),
            "{upper} serves {canonical}'s bytes"
        );
    }
    assert_eq!(srv.stats().outcome(Outcome::UnknownPhone), 0);
    srv.shutdown().await;
    f.ns.delete().await;
}
