//! The call queue on Redis, shared by many signaling instances (`../shared/FLEET.md` §4).
//!
//! Redis holds the only truth about who answers what; every instance holds only the streams
//! of its own callers and answerers. All ages are on Redis' clock (`TIME` inside the scripts),
//! never an instance's. Every key of a host carries the hash tag `{host}`.
//!
//! | Key | Type | Holds |
//! |---|---|---|
//! | `tq:inst:<iid>` | string, `PX 3000` refreshed every 1 s | an instance is alive |
//! | `tq:{h}:ans` | zset `<iid>:<aid>` → expiry ms | answerers waiting for an offer of `h` |
//! | `tq:{h}:busy` | zset, as above | answerers in an exchange (both count toward the cap of 4) |
//! | `tq:{h}:callers` | zset uuid → deadline ms | calls in progress (the caller cap) |
//! | `tq:{h}:pending` | list of uuids | offers not yet claimed, oldest first |
//! | `tq:{h}:call:<uuid>` | hash | the offer, its state, the instances of both sides |
//! | `tq:{h}:call:<uuid>:c2a`, `:a2c` | streams | the exchange each way, in order |
//! | `tq:uuid:<uuid>` | string | a call's hash key (`CallUpdate` names only the uuid) |
//! | `tq:{h}:seen` | string, `PX 3000` | an answerer just finished an exchange: not offline |
//!
//! - **An offer** (one script): prune what expired; no live answerer → `NOT_FOUND` at once;
//!   callers at the cap → `UNAVAILABLE`; else the call is stored and queued.
//! - **A claim** (one script, so exactly once): pop pending uuids until one is still pending
//!   and younger than [`CLAIM_MAX_AGE`]; mark it answered by this answerer, move the answerer
//!   from waiting to busy.
//! - **The exchange**: each side appends to its outbound stream; the other reads it from its
//!   last id. Stream ids are monotonic, so candidates arrive in order and never twice.
//! - Presence ages out: an answerer's membership is refreshed every 2 s to now + 6 s, so a dead
//!   instance's answerers stop counting within 6 s; every key has a TTL, so nothing is left
//!   behind when a writer dies (a set of answerers lives as long as its last member's
//!   presence, not a fixed minute: a killed instance's answerers leave no key behind).
//!
//! Pub/sub is only a doorbell: every instance subscribes to `tq:bell:<iid>`, and whoever writes
//! something another instance must read rings it (an offer: every instance with a waiting
//! answerer of the host; an exchange message: the other side's instance). A doorbell carries
//! no state, so a lost one (a subscriber reconnecting, Redis restarting) costs only time:
//! waiting answerers re-scan every [`CLAIM_RESCAN`], exchange readers every [`STREAM_RESCAN`].
//! Redis unreachable → `UNAVAILABLE` within the response timeout, never a hang.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tether_rtc::Candidate;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tonic::{Code, Status};

use crate::queue::{
    AnswererSide, CallQueue, CallerSide, FromAnswerer, FromCaller, Offer, OfferSource, no_such_call,
};

/// How often a waiting answerer looks for an offer without a doorbell.
pub const CLAIM_RESCAN: Duration = Duration::from_secs(1);
/// How often an exchange's reader reads its stream without a doorbell.
pub const STREAM_RESCAN: Duration = Duration::from_millis(250);
/// An answerer never takes an offer older than this: 2 s before its deadline (goutils'
/// rule), so an exchange always has some time left.
pub const CLAIM_MAX_AGE: Duration = Duration::from_secs(tether_rpc::OFFER_DEADLINE.as_secs() - 2);
/// How long a host whose answerer just finished an exchange counts as online without one
/// waiting: the answerer opens its next `Answer` stream within a round trip or two, and an
/// offer in between is queued for it instead of refused as offline.
const ANSWERER_LINGER_MS: u64 = 3000;

