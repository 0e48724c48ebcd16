//! The fake base: drives straight and spins for as long as distance over speed takes, or at a
//! set power/velocity until stopped. It keeps odometry (distance driven, heading) in its status.

use std::sync::Mutex;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};
use tether_proto::viam::common::v1::Vector3;
use tokio::time::Instant;

use super::{Base, BaseProperties};
use crate::resource::{Actuator, Component, Object, ResourceError, Result};
use crate::sim::{History, Interrupts, require_finite, travel_time};
use crate::sync::lock;

/// Attributes of a fake base.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FakeBaseAttributes {
    /// Track width in mm (default 400).
    #[serde(default = "default_width")]
    pub width_mm: f64,
    /// Wheel circumference in mm (default 220).
    #[serde(default = "default_wheel")]
    pub wheel_circumference_mm: f64,
    /// Linear speed at full power, mm/s (default 500).
    #[serde(default = "default_speed")]
    pub max_speed_mm_per_sec: f64,
    /// Turning speed at full power, deg/s (default 180).
    #[serde(default = "default_turn")]
    pub max_turn_degs_per_sec: f64,
}

fn default_width() -> f64 {
    400.0
}
fn default_wheel() -> f64 {
    220.0
}
fn default_speed() -> f64 {
    500.0
}
fn default_turn() -> f64 {
    180.0
}

impl crate::apis::Attributes for FakeBaseAttributes {
    fn validate(&self) -> std::result::Result<(), String> {
        for (field, v) in [
            ("width_mm", self.width_mm),
            ("wheel_circumference_mm", self.wheel_circumference_mm),
            ("max_speed_mm_per_sec", self.max_speed_mm_per_sec),
            ("max_turn_degs_per_sec", self.max_turn_degs_per_sec),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{field} must be a positive number, got {v}"));
            }
        }
        Ok(())
    }
}

/// Velocities and odometry. Motion lasts until `until` (or until stopped when `None`).
#[derive(Debug, Clone)]
struct State {
    mm_per_sec: f64,
    degs_per_sec: f64,
    mark: Instant,
    until: Option<Instant>,
    odometer_mm: f64,
    heading_deg: f64,
    /// Position in the base's start frame: x to the right, y forward (mm).
    x_mm: f64,
    y_mm: f64,
}

impl State {
    fn moving_time(&self, now: Instant) -> f64 {
        let end = self.until.map_or(now, |u| u.min(now));
        end.saturating_duration_since(self.mark).as_secs_f64()
    }

    fn is_moving(&self, now: Instant) -> bool {
        (self.mm_per_sec != 0.0 || self.degs_per_sec != 0.0) && self.until.is_none_or(|u| now < u)
    }

    fn settle(&mut self, now: Instant) {
        let t = self.moving_time(now);
        let (dx, dy) = displacement(self.heading_deg, self.mm_per_sec, self.degs_per_sec, t);
        self.x_mm += dx;
        self.y_mm += dy;
        self.odometer_mm += self.mm_per_sec * t;
        self.heading_deg = (self.heading_deg + self.degs_per_sec * t).rem_euclid(360.0);
        self.mark = now;
        if !self.is_moving(now) {
            self.mm_per_sec = 0.0;
            self.degs_per_sec = 0.0;
            self.until = None;
        }
    }

    fn drive(&mut self, now: Instant, mm_per_sec: f64, degs_per_sec: f64, until: Option<Instant>) {
        self.settle(now);
        self.mm_per_sec = mm_per_sec;
        self.degs_per_sec = degs_per_sec;
        self.until = until;
    }
}

/// How far a base moves in `t` seconds at `mm_per_sec` while turning at `degs_per_sec`
/// (counter-clockwise positive), starting at `heading_deg` (counter-clockwise from the start
/// frame's forward, +y): an arc, or a straight line when it does not turn. Returns (dx, dy)
/// in mm, x to the right.
fn displacement(heading_deg: f64, mm_per_sec: f64, degs_per_sec: f64, t: f64) -> (f64, f64) {
    let h0 = heading_deg.to_radians();
    let w = degs_per_sec.to_radians();
    if w.abs() < 1e-12 {
        let d = mm_per_sec * t;
        return (-d * h0.sin(), d * h0.cos());
    }
    let h1 = h0 + w * t;
    let r = mm_per_sec / w;
    (r * (h1.cos() - h0.cos()), r * (h1.sin() - h0.sin()))
}

/// Where a base is, integrated from everything it was told: position in its start frame (x to
/// the right, y forward, mm) and heading (degrees counter-clockwise from the start heading).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanarPose {
    pub x_mm: f64,
    pub y_mm: f64,
    pub heading_deg: f64,
}

/// A simulated base.
#[derive(Debug)]
pub struct FakeBase {
    attributes: FakeBaseAttributes,
    state: Mutex<State>,
    interrupts: Interrupts,
    history: History,
}

