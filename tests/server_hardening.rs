//! Hardening of the provisioning server (issue #12), against the real local control plane over
//! real HTTP. Each test states a property a phone or an attacker relies on; each failed on the
//! code before its fix.

mod support;

use std::time::Duration;

use chrono::Utc;

use phonefleet::children::PhoneState;
use phonefleet::render::Format;
use phonefleet::server::progress::UpgradeEvidence;
use phonefleet::server::{Outcome, ServerConfig, ServerStats};

use support::provisioning::{
    FW_FILE, OLD, TARGET, TestPhone, firmware_path, fixture, get, http, image, mac, now_slot,
    phones_in_slot, started, ua,
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

// -- item 6: the cap as documented --

/// Sends a firmware GET for `mac` on a raw connection and returns it once the status line
/// is in, with the status (the body is left unread, as by a phone still downloading).
async fn open_download(addr: std::net::SocketAddr, phone: u32) -> (u16, tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: prov\r\nUser-Agent: {}\r\n\r\n",
        firmware_path(),
        ua(mac(phone), OLD)
    );
    conn.write_all(request.as_bytes()).await.expect("send");
    let mut head = [0u8; 12];
    conn.read_exact(&mut head).await.expect("status line");
    let status = String::from_utf8_lossy(&head[9..12])
        .parse()
        .expect("status code");
    (status, conn)
}

#[tokio::test]
async fn one_phone_holds_at_most_one_token_of_its_site() {
    const CAP: u32 = 3;
    let f = fixture("hard-onemac", CAP, &phones_in_slot(2), 256 * 1024).await;
    let config = ServerConfig {
        // Slow enough that the first download is still running while the others ask.
        download_rate: Some(32 * 1024),
        min_download_rate: None,
        ..f.config("r1")
    };
    let srv = started(config, f.client.clone(), ServerStats::new()).await;
    let addr = srv.local_addr();
    let (first, running) = open_download(addr, 0).await;
    assert_eq!(first, 200);
    for attempt in 1..CAP {
        let (status, _) = open_download(addr, 0).await;
        assert_eq!(
            status, 503,
            "connection {attempt} of the same phone must not take another of the {CAP} tokens"
        );
    }
    let (other, _other_running) = open_download(addr, 1).await;
    assert_eq!(other, 200, "another phone of the site still gets a token");
    drop(running);
    support::eventually(
        "the phone to get a token again once its download ended",
        Duration::from_secs(20),
        || async move { (open_download(addr, 0).await.0 == 200).then_some(()) },
    )
    .await;
    srv.shutdown().await;
    f.ns.delete().await;
}

#[tokio::test]
async fn a_trickling_download_is_cut_and_its_token_freed() {
    // Larger than every socket buffer on the way, so the server cannot hand it all to the kernel.
    const LEN: usize = 32 * 1024 * 1024;
    let f = fixture("hard-trickle", 1, &phones_in_slot(2), LEN).await;
    let config = ServerConfig {
        min_download_rate: Some(1024 * 1024),
        min_download_rate_window: Duration::from_secs(1),
        ..f.config("r1")
    };
    let srv = started(config, f.client.clone(), ServerStats::new()).await;
    let addr = srv.local_addr();
    let (status, mut slow) = open_download(addr, 0).await;
    assert_eq!(status, 200);
    // The phone reads 4 KiB every 100 ms: 40 KiB/s, always some progress (the idle timeout
    // never fires), far below the minimum rate.
    let trickle = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 4096];
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    let (busy, _) = open_download(addr, 1).await;
    assert_eq!(busy, 503, "the single token is held by the trickling phone");
    let http = http();
    support::eventually(
        "the trickling download to be cut and its token given to the next phone",
        Duration::from_secs(30),
        || {
            let http = http.clone();
            async move {
                let reply = get(
                    &http,
                    addr,
                    &firmware_path(),
                    &[("user-agent", &ua(mac(1), OLD))],
                )
                .await;
                (reply.status == 200).then_some(reply.body.len())
            }
        },
    )
    .await;
    trickle.abort();
    srv.shutdown().await;
    f.ns.delete().await;
}

// -- item 1, in part: a download counts only when the whole image went out --

