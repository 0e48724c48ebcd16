//! The fake movement sensor: a GPS and compass riding on a simulated base.
//!
//! Configured with the base it rides on and where that base started (`origin`: latitude,
//! longitude, and the compass heading its front faced), it turns the base's integrated pose
//! (x to the right, y forward, heading counter-clockwise, in the base's start frame) into a fix
//! on the globe, so driving the base moves the GPS fix plausibly: forward at heading 0 goes
//! north, a left spin lowers the compass heading. Without a base it stands still at its
//! origin. The globe is treated as locally flat around the origin (an equirectangular
//! projection on a sphere of the Earth's mean radius), which is exact to well under a
//! centimetre over the few kilometres a simulated rover drives.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use tether_proto::viam::common::v1::{GeoPoint, Orientation, Vector3};

use super::{Accuracy, MovementSensor, Properties};
use crate::apis::base::fake::{FakeBase, PlanarPose};
use crate::apis::{Attributes, Build, Dependency, attributes};
use crate::resource::{Component, Object, ResourceName, Result};
use crate::sim::History;

/// The Earth's mean radius, metres.
const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Where the base started.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Origin {
    /// Degrees north, in [-90, 90] (default 40.7406, a Manhattan block).
    #[serde(default = "default_latitude")]
    pub latitude: f64,
    /// Degrees east, in [-180, 180] (default -73.9880).
    #[serde(default = "default_longitude")]
    pub longitude: f64,
    /// Compass heading the base faced at the start: degrees clockwise from north (default 0).
    #[serde(default)]
    pub heading: f64,
}

fn default_latitude() -> f64 {
    40.7406
}
fn default_longitude() -> f64 {
    -73.9880
}

impl Default for Origin {
    fn default() -> Self {
        Self {
            latitude: default_latitude(),
            longitude: default_longitude(),
            heading: 0.0,
        }
    }
}

/// Attributes of a fake movement sensor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FakeMovementSensorAttributes {
    /// The fake base it rides on (none: it stands still at `origin`).
    #[serde(default)]
    pub base: Option<String>,
    /// Where the base started.
    #[serde(default)]
    pub origin: Origin,
    /// Altitude reported, metres (default 10).
    #[serde(default = "default_altitude")]
    pub altitude_m: f32,
    /// Horizontal accuracy reported, metres (default 0.5).
    #[serde(default = "default_accuracy")]
    pub horizontal_accuracy_m: f32,
}

fn default_altitude() -> f32 {
    10.0
}
fn default_accuracy() -> f32 {
    0.5
}

impl Attributes for FakeMovementSensorAttributes {
    fn validate(&self) -> std::result::Result<(), String> {
        let o = &self.origin;
        if !(o.latitude.is_finite() && (-90.0..=90.0).contains(&o.latitude)) {
            return Err(format!(
                "origin.latitude must be in [-90, 90], got {}",
                o.latitude
            ));
        }
        // Near the poles a degree of longitude shrinks to nothing; the flat-globe model with it.
        if o.latitude.abs() > 85.0 {
            return Err(format!(
                "origin.latitude must be within 85 degrees of the equator, got {}",
                o.latitude
            ));
        }
        if !(o.longitude.is_finite() && (-180.0..=180.0).contains(&o.longitude)) {
            return Err(format!(
                "origin.longitude must be in [-180, 180], got {}",
                o.longitude
            ));
        }
        if !o.heading.is_finite() {
            return Err(format!(
                "origin.heading must be a number, got {}",
                o.heading
            ));
        }
        if !self.altitude_m.is_finite() {
            return Err(format!(
                "altitude_m must be a number, got {}",
                self.altitude_m
            ));
        }
        if !(self.horizontal_accuracy_m.is_finite() && self.horizontal_accuracy_m > 0.0) {
            return Err(format!(
                "horizontal_accuracy_m must be a positive number, got {}",
                self.horizontal_accuracy_m
            ));
        }
        if self.base.as_deref() == Some("") {
            return Err("base must name a configured fake base".into());
        }
        Ok(())
    }
}

