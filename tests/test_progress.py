"""Progress never looks hung: lines where there is no terminal, nothing when quiet."""
from hwprune.progress import Progress


def test_lines_every_interval_and_at_the_end_without_a_terminal():
    lines = []
    p = Progress(10, "profile resnet20", unit="entry", every=0.0, write=lines.append, tty=False)
    for _ in range(4):
        p.update(2)
    p.close()
    assert lines[0].startswith("profile resnet20: 2/10 entries,") and "left" in lines[0]
    assert lines[-1].startswith("profile resnet20: 8/10 entries,") and len(lines) == 5


def test_quiet_writes_nothing_and_a_long_interval_writes_only_the_end():
    lines = []
    with Progress(3, "x", quiet=True, every=0.0, write=lines.append, tty=False) as p:
        p.update(3)
    assert lines == []
    with Progress(3, "calibrate", unit="net", every=3600, write=lines.append, tty=False) as p:
        p.update(3)
    assert len(lines) == 1 and lines[0].startswith("calibrate: 3/3 nets,") and "left" not in lines[0]
