"""The fast backend on the CPU: an event-driven numba kernel.

The kernel walks each sample step by step and does only the work that activity asks for:
activity between layers is the list of active positions with their channel vectors
(channel-last), each active position is scattered through the next pooling and weighted
layer into float32 accumulators of the positions it reaches (cost: synaptic operations,
not multiply-accumulates of every neuron at every step), and only positions that received
input, or whose state would still change without input (a SingleSpike backlog, a reset
value, a clip at ``min_v_mem``), are updated, their channels at once in SIMD lanes. A
convolution and its IAF layer run as one operation. Samples are split over threads (the
kernel releases the GIL). Memory: a few arrays of the network's size per thread, nothing
over time.

The modules, in the order data flows:

``program``
    The model's operations packed into a program: one record per operation with named
    fields (offsets, geometry, neuron parameters), weights, biases and index tables.
``run``
    The per-thread work arrays and the driver: samples, steps, operations in order.
``kernels``
    One kernel per kind of operation (input scan, convolution scatter, convolution + IAF,
    IAF, pooling, linear) and their bookkeeping helpers.
``neuron``
    The IAF update, sinabs's float32 operations in sinabs's order.
``blocks``
    Views of an operation's blocks of the work arrays, which the kernels index from zero.
``simd``
    The SIMD helper of the scatter and the linear layer (LLVM IR) and its plain-loop twin.
``jit``
    The numba flavours and the cache policy.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import nn

from spikescale.simulate.event_driven.program import compile_program, to_torch_order
from spikescale.simulate.event_driven.run import run_samples
from spikescale.simulate.graph import parse_model
from spikescale.simulate.result import SimulationResult, check_raster, checkpoint_steps


@torch.no_grad()
def simulate_fast_cpu(
    model: nn.Module,
    raster: torch.Tensor,
    checkpoints: np.ndarray,
    n_threads: int | None = None,
) -> SimulationResult:
    """Event-driven simulation on the CPU (numba); same results as
    :func:`~spikescale.simulate.reference.simulate_sinabs`.

    Samples are split over ``n_threads`` threads (default: ``torch.get_num_threads()``, so
    that ``torch.set_num_threads`` governs both backends).
    """
    check_raster(raster)
    batch, steps = int(raster.shape[0]), int(raster.shape[1])
    in_shape = tuple(int(s) for s in raster.shape[2:])
    ops = parse_model(model, in_shape)
    ck = checkpoint_steps(checkpoints, steps)
    prog = compile_program(ops, in_shape)
    # the kernel reads the input channel-major, as torch stores it
    frames = raster.detach().to("cpu", torch.float32).reshape(batch, steps, -1)
    frames = np.ascontiguousarray(frames.numpy())
    ck_unique, ck_inverse = np.unique(ck, return_inverse=True)
    ck_unique = ck_unique.astype(np.int64)
    _, last_n, last = prog.spiking[-1]
    counts = np.zeros((batch, prog.sizes.v), np.int32)
    snaps = np.zeros((batch, len(ck_unique), last_n), np.int32)

    def run(b0: int, b1: int) -> None:
        run_samples(frames, prog.net, prog.sizes, ck_unique, counts, snaps, b0, b1)

    threads = max(1, min(batch, torch.get_num_threads() if n_threads is None else n_threads))
    if threads == 1:
        run(0, batch)
    else:  # the kernel releases the GIL; samples differ in cost, so each thread takes
        # the next sample when it is free
        samples = itertools.count()

        def work() -> None:
            while (b := next(samples)) < batch:
                run(b, b + 1)

        with ThreadPoolExecutor(threads) as pool:
            for f in [pool.submit(work) for _ in range(threads)]:
                f.result()
    layer_counts = [
        to_torch_order(counts[:, off : off + n], op.layout, op.out_shape)
        for off, n, op in prog.spiking
    ]
    over_time = to_torch_order(snaps, last.layout, (last.n_out,))
    over_time = over_time[:, ck_inverse.reshape(-1)] if ck.size else over_time[:, :0]
    return SimulationResult(layer_counts, np.ascontiguousarray(over_time))