/// Most answerers (waiting or busy) per host, as goutils' queue.
pub const MAX_ANSWERERS_PER_HOST: usize = 4;
/// How long a presence lasts without a refresh.
const PRESENCE_TTL_MS: u64 = 6000;
/// How often presences are refreshed.
const PRESENCE_REFRESH: Duration = Duration::from_secs(2);
/// How long an instance counts as alive without a refresh: the other side of an exchange
/// whose instance died (a crash, a kill) hears it within this and a stream rescan (FLEET.md
/// §4.6 #9 asks under 3 s); two refreshes in a row may fail before it counts as dead.
const INSTANCE_TTL_MS: u64 = 3000;
/// How often an instance refreshes its liveness key.
const INSTANCE_REFRESH: Duration = Duration::from_secs(1);
/// How long a call's keys live: its offer deadline and 5 s of slack.
const CALL_TTL_MS: u64 = (tether_rpc::OFFER_DEADLINE.as_secs() + 5) * 1000;
/// Most entries an exchange stream keeps (approximately: `MAXLEN ~`).
const STREAM_MAXLEN: usize = 256;
/// Messages buffered each way in one exchange, locally.
const EXCHANGE_BUFFER: usize = 64;

/// The message a caller gets when no answerer of its host is connected anywhere.
pub use crate::queue::HOST_OFFLINE;
/// The message a caller (or answerer) gets past the per-host caps.
pub const TOO_MANY: &str = "too many connection attempts; please wait a bit and try again";

/// The first lines of every script that ages things: `now`, Redis' clock in milliseconds.
/// Every age and expiry is on it, never an instance's clock.
macro_rules! lua_now {
    () => {
        "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    };
}

const OFFER: &str = concat!(
    lua_now!(),
    r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
if redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2]) == 0
  and redis.call('EXISTS', KEYS[7]) == 0 then return {'offline'} end
if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[5]) then return {'busy'} end
redis.call('HSET', KEYS[5], 'sdp', ARGV[2], 'trickle', ARGV[3], 'entity', ARGV[4],
  'caller', ARGV[7], 'started', now, 'state', 'pending')
redis.call('PEXPIRE', KEYS[5], ARGV[8])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[6]), ARGV[1])
redis.call('PEXPIRE', KEYS[3], ARGV[8])
redis.call('RPUSH', KEYS[4], ARGV[1])
redis.call('PEXPIRE', KEYS[4], ARGV[8])
redis.call('SET', KEYS[6], KEYS[5], 'PX', ARGV[8])
local bells = {'ok'}
local seen = {}
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local iid = string.match(m, '^([^:]+):')
  if iid and not seen[iid] then seen[iid] = true; table.insert(bells, iid) end
end
return bells
"#
);

const PRESENT: &str = concat!(
    lua_now!(),
    r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local known = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not known and redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
  return 'busy'
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 'ok'
"#
);

const CLAIM: &str = concat!(
    lua_now!(),
    r#"
while true do
  local uuid = redis.call('LPOP', KEYS[3])
  if not uuid then return false end
  local call = ARGV[2] .. uuid
  local c = redis.call('HMGET', call, 'state', 'started', 'sdp', 'trickle', 'entity', 'caller')
  if c[1] == 'pending' and now - tonumber(c[2]) <= tonumber(ARGV[3]) then
    redis.call('HSET', call, 'state', 'answered', 'answerer', ARGV[1])
    redis.call('ZREM', KEYS[1], ARGV[1])
    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[1])
    redis.call('PEXPIRE', KEYS[2], ARGV[4])
    return {uuid, tostring(now - tonumber(c[2])), c[3], c[4], c[5], c[6]}
  end
end
"#
);

/// A caller's update, in one round trip: find the call's host, check the caller is the one
/// who made it, append to the caller-to-answerer stream, and ring the answerer's instance if
/// one has claimed the call. (The answerer is read after the append, in the same script, so a
/// claim can never fall between the two and miss both the entry and the doorbell.)
const UPDATE: &str = r#"
local call = redis.call('GET', KEYS[1])
if not call then return 'gone' end
if redis.call('HGET', call, 'entity') ~= ARGV[2] then return 'gone' end
local stream = call .. ':c2a'
local entry = {'k', ARGV[6]}
for i = 7, #ARGV do table.insert(entry, ARGV[i]) end
redis.call('XADD', stream, 'MAXLEN', '~', ARGV[4], '*', unpack(entry))
redis.call('PEXPIRE', stream, ARGV[3])
local answerer = redis.call('HGET', call, 'answerer')
if answerer then
  local iid = string.match(answerer, '^([^:]+):')
  if iid then redis.call('PUBLISH', ARGV[5] .. iid, 'c:' .. ARGV[1] .. ':c2a') end
end
return 'ok'
"#;

const BUSY: &str = concat!(
    lua_now!(),
    r#"
if redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[2]), ARGV[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 'ok'
"#
);

