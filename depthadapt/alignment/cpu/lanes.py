"""16-lane vector primitives for the numba kernels of ``depthadapt.alignment.cpu.kernels``: compare, compress, count.

Packing the points that pass a test to the front of a buffer is the fit's costliest step in scalar code (a
data-dependent store per point, ~9 cycles). With AVX-512 a 16-point chunk is compressed in one instruction
(``vcompressps``). numba has no vector types, so these are ``numba.extending.intrinsic``s that emit LLVM vector
IR inline into the calling kernel: a comparison of 16 lanes returns a bit mask (an int64, bit i for lane i), which
``compress`` takes to store the chosen lanes, in order, at a position of another array. Every chunk is
``array[index:index + LANES]``; the caller keeps ``index + LANES <= array.size`` and handles the tail in scalar code.

On a CPU with AVX-512 the compression is the register form (``llvm.x86.avx512.mask.compress``) followed by a
masked store of the prefix; elsewhere it is LLVM's portable ``llvm.masked.compressstore``, which every target
lowers (scalar code where it has no instruction). Which one is chosen at compile time (``avx512()``); numba's
cache is keyed by the CPU, so a cached kernel never runs on a CPU it was not compiled for.
"""

from __future__ import annotations

from functools import cache

import llvmlite.binding
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

__all__ = ["LANES", "avx512", "compress", "compress_indices", "lanes_ge", "lanes_gt", "lanes_le", "lanes_lt",
           "lanes_not_finite", "lanes_residual_within", "popcount"]

LANES = 16
_I32, _I64 = ir.IntType(32), ir.IntType(64)
_MASK = ir.VectorType(ir.IntType(1), LANES)
# Set by the tests to compile the portable path on a CPU that has AVX-512.
FORCE_PORTABLE = False


@cache
def _host_avx512() -> bool:
    """Whether the host CPU has AVX-512 F (and VL), which the register-form compression needs."""
    features = llvmlite.binding.get_host_cpu_features()
    return bool(features.get("avx512f")) and bool(features.get("avx512vl"))


def avx512() -> bool:
    """Whether kernels compiled now use the AVX-512 register-form compression."""
    return _host_avx512() and not FORCE_PORTABLE


def _contiguous(*arrays: types.Array) -> None:
    """Refuse (at compile time) arrays that are not C-contiguous: a chunk is loaded as 16 adjacent elements."""
    for array in arrays:
        if not isinstance(array, types.Array) or array.layout != "C":
            raise TypingError(f"depthadapt.alignment.cpu.lanes needs C-contiguous arrays, got {array}")


def _declare(builder: ir.IRBuilder, name: str, result: ir.Type, arguments: list[ir.Type]) -> ir.Function:
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(result, arguments), name)


def _suffix(element: ir.Type) -> str:
    """LLVM's name of an element type in an overloaded intrinsic's name."""
    if isinstance(element, ir.DoubleType):
        return "f64"
    return "f32" if isinstance(element, ir.FloatType) else f"i{element.width}"


def _splat(builder: ir.IRBuilder, value: ir.Value, lanes: int) -> ir.Value:
    vector = ir.VectorType(value.type, lanes)
    first = builder.insert_element(ir.Constant(vector, ir.Undefined), value, _I32(0))
    return builder.shuffle_vector(first, first, ir.Constant(ir.VectorType(_I32, lanes), [0] * lanes))


def _pointer(context, builder, array_type, array, index):  # noqa: ANN001, ANN202 (numba's codegen objects)
    """The address of ``array[index]``."""
    return builder.gep(context.make_array(array_type)(context, builder, array).data, [index])


def _load(context, builder, array_type, array, index):  # noqa: ANN001, ANN202
    """``array[index:index + LANES]`` as an LLVM vector."""
    vector = ir.VectorType(context.get_data_type(array_type.dtype), LANES)
    return builder.load(_pointer(context, builder, array_type, array, index), align=1, typ=vector)


def _to_bits(builder: ir.IRBuilder, mask: ir.Value) -> ir.Value:
    return builder.zext(builder.bitcast(mask, ir.IntType(LANES)), _I64)


def _popcount(builder: ir.IRBuilder, bits: ir.Value) -> ir.Value:
    return builder.call(_declare(builder, "llvm.ctpop.i64", _I64, [_I64]), [bits])


def _convert(builder: ir.IRBuilder, vector: ir.Value, element: ir.Type) -> ir.Value:
    """Lanes converted to ``element``: float widening or narrowing, integer sign extension or truncation."""
    source = vector.type.element
    if source == element:
        return vector
    target = ir.VectorType(element, vector.type.count)
    if isinstance(element, ir.IntType):
        return builder.sext(vector, target) if element.width > source.width else builder.trunc(vector, target)
    return builder.fpext(vector, target) if isinstance(element, ir.DoubleType) else builder.fptrunc(vector, target)


