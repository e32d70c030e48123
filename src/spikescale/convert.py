"""The `convert` stage: the normalised CNN as a sinabs rate-coded SNN."""

from __future__ import annotations

from torch import nn

from spikescale.model import Architecture, to_snn
from spikescale.params import ConversionParams
from spikescale.simulate import spiking_layers


def convert(
    cnn: nn.Sequential, arch: Architecture, p: ConversionParams
) -> tuple[nn.Sequential, list[dict]]:
    """The SNN and one row per module describing it."""
    snn = to_snn(cnn, arch, p)
    spiking = {id(m) for m in spiking_layers(snn)}
    rows = []
    for name, module in snn.named_children():
        row = {"module": name, "type": type(module).__name__}
        if id(module) in spiking:
            row.update(
                spike_threshold=float(module.spike_threshold),
                min_v_mem=None if module.min_v_mem is None else float(module.min_v_mem),
                spike_fn=module.spike_fn.__name__,
                reset_fn=type(module.reset_fn).__name__,
            )
        rows.append(row)
    return snn, rows
