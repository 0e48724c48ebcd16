//! The typed client of the generic API (`rdk:component:generic`).

use tether_proto::viam::component::generic::v1 as generic;

use crate::RobotChannel;

component!(
    /// A generic component on the machine: its API is `do_command`.
    Generic,
    generic::generic_service_client::GenericServiceClient<RobotChannel>
);