/// An answerer of several hosts that claimed an offer for one of them is busy for the others
/// too: it moves from their waiting set to their busy set, so they stay online (an offer to
/// one waits for its next stream, instead of `NOT_FOUND`) and it still counts toward their cap.
const HOLD: &str = concat!(
    lua_now!(),
    r#"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 'ok'
"#
);

/// A caller that hung up before its offer was claimed: no answerer takes it.
const CANCEL: &str = r#"
if redis.call('HGET', KEYS[1], 'state') == 'pending' then
  redis.call('HSET', KEYS[1], 'state', 'cancelled')
  return 1
end
return 0
"#;

/// What a claim hands the answerer's side.
struct Claimed<'a> {
    uuid: &'a str,
    sdp: &'a str,
    disable_trickle: bool,
    entity: &'a str,
    /// The caller's instance, whose doorbell the answerer's messages ring.
    caller: &'a str,
    deadline: Instant,
}

/// Keys of host `h`.
struct HostKeys {
    ans: String,
    busy: String,
    callers: String,
    pending: String,
    /// Set for [`ANSWERER_LINGER_MS`] when an answerer finishes an exchange: between that and
    /// its next `Answer` stream the host is not offline.
    seen: String,
    call_prefix: String,
}

impl HostKeys {
    fn new(host: &str) -> Self {
        Self {
            ans: format!("tq:{{{host}}}:ans"),
            busy: format!("tq:{{{host}}}:busy"),
            callers: format!("tq:{{{host}}}:callers"),
            pending: format!("tq:{{{host}}}:pending"),
            seen: format!("tq:{{{host}}}:seen"),
            call_prefix: format!("tq:{{{host}}}:call:"),
        }
    }

    fn call(&self, uuid: &str) -> String {
        format!("{}{uuid}", self.call_prefix)
    }
}

fn uuid_key(uuid: &str) -> String {
    format!("tq:uuid:{uuid}")
}

/// Redis failing, as the callers and answerers see it.
fn unavailable(e: redis::RedisError) -> Status {
    Status::unavailable(format!("signaling state store unreachable: {e}"))
}

/// The queue on Redis.
pub struct RedisQueue {
    con: ConnectionManager,
    /// This instance.
    iid: String,
    max_callers: usize,
    offer: redis::Script,
    present: redis::Script,
    claim: redis::Script,
    busy: redis::Script,
    hold: redis::Script,
    cancel: redis::Script,
    update: redis::Script,
    /// Doorbells rung for this instance: what to read again (`h:<host>`, `c:<uuid>:<dir>`).
    bells: broadcast::Sender<String>,
}

/// The liveness key of instance `iid`.
fn instance_key(iid: &str) -> String {
    format!("tq:inst:{iid}")
}

/// The doorbell channel of instance `iid`.
fn bell_channel(iid: &str) -> String {
    format!("tq:bell:{iid}")
}

/// Waits until a doorbell that `wanted` says concerns us rings, or `rescan` passes (a lost
/// doorbell costs no more than that). Subscribe `bells` before the read it follows.
async fn doorbell(
    bells: &mut broadcast::Receiver<String>,
    wanted: impl Fn(&str) -> bool,
    rescan: Duration,
) {
    let timeout = tokio::time::sleep(rescan);
    tokio::pin!(timeout);
    loop {
        tokio::select! {
            _ = &mut timeout => return,
            bell = bells.recv() => match bell {
                Ok(b) if wanted(&b) => return,
                Ok(_) => {}
                // Missed some: one of them may have been ours.
                Err(_) => return,
            },
        }
    }
}

