"""Every number the streaming detectors use, named once, each with the reason for its value.

The thresholds a user may change are settings (obslab.settings: DETECT_*, SLO_*, ...); a
`DetectorConfig` takes their defaults, and `obslab.detect.run.config_from` maps the settings in
use. The other fields are constants of the methods: changing one changes what the detectors find,
so each says why it has its value. The module constants below them are facts (of the normal
distribution) and numeric floors, not tunables.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from obslab.settings import Settings

# --- facts and floors, not tunables
P99_Z = 2.326  # standard deviations from the median to the 99th percentile of a normal distribution
MEDIAN_SD = 1.2533  # sqrt(pi / 2): the standard deviation of a median of n is this x sd / sqrt(n)
FLOOR = 1e-9  # smallest forecast or expected value: keeps ratios, logs and divisions finite
SPREAD_FLOOR = 1e-6  # smallest per-request latency spread (ms): a window of equal latencies
RIDGE = 1e-9  # added to the rhythm's normal equations: a period that fits no cycle stays solvable
BISECTIONS = 40  # halvings of the displayed lowest count beyond chance: mu / 2^40 is exact enough
SEVERITY_HIGH = 1.5  # value / threshold from which an anomaly is high (below: medium)
SEVERITY_CRITICAL = 3.0  # ... and from which it is critical


def _setting(name: str):
    """A setting's default: the thresholds a user may change are defined once, in obslab.settings."""
    return Settings.model_fields[name].default


@dataclass(frozen=True)
class DetectorConfig:
    """Thresholds and constants of every detector (from settings: see obslab.settings, DETECT_* and SLO_*).

    `latency_sla_ms` and `slo_availability` hold only the services that have one: the detection
    run fills them from the service catalogue, with the settings on top. A service without an
    SLA is held to its own usual p99; one without an SLO to `default_slo_availability`.
    """

    NEVER = 2**62  # as min_partial_requests: only final windows are judged

    # --- from settings (same meaning, see obslab.settings)
    error_surge_factor: float = _setting("error_surge_factor")  # on the odds of an error: about k x the rate
    error_confidence_z: float = _setting("error_confidence_z")
    latency_spike_factor: float = _setting("latency_spike_factor")
    shift_z: float = _setting("shift_z")
    trend_windows: int = _setting("detect_trend_windows")
    default_slo_availability: float = _setting("slo_default_availability")  # of a service `slo_availability` lacks
    burn_threshold: float = _setting("burn_threshold")
    # an open window is judged once it holds this many requests (the setting's 0: never)
    min_partial_requests: int = _setting("partial_window_min_requests") or NEVER
    latency_sla_ms: dict = field(default_factory=dict)
    slo_availability: dict = field(default_factory=dict)

    # --- history, shared by the detectors
    lookback_windows: int = 30  # clean windows a usual level is taken over; slow or low this long: the new normal
    dispersion_windows: int = 120  # prediction errors phi is estimated from (2 h of 1-minute windows)
    min_history: int = 5  # clean windows a series needs before its level is judged against
    min_calibration: int = 5  # prediction errors a series needs before its noise is trusted
    shift_min_relative: float = 0.03  # level wobble (relative) that no window is expected to beat

    # --- errors (error_surge)
    error_margin_z: float = 2.0  # the usual rate is taken at its upper bound, a window's at its lower
    error_rate_floor: float = 0.005  # a usual rate below this is taken as this: 0 errors seen is not 0 %
    error_wobble: float = 0.3  # an error rate's assumed wobble between windows before its history says more
    error_prior_windows: int = 4  # ... worth this many windows of history
    suspects_kept: int = 2  # windows above the threshold but not sure, held to be judged with the next
    suspect_reach: int = 3  # steps back a held suspect may be and still add up with a window

    # --- latency (latency_spike, baseline_shift on avg_latency_ms)
    min_latency_requests: int = 10  # an average of fewer requests is not judged (heavy tails)
    median_z: float = 3.0  # how far (in its own noise) a window's median must be above usual for a latency anomaly

    # --- traffic (baseline_shift on request_count)
    surge_ratio: float = 1.5  # traffic this far above the usual level is a surge: kept out of the baseline
    surge_z: float = 3.0  # ... and this unlikely above the forecast (one-sided normal tail)
    doubt_z: float = 3.0  # a count this unlikely below the forecast is learned only once a later one clears it
    drop_run: int = 4  # a traffic drop is judged over up to this many consecutive low windows
    min_differences: int = 5  # level differences g windows apart needed before they size the drift

    # --- forecasts (obslab.detect.forecasts)
    scored_errors: int = 20  # one-step errors each forecast is judged on
    min_scored: int = 5  # errors a forecast needs before it can be chosen (and its lead errors used)
    rhythm_errors_kept: int = 30  # the rhythm's one-step errors kept for its noise
    recent_points: int = 4  # points of the short line (a fast change)
    line_min_points: int = 4  # points a line is fitted to at least
    parabola_min_points: int = 6  # points a parabola is fitted to at least
    polynomial_reach: float = 3.0  # steps past the newest point a polynomial extrapolates; beyond, it holds
    horizon: int = 8  # steps ahead whose errors are kept (and the rhythm's reach): how much less sure further out
    rhythm_span: int = 240  # points the rhythm is fitted to (4 hours of 1-minute windows)
    rhythm_min_points: int = 16  # points before a rhythm is fitted
    rhythm_shortest: int = 8  # steps: a faster period would fit the noise
    rhythm_coarse: float = 1.05  # the coarse period grid's step, as a ratio
    rhythm_fine: float = 0.005  # the fine grid's step, a fraction of the best coarse period
    rhythm_fine_steps: int = 10  # fine grid points on each side of the best coarse period
    rhythm_search_every: int = 10  # points: how often the whole period grid is searched again

    # --- SLO burn (burn_rate)
    burn_short_windows: int = 5  # the short span of the SRE workbook's multiwindow alert (5 min)
    burn_long_windows: int = 60  # ... and the long one (1 h)
