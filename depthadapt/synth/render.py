"""Image formation: materials, Lambertian shading with cast shadows, sky, camera response and haze.

``render_sample`` is the entry point: a deterministic (family, style, seed, index) -> RGB, metric z-depth,
instance ids and intrinsics. All randomness comes from one ``torch.Generator`` seeded from a hash of the four.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import Tensor

from depthadapt.synth.layouts import sample_scene
from depthadapt.synth.mirrors import ground_mirror_mask, mirrored_in_ground
from depthadapt.synth.randomize import resolve_style
from depthadapt.synth.raycast import Hit
from depthadapt.synth.scene import FAMILIES, Scene, Surface
from depthadapt.synth.seeds import sample_seed
from depthadapt.synth.styles import Style
from depthadapt.synth.textures import Texture, coverage, filtered_square, pattern

__all__ = ["MIN_INSTANCE_FRACTION", "RENDER_VERSION", "apply_haze", "drop_small", "render_sample", "render_scene",
           "sample_seed"]

RENDER_VERSION = 2
"""Bumped whenever the renderer's output changes (caches key on it). 2: instances drop objects under
``MIN_INSTANCE_FRACTION`` of the image (images and depth as in 1)."""

MIN_INSTANCE_FRACTION = 0.001
"""Objects covering less of the image than this are background in the instance map (SAM2-like: no slivers)."""

_PLAIN = Texture("plain")


def _colours(table: Sequence[Sequence[float]]) -> Tensor:
    return torch.tensor(table, dtype=torch.float32).reshape(-1, 3)


def _materials(scene: Scene, style: Style, generator: torch.Generator) -> dict[str, Tensor]:
    """Per-primitive uniform draws (N, 8), base and car-body colours (N, 3), texture offset (N, 2), texture
    seed (N,) and facade parameters (N, 4).

    Parts of one object share their random draws, so e.g. a table's legs and top get the same colour.
    """
    n = len(scene.surface)
    draws = torch.rand(n, 8, generator=generator)
    per_instance = torch.rand(int(scene.instance.max()) + 1 if n else 1, 8, generator=generator)
    draws = torch.where((scene.instance > 0)[:, None], per_instance[scene.instance], draws)

    def pick(kind: Surface, rows: Tensor) -> Tensor:
        palette = _colours(style.palette[kind])
        return palette[(rows[:, 0] * len(palette)).long().clamp(max=len(palette) - 1)] * (0.85 + 0.3 * rows[:, 1:2])

    colour = torch.zeros(n, 3)
    for s in scene.surface.unique().tolist():
        sel = scene.surface == s
        colour[sel] = pick(Surface(s), draws[sel])
    lo, hi = style.window_spacing
    spacing = lo + (hi - lo) * draws[:, 4]
    facade = torch.stack([
        spacing,  # window columns
        spacing * (0.3 + 0.3 * draws[:, 5]),  # window width
        2.8 + 0.8 * draws[:, 6],  # storey height
        0.35 + 0.25 * draws[:, 7],  # window height / storey
    ], 1)
    return {
        "draws": draws,
        "colour": colour,
        "body": pick(Surface.CAR, draws),  # the paint of the car a cabin belongs to
        "offset": draws[:, 2:4] * 100.0,
        "seed": (draws[:, 2] * 2**20).long(),
        "facade": facade,
    }


def _paint_ground(style: Style, uv: Tensor, footprint: Tensor, seed: Tensor, layout: dict[str, float]) -> Tensor:
    """Albedo (M, 3) of the street's ground at (x, z) = ``uv``: asphalt, markings, kerbs, sidewalks."""
    x, z = uv[:, 0], uv[:, 1]
    fx, fz = footprint[:, 0], footprint[:, 1]
    road, lanes = layout["road"], layout["road"] >= 4.5
    asphalt = _colours(style.palette[Surface.ROAD])[0] * pattern(
        style.textures.get(Surface.ROAD, _PLAIN), uv, footprint, seed)[:, None]
    paving = _colours(style.palette[Surface.SIDEWALK])[0] * pattern(
        style.textures.get(Surface.SIDEWALK, _PLAIN), uv, footprint, seed + 1)[:, None]
    ax = x.abs()
    albedo = torch.lerp(paving, asphalt, coverage(x, -road, road, fx)[:, None])
    kerb = coverage(ax, road, road + 0.2, fx)[:, None]
    albedo = torch.lerp(albedo, paving * 1.4, kerb)
    marks = coverage(ax, road - 0.45, road - 0.3, fx)
    if lanes:
        marks = marks + coverage(x, -0.07, 0.07, fx) * filtered_square(z / 6.0, 0.5, fz / 6.0)
    return torch.lerp(albedo, _colours([style.marking_colour])[0].expand_as(albedo), 0.9 * marks[:, None])


