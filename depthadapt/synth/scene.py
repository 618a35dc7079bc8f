"""Scene geometry: pinhole cameras, primitives, random street and room layouts, and a vectorised ray caster.

World frame: x right, y up, z forward (along the street / into the room), metres. Camera frame: OpenCV
(x right, y down, z forward). Rays have unnormalised directions whose camera-z component is 1, so the ray
parameter of a hit *is* its z-depth (distance along the optical axis).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum

import torch
from torch import Tensor

__all__ = ["FAMILIES", "Camera", "Hit", "Scene", "SceneBuilder", "Surface", "sample_scene"]

FAMILIES: tuple[str, ...] = ("street", "room")

_T_MIN = 1e-3  # hits closer than this along a ray are ignored (self-intersection of shadow rays)
_NEAR = 1e-2  # near plane (m) used to clip bounding boxes for screen-space culling
_INF = float("inf")
# Corner i of a box has sign (+ if bit 0/1/2 of i is set) on x/y/z; edges join corners one bit apart.
_SIGNS = torch.tensor([[1.0 if i & (1 << a) else -1.0 for a in range(3)] for i in range(8)])
_EDGES = torch.tensor([[i, i | b] for i in range(8) for b in (1, 2, 4) if not i & b])


class Surface(IntEnum):
    """What a surface is made of; a style maps each to a palette and a texture."""

    ROAD = 0  # the street's ground plane: road, markings, kerbs and sidewalks are painted on it
    SIDEWALK = 1  # a paint region of the ground, never a primitive
    FACADE = 2
    CAR = 3
    GLASS = 4
    TYRE = 5
    POLE = 6
    TRUNK = 7
    FOLIAGE = 8
    FLOOR = 9
    WALL = 10
    CEILING = 11
    FURNITURE = 12
    BALL = 13


@dataclass(frozen=True)
class Camera:
    """A pinhole camera: world ``position``, ``yaw`` about +y (0 looks along +z, > 0 turns right), ``pitch``
    (> 0 looks down), intrinsics in pixels (pixel centres at integer coordinates) and the image size."""

    position: tuple[float, float, float]
    yaw: float
    pitch: float
    fx: float
    fy: float
    cx: float
    cy: float
    height: int
    width: int

    def axes(self) -> tuple[tuple[float, float, float], ...]:
        """World directions of the camera's right, down and forward axes."""
        cy, sy, cp, sp = math.cos(self.yaw), math.sin(self.yaw), math.cos(self.pitch), math.sin(self.pitch)
        forward = (sy * cp, -sp, cy * cp)
        right = (cy, 0.0, -sy)
        down = (-sy * sp, -cp, -cy * sp)  # right x forward
        return right, down, forward

    def rays(self) -> Tensor:
        """World ray directions 3 x H x W, scaled so that their camera-z component is 1."""
        a = (torch.arange(self.width, dtype=torch.float32) - self.cx) / self.fx
        b = (torch.arange(self.height, dtype=torch.float32) - self.cy) / self.fy
        right, down, forward = self.axes()
        return torch.stack(
            [right[i] * a[None, :] + down[i] * b[:, None] + forward[i] for i in range(3)]
        )

    def to_camera(self, points: Tensor) -> Tensor:
        """Camera-frame coordinates (..., 3) of world points (..., 3)."""
        rel = points - torch.tensor(self.position)
        return torch.stack([_dot(rel, axis) for axis in self.axes()], dim=-1)

    @property
    def intrinsics(self) -> Tensor:
        """(fx, fy, cx, cy) float32 (4,)."""
        return torch.tensor([self.fx, self.fy, self.cx, self.cy], dtype=torch.float32)


def _dot(v: Tensor, axis: tuple[float, float, float]) -> Tensor:
    return v[..., 0] * axis[0] + v[..., 1] * axis[1] + v[..., 2] * axis[2]


