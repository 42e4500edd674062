//! Fuzz-style property tests: whatever a client sends (path, method, User-Agent, Range), the
//! parsers return typed answers and the request handler answers with one of the documented
//! statuses, never a panic. Pure parsers are checked for their round-trip rules too.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use ::http::{Method, Request, StatusCode, header};
use bytes::Bytes;
use proptest::prelude::*;

use crate::children::{INDEX_KEY, IndexFirmware, IndexPhone, IndexSlot, ShardIndex};
use crate::clock::Clock;
use crate::core::Mac;
use crate::render::{FirmwarePath, parse_file_name};

use super::ServerConfig;
use super::auth::Policy;
use super::http::State;
use super::identity::parse_user_agent;
use super::index::Index;
use super::progress::Tracker;
use super::range::parse_range;
use super::stats::ServerStats;
use super::tokens::Tokens;

const PHONE: &str = "000b82abcdef";

/// A handler over one known phone (in its slot) and one firmware image, whose token API is an
/// address nothing listens on: a firmware request that gets that far is a 503, quickly.
fn state(firmware_dir: &std::path::Path) -> Arc<State> {
    state_with(firmware_dir, false)
}

/// [`state`], with the phone's slot announced ahead of its stage's release when `held`.
fn state_with(firmware_dir: &std::path::Path, held: bool) -> Arc<State> {
    let now = chrono::Utc::now();
    let index = ShardIndex {
        schedule: "voice/fw".into(),
        site: "paris".into(),
        time_zone: "Europe/Paris".into(),
        cap: 2,
        firmware: Some(IndexFirmware {
            version: "2.0".into(),
            file: "fw.bin".into(),
            models: vec![],
        }),
        phones: [(
            PHONE.to_owned(),
            IndexPhone {
                model: "GXP2170".into(),
                file: format!("cfg{PHONE}.xml"),
                slot: Some(IndexSlot {
                    stage: 0,
                    start: now - chrono::Duration::hours(1),
                    end: now + chrono::Duration::hours(1),
                    held,
                }),
            },
        )]
        .into(),
    };
    let mut cm = k8s_openapi::api::core::v1::ConfigMap::default();
    cm.metadata.name = Some("fw-paris-0".into());
    cm.metadata.namespace = Some("voice".into());
    cm.data = Some(
        [
            (
                INDEX_KEY.to_owned(),
                serde_json::to_string(&index).expect("index JSON"),
            ),
            (format!("cfg{PHONE}.xml"), "<gs_provision/>".to_owned()),
        ]
        .into(),
    );
    let mut idx = Index::default();
    idx.apply(&cm).expect("index");
    let config = kube::Config::new("http://127.0.0.1:1".parse().expect("URL"));
    let client = kube::Client::try_from(config).expect("client");
    Arc::new(State {
        config: ServerConfig {
            firmware_dir: Some(firmware_dir.to_path_buf()),
            ..ServerConfig::default()
        },
        clock: Clock::System,
        index: Arc::new(RwLock::new(idx)),
        tracker: Arc::new(Mutex::new(Tracker::default())),
        tokens: Tokens::new(
            client,
            "r".into(),
            Duration::from_secs(30),
            Duration::ZERO,
            None,
            0,
        ),
        stats: ServerStats::new(),
        policy: std::sync::RwLock::new(Arc::new(Policy::open())),
        limiter: super::ratelimit::FailureLimiter::new(Default::default()),
        ready: Arc::new(AtomicBool::new(true)),
        coverage: Arc::default(),
        access_log: Default::default(),
        upstream: None,
    })
}

#[test]
fn a_held_slot_sends_the_phone_back_soon_until_its_stage_is_released() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("fw.bin"), vec![7u8; 1000]).expect("image");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let ask = |held: bool| {
        let state = runtime.block_on(async { state_with(dir.path(), held) });
        let req = Request::get("/firmware/paris/fw.bin")
            .header(
                header::USER_AGENT,
                format!("Grandstream Model HW GXP2170 SW 1.0 DevId {PHONE}"),
            )
            .body(http_body_util::Empty::<Bytes>::new())
            .expect("request");
        let resp = runtime.block_on(state.clone().handle(req));
        let retry = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        (
            resp.status(),
            retry,
            state.stats.outcome(super::stats::Outcome::OutsideSlot),
        )
    };
    let (status, retry, refused) = ask(true);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused, 1, "held back as outside a released slot");
    let retry = retry.expect("Retry-After");
    assert!(
        (1..=300).contains(&retry),
        "Retry-After {retry}: soon, inside the slot"
    );
    // Released: the slot check passes (the token API here is unreachable, hence its own 503).
    let (_, _, refused) = ask(false);
    assert_eq!(refused, 0, "a released slot is not held back");
}

