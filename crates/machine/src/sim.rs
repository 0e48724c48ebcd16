//! The simulator's toolkit, shared by every `fake` model (each API's model lives in its own
//! module, `apis/<api>/fake.rs`).
//!
//! Simulated components are part of the product: a user runs them to try Tether, and tests
//! drive them over the wire. So they behave plausibly — a motor's position advances with its
//! rpm and time, a move takes as long as its distance over its speed and can be interrupted —
//! and each one records every command and every stop with its time in a bounded [`History`],
//! readable over the wire with `DoCommand {"command": "history"}`.
//!
//! Motion is modelled as a pure function of time ([`Motion`]); the clock is tokio's, so tests
//! can pause and advance it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::resource::{Object, ResourceError, Result};
use crate::sync::lock;

/// How many entries a history keeps; older ones are dropped.
pub const HISTORY_LIMIT: usize = 1000;

/// The most bytes of JSON one entry's arguments keep (so a history holds at most about
/// `HISTORY_LIMIT * ARGS_LIMIT` bytes of arguments: under a megabyte per resource).
pub const ARGS_LIMIT: usize = 512;

/// Counts the bytes written to it and keeps the first `keep`.
struct Head {
    keep: usize,
    head: Vec<u8>,
    total: usize,
}

impl std::io::Write for Head {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = self.keep.saturating_sub(self.head.len());
        self.head.extend_from_slice(&buf[..room.min(buf.len())]);
        self.total += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `value` itself if its JSON is at most `limit` bytes; otherwise a small object with its
/// first bytes (as text) and its size. Serializes once into a counter, allocating nothing
/// beyond the kept head.
pub fn compact(value: Value, limit: usize) -> Value {
    let mut head = Head {
        keep: limit / 2,
        head: Vec::new(),
        total: 0,
    };
    if serde_json::to_writer(&mut head, &value).is_err() || head.total <= limit {
        return value;
    }
    drop(value);
    json!({
        "truncated": String::from_utf8_lossy(&head.head),
        "json_bytes": head.total,
    })
}

/// One recorded command.
#[derive(Debug, Clone)]
pub struct Entry {
    /// When it was received (wall clock).
    pub time: SystemTime,
    /// The command (`set_power`, `stop`, ...).
    pub command: &'static str,
    /// Its arguments.
    pub args: Value,
}

/// The commands a simulated component was given, newest last, bounded by [`HISTORY_LIMIT`].
#[derive(Debug)]
pub struct History {
    resource: String,
    entries: Mutex<VecDeque<Entry>>,
}

impl History {
    /// An empty history for the named resource.
    pub fn new(resource: impl Into<String>) -> Self {
        Self {
            resource: resource.into(),
            entries: Mutex::new(VecDeque::new()),
        }
    }

    /// Records a command. Its arguments are kept compactly: up to [`ARGS_LIMIT`] bytes of JSON
    /// as they are, larger ones (a client's megabytes of `extra`) as their first bytes and
    /// their size — so the history is bounded in bytes, not only in entries.
    pub fn record(&self, command: &'static str, args: Value) {
        let args = compact(args, ARGS_LIMIT);
        tracing::debug!(resource = %self.resource, command, %args, "simulated command");
        let mut entries = lock(&self.entries);
        if entries.len() == HISTORY_LIMIT {
            entries.pop_front();
        }
        entries.push_back(Entry {
            time: SystemTime::now(),
            command,
            args,
        });
    }

    /// A copy of the entries, oldest first.
    pub fn entries(&self) -> Vec<Entry> {
        lock(&self.entries).iter().cloned().collect()
    }

    fn to_json(&self) -> Value {
        Value::Array(
            lock(&self.entries)
                .iter()
                .map(|e| {
                    let time = e
                        .time
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs_f64();
                    json!({"time": time, "command": e.command, "args": e.args})
                })
                .collect(),
        )
    }

