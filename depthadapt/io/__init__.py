"""Files in and out: atomic writes and output manifests, depth and image formats, point clouds.

``depthadapt.io.visualize`` (panels of predictions and errors for people) builds on ``depthadapt.metrics``.
"""

from depthadapt.io.atomic import (
    EXPORT_RECORD,
    ExistingOutputError,
    atomic_directory,
    atomic_path,
    atomic_write,
    check_export_directory,
    check_replaceable_file,
    file_sha256,
)
from depthadapt.io.formats import (
    IMAGE_SUFFIXES,
    UnreadableFileError,
    colorize_depth,
    decode_image_file,
    list_image_files,
    read_depth,
    read_image,
    read_raw_float32,
    read_sintel_dpt,
    write_color_png,
    write_depth_npy,
    write_depth_png16,
    write_image_file,
    write_relative_png16,
)
from depthadapt.io.manifest import MANIFEST_NAME, OutputManifestError, check_output_manifest
from depthadapt.io.pointcloud import check_intrinsics, depth_to_points, make_intrinsics, unproject, write_ply

__all__ = [
    "EXPORT_RECORD",
    "IMAGE_SUFFIXES",
    "ExistingOutputError",
    "MANIFEST_NAME",
    "OutputManifestError",
    "UnreadableFileError",
    "atomic_directory",
    "atomic_path",
    "atomic_write",
    "check_export_directory",
    "check_intrinsics",
    "check_output_manifest",
    "check_replaceable_file",
    "colorize_depth",
    "decode_image_file",
    "depth_to_points",
    "file_sha256",
    "list_image_files",
    "make_intrinsics",
    "read_depth",
    "read_image",
    "read_raw_float32",
    "read_sintel_dpt",
    "unproject",
    "write_color_png",
    "write_depth_npy",
    "write_depth_png16",
    "write_image_file",
    "write_ply",
    "write_relative_png16",
]
