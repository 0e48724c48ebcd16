//! The fake motor: position advances with rpm and time; `go_for`/`go_to` block until the target
//! is reached and can be interrupted; power and rpm are bounded by `max_rpm`.

use std::sync::Mutex;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::Motor;
use crate::resource::{Actuator, Component, Object, ResourceError, Result};
use crate::sim::{History, Interrupts, require_finite, travel_time};
use crate::sync::lock;

/// Attributes of a fake motor. The hardware fields of a viam-server fake motor config are
/// accepted so such configs run unchanged; only `max_rpm` changes behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FakeMotorAttributes {
    /// Speed at full power, in rpm (default 100).
    #[serde(default = "default_max_rpm")]
    pub max_rpm: f64,
    #[serde(default)]
    pub ticks_per_rotation: Option<i64>,
    #[serde(default)]
    pub encoder: Option<String>,
    #[serde(default)]
    pub board: Option<String>,
    #[serde(default)]
    pub pins: Option<Object>,
    #[serde(default)]
    pub dir_flip: Option<bool>,
    #[serde(default)]
    pub min_power_pct: Option<f64>,
    #[serde(default)]
    pub max_power_pct: Option<f64>,
    #[serde(default)]
    pub pwm_freq: Option<u32>,
    /// Simulated slow hardware: how long a Stop takes before the motor halts (default 0).
    #[serde(default)]
    pub stop_delay_ms: u64,
}

fn default_max_rpm() -> f64 {
    100.0
}

impl crate::apis::Attributes for FakeMotorAttributes {
    fn validate(&self) -> std::result::Result<(), String> {
        if !(self.max_rpm.is_finite() && self.max_rpm > 0.0) {
            return Err(format!(
                "max_rpm must be a positive number, got {}",
                self.max_rpm
            ));
        }
        Ok(())
    }
}

/// The motor's state between commands. Position is `base + rpm/60 · (now − mark)`, clamped at
/// `target` when there is one.
#[derive(Debug, Clone)]
struct State {
    rpm: f64,
    power: f64,
    base: f64,
    mark: Instant,
    target: Option<f64>,
}

impl State {
    fn position(&self, now: Instant) -> f64 {
        let travelled = self.rpm / 60.0 * now.saturating_duration_since(self.mark).as_secs_f64();
        let p = self.base + travelled;
        match self.target {
            Some(t) if self.rpm > 0.0 => p.min(t),
            Some(t) if self.rpm < 0.0 => p.max(t),
            Some(t) => t,
            None => p,
        }
    }

    fn is_moving(&self, now: Instant) -> bool {
        self.rpm != 0.0 && self.target.is_none_or(|t| self.position(now) != t)
    }

    /// Folds elapsed motion into `base`; ends a finished move.
    fn settle(&mut self, now: Instant) {
        self.base = self.position(now);
        self.mark = now;
        if !self.is_moving(now) {
            self.rpm = 0.0;
            self.power = 0.0;
            self.target = None;
        }
    }

    fn run(&mut self, now: Instant, rpm: f64, power: f64, target: Option<f64>) {
        self.settle(now);
        self.rpm = rpm;
        self.power = power;
        self.target = target;
    }

    fn halt(&mut self, now: Instant) {
        self.run(now, 0.0, 0.0, None);
    }
}

/// A simulated motor.
#[derive(Debug)]
pub struct FakeMotor {
    max_rpm: f64,
    stop_delay: std::time::Duration,
    state: Mutex<State>,
    interrupts: Interrupts,
    history: History,
}

impl FakeMotor {
    /// A motor at rest at position 0.
    pub fn new(name: &str, attributes: &FakeMotorAttributes) -> Self {
        Self {
            max_rpm: attributes.max_rpm,
            stop_delay: std::time::Duration::from_millis(attributes.stop_delay_ms),
            state: Mutex::new(State {
                rpm: 0.0,
                power: 0.0,
                base: 0.0,
                mark: Instant::now(),
                target: None,
            }),
            interrupts: Interrupts::default(),
            history: History::new(name),
        }
    }

    /// The recorded commands.
    pub fn history(&self) -> &History {
        &self.history
    }

    fn clamp_rpm(&self, rpm: f64) -> f64 {
        rpm.clamp(-self.max_rpm, self.max_rpm)
    }