@dataclass
class Hit:
    """What the camera rays hit: per-pixel maps and, for the M hit pixels (``pixels``, flat indices), points,
    normals, texture coordinates (metres on the surface) and their footprints (metres per pixel along u, v)."""

    depth: Tensor  # H x W z-depth, inf where nothing was hit
    prim: Tensor  # H x W int64 primitive index, -1 where nothing was hit
    rays: Tensor  # 3 x H x W ray directions (camera-z component 1)
    pixels: Tensor  # (M,) int64
    points: Tensor  # (M, 3)
    normals: Tensor  # (M, 3), unit, facing the camera
    uv: Tensor  # (M, 2)
    footprint: Tensor  # (M, 2)


@dataclass
class Scene:
    """Primitives and lights of one scene, seen by ``camera``.

    Primitive indices run over planes, boxes, cylinders, spheres in that order; ``surface`` and ``instance``
    (0 = background) are per primitive. Planes: (nx, ny, nz, offset) with n . x = offset, n facing the camera.
    Boxes: centre xyz, half sizes xyz, yaw about +y. Cylinders (vertical): x, z, radius, y0, y1.
    Spheres: centre xyz, radius. The street's sun comes from ``sun_azimuth`` (radians, elevation from the
    style); a room is lit by a point ``lamp``. ``layout`` holds family-specific painting parameters.
    """

    family: str
    camera: Camera
    planes: Tensor
    boxes: Tensor
    cylinders: Tensor
    spheres: Tensor
    surface: Tensor
    instance: Tensor
    min_depth: float
    max_depth: float
    sun_azimuth: float = 0.0
    lamp: tuple[float, float, float] | None = None
    layout: dict[str, float] = field(default_factory=dict)

    @property
    def counts(self) -> tuple[int, int, int, int]:
        """Numbers of planes, boxes, cylinders and spheres."""
        return len(self.planes), len(self.boxes), len(self.cylinders), len(self.spheres)

    def _solids(self) -> list[tuple[int, str, list[float]]]:
        """(primitive index, kind, parameters) of every non-plane primitive."""
        n_planes, n_boxes, n_cyl, _ = self.counts
        out: list[tuple[int, str, list[float]]] = []
        start = n_planes
        for kind, params in (("box", self.boxes), ("cylinder", self.cylinders), ("sphere", self.spheres)):
            out += [(start + i, kind, p) for i, p in enumerate(params.tolist())]
            start += len(params)
        return out

    def _bounds(self) -> Tensor:
        """World corners (S, 8, 3) of the oriented bounding boxes of the non-plane primitives."""
        cyl, sph = self.cylinders, self.spheres
        centre = torch.cat([self.boxes[:, :3], torch.stack([cyl[:, 0], (cyl[:, 3] + cyl[:, 4]) / 2, cyl[:, 1]], 1),
                            sph[:, :3]])
        half = torch.cat([self.boxes[:, 3:6], torch.stack([cyl[:, 2], (cyl[:, 4] - cyl[:, 3]) / 2, cyl[:, 2]], 1),
                          sph[:, 3:4].expand(-1, 3)])
        yaw = torch.cat([self.boxes[:, 6], torch.zeros(len(cyl) + len(sph))])
        local = half[:, None, :] * _SIGNS
        c, s = torch.cos(yaw)[:, None], torch.sin(yaw)[:, None]
        world = torch.stack(
            [c * local[..., 0] + s * local[..., 2], local[..., 1], -s * local[..., 0] + c * local[..., 2]], -1
        )
        return centre[:, None, :] + world

    def _screen_rects(self, corners: Tensor) -> list[tuple[int, int, int, int]]:
        """Pixel rectangles (v0, v1, u0, u1) covering the boxes with these corners (S, 8, 3), near-clipped."""
        cam = self.camera
        pts = cam.to_camera(corners)
        a, b = pts[:, _EDGES[:, 0]], pts[:, _EDGES[:, 1]]
        za, zb = a[..., 2], b[..., 2]
        crosses = (za - _NEAR) * (zb - _NEAR) < 0
        s = ((_NEAR - za) / torch.where(crosses, zb - za, torch.ones_like(za)))[..., None]
        pts = torch.cat([pts, a + s * (b - a)], 1)
        ok = torch.cat([pts[:, :8, 2] >= _NEAR, crosses], 1)
        z = pts[..., 2].clamp_min(_NEAR)
        u = (cam.fx * pts[..., 0] / z + cam.cx).clamp(-2.0, cam.width + 2.0)
        v = (cam.fy * pts[..., 1] / z + cam.cy).clamp(-2.0, cam.height + 2.0)
        big, small = torch.full_like(u, 1e9), torch.full_like(u, -1e9)
        bounds = torch.stack([
            torch.where(ok, v, big).amin(1).floor(), torch.where(ok, v, small).amax(1).floor() + 2,
            torch.where(ok, u, big).amin(1).floor(), torch.where(ok, u, small).amax(1).floor() + 2,
        ], 1)
        limits = torch.tensor([cam.height, cam.height, cam.width, cam.width], dtype=bounds.dtype)
        bounds = torch.minimum(bounds.clamp_min(0), limits).long()
        return [tuple(r) for r in bounds.tolist()]

    def cast(self) -> Hit:
        """Cast one ray per pixel: nearest hit, its primitive, point, normal, texture coordinates, footprint."""
        cam = self.camera
        rays = cam.rays()
        dx, dy, dz = rays
        ox, oy, oz = cam.position
        depth = torch.full((cam.height, cam.width), _INF)
        prim = torch.full((cam.height, cam.width), -1, dtype=torch.long)
        for k, params in enumerate(self.planes.tolist()):
            _keep_nearest(depth, prim, _plane_t(params, ox, oy, oz, dx, dy, dz), k)
        solids = self._solids()
        if solids:
            rects = self._screen_rects(self._bounds())
            for (k, kind, params), (v0, v1, u0, u1) in zip(solids, rects, strict=True):
                if v0 >= v1 or u0 >= u1:
                    continue
                win = (slice(v0, v1), slice(u0, u1))
                _keep_nearest(depth[win], prim[win], _INTERSECT[kind](params, ox, oy, oz, dx[win], dy[win], dz[win]), k)
        pixels = (prim.flatten() >= 0).nonzero().squeeze(1)
        t = depth.flatten()[pixels]
        dirs = rays.flatten(1)[:, pixels].T
        points = torch.tensor(cam.position) + t[:, None] * dirs
        normals, uv, tangents = self._frames(prim.flatten()[pixels], points)
        # A pixel covers t / f metres across the ray; along a tangent e it stretches by 1 / sin(angle(e, ray)).
        unit = dirs / _norm(dirs)[:, None]
        size = t / cam.fx
        cos = (tangents * unit[:, None, :]).sum(-1).abs().clamp(max=0.999)
        footprint = size[:, None] / (1 - cos * cos).sqrt()
        return Hit(depth, prim, rays, pixels, points, normals, uv, footprint.clamp(max=50.0))

    def _frames(self, prim: Tensor, points: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Unit normals (M, 3), texture coordinates (M, 2) and world tangents of u and v (M, 2, 3)."""
        m = len(prim)
        normals, uv, tangents = torch.zeros(m, 3), torch.zeros(m, 2), torch.zeros(m, 2, 3)
        n_planes, n_boxes, n_cyl, _ = self.counts
        starts = (0, n_planes, n_planes + n_boxes, n_planes + n_boxes + n_cyl, len(self.surface))
        fns = (_plane_frames, _box_frames, _cylinder_frames, _sphere_frames)
        tables = (self.planes, self.boxes, self.cylinders, self.spheres)
        for fn, table, lo, hi in zip(fns, tables, starts[:-1], starts[1:], strict=True):
            sel = ((prim >= lo) & (prim < hi)).nonzero().squeeze(1)
            if len(sel):
                normals[sel], uv[sel], tangents[sel] = fn(table[prim[sel] - lo], points[sel])
        return normals, uv, tangents

    def shadowed(self, points: Tensor, to_light: Tensor, t_max: float) -> Tensor:
        """Which of the points (M, 3) see a solid primitive along ``to_light`` within ``t_max``: (M,) bool.

        ``to_light`` is the sun direction (3,) (any length; t_max inf) or lamp - point (M, 3) (t_max 1).
        Candidates are culled by projecting along the light onto y = 0: a ray can only hit a solid whose
        projected corners bound the projection of its origin (a lamp projects centrally, the same way).
        """
        out = torch.zeros(len(points), dtype=torch.bool)
        solids = self._solids()
        if not solids or not len(points):
            return out
        q = _project_down(points, to_light)
        order = q[:, 0].argsort()
        qx, qz = q[order, 0].contiguous(), q[order, 2].contiguous()
        origins = points[order].T.contiguous()
        dirs = to_light[order].T.contiguous() if to_light.dim() == 2 else to_light[:, None]
        corners = self._bounds()
        cq = _project_down(corners, torch.tensor(self.lamp) - corners if to_light.dim() == 2 else to_light)
        lo = torch.searchsorted(qx, cq[..., 0].amin(1).contiguous()).tolist()
        hi = torch.searchsorted(qx, cq[..., 0].amax(1).contiguous(), right=True).tolist()
        zlo, zhi = cq[..., 2].amin(1).tolist(), cq[..., 2].amax(1).tolist()
        blocked = torch.zeros(len(points), dtype=torch.bool)
        for (_, kind, params), a, b, z0, z1 in zip(solids, lo, hi, zlo, zhi, strict=True):
            if a >= b:
                continue
            cand = ((qz[a:b] >= z0) & (qz[a:b] <= z1)).nonzero().squeeze(1) + a
            if not len(cand):
                continue
            o = origins[:, cand]
            d = dirs[:, cand] if dirs.shape[1] > 1 else dirs
            t = _INTERSECT[kind](params, o[0], o[1], o[2], d[0], d[1], d[2])
            blocked[cand[t < t_max]] = True
        out[order] = blocked
        return out


def _keep_nearest(depth: Tensor, prim: Tensor, t: Tensor, k: int) -> None:
    """z-buffer update in place: where ``t`` is nearer than ``depth``, take it and primitive ``k``."""
    prim.masked_fill_(t < depth, k)
    torch.minimum(depth, t, out=depth)


def _norm(v: Tensor) -> Tensor:
    """Euclidean norm over the last axis of (..., 3) (much faster than linalg.vector_norm for 3 elements)."""
    return (v[..., 0] * v[..., 0] + v[..., 1] * v[..., 1] + v[..., 2] * v[..., 2]).sqrt()


def _project_down(points: Tensor, to_light: Tensor) -> Tensor:
    """Points (..., 3) moved along ``to_light`` onto the plane y = 0 (lights are above every occluder)."""
    ly = to_light[..., 1:2].clamp_min(1e-6)
    return points - points[..., 1:2] / ly * to_light


def _safe(d: Tensor) -> Tensor:
    return torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)


def _plane_t(p: list[float], ox, oy, oz, dx: Tensor, dy: Tensor, dz: Tensor) -> Tensor:
    nx, ny, nz, offset = p
    nd = nx * dx + ny * dy + nz * dz
    t = (offset - (nx * ox + ny * oy + nz * oz)) / _safe(nd)
    return torch.where((nd < 0) & (t > _T_MIN), t, _INF)


def _box_t(p: list[float], ox, oy, oz, dx: Tensor, dy: Tensor, dz: Tensor) -> Tensor:
    cx, cy, cz, hx, hy, hz, yaw = p
    c, s = math.cos(yaw), math.sin(yaw)
    rx, rz = ox - cx, oz - cz
    local = ((c * rx - s * rz, c * dx - s * dz, hx), (oy - cy, dy, hy), (s * rx + c * rz, s * dx + c * dz, hz))
    near = far = None
    for lo, ld, h in local:
        inv = 1.0 / _safe(ld)
        t1, t2 = (-h - lo) * inv, (h - lo) * inv
        a, b = torch.minimum(t1, t2), torch.maximum(t1, t2)
        near = a if near is None else torch.maximum(near, a)
        far = b if far is None else torch.minimum(far, b)
    return torch.where((near <= far) & (near > _T_MIN), near, _INF)


def _cylinder_t(p: list[float], ox, oy, oz, dx: Tensor, dy: Tensor, dz: Tensor) -> Tensor:
    x, z, r, y0, y1 = p
    rx, rz = ox - x, oz - z
    a = (dx * dx + dz * dz).clamp_min(1e-12)
    b = rx * dx + rz * dz
    disc = b * b - a * (rx * rx + rz * rz - r * r)
    t = (-b - disc.clamp_min(0).sqrt()) / a
    y = oy + t * dy
    t = torch.where((disc >= 0) & (t > _T_MIN) & (y >= y0) & (y <= y1), t, _INF)
    tc = (y1 - oy) / _safe(dy)
    px, pz = rx + tc * dx, rz + tc * dz
    cap = (dy < 0) & (tc > _T_MIN) & (px * px + pz * pz <= r * r) & (tc < t)
    return torch.where(cap, tc, t)


def _sphere_t(p: list[float], ox, oy, oz, dx: Tensor, dy: Tensor, dz: Tensor) -> Tensor:
    x, y, z, r = p
    rx, ry, rz = ox - x, oy - y, oz - z
    a = dx * dx + dy * dy + dz * dz
    b = rx * dx + ry * dy + rz * dz
    disc = b * b - a * (rx * rx + ry * ry + rz * rz - r * r)
    t = (-b - disc.clamp_min(0).sqrt()) / a
    return torch.where((disc >= 0) & (t > _T_MIN), t, _INF)


_INTERSECT = {"box": _box_t, "cylinder": _cylinder_t, "sphere": _sphere_t}

_AXES = torch.eye(3)


def _axis_frames(local: Tensor, axis: Tensor, sign: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Local normal, uv and tangents of axis-aligned faces: ``local`` (M, 3) offsets from the face's minimum
    corner; faces across x use (z, y), across y (x, z), across z (x, y) as (u, v)."""
    u_axis = torch.tensor([2, 0, 0])[axis]
    v_axis = torch.tensor([1, 2, 1])[axis]
    normal = _AXES[axis] * sign[:, None]
    uv = torch.stack([local.gather(1, u_axis[:, None])[:, 0], local.gather(1, v_axis[:, None])[:, 0]], 1)
    return normal, uv, torch.stack([_AXES[u_axis], _AXES[v_axis]], 1)


def _plane_frames(p: Tensor, points: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    normal = p[:, :3]
    axis = normal.abs().argmax(1)
    _, uv, tangents = _axis_frames(points, axis, torch.ones(len(p)))
    return normal, uv, tangents


def _box_frames(p: Tensor, points: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    c, s = torch.cos(p[:, 6]), torch.sin(p[:, 6])
    rel = points - p[:, :3]
    local = torch.stack([c * rel[:, 0] - s * rel[:, 2], rel[:, 1], s * rel[:, 0] + c * rel[:, 2]], 1)
    half = p[:, 3:6]
    axis = (local.abs() / half).argmax(1)
    sign = local.gather(1, axis[:, None])[:, 0].sign()
    normal, uv, tangents = _axis_frames(local + half, axis, sign)

    def to_world(v: Tensor) -> Tensor:
        cc, ss = c.view(-1, *[1] * (v.dim() - 2)), s.view(-1, *[1] * (v.dim() - 2))
        return torch.stack([cc * v[..., 0] + ss * v[..., 2], v[..., 1], -ss * v[..., 0] + cc * v[..., 2]], -1)

    return to_world(normal), uv, to_world(tangents)


def _round_frames(radial: Tensor, r: Tensor, height: Tensor, normal: Tensor) -> tuple[Tensor, Tensor]:
    """uv (arc length, height) and tangents of surfaces around a vertical axis; ``radial`` (M, 2) is (x, z)."""
    u = torch.atan2(radial[:, 1], radial[:, 0]) * r
    horizontal = torch.stack([-radial[:, 1], torch.zeros_like(u), radial[:, 0]], 1)
    horizontal = horizontal / _norm(horizontal).clamp_min(1e-9)[:, None]
    vertical = torch.cross(normal, horizontal, dim=1)
    return torch.stack([u, height], 1), torch.stack([horizontal, vertical], 1)


def _cylinder_frames(p: Tensor, points: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    radial = torch.stack([points[:, 0] - p[:, 0], points[:, 2] - p[:, 1]], 1)
    r = p[:, 2]
    cap = (points[:, 1] >= p[:, 4] - 1e-4) & (radial[:, 0] ** 2 + radial[:, 1] ** 2 < (r * 0.999) ** 2)
    normal = torch.stack([radial[:, 0] / r, torch.zeros_like(r), radial[:, 1] / r], 1)
    normal[cap] = torch.tensor([0.0, 1.0, 0.0])
    uv, tangents = _round_frames(radial, r, points[:, 1] - p[:, 3], normal)
    return normal, uv, tangents


def _sphere_frames(p: Tensor, points: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    rel = points - p[:, :3]
    r = p[:, 3]
    normal = rel / r[:, None]
    uv, tangents = _round_frames(rel[:, [0, 2]], r, rel[:, 1] + r, normal)
    return normal, uv, tangents


class SceneBuilder:
    """Collects primitives (and their surface and instance id) and builds a ``Scene``."""

    def __init__(self) -> None:
        self._prims: dict[str, list[tuple[list[float], int, int]]] = {
            "plane": [], "box": [], "cylinder": [], "sphere": []
        }
        self._instances = 0

    def new_instance(self) -> int:
        """A fresh object id (1, 2, ...)."""
        self._instances += 1
        return self._instances

    def plane(self, normal: tuple[float, float, float], offset: float, surface: Surface) -> None:
        """Background plane n . x = offset; ``normal`` (unit) faces the camera."""
        self._prims["plane"].append(([*normal, offset], int(surface), 0))

    def box(self, centre: tuple[float, float, float], half: tuple[float, float, float], yaw: float,
            surface: Surface, instance: int) -> None:
        """Box with these centre, half sizes (its local x, y, z) and yaw about +y."""
        self._prims["box"].append(([*centre, *half, yaw], int(surface), instance))

    def cylinder(self, x: float, z: float, radius: float, y0: float, y1: float, surface: Surface,
                 instance: int) -> None:
        """Vertical cylinder with a top cap."""
        self._prims["cylinder"].append(([x, z, radius, y0, y1], int(surface), instance))

    def sphere(self, centre: tuple[float, float, float], radius: float, surface: Surface, instance: int) -> None:
        """Sphere."""
        self._prims["sphere"].append(([*centre, radius], int(surface), instance))

    def build(self, family: str, camera: Camera, min_depth: float, max_depth: float, **extra) -> Scene:
        """The scene of everything added so far (``extra``: sun_azimuth, lamp, layout)."""
        widths = {"plane": 4, "box": 7, "cylinder": 5, "sphere": 4}
        tables = {
            k: torch.tensor([p for p, _, _ in v], dtype=torch.float32).reshape(-1, widths[k])
            for k, v in self._prims.items()
        }
        order = [e for k in ("plane", "box", "cylinder", "sphere") for e in self._prims[k]]
        return Scene(
            family, camera, tables["plane"], tables["box"], tables["cylinder"], tables["sphere"],
            torch.tensor([s for _, s, _ in order], dtype=torch.long),
            torch.tensor([i for _, _, i in order], dtype=torch.long),
            min_depth, max_depth, **extra,
        )


class _Random:
    """Scalar draws from a ``torch.Generator`` (never the global RNG)."""

    def __init__(self, generator: torch.Generator) -> None:
        self.g = generator

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * torch.rand((), generator=self.g).item()

    def chance(self, p: float) -> bool:
        return torch.rand((), generator=self.g).item() < p

    def integer(self, lo: int, hi: int) -> int:
        """Uniform in [lo, hi]."""
        return int(torch.randint(lo, hi + 1, (), generator=self.g))

    def sign(self) -> float:
        return 1.0 if self.chance(0.5) else -1.0


def _offset(x: float, z: float, yaw: float, along: float, across: float = 0.0) -> tuple[float, float]:
    """(x, z) moved by ``along`` the local z axis and ``across`` the local x axis of a yawed object."""
    c, s = math.cos(yaw), math.sin(yaw)
    return x + c * across + s * along, z - s * across + c * along


def _car(b: SceneBuilder, rnd: _Random, x: float, z: float, yaw: float, length: float, width: float) -> None:
    inst = b.new_instance()
    tall = rnd.uniform(0.0, 0.35) if rnd.chance(0.3) else 0.0  # vans and SUVs
    body_top = 1.0 + tall * 0.5
    b.box((x, (0.3 + body_top) / 2, z), (width / 2, (body_top - 0.3) / 2, length / 2), yaw, Surface.CAR, inst)
    cabin_h = rnd.uniform(0.45, 0.6) + tall * 0.5
    cabin_len = length * rnd.uniform(0.45, 0.6)
    cx, cz = _offset(x, z, yaw, -length * rnd.uniform(0.02, 0.12))
    b.box((cx, body_top + cabin_h / 2, cz), (width / 2 - 0.1, cabin_h / 2, cabin_len / 2), yaw, Surface.GLASS, inst)
    for along in (length / 2 - 0.8, -length / 2 + 0.8):
        wx, wz = _offset(x, z, yaw, along)
        b.box((wx, 0.33, wz), (width / 2 - 0.03, 0.33, 0.33), yaw, Surface.TYRE, inst)


def _street(b: SceneBuilder, rnd: _Random, height: int, width: int) -> Scene:
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


def _overlaps(rect: tuple[float, float, float, float], placed: list[tuple[float, float, float, float]]) -> bool:
    x0, x1, z0, z1 = rect
    return any(x0 < b1 and b0 < x1 and z0 < d1 and d0 < z1 for b0, b1, d0, d1 in placed)


def _room(b: SceneBuilder, rnd: _Random, height: int, width: int) -> Scene:
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
                lx, lz = _offset(x, z, yaw, az * (sz / 2 - 0.06), ax * (sx / 2 - 0.06))
                b.box((lx, (top - 0.045) / 2, lz), (0.03, (top - 0.045) / 2, 0.03), yaw, Surface.FURNITURE, inst)
            tables.append((x, z, top, min(sx, sz) / 2))
        elif kind == "cabinet":
            ch = rnd.uniform(0.8, 2.0)
            b.box((x, ch / 2, z), (sx / 2, ch / 2, sz / 2), yaw, Surface.FURNITURE, inst)
        elif kind == "sofa":
            b.box((x, 0.22, z), (sx / 2, 0.22, sz / 2), yaw, Surface.FURNITURE, inst)
            bx, bz = _offset(x, z, yaw, sz / 2 - 0.1)
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


def sample_scene(family: str, generator: torch.Generator, height: int, width: int) -> Scene:
    """A random ``street`` or ``room`` scene with its camera for an H x W image, drawn from ``generator``."""
    if family not in FAMILIES:
        raise ValueError(f"unknown scene family {family!r}: choose one of {', '.join(FAMILIES)}")
    if height < 2 or width < 2:
        raise ValueError(f"image size must be at least 2 x 2, got {height} x {width}")
    builder = _street if family == "street" else _room
    return builder(SceneBuilder(), _Random(generator), height, width)