impl RedisQueue {
    /// Connects to Redis at `url` (`redis://host:port`) as a new instance; callers per host
    /// are capped at `max_callers`. Keeps the instance's liveness key fresh until dropped.
    pub async fn connect(url: &str, max_callers: usize) -> Result<Arc<Self>, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let con = ConnectionManager::new_with_config(client.clone(), config.clone()).await?;
        let iid = uuid::Uuid::new_v4().simple().to_string();
        // Doorbells on a RESP3 connection of their own, resubscribed after every reconnect.
        let (bells, _) = broadcast::channel(1024);
        let (push_tx, mut push_rx) = mpsc::unbounded_channel::<redis::PushInfo>();
        let info = client.get_connection_info().clone().set_redis_settings(
            client
                .get_connection_info()
                .redis_settings()
                .clone()
                .set_protocol(redis::ProtocolVersion::RESP3),
        );
        let mut subscriber = ConnectionManager::new_with_config(
            redis::Client::open(info)?,
            config
                .set_push_sender(push_tx)
                .set_automatic_resubscription(),
        )
        .await?;
        subscriber.subscribe(bell_channel(&iid)).await?;
        {
            let bells = bells.downgrade();
            tokio::spawn(async move {
                // The subscriber lives as long as this task: until the queue (its bells) goes.
                let _subscriber = subscriber;
                while let Some(push) = push_rx.recv().await {
                    let Some(bells) = bells.upgrade() else { break };
                    if push.kind != redis::PushKind::Message {
                        continue;
                    }
                    if let Some(redis::Value::BulkString(b)) = push.data.get(1)
                        && let Ok(key) = std::str::from_utf8(b)
                    {
                        // Nobody listening right now is no error: a doorbell is only a hint.
                        let _ = bells.send(key.to_string());
                    }
                }
            });
        }
        let queue = Arc::new(Self {
            con,
            iid,
            max_callers,
            offer: redis::Script::new(OFFER),
            present: redis::Script::new(PRESENT),
            claim: redis::Script::new(CLAIM),
            busy: redis::Script::new(BUSY),
            hold: redis::Script::new(HOLD),
            cancel: redis::Script::new(CANCEL),
            update: redis::Script::new(UPDATE),
            bells,
        });
        let weak = Arc::downgrade(&queue);
        tokio::spawn(async move {
            while let Some(q) = weak.upgrade() {
                let mut con = q.con.clone();
                let _: Result<(), _> = redis::cmd("SET")
                    .arg(instance_key(&q.iid))
                    .arg("1")
                    .arg("PX")
                    .arg(INSTANCE_TTL_MS)
                    .query_async(&mut con)
                    .await;
                drop(q);
                tokio::time::sleep(INSTANCE_REFRESH).await;
            }
        });
        Ok(queue)
    }

    /// This instance's id.
    pub fn instance(&self) -> &str {
        &self.iid
    }

    /// Rings instance `iid`'s doorbell with `key`. A lost ring costs only a rescan period.
    async fn ring(con: &ConnectionManager, iid: &str, key: &str) {
        let mut con = con.clone();
        let _: Result<(), _> = redis::cmd("PUBLISH")
            .arg(bell_channel(iid))
            .arg(key)
            .query_async(&mut con)
            .await;
    }
}

/// One stream entry: its kind (`init`, `cand`, `done`, `err`) and its fields.
#[derive(Debug, Default, PartialEq)]
struct Entry {
    kind: String,
    fields: std::collections::HashMap<String, String>,
}

impl Entry {
    fn new(kind: &str) -> Self {
        Self {
            kind: kind.into(),
            fields: Default::default(),
        }
    }

    fn with(mut self, name: &str, value: Option<String>) -> Self {
        if let Some(v) = value {
            self.fields.insert(name.into(), v);
        }
        self
    }

    fn get(&self, name: &str) -> Option<String> {
        self.fields.get(name).cloned()
    }

    fn candidate(c: &Candidate) -> Self {
        Entry::new("cand")
            .with("c", Some(c.candidate.clone()))
            .with("mid", c.sdp_mid.clone())
            .with("idx", c.sdp_mline_index.map(|i| i.to_string()))
            .with("ufrag", c.username_fragment.clone())
    }

    fn error(s: &Status) -> Self {
        Entry::new("err")
            .with("code", Some(i32::from(s.code()).to_string()))
            .with("message", Some(s.message().to_string()))
    }

    fn from_answerer(m: &FromAnswerer) -> Self {
        match m {
            FromAnswerer::Answer(sdp) => Entry::new("init").with("sdp", Some(sdp.clone())),
            FromAnswerer::Candidate(c) => Entry::candidate(c),
            FromAnswerer::Done => Entry::new("done"),
            FromAnswerer::Error(s) => Entry::error(s),
        }
    }

    fn from_caller(m: &FromCaller) -> Self {
        match m {
            FromCaller::Candidate(c) => Entry::candidate(c),
            FromCaller::Done => Entry::new("done"),
            FromCaller::Error(s) => Entry::error(s),
        }
    }

    fn to_candidate(&self) -> Option<Candidate> {
        Some(Candidate {
            candidate: self.get("c")?,
            sdp_mid: self.get("mid"),
            sdp_mline_index: self.get("idx").and_then(|i| i.parse().ok()),
            username_fragment: self.get("ufrag"),
        })
    }