impl FakeBase {
    /// A base at rest.
    pub fn new(name: &str, attributes: &FakeBaseAttributes) -> Self {
        Self {
            attributes: attributes.clone(),
            state: Mutex::new(State {
                mm_per_sec: 0.0,
                degs_per_sec: 0.0,
                mark: Instant::now(),
                until: None,
                odometer_mm: 0.0,
                heading_deg: 0.0,
                x_mm: 0.0,
                y_mm: 0.0,
            }),
            interrupts: Interrupts::default(),
            history: History::new(name),
        }
    }

    /// Drives for a bounded time and waits for it to end.
    async fn drive_for(
        &self,
        what: &'static str,
        mm_per_sec: f64,
        degs_per_sec: f64,
        duration: std::time::Duration,
    ) -> Result<()> {
        let (generation, end) = {
            let mut s = lock(&self.state);
            let now = Instant::now();
            let generation = self.interrupts.begin();
            s.drive(now, mm_per_sec, degs_per_sec, Some(now + duration));
            (generation, now + duration)
        };
        let waited = self
            .interrupts
            .wait_or_halt(&self.state, generation, end, what, &self.history, |s| {
                s.drive(Instant::now(), 0.0, 0.0, None);
            })
            .await;
        lock(&self.state).settle(Instant::now());
        waited
    }

    /// Where the base is now.
    pub fn pose(&self) -> PlanarPose {
        let mut s = lock(&self.state).clone();
        s.settle(Instant::now());
        PlanarPose {
            x_mm: s.x_mm,
            y_mm: s.y_mm,
            heading_deg: s.heading_deg,
        }
    }

    /// How fast it is going now: (mm/s forward, deg/s counter-clockwise).
    pub fn velocity(&self) -> (f64, f64) {
        let s = lock(&self.state);
        if s.is_moving(Instant::now()) {
            (s.mm_per_sec, s.degs_per_sec)
        } else {
            (0.0, 0.0)
        }
    }

    fn drive_indefinitely(&self, mm_per_sec: f64, degs_per_sec: f64) {
        let mut s = lock(&self.state);
        self.interrupts.begin();
        s.drive(Instant::now(), mm_per_sec, degs_per_sec, None);
    }
}

fn finite_vector(what: &str, v: &Vector3) -> Result<()> {
    require_finite(&format!("{what}.x"), v.x)?;
    require_finite(&format!("{what}.y"), v.y)?;
    require_finite(&format!("{what}.z"), v.z)?;
    Ok(())
}

#[async_trait]
impl Component for FakeBase {
    async fn do_command(&self, command: Object) -> Result<Object> {
        crate::sim::do_command(&self.history, command)
    }

    async fn status(&self) -> Result<Object> {
        let mut s = lock(&self.state).clone();
        let now = Instant::now();
        let moving = s.is_moving(now);
        s.settle(now);
        let mut o = Object::new();
        o.insert("is_moving".into(), json!(moving));
        o.insert("odometer_mm".into(), json!(s.odometer_mm));
        o.insert("heading_deg".into(), json!(s.heading_deg));
        o.insert("x_mm".into(), json!(s.x_mm));
        o.insert("y_mm".into(), json!(s.y_mm));
        Ok(o)
    }
}

#[async_trait]
impl Actuator for FakeBase {
    async fn stop(&self, extra: &Object) -> Result<()> {
        let mut s = lock(&self.state);
        self.interrupts.begin();
        s.drive(Instant::now(), 0.0, 0.0, None);
        self.history.record("stop", Value::Object(extra.clone()));
        Ok(())
    }

    async fn is_moving(&self) -> Result<bool> {
        Ok(lock(&self.state).is_moving(Instant::now()))
    }
}

#[async_trait]
impl Base for FakeBase {
    async fn move_straight(
        &self,
        distance_mm: i64,
        mm_per_sec: f64,
        _extra: &Object,
    ) -> Result<()> {
        let speed = require_finite("mm_per_sec", mm_per_sec)?;
        self.history.record(
            "move_straight",
            json!({"distance_mm": distance_mm, "mm_per_sec": speed}),
        );
        if distance_mm == 0 {
            return Ok(());
        }
        if speed == 0.0 {
            return Err(ResourceError::InvalidArgument(
                "move_straight needs a non-zero mm_per_sec".into(),
            ));
        }
        let distance = distance_mm as f64;
        let velocity = speed.abs() * distance.signum() * speed.signum();
        self.drive_for(
            "move_straight",
            velocity,
            0.0,
            travel_time(distance.abs(), speed.abs()),
        )
        .await
    }

    async fn spin(&self, angle_deg: f64, degs_per_sec: f64, _extra: &Object) -> Result<()> {
        let angle = require_finite("angle_deg", angle_deg)?;
        let speed = require_finite("degs_per_sec", degs_per_sec)?;
        self.history
            .record("spin", json!({"angle_deg": angle, "degs_per_sec": speed}));
        if angle == 0.0 {
            return Ok(());
        }
        if speed == 0.0 {
            return Err(ResourceError::InvalidArgument(
                "spin needs a non-zero degs_per_sec".into(),
            ));
        }
        let rate = speed.abs() * angle.signum() * speed.signum();
        self.drive_for("spin", 0.0, rate, travel_time(angle.abs(), speed.abs()))
            .await
    }