#[tokio::test]
async fn the_last_byte_alone_is_not_a_download_and_ranges_add_up() {
    const LEN: usize = 64 * 1024;
    let f = fixture("hard-forge", 3, &phones_in_slot(1), LEN).await;
    let srv = started(f.config("r1"), f.client.clone(), ServerStats::new()).await;
    let (http, addr, agent) = (http(), srv.local_addr(), ua(mac(0), OLD));
    let stats = srv.stats();
    let ended = |n: u64| {
        let site = stats.site("paris");
        move || {
            let done = site
                .downloads_completed
                .load(std::sync::atomic::Ordering::SeqCst);
            async move { (done >= n).then_some(()) }
        }
    };
    let range = |r: &'static str| [("user-agent", agent.as_str()), ("range", r)];

    // Anyone claiming the phone's MAC asks for the image's last byte...
    let tail = get(&http, addr, &firmware_path(), &range("bytes=-1")).await;
    assert_eq!(tail.status, 206);
    support::eventually("the response to end", Duration::from_secs(10), ended(1)).await;
    // ...then claims the old version, which after a real download means the image failed.
    let config = format!("/{}", Format::Xml.file_name(mac(0)));
    let reply = get(&http, addr, &config, &[("user-agent", agent.as_str())]).await;
    assert_eq!(reply.status, 200);
    let state = srv.progress_of(mac(0)).map(|p| p.state);
    assert!(
        !matches!(state, Some(PhoneState::Rebooting | PhoneState::Failed)),
        "one byte is not a download: {state:?}"
    );

    // The phone fetching the image in two ranges has downloaded it.
    let first = get(&http, addr, &firmware_path(), &range("bytes=0-32767")).await;
    assert_eq!(first.status, 206);
    let rest = get(&http, addr, &firmware_path(), &range("bytes=32768-")).await;
    assert_eq!(rest.status, 206);
    support::eventually("the ranges to add up", Duration::from_secs(10), || {
        let state = srv.progress_of(mac(0)).map(|p| p.state);
        async move { (state == Some(PhoneState::Rebooting)).then_some(()) }
    })
    .await;
    srv.shutdown().await;
    f.ns.delete().await;
}

// -- item 1 (rest): "upgraded" follows evidence --

/// Anyone who knows a MAC can send a config request whose User-Agent claims the target
/// version. By default that marks nothing before the phone's slot; with `download` evidence
/// nothing until the phone downloaded the whole image — through this replica or another one.
#[tokio::test]
async fn a_forged_config_request_on_the_target_version_does_not_mark_a_phone_upgraded() {
    let later = Utc::now() + chrono::Duration::hours(2);
    let phones = [
        // Its slot begins in two hours.
        TestPhone {
            mac: mac(1),
            slot: Some((later, later + chrono::Duration::hours(1))),
        },
        // In its slot now.
        TestPhone {
            mac: mac(2),
            slot: now_slot(),
        },
    ];
    let f = fixture("hard-claim", 3, &phones, 4096).await;
    // Replica A with the default rule, replica B requiring a whole-image download.
    let a = started(f.config("a"), f.client.clone(), ServerStats::new()).await;
    let strict = ServerConfig {
        upgrade_evidence: UpgradeEvidence::Download,
        ..f.config("b")
    };
    let b = started(strict, f.client.clone(), ServerStats::new()).await;
    let http = http();
    let claim = |srv: &phonefleet::server::ServerHandle, phone: u32| {
        let path = format!("/{}", Format::Xml.file_name(mac(phone)));
        let agent = ua(mac(phone), TARGET);
        let (http, addr) = (http.clone(), srv.local_addr());
        async move {
            let reply = get(&http, addr, &path, &[("user-agent", agent.as_str())]).await;
            assert_eq!(reply.status, 200, "the file is served all the same");
        }
    };
    // The claim is checked at the next progress write against what is stored (nothing) and
    // dropped: the replica forgets it, and nothing is written.
    let forgotten = |srv: &phonefleet::server::ServerHandle, phone: u32| {
        let state = srv.progress_of(mac(phone)).map(|p| p.state);
        async move { state.is_none().then_some(()) }
    };
    claim(&a, 1).await;
    support::eventually(
        "A to drop a claim made before the phone's slot",
        Duration::from_secs(20),
        || forgotten(&a, 1),
    )
    .await;
    claim(&b, 2).await;
    support::eventually(
        "B to drop a claim made without a download",
        Duration::from_secs(20),
        || forgotten(&b, 2),
    )
    .await;
    for phone in [1, 2] {
        assert_eq!(
            f.stored_progress(mac(phone)).await,
            None,
            "phone {phone}: a claim alone is not an upgrade"
        );
    }

    // The whole image goes out to phone 2 through A...
    let agent = ua(mac(2), OLD);
    let fw = get(
        &http,
        a.local_addr(),
        &firmware_path(),
        &[("user-agent", agent.as_str())],
    )
    .await;
    assert_eq!((fw.status, fw.body.len()), (200, 4096));
    let stored_state = |phone: u32, want: PhoneState| {
        let f = &f;
        move || async move {
            let stored = f.stored_progress(mac(phone)).await?;
            (stored.state == want).then_some(())
        }
    };
    support::eventually(
        "A to record the reboot",
        Duration::from_secs(20),
        stored_state(2, PhoneState::Rebooting),
    )
    .await;
    // ...and the phone comes back on the target through B, which has no evidence of its own
    // but finds A's record of the download.
    claim(&b, 2).await;
    support::eventually(
        "B to record the upgrade on A's evidence",
        Duration::from_secs(20),
        stored_state(2, PhoneState::Upgraded),
    )
    .await;
    // Phone 1's claim, still before its slot, is still nothing.
    assert_eq!(f.stored_progress(mac(1)).await, None);
    a.shutdown().await;
    b.shutdown().await;
    f.ns.delete().await;
}