/// Checks the attributes; a configured base must be a fake base.
pub fn check(value: &Value) -> std::result::Result<Vec<Dependency>, String> {
    let a = attributes::<FakeMovementSensorAttributes>(value)?;
    Ok(a.base
        .into_iter()
        .map(|base| Dependency {
            name: ResourceName::new(crate::apis::base::API, base),
            model: Some("fake"),
        })
        .collect())
}

/// A fix on the globe and the compass heading, for a base at `pose` that started at `origin`.
pub fn fix(origin: &Origin, pose: PlanarPose) -> (GeoPoint, f64) {
    let h0 = origin.heading.to_radians();
    let (x, y) = (pose.x_mm / 1000.0, pose.y_mm / 1000.0);
    let east = x * h0.cos() + y * h0.sin();
    let north = -x * h0.sin() + y * h0.cos();
    let latitude = origin.latitude + (north / EARTH_RADIUS_M).to_degrees();
    let longitude = origin.longitude
        + (east / (EARTH_RADIUS_M * origin.latitude.to_radians().cos())).to_degrees();
    let compass = (origin.heading - pose.heading_deg).rem_euclid(360.0);
    (
        GeoPoint {
            latitude,
            longitude: (longitude + 180.0).rem_euclid(360.0) - 180.0,
        },
        compass,
    )
}

/// The distance in metres between two nearby fixes (on the same flat patch of globe).
pub fn distance_m(a: &GeoPoint, b: &GeoPoint) -> f64 {
    let north = (b.latitude - a.latitude).to_radians() * EARTH_RADIUS_M;
    let east =
        (b.longitude - a.longitude).to_radians() * EARTH_RADIUS_M * a.latitude.to_radians().cos();
    north.hypot(east)
}

/// A simulated movement sensor.
pub struct FakeMovementSensor {
    attributes: FakeMovementSensorAttributes,
    base: Option<Arc<FakeBase>>,
    history: History,
}

impl FakeMovementSensor {
    /// Builds it from config, on the base it names.
    pub fn build(b: &Build<'_>) -> std::result::Result<Self, String> {
        let attributes = b.attributes::<FakeMovementSensorAttributes>()?;
        let base = match &attributes.base {
            Some(name) => Some(b.dependency::<FakeBase>(&crate::apis::base::API, name)?),
            None => None,
        };
        Ok(Self::new(b.name, attributes, base))
    }

    /// A sensor riding on `base` (standing still at the origin without one).
    pub fn new(
        name: &str,
        attributes: FakeMovementSensorAttributes,
        base: Option<Arc<FakeBase>>,
    ) -> Self {
        Self {
            attributes,
            base,
            history: History::new(name),
        }
    }

    fn pose(&self) -> PlanarPose {
        self.base.as_ref().map_or(
            PlanarPose {
                x_mm: 0.0,
                y_mm: 0.0,
                heading_deg: 0.0,
            },
            |b| b.pose(),
        )
    }

    fn velocity(&self) -> (f64, f64) {
        self.base.as_ref().map_or((0.0, 0.0), |b| b.velocity())
    }
}

#[async_trait]
impl Component for FakeMovementSensor {
    async fn do_command(&self, command: Object) -> Result<Object> {
        crate::sim::do_command(&self.history, command)
    }

    async fn status(&self) -> Result<Object> {
        let (point, compass) = fix(&self.attributes.origin, self.pose());
        let mut o = Object::new();
        o.insert("latitude".into(), json!(point.latitude));
        o.insert("longitude".into(), json!(point.longitude));
        o.insert("compass_heading".into(), json!(compass));
        o.insert("base".into(), json!(self.attributes.base));
        Ok(o)
    }
}

#[async_trait]
impl MovementSensor for FakeMovementSensor {
    async fn position(&self, _extra: &Object) -> Result<(GeoPoint, f32)> {
        let (point, _) = fix(&self.attributes.origin, self.pose());
        Ok((point, self.attributes.altitude_m))
    }

