"""Neural variational lower bounds on MI with one trainer: MINE (DV), NWJ and InfoNCE.

A critic T(x, y) (an MLP on the concatenation [x, y]) is trained on a training split to
maximise a lower bound on I(x; y); the reported value is the same bound on a held-out
split, at the epoch with the best held-out bound (early stopping). For a batch of B pairs
the critic scores all B² combinations S_ij = T(x_i, y_j): the diagonal are joint samples,
the off-diagonal ones samples of the product of marginals. In nats:

    mine     (Donsker–Varadhan)  mean_i S_ii − log mean_{i≠j} exp S_ij
    nwj      (Nguyen–Wainwright–Jordan)  mean_i S_ii − mean_{i≠j} exp(S_ij − 1)
    infonce  (van den Oord et al.)  mean_i [S_ii − log Σ_j exp S_ij] + log B   (≤ log B)

MINE (Belghazi et al. 2018) trains the DV bound with a moving-average correction of the
biased minibatch gradient of the log term: the denominator mean exp S is replaced by its
exponential moving average (rate ``ema``). The first layer of the critic is linear in
[x, y], so it is computed once per sample (x-part and y-part) and only the later layers
see all B² pairs; discrete y enters as a one-hot vector, i.e. a learned embedding row.

x and continuous y are standardised with training-split statistics. The same seed gives
the same value on the same device (seeded initialisation and batch order, deterministic
operations). Held-out evaluation uses blocks of B test samples (the last block wraps
around), so InfoNCE's ceiling is log B there too.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mi_probe.data import Target
from mi_probe.devices import resolve_device
from mi_probe.errors import ResourceError
from mi_probe.estimator import Estimate, Estimator
from mi_probe.hookspecs import hookimpl
from mi_probe.params import Param

from .linear_probe import holdout_split, split_min_samples, split_sizes, standardize

BOUNDS = ("mine", "nwj", "infonce")
CEILING_SHARE = 0.9  # InfoNCE above this share of log B is flagged


@dataclass
class _Fit:
    """What the trainer reports (values in nats)."""

    heldout: float
    heldout_se: float
    train: float
    epochs: int
    best_epoch: int
    stopped_early: bool
    curve: list[float] = field(default_factory=list)


def make_critic(d_x: int, y_width: int, discrete: bool, hidden: int, layers: int) -> Any:
    """The MLP critic T(x, y) → score; see :class:`_Critic`."""
    import torch

    class _Critic(torch.nn.Module):
        """MLP on [x, y] whose first layer is split into an x-part and a y-part.

        ``pairs(x, y)`` scores every (x_i, y_j) of x (B, d_x), y (B, ·) as a (B, B) matrix.
        """

        def __init__(self) -> None:
            super().__init__()
            self.fx = torch.nn.Linear(d_x, hidden)
            self.fy = (torch.nn.Embedding(y_width, hidden) if discrete
                       else torch.nn.Linear(y_width, hidden, bias=False))
            body: list[torch.nn.Module] = [torch.nn.ReLU()]
            for _ in range(layers - 1):
                body += [torch.nn.Linear(hidden, hidden), torch.nn.ReLU()]
            body.append(torch.nn.Linear(hidden, 1))
            self.body = torch.nn.Sequential(*body)

        def pairs(self, x: Any, y: Any) -> Any:
            hx, hy = self.fx(x), self.fy(y)
            return self.body(hx[:, None, :] + hy[None, :, :]).squeeze(-1)

    return _Critic()


def _pair_bytes(batch: int, hidden: int, layers: int) -> int:
    """Rough float32 bytes of one training step's (B, B, hidden) activations and grads."""
    return 4 * batch * batch * hidden * (2 * layers + 2)


