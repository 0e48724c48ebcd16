//! The movement sensor API (`rdk:component:movement_sensor`,
//! `viam.component.movementsensor.v1.MovementSensorService`): where a robot is on the globe
//! (a GPS fix and altitude), how fast it goes and turns, which way it faces, and how sure the
//! sensor is. Navigation reads it; nothing here moves, so no method is safety-monitored.
//!
//! Its trait, its models (`fake`, in [`fake`]: a GPS that follows a simulated base) and the
//! adapter from the generated service to the trait.

pub mod fake;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;
use tether_proto::viam::common::v1::{self as common, GeoPoint, Orientation, Vector3};
use tether_proto::viam::component::movementsensor::v1 as pb;
use tonic::{Request, Status};

use crate::apis::{
    Adapter, Build, Model, Registration, Reply, limited, ok, readings_response, shared_methods,
};
use crate::convert::struct_to_object;
use crate::machine::Machine;
use crate::resource::{ApiName, Component, Object, Resource, ResourceError, Result};

/// `rdk:component:movement_sensor`.
pub const API: ApiName = ApiName::component("movement_sensor");

/// The movement sensor API's entry in the registry.
pub static REGISTRATION: Registration = Registration {
    api: API,
    proto_service: "viam.component.movementsensor.v1.MovementSensorService",
    models: &[Model {
        name: "fake",
        check: fake::check,
        build: build_fake,
    }],
    serve,
};

/// What a movement sensor can report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Properties {
    pub linear_velocity: bool,
    pub angular_velocity: bool,
    pub orientation: bool,
    pub position: bool,
    pub compass_heading: bool,
    pub linear_acceleration: bool,
}

/// How good its figures are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Accuracy {
    /// Named accuracies (`horizontal_m`, ...).
    pub accuracy: HashMap<String, f32>,
    /// Horizontal dilution of precision.
    pub position_hdop: Option<f32>,
    /// Vertical dilution of precision.
    pub position_vdop: Option<f32>,
    /// NMEA GGA fix quality (1 GPS, 4 RTK fixed, ...).
    pub position_nmea_gga_fix: Option<i32>,
    /// Compass error in degrees.
    pub compass_degrees_error: Option<f32>,
}

/// A movement sensor (`rdk:component:movement_sensor`).
#[async_trait]
pub trait MovementSensor: Component {
    /// Where it is: latitude and longitude in degrees, altitude in metres.
    async fn position(&self, extra: &Object) -> Result<(GeoPoint, f32)>;
    /// Linear velocity in m/s along its axes (y forward, x right, z up).
    async fn linear_velocity(&self, extra: &Object) -> Result<Vector3>;
    /// Angular velocity in degrees per second about its axes (z up, counter-clockwise).
    async fn angular_velocity(&self, extra: &Object) -> Result<Vector3>;
    /// Compass heading: degrees clockwise from north, in [0, 360).
    async fn compass_heading(&self, extra: &Object) -> Result<f64>;
    /// Orientation as an orientation vector in degrees.
    async fn orientation(&self, extra: &Object) -> Result<Orientation>;
    /// Linear acceleration in m/s²; most sensors do not measure it.
    async fn linear_acceleration(&self, _extra: &Object) -> Result<Vector3> {
        Err(ResourceError::Unimplemented(
            "this movement sensor does not measure linear acceleration".into(),
        ))
    }
    /// What it reports.
    async fn properties(&self, extra: &Object) -> Result<Properties>;
    /// How accurate it is.
    async fn accuracy(&self, extra: &Object) -> Result<Accuracy>;
    /// Every supported figure at once, typed as the official SDKs read them.
    async fn readings(&self, extra: &Object) -> Result<Object> {
        standard_readings(self, extra).await
    }
}

/// The readings of every supported figure, keyed and tagged (`_type`) the way Viam's SDKs turn
/// them back into GeoPoints, vectors and orientations.
pub async fn standard_readings<S: MovementSensor + ?Sized>(
    sensor: &S,
    extra: &Object,
) -> Result<Object> {
    let p = sensor.properties(extra).await?;
    let mut out = Object::new();
    if p.position {
        let (point, altitude) = sensor.position(extra).await?;
        out.insert(
            "position".into(),
            json!({"lat": point.latitude, "lng": point.longitude, "_type": "geopoint"}),
        );
        out.insert("altitude".into(), json!(altitude));
    }
    if p.linear_velocity {
        let v = sensor.linear_velocity(extra).await?;
        out.insert(
            "linear_velocity".into(),
            json!({"x": v.x, "y": v.y, "z": v.z, "_type": "vector3"}),
        );
    }
    if p.angular_velocity {
        let v = sensor.angular_velocity(extra).await?;
        out.insert(
            "angular_velocity".into(),
            json!({"x": v.x, "y": v.y, "z": v.z, "_type": "angular_velocity"}),
        );
    }
    if p.compass_heading {
        out.insert(
            "compass".into(),
            json!(sensor.compass_heading(extra).await?),
        );
    }
    if p.orientation {
        let o = sensor.orientation(extra).await?;
        out.insert(
            "orientation".into(),
            json!({"ox": o.o_x, "oy": o.o_y, "oz": o.o_z, "theta": o.theta,
                   "_type": "orientation_vector_degrees"}),
        );
    }
    if p.linear_acceleration {
        let v = sensor.linear_acceleration(extra).await?;
        out.insert(
            "linear_acceleration".into(),
            json!({"x": v.x, "y": v.y, "z": v.z, "_type": "vector3"}),
        );
    }
    Ok(out)
}

