//! The fake servo: an angle within configured limits, reached at a bounded speed.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use super::Servo;
use crate::resource::{Object, ResourceError, Result};
use crate::sim::{Axes, travel_time};

/// Attributes of a fake servo.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FakeServoAttributes {
    /// Lowest angle in degrees (default 0).
    #[serde(default)]
    pub min_angle_deg: u32,
    /// Highest angle in degrees (default 180).
    #[serde(default = "default_max")]
    pub max_angle_deg: u32,
    /// Angle at start-up (default 0).
    #[serde(default)]
    pub starting_position_deg: u32,
    /// Speed in degrees per second (default 600).
    #[serde(default = "default_speed")]
    pub speed_degs_per_sec: f64,
}

fn default_max() -> u32 {
    180
}
fn default_speed() -> f64 {
    600.0
}

impl crate::apis::Attributes for FakeServoAttributes {
    fn validate(&self) -> std::result::Result<(), String> {
        if self.min_angle_deg > self.max_angle_deg {
            return Err("min_angle_deg must not exceed max_angle_deg".into());
        }
        if !(self.min_angle_deg..=self.max_angle_deg).contains(&self.starting_position_deg) {
            return Err(
                "starting_position_deg must be within [min_angle_deg, max_angle_deg]".into(),
            );
        }
        if !(self.speed_degs_per_sec.is_finite() && self.speed_degs_per_sec > 0.0) {
            return Err("speed_degs_per_sec must be a positive number".into());
        }
        Ok(())
    }
}

/// A simulated servo.
#[derive(Debug)]
pub struct FakeServo {
    angle: Axes,
    min: u32,
    max: u32,
    speed: f64,
}

impl FakeServo {
    /// A servo at its starting position.
    pub fn new(name: &str, attributes: &FakeServoAttributes) -> Self {
        Self {
            angle: Axes::new(name, vec![f64::from(attributes.starting_position_deg)]),
            min: attributes.min_angle_deg,
            max: attributes.max_angle_deg,
            speed: attributes.speed_degs_per_sec,
        }
    }
}

crate::sim::axes_actuator!(FakeServo, angle);

#[async_trait]
impl Servo for FakeServo {
    async fn move_to(&self, angle_deg: u32, _extra: &Object) -> Result<()> {
        if !(self.min..=self.max).contains(&angle_deg) {
            return Err(ResourceError::InvalidArgument(format!(
                "angle {angle_deg}° is outside [{}, {}]°",
                self.min, self.max
            )));
        }
        let speed = self.speed;
        self.angle
            .move_to(
                "move",
                json!({"angle_deg": angle_deg}),
                vec![f64::from(angle_deg)],
                |a, b| travel_time((b[0] - a[0]).abs(), speed),
            )
            .await
    }

    async fn position(&self, _extra: &Object) -> Result<u32> {
        // Angles are whole degrees on the wire.
        Ok(self.angle.position()[0].round().max(0.0) as u32)
    }
}
