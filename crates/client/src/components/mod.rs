//! Typed clients: one module per component API, like the machine's API registry.
//!
//! Each wrapper (`Motor::from_robot(&robot, "left")`) names one resource and offers the API's
//! calls as async methods named like the Python SDK's, taking and returning plain Rust values
//! (`extra` is always sent empty). For anything the wrapper leaves out, [`Motor::client`] and its
//! siblings hand out the generated gRPC client on the same [`RobotChannel`].

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
            pub fn from_robot(robot: &$crate::RobotClient, name: &str) -> Self {
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
            pub async fn do_command(
                &mut self,
                command: prost_types::Struct,
            ) -> Result<prost_types::Struct, $crate::ClientError> {
                Ok(self
                    .client
                    .do_command(tether_proto::viam::common::v1::DoCommandRequest {
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
            pub async fn stop(&mut self) -> Result<(), $crate::ClientError> {
                self.client
                    .stop($api::StopRequest {
                        name: self.name.clone(),
                        extra: None,
                    })
                    .await?;
                Ok(())
            }

            /// Whether it is moving.
            pub async fn is_moving(&mut self) -> Result<bool, $crate::ClientError> {
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

mod arm;
mod base;
mod button;
mod camera;
mod gantry;
mod generic;
mod gripper;
mod motor;
mod movement_sensor;
mod sensor;
mod servo;
mod switch;

pub use arm::Arm;
pub use base::Base;
pub use button::Button;
pub use camera::Camera;
pub use gantry::Gantry;
pub use generic::Generic;
pub use gripper::Gripper;
pub use motor::Motor;
pub use movement_sensor::MovementSensor;
pub use sensor::Sensor;
pub use servo::Servo;
pub use switch::Switch;