    /// Starts a move towards `target` at signed `rpm` and waits for it to end.
    async fn move_to_target(&self, what: &'static str, rpm: f64, target: f64) -> Result<()> {
        let (generation, end) = {
            let mut s = lock(&self.state);
            let now = Instant::now();
            let distance = (target - s.position(now)).abs();
            let generation = self.interrupts.begin();
            s.run(now, rpm, rpm / self.max_rpm, Some(target));
            (generation, now + travel_time(distance, rpm.abs() / 60.0))
        };
        let waited = self
            .interrupts
            .wait_or_halt(&self.state, generation, end, what, &self.history, |s| {
                s.halt(Instant::now());
            })
            .await;
        let mut s = lock(&self.state);
        s.settle(Instant::now());
        waited
    }
}

#[async_trait]
impl Component for FakeMotor {
    async fn do_command(&self, command: Object) -> Result<Object> {
        crate::sim::do_command(&self.history, command)
    }

    async fn status(&self) -> Result<Object> {
        let s = lock(&self.state).clone();
        let now = Instant::now();
        let mut o = Object::new();
        o.insert("position".into(), json!(s.position(now)));
        o.insert("is_moving".into(), json!(s.is_moving(now)));
        o.insert(
            "is_powered".into(),
            json!(s.is_moving(now) && s.power != 0.0),
        );
        Ok(o)
    }
}

#[async_trait]
impl Actuator for FakeMotor {
    async fn stop(&self, extra: &Object) -> Result<()> {
        if !self.stop_delay.is_zero() {
            tokio::time::sleep(self.stop_delay).await;
        }
        let mut s = lock(&self.state);
        self.interrupts.begin();
        s.halt(Instant::now());
        self.history.record("stop", Value::Object(extra.clone()));
        Ok(())
    }

    async fn is_moving(&self) -> Result<bool> {
        Ok(lock(&self.state).is_moving(Instant::now()))
    }
}

#[async_trait]
impl Motor for FakeMotor {
    async fn set_power(&self, power_pct: f64, _extra: &Object) -> Result<()> {
        let power = require_finite("power_pct", power_pct)?;
        if !(-1.0..=1.0).contains(&power) {
            return Err(ResourceError::InvalidArgument(format!(
                "power_pct must be between -1 and 1, got {power}"
            )));
        }
        let mut s = lock(&self.state);
        self.interrupts.begin();
        s.run(Instant::now(), power * self.max_rpm, power, None);
        self.history
            .record("set_power", json!({"power_pct": power}));
        Ok(())
    }

    async fn go_for(&self, rpm: f64, revolutions: f64, _extra: &Object) -> Result<()> {
        let rpm = self.clamp_rpm(require_finite("rpm", rpm)?);
        let revolutions = require_finite("revolutions", revolutions)?;
        self.history
            .record("go_for", json!({"rpm": rpm, "revolutions": revolutions}));
        if rpm == 0.0 {
            return Err(ResourceError::InvalidArgument(
                "go_for needs a non-zero rpm".into(),
            ));
        }
        if revolutions == 0.0 {
            // As in viam-server: zero revolutions means "run at this rpm until stopped".
            let mut s = lock(&self.state);
            self.interrupts.begin();
            s.run(Instant::now(), rpm, rpm / self.max_rpm, None);
            return Ok(());
        }
        let direction = rpm.signum() * revolutions.signum();
        let start = lock(&self.state).position(Instant::now());
        let target = start + direction * revolutions.abs();
        self.move_to_target("go_for", direction * rpm.abs(), target)
            .await
    }

    async fn go_to(&self, rpm: f64, position_revolutions: f64, _extra: &Object) -> Result<()> {
        let rpm = self.clamp_rpm(require_finite("rpm", rpm)?).abs();
        let target = require_finite("position_revolutions", position_revolutions)?;
        self.history
            .record("go_to", json!({"rpm": rpm, "position_revolutions": target}));
        if rpm == 0.0 {
            return Err(ResourceError::InvalidArgument(
                "go_to needs a non-zero rpm".into(),
            ));
        }
        let here = lock(&self.state).position(Instant::now());
        if here == target {
            return Ok(());
        }
        let signed = if target > here { rpm } else { -rpm };
        self.move_to_target("go_to", signed, target).await
    }

    async fn set_rpm(&self, rpm: f64, _extra: &Object) -> Result<()> {
        let rpm = self.clamp_rpm(require_finite("rpm", rpm)?);
        let mut s = lock(&self.state);
        self.interrupts.begin();
        s.run(Instant::now(), rpm, rpm / self.max_rpm, None);
        self.history.record("set_rpm", json!({"rpm": rpm}));
        Ok(())
    }

    async fn reset_zero_position(&self, offset: f64, _extra: &Object) -> Result<()> {
        let offset = require_finite("offset", offset)?;
        let mut s = lock(&self.state);
        let now = Instant::now();
        s.settle(now);
        // As in viam-server: afterwards the current position reads as −offset.
        let shift = -offset - s.base;
        s.base += shift;
        if let Some(t) = s.target.as_mut() {
            *t += shift;
        }
        self.history
            .record("reset_zero_position", json!({"offset": offset}));
        Ok(())
    }

