"""Force-call accounting (issue 17): what each phase's MD cost in model calls, counted once
per exploration even when a resumed run explores the same prefix again."""

from __future__ import annotations

from pathlib import Path

import yaml

from pfd import run_store as rs
from pfd.config import parse_config

ROOT = Path(__file__).resolve().parents[1]


def test_counts_add_up_per_phase_and_a_rerun_counts_once(tmp_path: Path) -> None:
    cfg = parse_config(yaml.safe_load((ROOT / "tests/data/tiny.yaml").read_text()))
    ctx = rs.make_context(cfg, str(tmp_path / "store"), tmp_path / "work")
    assert rs.force_call_totals(ctx.store, ctx.run_id) == {}
    a = {"trajectories": 2, "force_calls": 82, "atom_steps": 656}
    b = {"trajectories": 1, "force_calls": 41, "atom_steps": 287}
    rs.record_force_calls(ctx, "explore", "stages/0/iter-000/explore", a)
    rs.record_force_calls(ctx, "explore", "stages/1/iter-000/explore", b)
    rs.record_force_calls(ctx, "explore", "stages/0/iter-000/explore", a)  # resumed run
    rs.record_force_calls(ctx, "distill", "distill/explore", a)
    assert rs.force_call_totals(ctx.store, ctx.run_id) == {
        "explore": {"trajectories": 3, "force_calls": 123, "atom_steps": 943},
        "distill": a}
