"""Autoencoder training with PyTorch, exported as numpy weights (:class:`AutoencoderWeights`).

Only the trainer process imports this module (torch costs ~185 MiB and start-up time).
Training is deterministic for a seed: weight init and batch order derive from it (the
train/validation split is made by :mod:`scoring.training`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from config.model import AutoencoderSettings
from scoring.autoencoder import AutoencoderWeights

__all__ = ["AutoencoderFit", "build_network", "fit_scaler", "torch_error", "train_autoencoder"]


@dataclass(frozen=True)
class AutoencoderFit:
    """A trained autoencoder and how training went."""

    weights: AutoencoderWeights
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False


def fit_scaler(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and inverse std; zero-variance columns get ``inv_scale = 0`` (kept harmless)."""
    X = np.asarray(X, dtype=np.float64)
    mean = X.mean(axis=0)
    std = X.std(axis=0)
    inv = np.zeros_like(std)
    varying = std > 1e-12 * np.maximum(1.0, np.abs(mean))
    inv[varying] = 1.0 / std[varying]
    return mean, inv


def build_network(n_features: int, encoding_dim: int) -> nn.Sequential:
    """The architecture that :mod:`scoring.autoencoder` mirrors in numpy."""
    return nn.Sequential(
        nn.Linear(n_features, encoding_dim), nn.Tanh(), nn.Linear(encoding_dim, n_features)
    )


def train_autoencoder(
    train: np.ndarray, val: np.ndarray, settings: AutoencoderSettings, *, seed: int | None = None
) -> AutoencoderFit:
    """Train on standardised rows with Adam + MSE, early stopping on the ``val`` rows' loss.

    The scaler is fitted on ``train``; the weights of the best validation epoch are exported.
    """
    seed = settings.seed if seed is None else seed
    torch.set_num_threads(settings.torch_threads)
    torch.manual_seed(seed)
    mean, inv_scale = fit_scaler(train)
    weights = AutoencoderWeights(
        *_placeholder(train.shape[1], settings.encoding_dim), mean, inv_scale
    )
    z_train = torch.from_numpy(weights.standardise(train).astype(np.float32))
    z_val = torch.from_numpy(weights.standardise(val).astype(np.float32))
    net = build_network(train.shape[1], settings.encoding_dim)
    history = _fit(net, z_train, z_val, settings, seed)
    return AutoencoderFit(
        weights=_export(net, mean, inv_scale),
        train_loss=history.train,
        val_loss=history.val,
        best_epoch=history.best_epoch,
        stopped_early=history.stopped_early,
    )


def _placeholder(n_features: int, dim: int) -> tuple[np.ndarray, ...]:
    """Zero weights: lets the scaler be applied before the network exists."""
    f32 = np.float32
    return (
        np.zeros((dim, n_features), f32),
        np.zeros(dim, f32),
        np.zeros((n_features, dim), f32),
        np.zeros(n_features, f32),
    )


@dataclass
class _History:
    train: list[float] = field(default_factory=list)
    val: list[float] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False


def _fit(
    net: nn.Module, train: torch.Tensor, val: torch.Tensor, s: AutoencoderSettings, seed: int
) -> _History:
    opt = torch.optim.Adam(net.parameters(), lr=s.learning_rate)
    gen = torch.Generator().manual_seed(seed)
    history, best, best_state, waited = _History(), float("inf"), None, 0
    for epoch in range(s.epochs):
        history.train.append(_epoch(net, opt, train, s.batch_size, gen))
        history.val.append(_loss(net, val))
        if history.val[-1] < best:
            best, best_state, waited = history.val[-1], _snapshot(net), 0
            history.best_epoch = epoch
        else:
            waited += 1
            if waited >= s.early_stopping_patience:
                history.stopped_early = True
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    return history


def _epoch(
    net: nn.Module, opt: torch.optim.Optimizer, data: torch.Tensor, batch: int, gen: torch.Generator
) -> float:
    net.train()
    total = 0.0
    for idx in torch.randperm(len(data), generator=gen).split(batch):
        xb = data[idx]
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(net(xb), xb)
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
    return total / max(1, len(data))


@torch.no_grad()
def _loss(net: nn.Module, data: torch.Tensor) -> float:
    net.eval()
    return float(nn.functional.mse_loss(net(data), data)) if len(data) else 0.0


def _snapshot(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _export(net: nn.Sequential, mean: np.ndarray, inv_scale: np.ndarray) -> AutoencoderWeights:
    enc, dec = net[0], net[2]
    return AutoencoderWeights(
        w1=enc.weight.detach().numpy().astype(np.float32),
        b1=enc.bias.detach().numpy().astype(np.float32),
        w2=dec.weight.detach().numpy().astype(np.float32),
        b2=dec.bias.detach().numpy().astype(np.float32),
        mean=mean,
        inv_scale=inv_scale,
    )


@torch.no_grad()
def torch_error(weights: AutoencoderWeights, X: np.ndarray) -> np.ndarray:
    """Reconstruction error computed by a torch forward pass (reference for tests and bench)."""
    net = build_network(weights.n_features, weights.w1.shape[0])
    net[0].weight.copy_(torch.from_numpy(weights.w1))
    net[0].bias.copy_(torch.from_numpy(weights.b1))
    net[2].weight.copy_(torch.from_numpy(weights.w2))
    net[2].bias.copy_(torch.from_numpy(weights.b2))
    z = torch.from_numpy(weights.standardise(X).astype(np.float32))
    return ((net(z) - z) ** 2).mean(dim=-1).numpy().astype(np.float64)