    async fn linear_velocity(&self, _extra: &Object) -> Result<Vector3> {
        let (mm_per_sec, _) = self.velocity();
        Ok(Vector3 {
            x: 0.0,
            y: mm_per_sec / 1000.0,
            z: 0.0,
        })
    }

    async fn angular_velocity(&self, _extra: &Object) -> Result<Vector3> {
        let (_, degs_per_sec) = self.velocity();
        Ok(Vector3 {
            x: 0.0,
            y: 0.0,
            z: degs_per_sec,
        })
    }

    async fn compass_heading(&self, _extra: &Object) -> Result<f64> {
        Ok(fix(&self.attributes.origin, self.pose()).1)
    }

    /// Upright, turned about z: theta is the heading counter-clockwise from north, in
    /// (-180, 180].
    async fn orientation(&self, _extra: &Object) -> Result<Orientation> {
        let compass = fix(&self.attributes.origin, self.pose()).1;
        let mut theta = (-compass).rem_euclid(360.0);
        if theta > 180.0 {
            theta -= 360.0;
        }
        Ok(Orientation {
            o_x: 0.0,
            o_y: 0.0,
            o_z: 1.0,
            theta,
        })
    }

    async fn properties(&self, _extra: &Object) -> Result<Properties> {
        Ok(Properties {
            linear_velocity: true,
            angular_velocity: true,
            orientation: true,
            position: true,
            compass_heading: true,
            linear_acceleration: false,
        })
    }

