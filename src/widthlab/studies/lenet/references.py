"""The published learned-width rows of LeNet-300-100 and LeNet-5-Caffe on MNIST (issue 17).

Widths as the papers count them (:mod:`widthlab.nn.lenet`): LeNet-300-100, the input features
kept by each of its three Linears; LeNet-5-Caffe, the channels of the two convs and the input
features of the two Linears. Weights are computed from the widths with
:func:`widthlab.nn.lenet.lenet_weights`, the same way as for widthlab's rows.
"""

from __future__ import annotations

import pandas as pd

from widthlab.nn.lenet import LENET5, LENET300, lenet_weights

#: ``(network, method, widths, final test error in %)``
PUBLISHED = [(LENET300, "L0 (Louizos 2018)", (266, 88, 33), 1.6),
             (LENET300, "SBP", (245, 160, 55), 1.6),
             (LENET300, "VIB", (97, 71, 33), 1.6),
             (LENET300, "RigL (end of training)", (408, 100, 69), 1.48),
             (LENET5, "L0", (20, 25, 45, 462), 0.9),
             (LENET5, "BC-GHS", (5, 10, 76, 16), 1.0)]
#: the issue's targets: final-epoch test error (%) at most this ...
BOUND = {LENET300: 1.6, LENET5: 1.0}
#: ... LeNet-300-100 with at most this many input features in all ...
MAX_FEATURES_300 = 200
#: ... and LeNet-5-Caffe with fewer weights than this published row
WEIGHTS_ROW_5 = "L0"


def widths_text(widths) -> str:
    """``(266, 88, 33)`` -> ``"266-88-33"``."""
    return "-".join(str(int(w)) for w in widths)


def published_frame() -> pd.DataFrame:
    """The published rows: ``network, method, widths, total_width, weights, error``."""
    return pd.DataFrame([{"network": n, "method": m, "widths": widths_text(w),
                          "total_width": int(sum(w)), "weights": lenet_weights(n, w),
                          "error": float(e)} for n, m, w, e in PUBLISHED])


def published_weights(network: str, method: str) -> int:
    """The weights of one published row (e.g. ``(LENET5, "L0")`` -> 38410)."""
    for n, m, w, _ in PUBLISHED:
        if (n, m) == (network, method):
            return lenet_weights(n, w)
    raise KeyError((network, method))
