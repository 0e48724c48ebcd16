//! The failure cases of a fleet's signaling (`../shared/FLEET.md` §4.6), as real processes on
//! loopback: two `tether signal` instances sharing a real `redis-server`, and answerers and
//! callers speaking `SignalingService` by hand over real sockets, so a test can stall an
//! exchange, hold a stream open, or count what arrives. (`fleet.rs` has the machine itself
//! answering, and the Rust client calling.)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is the test failing"
)]

mod common;
#[path = "../../signal/tests/support/redis_server.rs"]
mod redis_server;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Server;
use common::client::{KEY, KEY_ID};
use common::signaling::{SignalingClient, signaling_client, to};
use redis_server::Redis;
use tether_proto::proto::rpc::webrtc::v1 as pb;
use tokio::sync::mpsc;
use tonic::{Code, Status};

const ROVER: &str = "rover.cases.test";
const ANSWER_KEY: (&str, &str) = ("answer-key", "answer-secret-0123456789");
/// Hosts the answer key answers for besides the rover: its aliases and a hundred machines.
fn aliases() -> Vec<String> {
    (1..=5).map(|n| format!("alias{n}.cases.test")).collect()
}
fn machines() -> Vec<String> {
    (0..100).map(|n| format!("m{n:03}.cases.test")).collect()
}

/// A config for a fleet on `redis`: the answer key answers for every host above, the
/// operator's key calls them.
fn config(redis: &str) -> std::path::PathBuf {
    config_with(redis, "")
}

/// The same, with `extra` members (`"name": value,`) at its top.
fn config_with(redis: &str, extra: &str) -> std::path::PathBuf {
    let mut hosts = vec![ROVER.to_string()];
    hosts.extend(aliases());
    hosts.push("alias6.cases.test".into());
    hosts.extend(machines());
    let hosts = serde_json::to_string(&hosts).unwrap();
    let text = format!(
        r#"{{{extra} "redis_url": "{redis}",
          "api_keys": [
            {{"id": "{}", "key": "{}", "answer": {hosts}}},
            {{"id": "{KEY_ID}", "key": "{KEY}", "call": {hosts}}}
          ]}}"#,
        ANSWER_KEY.0, ANSWER_KEY.1
    );
    common::unique_temp_file("signal-cases", &text)
}

fn signal(config: &std::path::Path, bind: &str) -> Server {
    Server::start_signal(&["--config", config.to_str().unwrap(), "--bind", bind])
}

/// Two instances on one Redis.
fn fleet(redis: &Redis) -> (std::path::PathBuf, Server, Server) {
    let config = config(&redis.url());
    let a = signal(&config, "127.0.0.1:0");
    let b = signal(&config, "127.0.0.1:0");
    (config, a, b)
}

/// One `Answer` stream, spoken by hand.
struct Answering {
    out: mpsc::Sender<pb::AnswerResponse>,
    incoming: tonic::Streaming<pb::AnswerRequest>,
}

impl Answering {
    /// Opens an `Answer` stream at `client` for `hosts` (one `rpc-host` each).
    async fn open(client: &mut SignalingClient, token: &str, hosts: &[&str], beats: bool) -> Self {
        Self::try_open(client, token, hosts, beats).await.unwrap()
    }

    /// The same, or the service's refusal.
    async fn try_open(
        client: &mut SignalingClient,
        token: &str,
        hosts: &[&str],
        beats: bool,
    ) -> Result<Self, Status> {
        let (out, rx) = mpsc::channel(16);
        let stream =
            futures::stream::unfold(rx, |mut rx| async { rx.recv().await.map(|m| (m, rx)) });
        let mut r = to(stream, hosts[0], token);
        for h in &hosts[1..] {
            r.metadata_mut().append("rpc-host", h.parse().unwrap());
        }
        if beats {
            r.metadata_mut()
                .insert("heartbeats-allowed", "true".parse().unwrap());
        }
        let incoming = client.answer(r).await?.into_inner();
        Ok(Answering { out, incoming })
    }

    /// The next message, skipping heartbeats: an offer's uuid and SDP.
    async fn offer(&mut self, limit: Duration) -> Result<(String, String), Status> {
        loop {
            let m = tokio::time::timeout(limit, self.incoming.message())
                .await
                .map_err(|_| Status::deadline_exceeded("no offer in time"))??
                .ok_or_else(|| Status::aborted("the stream ended"))?;
            match m.stage {
                Some(pb::answer_request::Stage::Init(i)) => return Ok((m.uuid, i.sdp)),
                Some(pb::answer_request::Stage::Heartbeat(_)) => {}
                other => return Err(Status::internal(format!("not an offer: {other:?}"))),
            }
        }
    }

