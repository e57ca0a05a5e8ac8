"""The paper's learning-rate schedule: divide by 10 on a plateau, three times, then stop."""
import pytest

from paper_repro.training.schedule import DROP, STOP, PlateauSchedule, StepSchedule


def test_threshold_and_patience():
    s = PlateauSchedule(0.01, patience=2, threshold=0.01)
    assert s.step(0.50) is None            # first epoch: best = 0.50
    assert s.step(0.495) is None           # better, but by less than the threshold: 1 bad epoch
    assert s.step(0.45) is None            # a real improvement resets the count
    assert s.step(0.445) is None           # bad 1
    assert s.step(0.46) == DROP            # bad 2 = patience: divide
    assert s.lr == pytest.approx(0.001)
    assert s.step(0.44) is None            # 0.44 < 0.45 - 0.01? no: bad 1 (count restarts after a drop)
    assert s.step(0.30) is None            # improvement
    assert s.lr == pytest.approx(0.001)


def test_three_drops_then_stop_and_state_round_trip():
    s = PlateauSchedule(0.01, patience=1, threshold=0.0, max_drops=3)
    actions = [s.step(e) for e in (0.5, 0.5, 0.4, 0.4, 0.4, 0.3)]
    assert actions == [None, DROP, None, DROP, DROP, None]
    assert s.lr == pytest.approx(1e-5) and s.drops == 3
    copy = PlateauSchedule(0.5, patience=7)
    copy.load_state_dict(s.state_dict())
    for schedule in (s, copy):
        assert schedule.step(0.3) == STOP   # the fourth plateau ends training; lr unchanged
        assert schedule.lr == pytest.approx(1e-5)
    assert copy.state_dict() == s.state_dict()


def test_step_schedule_and_kind_check():
    s = StepSchedule(0.01, drop_epochs=[2, 4])
    actions = [s.step(0.9, epoch) for epoch in range(1, 6)]
    assert actions == [None, DROP, None, DROP, None]
    assert s.lr == pytest.approx(1e-4)
    other = StepSchedule(1.0, drop_epochs=[9])
    other.load_state_dict(s.state_dict())
    assert other.state_dict() == s.state_dict()
    with pytest.raises(ValueError, match="resume with the --lr-schedule the run started with"):
        PlateauSchedule(0.01).load_state_dict(s.state_dict())
