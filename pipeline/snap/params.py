"""Settings of the map matcher (Newson & Krumm 2009 hidden Markov model)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MatchParams:
    """How fixes are matched to the road graph.

    Attributes
    ----------
    sigma_m
        Standard deviation of the GPS error: the emission is a Gaussian of the fix-to-road
        distance (Newson & Krumm estimated 4.07 m from the median distance).
    beta_m
        Scale of the exponential transition on ``|route distance - straight distance|``; with
        ``estimate_beta``, the prior of each trip's own scale.
    search_radius_m
        Roads farther than this from a fix are not candidates for it.
    max_search_radius_m
        A fix with no road within ``search_radius_m`` searches again with the radius doubled,
        up to this radius (for stretches of large GPS error).
    max_candidates
        At most this many nearest roads (one candidate per edge) are kept per fix.
    max_speed_mps
        A transition longer than ``max_speed_mps * dt + route_slack_m`` is impossible.
    route_slack_m
        Extra route length allowed on top of the speed bound (GPS noise at both ends).
    max_route_m
        Hard cap of any transition's route length (the routing bound, like FMM's delta).
    uturn_penalty
        Log-probability cost of turning around in the middle of an edge onto its reverse twin;
        ``None`` forbids such U-turns. With ``estimate_beta`` it is scaled by ``beta_m`` over
        the trip's scale: a U-turn costs as many metres charged as ``uturn_penalty * beta_m``.
    backward_tolerance_m
        A fix up to this far behind the previous one on the same edge is standing still (GPS
        jitter at stops). Farther behind, it is standing still while the fix drifts back or a
        loop through the graph back onto the edge, whichever scores better: a stopped car's
        fixes drift by more than any fixed tolerance (tens of metres at sigma 10-15 m), and
        they must not break the trip.
    max_outlier_points
        A run of at most this many fixes that no route reaches is skipped as outliers; a longer
        run splits the trip (a break) and the HMM restarts at its first fix.
    beam_log
        Beam pruning: states whose log-probability is more than this below the best state of
        their fix are not extended (their routes are not searched).
    estimate_beta
        Decode each trip twice: the second time with the transition scale fitted to the trip's
        first decoding, by maximum likelihood of the exponential (the mean of the metres its
        transitions charge, ``|route - straight|`` plus any step back), ``beta_m`` counting as
        one more transition. How much a route may differ from the straight line between
        fixes depends on the device's noise and its rate (Newson & Krumm fitted it to their
        data); a fixed scale lets noisy fixes pull a trip onto a path a few metres beside
        its road more cheaply than the route's length would allow.
    """

    sigma_m: float = 10.0
    beta_m: float = 10.0
    search_radius_m: float = 50.0
    max_search_radius_m: float = 400.0
    max_candidates: int = 16
    max_speed_mps: float = 40.0
    route_slack_m: float = 30.0
    max_route_m: float = 3000.0
    uturn_penalty: float | None = 10.0
    backward_tolerance_m: float = 5.0
    max_outlier_points: int = 5
    beam_log: float = 1000.0
    estimate_beta: bool = True

    def __post_init__(self) -> None:
        """Check that every setting is in range."""
        positive = (
            "sigma_m", "beta_m", "search_radius_m", "max_speed_mps", "max_route_m", "beam_log",
        )  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"MatchParams.{name} = {value!r}: must be a positive number")
        if self.max_candidates < 1:
            raise ValueError(f"MatchParams.max_candidates = {self.max_candidates}: must be >= 1")
        for name in ("route_slack_m", "backward_tolerance_m"):
            if getattr(self, name) < 0:
                raise ValueError(f"MatchParams.{name} = {getattr(self, name)}: must be >= 0")
        if self.max_outlier_points < 0:
            raise ValueError(
                f"MatchParams.max_outlier_points = {self.max_outlier_points}: must be >= 0"
            )
        if self.uturn_penalty is not None and self.uturn_penalty < 0:
            raise ValueError(f"MatchParams.uturn_penalty = {self.uturn_penalty}: must be >= 0")

    def kernel_array(self) -> np.ndarray:
        """Return the numeric settings the compiled kernels read, as a float64 array."""
        uturn = np.inf if self.uturn_penalty is None else float(self.uturn_penalty)
        return np.array(
            [
                self.sigma_m,
                self.beta_m,
                self.max_speed_mps,
                self.route_slack_m,
                self.max_route_m,
                uturn,
                self.backward_tolerance_m,
                float(self.max_outlier_points),
                self.beam_log,
            ],
            dtype="float64",
        )