    fn to_status(&self) -> Status {
        let code = self.get("code").and_then(|c| c.parse().ok()).unwrap_or(2);
        Status::new(
            Code::from_i32(code),
            self.get("message").unwrap_or_default(),
        )
    }

    /// As a message to the caller; `None` for a malformed entry.
    fn to_caller(&self) -> Option<FromAnswerer> {
        Some(match self.kind.as_str() {
            "init" => FromAnswerer::Answer(self.get("sdp")?),
            "cand" => FromAnswerer::Candidate(self.to_candidate()?),
            "done" => FromAnswerer::Done,
            "err" => FromAnswerer::Error(self.to_status()),
            _ => return None,
        })
    }

    /// As a message to the answerer; `None` for a malformed entry.
    fn to_answerer(&self) -> Option<FromCaller> {
        Some(match self.kind.as_str() {
            "cand" => FromCaller::Candidate(self.to_candidate()?),
            "done" => FromCaller::Done,
            "err" => FromCaller::Error(self.to_status()),
            _ => return None,
        })
    }
}

/// Appends `entry` to stream `key`, refreshing the stream's TTL.
async fn append(
    con: &ConnectionManager,
    key: &str,
    entry: &Entry,
) -> Result<(), redis::RedisError> {
    let mut con = con.clone();
    let mut xadd = redis::cmd("XADD");
    xadd.arg(key)
        .arg("MAXLEN")
        .arg("~")
        .arg(STREAM_MAXLEN)
        .arg("*")
        .arg("k")
        .arg(&entry.kind);
    for (name, value) in &entry.fields {
        xadd.arg(name).arg(value);
    }
    redis::pipe()
        .add_command(xadd)
        .ignore()
        .cmd("PEXPIRE")
        .arg(key)
        .arg(CALL_TTL_MS)
        .ignore()
        .query_async::<()>(&mut con)
        .await
}

/// Why the other side of call `call` can no longer answer, if it cannot: the call's state is
/// gone (Redis restarted without persistence, or it expired), or the instance named by field
/// `side` (`answerer`: `<iid>:<aid>`, `caller`: `<iid>`) no longer keeps its liveness key.
async fn other_side_lost(
    con: &mut ConnectionManager,
    call: &str,
    side: &str,
) -> Result<Option<Status>, redis::RedisError> {
    let (state, peer): (Option<String>, Option<String>) = redis::cmd("HMGET")
        .arg(call)
        .arg("state")
        .arg(side)
        .query_async(con)
        .await?;
    if state.is_none() {
        return Ok(Some(Status::unavailable(
            "the call's signaling state was lost; try again",
        )));
    }
    if let Some(iid) = peer.as_deref().and_then(|p| p.split(':').next()) {
        let alive: bool = redis::cmd("EXISTS")
            .arg(instance_key(iid))
            .query_async(con)
            .await?;
        if !alive {
            return Ok(Some(Status::unavailable(format!(
                "the signaling instance holding the {side} went away; try again"
            ))));
        }
    }
    Ok(None)
}

/// Reads stream `key` from after id `last`: each entry's id and content.
async fn read_after(
    con: &mut ConnectionManager,
    key: &str,
    last: &str,
) -> Result<Vec<(String, Entry)>, redis::RedisError> {
    let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(key)
        .arg(format!("({last}"))
        .arg("+")
        .arg("COUNT")
        .arg(64)
        .query_async(con)
        .await?;
    Ok(entries
        .into_iter()
        .map(|(id, flat)| {
            let mut entry = Entry::default();
            for pair in flat.chunks(2) {
                if let [name, value] = pair {
                    if name == "k" {
                        entry.kind.clone_from(value);
                    } else {
                        entry.fields.insert(name.clone(), value.clone());
                    }
                }
            }
            (id, entry)
        })
        .collect())
}

/// One side's reader of an exchange stream.
struct StreamReader {
    con: ConnectionManager,
    /// The call's hash key.
    call: String,
    /// The stream this side reads.
    stream: String,
    /// The field of the call naming the other side's instance (`answerer`, `caller`).
    other_side: &'static str,
    /// The doorbell that says the stream has news.
    bell: String,
    /// This instance's doorbells, subscribed before the first read.
    bells: broadcast::Receiver<String>,
    deadline: Instant,
}

