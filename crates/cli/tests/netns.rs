//! A real link cut: the machine and `tether connect` run in two network namespaces this test
//! creates, joined by a veth pair; the test takes the link down and up again. Needs root and
//! iproute2; without them it says so and skips. No traffic leaves the two namespaces.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is the test failing"
)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Netns {
    names: Vec<String>,
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_veth_cut_is_detected_and_the_client_reconnects_when_the_link_returns() {
    let id = std::process::id() % 100_000;
    let (server_ns, client_ns) = (format!("tts{id}"), format!("ttc{id}"));
    let (server_if, client_if) = (format!("tvs{id}"), format!("tvc{id}"));
    if !ip(&["netns", "add", &server_ns]) {
        eprintln!("skipped: cannot create network namespaces here (needs root and iproute2)");
        return;
    }
    let _cleanup = Netns {
        names: vec![server_ns.clone(), client_ns.clone()],
    };
    assert!(ip(&["netns", "add", &client_ns]));
    assert!(ip(&[
        "link", "add", &server_if, "type", "veth", "peer", "name", &client_if
    ]));
    assert!(ip(&["link", "set", &server_if, "netns", &server_ns]));
    assert!(ip(&["link", "set", &client_if, "netns", &client_ns]));
    for (ns, dev, addr) in [
        (&server_ns, &server_if, "10.213.7.1/24"),
        (&client_ns, &client_if, "10.213.7.2/24"),
    ] {
        assert!(ip(&["-n", ns, "link", "set", "lo", "up"]));
        assert!(ip(&["-n", ns, "addr", "add", addr, "dev", dev]));
        assert!(ip(&["-n", ns, "link", "set", dev, "up"]));
    }
    let bin = env!("CARGO_BIN_EXE_tether");
    let server = Killed(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &server_ns,
                bin,
                "serve",
                "--bind",
                "10.213.7.1:8080",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut connect = Command::new("ip")
        .args([
            "netns",
            "exec",
            &client_ns,
            bin,
            "connect",
            "10.213.7.1:8080",
        ])
        .args(["--insecure", "--json", "--check-interval", "200ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = connect.stdout.take().unwrap();
    let _connect = Killed(connect);
    let rx = common::lines_of(stdout);
    let next = |want: &str, limit: Duration| -> Duration {
        let t0 = Instant::now();
        while let Ok(line) = rx.recv_timeout(limit.saturating_sub(t0.elapsed())) {
            if line.contains(&format!(r#""event":"{want}""#)) {
                return t0.elapsed();
            }
        }
        panic!("no {want} event within {limit:?}");
    };
    next("resources", Duration::from_secs(15));
    // Cut the link: packets vanish, nothing is reset.
    assert!(ip(&["-n", &server_ns, "link", "set", &server_if, "down"]));
    let detected = next("disconnected", Duration::from_secs(10));
    assert!(
        detected < Duration::from_secs(4),
        "detection took {detected:?}"
    );
    next("reconnecting", Duration::from_secs(5));
    // Restore it: the client reconnects by itself.
    assert!(ip(&["-n", &server_ns, "link", "set", &server_if, "up"]));
    next("connected", Duration::from_secs(30));
    drop(server);
}
