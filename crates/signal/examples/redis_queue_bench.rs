//! How many signaling exchanges the Redis call queue carries, against the in-process queue:
//! callers on instance A, answerers on instance B (two queues, two sets of connections, one
//! Redis), each exchange an offer, an answer, `CANDIDATES` candidates each way and `done`
//! both ways.
//!
//!   redis_queue_bench REDIS_URL [EXCHANGES] [CONCURRENCY]
//!
//! Prints exchanges per second and the time of one exchange (p50, p99) for both queues.
//! Bounded: a fixed number of exchanges. `scripts/bench-fleet` starts Redis and runs it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark: a failed step ends it"
)]

use std::sync::Arc;
use std::time::Duration;

use tether_rtc::Candidate;
use tether_signal::queue::{CallQueue, FromAnswerer, FromCaller, MemoryQueue, Offer};
use tether_signal::redis_queue::RedisQueue;
use tokio::time::Instant;

const CANDIDATES: usize = 10;
const HOST: &str = "bench-rover";

fn candidate(n: usize) -> Candidate {
    Candidate {
        candidate: format!(
            "candidate:{n} 1 udp 2130706431 10.0.0.1 {} typ host",
            5000 + n
        ),
        sdp_mid: Some("0".into()),
        sdp_mline_index: Some(0),
        username_fragment: None,
    }
}

/// One answerer: takes offers one after another, answers each with an SDP, the candidates
/// and done, and reads the caller's.
async fn answer_forever(queue: Arc<dyn CallQueue>) {
    let hosts = vec![HOST.to_string()];
    loop {
        let Ok(mut side) = queue.recv_offer(&hosts).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        tokio::spawn(async move {
            let _ = side
                .to_caller
                .send(FromAnswerer::Answer("YW5zd2Vy".into()))
                .await;
            for n in 0..CANDIDATES {
                let _ = side
                    .to_caller
                    .send(FromAnswerer::Candidate(candidate(n)))
                    .await;
            }
            let _ = side.to_caller.send(FromAnswerer::Done).await;
            while let Some(m) = side.from_caller.recv().await {
                if !matches!(m, FromCaller::Candidate(_)) {
                    break;
                }
            }
        });
    }
}

/// One exchange from the caller's side; how long it took.
async fn exchange(queue: &dyn CallQueue) -> Duration {
    let t0 = Instant::now();
    let offer = Offer {
        uuid: uuid::Uuid::new_v4().to_string(),
        sdp: "b2ZmZXI=".into(),
        disable_trickle: false,
        deadline: Instant::now() + tether_rpc::OFFER_DEADLINE,
        caller_entity: Arc::from("bench"),
    };
    let mut side = loop {
        match queue.send_offer(HOST, offer.clone()).await {
            Ok(side) => break side,
            // Every answerer busy for a moment: try again, as a client would.
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    };
    for n in 0..CANDIDATES {
        queue
            .caller_update(
                &side.uuid,
                "bench",
                FromCaller::Candidate(candidate(100 + n)),
            )
            .await
            .unwrap();
    }
    queue
        .caller_update(&side.uuid, "bench", FromCaller::Done)
        .await
        .unwrap();
    while let Some(m) = side.from_answerer.recv().await {
        if matches!(m, FromAnswerer::Done) {
            break;
        }
        if let FromAnswerer::Error(e) = m {
            panic!("exchange failed: {e:?}");
        }
    }
    t0.elapsed()
}

async fn run(name: &str, caller: Arc<dyn CallQueue>, exchanges: usize, concurrency: usize) {
    let t0 = Instant::now();
    let per = exchanges / concurrency;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let caller = caller.clone();
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::with_capacity(per);
            for _ in 0..per {
                times.push(exchange(caller.as_ref()).await);
            }
            times
        }));
    }
    let mut times = Vec::new();
    for t in tasks {
        times.extend(t.await.unwrap());
    }
    let took = t0.elapsed();
    times.sort();
    let p = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    println!(
        "{name}: {} exchanges ({CANDIDATES} candidates each way) in {took:.2?}: {:.0} exchanges/s; one exchange p50 {:.2?}, p99 {:.2?}",
        times.len(),
        times.len() as f64 / took.as_secs_f64(),
        p(0.5),
        p(0.99)
    );
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .expect("usage: redis_queue_bench REDIS_URL [EXCHANGES] [CONCURRENCY]");
    let exchanges: usize = args.next().map_or(2000, |a| a.parse().unwrap());
    let concurrency: usize = args.next().map_or(4, |a| a.parse().unwrap());

    // The in-process queue: what one machine's embedded signaling uses.
    let memory: Arc<dyn CallQueue> = Arc::new(MemoryQueue::default());
    let answerers: Vec<_> = (0..concurrency)
        .map(|_| tokio::spawn(answer_forever(memory.clone())))
        .collect();
    run("in-process queue", memory, exchanges, concurrency).await;
    for a in answerers {
        a.abort();
    }

    // Redis: callers on instance A, answerers on instance B. Two answerers, as a machine keeps
    // two Answer streams: each opens its next one while its last exchange still counts toward
    // the host's cap of four.
    let a: Arc<dyn CallQueue> = RedisQueue::connect(&url, 1000).await.unwrap();
    let b: Arc<dyn CallQueue> = RedisQueue::connect(&url, 1000).await.unwrap();
    let answerers: Vec<_> = (0..2)
        .map(|_| tokio::spawn(answer_forever(b.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    run("Redis queue, two instances", a, exchanges, concurrency).await;
    for a in answerers {
        a.abort();
    }
}
