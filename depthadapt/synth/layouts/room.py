"""Random room layouts: a box room with tables, cabinets, sofas, crates and balls, lit by one lamp."""

from __future__ import annotations

import math

from depthadapt.synth.builder import Draws, SceneBuilder, offset
from depthadapt.synth.camera import Camera
from depthadapt.synth.scene import Scene, Surface

__all__ = ["room"]


def _overlaps(rect: tuple[float, float, float, float], placed: list[tuple[float, float, float, float]]) -> bool:
    x0, x1, z0, z1 = rect
    return any(x0 < b1 and b0 < x1 and z0 < d1 and d0 < z1 for b0, b1, d0, d1 in placed)


def room(b: SceneBuilder, rnd: Draws, height: int, width: int) -> Scene:
    w, d, h = rnd.uniform(3.5, 7.0), rnd.uniform(4.5, 8.5), rnd.uniform(2.5, 3.2)
    b.plane((0.0, 1.0, 0.0), 0.0, Surface.FLOOR)
    b.plane((0.0, -1.0, 0.0), -h, Surface.CEILING)
    b.plane((1.0, 0.0, 0.0), -w / 2, Surface.WALL)
    b.plane((-1.0, 0.0, 0.0), -w / 2, Surface.WALL)
    b.plane((0.0, 0.0, 1.0), 0.0, Surface.WALL)
    b.plane((0.0, 0.0, -1.0), -d, Surface.WALL)
    cam_x, cam_z = rnd.uniform(-w / 2 + 0.8, w / 2 - 0.8), rnd.uniform(0.3, 1.0)

    # Footprints (x0, x1, z0, z1) of what stands on the floor; the camera keeps 1 m clear in front.
    placed = [(cam_x - 0.8, cam_x + 0.8, -1.0, cam_z + 1.0)]
    tables = []
    for _ in range(rnd.integer(3, 7)):
        kind = ("table", "cabinet", "sofa", "crate")[rnd.integer(0, 3)]
        sx, sz = {"table": (rnd.uniform(0.8, 1.8), rnd.uniform(0.6, 1.0)),
                  "cabinet": (rnd.uniform(0.5, 1.6), rnd.uniform(0.35, 0.6)),
                  "sofa": (rnd.uniform(1.4, 2.3), rnd.uniform(0.8, 0.95)),
                  "crate": (rnd.uniform(0.3, 0.7), rnd.uniform(0.3, 0.7))}[kind]
        wall = rnd.integer(0, 3)  # 0: far wall, 1: left, 2: right, 3: free-standing
        for _attempt in range(10):
            if wall == 0:
                x, z, yaw = rnd.uniform(-w / 2 + sx / 2, w / 2 - sx / 2), d - sz / 2 - 0.02, 0.0
            elif wall in (1, 2):
                sign = -1.0 if wall == 1 else 1.0  # the back (local +z) of a sofa faces the wall
                x, z, yaw = sign * (w / 2 - sz / 2 - 0.02), rnd.uniform(sx / 2 + 0.5, d - sx / 2), sign * math.pi / 2
            else:
                x, z, yaw = rnd.uniform(-w / 2 + 1.0, w / 2 - 1.0), rnd.uniform(2.0, d - 1.0), rnd.uniform(-0.5, 0.5)
            ext = math.hypot(sx, sz) / 2 if wall == 3 else None
            ex, ez = (ext, ext) if ext else ((sx / 2, sz / 2) if yaw == 0.0 else (sz / 2, sx / 2))
            rect = (x - ex, x + ex, z - ez, z + ez)
            if rect[0] > -w / 2 and rect[1] < w / 2 and rect[3] < d and not _overlaps(rect, placed):
                break
        else:
            continue
        placed.append(rect)
        inst = b.new_instance()
        if kind == "table":
            top = rnd.uniform(0.7, 0.8)
            b.box((x, top - 0.02, z), (sx / 2, 0.025, sz / 2), yaw, Surface.FURNITURE, inst)
            for ax, az in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                lx, lz = offset(x, z, yaw, az * (sz / 2 - 0.06), ax * (sx / 2 - 0.06))
                b.box((lx, (top - 0.045) / 2, lz), (0.03, (top - 0.045) / 2, 0.03), yaw, Surface.FURNITURE, inst)
            tables.append((x, z, top, min(sx, sz) / 2))
        elif kind == "cabinet":
            ch = rnd.uniform(0.8, 2.0)
            b.box((x, ch / 2, z), (sx / 2, ch / 2, sz / 2), yaw, Surface.FURNITURE, inst)
        elif kind == "sofa":
            b.box((x, 0.22, z), (sx / 2, 0.22, sz / 2), yaw, Surface.FURNITURE, inst)
            bx, bz = offset(x, z, yaw, sz / 2 - 0.1)
            b.box((bx, 0.42, bz), (sx / 2, 0.42, 0.1), yaw, Surface.FURNITURE, inst)
        else:
            ch = rnd.uniform(0.3, 0.7)
            b.box((x, ch / 2, z), (sx / 2, ch / 2, sz / 2), yaw, Surface.FURNITURE, inst)
    for _ in range(rnd.integer(1, 3)):
        r = rnd.uniform(0.1, 0.3)
        if tables and rnd.chance(0.5):
            tx, tz, top, reach = tables[rnd.integer(0, len(tables) - 1)]
            b.sphere((tx + rnd.uniform(-reach, reach) * 0.5, top + r, tz), r, Surface.BALL, b.new_instance())
            continue
        x, z = rnd.uniform(-w / 2 + r, w / 2 - r), rnd.uniform(cam_z + 1.5, d - r)
        if not _overlaps((x - r, x + r, z - r, z + r), placed):
            placed.append((x - r, x + r, z - r, z + r))
            b.sphere((x, r, z), r, Surface.BALL, b.new_instance())

    fx = width * rnd.uniform(0.5, 0.75)
    camera = Camera(
        (cam_x, rnd.uniform(1.1, 1.7), cam_z), rnd.uniform(-0.35, 0.35), rnd.uniform(-0.05, 0.25), fx, fx,
        (width - 1) / 2 + rnd.uniform(-0.02, 0.02) * width, (height - 1) / 2 + rnd.uniform(-0.03, 0.03) * height,
        height, width,
    )
    lamp = (rnd.uniform(-w / 4, w / 4), h - 0.2, rnd.uniform(d * 0.3, d * 0.7))
    return b.build("room", camera, 0.5, 10.0, lamp=lamp, layout={"width": w, "depth": d})