def _paint_facade(style: Style, albedo: Tensor, uv: Tensor, footprint: Tensor, normal: Tensor,
                  params: Tensor) -> tuple[Tensor, Tensor]:
    """Windows on the vertical faces of buildings: albedo (M, 3) and glass fraction (M,)."""
    u, v = uv[:, 0], uv[:, 1]
    spacing, width, storey, frac = params.unbind(1)
    cols = filtered_square(u / spacing, width / spacing, footprint[:, 0] / spacing)
    rows = filtered_square((v - 0.9) / storey, frac, footprint[:, 1] / storey)
    glass = cols * rows * (v > storey).float() * (normal[:, 1].abs() < 0.5).float()
    albedo = torch.lerp(albedo, _colours([style.window_colour])[0].expand_as(albedo), glass[:, None])
    return albedo, glass


def _paint_wall(style: Style, albedo: Tensor, uv: Tensor, footprint: Tensor, normal: Tensor, draws: Tensor,
                layout: dict[str, float]) -> Tensor:
    """A room wall's albedo (M, 3): a baseboard and one door or picture per wall (objects of known size)."""
    u, v = uv[:, 0], uv[:, 1]
    fu, fv = footprint[:, 0], footprint[:, 1]
    board = coverage(v, -1.0, 0.1, fv)[:, None]
    albedo = torch.lerp(albedo, albedo * 0.45, board)
    across_x = normal[:, 0].abs() > 0.5  # such a wall's u runs along z
    lo = torch.where(across_x, 0.8, -layout["width"] / 2 + 0.8)
    hi = torch.where(across_x, layout["depth"] - 0.8, layout["width"] / 2 - 0.8)
    centre = lo + (hi - lo) * draws[:, 0]
    door = draws[:, 1] < 0.4
    half = torch.where(door, 0.45, 0.25 + 0.35 * draws[:, 2])
    bottom = torch.where(door, 0.0, 1.1 + 0.2 * draws[:, 3])
    top = torch.where(door, 2.05, bottom + 0.4 + 0.4 * draws[:, 3])
    inside = (coverage(u, centre - half, centre + half, fu) * coverage(v, bottom, top, fv))[:, None]
    pictures = _colours(style.palette[Surface.BALL])
    picture = pictures[(draws[:, 2] * len(pictures)).long().clamp(max=len(pictures) - 1)]
    door_colour = _colours(style.palette[Surface.FURNITURE])[0] * 0.8
    return torch.lerp(albedo, torch.where(door[:, None], door_colour, picture), inside)


def _paint_car(style: Style, kind: Surface, albedo: Tensor, body: Tensor, uv: Tensor, footprint: Tensor,
               normal: Tensor, box: Tensor) -> tuple[Tensor, Tensor]:
    """Cars: the cabin's windows between body-coloured pillars and roof, lamps on the body's ends.

    Returns albedo (M, 3) and glass fraction (M,); ``box`` (M, 7) are the parameters of the hit boxes.
    """
    u, v = uv[:, 0], uv[:, 1]
    fu, fv = footprint[:, 0], footprint[:, 1]
    c, s = torch.cos(box[:, 6]), torch.sin(box[:, 6])
    local_z = s * normal[:, 0] + c * normal[:, 2]  # the normal's component along the car
    side = normal[:, 1].abs() < 0.5
    if kind == Surface.GLASS:
        length = torch.where(local_z.abs() > 0.5, 2 * box[:, 3], 2 * box[:, 5])  # of the face, along u
        glass = coverage(u, 0.12, length - 0.12, fu) * coverage(v, 0.05, 2 * box[:, 4] - 0.08, fv) * side
        return torch.lerp(body, albedo, glass[:, None]), glass
    width = 2 * box[:, 3]
    lamps = coverage(v, 0.25, 0.4, fv) * (coverage(u, 0.1, 0.4, fu) + coverage(u, width - 0.4, width - 0.1, fu))
    lamps = lamps * (local_z.abs() > 0.5)
    front = torch.tensor([1.0, 0.95, 0.8]).expand_as(albedo)
    rear = torch.tensor([0.6, 0.04, 0.02]).expand_as(albedo)
    lamp_colour = torch.where((local_z > 0)[:, None], front, rear)
    return torch.lerp(albedo, lamp_colour, lamps[:, None]), torch.zeros_like(u)


