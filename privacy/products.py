"""The clipped sums' matrix products, one kernel per device and compute dtype.

The clipping engine forms each layer's clipped sum ``sum_i c_i g_i a_i^T`` as one matrix
product into an fp32 buffer. How that product is computed is chosen here, once per
``accumulate``, from where the forward pass ran and in which dtype:

``fp32`` (fp32 anywhere; fp16 on CUDA)
    fp32 inputs, fp32 accumulation and output. fp16 stays here: the unscaled, clipped
    factors (``c_i / loss scale``) can fall below fp16's range and would flush to zero.
``onednn-bf16`` (bf16 or fp16 autocast on CPU, where oneDNN is available)
    fp32 inputs and output, with oneDNN's bf16 "fpmath" mode on while the clipped sums
    are formed (not the norms): oneDNN may round the inputs to bf16 internally (twice as
    fast on CPU).
``cuda-bf16`` (bf16 autocast on CUDA)
    bf16 inputs, fp32 accumulation and output (``torch.mm(..., out_dtype=torch.float32)``),
    added into the fp32 sum: the tensor-core product without the bf16 sum.

Either reduced-precision kernel rounds each operand to bf16 at most once, which moves
each element of a sample's outer product by less than ``(1 + 2^-7)^2 - 1 < 2^-6`` of
itself (round-to-nearest moves it by at most 2^-8; the bound also covers truncation).
Scaling every clip factor by :data:`REDUCED_PRECISION_MARGIN` keeps each sample's
contribution within ``max_grad_norm`` where that contribution is *one* outer product
(2-D inputs). Over a sequence it is a sum of one outer product per position, which may
cancel while their rounding errors add up: no margin bounds that, so the engine forms
sequence products in full fp32 (:func:`full_fp32_products`). The *sum* itself is never
rounded to bf16 (that would move it by up to 2^-8 of its magnitude before the noise,
which no per-sample margin bounds).

A process-wide reduced fp32 matmul mode (``torch.backends.cuda.matmul.fp32_precision =
"tf32"``, ``torch.set_float32_matmul_precision("high")``, or the same for oneDNN) would
silently compute fp32 norms and sums in TF32 or bf16 with no margin for it: refused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch

from privacy.errors import PrivacyInputError

__all__ = ["REDUCED_PRECISION_MARGIN", "ProductKernel", "full_fp32_products", "product_kernel"]

# See the module notes: bf16 rounding of both operands moves an outer product's elements
# by less than 2^-6 of themselves, even if it truncates.
REDUCED_PRECISION_MARGIN = 1 / (1 + 2**-6)

# The process-wide fp32 matmul modes that compute fp32 products in full fp32.
_FULL_FP32 = frozenset({"none", "ieee"})


def _fp32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor if tensor.dtype == torch.float32 else tensor.float()


def _addmm_fp32(out: torch.Tensor, mat1: torch.Tensor, mat2: torch.Tensor) -> None:
    out.addmm_(_fp32(mat1), _fp32(mat2))


def _addmm_cuda_bf16(out: torch.Tensor, mat1: torch.Tensor, mat2: torch.Tensor) -> None:
    # mm + add rather than addmm(out_dtype=...): torch releases differ on whether addmm's
    # fp32 ``self`` may go with bf16 factors; mm's fp32 output is accepted by all of them.
    out.add_(torch.mm(mat1.bfloat16(), mat2.bfloat16(), out_dtype=torch.float32))


@contextlib.contextmanager
def _no_mode() -> Iterator[None]:
    yield


@contextlib.contextmanager
def _onednn_bf16_mode() -> Iterator[None]:
    backend = torch.backends.mkldnn.matmul
    previous = backend.fp32_precision
    backend.fp32_precision = "bf16"
    try:
        yield
    finally:
        backend.fp32_precision = previous


@contextlib.contextmanager
def full_fp32_products() -> Iterator[None]:
    """fp32 products in full fp32 inside, also within a reduced kernel's mode (CPU). On
    CUDA nothing to do: fp32 products there are full fp32 (TF32 is refused up front)."""
    backend = torch.backends.mkldnn.matmul
    previous = backend.fp32_precision
    backend.fp32_precision = "ieee"
    try:
        yield
    finally:
        backend.fp32_precision = previous


@dataclass(frozen=True, slots=True)
class ProductKernel:
    """How one ``accumulate`` forms its weighted products.

    Enter :meth:`active` around forming the clipped sums (never the norms), scale the clip
    factors by ``margin``, and add each product into its fp32 sum with :meth:`addmm_`.
    """

    name: str
    margin: float
    addmm_: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]
    _mode: Callable[[], contextlib.AbstractContextManager[None]] = _no_mode

    def active(self) -> contextlib.AbstractContextManager[None]:
        """The backend mode the products run under (restored on exit)."""
        return self._mode()


FP32 = ProductKernel("fp32", 1.0, _addmm_fp32)
ONEDNN_BF16 = ProductKernel("onednn-bf16", REDUCED_PRECISION_MARGIN, _addmm_fp32, _onednn_bf16_mode)
CUDA_BF16 = ProductKernel("cuda-bf16", REDUCED_PRECISION_MARGIN, _addmm_cuda_bf16)

# (device type, autocast dtype) -> kernel; anything not listed runs in fp32.
_KERNELS: Mapping[tuple[str, torch.dtype], ProductKernel] = MappingProxyType(
    {
        ("cpu", torch.bfloat16): ONEDNN_BF16,
        ("cpu", torch.float16): ONEDNN_BF16,
        ("cuda", torch.bfloat16): CUDA_BF16,
    }
)


def product_kernel(compute_dtype: torch.dtype, device: torch.device) -> ProductKernel:
    """The kernel for products after a forward pass in ``compute_dtype`` on ``device``.

    Raises PrivacyInputError when a process-wide setting would reduce fp32 products there.
    """
    _refuse_reduced_fp32(device)
    kernel = _KERNELS.get((device.type, compute_dtype), FP32)
    if kernel is ONEDNN_BF16 and not torch.backends.mkldnn.is_available():
        return FP32
    return kernel


def _refuse_reduced_fp32(device: torch.device) -> None:
    backends = {"cpu": torch.backends.mkldnn.matmul, "cuda": torch.backends.cuda.matmul}
    backend = backends.get(device.type)
    if backend is None:
        return
    mode = backend.fp32_precision
    if mode not in _FULL_FP32:
        raise PrivacyInputError(
            f"fp32 matrix products on {device.type} are set to {mode!r} process-wide; "
            "per-sample norms and clipped sums need full fp32: set "
            "torch.set_float32_matmul_precision('highest') before training"
        )
