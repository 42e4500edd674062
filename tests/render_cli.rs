//! `phonefleet render` prints exactly the bytes the renderer produces: nothing added, nothing
//! lost, so an operator can diff it with what a phone downloaded.

use std::process::Command;

use phonefleet::controller::preview::render_phone;
use phonefleet::render::Format;

const MANIFEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/fleet.yaml");
const NOW: &str = "2026-12-01T08:00:00Z";

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_phonefleet"))
        .args(["render", "-f", MANIFEST, "--now", NOW])
        .args(args)
        .env_remove("PHONEFLEET_SERVER_URL")
        .output()
        .expect("run phonefleet render")
}

#[test]
fn prints_the_rendered_bytes_for_every_format() {
    let manifest = phonefleet::manifest::load(MANIFEST.as_ref()).expect("example manifest");
    let server = "https://prov.example/p".parse().expect("URL");
    let mac = "00:0b:82:a5:4d:ca";
    for format in Format::ALL {
        let out = cli(&[
            "--mac",
            mac,
            "--format",
            &format.to_string(),
            "--server-url",
            "https://prov.example/p",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let want = render_phone(
            &manifest,
            mac.parse().expect("MAC"),
            Some(format),
            &server,
            NOW.parse().expect("RFC 3339"),
        )
        .expect("renders");
        assert_eq!(String::from_utf8_lossy(&out.stdout), want.body, "{format}");
    }
}

#[test]
fn a_phone_in_a_rollout_slot_points_at_its_sites_firmware() {
    // One stage of 100 %: the phone's slot is in the first, released stage.
    let manifest = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/valid/flexible-rollout.yaml"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_phonefleet"))
        .args([
            "render",
            "-f",
            manifest,
            "--now",
            NOW,
            "--mac",
            "80:5e:c0:aa:bb:02",
        ])
        .args(["--format", "text"])
        .env_remove("PHONEFLEET_SERVER_URL")
        .output()
        .expect("run phonefleet render");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("P192 = phonefleet-provisioning/firmware/shop-14\n"),
        "{text}"
    );
    assert!(
        text.contains("P25036 = 0\n"),
        "flexible is off inside a slot:\n{text}"
    );
}

#[test]
fn an_unknown_phone_fails_naming_it() {
    let out = cli(&["--mac", "00:0b:82:00:00:00"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("00:0b:82:00:00:00"), "{stderr}");
}