    async fn position(&self, _extra: &Object) -> Result<f64> {
        Ok(lock(&self.state).position(Instant::now()))
    }

    async fn position_reporting(&self, _extra: &Object) -> Result<bool> {
        Ok(true)
    }

    async fn is_powered(&self, _extra: &Object) -> Result<(bool, f64)> {
        let s = lock(&self.state);
        let moving = s.is_moving(Instant::now());
        let power = if moving { s.power } else { 0.0 };
        Ok((moving && power != 0.0, power))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn motor() -> FakeMotor {
        FakeMotor::new(
            "m",
            &FakeMotorAttributes {
                max_rpm: 120.0,
                ticks_per_rotation: None,
                encoder: None,
                board: None,
                pins: None,
                dir_flip: None,
                min_power_pct: None,
                max_power_pct: None,
                pwm_freq: None,
                stop_delay_ms: 0,
            },
        )
    }

    #[tokio::test(start_paused = true)]
    async fn position_advances_with_power_and_time() {
        let m = motor();
        let none = Object::new();
        m.set_power(0.5, &none).await.unwrap(); // 60 rpm = 1 rev/s
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert!((m.position(&none).await.unwrap() - 1.5).abs() < 1e-9);
        assert_eq!(m.is_powered(&none).await.unwrap(), (true, 0.5));
        m.stop(&none).await.unwrap();
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!((m.position(&none).await.unwrap() - 1.5).abs() < 1e-9);
        assert!(!m.is_moving().await.unwrap());
        assert_eq!(m.is_powered(&none).await.unwrap(), (false, 0.0));
        let commands: Vec<_> = m.history().entries().iter().map(|e| e.command).collect();
        assert_eq!(commands, ["set_power", "stop"]);
    }

    #[tokio::test(start_paused = true)]
    async fn go_for_blocks_until_done_and_go_to_reaches_target() {
        let m = motor();
        let none = Object::new();
        let t0 = Instant::now();
        m.go_for(60.0, -2.0, &none).await.unwrap();
        assert_eq!(Instant::now() - t0, Duration::from_secs(2));
        assert!((m.position(&none).await.unwrap() + 2.0).abs() < 1e-9);
        assert!(!m.is_moving().await.unwrap());
        m.go_to(120.0, 1.0, &none).await.unwrap();
        assert!((m.position(&none).await.unwrap() - 1.0).abs() < 1e-9);
        // rpm is clamped to max_rpm: 3 revolutions at (clamped) 120 rpm take 1.5 s.
        let t1 = Instant::now();
        m.go_for(1000.0, 3.0, &none).await.unwrap();
        assert_eq!(Instant::now() - t1, Duration::from_millis(1500));
    }

    #[tokio::test(start_paused = true)]
    async fn stop_interrupts_a_blocking_move() {
        let m = std::sync::Arc::new(motor());
        let none = Object::new();
        let mover = {
            let m = m.clone();
            tokio::spawn(async move { m.go_for(60.0, 10.0, &Object::new()).await })
        };
        tokio::task::yield_now().await; // let the move start
        tokio::time::advance(Duration::from_millis(500)).await;
        m.stop(&none).await.unwrap();
        let err = mover.await.unwrap().unwrap_err();
        assert!(matches!(err, ResourceError::Cancelled(_)), "{err:?}");
        assert!((m.position(&none).await.unwrap() - 0.5).abs() < 1e-6);
    }

    #[tokio::test(start_paused = true)]
    async fn abandoned_move_stops_the_motor() {
        let m = motor();
        let none = Object::new();
        let r = tokio::time::timeout(Duration::from_millis(250), m.go_for(60.0, 5.0, &none)).await;
        assert!(r.is_err());
        assert!(!m.is_moving().await.unwrap());
        assert_eq!(m.history().entries().last().unwrap().command, "stop");
    }

    #[tokio::test(start_paused = true)]
    async fn reset_zero_and_bad_arguments() {
        let m = motor();
        let none = Object::new();
        m.go_for(60.0, 1.0, &none).await.unwrap();
        m.reset_zero_position(0.25, &none).await.unwrap();
        assert!((m.position(&none).await.unwrap() + 0.25).abs() < 1e-9);
        assert!(m.set_power(1.5, &none).await.is_err());
        assert!(m.set_power(f64::NAN, &none).await.is_err());
        assert!(m.go_for(0.0, 1.0, &none).await.is_err());
    }
}
