//! Typed clients for every component API, and the robot service's helpers.
//!
//! Each wrapper (`Motor::from_robot(&robot, "left")`) names one resource and offers the API's
//! calls as async methods named like the Python SDK's, taking and returning plain Rust values
//! (`extra` is always sent empty). For anything the wrapper leaves out, [`Motor::client`] and its
//! siblings hand out the generated gRPC client on the same [`RobotChannel`].

use std::collections::HashMap;

use prost_types::{Struct, Value};
use tether_proto::viam::common::v1 as common;
use tether_proto::viam::component::{
    arm::v1 as arm, base::v1 as base, button::v1 as button, camera::v1 as camera,
    gantry::v1 as gantry, generic::v1 as generic, gripper::v1 as gripper, motor::v1 as motor,
    sensor::v1 as sensor, servo::v1 as servo, switch::v1 as switch,
};
use tether_proto::viam::robot::v1 as robot;

use crate::{ClientError, RobotChannel, RobotClient};

/// A pose: position in millimetres, orientation as an orientation vector in degrees.
pub use tether_proto::viam::common::v1::Pose;
/// A 3-vector (linear or angular power and velocity for a base).
pub use tether_proto::viam::common::v1::Vector3;

/// Defines a wrapper struct holding a resource name and its generated client, with
/// `from_robot`, `name`, `client` and `do_command`; each wrapper adds its own calls below.
macro_rules! component {
    ($(#[$doc:meta])* $wrapper:ident, $client:ty) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $wrapper {
            name: String,
            client: $client,
        }

        impl $wrapper {
            /// The resource named `name` on `robot`.
            pub fn from_robot(robot: &RobotClient, name: &str) -> Self {
                Self {
                    name: name.to_string(),
                    client: <$client>::new(robot.channel().clone()),
                }
            }

            /// The resource's name.
            pub fn name(&self) -> &str {
                &self.name
            }

            /// The generated gRPC client, for every method of the API.
            pub fn client(&self) -> $client {
                self.client.clone()
            }

            /// Sends a model-specific command and returns the model's answer.
            pub async fn do_command(&mut self, command: Struct) -> Result<Struct, ClientError> {
                Ok(self
                    .client
                    .do_command(common::DoCommandRequest {
                        name: self.name.clone(),
                        command: Some(command),
                    })
                    .await?
                    .into_inner()
                    .result
                    .unwrap_or_default())
            }
        }
    };
}

/// Adds `stop` and `is_moving`, which every actuator API has with the same shape.
macro_rules! actuator {
    ($wrapper:ident, $api:ident) => {
        impl $wrapper {
            /// Stops all motion.
            pub async fn stop(&mut self) -> Result<(), ClientError> {
                self.client
                    .stop($api::StopRequest {
                        name: self.name.clone(),
                        extra: None,
                    })
                    .await?;
                Ok(())
            }

            /// Whether it is moving.
            pub async fn is_moving(&mut self) -> Result<bool, ClientError> {
                Ok(self
                    .client
                    .is_moving($api::IsMovingRequest {
                        name: self.name.clone(),
                    })
                    .await?
                    .into_inner()
                    .is_moving)
            }
        }
    };
}

actuator!(Arm, arm);
actuator!(Base, base);
actuator!(Gantry, gantry);
actuator!(Gripper, gripper);
actuator!(Motor, motor);
actuator!(Servo, servo);

component!(
    /// An arm on the machine.
    Arm,
    arm::arm_service_client::ArmServiceClient<RobotChannel>
);