/// Paths shaped like the routes, with their parts mangled, and arbitrary ones.
fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        "/(cfg)?[0-9a-fA-FxX:.-]{0,14}(\\.xml|\\.cfg|\\.XML)?",
        "/firmware/[a-z./%-]{0,12}/[a-zA-Z0-9./%_-]{0,16}(/[a-z]{0,3})?",
        "/[ -~]{0,40}",
        Just(format!("/cfg{}.xml", PHONE.to_uppercase())),
        Just("/firmware/paris/fw.bin".to_owned()),
    ]
}

fn user_agent() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        "Yealink [ -~]{0,20} [ -~]{0,20} [0-9a-fA-F:.-]{0,20}( [a-z]{0,4})?".prop_map(Some),
        "Grandstream( Model)?( HW [ -~]{0,12})?( SW [ -~]{0,12})?( DevId [0-9a-fA-FzZ:]{0,14})?"
            .prop_map(Some),
        Just(Some(format!(
            "Grandstream Model HW GXP2170 SW 1.0 DevId {PHONE}"
        ))),
        "[ -~]{0,60}".prop_map(Some),
    ]
}

fn range_header() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        "bytes=[0-9]{0,21}-[0-9]{0,21}".prop_map(Some),
        "bytes=[0-9, -]{0,20}".prop_map(Some),
        "[ -~]{0,30}".prop_map(Some),
    ]
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::HEAD),
        Just(Method::POST),
        Just(Method::DELETE),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_request_gets_a_documented_answer(
        method in method(),
        path in path(),
        agent in user_agent(),
        range in range_header(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("fw.bin"), vec![7u8; 1000]).expect("image");
        let mut req = Request::builder().method(method);
        req = req.uri(path.as_str());
        if let Some(a) = &agent {
            req = req.header(header::USER_AGENT, a.as_str());
        }
        if let Some(r) = &range {
            req = req.header(header::RANGE, r.as_str());
        }
        // Strings that are not a valid URI or header value never reach the handler (hyper
        // refuses them while parsing).
        let Ok(req) = req.body(http_body_util::Empty::<Bytes>::new()) else {
            return Ok(());
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let status = runtime.block_on(async {
            let resp = state(dir.path()).handle(req).await;
            resp.status()
        });
        prop_assert!(
            [
                StatusCode::OK,
                StatusCode::PARTIAL_CONTENT,
                StatusCode::BAD_REQUEST,
                StatusCode::FORBIDDEN,
                StatusCode::NOT_FOUND,
                StatusCode::METHOD_NOT_ALLOWED,
                StatusCode::URI_TOO_LONG,
                StatusCode::RANGE_NOT_SATISFIABLE,
                StatusCode::SERVICE_UNAVAILABLE,
            ]
            .contains(&status),
            "{status}"
        );
    }

    #[test]
    fn a_range_is_inside_the_file_or_refused(header in "[ -~]{0,30}|bytes=[0-9]{0,21}-[0-9]{0,21}", len in 0u64..5000) {
        if let Ok(Some(r)) = parse_range(&header, len) {
            prop_assert!(r.start <= r.end && r.end < len, "{header} on {len}: {r:?}");
        }
    }

    #[test]
    fn a_parsed_file_name_is_its_phones_name_in_any_case(name in "(cfg)?[0-9a-fA-F:-]{10,14}(\\.xml|\\.cfg)?|[ -~]{0,30}") {
        if let Ok((mac, format)) = parse_file_name(&name) {
            prop_assert!(format.file_name(mac).eq_ignore_ascii_case(&name), "{name}");
        }
    }

    #[test]
    fn a_parsed_user_agent_names_a_real_mac(ua in "(Yealink|Grandstream)?[ -~]{0,60}") {
        if let Ok(agent) = parse_user_agent(&ua) {
            prop_assert_eq!(agent.mac.to_string().parse::<Mac>().ok(), Some(agent.mac));
            prop_assert!(!agent.version.is_empty() && !agent.model.is_empty());
        }
    }

    #[test]
    fn firmware_paths_are_plain(site in "[ -~]{0,20}", file in "[ -~]{0,20}") {
        if let Ok(p) = FirmwarePath::new(&site, &file) {
            prop_assert!(!p.file().contains('/') && p.file() != ".." && p.file() != ".");
            prop_assert!(!p.site().contains('/'));
        }
    }
}