    async fn set_power(&self, linear: Vector3, angular: Vector3, _extra: &Object) -> Result<()> {
        finite_vector("linear", &linear)?;
        finite_vector("angular", &angular)?;
        if !(-1.0..=1.0).contains(&linear.y) || !(-1.0..=1.0).contains(&angular.z) {
            return Err(ResourceError::InvalidArgument(format!(
                "power must be between -1 and 1, got linear.y={} angular.z={}",
                linear.y, angular.z
            )));
        }
        self.history.record(
            "set_power",
            json!({"linear_y": linear.y, "angular_z": angular.z}),
        );
        self.drive_indefinitely(
            linear.y * self.attributes.max_speed_mm_per_sec,
            angular.z * self.attributes.max_turn_degs_per_sec,
        );
        Ok(())
    }

    async fn set_velocity(&self, linear: Vector3, angular: Vector3, _extra: &Object) -> Result<()> {
        finite_vector("linear", &linear)?;
        finite_vector("angular", &angular)?;
        self.history.record(
            "set_velocity",
            json!({"linear_y": linear.y, "angular_z": angular.z}),
        );
        let max = self.attributes.max_speed_mm_per_sec;
        let max_turn = self.attributes.max_turn_degs_per_sec;
        self.drive_indefinitely(
            linear.y.clamp(-max, max),
            angular.z.clamp(-max_turn, max_turn),
        );
        Ok(())
    }

    async fn properties(&self, _extra: &Object) -> Result<BaseProperties> {
        Ok(BaseProperties {
            width_meters: self.attributes.width_mm / 1000.0,
            turning_radius_meters: 0.0,
            wheel_circumference_meters: self.attributes.wheel_circumference_mm / 1000.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn base() -> FakeBase {
        FakeBase::new("b", &serde_json::from_value(json!({})).unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn move_straight_takes_distance_over_speed_and_odometry_follows() {
        let b = base();
        let none = Object::new();
        let t0 = Instant::now();
        b.move_straight(-300, 150.0, &none).await.unwrap();
        assert_eq!(Instant::now() - t0, Duration::from_secs(2));
        assert!(!b.is_moving().await.unwrap());
        assert_eq!(b.status().await.unwrap()["odometer_mm"], json!(-300.0));
        b.spin(90.0, 45.0, &none).await.unwrap();
        assert_eq!(b.status().await.unwrap()["heading_deg"], json!(90.0));
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    #[tokio::test(start_paused = true)]
    async fn pose_integrates_straight_moves_spins_and_arcs() {
        let b = base();
        let none = Object::new();
        b.move_straight(1000, 500.0, &none).await.unwrap();
        let p = b.pose();
        assert!(close(p.x_mm, 0.0) && close(p.y_mm, 1000.0), "{p:?}");
        // A quarter turn counter-clockwise faces -x; going on moves left.
        b.spin(90.0, 90.0, &none).await.unwrap();
        b.move_straight(500, 500.0, &none).await.unwrap();
        let p = b.pose();
        assert!(close(p.x_mm, -500.0) && close(p.y_mm, 1000.0), "{p:?}");
        assert!(close(p.heading_deg, 90.0), "{p:?}");
        // Driving and turning at once draws an arc: half a circle of radius v/w.
        let b = base();
        let (v, w) = (100.0, 45.0);
        b.set_velocity(
            Vector3 {
                x: 0.0,
                y: v,
                z: 0.0,
            },
            Vector3 {
                x: 0.0,
                y: 0.0,
                z: w,
            },
            &none,
        )
        .await
        .unwrap();
        assert_eq!(b.velocity(), (v, w));
        tokio::time::advance(Duration::from_secs(4)).await;
        let p = b.pose();
        let r = v / w.to_radians();
        assert!(close(p.x_mm, -2.0 * r) && close(p.y_mm, 0.0), "{p:?}");
        assert!(close(p.heading_deg, 180.0), "{p:?}");
        b.stop(&none).await.unwrap();
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(close(b.pose().x_mm, -2.0 * r), "a stopped base stays put");
        assert_eq!(b.velocity(), (0.0, 0.0));
    }

    #[tokio::test(start_paused = true)]
    async fn power_runs_until_stopped() {
        let b = base();
        let none = Object::new();
        let forward = Vector3 {
            x: 0.0,
            y: 0.5,
            z: 0.0,
        };
        b.set_power(forward, Vector3::default(), &none)
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.is_moving().await.unwrap());
        b.stop(&none).await.unwrap();
        assert!(!b.is_moving().await.unwrap());
        assert_eq!(b.status().await.unwrap()["odometer_mm"], json!(2500.0));
        let bad = Vector3 {
            x: 0.0,
            y: 2.0,
            z: 0.0,
        };
        assert!(b.set_power(bad, Vector3::default(), &none).await.is_err());
    }
}