impl Arm {
    /// The end effector's pose.
    pub async fn end_position(&mut self) -> Result<Pose, ClientError> {
        Ok(self
            .client
            .get_end_position(arm::GetEndPositionRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner()
            .pose
            .unwrap_or_default())
    }

    /// Moves the end effector to `pose`, returning when there.
    pub async fn move_to_position(&mut self, pose: Pose) -> Result<(), ClientError> {
        self.client
            .move_to_position(arm::MoveToPositionRequest {
                name: self.name.clone(),
                to: Some(pose),
                extra: None,
            })
            .await?;
        Ok(())
    }

    /// Joint positions, in degrees (or millimetres for prismatic joints).
    pub async fn joint_positions(&mut self) -> Result<Vec<f64>, ClientError> {
        Ok(self
            .client
            .get_joint_positions(arm::GetJointPositionsRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner()
            .positions
            .map(|p| p.values)
            .unwrap_or_default())
    }

    /// Moves every joint to `positions`, returning when there.
    pub async fn move_to_joint_positions(&mut self, positions: &[f64]) -> Result<(), ClientError> {
        self.client
            .move_to_joint_positions(arm::MoveToJointPositionsRequest {
                name: self.name.clone(),
                positions: Some(arm::JointPositions {
                    values: positions.to_vec(),
                }),
                extra: None,
            })
            .await?;
        Ok(())
    }
}

component!(
    /// A mobile base on the machine.
    Base,
    base::base_service_client::BaseServiceClient<RobotChannel>
);

impl Base {
    /// Drives `distance_mm` straight (negative: backwards) at `mm_per_sec`, returning when done.
    pub async fn move_straight(
        &mut self,
        distance_mm: i64,
        mm_per_sec: f64,
    ) -> Result<(), ClientError> {
        self.client
            .move_straight(base::MoveStraightRequest {
                name: self.name.clone(),
                distance_mm,
                mm_per_sec,
                extra: None,
            })
            .await?;
        Ok(())
    }

    /// Turns `angle_deg` in place at `degs_per_sec`, returning when done.
    pub async fn spin(&mut self, angle_deg: f64, degs_per_sec: f64) -> Result<(), ClientError> {
        self.client
            .spin(base::SpinRequest {
                name: self.name.clone(),
                angle_deg,
                degs_per_sec,
                extra: None,
            })
            .await?;
        Ok(())
    }

    /// Runs at linear and angular power, each component in [-1, 1], until told otherwise.
    pub async fn set_power(
        &mut self,
        linear: Vector3,
        angular: Vector3,
    ) -> Result<(), ClientError> {
        self.client
            .set_power(base::SetPowerRequest {
                name: self.name.clone(),
                linear: Some(linear),
                angular: Some(angular),
                extra: None,
            })
            .await?;
        Ok(())
    }

    /// Runs at linear (mm/s) and angular (degrees/s) velocity until told otherwise.
    pub async fn set_velocity(
        &mut self,
        linear: Vector3,
        angular: Vector3,
    ) -> Result<(), ClientError> {
        self.client
            .set_velocity(base::SetVelocityRequest {
                name: self.name.clone(),
                linear: Some(linear),
                angular: Some(angular),
                extra: None,
            })
            .await?;
        Ok(())
    }

    /// Width, turning radius and wheel circumference, in metres.
    pub async fn properties(&mut self) -> Result<base::GetPropertiesResponse, ClientError> {
        Ok(self
            .client
            .get_properties(base::GetPropertiesRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner())
    }
}

component!(
    /// A button on the machine.
    Button,
    button::button_service_client::ButtonServiceClient<RobotChannel>
);

impl Button {
    /// Pushes it.
    pub async fn push(&mut self) -> Result<(), ClientError> {
        self.client
            .push(button::PushRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?;
        Ok(())
    }
}

/// One image from a camera.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedImage {
    /// The camera source it came from.
    pub source_name: String,
    /// Its MIME type, e.g. `image/png`.
    pub mime_type: String,
    /// The encoded image.
    pub data: Vec<u8>,
}

component!(
    /// A camera on the machine.
    Camera,
    camera::camera_service_client::CameraServiceClient<RobotChannel>
);

impl Camera {
    /// One image from each of the camera's sources.
    pub async fn images(&mut self) -> Result<Vec<NamedImage>, ClientError> {
        Ok(self
            .client
            .get_images(camera::GetImagesRequest {
                name: self.name.clone(),
                filter_source_names: vec![],
                extra: None,
            })
            .await?
            .into_inner()
            .images
            .into_iter()
            .map(|image| NamedImage {
                source_name: image.source_name,
                mime_type: image.mime_type,
                data: image.image,
            })
            .collect())
    }

    /// Intrinsics, supported MIME types and whether it produces point clouds.
    pub async fn properties(&mut self) -> Result<camera::GetPropertiesResponse, ClientError> {
        Ok(self
            .client
            .get_properties(camera::GetPropertiesRequest {
                name: self.name.clone(),
            })
            .await?
            .into_inner())
    }
}

component!(
    /// A gantry on the machine.
    Gantry,
    gantry::gantry_service_client::GantryServiceClient<RobotChannel>
);

impl Gantry {
    /// Position of each axis, in millimetres.
    pub async fn position(&mut self) -> Result<Vec<f64>, ClientError> {
        Ok(self
            .client
            .get_position(gantry::GetPositionRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner()
            .positions_mm)
    }

    /// Moves each axis to `positions_mm` at `speeds_mm_per_sec`, returning when there.
    pub async fn move_to_position(
        &mut self,
        positions_mm: &[f64],
        speeds_mm_per_sec: &[f64],
    ) -> Result<(), ClientError> {
        self.client
            .move_to_position(gantry::MoveToPositionRequest {
                name: self.name.clone(),
                positions_mm: positions_mm.to_vec(),
                speeds_mm_per_sec: speeds_mm_per_sec.to_vec(),
                extra: None,
            })
            .await?;
        Ok(())
    }

    /// Homes every axis; returns whether it homed.
    pub async fn home(&mut self) -> Result<bool, ClientError> {
        Ok(self
            .client
            .home(gantry::HomeRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner()
            .homed)
    }

    /// Length of each axis, in millimetres.
    pub async fn lengths(&mut self) -> Result<Vec<f64>, ClientError> {
        Ok(self
            .client
            .get_lengths(gantry::GetLengthsRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner()
            .lengths_mm)
    }
}

component!(
    /// A generic component on the machine: its API is `do_command`.
    Generic,
    generic::generic_service_client::GenericServiceClient<RobotChannel>
);

component!(
    /// A gripper on the machine.
    Gripper,
    gripper::gripper_service_client::GripperServiceClient<RobotChannel>
);

impl Gripper {
    /// Opens, returning when open.
    pub async fn open(&mut self) -> Result<(), ClientError> {
        self.client
            .open(gripper::OpenRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?;
        Ok(())
    }

    /// Closes until it grabs something or is fully closed; returns whether it grabbed.
    pub async fn grab(&mut self) -> Result<bool, ClientError> {
        Ok(self
            .client
            .grab(gripper::GrabRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner()
            .success)
    }

    /// Whether it is holding something.
    pub async fn is_holding_something(&mut self) -> Result<bool, ClientError> {
        Ok(self
            .client
            .is_holding_something(gripper::IsHoldingSomethingRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner()
            .is_holding_something)
    }
}

component!(
    /// A motor on the machine.
    Motor,
    motor::motor_service_client::MotorServiceClient<RobotChannel>
);

impl Motor {
    /// Runs at a fraction of full power in [-1, 1].
    pub async fn set_power(&mut self, power_pct: f64) -> Result<(), ClientError> {
        self.client
            .set_power(motor::SetPowerRequest {
                name: self.name.clone(),
                power_pct,
                extra: None,
            })
            .await?;
        Ok(())
    }

    /// Turns `revolutions` at `rpm`, returning when done.
    pub async fn go_for(&mut self, rpm: f64, revolutions: f64) -> Result<(), ClientError> {
        self.client
            .go_for(motor::GoForRequest {
                name: self.name.clone(),
                rpm,
                revolutions,
                extra: None,
            })
            .await?;
        Ok(())
    }

    /// Turns to `position_revolutions` at `rpm`, returning when there.
    pub async fn go_to(&mut self, rpm: f64, position_revolutions: f64) -> Result<(), ClientError> {
        self.client
            .go_to(motor::GoToRequest {
                name: self.name.clone(),
                rpm,
                position_revolutions,
                extra: None,
            })
            .await?;
        Ok(())
    }

    /// Runs at `rpm` until told otherwise.
    pub async fn set_rpm(&mut self, rpm: f64) -> Result<(), ClientError> {
        self.client
            .set_rpm(motor::SetRpmRequest {
                name: self.name.clone(),
                rpm,
                extra: None,
            })
            .await?;
        Ok(())
    }

    /// Makes the current position read as `offset` revolutions.
    pub async fn reset_zero_position(&mut self, offset: f64) -> Result<(), ClientError> {
        self.client
            .reset_zero_position(motor::ResetZeroPositionRequest {
                name: self.name.clone(),
                offset,
                extra: None,
            })
            .await?;
        Ok(())
    }

    /// Position in revolutions.
    pub async fn position(&mut self) -> Result<f64, ClientError> {
        Ok(self
            .client
            .get_position(motor::GetPositionRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner()
            .position)
    }

    /// Whether it reports its position.
    pub async fn properties(&mut self) -> Result<motor::GetPropertiesResponse, ClientError> {
        Ok(self
            .client
            .get_properties(motor::GetPropertiesRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner())
    }

    /// Whether it is powered, and at what fraction of full power.
    pub async fn is_powered(&mut self) -> Result<(bool, f64), ClientError> {
        let response = self
            .client
            .is_powered(motor::IsPoweredRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner();
        Ok((response.is_on, response.power_pct))
    }
}

component!(
    /// A sensor on the machine.
    Sensor,
    sensor::sensor_service_client::SensorServiceClient<RobotChannel>
);

impl Sensor {
    /// The current readings, by name.
    pub async fn readings(&mut self) -> Result<HashMap<String, Value>, ClientError> {
        Ok(self
            .client
            .get_readings(common::GetReadingsRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner()
            .readings)
    }
}

component!(
    /// A servo on the machine.
    Servo,
    servo::servo_service_client::ServoServiceClient<RobotChannel>
);

impl Servo {
    /// Turns to `angle_deg`, returning when there.
    pub async fn move_to(&mut self, angle_deg: u32) -> Result<(), ClientError> {
        self.client
            .r#move(servo::MoveRequest {
                name: self.name.clone(),
                angle_deg,
                extra: None,
            })
            .await?;
        Ok(())
    }

    /// Angle in degrees.
    pub async fn position(&mut self) -> Result<u32, ClientError> {
        Ok(self
            .client
            .get_position(servo::GetPositionRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner()
            .position_deg)
    }
}

component!(
    /// A switch on the machine.
    Switch,
    switch::switch_service_client::SwitchServiceClient<RobotChannel>
);

impl Switch {
    /// Sets it to `position`, counted from 0.
    pub async fn set_position(&mut self, position: u32) -> Result<(), ClientError> {
        self.client
            .set_position(switch::SetPositionRequest {
                name: self.name.clone(),
                position,
                extra: None,
            })
            .await?;
        Ok(())
    }

    /// The current position, counted from 0.
    pub async fn position(&mut self) -> Result<u32, ClientError> {
        Ok(self
            .client
            .get_position(switch::GetPositionRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner()
            .position)
    }

    /// How many positions it has, and their labels (possibly none).
    pub async fn number_of_positions(&mut self) -> Result<(u32, Vec<String>), ClientError> {
        let response = self
            .client
            .get_number_of_positions(switch::GetNumberOfPositionsRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner();
        Ok((response.number_of_positions, response.labels))
    }
}

/// Robot-service helpers.
impl RobotClient {
    /// The machine's platform, version and API version.
    pub async fn version(&self) -> Result<robot::GetVersionResponse, ClientError> {
        Ok(self
            .robot()
            .get_version(robot::GetVersionRequest {})
            .await?
            .into_inner())
    }

    /// The machine's state and each resource's status.
    pub async fn machine_status(&self) -> Result<robot::GetMachineStatusResponse, ClientError> {
        Ok(self
            .robot()
            .get_machine_status(robot::GetMachineStatusRequest {})
            .await?
            .into_inner())
    }

    /// The calls running on the machine now.
    pub async fn operations(&self) -> Result<Vec<robot::Operation>, ClientError> {
        Ok(self
            .robot()
            .get_operations(robot::GetOperationsRequest {})
            .await?
            .into_inner()
            .operations)
    }

    /// Cancels the running operation `id`; its call fails with `CANCELLED`.
    pub async fn cancel_operation(&self, id: &str) -> Result<(), ClientError> {
        self.robot()
            .cancel_operation(robot::CancelOperationRequest { id: id.to_string() })
            .await?;
        Ok(())
    }

    /// Waits until operation `id` has finished.
    pub async fn block_for_operation(&self, id: &str) -> Result<(), ClientError> {
        self.robot()
            .block_for_operation(robot::BlockForOperationRequest { id: id.to_string() })
            .await?;
        Ok(())
    }

    /// The machine's active sessions.
    pub async fn sessions(&self) -> Result<Vec<robot::Session>, ClientError> {
        Ok(self
            .robot()
            .get_sessions(robot::GetSessionsRequest {})
            .await?
            .into_inner()
            .sessions)
    }
}