def _store_compressed(context, builder, vector, bits, target_type, target, position):  # noqa: ANN001, ANN202
    """The lanes of ``vector`` whose bit is set, in order, converted to the target's dtype, at target[position:]."""
    element = context.get_data_type(target_type.dtype)
    if not avx512():
        mask = builder.bitcast(builder.trunc(bits, ir.IntType(LANES)), _MASK)
        converted = _convert(builder, vector, element)
        store = _declare(builder, f"llvm.masked.compressstore.v{LANES}{_suffix(element)}", ir.VoidType(),
                         [converted.type, ir.PointerType(), _MASK])
        builder.call(store, [converted, _pointer(context, builder, target_type, target, position), mask])
        return
    # In 512-bit parts (16 x 32 bits or 8 x 64 bits): compress in registers, then store the prefix with a mask.
    width = 512 // vector.type.element.width if isinstance(vector.type.element, ir.IntType) else (
        16 if isinstance(vector.type.element, ir.FloatType) else 8)
    offset = position
    for start in range(0, LANES, width):
        part = vector if width == LANES else builder.shuffle_vector(
            vector, vector, ir.Constant(ir.VectorType(_I32, width), list(range(start, start + width))))
        part_bits = builder.and_(builder.lshr(bits, _I64(start)), _I64((1 << width) - 1))
        mask = builder.bitcast(builder.trunc(part_bits, ir.IntType(width)), ir.VectorType(ir.IntType(1), width))
        name = f"llvm.x86.avx512.mask.compress.v{width}{_suffix(part.type.element)}"
        compressed = builder.call(_declare(builder, name, part.type, [part.type, part.type, mask.type]),
                                  [part, ir.Constant(part.type, ir.Undefined), mask])
        converted = _convert(builder, compressed, element)
        count = _popcount(builder, part_bits)
        prefix_bits = builder.sub(builder.shl(_I64(1), count), _I64(1))  # the first ``count`` lanes
        prefix = builder.bitcast(builder.trunc(prefix_bits, ir.IntType(width)), ir.VectorType(ir.IntType(1), width))
        store = _declare(builder, f"llvm.masked.store.v{width}{_suffix(element)}.p0", ir.VoidType(),
                         [converted.type, ir.PointerType(), _I32, prefix.type])
        builder.call(store, [converted, _pointer(context, builder, target_type, target, offset), _I32(1), prefix])
        offset = builder.add(offset, count)


def _comparison(predicate: str, name: str):  # noqa: ANN202 (a numba intrinsic)
    """An intrinsic ``(array, index, bound) -> bits`` of ``array[index + i] <predicate> bound`` (ordered: NaN fails),
    with the bound converted to the array's dtype first (exact for a bound read off the array)."""

    def typer(typingctx, array, index, bound):  # noqa: ANN001, ANN202
        _contiguous(array)

        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            array_type, _, bound_type = signature.args
            values = _load(context, builder, array_type, args[0], args[1])
            limit = context.cast(builder, args[2], bound_type, array_type.dtype)
            return _to_bits(builder, builder.fcmp_ordered(predicate, values, _splat(builder, limit, LANES)))

        return types.int64(array, index, bound), codegen

    typer.__name__ = name
    return intrinsic(typer)


lanes_lt = _comparison("<", "lanes_lt")
lanes_le = _comparison("<=", "lanes_le")
lanes_gt = _comparison(">", "lanes_gt")
lanes_ge = _comparison(">=", "lanes_ge")


@intrinsic
def lanes_not_finite(typingctx, first, second, index):  # noqa: ANN001, ANN201
    """Bits of the lanes where ``first`` or ``second`` (float arrays) is NaN or infinite."""
    _contiguous(first, second)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        masks = []
        for array_type, array in zip(signature.args[:2], args[:2], strict=True):
            x = _load(context, builder, array_type, array, args[2])
            # x - x is 0 for a finite x and NaN otherwise
            masks.append(builder.fcmp_unordered("!=", builder.fsub(x, x), ir.Constant(x.type, None)))
        return _to_bits(builder, builder.or_(*masks))

    return types.int64(first, second, index), codegen


@intrinsic
def lanes_residual_within(typingctx, offset, x, index, scale, shift, limit):  # noqa: ANN001, ANN201
    """Bits of the lanes where ``|offset + shift + scale * x| <= limit`` (float32 arrays and scalars; evaluated in
    that order, without fused multiply-adds, as the same expression in a numba loop)."""
    _contiguous(offset, x)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        o = _load(context, builder, signature.args[0], args[0], args[2])
        v = _load(context, builder, signature.args[1], args[1], args[2])
        scale_, shift_, limit_ = (_splat(builder, a, LANES) for a in args[3:])
        residual = builder.fadd(builder.fadd(o, shift_), builder.fmul(scale_, v))
        magnitude = builder.call(_declare(builder, f"llvm.fabs.v{LANES}f32", residual.type, [residual.type]),
                                 [residual])
        return _to_bits(builder, builder.fcmp_ordered("<=", magnitude, limit_))

    if not all(a.dtype == types.float32 for a in (offset, x)) or not all(
            a == types.float32 for a in (scale, shift, limit)):
        return None
    return types.int64(offset, x, index, scale, shift, limit), codegen


@intrinsic
def popcount(typingctx, bits):  # noqa: ANN001, ANN201
    """How many bits are set (the lanes a mask chose)."""

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        return _popcount(builder, args[0])

    return types.int64(bits), codegen


@intrinsic
def compress(typingctx, source, index, bits, target, position):  # noqa: ANN001, ANN201
    """Store ``source[index + i]`` for every set bit i, in order, at ``target[position:]`` (converted to its dtype)."""
    _contiguous(source, target)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        values = _load(context, builder, signature.args[0], args[0], args[1])
        _store_compressed(context, builder, values, args[2], signature.args[3], args[3], args[4])
        return context.get_dummy_value()

    return types.none(source, index, bits, target, position), codegen


@intrinsic
def compress_indices(typingctx, index, bits, target, position):  # noqa: ANN001, ANN201
    """Store ``index + i`` for every set bit i, in order, at ``target[position:]`` (an integer array; index < 2**31)."""
    _contiguous(target)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        first = _splat(builder, context.cast(builder, args[0], signature.args[0], types.int32), LANES)
        indices = builder.add(first, ir.Constant(ir.VectorType(_I32, LANES), list(range(LANES))))
        _store_compressed(context, builder, indices, args[1], signature.args[2], args[2], args[3])
        return context.get_dummy_value()

    return types.none(index, bits, target, position), codegen