def _albedo(scene: Scene, style: Style, hit: Hit, prim: Tensor, mats: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """Albedo (M, 3) and mirror reflectivity (M,) of the hit points."""
    surface = scene.surface[prim]
    albedo = mats["colour"][prim]
    gloss = torch.zeros(len(prim))
    uv = hit.uv + mats["offset"][prim]
    seed = mats["seed"][prim]
    for s in surface.unique().tolist():
        sel = (surface == s).nonzero().squeeze(1)
        kind = Surface(s)
        fp = hit.footprint[sel]
        if kind == Surface.ROAD:
            albedo[sel] = _paint_ground(style, hit.uv[sel], fp, seed[sel], scene.layout)
            continue
        albedo[sel] = albedo[sel] * pattern(style.textures.get(kind, _PLAIN), uv[sel], fp, seed[sel])[:, None]
        if kind == Surface.FACADE:
            albedo[sel], gloss[sel] = _paint_facade(style, albedo[sel], hit.uv[sel], fp, hit.normals[sel],
                                                    mats["facade"][prim[sel]])
            gloss[sel] *= style.reflectivity
        elif kind == Surface.WALL:
            albedo[sel] = _paint_wall(style, albedo[sel], hit.uv[sel], fp, hit.normals[sel],
                                      mats["draws"][prim[sel], 4:], scene.layout)
        elif kind in (Surface.CAR, Surface.GLASS):
            box = scene.boxes[prim[sel] - len(scene.planes)]
            albedo[sel], glass = _paint_car(style, kind, albedo[sel], mats["body"][prim[sel]], hit.uv[sel], fp,
                                            hit.normals[sel], box)
            gloss[sel] = style.reflectivity * (0.2 + 0.8 * glass)
    return albedo.clamp(0.0, 1.0), gloss


def _sky(style: Style, dirs: Tensor, sun: Tensor | None) -> Tensor:
    """Sky radiance (M, 3) in the unit directions ``dirs`` (M, 3): horizon-to-zenith gradient and sun glow."""
    up = dirs[:, 1].clamp(0.0, 1.0).sqrt()
    zenith, horizon = _colours([style.sky_zenith])[0], _colours([style.sky_horizon])[0]
    sky = torch.lerp(horizon, zenith, up[:, None])
    below = dirs[:, 1] < 0  # reflections pointing down see a darker horizon
    sky[below] = horizon * 0.5
    if sun is not None:
        glow = (dirs[:, 0] * sun[0] + dirs[:, 1] * sun[1] + dirs[:, 2] * sun[2]).clamp_min(0.0)
        for _ in range(6):  # glow ** 64 by squaring: exact, unlike pow
            glow = glow * glow
        sky = sky + _colours([style.sun_colour])[0] * (0.12 * glow)[:, None]
    return sky


def _camera_response(style: Style, radiance: Tensor, generator: torch.Generator, cx: float, cy: float) -> Tensor:
    """Display image 3 x H x W in [0, 1] from linear radiance 3 x H x W."""
    y = radiance * style.exposure
    image = (y / (1 + y)).sqrt()
    grey = image.mean(0, keepdim=True)
    image = torch.lerp(grey, image, style.saturation)
    image = (image - 0.5) * style.contrast + 0.5
    image = image * _colours([style.tint])[0][:, None, None]
    _, h, w = image.shape
    if style.vignette:
        u = (torch.arange(w, dtype=torch.float32) - cx) / (w / 2)
        v = (torch.arange(h, dtype=torch.float32) - cy) / (w / 2)
        image = image * (1 - style.vignette * (u[None, :] ** 2 + v[:, None] ** 2))
    if style.noise_std:
        # Triangular noise from uniform draws: no transcendental functions, so identical on every CPU.
        u1, u2 = torch.rand(2, 3, h, w, generator=generator)
        image = image + (u1 + u2 - 1) * (style.noise_std * math.sqrt(6))
    return image.clamp(0.0, 1.0)


def drop_small(ids: Tensor, min_area: int) -> Tensor:
    """The id map H x W (0 background) with every id of fewer than ``min_area`` pixels set to 0."""
    _, inverse, counts = torch.unique(ids, return_inverse=True, return_counts=True)
    return torch.where(counts[inverse] >= min_area, ids, 0)


def _radiance(scene: Scene, style: Style, generator: torch.Generator, hit: Hit) -> Tensor:
    """Linear radiance (H * W, 3) of every pixel of ``hit`` (``scene.cast()``): shaded surfaces and sky."""
    prim = hit.prim.flatten()[hit.pixels]
    mats = _materials(scene, style, generator)
    albedo, gloss = _albedo(scene, style, hit, prim, mats)

    points, normals = hit.points, hit.normals
    view = hit.rays.flatten(1).T
    view = view / (view * view).sum(1, keepdim=True).sqrt()
    sun = None
    if scene.lamp is not None:
        to_light = torch.tensor(scene.lamp) - points
        dist2 = (to_light * to_light).sum(1)
        direction = to_light / dist2.sqrt()[:, None]
        falloff = (4.0 / dist2).clamp(max=1.5)  # inverse square, 1 at 2 m
        t_max = 1.0
    else:
        lo, hi = style.sun_elevation
        elevation = math.radians(lo + (hi - lo) * torch.rand((), generator=generator).item())
        az = scene.sun_azimuth
        sun = torch.tensor([math.cos(elevation) * math.sin(az), math.sin(elevation),
                            math.cos(elevation) * math.cos(az)])
        to_light, direction = sun, sun.expand_as(points)
        falloff = torch.ones(len(points))
        t_max = math.inf
    ndl = (normals * direction).sum(1).clamp_min(0.0)
    if style.shadows:
        test = (ndl > 0).nonzero().squeeze(1)
        eps = 2e-3 * (1 + hit.depth.flatten()[hit.pixels[test]] / 10)
        origins = points[test] + normals[test] * eps[:, None]
        ndl[test[scene.shadowed(origins, to_light[test] if to_light.dim() == 2 else to_light, t_max)]] = 0.0
    # Sky light comes from above (indoors light bounces everywhere); vertical faces darken near the ground
    # (cheap ambient occlusion).
    occlusion = 1 - 0.35 * (normals[:, 1].abs() < 0.7).float() / (1 + (points[:, 1] / 0.3) ** 2)
    up = 0.25 if scene.lamp is None else 0.1
    ambient = _colours([style.ambient_colour])[0] * ((1 - up + up * normals[:, 1]) * occlusion)[:, None]
    direct = _colours([style.sun_colour])[0] * (ndl * falloff)[:, None]
    radiance = albedo * (ambient + direct)
    if style.reflectivity:
        v = view[hit.pixels]
        cos = (v * normals).sum(1, keepdim=True)
        grazing = (1 + cos) * (1 + cos)
        fresnel = 0.3 + 0.7 * grazing * grazing  # Schlick-like: glass mirrors more at grazing angles
        radiance = radiance + (gloss[:, None] * fresnel) * _sky(style, v - 2 * cos * normals, sun)

    image = torch.empty(hit.prim.numel(), 3)
    miss = (hit.prim.flatten() < 0).nonzero().squeeze(1)
    if len(miss):
        image[miss] = _sky(style, view[miss], sun)
    image[hit.pixels] = radiance
    return image


def render_scene(scene: Scene, style: Style, generator: torch.Generator,
                 mirrors: torch.Generator | None = None) -> dict[str, Tensor]:
    """Render ``scene`` in ``style``: image 3 x H x W [0, 1], depth H x W (0 invalid), instances H x W (whole
    objects, ``drop_small``), parts H x W (one id per primitive of an object: its index + 1), intrinsics (4,).

    With ``mirrors`` (the generator of their draws), mirror patches on the ground (``ground_mirror_mask``) show the
    scene mirrored in the ground (rendered from ``mirrored_in_ground``'s camera) while the depth stays the
    ground's: the image shows another depth than the geometry, as puddles, polished floors and mirrors do."""
    cam = scene.camera
    hit = scene.cast()
    materials = generator.get_state()
    image = _radiance(scene, style, generator, hit)
    if mirrors is not None:
        mask = ground_mirror_mask(scene, hit, mirrors)
        if mask.any():
            mirrored = replace(scene, camera=mirrored_in_ground(cam))
            same_draws = torch.Generator().set_state(materials)  # the same materials, sun and lamp
            reflected = _radiance(mirrored, style, same_draws, mirrored.cast())
            reflected = reflected.reshape(cam.height, cam.width, 3).flip(0).reshape(-1, 3)
            image = torch.lerp(image, reflected, mask[:, None])
    h, w = cam.height, cam.width
    image = _camera_response(style, image.T.reshape(3, h, w), generator, cam.cx, cam.cy)

    valid = torch.isfinite(hit.depth) & (hit.depth >= scene.min_depth) & (hit.depth <= scene.max_depth)
    objects = torch.where(hit.prim >= 0, scene.instance[hit.prim.clamp_min(0)], 0)
    min_area = max(1, round(MIN_INSTANCE_FRACTION * h * w))  # as WeSTARLoss rounds min_instance_fraction
    return {
        "image": image,
        "depth": torch.where(valid, hit.depth, 0.0),
        "instances": drop_small(objects, min_area),
        "parts": torch.where(objects > 0, hit.prim + 1, 0),
        "intrinsics": cam.intrinsics,
    }


def render_sample(family: str, style: str, seed: int, index: int, height: int, width: int,
                  haze_beta: float = 0.0, ground_mirrors: float = 0.0) -> dict[str, Tensor]:
    """Render sample ``index``: image 3 x H x W [0, 1], depth H x W metric z-depth (0 invalid: sky, out of range),
    instances H x W int64 (one id >= 1 per whole object: a car, a building, a tree, a table, with its parts merged;
    ground / walls / sky and objects under ``MIN_INSTANCE_FRACTION`` of the image 0), parts H x W int64 (one id
    per primitive of an object), intrinsics (fx, fy, cx, cy) float32 (4,).

    ``style`` is a named style or ``"random"`` (a randomised style per sample). Depth-aware haze (``apply_haze``,
    the style's airlight) of density ``haze_beta`` plus the style's own ``haze_beta`` (1/m) is added when > 0.
    With chance ``ground_mirrors`` the sample has mirror patches on its ground (``render_scene``); their draws come
    from a generator of their own, so every other pixel is the sample rendered without them.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown scene family {family!r}: choose one of {', '.join(FAMILIES)}")
    if haze_beta < 0:
        raise ValueError(f"haze_beta must be >= 0, got {haze_beta}")
    if not 0.0 <= ground_mirrors <= 1.0:
        raise ValueError(f"ground_mirrors must be a probability in [0, 1], got {ground_mirrors}")
    look = resolve_style(family, style, seed, index)
    generator = torch.Generator().manual_seed(sample_seed(family, style, seed, index))
    scene = sample_scene(family, generator, height, width)
    mirrors = None
    if ground_mirrors > 0:
        mirrors = torch.Generator().manual_seed(sample_seed(family, f"{style}/ground_mirrors", seed, index))
        mirrors = mirrors if torch.rand((), generator=mirrors).item() < ground_mirrors else None
    sample = render_scene(scene, look, generator, mirrors)
    beta = look.haze_beta + haze_beta
    if beta > 0:
        sample["image"] = apply_haze(sample["image"][None], sample["depth"][None], beta, look.haze_colour)[0]
    return sample


def apply_haze(
    image: Tensor, depth: Tensor, beta: float | Tensor, airlight: float | Sequence[float] | Tensor
) -> Tensor:
    """Haze I = J e^(-beta d) + A (1 - e^(-beta d)): image B x 3 x H x W, depth B x H x W metres (0 invalid: pure
    airlight), beta (1/m) scalar or (B,), airlight A scalar, (3,) or (B, 3) -> B x 3 x H x W."""
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be B x 3 x H x W, got {tuple(image.shape)}")
    if depth.shape != (image.shape[0], *image.shape[2:]):
        raise ValueError(f"depth must be B x H x W matching the image {tuple(image.shape)}, got {tuple(depth.shape)}")
    beta = torch.as_tensor(beta, dtype=image.dtype, device=image.device)
    if (beta < 0).any():
        raise ValueError(f"haze beta must be >= 0, got {beta.tolist()}")
    airlight = torch.as_tensor(airlight, dtype=image.dtype, device=image.device)
    if airlight.dim() == 0:
        airlight = airlight.reshape(1, 1, 1, 1)
    elif airlight.shape == (3,):
        airlight = airlight.reshape(1, 3, 1, 1)
    elif airlight.shape == (image.shape[0], 3):
        airlight = airlight.reshape(-1, 3, 1, 1)
    else:
        raise ValueError(f"airlight must be a scalar, (3,) or (B, 3), got {tuple(airlight.shape)}")
    transmission = torch.exp(-beta.reshape(-1, 1, 1) * depth) * (depth > 0)
    transmission = transmission[:, None]
    return image * transmission + airlight * (1 - transmission)