    /// Answers call `uuid` with `sdp`, is done, and reads the stream to its end (up to 5 s),
    /// as a machine does: hanging up at once would reset the stream and lose the answer.
    async fn answer(&mut self, uuid: &str, sdp: &str) {
        use pb::answer_response::Stage;
        for stage in [
            Stage::Init(pb::AnswerResponseInitStage { sdp: sdp.into() }),
            Stage::Done(pb::AnswerResponseDoneStage {}),
        ] {
            let _ = self
                .out
                .send(pb::AnswerResponse {
                    uuid: uuid.into(),
                    stage: Some(stage),
                })
                .await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Ok(Some(_)) = self.incoming.message().await {}
        })
        .await;
    }

    /// What comes next on the stream within `limit`: a stage's name, or how it ended.
    async fn next_event(&mut self, limit: Duration) -> String {
        match tokio::time::timeout(limit, self.incoming.message()).await {
            Err(_) => "nothing".into(),
            Ok(Ok(None)) => "end".into(),
            Ok(Err(s)) => format!("status {:?}: {}", s.code(), s.message()),
            Ok(Ok(Some(m))) => match m.stage {
                Some(pb::answer_request::Stage::Heartbeat(_)) => "heartbeat".into(),
                Some(pb::answer_request::Stage::Init(_)) => "init".into(),
                Some(pb::answer_request::Stage::Update(_)) => "update".into(),
                Some(pb::answer_request::Stage::Done(_)) => "done".into(),
                Some(pb::answer_request::Stage::Error(e)) => {
                    format!("error {}", e.status.map(|s| s.message).unwrap_or_default())
                }
                None => "empty".into(),
            },
        }
    }
}

/// A caller's `Call` with `sdp` to `host`: the stream, once the service accepted it.
async fn call(
    client: &mut SignalingClient,
    token: &str,
    host: &str,
    sdp: &str,
) -> Result<tonic::Streaming<pb::CallResponse>, Status> {
    let r = to(
        pb::CallRequest {
            sdp: sdp.into(),
            disable_trickle: false,
        },
        host,
        token,
    );
    Ok(client.call(r).await?.into_inner())
}

/// A whole exchange from the caller's side: the answer's SDP, after which the caller is done.
async fn exchange(
    client: &mut SignalingClient,
    token: &str,
    host: &str,
    sdp: &str,
) -> Result<String, Status> {
    let mut s = call(client, token, host, sdp).await?;
    let first = s
        .message()
        .await?
        .ok_or_else(|| Status::aborted("the call ended without an answer"))?;
    let answer = match first.stage {
        Some(pb::call_response::Stage::Init(i)) => i.sdp,
        other => return Err(Status::internal(format!("not an answer: {other:?}"))),
    };
    let done = pb::CallUpdateRequest {
        uuid: first.uuid,
        update: Some(pb::call_update_request::Update::Done(true)),
    };
    client.call_update(to(done, host, token)).await?;
    while s.message().await?.is_some() {}
    Ok(answer)
}

/// How call stream `s` ends within `limit`, past whatever it still delivers: its status, or
/// None if it has not ended by then.
async fn call_end(
    s: &mut tonic::Streaming<pb::CallResponse>,
    limit: Duration,
) -> Option<Result<(), Status>> {
    tokio::time::timeout(limit, async {
        loop {
            match s.message().await {
                Ok(Some(_)) => {}
                other => return other.map(|_| ()),
            }
        }
    })
    .await
    .ok()
}

async fn caller(addr: &str) -> (SignalingClient, String) {
    signaling_client(addr, KEY_ID, KEY).await
}

async fn answerer(addr: &str) -> (SignalingClient, String) {
    signaling_client(addr, ANSWER_KEY.0, ANSWER_KEY.1).await
}

