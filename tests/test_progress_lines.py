"""The plain progress lines printed when the output is not a terminal."""

from widthlab.engine.events import ProgressEvent, Reporter
from widthlab.ui.progress import epoch_line, job_line


def test_epoch_line_counts_steps_with_eta():
    ev = ProgressEvent("epoch", "run-a", 412, 1380, epoch=3, epochs=10, elapsed=62.0)
    # eta = 62 * (1380 - 412) / 412 = 145.7 s
    assert epoch_line(ev) == ("widthlab: run-a: epoch 3/10 (412/1380 steps), 1m02s elapsed, "
                              "eta 2m26s")


def test_epoch_line_of_a_run_counting_epochs_has_no_step_count():
    seen = []
    r = Reporter(seen.append, "lenet-run", 3, 3, unit="epochs")
    r.step()
    r.epoch(1)
    line = epoch_line(seen[-1])
    assert line.startswith("widthlab: lenet-run: epoch 1/3, ") and "steps" not in line
    assert seen[-1].unit == "epochs" and (seen[-1].done, seen[-1].total) == (1, 3)


def test_job_line():
    assert job_line("variance/mnist/quick", 2, 14, "31.2s (6 runs)") == \
        "widthlab: [2/14] variance/mnist/quick: 31.2s (6 runs)"
