//! Hardening of the provisioning server (issue #12), against the real local control plane over
//! real HTTP. Each test states a property a phone or an attacker relies on; each failed on the
//! code before its fix.

mod support;

use std::time::Duration;

use phonefleet::render::Format;
use phonefleet::server::{Outcome, ServerConfig, ServerStats};

use support::provisioning::{
    OLD, TestPhone, firmware_path, fixture, get, http, mac, phones_in_slot, started, ua,
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