/// Waits until Redis holds only the liveness keys of `instances` instances, up to `limit`.
async fn back_to(redis: &Redis, instances: usize, limit: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let keys = redis.keys();
        if keys.len() <= instances && keys.iter().all(|k| k.starts_with("tq:inst:")) {
            return t0.elapsed();
        }
        if t0.elapsed() >= limit {
            let detail: Vec<String> = keys
                .iter()
                .map(|k| {
                    let out = std::process::Command::new("redis-cli")
                        .args(["-p", &redis.port.to_string(), "--no-raw"])
                        .args(["ZRANGE", k, "0", "-1", "WITHSCORES"])
                        .output()
                        .unwrap();
                    format!("{k}: {}", String::from_utf8_lossy(&out.stdout))
                })
                .collect();
            let time = std::process::Command::new("redis-cli")
                .args(["-p", &redis.port.to_string(), "TIME"])
                .output()
                .unwrap();
            panic!(
                "keys left after {limit:?}, beyond {instances} instances' own: {detail:?}, TIME {}",
                String::from_utf8_lossy(&time.stdout)
            );
        }
        // Asleep on the runtime, so that what the test dropped (streams, connections)
        // really goes.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// §4.6 #9: an instance killed mid-exchange. The caller whose answerer's instance died hears
/// `UNAVAILABLE` before its deadline; the answerer whose caller's instance died hears an
/// error; and Redis is back to the instances' own keys afterwards.
#[tokio::test]
async fn an_instance_killed_mid_exchange_ends_the_other_side_before_the_deadline() {
    let redis = Redis::start();
    let (config, a, b) = fleet(&redis);

    // The answerer's instance (b) dies while the exchange is under way.
    let (mut ac, at) = answerer(&b.addr).await;
    let mut answering = Answering::open(&mut ac, &at, &[ROVER], false).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut cc, ct) = caller(&a.addr).await;
    let mut s = call(&mut cc, &ct, ROVER, "offer").await.unwrap();
    answering.offer(Duration::from_secs(5)).await.unwrap();
    let killed = Instant::now();
    drop(b);
    let ended = tokio::time::timeout(Duration::from_secs(15), s.message()).await;
    let took = killed.elapsed();
    let status = match ended {
        Ok(Err(status)) => status,
        other => panic!("the caller heard {other:?}"),
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        took < Duration::from_millis(4500),
        "the caller heard only after {took:?}, its deadline is 10 s"
    );
    eprintln!(
        "answerer's instance killed mid-exchange: the caller heard after {took:?}: {status:?}"
    );

    // The caller's instance (a) dies: the answerer, on a new instance, hears an error.
    let b = signal(&config, "127.0.0.1:0");
    let (mut ac, at) = answerer(&b.addr).await;
    let mut answering = Answering::open(&mut ac, &at, &[ROVER], false).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut s = call(&mut cc, &ct, ROVER, "offer").await.unwrap();
    answering.offer(Duration::from_secs(5)).await.unwrap();
    let killed = Instant::now();
    drop(a);
    let heard = answering.next_event(Duration::from_secs(15)).await;
    let took = killed.elapsed();
    assert!(heard.starts_with("error"), "the answerer heard {heard}");
    assert!(
        took < Duration::from_millis(4500),
        "the answerer heard only after {took:?}"
    );
    eprintln!("caller's instance killed mid-exchange: the answerer heard {heard:?} after {took:?}");
    drop(s.message().await);

    // Nothing is left behind but the live instance's own keys.
    drop(answering);
    let left = back_to(&redis, 1, Duration::from_secs(25)).await;
    eprintln!("Redis back to the live instance's keys {left:?} later");
}

/// §4.6 #15: one `Answer` stream for a host and its aliases takes an offer to any of them,
/// one at a time; six names are refused.
#[tokio::test]
async fn an_answerer_of_five_names_is_reached_by_any_and_six_are_refused() {
    let redis = Redis::start();
    let (_config, a, b) = fleet(&redis);
    let names = aliases();
    let hosts: Vec<&str> = names.iter().map(String::as_str).collect();
    let (mut ac, at) = answerer(&b.addr).await;
    let (cc, ct) = caller(&a.addr).await;
    for (n, host) in hosts.iter().enumerate() {
        let mut answering = Answering::open(&mut ac, &at, &hosts, false).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sdp = format!("offer to {host}");
        let calling = {
            let (mut cc, ct) = (cc.clone(), ct.clone());
            let (host, sdp) = (host.to_string(), sdp.clone());
            tokio::spawn(async move { exchange(&mut cc, &ct, &host, &sdp).await })
        };
        let (uuid, got) = answering.offer(Duration::from_secs(5)).await.unwrap();
        assert_eq!(got, sdp);
        // While this answerer is busy, a second call to another of its names waits: it is
        // not handed to the same answerer.
        let other = hosts[(n + 1) % hosts.len()].to_string();
        let second = {
            let (mut cc, ct) = (cc.clone(), ct.clone());
            tokio::spawn(async move { exchange(&mut cc, &ct, &other, "second").await })
        };
        assert_eq!(
            answering.next_event(Duration::from_millis(1500)).await,
            "nothing",
            "a busy answerer got a second offer"
        );
        answering
            .answer(&uuid, &format!("answer from {host}"))
            .await;
        assert_eq!(
            calling.await.unwrap().unwrap(),
            format!("answer from {host}")
        );
        // The waiting call is taken by the next stream.
        let mut next = Answering::open(&mut ac, &at, &hosts, false).await;
        let (uuid, got) = next.offer(Duration::from_secs(5)).await.unwrap();
        assert_eq!(got, "second");
        next.answer(&uuid, "second answer").await;
        assert_eq!(second.await.unwrap().unwrap(), "second answer");
    }
    let mut six = hosts.clone();
    six.push("alias6.cases.test");
    let refused = match Answering::try_open(&mut ac, &at, &six, false).await {
        Ok(mut stream) => stream.next_event(Duration::from_secs(5)).await,
        Err(s) => format!("status {:?}: {}", s.code(), s.message()),
    };
    assert!(
        refused.contains("InvalidArgument") && refused.contains("too many rpc-host"),
        "{refused}"
    );
}

/// §4.6 #14: a waiting answerer that allows heartbeats gets one every 15 s; one that does not
/// gets none.
#[tokio::test]
async fn waiting_answerers_get_heartbeats_every_15_s_only_when_allowed() {
    let redis = Redis::start();
    let (_config, a, _b) = fleet(&redis);
    let (mut ac, at) = answerer(&a.addr).await;
    let t0 = Instant::now();
    let mut with = Answering::open(&mut ac, &at, &[ROVER], true).await;
    let mut without = Answering::open(&mut ac, &at, &["m000.cases.test"], false).await;
    let (first, quiet) = tokio::join!(
        async {
            let first = with.next_event(Duration::from_secs(20)).await;
            (first, t0.elapsed())
        },
        without.next_event(Duration::from_secs(17))
    );
    let (first, at_) = first;
    assert_eq!(first, "heartbeat");
    assert!(
        (Duration::from_secs(14)..Duration::from_secs(17)).contains(&at_),
        "the first heartbeat came after {at_:?}"
    );
    assert_eq!(quiet, "nothing", "without heartbeats-allowed: {quiet}");
    eprintln!("first heartbeat after {at_:?}; none without heartbeats-allowed");
}

