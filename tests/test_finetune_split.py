"""Which frames a fine-tune holds out: by content (adding data never moves an old
validation frame into training), and none at all when too few would be held out to
choose an epoch on anything but noise."""

from __future__ import annotations

from ase.build import bulk

from pfd.steps import held_out, split_by_hash


def _frames(n: int) -> list:
    out = []
    for i in range(n):
        a = bulk("Si", "diamond", a=5.43, cubic=True)
        a.rattle(0.05, seed=i)
        out.append(a)
    return out


def test_a_handful_of_held_out_frames_train_instead():
    frames = _frames(40)
    _, valid = split_by_hash(frames, 0.1)
    assert 0 < len(valid) < 10  # the case: a 10 % split of 40 frames holds out a few
    train, none = held_out(frames, 0.1, min_valid=10)
    assert none == [] and len(train) == 40
    train, kept = held_out(frames, 0.1, min_valid=len(valid))
    assert [id(a) for a in kept] == [id(a) for a in valid] and len(train) == 40 - len(valid)


def test_adding_frames_keeps_old_validation_frames_out_of_training():
    frames = _frames(200)
    _, v_small = held_out(frames[:120], 0.1, min_valid=5)
    train, v_big = held_out(frames, 0.1, min_valid=5)
    assert len(v_small) >= 5
    assert {id(a) for a in v_small} <= {id(a) for a in v_big}
    assert not {id(a) for a in v_small} & {id(a) for a in train}
