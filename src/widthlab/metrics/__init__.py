"""Statistics over trained models, computed from plain numpy/pandas inputs.

Public API::

    from widthlab.metrics import (Verdict, width_summary, log_fit, spearman_trend,
                                  most_normal_width, accuracy_plateau, dead_grows_with_width,
                                  total_std_grows_logarithmically, shapiro_argmax_vs_plateau,
                                  plateau_shift)
"""

from widthlab.metrics.variance import (
    SHAPIRO_MAX_N,
    Verdict,
    accuracy_plateau,
    accuracy_saturates,
    closest_turning_point,
    dead_grows_with_width,
    first_crossing,
    log_fit,
    mean_ci,
    most_normal_width,
    plateau_shift,
    shapiro,
    shapiro_argmax_vs_plateau,
    spearman_trend,
    total_std_grows_logarithmically,
    width_summary,
)

__all__ = ["SHAPIRO_MAX_N", "Verdict", "accuracy_plateau", "accuracy_saturates",
           "closest_turning_point", "dead_grows_with_width", "first_crossing", "log_fit",
           "mean_ci", "most_normal_width", "plateau_shift", "shapiro",
           "shapiro_argmax_vs_plateau", "spearman_trend", "total_std_grows_logarithmically",
           "width_summary"]