    async fn accuracy(&self, _extra: &Object) -> Result<Accuracy> {
        let h = self.attributes.horizontal_accuracy_m;
        Ok(Accuracy {
            accuracy: [
                ("horizontal_m".to_string(), h),
                ("vertical_m".to_string(), 2.0 * h),
            ]
            .into_iter()
            .collect(),
            position_hdop: Some(1.0),
            position_vdop: Some(1.5),
            position_nmea_gga_fix: Some(1),
            compass_degrees_error: Some(1.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apis::base::Base;
    use crate::apis::base::fake::FakeBaseAttributes;
    use crate::resource::Actuator;
    use std::time::Duration;
    use tether_proto::viam::common::v1::Vector3;

    fn origin(heading: f64) -> Origin {
        Origin {
            latitude: 40.0,
            longitude: -74.0,
            heading,
        }
    }

    fn pose(x_mm: f64, y_mm: f64, heading_deg: f64) -> PlanarPose {
        PlanarPose {
            x_mm,
            y_mm,
            heading_deg,
        }
    }

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn forward_goes_the_way_the_origin_faces() {
        let start = fix(&origin(0.0), pose(0.0, 0.0, 0.0)).0;
        // Facing north: 100 m forward is 100 m north, ~0.000899 degrees of latitude.
        let (p, compass) = fix(&origin(0.0), pose(0.0, 100_000.0, 0.0));
        assert!(close(p.latitude - 40.0, 100.0 / 111_195.0, 1e-7), "{p:?}");
        assert!(close(p.longitude, -74.0, 1e-12), "{p:?}");
        assert!(close(distance_m(&start, &p), 100.0, 1e-6));
        assert_eq!(compass, 0.0);
        // Facing east: forward is east, right is south.
        let (p, compass) = fix(&origin(90.0), pose(50_000.0, 100_000.0, 0.0));
        assert!(p.longitude > -74.0 && p.latitude < 40.0, "{p:?}");
        let east = (p.longitude + 74.0).to_radians() * EARTH_RADIUS_M * 40f64.to_radians().cos();
        let north = (p.latitude - 40.0).to_radians() * EARTH_RADIUS_M;
        assert!(
            close(east, 100.0, 1e-6) && close(north, -50.0, 1e-6),
            "{east} {north}"
        );
        assert_eq!(compass, 90.0);
    }

    #[test]
    fn a_left_turn_lowers_the_compass_heading() {
        let (_, compass) = fix(&origin(10.0), pose(0.0, 0.0, 90.0));
        assert!(close(compass, 280.0, 1e-9));
        let (_, compass) = fix(&origin(350.0), pose(0.0, 0.0, -20.0));
        assert!(close(compass, 10.0, 1e-9));
    }

    #[test]
    fn longitude_wraps_at_the_antimeridian() {
        let o = Origin {
            latitude: 0.0,
            longitude: 179.9999,
            heading: 90.0,
        };
        let (p, _) = fix(&o, pose(0.0, 100_000.0, 0.0));
        assert!(p.longitude < -179.0, "{p:?}");
    }

    #[test]
    fn bad_attributes_are_refused_with_the_field() {
        let err = |v: Value| attributes::<FakeMovementSensorAttributes>(&v).unwrap_err();
        assert!(err(json!({"origin": {"latitude": 91}})).contains("origin.latitude"));
        assert!(err(json!({"origin": {"longitude": -181}})).contains("origin.longitude"));
        assert!(err(json!({"horizontal_accuracy_m": 0})).contains("horizontal_accuracy_m"));
        assert!(err(json!({"base": ""})).contains("base"));
        assert!(err(json!({"colour": "red"})).contains("unknown field"));
        let deps = check(&json!({"base": "rover"})).unwrap();
        assert_eq!(deps[0].name.to_string(), "rdk:component:base/rover");
        assert_eq!(deps[0].model, Some("fake"));
        assert!(check(&json!({})).unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_fix_follows_the_base_as_it_drives() {
        let base_attributes: FakeBaseAttributes = serde_json::from_value(json!({})).unwrap();
        let base = Arc::new(FakeBase::new("base", &base_attributes));
        let attributes: FakeMovementSensorAttributes = serde_json::from_value(
            json!({"base": "base", "origin": {"latitude": 40.0, "longitude": -74.0}}),
        )
        .unwrap();
        let gps = FakeMovementSensor::new("gps", attributes, Some(base.clone()));
        let none = Object::new();
        let (start, _) = gps.position(&none).await.unwrap();
        assert_eq!((start.latitude, start.longitude), (40.0, -74.0));

        // North at 0.5 m/s: after 2 s the fix is 1 m along and the speed shows.
        let forward = Vector3 {
            x: 0.0,
            y: 500.0,
            z: 0.0,
        };
        base.set_velocity(forward, Vector3::default(), &none)
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        let (mid, _) = gps.position(&none).await.unwrap();
        assert!(close(distance_m(&start, &mid), 1.0, 1e-6));
        assert!(mid.latitude > start.latitude);
        assert!(close(
            gps.linear_velocity(&none).await.unwrap().y,
            0.5,
            1e-12
        ));
        base.stop(&none).await.unwrap();
        assert_eq!(gps.linear_velocity(&none).await.unwrap().y, 0.0);

        // Spin 90 degrees left (compass 270: facing west), then 1 m forward goes west.
        base.spin(90.0, 90.0, &none).await.unwrap();
        assert!(close(
            gps.compass_heading(&none).await.unwrap(),
            270.0,
            1e-9
        ));
        base.move_straight(1000, 500.0, &none).await.unwrap();
        let (end, _) = gps.position(&none).await.unwrap();
        assert!(end.longitude < start.longitude);
        assert!(close(distance_m(&mid, &end), 1.0, 1e-6));
        assert!(close(distance_m(&start, &end), 2f64.sqrt(), 1e-6));

        let readings = gps.readings(&none).await.unwrap();
        assert_eq!(readings["position"]["_type"], "geopoint");
        assert_eq!(
            readings["compass"],
            json!(gps.compass_heading(&none).await.unwrap())
        );
        assert_eq!(readings["angular_velocity"]["_type"], "angular_velocity");
        assert!(!readings.contains_key("linear_acceleration"));
        assert!(gps.linear_acceleration(&none).await.is_err());
    }
}
