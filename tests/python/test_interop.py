"""Viam Python SDK (viam-sdk 0.85.1) against tether's embedded demo machine.

Every test opens its own RobotClient (direct gRPC, plaintext) inside ``asyncio.run``,
so one failure cannot poison the next test's connection. The server is shared by the
module (fixture ``machine``), so tests run in file order and later ones see the state
earlier ones left; each test still sets up the state it asserts on.
"""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any, Awaitable, Callable, Dict, List, Mapping

import pytest
from grpclib import Status
from grpclib.exceptions import GRPCError
from PIL import Image

# Importing a component package registers its API with the SDK; RobotClient.refresh()
# silently skips resources whose API is not registered, so import all of them up front.
from viam.components.arm import Arm, JointPositions, Pose
from viam.components.base import Base, Vector3
from viam.components.button import Button
from viam.components.camera import Camera
from viam.components.gantry import Gantry
from viam.components.generic import Generic
from viam.components.gripper import Gripper
from viam.components.motor import Motor
from viam.components.sensor import Sensor
from viam.components.servo import Servo
from viam.components.switch import Switch
from viam.media.video import CameraMimeType
from viam.proto.robot import GetMachineStatusResponse, ResourceStatus
from viam.robot.client import RobotClient

from conftest import connect

DEMO_RESOURCES = {
    ("motor", "left"),
    ("motor", "right"),
    ("base", "base"),
    ("arm", "arm"),
    ("gripper", "gripper"),
    ("gantry", "gantry"),
    ("servo", "servo"),
    ("switch", "switch"),
    ("button", "button"),
    ("sensor", "sensor"),
    ("camera", "camera"),
    ("generic", "generic"),
}
GO_FOR_METHOD = "/viam.component.motor.v1.MotorService/GoFor"
CALL_TIMEOUT_S = 60.0


