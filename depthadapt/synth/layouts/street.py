"""Random street layouts: a road with sidewalks between building rows, parked cars and traffic, poles, trees."""

from __future__ import annotations

import math

from depthadapt.synth.builder import Draws, SceneBuilder, offset
from depthadapt.synth.camera import Camera
from depthadapt.synth.scene import Scene, Surface

__all__ = ["street"]


def _car(b: SceneBuilder, rnd: Draws, x: float, z: float, yaw: float, length: float, width: float) -> None:
    inst = b.new_instance()
    tall = rnd.uniform(0.0, 0.35) if rnd.chance(0.3) else 0.0  # vans and SUVs
    body_top = 1.0 + tall * 0.5
    b.box((x, (0.3 + body_top) / 2, z), (width / 2, (body_top - 0.3) / 2, length / 2), yaw, Surface.CAR, inst)
    cabin_h = rnd.uniform(0.45, 0.6) + tall * 0.5
    cabin_len = length * rnd.uniform(0.45, 0.6)
    cx, cz = offset(x, z, yaw, -length * rnd.uniform(0.02, 0.12))
    b.box((cx, body_top + cabin_h / 2, cz), (width / 2 - 0.1, cabin_h / 2, cabin_len / 2), yaw, Surface.GLASS, inst)
    for along in (length / 2 - 0.8, -length / 2 + 0.8):
        wx, wz = offset(x, z, yaw, along)
        b.box((wx, 0.33, wz), (width / 2 - 0.03, 0.33, 0.33), yaw, Surface.TYRE, inst)


def street(b: SceneBuilder, rnd: Draws, height: int, width: int) -> Scene:
    road = rnd.uniform(3.5, 7.0)  # half width
    sidewalk = rnd.uniform(2.0, 4.5)
    front = road + sidewalk
    b.plane((0.0, 1.0, 0.0), 0.0, Surface.ROAD)
    for side in (-1.0, 1.0):
        z = -40.0
        while z < 160.0:
            length = rnd.uniform(6.0, 28.0)
            if rnd.chance(0.2):  # a side street or a gap between houses
                z += rnd.uniform(3.0, 12.0)
            h = rnd.uniform(4.0, 18.0) if rnd.chance(0.8) else rnd.uniform(18.0, 35.0)
            depth, setback = rnd.uniform(8.0, 16.0), rnd.uniform(0.0, 1.5)
            x = side * (front + setback + depth / 2)
            b.box((x, h / 2, z + length / 2), (depth / 2, h / 2, length / 2), 0.0, Surface.FACADE, b.new_instance())
            z += length
    if rnd.chance(0.6):  # the street ends at a building across it
        z = rnd.uniform(70.0, 150.0)
        h = rnd.uniform(0.08, 0.15) * z  # low enough to leave sky above it
        b.box((rnd.uniform(-10, 10), h / 2, z + 7.0), (60.0, h / 2, 7.0), 0.0, Surface.FACADE, b.new_instance())

    # Parked cars along both kerbs; traffic in the lanes when the road is wide enough.
    lane = (road - 2.1) / 2 if road >= 4.5 else 0.0
    cam_x = (rnd.sign() * lane if lane else 0.0) + rnd.uniform(-0.3, 0.3)
    for side in (-1.0, 1.0):
        z = rnd.uniform(-2.0, 6.0)
        while z < 90.0:
            length, w = rnd.uniform(3.9, 4.9), rnd.uniform(1.65, 1.9)
            if rnd.chance(0.7):
                yaw = (0.0 if rnd.chance(0.5) else math.pi) + rnd.uniform(-0.06, 0.06)
                _car(b, rnd, side * (road - 0.25 - w / 2), z + length / 2, yaw, length, w)
            z += length + rnd.uniform(0.8, 9.0)
        if lane:
            z = rnd.uniform(7.0, 20.0) if abs(cam_x - side * lane) < 1.5 else rnd.uniform(-3.0, 10.0)
            while z < 80.0:
                if rnd.chance(0.5):
                    length = rnd.uniform(3.9, 4.9)
                    yaw = (0.0 if side > 0 else math.pi) + rnd.uniform(-0.04, 0.04)
                    _car(b, rnd, side * lane + rnd.uniform(-0.3, 0.3), z + length / 2, yaw, length, 1.8)
                z += rnd.uniform(12.0, 30.0)

    for side in (-1.0, 1.0):  # street lamps / poles at the kerb
        z = rnd.uniform(-5.0, 10.0)
        step = rnd.uniform(12.0, 28.0)
        while z < 100.0:
            inst, top, x = b.new_instance(), rnd.uniform(4.0, 8.0), side * (road + 0.45)
            b.cylinder(x, z, rnd.uniform(0.07, 0.13), 0.0, top, Surface.POLE, inst)
            if rnd.chance(0.6):
                arm = rnd.uniform(0.8, 2.0)
                b.box((x - side * arm / 2, top - 0.1, z), (arm / 2, 0.06, 0.07), 0.0, Surface.POLE, inst)
            z += step
    if sidewalk >= 3.0 and rnd.chance(0.6):  # trees between the poles
        crown = rnd.uniform(0.9, min(1.5, sidewalk / 2 - 0.1))
        for side in (-1.0, 1.0):
            z = rnd.uniform(0.0, 10.0)
            while z < 100.0:
                inst, trunk, x = b.new_instance(), rnd.uniform(2.2, 3.2), side * (road + sidewalk / 2 + 0.2)
                b.cylinder(x, z, rnd.uniform(0.1, 0.18), 0.0, trunk + crown, Surface.TRUNK, inst)
                b.sphere((x, trunk + crown * 0.8, z), crown * rnd.uniform(0.85, 1.15), Surface.FOLIAGE, inst)
                z += rnd.uniform(7.0, 16.0)

    fx = width * rnd.uniform(0.55, 0.8)
    camera = Camera(
        (cam_x, rnd.uniform(1.4, 1.9), 0.0), rnd.uniform(-0.3, 0.3) if rnd.chance(0.8) else rnd.uniform(-0.6, 0.6),
        rnd.uniform(-0.02, 0.06), fx, fx, (width - 1) / 2 + rnd.uniform(-0.02, 0.02) * width,
        (height - 1) / 2 + rnd.uniform(-0.05, 0.05) * height, height, width,
    )
    return b.build("street", camera, 1e-3, 80.0, sun_azimuth=rnd.uniform(-math.pi, math.pi),
                   layout={"road": road, "sidewalk": sidewalk})
