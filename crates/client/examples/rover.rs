//! Drives the demo rover (`cargo run --release -- serve`) with the Rust client SDK:
//!
//!     cargo run --release -p tether-client --example rover [ADDRESS]
//!
//! It prints connection events as they happen, drives the base forward and turns it, sweeps
//! the arm, reads the sensor, and stops everything. While it runs, its session keeps the rover
//! moving; kill it mid-drive (Ctrl-C) and the machine stops the base within the heartbeat
//! window.

use std::time::Duration;

use tether_client::{Arm, Base, Motor, Options, RobotClient, Sensor, Vector3};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "localhost:8080".into());
    // The demo serves plaintext on localhost; a real machine would use TLS and an API key:
    // Options::with_api_key(KEY, KEY_ID).with_ca("cert.pem").
    let robot = RobotClient::connect(&address, Options::default().insecure()).await?;
    let mut events = robot.events();
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            println!("  [event] {event:?}");
        }
    });

    let names = robot.resource_names().await?;
    println!("connected to {address}: {} resources", names.len());

    let mut base = Base::from_robot(&robot, "base");
    println!("driving 300 mm forward at 300 mm/s");
    base.move_straight(300, 300.0).await?;
    println!("turning 90 degrees");
    base.spin(90.0, 180.0).await?;
    println!("driving at 40 % power for 1 s");
    let forward = Vector3 {
        x: 0.0,
        y: 0.4,
        z: 0.0,
    };
    base.set_power(forward, Vector3::default()).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    base.stop().await?;

    let mut arm = Arm::from_robot(&robot, "arm");
    for joints in [[0.0, 30.0, -30.0, 0.0, 45.0, 0.0], [0.0; 6]] {
        arm.move_to_joint_positions(&joints).await?;
        println!("arm joints: {:?}", arm.joint_positions().await?);
    }

    let mut left = Motor::from_robot(&robot, "left");
    left.go_for(120.0, 1.0).await?;
    println!("left wheel at {:.2} revolutions", left.position().await?);

    let mut sensor = Sensor::from_robot(&robot, "sensor");
    let readings = sensor.readings().await?;
    println!(
        "sensor: {} readings ({:?})",
        readings.len(),
        readings.keys().collect::<Vec<_>>()
    );

    robot.stop_all().await?;
    println!("session {:?}; all stopped", robot.session_id());
    Ok(())
}
