"""Scene geometry: what surfaces are made of, the primitives and lights of one scene, and casting camera and
shadow rays into it.

World frame: x right, y up, z forward (along the street / into the room), metres (see ``camera``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import torch
from torch import Tensor

from depthadapt.synth.camera import Camera
from depthadapt.synth.raycast import FRAMES, INF, INTERSECT, Hit, keep_nearest, norm3, plane_t, project_down

__all__ = ["FAMILIES", "Scene", "Surface"]

FAMILIES: tuple[str, ...] = ("street", "room")

_NEAR = 1e-2  # near plane (m) used to clip bounding boxes for screen-space culling
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
        depth = torch.full((cam.height, cam.width), INF)
        prim = torch.full((cam.height, cam.width), -1, dtype=torch.long)
        for k, params in enumerate(self.planes.tolist()):
            keep_nearest(depth, prim, plane_t(params, ox, oy, oz, dx, dy, dz), k)
        solids = self._solids()
        if solids:
            rects = self._screen_rects(self._bounds())
            for (k, kind, params), (v0, v1, u0, u1) in zip(solids, rects, strict=True):
                if v0 >= v1 or u0 >= u1:
                    continue
                win = (slice(v0, v1), slice(u0, u1))
                keep_nearest(depth[win], prim[win], INTERSECT[kind](params, ox, oy, oz, dx[win], dy[win], dz[win]), k)
        pixels = (prim.flatten() >= 0).nonzero().squeeze(1)
        t = depth.flatten()[pixels]
        dirs = rays.flatten(1)[:, pixels].T
        points = torch.tensor(cam.position) + t[:, None] * dirs
        normals, uv, tangents = self._frames(prim.flatten()[pixels], points)
        # A pixel covers t / f metres across the ray; along a tangent e it stretches by 1 / sin(angle(e, ray)).
        unit = dirs / norm3(dirs)[:, None]
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
        tables = (self.planes, self.boxes, self.cylinders, self.spheres)
        for fn, table, lo, hi in zip(FRAMES, tables, starts[:-1], starts[1:], strict=True):
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
        q = project_down(points, to_light)
        order = q[:, 0].argsort()
        qx, qz = q[order, 0].contiguous(), q[order, 2].contiguous()
        origins = points[order].T.contiguous()
        dirs = to_light[order].T.contiguous() if to_light.dim() == 2 else to_light[:, None]
        corners = self._bounds()
        cq = project_down(corners, torch.tensor(self.lamp) - corners if to_light.dim() == 2 else to_light)
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
            t = INTERSECT[kind](params, o[0], o[1], o[2], d[0], d[1], d[2])
            blocked[cand[t < t_max]] = True
        out[order] = blocked
        return out