def run(machine, body: Callable[[RobotClient], Awaitable[Any]], timeout: float = CALL_TIMEOUT_S) -> Any:
    """Connect to ``machine``, run ``body(robot)`` with a time limit, always close."""

    async def main():
        robot = await asyncio.wait_for(connect(machine.address), 30)
        try:
            return await asyncio.wait_for(body(robot), timeout)
        finally:
            await robot.close()

    return asyncio.run(main())


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 3.0, interval: float = 0.05) -> bool:
    """Poll an async predicate until it holds or ``timeout`` passes; returns the last result."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)


def history_entries(result: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """The entries of a ``do_command({"command": "history"})`` result.

    The list is expected under ``"history"``; any other list-valued field is accepted too,
    since the wire shape is a Struct whose key the contract does not pin down.
    """
    if isinstance(result.get("history"), list):
        return result["history"]
    lists = [v for v in result.values() if isinstance(v, list)]
    assert lists, f"history result has no list of entries: {result!r}"
    return [e for lst in lists for e in lst]


def check_history_shape(entries: List[Any]) -> None:
    for e in entries:
        assert isinstance(e, dict), f"history entry is not a dict: {e!r}"
        assert "command" in e and "time" in e, f"history entry lacks 'command'/'time': {e!r}"


# ---------------------------------------------------------------------------------------


def test_resource_names(machine):
    async def body(robot: RobotClient):
        names = robot.resource_names
        got = {(n.subtype, n.name) for n in names}
        assert got == DEMO_RESOURCES, f"extra: {got - DEMO_RESOURCES}, missing: {DEMO_RESOURCES - got}"
        assert len(names) == len(DEMO_RESOURCES), f"duplicate resource names: {names}"
        for n in names:
            assert (n.namespace, n.type) == ("rdk", "component"), n
        # The SDK built a client for each of them.
        for cls, name in [(Motor, "left"), (Motor, "right"), (Base, "base"), (Arm, "arm"), (Gripper, "gripper"),
                          (Gantry, "gantry"), (Servo, "servo"), (Switch, "switch"), (Button, "button"),
                          (Sensor, "sensor"), (Camera, "camera"), (Generic, "generic")]:
            assert cls.from_robot(robot, name).name == name

    run(machine, body)


def test_motor(machine):
    async def body(robot: RobotClient):
        m = Motor.from_robot(robot, "left")

        await m.set_power(0.5)
        on, pct = await m.is_powered()
        assert on is True and pct == pytest.approx(0.5), (on, pct)
        assert await m.is_moving() is True
        p0 = await m.get_position()
        await asyncio.sleep(0.15)
        p1 = await m.get_position()
        await asyncio.sleep(0.15)
        p2 = await m.get_position()
        assert p0 < p1 < p2, f"position not strictly increasing at 50% power: {p0}, {p1}, {p2}"

        await m.stop()
        assert await m.is_moving() is False
        on, _ = await m.is_powered()
        assert on is False

        start = await m.get_position()
        await m.go_for(rpm=600, revolutions=0.5)  # blocks until done
        assert await m.is_moving() is False, "motor still moving after go_for returned"
        after = await m.get_position()
        assert after - start == pytest.approx(0.5, abs=0.05), (start, after)

        target = round(after + 1.0, 3)
        await m.go_to(rpm=600, position_revolutions=target)
        assert await m.get_position() == pytest.approx(target, abs=0.05)

        await m.set_rpm(60)
        assert await m.is_moving() is True
        await m.stop()
        assert await m.is_moving() is False
        await m.reset_zero_position(0)
        assert await m.get_position() == pytest.approx(0.0, abs=0.02)

        props = await m.get_properties()
        assert props.position_reporting is True

    run(machine, body)


def test_motor_history(machine):
    async def body(robot: RobotClient):
        m = Motor.from_robot(robot, "left")
        await m.stop()
        result = await m.do_command({"command": "history"})
        entries = history_entries(result)
        check_history_shape(entries)
        commands = [e["command"] for e in entries]
        assert "stop" in commands, f"no 'stop' in motor history: {commands}"

    run(machine, body)


def test_base(machine):
    async def body(robot: RobotClient):
        b = Base.from_robot(robot, "base")

        await b.set_power(linear=Vector3(y=0.5), angular=Vector3())
        assert await b.is_moving() is True
        await b.stop()
        assert await b.is_moving() is False

        await b.move_straight(distance=50, velocity=500)
        assert await b.is_moving() is False
        await b.spin(angle=10, velocity=100)
        assert await b.is_moving() is False

        props = await b.get_properties()
        assert props.width_meters > 0, props
        assert props.turning_radius_meters >= 0, props
        assert props.wheel_circumference_meters >= 0, props

    run(machine, body)


def test_arm(machine):
    async def body(robot: RobotClient):
        a = Arm.from_robot(robot, "arm")

        joints = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
        await a.move_to_joint_positions(JointPositions(values=joints))
        got = await a.get_joint_positions()
        assert list(got.values) == pytest.approx(joints, abs=1e-6)

        want = Pose(x=100, y=200, z=300, o_x=0, o_y=0, o_z=1, theta=0)
        await a.move_to_position(want)
        pose = await a.get_end_position()
        for f in ("x", "y", "z", "o_x", "o_y", "o_z", "theta"):
            assert getattr(pose, f) == pytest.approx(getattr(want, f), abs=1e-6), (f, pose)
        assert await a.is_moving() is False

    run(machine, body)


def test_gripper(machine):
    async def body(robot: RobotClient):
        g = Gripper.from_robot(robot, "gripper")
        await g.open()
        grabbed = await g.grab()
        assert isinstance(grabbed, bool), type(grabbed)
        assert await g.is_moving() is False
        holding = await g.is_holding_something()
        assert isinstance(holding, Gripper.HoldingStatus), type(holding)
        assert isinstance(holding.is_holding_something, bool)

    run(machine, body)


def test_gantry(machine):
    async def body(robot: RobotClient):
        g = Gantry.from_robot(robot, "gantry")
        lengths = await g.get_lengths()
        assert len(lengths) > 0
        # 10, 20, 30 mm on the first three axes (more axes: 10 mm steps), inside each axis.
        positions = [min(10.0 * (i + 1), lengths[i] / 2) for i in range(len(lengths))]
        speeds = [500.0] * len(lengths)
        await g.move_to_position(positions=positions, speeds=speeds)
        assert await g.get_position() == pytest.approx(positions, abs=1e-6)
        assert await g.is_moving() is False
        assert await g.home() is True

    run(machine, body)


def test_servo(machine):
    async def body(robot: RobotClient):
        s = Servo.from_robot(robot, "servo")
        await s.move(90)
        assert await s.get_position() == 90

    run(machine, body)


def test_switch(machine):
    async def body(robot: RobotClient):
        s = Switch.from_robot(robot, "switch")
        count, labels = await s.get_number_of_positions()
        assert count >= 2, (count, labels)
        await s.set_position(1)
        assert await s.get_position() == 1

    run(machine, body)


def test_button(machine):
    async def body(robot: RobotClient):
        b = Button.from_robot(robot, "button")
        await b.push()
        entries = history_entries(await b.do_command({"command": "history"}))
        check_history_shape(entries)
        assert any(e.get("command") == "push" for e in entries), entries

    run(machine, body)


def test_sensor(machine):
    async def body(robot: RobotClient):
        s = Sensor.from_robot(robot, "sensor")
        r1 = await s.get_readings()
        assert isinstance(r1, dict) and r1, r1
        await asyncio.sleep(0.1)
        r2 = await s.get_readings()
        assert isinstance(r2, dict) and r2, r2
        changed = [k for k in set(r1) | set(r2) if r1.get(k) != r2.get(k)]
        assert changed, f"readings identical 100 ms apart: {r1}"

    run(machine, body)


def test_camera(machine):
    async def body(robot: RobotClient):
        c = Camera.from_robot(robot, "camera")
        images, _metadata = await c.get_images()
        assert len(images) >= 1
        for img in images:
            assert img.mime_type in (CameraMimeType.PNG, CameraMimeType.JPEG), img.mime_type
            with Image.open(io.BytesIO(img.data)) as pic:
                pic.load()
                assert pic.width > 0 and pic.height > 0
                # The SDK parses the size from the header itself (NamedImage.width/height).
                assert (img.width, img.height) == pic.size, (img.width, img.height, pic.size)
                assert pic.format == {CameraMimeType.PNG: "PNG", CameraMimeType.JPEG: "JPEG"}[img.mime_type]

    run(machine, body)


def test_generic_echo(machine):
    async def body(robot: RobotClient):
        g = Generic.from_robot(robot, "generic")
        result = await g.do_command({"hello": "world", "n": 3})
        # google.protobuf.Struct numbers are doubles: 3 comes back as 3.0 (== 3 in Python).
        assert result == {"echo": {"hello": "world", "n": 3}}, result

    run(machine, body)


def test_version(machine):
    async def body(robot: RobotClient):
        v = await robot.get_version()
        assert v.platform == "tether", v
        assert v.version, v

    run(machine, body)


def test_machine_status(machine):
    async def body(robot: RobotClient):
        st = await robot.get_machine_status()
        assert st.state == GetMachineStatusResponse.State.STATE_RUNNING, st
        assert len(st.resources) > 0
        for r in st.resources:
            assert r.state == ResourceStatus.State.STATE_READY, r
        listed = {(r.name.subtype, r.name.name) for r in st.resources}
        assert DEMO_RESOURCES <= listed, f"missing from machine status: {DEMO_RESOURCES - listed}"

    run(machine, body)


def test_operations_and_cancel(machine):
    async def body(robot: RobotClient):
        m = Motor.from_robot(robot, "right")
        task = asyncio.create_task(m.go_for(rpm=60, revolutions=5))  # ~5 s
        try:
            op_id = None

            async def find_op() -> bool:
                nonlocal op_id
                if task.done():
                    return True
                ops = await robot.get_operations()
                found = [o for o in ops if o.method == GO_FOR_METHOD]
                if found:
                    op_id = found[0].id
                return op_id is not None

            await eventually(find_op, timeout=3.0)
            if task.done():
                await task  # surface the error if go_for failed early
                pytest.fail("go_for(rpm=60, revolutions=5) returned before its operation was seen")
            assert op_id, f"no {GO_FOR_METHOD} operation in {await robot.get_operations()}"

            await robot.cancel_operation(op_id)
            with pytest.raises(GRPCError) as err:
                await asyncio.wait_for(asyncio.shield(task), 5)
            assert err.value.status == Status.CANCELLED, err.value

            async def op_gone() -> bool:
                return all(o.id != op_id for o in await robot.get_operations())

            assert await eventually(op_gone, timeout=2.0), "cancelled operation still listed"
        finally:
            if not task.done():
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await m.stop()

    run(machine, body)


def test_stop_all(machine):
    async def body(robot: RobotClient):
        left = Motor.from_robot(robot, "left")
        right = Motor.from_robot(robot, "right")
        base = Base.from_robot(robot, "base")
        await left.set_power(0.5)
        await right.set_rpm(60)
        await base.set_power(linear=Vector3(y=0.5), angular=Vector3())
        for thing in (left, right, base):
            assert await thing.is_moving() is True, thing.name

        await robot.stop_all()

        movers = [Motor.from_robot(robot, n.name) for n in robot.resource_names if n.subtype == "motor"]
        movers += [Base.from_robot(robot, n.name) for n in robot.resource_names if n.subtype == "base"]
        assert len(movers) == 3
        for thing in movers:
            assert await thing.is_moving() is False, f"{thing.name} still moving after stop_all"

    run(machine, body)