def _physical_memory() -> int:
    """Physical memory in bytes (0 where the OS does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 0


def bound_terms(scores: Any, bound: str) -> tuple[Any, Any, Any]:
    """(mean joint score, log mean exp of marginal scores, InfoNCE value) of (B, B) scores."""
    import torch

    b = scores.shape[0]
    joint = torch.diagonal(scores).mean()
    eye = torch.eye(b, dtype=torch.bool, device=scores.device)
    log_mean_exp = torch.logsumexp(scores.masked_fill(eye, -math.inf).reshape(-1), 0) - \
        math.log(b * (b - 1))
    nce = None
    if bound == "infonce":
        nce = (torch.diagonal(scores) - torch.logsumexp(scores, dim=1)).mean() + math.log(b)
    return joint, log_mean_exp, nce


def _combine(bound: str, joint: Any, log_mean_exp: Any, nce: Any) -> Any:
    if bound == "mine":
        return joint - log_mean_exp
    if bound == "nwj":
        return joint - (log_mean_exp - 1.0).exp()
    return nce


class MINEEstimator(Estimator):
    """Neural variational MI bounds (MINE / NWJ / InfoNCE) with held-out evaluation."""

    name = "mine"
    description = (
        "Neural variational lower bound (MINE-DV with moving-average gradient, NWJ or "
        "InfoNCE) from an MLP critic; value on a held-out split with early stopping"
    )
    params = (
        Param("bound", str, "mine", "which bound to train and report", choices=BOUNDS),
        Param("hidden", int, 64, "critic hidden width", low=1),
        Param("layers", int, 2, "critic hidden layers", low=1),
        Param("lr", float, 1e-3, "Adam learning rate", low=0.0, low_open=True),
        Param("batch_size", int, 128, "samples per batch B (InfoNCE ≤ log B)", low=4),
        Param("max_epochs", int, 200, "most passes over the training split", low=1),
        Param("patience", int, 10, "stop after this many epochs without a better held-out "
              "bound", low=1),
        Param("test_fraction", float, 0.3, "share of samples held out for the reported value",
              low=0.0, low_open=True, high=0.9),
        Param("ema", float, 0.01, "moving-average rate of MINE's gradient correction",
              low=0.0, low_open=True, high=1.0),
        Param("seed", int, 0, "seed of the split, initialisation and batch order", low=0),
        Param("device", str, "cpu", "where to train: cpu, cuda or auto",
              choices=("cpu", "cuda", "auto")),
    )
    y_kinds = frozenset({"continuous", "discrete"})
    symmetric = False
    randomized = True

    def min_samples(self, params: dict[str, Any]) -> int:
        return split_min_samples(params["test_fraction"])

    def check_params(self, params: dict[str, Any], x: np.ndarray, y: Target) -> None:
        """Refuse batches whose B² × hidden pair activations would not fit in memory."""
        batch = min(params["batch_size"], *split_sizes(len(x), params["test_fraction"]))
        need = _pair_bytes(batch, params["hidden"], params["layers"])
        have = _physical_memory()
        if have and need > have / 2:
            raise ResourceError(
                f"batch_size={batch} with hidden={params['hidden']} needs "
                f"about {need / 2**30:.1f} GiB of activations per step (B² pairs), more than "
                f"half of this machine's {have / 2**30:.0f} GiB; lower batch_size or hidden"
            )

    def compute(self, x: np.ndarray, y: Target, params: dict[str, Any]) -> Estimate:
        return self.compute_layers([x], y, params)[0]

    def compute_layers(
        self, xs: Sequence[np.ndarray], y: Target, params: dict[str, Any]
    ) -> list[Estimate]:
        """One split and one y encoding shared by every x (n, d_l)."""
        import torch

        device = resolve_device(params["device"])
        train, test = holdout_split(y.n, params["test_fraction"], params["seed"])
        if y.kind == "discrete":
            y_tr, y_te = (torch.as_tensor(y.values[i], device=device) for i in (train, test))
            y_width = y.n_classes
        else:
            y_tr, y_te = (torch.as_tensor(a, dtype=torch.float32, device=device)
                          for a in standardize(*(y.values[i] for i in (train, test))))
            y_width = y.dim
        batch = min(params["batch_size"], *split_sizes(y.n, params["test_fraction"]))
        out = []
        for x in xs:
            x_tr, x_te = (torch.as_tensor(a, dtype=torch.float32, device=device)
                          for a in standardize(x[train], x[test]))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(params["seed"])
                critic = make_critic(x.shape[1], y_width, y.kind == "discrete",
                                     params["hidden"], params["layers"]).to(device)
            fit = _train(critic, x_tr, y_tr, x_te, y_te, batch, params)
            out.append(self._report(fit, batch, len(train), len(test), params))
        return out

    @staticmethod
    def _report(fit: _Fit, batch: int, n_train: int, n_test: int,
                params: dict[str, Any]) -> Estimate:
        value, notes = fit.heldout, []
        ceiling = math.log(batch)
        if params["bound"] == "infonce" and value > CEILING_SHARE * ceiling:
            notes.append(
                f"InfoNCE value {value:.3g} nats is near its log(batch) ceiling "
                f"log {batch} = {ceiling:.3g} nats: the true MI may be much larger; raise "
                "batch_size or use bound=mine or nwj"
            )
        if fit.best_epoch <= 1 and fit.epochs > 1:
            notes.append(
                f"the held-out bound was best after epoch {fit.best_epoch}: the critic "
                "found nothing that generalises (independent data, too high a learning "
                "rate, or too few samples)"
            )
        if not fit.stopped_early:
            notes.append(
                f"training reached max_epochs={params['max_epochs']} while the held-out "
                "bound was still improving; raise max_epochs (the value may be low)"
            )
        if fit.heldout_se > max(0.02, 0.2 * abs(value)):
            notes.append(
                f"the held-out estimate is noisy (standard error {fit.heldout_se:.3g} nats "
                "across test blocks); use more samples or bound=infonce/mine over nwj"
            )
        if fit.train - value > max(0.05, 0.5 * abs(value)):
            notes.append(
                f"the critic overfits: training bound {fit.train:.3g} vs held-out "
                f"{value:.3g} nats; use a smaller critic or more samples"
            )
        if value < 0:
            notes.append("the held-out bound is negative: no information found (read as 0)")
        extras = {
            "bound": params["bound"],
            "train_value_nats": fit.train,
            "heldout_value_nats": value,
            "heldout_std_error_nats": fit.heldout_se,
            "heldout_curve_nats": fit.curve,
            "epochs_trained": fit.epochs,
            "best_epoch": fit.best_epoch,
            "stopped_early": fit.stopped_early,
            "batch_size": batch,
            "log_batch_ceiling_nats": ceiling,
            "n_train": n_train,
            "n_test": n_test,
        }
        return Estimate(value, notes, extras)


def _train(critic: Any, x_tr: Any, y_tr: Any, x_te: Any, y_te: Any, batch: int,
           params: dict[str, Any]) -> _Fit:
    """Train ``critic`` on (x_tr, y_tr) batches of ``batch``; early-stop on the held-out
    bound of (x_te, y_te); leave the critic at its best epoch."""
    import torch

    bound = params["bound"]
    gen = torch.Generator().manual_seed(params["seed"])
    opt = torch.optim.Adam(critic.parameters(), lr=params["lr"])
    log_ema = None
    best, _ = _evaluate(critic, x_te, y_te, batch, bound)  # epoch 0: the untrained critic
    best = best if math.isfinite(best) else -math.inf
    best_epoch, best_state, curve = 0, copy.deepcopy(critic.state_dict()), []
    n_train = x_tr.shape[0]
    epoch = 0
    for epoch in range(1, params["max_epochs"] + 1):
        critic.train()
        order = torch.randperm(n_train, generator=gen).to(x_tr.device)
        for start in range(0, n_train - batch + 1, batch):
            idx = order[start:start + batch]
            joint, log_mean_exp, nce = bound_terms(critic.pairs(x_tr[idx], y_tr[idx]), bound)
            if bound == "mine":
                # Belghazi et al.: gradient of log E[e^T] ≈ E[∇T e^T] / (moving average).
                lme = log_mean_exp.detach()
                log_ema = lme if log_ema is None else torch.logaddexp(
                    log_ema + math.log1p(-params["ema"]), lme + math.log(params["ema"]))
                objective = joint - (log_mean_exp - log_ema).exp()
            else:
                objective = _combine(bound, joint, log_mean_exp, nce)
            opt.zero_grad(set_to_none=True)
            (-objective).backward()
            opt.step()
        value, _ = _evaluate(critic, x_te, y_te, batch, bound)
        curve.append(value)
        if value > best:
            best, best_epoch, best_state = value, epoch, copy.deepcopy(critic.state_dict())
        elif epoch - best_epoch >= params["patience"]:
            break
    critic.load_state_dict(best_state)
    heldout, se = _evaluate(critic, x_te, y_te, batch, bound)
    train, _ = _evaluate(critic, x_tr, y_tr, batch, bound)
    stopped = epoch - best_epoch >= params["patience"]
    return _Fit(heldout, se, train, epoch, best_epoch, stopped, curve)


def _evaluate(critic: Any, x: Any, y: Any, batch: int, bound: str) -> tuple[float, float]:
    """The bound on all of (x, y) in blocks of ``batch`` (the last block wraps around),
    pooling joint and marginal terms over blocks; plus the standard error across blocks."""
    import torch

    n = x.shape[0]
    blocks = math.ceil(n / batch)
    idx = torch.arange(blocks * batch, device=x.device) % n
    joints, lmes, nces, per_block = [], [], [], []
    critic.eval()
    with torch.no_grad():
        for k in range(blocks):
            sel = idx[k * batch:(k + 1) * batch]
            terms = bound_terms(critic.pairs(x[sel], y[sel]), bound)
            joints.append(terms[0])
            lmes.append(terms[1])
            nces.append(terms[2])
            per_block.append(float(_combine(bound, *terms)))
        joint = torch.stack(joints).mean()
        lme = torch.logsumexp(torch.stack(lmes), 0) - math.log(blocks)
        nce = torch.stack(nces).mean() if bound == "infonce" else None
        value = float(_combine(bound, joint, lme, nce))
    se = float(np.std(per_block, ddof=1) / math.sqrt(blocks)) if blocks > 1 else math.nan
    return value, se


@hookimpl
def register_estimators(register):
    register(MINEEstimator)
