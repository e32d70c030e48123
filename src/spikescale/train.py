"""The `train` stage: a small CNN on binned event frames, deterministic for a seed.

Frames may be a read-only ``numpy.memmap`` (:func:`spikescale.frames.load_arrays`): they are
read batch by batch (:func:`take`), never the whole split at once.

Speed (``benchmarks/train.py`` measures it): with ``training.channels_last: true``
networks and batches of 4-D frames are held channels-last (NHWC), where oneDNN's
convolutions and PyTorch's pooling run about 1.4x faster on the CPU than in the default
NCHW layout. The arithmetic is the same but summed in another order, so the weights differ
from NCHW training in the last bits (deterministic all the same: one seed, one result),
and so do the sweep's figures; the default keeps NCHW, and with it the results published
so far. Evaluation passes run under ``torch.inference_mode``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from spikescale.model import Architecture, NetworkSource, build_cnn
from spikescale.network import FactoryNetwork, build_network, import_checkpoint
from spikescale.params import ModelParams, Params, TrainingParams


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def memory_format(frames: np.ndarray, channels_last: bool) -> torch.memory_format:
    """Channels-last for 4-D (frames, channels, height, width) input where asked for, else
    the default layout."""
    if channels_last and np.ndim(frames) == 4:
        return torch.channels_last
    return torch.contiguous_format


def to_batch(frames: np.ndarray, device: str, channels_last: bool = False) -> torch.Tensor:
    """A batch of frames (any integer or float dtype) as float32 on ``device``, laid out
    as :func:`memory_format` says. The float32 copy is the batch's own (a slice of the
    read-only frame file is never handed to torch)."""
    rows = torch.from_numpy(np.array(frames, dtype=np.float32))
    return rows.to(device=device, memory_format=memory_format(frames, channels_last))


def take(frames: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``frames[idx]`` (rows in ``idx``'s order), read in file order from a memmap."""
    idx = np.asarray(idx)
    order = np.argsort(idx, kind="stable")
    out = np.empty((len(idx), *frames.shape[1:]), dtype=frames.dtype)
    out[order] = frames[idx[order]]
    return out


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    frames: np.ndarray,
    batch_size: int,
    device: str,
    indices: np.ndarray | None = None,
    channels_last: bool = False,
) -> np.ndarray:
    """Logits of ``frames`` (of ``frames[indices]`` if given), ``batch_size`` frames at a time."""
    model.eval().to(memory_format=memory_format(frames, channels_last))
    n = len(frames) if indices is None else len(indices)
    out = []
    for start in range(0, n, batch_size):
        if indices is None:
            rows = frames[start : start + batch_size]
        else:
            rows = take(frames, indices[start : start + batch_size])
        out.append(model(to_batch(rows, device, channels_last)).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def sample_accuracy(logits: np.ndarray, sample_index: np.ndarray, labels: np.ndarray) -> float:
    """One decision per recording: the mean of its frames' logits."""
    summed = np.zeros((len(labels), logits.shape[1]), dtype=np.float64)
    np.add.at(summed, sample_index, logits)
    counts = np.bincount(sample_index, minlength=len(labels))
    have = counts > 0
    correct = summed[have].argmax(1) == labels[have]
    return float(correct.sum() / len(labels))


def split_by_sample(sample_index: np.ndarray, n_samples: int, fraction: float, seed: int):
    """Frame masks (train, validation) that keep all frames of a recording together."""
    rng = np.random.default_rng(seed)
    held = rng.permutation(n_samples)[: int(round(fraction * n_samples))]
    is_val = np.isin(sample_index, held)
    return ~is_val, is_val


def make_network(
    p: TrainingParams,
    model: ModelParams,
    input_shape: tuple[int, int, int],
    classes: int,
) -> tuple[nn.Module, NetworkSource]:
    """The untrained network: the built-in family, or what ``model.factory`` builds."""
    if model.factory is None:
        arch = Architecture(*input_shape, classes, tuple(p.channels), p.kernel_size, p.bias)
        return build_cnn(arch), arch
    source = FactoryNetwork(model.factory, tuple(int(s) for s in input_shape), classes)
    return build_network(model.factory, source.input_shape, classes), source


def accuracy_report(
    model: nn.Module, test: dict[str, np.ndarray], device: str, channels_last: bool = False
) -> dict:
    """The network's accuracy on the test frames, per frame and per recording."""
    logits = predict_logits(model, test["frames"], 512, device, channels_last=channels_last)
    test_frame_labels = test["labels"][test["sample_index"]]
    return {
        "cnn_test_frame_accuracy": float((logits.argmax(1) == test_frame_labels).mean()),
        "cnn_test_accuracy": sample_accuracy(logits, test["sample_index"], test["labels"]),
        "test_samples": int(len(test["labels"])),
        "test_frames_per_recording": float(len(test["sample_index"]) / len(test["labels"])),
    }


def image_accuracy_report(report: dict) -> dict:
    """``accuracy_report`` of a network trained and tested on images, named for what it is.

    With ``training.input: images`` the CNN's test accuracy is its accuracy on the test
    *images* (one image per recording, so frame and recording accuracy coincide); the SNN
    is still evaluated on the test events. ``cnn_test_image_accuracy`` says so;
    ``cnn_test_accuracy`` (the reference the sweep compares the SNN with) keeps that value.
    """
    return {
        **report,
        "cnn_test_image_accuracy": report["cnn_test_accuracy"],
        "training_input": "images",
    }


@torch.inference_mode(False)  # training needs autograd whatever the caller set
@torch.enable_grad()
def train_cnn(
    train: dict[str, np.ndarray],
    test: dict[str, np.ndarray],
    p: TrainingParams,
    classes: int,
    device: str = "cpu",
    progress: bool = True,
    network: ModelParams | None = None,
) -> tuple[nn.Module, NetworkSource, dict]:
    """Train on ``train`` frames; return the model, how it was built and a report.

    ``network`` says which network (default: the built-in family). With
    ``network.checkpoint`` the factory's network gets the checkpoint's weights (names and
    shapes checked) instead of training, and the report marks it ``imported``.
    """
    network = network or ModelParams()
    seed_everything(p.seed)
    frames, sample_index, labels = train["frames"], train["sample_index"], train["labels"]
    model, source = make_network(p, network, tuple(frames.shape[1:]), classes)
    if network.checkpoint is not None:
        import_checkpoint(network.checkpoint, model, network.factory)
        report = {
            "history": [],
            **accuracy_report(model.to(device), test, device),
            "train_frames": 0,
            "imported": True,
            "checkpoint": network.checkpoint,
        }
        return model.cpu().eval(), source, report
    nhwc = p.channels_last
    model = model.to(device=device, memory_format=memory_format(frames, nhwc))
    optimiser = torch.optim.Adam(
        model.parameters(), lr=p.learning_rate, weight_decay=p.weight_decay
    )
    loss_fn = nn.CrossEntropyLoss()
    fit, val = split_by_sample(sample_index, len(labels), p.validation_fraction, p.seed)
    fit_idx = np.flatnonzero(fit)
    frame_labels = labels[sample_index]
    generator = torch.Generator().manual_seed(p.seed)
    history = []
    for epoch in range(1, p.epochs + 1):
        model.train()
        order = fit_idx[torch.randperm(len(fit_idx), generator=generator).numpy()]
        total_loss, correct = 0.0, 0
        batches = range(0, len(order), p.batch_size)
        for start in tqdm(
            batches,
            desc=f"epoch {epoch}/{p.epochs}",
            disable=None if progress else True,
            leave=False,
        ):
            idx = order[start : start + p.batch_size]
            x = to_batch(take(frames, idx), device, nhwc)
            y = torch.from_numpy(frame_labels[idx]).to(device)
            optimiser.zero_grad()
            with torch.enable_grad():  # even where a caller turned gradients off globally
                out = model(x)
                loss = loss_fn(out, y)
                loss.backward()
            optimiser.step()
            total_loss += loss.item() * len(idx)
            correct += int((out.argmax(1) == y).sum())
        row = {
            "epoch": epoch,
            "loss": total_loss / len(order),
            "train_frame_accuracy": correct / len(order),
        }
        if val.any():
            logits = predict_logits(
                model, frames, 512, device, indices=np.flatnonzero(val), channels_last=nhwc
            )
            row["val_frame_accuracy"] = float((logits.argmax(1) == frame_labels[val]).mean())
        history.append(row)
        if progress:
            print(
                " ".join(
                    f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                )
            )
    report = {
        "history": history,
        **accuracy_report(model, test, device, nhwc),
        "train_frames": int(len(fit_idx)),
        "imported": False,
    }
    return model.cpu().eval(), source, report


def run_train(
    params: Params,
    frames_dir: str | Path,
    events_path: str | Path,
    out: str | Path,
    report_out: str | Path,
    progress: bool = True,
) -> dict:
    """The stage: train the CNN on the training frames (or, with ``training.input:
    images``, on the images the recordings were made from), or import its checkpoint;
    write the model and the training report; return the report."""
    from spikescale.event_store import read_metadata
    from spikescale.frames import load_arrays
    from spikescale.io import write_json
    from spikescale.model import save_cnn

    on_images = params.training.input == "images"
    if on_images:
        from spikescale.images import as_training_set, training_images

        images = training_images(params.dataset)
        train, test = (as_training_set(*images[s]) for s in ("train", "test"))
    else:
        train, test = (load_arrays(Path(frames_dir) / f"{s}.npz") for s in ("train", "test"))
    classes = len(read_metadata(events_path)["classes"])
    model, arch, report = train_cnn(
        train, test, params.training, classes, params.device, progress, network=params.model
    )
    if on_images:
        report = {**image_accuracy_report(report), "polarities": params.training.polarities}
    save_cnn(model, arch, out)
    write_json(report, report_out)
    return report