impl StreamReader {
    /// Hands every message of the stream, decoded by `decode`, to `tx`, until one that
    /// `is_last` says ends it, the deadline, or `tx`'s reader going away. When the stream has
    /// nothing new and the other side is gone, or Redis fails, `tx` gets that as `error`.
    async fn relay<M>(
        mut self,
        tx: mpsc::Sender<M>,
        decode: fn(&Entry) -> Option<M>,
        is_last: fn(&M) -> bool,
        error: fn(Status) -> M,
    ) {
        let mut last = "0-0".to_string();
        while Instant::now() < self.deadline && !tx.is_closed() {
            let failure = match read_after(&mut self.con, &self.stream, &last).await {
                Ok(entries) if entries.is_empty() => {
                    // Nothing new: is anyone still on the other side?
                    match other_side_lost(&mut self.con, &self.call, self.other_side).await {
                        Ok(lost) => lost,
                        Err(e) => Some(unavailable(e)),
                    }
                }
                Ok(entries) => {
                    for (id, entry) in entries {
                        last = id;
                        let Some(message) = decode(&entry) else {
                            continue;
                        };
                        let end = is_last(&message);
                        if tx.send(message).await.is_err() || end {
                            return;
                        }
                    }
                    None
                }
                Err(e) => Some(unavailable(e)),
            };
            if let Some(status) = failure {
                let _ = tx.send(error(status)).await;
                return;
            }
            let bell = &self.bell;
            doorbell(&mut self.bells, |b| b == bell, STREAM_RESCAN).await;
        }
    }
}

/// Removes an answerer's presences when its wait ends, however it ends.
struct Presence {
    con: ConnectionManager,
    member: String,
    keys: Vec<String>,
}

impl Drop for Presence {
    fn drop(&mut self) {
        let mut con = self.con.clone();
        let member = std::mem::take(&mut self.member);
        let keys = std::mem::take(&mut self.keys);
        tokio::spawn(async move {
            let mut pipe = redis::pipe();
            for k in &keys {
                pipe.cmd("ZREM").arg(k).arg(&member).ignore();
            }
            let _: Result<(), _> = pipe.query_async(&mut con).await;
        });
    }
}