    fn clear(&self) -> usize {
        let mut entries = lock(&self.entries);
        let n = entries.len();
        entries.clear();
        n
    }
}

/// DoCommand shared by every fake: `{"command": "history"}` returns the history,
/// `{"command": "clear_history"}` empties it, anything else is echoed back as `{"echo": ...}`.
pub fn do_command(history: &History, command: Object) -> Result<Object> {
    let mut result = Object::new();
    match command.get("command").and_then(Value::as_str) {
        Some("history") => {
            result.insert("history".into(), history.to_json());
        }
        Some("clear_history") => {
            result.insert("cleared".into(), json!(history.clear()));
        }
        _ => {
            result.insert("echo".into(), Value::Object(command));
        }
    }
    Ok(result)
}

/// A straight-line move of some coordinates from one point to another over a time span. At rest
/// when `from == to` or the span is over. Pure: every question takes the time.
#[derive(Debug, Clone, PartialEq)]
pub struct Motion {
    from: Vec<f64>,
    to: Vec<f64>,
    start: Instant,
    duration: Duration,
}

impl Motion {
    /// Resting at `position`.
    pub fn at_rest(position: Vec<f64>, now: Instant) -> Self {
        Self {
            from: position.clone(),
            to: position,
            start: now,
            duration: Duration::ZERO,
        }
    }

    /// Moving from `from` to `to`, starting `now`, taking `duration`.
    pub fn new(from: Vec<f64>, to: Vec<f64>, now: Instant, duration: Duration) -> Self {
        Self {
            from,
            to,
            start: now,
            duration,
        }
    }

    /// Where it is at `now`.
    pub fn position(&self, now: Instant) -> Vec<f64> {
        let elapsed = now.saturating_duration_since(self.start);
        if elapsed >= self.duration {
            return self.to.clone();
        }
        let f = elapsed.as_secs_f64() / self.duration.as_secs_f64();
        self.from
            .iter()
            .zip(&self.to)
            .map(|(a, b)| a + (b - a) * f)
            .collect()
    }

    /// Whether it is still moving at `now`.
    pub fn is_moving(&self, now: Instant) -> bool {
        now < self.end()
    }

    /// When the move ends.
    pub fn end(&self) -> Instant {
        self.start + self.duration
    }

