"""The `convert` stage: the normalised CNN as a sinabs rate-coded SNN.

Biases live on two time scales: the CNN adds a bias once per training frame (30 ms with
10 bins over 300 ms), the SNN at every time step (1 ms), so the SNN divides every bias by
the number of its time steps per training frame (sinabs's ``bias_rescaling``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from spikescale.errors import require
from spikescale.io import write_json
from spikescale.model import NetworkSource, load_cnn, save_cnn, to_snn
from spikescale.params import ConversionParams, Params
from spikescale.simulate import spiking_layers


def bias_ratio(
    setting: str | float, frame_durations_us: np.ndarray | None, time_bin_us: int
) -> float:
    """What biases are divided by: ``setting`` if a number; for ``"auto"`` the training
    frames' mean duration over the SNN's time step."""
    if setting != "auto":
        return float(setting)
    if frame_durations_us is None:
        raise ValueError(
            "conversion.bias_rescaling: auto needs the training frames' durations "
            "(frame_duration_us in the frames file); rerun the frames stage, or set a number"
        )
    mean = float(np.mean(frame_durations_us)) if len(frame_durations_us) else 0.0
    if not mean > 0:
        raise ValueError(
            f"conversion.bias_rescaling: auto: the training frames' mean duration is {mean} us; "
            "expected > 0 (set conversion.bias_rescaling to a number instead)"
        )
    return mean / time_bin_us


def convert(
    cnn: nn.Sequential, arch: NetworkSource, p: ConversionParams, bias_rescaling: float = 1.0
) -> tuple[nn.Sequential, list[dict]]:
    """The SNN (biases divided by ``bias_rescaling``) and one row per module describing it."""
    snn = to_snn(cnn, arch, p, bias_rescaling)
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


def run_convert(
    params: Params, cnn_path: str | Path, frames_path: str | Path, out: str | Path, summary_out
) -> tuple[list[dict], float]:
    """The stage: convert the normalised CNN, with biases divided as ``bias_rescaling``
    says (``auto`` reads the training frames' durations); write the SNN and its layer
    summary; return the module rows and the bias ratio."""
    from spikescale.frames import load_arrays
    from spikescale.network import layer_spec

    p = params.conversion
    require(frames_path)
    cnn, arch, _ = load_cnn(cnn_path)
    durations = load_arrays(frames_path).get("frame_duration_us")
    ratio = bias_ratio(p.bias_rescaling, durations, params.evaluation.time_bin_us)
    _, rows = convert(cnn, arch, p, ratio)
    conversion = p.model_dump(mode="json")
    save_cnn(cnn, arch, out, layers=layer_spec(cnn), conversion=conversion, bias_rescaling=ratio)
    write_json({"conversion": conversion, "bias_rescaling": ratio, "modules": rows}, summary_out)
    return rows, ratio