#[tonic::async_trait]
impl CallQueue for RedisQueue {
    async fn send_offer(&self, host: &str, offer: Offer) -> Result<CallerSide, Status> {
        let keys = HostKeys::new(host);
        let call = keys.call(&offer.uuid);
        let remaining = offer.deadline.saturating_duration_since(Instant::now());
        let mut con = self.con.clone();
        let verdict: Vec<String> = self
            .offer
            .key(&keys.ans)
            .key(&keys.busy)
            .key(&keys.callers)
            .key(&keys.pending)
            .key(&call)
            .key(uuid_key(&offer.uuid))
            .key(&keys.seen)
            .arg(&offer.uuid)
            .arg(&offer.sdp)
            .arg(if offer.disable_trickle { "1" } else { "0" })
            .arg(&*offer.caller_entity)
            .arg(self.max_callers)
            .arg(u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX))
            .arg(&self.iid)
            .arg(CALL_TTL_MS)
            .invoke_async(&mut con)
            .await
            .map_err(unavailable)?;
        match verdict.first().map(String::as_str) {
            Some("offline") => return Err(Status::not_found(HOST_OFFLINE)),
            Some("ok") => {}
            _ => return Err(Status::unavailable(TOO_MANY)),
        }
        // Subscribed before the first read, so no ring for it is missed.
        let bells = self.bells.subscribe();
        let host_bell = format!("h:{host}");
        for iid in &verdict[1..] {
            Self::ring(&self.con, iid, &host_bell).await;
        }
        let (tx, from_answerer) = mpsc::channel(EXCHANGE_BUFFER);
        let caller_gone = tx.clone();
        let (cancel, call_key) = (self.cancel.clone(), call.clone());
        let reader = StreamReader {
            con: con.clone(),
            stream: format!("{call}:a2c"),
            call,
            other_side: "answerer",
            bell: format!("c:{}:a2c", offer.uuid),
            bells,
            deadline: offer.deadline,
        };
        let (callers, uuid) = (keys.callers, offer.uuid.clone());
        tokio::spawn(async move {
            reader
                .relay(
                    tx,
                    Entry::to_caller,
                    |m| matches!(m, FromAnswerer::Done | FromAnswerer::Error(_)),
                    FromAnswerer::Error,
                )
                .await;
            // Hung up while still queued: the offer is withdrawn.
            if caller_gone.is_closed() {
                let _: Result<i64, _> = cancel.key(&call_key).invoke_async(&mut con).await;
            }
            drop(caller_gone);
            let _: Result<(), _> = redis::cmd("ZREM")
                .arg(&callers)
                .arg(&uuid)
                .query_async(&mut con)
                .await;
        });
        Ok(CallerSide {
            uuid: offer.uuid,
            from_answerer,
        })
    }

    async fn caller_update(
        &self,
        uuid: &str,
        entity: &str,
        update: FromCaller,
    ) -> Result<(), Status> {
        let entry = Entry::from_caller(&update);
        let mut invocation = self.update.prepare_invoke();
        invocation
            .key(uuid_key(uuid))
            .arg(uuid)
            .arg(entity)
            .arg(CALL_TTL_MS)
            .arg(STREAM_MAXLEN)
            .arg(bell_channel(""))
            .arg(&entry.kind);
        for (name, value) in &entry.fields {
            invocation.arg(name).arg(value);
        }
        let mut con = self.con.clone();
        let verdict: String = invocation
            .invoke_async(&mut con)
            .await
            .map_err(unavailable)?;
        if verdict != "ok" {
            return Err(no_such_call(uuid));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl OfferSource for RedisQueue {
    async fn recv_offer(&self, hosts: &[String]) -> Result<AnswererSide, Status> {
        let member = format!("{}:{}", self.iid, uuid::Uuid::new_v4().simple());
        let keys: Vec<HostKeys> = hosts.iter().map(|h| HostKeys::new(h)).collect();
        let _presence = Presence {
            con: self.con.clone(),
            member: member.clone(),
            keys: keys.iter().map(|k| k.ans.clone()).collect(),
        };
        let mut con = self.con.clone();
        let mut refreshed: Option<Instant> = None;
        let wanted: Vec<String> = hosts.iter().map(|h| format!("h:{h}")).collect();
        loop {
            // Subscribed before looking, so an offer queued meanwhile rings us.
            let mut bells = self.bells.subscribe();
            if refreshed.is_none_or(|t| t.elapsed() >= PRESENCE_REFRESH) {
                for k in &keys {
                    let verdict: String = self
                        .present
                        .key(&k.ans)
                        .key(&k.busy)
                        .arg(&member)
                        .arg(PRESENCE_TTL_MS)
                        .arg(MAX_ANSWERERS_PER_HOST)
                        .invoke_async(&mut con)
                        .await
                        .map_err(unavailable)?;
                    if verdict == "busy" {
                        return Err(Status::unavailable(TOO_MANY));
                    }
                }
                refreshed = Some(Instant::now());
            }
            for k in &keys {
                let claimed: Option<Vec<String>> = self
                    .claim
                    .key(&k.ans)
                    .key(&k.busy)
                    .key(&k.pending)
                    .arg(&member)
                    .arg(&k.call_prefix)
                    .arg(u64::try_from(CLAIM_MAX_AGE.as_millis()).unwrap_or(u64::MAX))
                    .arg(PRESENCE_TTL_MS)
                    .invoke_async(&mut con)
                    .await
                    .map_err(unavailable)?;
                if let Some(c) = claimed
                    && let [uuid, age_ms, sdp, trickle, entity, caller] = c.as_slice()
                {
                    let age = Duration::from_millis(age_ms.parse().unwrap_or(0));
                    let deadline = Instant::now() + tether_rpc::OFFER_DEADLINE.saturating_sub(age);
                    let claimed = Claimed {
                        uuid,
                        sdp,
                        disable_trickle: trickle == "1",
                        entity,
                        caller,
                        deadline,
                    };
                    // Busy for the stream's other hosts as well, for as long as for this one.
                    let mut busy = vec![k.busy.clone()];
                    let mut seen = vec![k.seen.clone()];
                    for other in keys.iter().filter(|o| o.busy != k.busy) {
                        let _: Result<String, _> = self
                            .hold
                            .key(&other.ans)
                            .key(&other.busy)
                            .arg(&member)
                            .arg(PRESENCE_TTL_MS)
                            .invoke_async(&mut con)
                            .await;
                        busy.push(other.busy.clone());
                        seen.push(other.seen.clone());
                    }
                    return Ok(self.exchange(k, (busy, seen), &member, claimed));
                }
            }
            // Presence refreshes come due within the rescan period.
            let wait = CLAIM_RESCAN.min(PRESENCE_REFRESH);
            doorbell(&mut bells, |b| wanted.iter().any(|w| w == b), wait).await;
        }
    }
}

impl RedisQueue {
    /// The answerer's side of claimed call `uuid`: its messages to the caller go to the a2c
    /// stream; the caller's come from the c2a stream; its busy presence lives until both end.
    /// `held` are the busy sets it is in (the claimed host's first) and the hosts' `seen` keys.
    fn exchange(
        &self,
        keys: &HostKeys,
        held: (Vec<String>, Vec<String>),
        member: &str,
        claimed: Claimed<'_>,
    ) -> AnswererSide {
        let Claimed {
            uuid,
            sdp,
            disable_trickle,
            entity,
            caller,
            deadline,
        } = claimed;
        let call = keys.call(uuid);
        let (to_caller, mut outbound) = mpsc::channel::<FromAnswerer>(EXCHANGE_BUFFER);
        let (inbound, from_caller) = mpsc::channel(EXCHANGE_BUFFER);
        let a2c = format!("{call}:a2c");
        let c2a = format!("{call}:c2a");
        // Outbound: the answerer's messages, in order, then its busy presence ends.
        {
            let (con, member) = (self.con.clone(), member.to_string());
            let (busy, seen) = held;
            let refresh_busy = self.busy.clone();
            let (caller, bell) = (caller.to_string(), format!("c:{uuid}:a2c"));
            tokio::spawn(async move {
                let mut refresh = tokio::time::interval(PRESENCE_REFRESH);
                loop {
                    tokio::select! {
                        message = outbound.recv() => {
                            let Some(message) = message else { break };
                            if append(&con, &a2c, &Entry::from_answerer(&message)).await.is_err() {
                                break;
                            }
                            Self::ring(&con, &caller, &bell).await;
                        }
                        _ = refresh.tick() => {
                            let mut c = con.clone();
                            for key in &busy {
                                let _: Result<(), _> = refresh_busy.key(key).arg(&member)
                                    .arg(PRESENCE_TTL_MS).invoke_async(&mut c).await;
                            }
                        }
                    }
                }
                // Its slot is free at once; the host stays known online until it is back.
                let mut con = con.clone();
                let mut pipe = redis::pipe();
                for (busy, seen) in busy.iter().zip(&seen) {
                    pipe.cmd("ZREM").arg(busy).arg(&member).ignore();
                    pipe.cmd("SET")
                        .arg(seen)
                        .arg(1)
                        .arg("PX")
                        .arg(ANSWERER_LINGER_MS)
                        .ignore();
                }
                let _: Result<(), _> = pipe.query_async(&mut con).await;
            });
        }
        // Inbound: the caller's messages until it is done or the deadline passes.
        let reader = StreamReader {
            con: self.con.clone(),
            stream: c2a,
            call,
            other_side: "caller",
            bell: format!("c:{uuid}:c2a"),
            bells: self.bells.subscribe(),
            deadline,
        };
        tokio::spawn(reader.relay(
            inbound,
            Entry::to_answerer,
            |m| !matches!(m, FromCaller::Candidate(_)),
            FromCaller::Error,
        ));
        AnswererSide {
            ice_servers: Vec::new(),
            offer: Offer {
                uuid: uuid.to_string(),
                sdp: sdp.to_string(),
                disable_trickle,
                deadline,
                caller_entity: Arc::from(entity),
            },
            to_caller,
            from_caller,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_and_statuses_survive_their_stream_form() {
        for c in [
            Candidate {
                candidate: "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host".into(),
                sdp_mid: Some("0".into()),
                sdp_mline_index: Some(0),
                username_fragment: Some("ab\0cd".into()),
            },
            Candidate {
                candidate: "candidate:2 1 udp 1 10.0.0.1 9 typ relay".into(),
                ..Default::default()
            },
        ] {
            let entry = Entry::from_caller(&FromCaller::Candidate(c.clone()));
            assert!(matches!(entry.to_answerer(), Some(FromCaller::Candidate(d)) if d == c));
        }
        let entry = Entry::from_answerer(&FromAnswerer::Error(Status::unavailable("gone")));
        let Some(FromAnswerer::Error(s)) = entry.to_caller() else {
            panic!("an error");
        };
        assert_eq!((s.code(), s.message()), (Code::Unavailable, "gone"));
        assert!(Entry::new("bogus").to_caller().is_none());
    }
}
