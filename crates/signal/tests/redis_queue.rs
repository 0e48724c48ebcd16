//! The Redis call queue against a real `redis-server` (Debian's, installed by
//! `scripts/setup-redis`) on a loopback port of its own, with two queue instances standing for
//! two signaling instances (their own ids, their own connections).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is the test failing"
)]

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use tether_rtc::Candidate;
use tether_signal::queue::{AnswererSide, CallQueue, FromAnswerer, FromCaller, Offer, OfferSource};
use tether_signal::redis_queue::{HOST_OFFLINE, RedisQueue, TOO_MANY};
use tokio::time::Instant;
use tonic::Code;

#[path = "support/redis_server.rs"]
mod redis_server;
use redis_server::Redis;

/// An answerer of `hosts` waiting on `queue`, on a task of its own.
fn waiting(
    queue: &Arc<RedisQueue>,
    hosts: &[String],
) -> tokio::task::JoinHandle<Result<AnswererSide, tonic::Status>> {
    let (queue, hosts) = (queue.clone(), hosts.to_vec());
    tokio::spawn(async move { queue.recv_offer(&hosts).await })
}

fn offer(entity: &str) -> Offer {
    Offer {
        uuid: uuid::Uuid::new_v4().to_string(),
        sdp: "c2RwLW9mZmVy".into(),
        disable_trickle: true,
        deadline: Instant::now() + tether_rpc::OFFER_DEADLINE,
        caller_entity: Arc::from(entity),
    }
}

fn candidate(n: usize) -> Candidate {
    Candidate {
        candidate: format!(
            "candidate:{n} 1 udp 2130706431 127.0.0.1 {} typ host",
            5000 + n
        ),
        sdp_mid: Some("0".into()),
        sdp_mline_index: Some(0),
        username_fragment: None,
    }
}

#[tokio::test]
async fn without_an_answerer_anywhere_a_caller_gets_not_found_at_once() {
    let redis = Redis::start();
    let a = RedisQueue::connect(&redis.url(), 50).await.unwrap();
    let t0 = Instant::now();
    let err = a.send_offer("rover", offer("alice")).await.err().unwrap();
    assert_eq!((err.code(), err.message()), (Code::NotFound, HOST_OFFLINE));
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn an_answerer_on_one_instance_answers_a_caller_on_another_in_order_both_ways() {
    let redis = Redis::start();
    let a = RedisQueue::connect(&redis.url(), 50).await.unwrap();
    let b = RedisQueue::connect(&redis.url(), 50).await.unwrap();
    assert_ne!(a.instance(), b.instance());
    let hosts = vec!["rover".to_string(), "rover.local".to_string()];
    let answering = waiting(&b, &hosts);
    // The answerer is present within a refresh.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = offer("alice");
    let mut caller = a.send_offer("rover.local", sent.clone()).await.unwrap();
    let mut answerer = tokio::time::timeout(Duration::from_secs(2), answering)
        .await
        .expect("claimed within 2 s")
        .unwrap()
        .unwrap();
    assert_eq!(answerer.offer.uuid, sent.uuid);
    assert_eq!(answerer.offer.sdp, sent.sdp);
    assert!(
        answerer.offer.disable_trickle,
        "disable_trickle carried through"
    );
    assert_eq!(&*answerer.offer.caller_entity, "alice");
    let left = answerer
        .offer
        .deadline
        .saturating_duration_since(Instant::now());
    assert!(left > Duration::from_secs(8) && left <= tether_rpc::OFFER_DEADLINE);

    // Answer and 20 candidates to the caller, 20 candidates and done to the answerer.
    answerer
        .to_caller
        .send(FromAnswerer::Answer("c2RwLWFuc3dlcg==".into()))
        .await
        .unwrap();
    for n in 0..20 {
        answerer
            .to_caller
            .send(FromAnswerer::Candidate(candidate(n)))
            .await
            .unwrap();
        a.caller_update(
            &caller.uuid,
            "alice",
            FromCaller::Candidate(candidate(100 + n)),
        )
        .await
        .unwrap();
    }
    answerer.to_caller.send(FromAnswerer::Done).await.unwrap();
    a.caller_update(&caller.uuid, "alice", FromCaller::Done)
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Ok(Some(m)) =
        tokio::time::timeout(Duration::from_secs(2), caller.from_answerer.recv()).await
    {
        let end = matches!(m, FromAnswerer::Done);
        got.push(m);
        if end {
            break;
        }
    }
    assert!(matches!(&got[0], FromAnswerer::Answer(s) if s == "c2RwLWFuc3dlcg=="));
    for n in 0..20 {
        assert!(
            matches!(&got[1 + n], FromAnswerer::Candidate(c) if *c == candidate(n)),
            "{n}: {:?}",
            got[1 + n]
        );
    }
    assert!(matches!(got[21], FromAnswerer::Done) && got.len() == 22);
    for n in 0..20 {
        let m = answerer.from_caller.recv().await.unwrap();
        assert!(
            matches!(&m, FromCaller::Candidate(c) if *c == candidate(100 + n)),
            "{m:?}"
        );
    }
    assert!(matches!(
        answerer.from_caller.recv().await,
        Some(FromCaller::Done)
    ));
    // Another caller entity cannot ride on the call.
    let err = a
        .caller_update(&caller.uuid, "mallory", FromCaller::Done)
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::NotFound);

    // Once both ends are gone, only the instances' liveness, the call's own keys (with their
    // TTLs) and the host's 3 s "answerer just here" mark remain; no presence, no pending
    // offer, no caller count.
    drop(answerer);
    drop(caller);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let keys = redis.keys();
    assert!(
        keys.iter().all(|k| k.starts_with("tq:inst:")
            || k.contains(":call:")
            || k.starts_with("tq:uuid:")
            || k.ends_with("}:seen")),
        "{keys:?}"
    );
    tokio::time::sleep(Duration::from_millis(2600)).await;
    assert!(!redis.keys().iter().any(|k| k.ends_with(":seen")));
}