    /// Stops where it is at `now`.
    pub fn halt(&mut self, now: Instant) {
        *self = Motion::at_rest(self.position(now), now);
    }
}

/// The time a move of `distance` takes at `speed` (both positive; zero distance is instant).
pub fn travel_time(distance: f64, speed: f64) -> Duration {
    if distance <= 0.0 || speed <= 0.0 || !distance.is_finite() || !speed.is_finite() {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(distance / speed).unwrap_or(Duration::MAX)
}

/// Numbers each command that starts or ends a motion, so a blocking call can tell whether it was
/// interrupted by a stop or a newer command while it waited.
#[derive(Debug)]
pub struct Interrupts {
    generation: watch::Sender<u64>,
}

impl Default for Interrupts {
    fn default() -> Self {
        Self {
            generation: watch::Sender::new(0),
        }
    }
}

impl Interrupts {
    /// Starts a new command, interrupting any waiting one; returns the new command's number.
    /// Call it while holding the state lock that the command changes.
    pub fn begin(&self) -> u64 {
        let mut current = 0;
        self.generation.send_modify(|g| {
            *g += 1;
            current = *g;
        });
        current
    }

    /// Whether `generation` is still the latest command.
    pub fn is_current(&self, generation: u64) -> bool {
        *self.generation.borrow() == generation
    }

    /// Waits like [`Interrupts::wait_until`]; if the caller goes away first (the future is
    /// dropped: a cancelled operation, a closed connection) while `generation` is still the
    /// latest command, halts the motion with `halt` under the `state` lock and records why.
    pub async fn wait_or_halt<S>(
        &self,
        state: &Mutex<S>,
        generation: u64,
        end: Instant,
        what: &str,
        history: &History,
        halt: impl FnOnce(&mut S),
    ) -> Result<()> {
        let guard = OnDrop::new(|| {
            let mut s = lock(state);
            if self.is_current(generation) {
                halt(&mut s);
                history.record(
                    "stop",
                    json!({"reason": format!("{what} abandoned by its caller")}),
                );
            }
        });
        let waited = self.wait_until(generation, end, what).await;
        guard.disarm();
        waited
    }

    /// Waits until `end`, or fails if another command or a stop comes first.
    pub async fn wait_until(&self, generation: u64, end: Instant, what: &str) -> Result<()> {
        let mut rx = self.generation.subscribe();
        tokio::select! {
            _ = tokio::time::sleep_until(end) => Ok(()),
            _ = rx.wait_for(|g| *g != generation) => Err(ResourceError::Cancelled(format!(
                "{what} was interrupted by a stop or a newer command"
            ))),
        }
    }
}

/// Runs a closure when dropped unless disarmed: a blocking move uses it to stop the motion it
/// started if its caller goes away (cancelled operation, dropped connection) before it is done.
pub struct OnDrop<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> OnDrop<F> {
    /// Arms the guard.
    pub fn new(f: F) -> Self {
        Self(Some(f))
    }

    /// Disarms it: the move finished.
    pub fn disarm(mut self) {
        self.0 = None;
    }
}

impl<F: FnOnce()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// Coordinates that move in straight lines between commanded targets — the shared core of the
/// fake arm, gantry, gripper and servo. A move blocks until it ends, fails if interrupted, and
/// halts the motion if its caller goes away first.
#[derive(Debug)]
pub struct Axes {
    motion: Mutex<Motion>,
    interrupts: Interrupts,
    history: History,
}

impl Axes {
    /// Resting at `position`.
    pub fn new(resource: &str, position: Vec<f64>) -> Self {
        Self {
            motion: Mutex::new(Motion::at_rest(position, Instant::now())),
            interrupts: Interrupts::default(),
            history: History::new(resource),
        }
    }

    /// The recorded commands.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Where the axes are now.
    pub fn position(&self) -> Vec<f64> {
        lock(&self.motion).position(Instant::now())
    }

    /// Whether they are moving now.
    pub fn is_moving(&self) -> bool {
        lock(&self.motion).is_moving(Instant::now())
    }

    /// Halts where they are, recording the stop.
    pub fn stop(&self, args: Value) {
        let mut m = lock(&self.motion);
        self.interrupts.begin();
        m.halt(Instant::now());
        self.history.record("stop", args);
    }

    /// Moves to `target`, taking `duration(from, to)`, and waits for the move to end. The
    /// command is recorded as `what` with `args`.
    pub async fn move_to(
        &self,
        what: &'static str,
        args: Value,
        target: Vec<f64>,
        duration: impl FnOnce(&[f64], &[f64]) -> Duration,
    ) -> Result<()> {
        let (generation, end) = {
            let mut m = lock(&self.motion);
            let now = Instant::now();
            let from = m.position(now);
            let generation = self.interrupts.begin();
            let took = duration(&from, &target);
            *m = Motion::new(from, target, now, took);
            self.history.record(what, args);
            (generation, m.end())
        };
        self.interrupts
            .wait_or_halt(&self.motion, generation, end, what, &self.history, |m| {
                m.halt(Instant::now());
            })
            .await
    }
}

/// Implements `Component` (the shared history DoCommand) and `Actuator` (stop and is_moving)
/// for a fake whose motion is one [`Axes`] field.
macro_rules! axes_actuator {
    ($ty:ty, $field:ident) => {
        #[async_trait::async_trait]
        impl crate::resource::Component for $ty {
            async fn do_command(
                &self,
                command: crate::resource::Object,
            ) -> crate::resource::Result<crate::resource::Object> {
                crate::sim::do_command(self.$field.history(), command)
            }
        }

        #[async_trait::async_trait]
        impl crate::resource::Actuator for $ty {
            async fn stop(&self, extra: &crate::resource::Object) -> crate::resource::Result<()> {
                self.$field.stop(serde_json::Value::Object(extra.clone()));
                Ok(())
            }

            async fn is_moving(&self) -> crate::resource::Result<bool> {
                Ok(self.$field.is_moving())
            }
        }
    };
}
pub(crate) use axes_actuator;

/// The time to move every coordinate from `from` to `to` when each moves at its own speed:
/// the slowest coordinate decides.
pub fn slowest(from: &[f64], to: &[f64], speeds: &[f64]) -> Duration {
    from.iter()
        .zip(to)
        .zip(speeds)
        .map(|((a, b), v)| travel_time((b - a).abs(), *v))
        .max()
        .unwrap_or_default()
}

/// The time to move a point from `from` to `to` at `speed` along a straight line.
pub fn straight(from: &[f64], to: &[f64], speed: f64) -> Duration {
    let distance = from
        .iter()
        .zip(to)
        .map(|(a, b)| (b - a) * (b - a))
        .sum::<f64>()
        .sqrt();
    travel_time(distance, speed)
}

/// An error for an argument that is not a finite number.
pub fn require_finite(what: &str, v: f64) -> Result<f64> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(ResourceError::InvalidArgument(format!(
            "{what} must be a finite number, got {v}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_arguments_are_kept_compactly() {
        let small = json!({"power_pct": 0.5});
        assert_eq!(compact(small.clone(), ARGS_LIMIT), small);
        let nulls = Value::Array(vec![Value::Null; 1_000_000]);
        let kept = compact(json!({"extra": nulls}), ARGS_LIMIT);
        assert_eq!(kept["json_bytes"], json!(5_000_011));
        assert!(kept.to_string().len() < ARGS_LIMIT, "{kept}");
        let history = History::new("m");
        for _ in 0..HISTORY_LIMIT + 10 {
            history.record("stop", json!({"extra": "x".repeat(100_000)}));
        }
        let bytes: usize = history
            .entries()
            .iter()
            .map(|e| e.args.to_string().len())
            .sum();
        assert_eq!(history.entries().len(), HISTORY_LIMIT);
        assert!(bytes <= HISTORY_LIMIT * ARGS_LIMIT, "{bytes}");
    }

    #[test]
    fn motion_interpolates_and_halts() {
        let t0 = Instant::now();
        let mut m = Motion::new(vec![0.0, 10.0], vec![10.0, 0.0], t0, Duration::from_secs(2));
        assert_eq!(m.position(t0), vec![0.0, 10.0]);
        assert_eq!(m.position(t0 + Duration::from_secs(1)), vec![5.0, 5.0]);
        assert!(m.is_moving(t0 + Duration::from_millis(1999)));
        assert!(!m.is_moving(t0 + Duration::from_secs(2)));
        assert_eq!(m.position(t0 + Duration::from_secs(5)), vec![10.0, 0.0]);
        m.halt(t0 + Duration::from_millis(500));
        assert_eq!(m.position(t0 + Duration::from_secs(9)), vec![2.5, 7.5]);
        assert!(!m.is_moving(t0 + Duration::from_millis(500)));
    }

    #[test]
    fn history_is_bounded_and_echo_round_trips() {
        let h = History::new("m");
        for _ in 0..HISTORY_LIMIT + 5 {
            h.record("stop", json!({}));
        }
        assert_eq!(h.entries().len(), HISTORY_LIMIT);
        let mut cmd = Object::new();
        cmd.insert("x".into(), json!([1, "a"]));
        let out = do_command(&h, cmd.clone()).unwrap();
        assert_eq!(out["echo"], Value::Object(cmd));
        let mut clear = Object::new();
        clear.insert("command".into(), json!("clear_history"));
        assert_eq!(
            do_command(&h, clear).unwrap()["cleared"],
            json!(HISTORY_LIMIT)
        );
        assert!(h.entries().is_empty());
    }

    #[test]
    fn travel_time_handles_degenerate_input() {
        assert_eq!(travel_time(0.0, 5.0), Duration::ZERO);
        assert_eq!(travel_time(10.0, 0.0), Duration::ZERO);
        assert_eq!(travel_time(f64::NAN, 1.0), Duration::ZERO);
        assert_eq!(travel_time(10.0, 5.0), Duration::from_secs(2));
    }
}
