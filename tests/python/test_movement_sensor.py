"""Viam Python SDK (viam-sdk 0.85.1): the movement sensor API, added through the API registry.

A fake GPS rides on a fake base that starts at a configured origin facing east (compass 90):
driving the base through the SDK's ``Base`` moves the fix the SDK's ``MovementSensor`` reads,
by the distance driven and in the direction the base faces.
"""

from __future__ import annotations

import asyncio
import math

from viam.components.base import Base, Vector3
from viam.components.movement_sensor import MovementSensor
from viam.proto.common import GeoPoint
from viam.robot.client import RobotClient

from conftest import connect

TETHER_CONFIG = "configs/rover_gps.json"
EARTH_RADIUS_M = 6_371_008.8


def east_north_m(a: GeoPoint, b: GeoPoint):
    """Metres east and north from a to b (locally flat globe)."""
    north = math.radians(b.latitude - a.latitude) * EARTH_RADIUS_M
    east = math.radians(b.longitude - a.longitude) * EARTH_RADIUS_M * math.cos(math.radians(a.latitude))
    return east, north


def run(machine, body):
    async def main():
        robot: RobotClient = await connect(machine.address)
        try:
            await body(robot)
        finally:
            await robot.close()

    asyncio.run(main())


def test_movement_sensor_is_listed_and_answers_every_method(machine):
    async def body(robot: RobotClient):
        names = {(n.subtype, n.name) for n in robot.resource_names}
        assert ("movement_sensor", "gps") in names, names
        gps = MovementSensor.from_robot(robot, "gps")

        point, altitude = await gps.get_position()
        assert math.isclose(point.latitude, 40.7406, abs_tol=1e-9), point
        assert math.isclose(point.longitude, -73.988, abs_tol=1e-9), point
        assert math.isclose(altitude, 12.5, abs_tol=1e-6)
        assert math.isclose(await gps.get_compass_heading(), 90.0, abs_tol=1e-9)

        props = await gps.get_properties()
        assert props.position_supported and props.compass_heading_supported, props
        assert props.linear_velocity_supported and props.angular_velocity_supported, props
        assert not props.linear_acceleration_supported, props

        accuracy = await gps.get_accuracy()
        assert accuracy.accuracy["horizontal_m"] > 0, accuracy
        assert accuracy.position_hdop > 0, accuracy

        orientation = await gps.get_orientation()
        assert math.isclose(orientation.o_z, 1.0), orientation

        readings = await gps.get_readings()
        assert isinstance(readings["position"], GeoPoint), readings
        assert math.isclose(readings["compass"], 90.0, abs_tol=1e-9), readings

        echo = await gps.do_command({"command": "ping"})
        assert echo["echo"]["command"] == "ping", echo

    run(machine, body)


def test_position_moves_while_the_base_drives(machine):
    async def body(robot: RobotClient):
        base = Base.from_robot(robot, "base")
        gps = MovementSensor.from_robot(robot, "gps")
        start, _ = await gps.get_position()
        heading = await gps.get_compass_heading()

        # Forward at 1 m/s: the fix moves while the base drives, the way the base faces.
        await base.set_velocity(linear=Vector3(y=1000), angular=Vector3())
        samples = []
        for _ in range(4):
            await asyncio.sleep(0.25)
            samples.append((await gps.get_position())[0])
        velocity = await gps.get_linear_velocity()
        await base.stop()
        stopped, _ = await gps.get_position()
        await asyncio.sleep(0.3)
        still, _ = await gps.get_position()

        distances = [math.hypot(*east_north_m(start, p)) for p in samples]
        assert all(b > a for a, b in zip(distances, distances[1:])), distances
        assert math.isclose(velocity.y, 1.0, abs_tol=1e-9), velocity
        east, north = east_north_m(start, stopped)
        travelled = math.hypot(east, north)
        # ~1 s at 1 m/s, with loose bounds for a loaded machine.
        assert 0.8 < travelled < 3.0, travelled
        bearing = math.degrees(math.atan2(east, north)) % 360
        assert abs(bearing - heading) < 1.0, (bearing, heading)
        assert east_north_m(stopped, still) == (0.0, 0.0), "a stopped base keeps its fix"

        # A quarter turn to the left faces north; 0.5 m more goes north.
        await base.spin(angle=90, velocity=360)
        assert math.isclose(await gps.get_compass_heading(), (heading - 90) % 360, abs_tol=1e-6)
        await base.move_straight(distance=500, velocity=1000)
        end, _ = await gps.get_position()
        east, north = east_north_m(stopped, end)
        assert math.isclose(north, 0.5, abs_tol=1e-3) and abs(east) < 1e-3, (east, north)

    run(machine, body)