#[tokio::test]
async fn two_answerers_on_two_instances_never_take_the_same_offer() {
    let redis = Redis::start();
    let a = RedisQueue::connect(&redis.url(), 50).await.unwrap();
    let b = RedisQueue::connect(&redis.url(), 50).await.unwrap();
    let hosts = vec!["rover".to_string()];
    // Each instance runs one answerer that takes offers one after another.
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let mut answerers = Vec::new();
    for q in [a.clone(), b.clone()] {
        let (tx, hosts) = (tx.clone(), hosts.clone());
        answerers.push(tokio::spawn(async move {
            loop {
                let side = q.recv_offer(&hosts).await.unwrap();
                let _ = tx.send((q.instance().to_string(), side.offer.uuid)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut sent = Vec::new();
    let mut callers = Vec::new();
    for _ in 0..20 {
        let o = offer("alice");
        sent.push(o.uuid.clone());
        callers.push(a.send_offer("rover", o).await.unwrap());
    }
    let mut taken = Vec::new();
    let mut by = std::collections::HashMap::<String, usize>::new();
    while taken.len() < sent.len() {
        let (instance, uuid) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("every offer taken within 5 s")
            .unwrap();
        *by.entry(instance).or_default() += 1;
        taken.push(uuid);
    }
    taken.sort();
    sent.sort();
    assert_eq!(taken, sent, "each offer exactly once");
    // No 21st delivery comes.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), rx.recv())
            .await
            .is_err()
    );
    assert_eq!(by.len(), 2, "both instances answered: {by:?}");
    for a in answerers {
        a.abort();
    }
}

#[tokio::test]
async fn callers_and_answerers_past_the_caps_are_unavailable() {
    let redis = Redis::start();
    let a = RedisQueue::connect(&redis.url(), 2).await.unwrap();
    let hosts = vec!["rover".to_string()];
    let mut waiting = Vec::new();
    for _ in 0..4 {
        let (a, hosts) = (a.clone(), hosts.clone());
        waiting.push(tokio::spawn(async move { a.recv_offer(&hosts).await }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A fifth answerer of the host is refused.
    let err = a.recv_offer(&hosts).await.err().unwrap();
    assert_eq!((err.code(), err.message()), (Code::Unavailable, TOO_MANY));
    // Two calls in progress: the third caller is refused.
    let _one = a.send_offer("rover", offer("alice")).await.unwrap();
    let _two = a.send_offer("rover", offer("alice")).await.unwrap();
    let err = a.send_offer("rover", offer("alice")).await.err().unwrap();
    assert_eq!((err.code(), err.message()), (Code::Unavailable, TOO_MANY));
    for w in waiting {
        w.abort();
    }
}

#[tokio::test]
async fn an_offer_older_than_eight_seconds_is_not_handed_to_a_late_answerer() {
    let redis = Redis::start();
    let a = RedisQueue::connect(&redis.url(), 50).await.unwrap();
    let hosts = vec!["rover".to_string()];
    // A presence that never claims: an answerer whose instance just died (its entry has not
    // aged out yet).
    redis.cli(&[
        "ZADD",
        "tq:{rover}:ans",
        "99999999999999",
        "dead-instance:1",
    ]);
    let _stale = a.send_offer("rover", offer("alice")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(8200)).await;
    redis.cli(&["ZREM", "tq:{rover}:ans", "dead-instance:1"]);
    // A new answerer comes: the stale offer is not handed to it, a fresh one is.
    let answering = waiting(&a, &hosts);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!answering.is_finished(), "an 8 s old offer was handed out");
    let fresh = offer("alice");
    let _caller = a.send_offer("rover", fresh.clone()).await.unwrap();
    let side = tokio::time::timeout(Duration::from_secs(2), answering)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(side.offer.uuid, fresh.uuid);
}

#[tokio::test]
async fn with_redis_gone_calls_fail_unavailable_quickly() {
    let mut redis = Redis::start();
    let a = RedisQueue::connect(&redis.url(), 50).await.unwrap();
    let _ = redis.child.kill();
    let _ = redis.child.wait();
    let t0 = Instant::now();
    let err = a.send_offer("rover", offer("alice")).await.err().unwrap();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let err = a.recv_offer(&["rover".into()]).await.err().unwrap();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    println!("both refused {:?} after Redis went", t0.elapsed());
}

#[tokio::test]
async fn offers_and_exchange_messages_arrive_at_the_doorbell_not_the_rescan() {
    let redis = Redis::start();
    let a = RedisQueue::connect(&redis.url(), 50).await.unwrap();
    let b = RedisQueue::connect(&redis.url(), 50).await.unwrap();
    let hosts = vec!["rover".to_string()];
    // A doorbell rung while nobody on the instance listens is dropped, and must not end its
    // doorbells for good (it did: the subscriber's task stopped at the first unheard one).
    redis.cli(&["PUBLISH", &format!("tq:bell:{}", b.instance()), "h:nobody"]);
    redis.cli(&[
        "PUBLISH",
        &format!("tq:bell:{}", a.instance()),
        "c:nobody:a2c",
    ]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut claims = Vec::new();
    let mut answers = Vec::new();
    for _ in 0..5 {
        let answering = waiting(&b, &hosts);
        // Well into its wait: a rescan is up to 1 s away.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t0 = Instant::now();
        let mut caller = a.send_offer("rover", offer("alice")).await.unwrap();
        let side = answering.await.unwrap().unwrap();
        claims.push(t0.elapsed());
        let t1 = Instant::now();
        side.to_caller
            .send(FromAnswerer::Answer("YQ==".into()))
            .await
            .unwrap();
        caller.from_answerer.recv().await.unwrap();
        answers.push(t1.elapsed());
    }
    println!("claimed after {claims:?}; answer relayed after {answers:?}");
    // Rescans alone (1 s, 250 ms) would make most of these far slower.
    assert!(
        claims.iter().all(|d| *d < Duration::from_millis(300)),
        "{claims:?}"
    );
    assert!(
        answers.iter().all(|d| *d < Duration::from_millis(150)),
        "{answers:?}"
    );
}

#[tokio::test]
async fn when_either_sides_instance_dies_mid_exchange_the_other_side_hears_at_once() {
    let redis = Redis::start();
    let a = RedisQueue::connect(&redis.url(), 50).await.unwrap();
    let b = RedisQueue::connect(&redis.url(), 50).await.unwrap();
    let hosts = vec!["rover".to_string()];
    for dead in ["answerer", "caller"] {
        let answering = waiting(&b, &hosts);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut caller = a.send_offer("rover", offer("alice")).await.unwrap();
        let mut side = answering.await.unwrap().unwrap();
        // The instance stops keeping its liveness key (as a crashed one does, once the key's
        // 6 s run out): here it is deleted, so the test need not wait for the expiry.
        let gone = if dead == "answerer" { &b } else { &a };
        let t0 = Instant::now();
        redis.cli(&["DEL", &format!("tq:inst:{}", gone.instance())]);
        let status = if dead == "answerer" {
            match tokio::time::timeout(Duration::from_secs(3), caller.from_answerer.recv()).await {
                Ok(Some(FromAnswerer::Error(s))) => s,
                other => panic!("the caller heard {other:?}"),
            }
        } else {
            match tokio::time::timeout(Duration::from_secs(3), side.from_caller.recv()).await {
                Ok(Some(FromCaller::Error(s))) => s,
                other => panic!("the answerer heard {other:?}"),
            }
        };
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.message().contains(dead), "{status:?}");
        println!(
            "{dead}'s instance gone: the other side heard after {:?}",
            t0.elapsed()
        );
        // Both instances live on for the next round (their keys come back with the refresh).
        tokio::time::sleep(Duration::from_millis(2100)).await;
    }
}

#[tokio::test]
async fn after_a_redis_restart_answerers_come_back_and_calls_in_flight_end_unavailable() {
    let mut redis = Redis::start();
    let a = RedisQueue::connect(&redis.url(), 50).await.unwrap();
    let b = RedisQueue::connect(&redis.url(), 50).await.unwrap();
    let hosts = vec!["rover".to_string()];
    // One call in flight, one answerer waiting.
    let first = waiting(&b, &hosts);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut in_flight = a.send_offer("rover", offer("alice")).await.unwrap();
    let _side = first.await.unwrap().unwrap();
    let waiting = waiting(&b, &hosts);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Redis restarts empty, on the same port.
    redis.restart();
    let restarted = Instant::now();
    // The call in flight ends UNAVAILABLE, not at its deadline.
    let status =
        match tokio::time::timeout(Duration::from_secs(5), in_flight.from_answerer.recv()).await {
            Ok(Some(FromAnswerer::Error(s))) => s,
            other => panic!("the caller heard {other:?}"),
        };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // The waiting answerer re-registers by itself: a new call finds it within 5 s.
    let fresh = offer("alice");
    let t0 = Instant::now();
    let _caller = loop {
        match a.send_offer("rover", fresh.clone()).await {
            Ok(c) => break c,
            Err(_) if t0.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no answerer 5 s after the restart: {e:?}"),
        }
    };
    let side = tokio::time::timeout(Duration::from_secs(3), waiting)
        .await
        .expect("the waiting answerer took the new call")
        .unwrap()
        .unwrap();
    assert_eq!(side.offer.uuid, fresh.uuid);
    println!(
        "after the restart: the call in flight failed, and a new one was answered {:?} after it",
        restarted.elapsed()
    );
}

#[tokio::test]
async fn with_doorbells_lost_offers_still_arrive_by_the_rescan() {
    let redis = Redis::start();
    let a = RedisQueue::connect(&redis.url(), 50).await.unwrap();
    let b = RedisQueue::connect(&redis.url(), 50).await.unwrap();
    let hosts = vec!["rover".to_string()];
    let answering = waiting(&b, &hosts);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Subscribing forbidden and every subscriber cut: no doorbell reaches anyone (publishing
    // still works, to nobody).
    redis.cli(&["ACL", "SETUSER", "default", "-subscribe"]);
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let subscribers = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "PUBSUB", "NUMSUB"])
        .arg(format!("tq:bell:{}", b.instance()))
        .output()
        .unwrap();
    let subscribers = String::from_utf8(subscribers.stdout).unwrap();
    assert_eq!(subscribers.lines().nth(1), Some("0"), "{subscribers}");
    let t0 = Instant::now();
    let sent = offer("alice");
    let _caller = a.send_offer("rover", sent.clone()).await.unwrap();
    let side = tokio::time::timeout(Duration::from_millis(1500), answering)
        .await
        .expect("delivered by the rescan within 1.5 s")
        .unwrap()
        .unwrap();
    assert_eq!(side.offer.uuid, sent.uuid);
    println!("claimed {:?} after the offer, doorbells cut", t0.elapsed());
}
