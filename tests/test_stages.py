"""kbsim.stages: a stage runs once per key; any change upstream gives a new key."""

import json

from kbsim.stages import run_stage, stage_key


def test_key_depends_on_name_config_and_inputs():
    k = stage_key("a", {"x": 1}, {"data": "abc"})
    assert k == stage_key("a", {"x": 1}, {"data": "abc"}) and len(k) == 16
    assert k != stage_key("b", {"x": 1}, {"data": "abc"})
    assert k != stage_key("a", {"x": 2}, {"data": "abc"})
    assert k != stage_key("a", {"x": 1}, {"data": "abd"})


def test_done_stages_are_skipped_and_interrupted_ones_rerun(tmp_path):
    calls = []

    def fn(d):
        calls.append(d)
        (d / "out.txt").write_text("made")
        return {"n": len(calls)}

    first = run_stage(tmp_path, "s", {"x": 1}, {}, fn)
    again = run_stage(tmp_path, "s", {"x": 1}, {}, fn)
    assert not first.cached and again.cached and len(calls) == 1
    assert again.result == {"n": 1} and again.dir == first.dir
    assert json.loads((first.dir / "done.json").read_text())["result"] == {"n": 1}
    other = run_stage(tmp_path, "s", {"x": 2}, {}, fn)
    assert other.dir != first.dir and len(calls) == 2

    def crash(d):
        (d / "partial").write_text("half")
        raise RuntimeError("killed")

    try:
        run_stage(tmp_path, "t", {}, {}, crash)
    except RuntimeError:
        pass
    done = run_stage(tmp_path, "t", {}, {}, fn)  # same folder, run again to the end
    assert not done.cached and (done.dir / "partial").exists()
