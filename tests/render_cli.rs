//! `phonefleet render` prints exactly the bytes the renderer produces: nothing added, nothing
//! lost, so an operator can diff it with what a phone downloaded.

use std::process::Command;

use phonefleet::controller::preview::render_phone;

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
fn prints_the_rendered_bytes_for_a_phone_of_every_family() {
    let manifest = phonefleet::manifest::load(MANIFEST.as_ref()).expect("example manifest");
    let server = "https://prov.example/p".parse().expect("URL");
    // A Grandstream GXP2170, a Yealink SIP-T46U and an XSTIM phone of examples/fleet.yaml.
    for (mac, name) in [
        ("00:0b:82:a5:4d:ca", "cfg000b82a54dca.xml"),
        ("80:5e:c0:18:25:30", "805ec0182530.cfg"),
        ("00:0e:5f:00:00:01", "cfg000e5f000001.xml"),
    ] {
        let out = cli(&["--mac", mac, "--server-url", "https://prov.example/p"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let want = render_phone(
            &manifest,
            mac.parse().expect("MAC"),
            &server,
            NOW.parse().expect("RFC 3339"),
        )
        .expect("renders");
        assert_eq!(want.name, name);
        assert_eq!(String::from_utf8_lossy(&out.stdout), want.body, "{mac}");
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
        text.contains(
            "static.firmware.url = http://phonefleet-provisioning/firmware/shop-14/T46U-86.85.0.20.rom\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("static.auto_provision.flexible.enable = 0\n"),
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