/// §4.6 #3 and #16: a host's answerer keeps one stream on each instance, callers call through
/// either with random pauses; every offer is delivered exactly once and answered, and Redis is
/// back to the instances' own keys afterwards. (`scripts/bench-fleet` is the long run.)
#[tokio::test]
async fn a_thousand_offers_through_two_instances_are_each_delivered_exactly_once() {
    let n: usize = std::env::var("TETHER_FLEET_EXCHANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let redis = Redis::start();
    let (_config, a, b) = fleet(&redis);
    let delivered: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut answerers = Vec::new();
    for addr in [a.addr.clone(), b.addr.clone()] {
        let (delivered, stop) = (delivered.clone(), stop.clone());
        answerers.push(tokio::spawn(async move {
            let (mut ac, at) = answerer(&addr).await;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut answering = Answering::open(&mut ac, &at, &[ROVER], false).await;
                // Never hung up while waiting: an answerer that hangs up just as it is handed
                // an offer fails that call.
                let Ok((uuid, sdp)) = answering.offer(Duration::from_secs(600)).await else {
                    continue;
                };
                *delivered.lock().unwrap().entry(sdp.clone()).or_default() += 1;
                answering.answer(&uuid, &format!("answer to {sdp}")).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = Instant::now();
    let mut callers = Vec::new();
    for c in 0..4 {
        let addr = if c % 2 == 0 {
            a.addr.clone()
        } else {
            b.addr.clone()
        };
        callers.push(tokio::spawn(async move {
            let (mut cc, ct) = caller(&addr).await;
            let mut seed = 0x9E37_79B9_u32 ^ c;
            let mut failed = Vec::new();
            for i in (c as usize..n).step_by(4) {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                tokio::time::sleep(Duration::from_millis(u64::from(seed % 8))).await;
                let sdp = format!("offer {i}");
                match exchange(&mut cc, &ct, ROVER, &sdp).await {
                    Ok(answer) if answer == format!("answer to {sdp}") => {}
                    other => failed.push(format!("{sdp}: {other:?}")),
                }
            }
            failed
        }));
    }
    let mut failed = Vec::new();
    for c in callers {
        failed.extend(c.await.unwrap());
    }
    let took = t0.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in answerers {
        t.abort();
    }
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    let delivered = std::mem::take(&mut *delivered.lock().unwrap());
    assert_eq!(delivered.len(), n, "offers delivered: {}", delivered.len());
    let twice: Vec<_> = delivered.iter().filter(|(_, c)| **c != 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    eprintln!(
        "{n} exchanges through two instances in {took:?} ({:.0}/s), each offer delivered once",
        n as f64 / took.as_secs_f64()
    );
    let left = back_to(&redis, 2, Duration::from_secs(25)).await;
    eprintln!("Redis back to the instances' own keys {left:?} after the last exchange");
}

/// §4.6 #10: a hundred machines' answerers on two instances; Redis restarts empty: every one
/// is reachable again within seconds, and a call in flight ends `UNAVAILABLE`, never hangs.
#[tokio::test]
async fn after_a_redis_restart_a_hundred_answerers_are_reachable_again() {
    let mut redis = Redis::start();
    let (_config, a, b) = fleet(&redis);
    let names = machines();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut answerers = Vec::new();
    for (i, host) in names.iter().enumerate() {
        let addr = if i % 2 == 0 {
            a.addr.clone()
        } else {
            b.addr.clone()
        };
        let (host, stop) = (host.clone(), stop.clone());
        answerers.push(tokio::spawn(async move {
            let (mut ac, at) = answerer(&addr).await;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut answering = Answering::open(&mut ac, &at, &[&host], false).await;
                match answering.offer(Duration::from_secs(600)).await {
                    Ok((_, sdp)) if sdp == "stall" => {
                        // Holds the exchange open without answering.
                        let _ = answering.next_event(Duration::from_secs(12)).await;
                    }
                    Ok((uuid, _)) => answering.answer(&uuid, "answer").await,
                    // A stream ended (Redis gone): open the next one at once, as a machine
                    // does after its backoff.
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }));
    }
    let (mut cc, ct) = caller(&a.addr).await;
    let t0 = Instant::now();
    for host in &names {
        while exchange(&mut cc, &ct, host, "offer").await.is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "{host} never answered"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprintln!(
        "100 answerers reachable {:?} after they started",
        t0.elapsed()
    );

    // A call in flight when Redis goes.
    let mut in_flight = call(&mut cc, &ct, &names[0], "stall").await.unwrap();
    // Taken by now; its answerer holds it without answering.
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart();
    let restarted = Instant::now();
    let ended = call_end(&mut in_flight, Duration::from_secs(12))
        .await
        .expect("the call in flight hung");
    let status = ended.expect_err("the call in flight ended without an error");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    eprintln!(
        "the call in flight ended {:?} after the restart: {status:?}",
        restarted.elapsed()
    );
    let mut back = Vec::new();
    for host in &names {
        while exchange(&mut cc, &ct, host, "offer").await.is_err() {
            assert!(
                restarted.elapsed() < Duration::from_secs(30),
                "{host} unreachable after the restart"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        back.push(restarted.elapsed());
    }
    let all = restarted.elapsed();
    let slow: Vec<String> = back
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[1] - w[0] > Duration::from_millis(300))
        .map(|(i, w)| format!("{} +{:?}", names[i + 1], w[1] - w[0]))
        .collect();
    eprintln!("slow to come back: {slow:?}");
    assert!(
        all < Duration::from_secs(10),
        "all 100 reachable only {all:?} after the restart"
    );
    eprintln!(
        "all 100 reachable again {all:?} after Redis restarted (first {:?})",
        back[0]
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in answerers {
        t.abort();
    }
}

/// §4.6 #12: one instance cut off from Redis (a proxy between them, cut). Its waiting answer
/// streams end `UNAVAILABLE` within seconds, so answerers reconnect (to a healthy instance
/// behind a balancer); its callers get `UNAVAILABLE` quickly; the other instance serves on;
/// and once the link is back the cut instance serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_cut_off_from_redis_closes_its_streams_and_refuses_calls() {
    let redis = Redis::start();
    let link = common::Proxy::start(&format!("127.0.0.1:{}", redis.port)).await;
    let via = config(&format!("redis://{}", link.addr));
    let a = signal(&via, "127.0.0.1:0");
    let b = signal(&config(&redis.url()), "127.0.0.1:0");
    let (mut ac, at) = answerer(&a.addr).await;
    let mut on_a = Answering::open(&mut ac, &at, &[ROVER], false).await;
    let (mut bc, bt) = answerer(&b.addr).await;
    let mut on_b = Answering::open(&mut bc, &bt, &["m000.cases.test"], false).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    link.cut();
    let cut = Instant::now();
    let heard = on_a.next_event(Duration::from_secs(10)).await;
    let closed = cut.elapsed();
    assert!(heard.contains("Unavailable"), "a's answer stream: {heard}");
    assert!(
        closed < Duration::from_secs(7),
        "a closed its stream after {closed:?}"
    );
    eprintln!("cut from Redis: a closed its answer stream after {closed:?} ({heard})");
    let (mut ca, cta) = caller(&a.addr).await;
    let t0 = Instant::now();
    let status = exchange(&mut ca, &cta, ROVER, "offer").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    eprintln!("a's caller refused after {:?}: {status:?}", t0.elapsed());
    // The answerer moves to b (what a balancer gives a reconnecting machine), and b serves.
    let mut moved = Answering::open(&mut bc, &bt, &[ROVER], false).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut cb, ctb) = caller(&b.addr).await;
    let calling = tokio::spawn(async move { exchange(&mut cb, &ctb, ROVER, "via b").await });
    let (uuid, _) = moved.offer(Duration::from_secs(5)).await.unwrap();
    moved.answer(&uuid, "from b").await;
    assert_eq!(calling.await.unwrap().unwrap(), "from b");
    assert_eq!(on_b.next_event(Duration::from_millis(100)).await, "nothing");

    // The link back: a serves again.
    link.restore();
    let restored = Instant::now();
    loop {
        let mut again = Answering::open(&mut ac, &at, &["m001.cases.test"], false).await;
        let (mut ca, cta) = (ca.clone(), cta.clone());
        let calling =
            tokio::spawn(async move { exchange(&mut ca, &cta, "m001.cases.test", "x").await });
        if let Ok((uuid, _)) = again.offer(Duration::from_secs(2)).await {
            again.answer(&uuid, "back").await;
            if matches!(calling.await.unwrap().as_deref(), Ok("back")) {
                break;
            }
        }
        assert!(
            restored.elapsed() < Duration::from_secs(15),
            "a never served again: {}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "a served again {:?} after the link came back",
        restored.elapsed()
    );
}

/// §4.6 #8: an instance holding a waiting answerer is killed. A call right after is queued,
/// not refused (the answerer's presence has up to 6 s left), and handed to the answerer when
/// it comes back on another instance; an answerer that does not come back stops counting
/// within the presence's 6 s, and calls get `NOT_FOUND` again.
#[tokio::test]
async fn a_killed_instances_answerer_ages_out_and_a_pending_offer_waits_for_its_return() {
    let redis = Redis::start();
    let (config, a, b) = fleet(&redis);
    let (mut ac, at) = answerer(&b.addr).await;
    let waiting = Answering::open(&mut ac, &at, &[ROVER], false).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(b);
    drop(waiting);
    let (mut cc, ct) = caller(&a.addr).await;
    let calling = {
        let (mut cc, ct) = (cc.clone(), ct.clone());
        tokio::spawn(async move { exchange(&mut cc, &ct, ROVER, "pending").await })
    };
    // The answerer reconnects elsewhere after a second (a machine's first backoff).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (mut ac, at) = answerer(&a.addr).await;
    let mut back = Answering::open(&mut ac, &at, &[ROVER], false).await;
    let (uuid, sdp) = back.offer(Duration::from_secs(8)).await.unwrap();
    assert_eq!(sdp, "pending");
    back.answer(&uuid, "late").await;
    assert_eq!(calling.await.unwrap().unwrap(), "late");

    // On an instance that is killed, and not coming back: the host is offline again within
    // the presence's lifetime.
    let b = signal(&config, "127.0.0.1:0");
    let (mut bc, bt) = answerer(&b.addr).await;
    let waiting = Answering::open(&mut bc, &bt, &["m000.cases.test"], false).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(b);
    drop(waiting);
    let killed = Instant::now();
    let offline = loop {
        let probe = async {
            let mut s = call(&mut cc, &ct, "m000.cases.test", "probe").await?;
            s.message().await.map(|_| ())
        };
        match tokio::time::timeout(Duration::from_millis(300), probe).await {
            Ok(Err(s)) if s.code() == Code::NotFound => break killed.elapsed(),
            _ => {}
        }
        assert!(
            killed.elapsed() < Duration::from_secs(15),
            "the killed instance's answerer still counts"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        offline < Duration::from_secs(8),
        "offline only after {offline:?}"
    );
    eprintln!("a killed instance's answerer stopped counting after {offline:?}");
}

/// §4.6 #13: the instances' clocks 60 s ahead and 60 s behind (libfaketime, monotonic clocks
/// left alone): ages are on Redis' clock, so nothing changes; a real machine answering
/// through the slow instance gets a deadline a minute in its past and still answers.
#[tokio::test]
async fn instances_with_clocks_a_minute_off_behave_the_same() {
    if std::process::Command::new("faketime")
        .arg("--help")
        .output()
        .is_err()
    {
        panic!("faketime is not installed: run scripts/setup-redis (scripts/test does)");
    }
    let redis = Redis::start();
    let config = config(&redis.url());
    let ahead = Server::start_under(
        &[
            "env",
            "FAKETIME_DONT_FAKE_MONOTONIC=1",
            "faketime",
            "-f",
            "+60s",
        ],
        "signal",
        &[
            "--config",
            config.to_str().unwrap(),
            "--bind",
            "127.0.0.1:0",
        ],
    );
    let behind = Server::start_under(
        &[
            "env",
            "FAKETIME_DONT_FAKE_MONOTONIC=1",
            "faketime",
            "-f",
            "-60s",
        ],
        "signal",
        &[
            "--config",
            config.to_str().unwrap(),
            "--bind",
            "127.0.0.1:0",
        ],
    );
    // The skew is real: each instance stamps its log a minute off.
    for (server, sign) in [(&ahead, 1i64), (&behind, -1)] {
        let log = server.log();
        let stamp = log
            .lines()
            .find_map(|l| seconds_of_day(l.split_whitespace().next()?))
            .unwrap_or_else(|| panic!("no timestamp in {log}"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
            % 86_400.0;
        let off = (stamp - now + 129_600.0) % 86_400.0 - 43_200.0;
        assert!(
            (off - 60.0 * sign as f64).abs() < 10.0,
            "the instance's clock is {off:.0} s off, not {}",
            60 * sign
        );
    }
    // Hand-spoken exchanges both ways, a pending offer waiting for its answerer.
    for (caller_at, answerer_at) in [(&ahead, &behind), (&behind, &ahead)] {
        let (mut cc, ct) = caller(&caller_at.addr).await;
        let (mut ac, at) = answerer(&answerer_at.addr).await;
        let mut answering = Answering::open(&mut ac, &at, &[ROVER], false).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let calling = tokio::spawn(async move { exchange(&mut cc, &ct, ROVER, "skewed").await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (uuid, sdp) = answering.offer(Duration::from_secs(5)).await.unwrap();
        assert_eq!(sdp, "skewed");
        answering.answer(&uuid, "fine").await;
        assert_eq!(calling.await.unwrap().unwrap(), "fine");
    }
    // A real machine answering through the instance a minute behind, called through the one
    // a minute ahead, by the Rust client over WebRTC.
    let text = format!(
        r#"{{"components": [{{"name": "left", "api": "rdk:component:motor", "model": "fake"}}],
            {},
            "cloud": {{"signaling_address": "{}", "signaling_insecure": true,
                       "fqdn": "{ROVER}", "api_key": {{"id": "{}", "key": "{}"}}}}}}"#,
        common::api_key_auth(KEY_ID, KEY),
        behind.addr,
        ANSWER_KEY.0,
        ANSWER_KEY.1
    );
    let machine_config = common::unique_temp_file("skewed-machine", &text);
    let machine = Server::start(&["--config", machine_config.to_str().unwrap()]);
    assert!(
        machine.wait_for_log(
            "answering calls through the signaling service",
            Duration::from_secs(20)
        ),
        "{}",
        machine.log()
    );
    let options = tether_client::Options::with_api_key(KEY, KEY_ID)
        .insecure()
        .with_signaling_address(&ahead.addr);
    let robot = tether_client::RobotClient::connect(ROVER, options)
        .await
        .unwrap_or_else(|e| panic!("{e:?}\nmachine: {}", machine.log()));
    assert!(
        format!("{:?}", robot.first_dial_events()).contains("webrtc"),
        "{:?}",
        robot.first_dial_events()
    );
}

/// The UTC seconds of the day in a log line's RFC 3339 stamp (`2026-12-04T02:40:01.123Z`).
fn seconds_of_day(stamp: &str) -> Option<f64> {
    let time = stamp.split_once('T')?.1.strip_suffix('Z')?;
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// §4.6 #5: the caps, across instances. With two calls of a host in progress (its answerer
/// holding one, the other queued) a third is `UNAVAILABLE`, and once the queued caller hangs
/// up the next gets in; a host's fifth answer stream is `UNAVAILABLE`.
#[tokio::test]
async fn callers_and_answerers_past_the_caps_are_unavailable() {
    let redis = Redis::start();
    let config = config_with(&redis.url(), r#""max_callers_per_host": 2,"#);
    let a = signal(&config, "127.0.0.1:0");
    let b = signal(&config, "127.0.0.1:0");
    let host = "m010.cases.test";
    let (mut ac, at) = answerer(&b.addr).await;
    let mut holding = Answering::open(&mut ac, &at, &[host], false).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut cc, ct) = caller(&a.addr).await;
    let _first = call(&mut cc, &ct, host, "first").await.unwrap();
    holding.offer(Duration::from_secs(5)).await.unwrap();
    let queued = call(&mut cc, &ct, host, "queued").await.unwrap();
    let third = call(&mut cc, &ct, host, "third").await.unwrap_err();
    assert_eq!(third.code(), Code::Unavailable, "{third:?}");
    eprintln!("the third caller: {third:?}");
    drop(queued);
    let t0 = Instant::now();
    let _next = loop {
        match call(&mut cc, &ct, host, "next").await {
            Ok(s) => break s,
            Err(s) => assert!(
                s.code() == Code::Unavailable && t0.elapsed() < Duration::from_secs(5),
                "after a caller hung up, {:?} later: {s:?}",
                t0.elapsed()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "a slot free {:?} after a queued caller hung up",
        t0.elapsed()
    );
    // The offer of the caller that hung up is withdrawn: the next answerer gets the next one.
    let (mut nc, nt) = answerer(&a.addr).await;
    let mut next_answerer = Answering::open(&mut nc, &nt, &[host], false).await;
    let (_, sdp) = next_answerer.offer(Duration::from_secs(5)).await.unwrap();
    assert_eq!(sdp, "next");

    let other = "m011.cases.test";
    let mut streams = Vec::new();
    for i in 0..4 {
        let addr = if i % 2 == 0 { &a.addr } else { &b.addr };
        let (mut c, t) = answerer(addr).await;
        streams.push(Answering::open(&mut c, &t, &[other], false).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut fifth = Answering::open(&mut ac, &at, &[other], false).await;
    let heard = fifth.next_event(Duration::from_secs(5)).await;
    assert!(heard.contains("Unavailable"), "the fifth answerer: {heard}");
    for s in &mut streams {
        assert_eq!(s.next_event(Duration::from_millis(50)).await, "nothing");
    }
}

/// §4.6 #6: an offer that waited 8 s for an answerer is not handed to one that comes then
/// (too little of its 10 s would be left); its caller gets `DEADLINE_EXCEEDED` at 10 s.
#[tokio::test]
async fn an_offer_older_than_eight_seconds_is_not_handed_to_a_new_answerer() {
    let redis = Redis::start();
    let (_config, a, b) = fleet(&redis);
    let host = "m020.cases.test";
    let (mut ac, at) = answerer(&b.addr).await;
    let mut holding = Answering::open(&mut ac, &at, &[host], false).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut cc, ct) = caller(&a.addr).await;
    let _first = call(&mut cc, &ct, host, "first").await.unwrap();
    holding.offer(Duration::from_secs(5)).await.unwrap();
    let t0 = Instant::now();
    let mut old = call(&mut cc, &ct, host, "old").await.unwrap();
    tokio::time::sleep(Duration::from_millis(8300)).await;
    let (mut late_c, late_t) = answerer(&a.addr).await;
    let mut late = Answering::open(&mut late_c, &late_t, &[host], false).await;
    let (heard, ended) = tokio::join!(late.next_event(Duration::from_secs(3)), async {
        let ended = tokio::time::timeout(Duration::from_secs(5), old.message()).await;
        (ended, t0.elapsed())
    });
    assert_eq!(heard, "nothing", "the late answerer got {heard}");
    let (ended, at_) = ended;
    let status = match ended {
        Ok(Err(s)) => s,
        other => panic!("the old call: {other:?}"),
    };
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        (Duration::from_millis(9500)..Duration::from_millis(11500)).contains(&at_),
        "ended after {at_:?}"
    );
    eprintln!("an offer 8.3 s old not handed out; its caller ended after {at_:?}: {status:?}");
}

/// §4.6 #7: the protocol's order and its messages, across two instances. A stale uuid on
/// `CallUpdate`; `disable_trickle` reaching the answerer; an answerer's update before its
/// init, a second init, a wrong uuid (each refused, the caller told why); an answerer's error
/// reaching the caller as it was sent; a caller's error reaching the answerer.
#[tokio::test]
async fn stage_violations_stale_uuids_and_errors_get_their_messages() {
    use pb::answer_response::Stage;
    let redis = Redis::start();
    let (_config, a, b) = fleet(&redis);
    let (mut cc, ct) = caller(&a.addr).await;
    let (mut ac, at) = answerer(&b.addr).await;

    let stale = pb::CallUpdateRequest {
        uuid: "6f1c0d1e-0000-4000-8000-000000000000".into(),
        update: Some(pb::call_update_request::Update::Done(true)),
    };
    let e = cc.call_update(to(stale, ROVER, &ct)).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::NotFound,
            r#"no active offer for "6f1c0d1e-0000-4000-8000-000000000000""#
        )
    );

    // Each case: a fresh stream and call; what the answerer sends; what each side hears.
    let update = |uuid: &str| pb::AnswerResponse {
        uuid: uuid.into(),
        stage: Some(Stage::Update(pb::AnswerResponseUpdateStage {
            candidate: Some(pb::IceCandidate {
                candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host".into(),
                ..Default::default()
            }),
        })),
    };
    let init = |uuid: &str| pb::AnswerResponse {
        uuid: uuid.into(),
        stage: Some(Stage::Init(pb::AnswerResponseInitStage {
            sdp: "answer".into(),
        })),
    };
    type Sends = Box<dyn Fn(&str) -> Vec<pb::AnswerResponse>>;
    let cases: Vec<(&str, Sends, Code, String)> = vec![
        (
            "update before init",
            Box::new(move |u| vec![update(u)]),
            Code::InvalidArgument,
            "got update stage before init stage".into(),
        ),
        (
            "init twice",
            Box::new(move |u| vec![init(u), init(u)]),
            Code::InvalidArgument,
            "got init stage more than once".into(),
        ),
        (
            "wrong uuid",
            Box::new(move |_| vec![init("not-the-call")]),
            Code::InvalidArgument,
            "uuid mismatch; have=\"not-the-call\" want=".into(),
        ),
        (
            "an answerer's error",
            Box::new(|u| {
                vec![pb::AnswerResponse {
                    uuid: u.into(),
                    stage: Some(Stage::Error(pb::AnswerResponseErrorStage {
                        status: Some(tether_proto::google::rpc::Status {
                            code: Code::ResourceExhausted as i32,
                            message: "no more peers".into(),
                            details: Vec::new(),
                        }),
                    })),
                }]
            }),
            Code::ResourceExhausted,
            "no more peers".into(),
        ),
    ];
    for (what, script, code, message) in cases {
        let mut answering = Answering::open(&mut ac, &at, &[ROVER], false).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = to(
            pb::CallRequest {
                sdp: "offer".into(),
                disable_trickle: true,
            },
            ROVER,
            &ct,
        );
        let mut calling = cc.call(r).await.unwrap().into_inner();
        let m = answering
            .incoming
            .message()
            .await
            .unwrap()
            .expect("an offer");
        let Some(pb::answer_request::Stage::Init(i)) = m.stage else {
            panic!("{what}: not an init: {m:?}");
        };
        assert!(
            i.optional_config.is_some_and(|c| c.disable_trickle),
            "{what}: disable_trickle did not reach the answerer"
        );
        for message in script(&m.uuid) {
            answering.out.send(message).await.unwrap();
        }
        let caller_heard = call_end(&mut calling, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("{what}: the caller heard nothing"));
        let status = caller_heard.expect_err(what);
        assert_eq!(status.code(), code, "{what}: the caller heard {status:?}");
        assert!(
            status.message().starts_with(&message),
            "{what}: the caller heard {status:?}"
        );
        if code == Code::InvalidArgument {
            let heard = answering.next_event(Duration::from_secs(5)).await;
            assert!(
                heard.contains("InvalidArgument") && heard.contains(&message),
                "{what}: the answerer heard {heard}"
            );
        }
        eprintln!(
            "{what}: the caller heard {:?} {:?}",
            status.code(),
            status.message()
        );
    }

    // The caller's error reaches the answerer.
    let mut answering = Answering::open(&mut ac, &at, &[ROVER], false).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _calling = call(&mut cc, &ct, ROVER, "offer").await.unwrap();
    let (uuid, _) = answering.offer(Duration::from_secs(5)).await.unwrap();
    let error = pb::CallUpdateRequest {
        uuid,
        update: Some(pb::call_update_request::Update::Error(
            tether_proto::google::rpc::Status {
                code: Code::Cancelled as i32,
                message: "the user gave up".into(),
                details: Vec::new(),
            },
        )),
    };
    cc.call_update(to(error, ROVER, &ct)).await.unwrap();
    let heard = answering.next_event(Duration::from_secs(5)).await;
    assert_eq!(heard, "error the user gave up");
}
