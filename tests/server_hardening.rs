//! Hardening of the provisioning server (issue #12), against the real local control plane over
//! real HTTP. Each test states a property a phone or an attacker relies on; each failed on the
//! code before its fix.

mod support;

use std::time::Duration;

use phonefleet::render::Format;
use phonefleet::server::{Outcome, ServerConfig, ServerStats};

use support::provisioning::{
    FW_FILE, OLD, TestPhone, firmware_path, fixture, get, http, image, mac, phones_in_slot,
    started, ua,
};
use support::proxy::StallingProxy;

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

// -- item 2: leaked download tokens --

#[tokio::test]
async fn phones_hanging_up_while_the_api_server_stalls_do_not_use_up_the_cap() {
    const CAP: u32 = 2;
    let f = fixture("hard-leak", CAP, &phones_in_slot(CAP + 2), 4096).await;
    let cluster = support::cluster().await;
    let upstream = StallingProxy::upstream_of(&cluster.kubeconfig).await;
    let proxy = StallingProxy::start(upstream).await;
    let client = proxy.client(&cluster.kubeconfig).await;
    let config = ServerConfig {
        // Short leases: a token the API server granted to a request nobody waits for any more
        // is free again soon.
        lease_duration: Duration::from_secs(3),
        ..f.config("r1")
    };
    let srv = started(config, client, ServerStats::new()).await;
    let addr = srv.local_addr();
    proxy.stall();
    for i in 0..=CAP {
        let (phone, agent) = (http(), ua(mac(i), OLD));
        // The phone gives up and hangs up while the server still waits for the API server.
        let outcome = tokio::time::timeout(
            Duration::from_millis(300),
            get(&phone, addr, &firmware_path(), &[("user-agent", &agent)]),
        )
        .await;
        assert!(outcome.is_err(), "phone {i} should still be waiting");
    }
    proxy.resume();
    let agent = ua(mac(CAP + 1), OLD);
    support::eventually(
        "a download to be granted once the API server answers again",
        Duration::from_secs(30),
        || {
            let agent = agent.clone();
            async move {
                let reply = get(&http(), addr, &firmware_path(), &[("user-agent", &agent)]).await;
                (reply.status == 200).then_some(())
            }
        },
    )
    .await;
    srv.shutdown().await;
    f.ns.delete().await;
}

// -- item 9: resumes across a replaced image --

#[tokio::test]
async fn a_resume_across_a_replaced_image_gets_the_whole_new_image() {
    const LEN: usize = 64 * 1024;
    let f = fixture("hard-etag", 3, &phones_in_slot(2), LEN).await;
    let srv = started(f.config("r1"), f.client.clone(), ServerStats::new()).await;
    let http = http();
    let agent = ua(mac(0), OLD);
    let first = get(
        &http,
        srv.local_addr(),
        &firmware_path(),
        &[("user-agent", &agent), ("range", "bytes=0-32767")],
    )
    .await;
    assert_eq!(first.status, 206);
    let old_tag = first
        .headers
        .get("etag")
        .expect("a firmware answer carries an ETag")
        .to_str()
        .expect("ASCII ETag")
        .to_owned();
    assert!(!old_tag.starts_with("W/"), "a strong validator: {old_tag}");

    // The operator replaces the image (same length, other bytes) between the phone's two requests.
    let path = f.firmware_dir.path().join(FW_FILE);
    let next = f.firmware_dir.path().join("next.tmp");
    std::fs::write(&next, image(LEN, 99)).expect("write new image");
    std::fs::rename(&next, &path).expect("replace image");

    let resumed = get(
        &http,
        srv.local_addr(),
        &firmware_path(),
        &[
            ("user-agent", &agent),
            ("range", "bytes=32768-"),
            ("if-range", &old_tag),
        ],
    )
    .await;
    assert_eq!(
        resumed.status, 200,
        "the old part is stale: the whole new image"
    );
    assert_eq!(
        &resumed.body[..],
        &image(LEN, 99)[..],
        "no splice of two images"
    );
    let new_tag = resumed.headers["etag"]
        .to_str()
        .expect("ASCII ETag")
        .to_owned();
    assert_ne!(new_tag, old_tag);

    // Another phone (this one has its image) holding the current tag.
    let other = ua(mac(1), OLD);
    let matching = get(
        &http,
        srv.local_addr(),
        &firmware_path(),
        &[
            ("user-agent", &other),
            ("range", "bytes=32768-"),
            ("if-range", &new_tag),
        ],
    )
    .await;
    assert_eq!(matching.status, 206, "an unchanged image resumes");
    assert_eq!(&matching.body[..], &image(LEN, 99)[32768..]);
    srv.shutdown().await;
    f.ns.delete().await;
}