/// A resource serving this API from `model`.
pub fn resource<M: MovementSensor>(model: Arc<M>) -> Resource {
    Resource::new(
        model.clone() as Arc<dyn MovementSensor>,
        model.clone(),
        None,
        model,
    )
}

fn build_fake(b: &Build<'_>) -> std::result::Result<Resource, String> {
    Ok(resource(Arc::new(fake::FakeMovementSensor::build(b)?)))
}

fn serve(routes: &mut tonic::service::RoutesBuilder, machine: Arc<Machine>) {
    routes.add_service(limited!(
        pb::movement_sensor_service_server::MovementSensorServiceServer::new(Adapter::new(machine))
    ));
}

impl Adapter {
    fn movement_sensor(&self, name: &str) -> std::result::Result<Arc<dyn MovementSensor>, Status> {
        self.typed::<dyn MovementSensor>(&API, name)
    }
}

#[tonic::async_trait]
impl pb::movement_sensor_service_server::MovementSensorService for Adapter {
    async fn get_linear_velocity(
        &self,
        r: Request<pb::GetLinearVelocityRequest>,
    ) -> Reply<pb::GetLinearVelocityResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let v = self
            .movement_sensor(&r.name)?
            .linear_velocity(&extra)
            .await?;
        ok(pb::GetLinearVelocityResponse {
            linear_velocity: Some(v),
        })
    }

    async fn get_angular_velocity(
        &self,
        r: Request<pb::GetAngularVelocityRequest>,
    ) -> Reply<pb::GetAngularVelocityResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let v = self
            .movement_sensor(&r.name)?
            .angular_velocity(&extra)
            .await?;
        ok(pb::GetAngularVelocityResponse {
            angular_velocity: Some(v),
        })
    }

    async fn get_compass_heading(
        &self,
        r: Request<pb::GetCompassHeadingRequest>,
    ) -> Reply<pb::GetCompassHeadingResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let value = self
            .movement_sensor(&r.name)?
            .compass_heading(&extra)
            .await?;
        ok(pb::GetCompassHeadingResponse { value })
    }

    async fn get_orientation(
        &self,
        r: Request<pb::GetOrientationRequest>,
    ) -> Reply<pb::GetOrientationResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let o = self.movement_sensor(&r.name)?.orientation(&extra).await?;
        ok(pb::GetOrientationResponse {
            orientation: Some(o),
        })
    }

    async fn get_position(
        &self,
        r: Request<pb::GetPositionRequest>,
    ) -> Reply<pb::GetPositionResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let (coordinate, altitude_m) = self.movement_sensor(&r.name)?.position(&extra).await?;
        ok(pb::GetPositionResponse {
            coordinate: Some(coordinate),
            altitude_m,
        })
    }

    async fn get_properties(
        &self,
        r: Request<pb::GetPropertiesRequest>,
    ) -> Reply<pb::GetPropertiesResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let p = self.movement_sensor(&r.name)?.properties(&extra).await?;
        ok(pb::GetPropertiesResponse {
            linear_velocity_supported: p.linear_velocity,
            angular_velocity_supported: p.angular_velocity,
            orientation_supported: p.orientation,
            position_supported: p.position,
            compass_heading_supported: p.compass_heading,
            linear_acceleration_supported: p.linear_acceleration,
        })
    }

    async fn get_accuracy(
        &self,
        r: Request<pb::GetAccuracyRequest>,
    ) -> Reply<pb::GetAccuracyResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let a = self.movement_sensor(&r.name)?.accuracy(&extra).await?;
        ok(pb::GetAccuracyResponse {
            accuracy: a.accuracy,
            position_hdop: a.position_hdop,
            position_vdop: a.position_vdop,
            position_nmea_gga_fix: a.position_nmea_gga_fix,
            compass_degrees_error: a.compass_degrees_error,
        })
    }

    async fn get_linear_acceleration(
        &self,
        r: Request<pb::GetLinearAccelerationRequest>,
    ) -> Reply<pb::GetLinearAccelerationResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let v = self
            .movement_sensor(&r.name)?
            .linear_acceleration(&extra)
            .await?;
        ok(pb::GetLinearAccelerationResponse {
            linear_acceleration: Some(v),
        })
    }

    async fn get_readings(
        &self,
        r: Request<common::GetReadingsRequest>,
    ) -> Reply<common::GetReadingsResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let readings = self.movement_sensor(&r.name)?.readings(&extra).await?;
        readings_response(readings)
    }

    shared_methods!(API, do_command, get_status, get_geometries);
}
